import { isUtf8 as nodeIsUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32Range } from '../../src/stun/crc32.ts';
import { classifyFirstByte, PacketClass } from '../../src/stun/demux.ts';
import {
  bindingErrorCode,
  bindingResponseKind,
  newUsernameView,
  ParseResult,
  parseBindingRequest,
  sameTransaction,
  stunMessageType,
} from '../../src/stun/parse.ts';
import { isUtf8 } from '../../src/stun/utf8.ts';
import {
  AttrType,
  buildBindingError,
  buildBindingSuccess,
  encodeStun,
  MessageType,
} from '../fixtures/stun-bytes.ts';

const data = (name: string): Buffer => readFileSync(new URL(`../data/${name}`, import.meta.url));

function request(username: string, opts: { password?: string; fingerprint?: boolean } = {}): Buffer {
  return encodeStun({
    type: MessageType.BINDING_REQUEST,
    transactionId: randomBytes(12),
    attributes: [[AttrType.USERNAME, Buffer.from(username, 'utf8')]],
    password: 'password' in opts ? opts.password : 'secret-password',
    fingerprint: opts.fingerprint ?? true,
  });
}

/** A signed-looking request whose integrity attribute is `type` with a `length`-byte value. */
function withIntegrity(type: number, length: number): Buffer {
  return encodeStun({
    type: MessageType.BINDING_REQUEST,
    transactionId: randomBytes(12),
    attributes: [
      [AttrType.USERNAME, Buffer.from('abcd:efgh')],
      [type, randomBytes(length)],
    ],
    fingerprint: true,
  });
}

/** A signed request whose USERNAME value is exactly `bytes`. */
function withUsernameBytes(bytes: Buffer): Buffer {
  return encodeStun({
    type: MessageType.BINDING_REQUEST,
    transactionId: randomBytes(12),
    attributes: [[AttrType.USERNAME, bytes]],
    password: 'secret-password',
    fingerprint: true,
  });
}

describe('parseBindingRequest: malformed first checks (fuzz findings)', () => {
  it('a MESSAGE-INTEGRITY whose length is not 20 is a bad attribute (RFC 8489 §14.5)', () => {
    for (const length of [0, 4, 16, 19, 21, 24, 32]) {
      expect(
        parseBindingRequest(withIntegrity(AttrType.MESSAGE_INTEGRITY, length), newUsernameView()),
        `${length}`,
      ).toBe(ParseResult.BadAttribute);
    }
    expect(parseBindingRequest(withIntegrity(AttrType.MESSAGE_INTEGRITY, 20), newUsernameView())).toBe(
      ParseResult.Ok,
    );
  });

  it('a MESSAGE-INTEGRITY-SHA256 outside 16..32 bytes in steps of 4 is a bad attribute (RFC 8489 §14.6)', () => {
    for (const length of [0, 12, 18, 30, 36]) {
      expect(parseBindingRequest(withIntegrity(0x001c, length), newUsernameView()), `${length}`).toBe(
        ParseResult.BadAttribute,
      );
    }
    for (const length of [16, 20, 32]) {
      expect(parseBindingRequest(withIntegrity(0x001c, length), newUsernameView()), `${length}`).toBe(
        ParseResult.Ok,
      );
    }
  });

  it('an empty ufrag on either side of the colon is a bad USERNAME (RFC 8445 §5.3, §7.2.2)', () => {
    for (const u of [':efgh', 'abcd:', ':', '::efgh']) {
      expect(parseBindingRequest(request(u), newUsernameView()), u).toBe(ParseResult.BadUsername);
    }
    // Shorter than §5.3's 4 characters but not empty: the backend, which issued the ufrag, decides.
    expect(parseBindingRequest(request('a:b'), newUsernameView())).toBe(ParseResult.Ok);
  });

  it('a USERNAME that is not UTF-8 is a bad USERNAME (RFC 8489 §14.3); multi-byte UTF-8 is fine', () => {
    const bad = [
      [0x61, 0x62, 0x3a, 0xff, 0x63], // 0xff never starts a sequence
      [0x61, 0x3a, 0x62, 0xc3], // a sequence cut off at the end
      [0x61, 0x3a, 0xc0, 0xaf], // overlong '/'
      [0x61, 0x3a, 0xed, 0xa0, 0x80], // a UTF-16 surrogate
      [0x61, 0x3a, 0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
      [0xe2, 0x82, 0x3a, 0x62], // a lead byte whose continuation is the colon
    ];
    for (const b of bad) {
      expect(
        parseBindingRequest(withUsernameBytes(Buffer.from(b)), newUsernameView()),
        Buffer.from(b).toString('hex'),
      ).toBe(ParseResult.BadUsername);
    }
    expect(parseBindingRequest(request('s€rv:clïent'), newUsernameView())).toBe(ParseResult.Ok);
  });

  it('judges UTF-8 as Node does, for any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 24 }), (bytes) => {
        expect(isUtf8(bytes, 0, bytes.length)).toBe(nodeIsUtf8(bytes));
      }),
      { numRuns: 5000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 12 }), (text) => {
        const bytes = Buffer.from(text, 'utf8');
        expect(isUtf8(bytes, 0, bytes.length)).toBe(true);
      }),
    );
  });
});

