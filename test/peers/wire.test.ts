import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TokenTable } from '../../src/peers/tokens.ts';
import {
  type Answer,
  BadVersion,
  controlLength,
  DATA_HEADER,
  dataGen,
  dataHeader,
  dataSlot,
  decodeAnswer,
  decodeHeartbeat,
  decodeQuery,
  encodeAnswer,
  encodeHeartbeat,
  encodeQuery,
  encodeRelease,
  type Heartbeat,
  instanceHi,
  instanceLo,
  Malformed,
  MsgType,
  Owned,
  peekType,
  type Query,
  ReleaseOf,
  releaseGen,
  releaseOf,
  releaseSlot,
  USERNAME_MAX,
} from '../../src/peers/wire.ts';

const self = { hi: 0xdeadbeef, lo: 0x01020304 };
const newQuery = (): Query => ({ slot: 0, gen: 0, address: '', port: 0, username: undefined });
const newAnswer = (): Answer => ({ slot: 0, gen: 0, owned: Owned.None, ownerSlot: 0, ownerGen: 0 });

describe('peer wire format', () => {
  it('round-trips a query by 5-tuple and one with a USERNAME taken from inside a datagram', () => {
    const q1 = encodeQuery(self, 7, 0xfeedf00d, '198.51.100.7', 40000, undefined);
    expect(peekType(q1)).toBe(MsgType.Query);
    expect([instanceHi(q1), instanceLo(q1)]).toEqual([self.hi, self.lo]);
    const out = newQuery();
    expect(decodeQuery(q1, out)).toBe(true);
    expect(out).toEqual({
      slot: 7,
      gen: 0xfeedf00d,
      address: '198.51.100.7',
      port: 40000,
      username: undefined,
    });

    const dgram = Buffer.from('xxxxABCD:efghyyyy', 'latin1');
    const q2 = encodeQuery(self, 1, 2, '2001:db8::1', 5, dgram, 4, 13);
    expect(decodeQuery(q2, out)).toBe(true);
    expect(out.address).toBe('2001:db8::1');
    expect(out.username?.toString('latin1')).toBe('ABCD:efgh');
  });

  it('refuses queries whose fields are out of bounds', () => {
    const out = newQuery();
    const good = encodeQuery(self, 1, 2, '10.0.0.1', 1234, Buffer.from('a:b'));
    // Truncated anywhere: never a read past the end.
    for (let n = 0; n < good.length; n++) {
      const b = good.subarray(0, n);
      expect(peekType(b) === MsgType.Query && decodeQuery(b, out)).toBe(false);
    }
    // One byte too many.
    expect(decodeQuery(Buffer.concat([good, Buffer.from([0])]), out)).toBe(false);
    // Not an IP literal.
    expect(decodeQuery(encodeQuery(self, 1, 2, 'localhost', 1, undefined), out)).toBe(false);
    // Port 0, generation 0.
    expect(decodeQuery(encodeQuery(self, 1, 2, '10.0.0.1', 0, undefined), out)).toBe(false);
    expect(decodeQuery(encodeQuery(self, 1, 0, '10.0.0.1', 1, undefined), out)).toBe(false);
    // A USERNAME longer than STUN allows (RFC 8489 §14.3).
    const long = Buffer.alloc(USERNAME_MAX + 1, 0x61);
    expect(decodeQuery(encodeQuery(self, 1, 2, '10.0.0.1', 1, long), out)).toBe(false);
    expect(decodeQuery(encodeQuery(self, 1, 2, '10.0.0.1', 1, long.subarray(1)), out)).toBe(true);
  });

  it('round-trips answers, heartbeats, releases and data headers', () => {
    const a = newAnswer();
    expect(decodeAnswer(encodeAnswer(self, 3, 4, Owned.Ufrag, 5, 6), a)).toBe(true);
    expect(a).toEqual({ slot: 3, gen: 4, owned: Owned.Ufrag, ownerSlot: 5, ownerGen: 6 });
    // "Mine" without a token is not an answer; an unknown result byte neither.
    expect(decodeAnswer(encodeAnswer(self, 3, 4, Owned.Flow, 5, 0), a)).toBe(false);
    const bad = encodeAnswer(self, 3, 4, Owned.None, 0, 0);
    bad[20] = 3;
    expect(decodeAnswer(bad, a)).toBe(false);

    const hb: Heartbeat = { seq: 0, workers: 0, flags: 0 };
    const ping = encodeHeartbeat(MsgType.Pong, self, 0xffffffff, 4, 1);
    expect(peekType(ping)).toBe(MsgType.Pong);
    expect(decodeHeartbeat(ping, hb)).toBe(true);
    expect(hb).toEqual({ seq: 0xffffffff, workers: 4, flags: 1 });
    expect(decodeHeartbeat(encodeHeartbeat(MsgType.Ping, self, 1, 0, 0), hb)).toBe(false);

    const r = encodeRelease(self, ReleaseOf.Owning, 9, 10);
    expect([peekType(r), releaseOf(r), releaseSlot(r), releaseGen(r)]).toEqual([
      MsgType.Release,
      ReleaseOf.Owning,
      9,
      10,
    ]);
    r[20] = 7;
    expect(releaseOf(r)).toBe(-1);

    const up = dataHeader(MsgType.Up, 0xfffffffe, 0x80000001);
    expect(up.length).toBe(DATA_HEADER);
    const d = Buffer.concat([up, Buffer.from([0x80, 1, 2])]);
    expect([peekType(d), dataSlot(d), dataGen(d)]).toEqual([MsgType.Up, 0xfffffffe, 0x80000001]);
    // A data header with no payload is still a (zero-length) datagram of the tunnel.
    expect(peekType(up)).toBe(MsgType.Up);
  });

  it('finds where each control message of a batch ends; data and cut-off messages are not part of one', () => {
    const msgs = [
      encodeQuery(self, 1, 2, '2001:db8::1', 5000, Buffer.from('srv:cli')),
      encodeAnswer(self, 3, 4, Owned.Flow, 5, 6),
      encodeHeartbeat(MsgType.Ping, self, 7, 1, 0),
      encodeRelease(self, ReleaseOf.Receiving, 8, 9),
      encodeQuery(self, 10, 11, '192.0.2.1', 6000, undefined),
    ];
    const batch = Buffer.concat(msgs);
    const lengths: number[] = [];
    for (let off = 0; off < batch.length; off += lengths.at(-1)!) lengths.push(controlLength(batch, off));
    expect(lengths).toEqual(msgs.map((m) => m.length));
    const q = newQuery();
    const at = msgs[0]!.length + msgs[1]!.length + msgs[2]!.length + msgs[3]!.length;
    expect(decodeQuery(batch.subarray(at), q)).toBe(true);
    expect([q.slot, q.gen, q.address, q.port, q.username]).toEqual([10, 11, '192.0.2.1', 6000, undefined]);
    // A query cut short, a tunnel datagram, another version: no length.
    expect(controlLength(batch.subarray(0, msgs[0]!.length - 1), 0)).toBe(Malformed);
    expect(controlLength(dataHeader(MsgType.Up, 1, 1), 0)).toBe(Malformed);
    const v2 = Buffer.from(msgs[1]!);
    v2[2] = 2;
    expect(controlLength(v2, 0)).toBe(BadVersion);
  });

  it('tells foreign bytes, other versions and unknown types apart', () => {
    expect(peekType(Buffer.from([0x00, 0x01, 0x00, 0x00]))).toBe(Malformed); // STUN
    expect(peekType(Buffer.from([0x49, 0x50, 1]))).toBe(Malformed); // short
    expect(peekType(Buffer.from([0x49, 0x50, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBe(
      BadVersion,
    );
    expect(peekType(Buffer.from([0x49, 0x50, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0]))).toBe(Malformed);
    expect(peekType(Buffer.from([0x49, 0x50, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBe(Malformed);
    // A control message shorter than its fixed part.
    expect(peekType(encodeAnswer(self, 1, 1, Owned.None, 0, 0).subarray(0, 20))).toBe(Malformed);
  });

  it('never throws on arbitrary bytes, whatever the type byte says', () => {
    const q = newQuery();
    const a = newAnswer();
    const hb: Heartbeat = { seq: 0, workers: 0, flags: 0 };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700 }), fc.integer({ min: 0, max: 9 }), (bytes, type) => {
        const b = Buffer.from(bytes);
        if (b.length >= 4) {
          b[0] = 0x49;
          b[1] = 0x50;
          b[2] = 1;
          b[3] = type;
        }
        const t = peekType(b);
        if (t === MsgType.Query) decodeQuery(b, q);
        if (t === MsgType.Answer) decodeAnswer(b, a);
        if (t === MsgType.Ping || t === MsgType.Pong) decodeHeartbeat(b, hb);
        if (t === MsgType.Release) releaseOf(b);
        if (t === MsgType.Up || t === MsgType.Down) dataSlot(b) + dataGen(b);
        // Within a batch: a message's length never runs past the datagram.
        for (let off = 0; off < b.length; ) {
          const n = controlLength(b, off);
          if (n < 0) break;
          expect(n).toBeGreaterThan(0);
          expect(off + n).toBeLessThanOrEqual(b.length);
          off += n;
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('TokenTable', () => {
  it('names entries by slot and a random non-zero generation; a freed slot comes back under another', () => {
    const t = new TokenTable<string>(2);
    const a = t.add('a');
    const ga = t.gen(a);
    expect(ga).not.toBe(0);
    expect(t.get(a, ga)).toBe('a');
    expect(t.get(a, ga ^ 1)).toBeUndefined();
    expect(t.get(a, 0)).toBeUndefined();
    expect(t.get(99, ga)).toBeUndefined();
    const b = t.add('b');
    expect(t.add('c')).toBe(-1); // full: refused, nothing grows
    expect(t.delete(a, ga)).toBe(true);
    expect(t.delete(a, ga)).toBe(false);
    const c = t.add('c');
    expect(c).toBe(a);
    expect(t.get(c, ga)).toBeUndefined(); // the old token is stale
    expect(t.get(c, t.gen(c))).toBe('c');
    expect([...t.values()].sort()).toEqual(['b', 'c']);
    expect(t.size).toBe(2);
    expect(t.get(b, t.gen(b))).toBe('b');
  });
});