describe('parseBindingRequest', () => {
  it('accepts the RFC 5769 §2.1 sample request and finds its USERNAME', () => {
    const buf = data('rfc5769-request.bin');
    const view = newUsernameView();
    expect(parseBindingRequest(buf, view)).toBe(ParseResult.Ok);
    // RFC 5769 §2.1: USERNAME "evtj:h6vY".
    expect(buf.toString('utf8', view.start, view.end)).toBe('evtj:h6vY');
    expect(buf.toString('utf8', view.start, view.colon)).toBe('evtj');
  });

  it('classifies the RFC 5769 §2.2/§2.3 responses as success, not as requests', () => {
    for (const name of ['rfc5769-response-ipv4.bin', 'rfc5769-response-ipv6.bin']) {
      const buf = data(name);
      expect(stunMessageType(buf)).toBe(0x0101);
      expect(bindingResponseKind(buf)).toBe(1);
      expect(parseBindingRequest(buf, newUsernameView())).toBe(ParseResult.NotBindingRequest);
    }
  });

  it('rejects a request whose FINGERPRINT was damaged', () => {
    const buf = Buffer.from(data('rfc5769-request.bin'));
    buf[buf.length - 1]! ^= 0x01;
    expect(parseBindingRequest(buf, newUsernameView())).toBe(ParseResult.BadFingerprint);
  });

  it('rejects a request whose body changed after FINGERPRINT was computed', () => {
    const buf = Buffer.from(data('rfc5769-request.bin'));
    buf[24]! ^= 0x20; // inside the SOFTWARE value
    expect(parseBindingRequest(buf, newUsernameView())).toBe(ParseResult.BadFingerprint);
  });

  it('accepts a request without FINGERPRINT but with MESSAGE-INTEGRITY', () => {
    expect(parseBindingRequest(request('a:b', { fingerprint: false }), newUsernameView())).toBe(
      ParseResult.Ok,
    );
  });

  it('names each defect', () => {
    const v = newUsernameView();
    expect(parseBindingRequest(Buffer.alloc(10), v)).toBe(ParseResult.Truncated);
    const notStun = Buffer.from(data('rfc5769-request.bin'));
    notStun[4] = 0; // magic cookie
    expect(parseBindingRequest(notStun, v)).toBe(ParseResult.NotStun);
    const longer = Buffer.concat([data('rfc5769-request.bin'), Buffer.alloc(4)]);
    expect(parseBindingRequest(longer, v)).toBe(ParseResult.BadLength);
    expect(parseBindingRequest(request('abc'), v)).toBe(ParseResult.BadUsername);
    expect(parseBindingRequest(request(':client'), v)).toBe(ParseResult.BadUsername);
    expect(parseBindingRequest(request('a:b', { password: undefined }), v)).toBe(ParseResult.NoIntegrity);
    const noUser = encodeStun({
      type: MessageType.BINDING_REQUEST,
      transactionId: randomBytes(12),
      password: 'x',
    });
    expect(parseBindingRequest(noUser, v)).toBe(ParseResult.NoUsername);
    const indication = encodeStun({ type: 0x0011, transactionId: randomBytes(12) });
    expect(parseBindingRequest(indication, v)).toBe(ParseResult.NotBindingRequest);
    // An attribute whose length runs past the end of the message.
    const overrun = request('server:client');
    overrun.writeUInt16BE(200, 22);
    expect(parseBindingRequest(overrun, v)).toBe(ParseResult.BadAttribute);
  });

  it('splits at the first colon: the server ufrag comes first (RFC 8445 §7.2.2)', () => {
    const buf = request('srv123:cli:with:colons');
    const v = newUsernameView();
    expect(parseBindingRequest(buf, v)).toBe(ParseResult.Ok);
    expect(buf.toString('latin1', v.start, v.colon)).toBe('srv123');
    expect(buf.toString('latin1', v.colon + 1, v.end)).toBe('cli:with:colons');
  });

  it('never throws and never reports offsets outside the datagram (fuzz)', () => {
    const seed = data('rfc5769-request.bin');
    const v = newUsernameView();
    const check = (buf: Buffer): void => {
      const r = parseBindingRequest(buf, v);
      if (r === ParseResult.Ok) {
        expect(v.start).toBeGreaterThanOrEqual(20);
        expect(v.end).toBeLessThanOrEqual(buf.length);
        expect(v.colon).toBeGreaterThan(v.start);
        expect(v.colon).toBeLessThan(v.end);
      }
      stunMessageType(buf);
      bindingResponseKind(buf);
    };
    // Random bytes, and mutations of a valid request (flipped bytes, cut or extended tails).
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => check(Buffer.from(bytes))),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(seed.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.integer({ min: 0, max: seed.length }),
        (edits, cut) => {
          const buf = Buffer.from(seed.subarray(0, cut));
          for (const [at, value] of edits) if (at < buf.length) buf[at] = value;
          check(buf);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('recognises a valid header-length pair and rejects others', () => {
    const buf = data('rfc5769-request.bin');
    expect(stunMessageType(buf)).toBe(0x0001);
    expect(stunMessageType(buf.subarray(0, buf.length - 4))).toBe(-1);
  });

  it('compares transaction ids', () => {
    const a = request('a:b');
    const b = Buffer.from(a);
    expect(sameTransaction(a, b)).toBe(true);
    b[19]! ^= 1;
    expect(sameTransaction(a, b)).toBe(false);
  });
});

describe('classifyFirstByte (RFC 7983 §7)', () => {
  it('maps each range', () => {
    expect(classifyFirstByte(0)).toBe(PacketClass.Stun);
    expect(classifyFirstByte(3)).toBe(PacketClass.Stun);
    expect(classifyFirstByte(17)).toBe(PacketClass.Zrtp);
    expect(classifyFirstByte(22)).toBe(PacketClass.Dtls);
    expect(classifyFirstByte(64)).toBe(PacketClass.TurnChannel);
    expect(classifyFirstByte(0x80)).toBe(PacketClass.RtpRtcp);
    expect(classifyFirstByte(191)).toBe(PacketClass.RtpRtcp);
    expect(classifyFirstByte(8)).toBe(PacketClass.Other);
    expect(classifyFirstByte(255)).toBe(PacketClass.Other);
  });
});

describe('crc32Range', () => {
  it('equals zlib.crc32 on any range', () => {
    for (let n = 0; n < 200; n++) {
      const b = randomBytes(n + 1);
      const end = 1 + (n % b.length);
      expect(crc32Range(b, 0, end)).toBe(crc32(b.subarray(0, end)));
    }
    // The check value of CRC-32/ISO-HDLC.
    expect(crc32Range(Buffer.from('123456789'), 0, 9)).toBe(0xcbf43926);
  });
});

describe('bindingErrorCode', () => {
  it('reads the ERROR-CODE of an error response (RFC 8489 §14.8), past other attributes', () => {
    const transactionId = randomBytes(12);
    for (const code of [400, 401, 403, 487])
      expect(bindingErrorCode(buildBindingError({ transactionId, code }))).toBe(code);
    // Signed (MESSAGE-INTEGRITY and FINGERPRINT after it), as ice4j signs its 403.
    expect(bindingErrorCode(buildBindingError({ transactionId, code: 403, password: 'pw' }))).toBe(403);
    // A SOFTWARE attribute first.
    const withSoftware = encodeStun({
      type: MessageType.BINDING_ERROR,
      transactionId,
      attributes: [
        [AttrType.SOFTWARE, Buffer.from('ice4j')],
        [AttrType.ERROR_CODE, Buffer.from([0, 0, 4, 3, 0x46])],
      ],
    });
    expect(bindingErrorCode(withSoftware)).toBe(403);
  });

  it('is 0 for anything else, and never reads past the datagram', () => {
    const transactionId = randomBytes(12);
    expect(
      bindingErrorCode(
        buildBindingSuccess({ transactionId, mapped: { address: '1.2.3.4', port: 5 }, password: 'p' }),
      ),
    ).toBe(0);
    expect(bindingErrorCode(request('a:b'))).toBe(0);
    const e = buildBindingError({ transactionId, code: 403, fingerprint: false });
    // Cut anywhere: nothing before the whole attribute is in, the code once it is.
    const attrEnd = 20 + 4 + ((e.readUInt16BE(22) + 3) & ~3);
    for (let n = 0; n < e.length; n++)
      expect(bindingErrorCode(e.subarray(0, n))).toBe(n < attrEnd - 3 ? 0 : 403);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const b = Buffer.concat([e.subarray(0, 20), Buffer.from(bytes)]);
        b.writeUInt16BE(bytes.length, 2);
        const code = bindingErrorCode(b);
        expect(code).toBeGreaterThanOrEqual(0);
        expect(code).toBeLessThan(800);
      }),
    );
  });
});
