// The kernel path's rewrites leave valid checksums: each flow chain's statements (as nft-script.ts
// writes them) are applied to real IPv4/UDP bytes the way the kernel's nft_payload_set_eval does —
// a raw write stores bytes only; a write of a known field updates the checksums by RFC 1624's
// HC' = ~(~HC + ~m + m') over the bytes written (the IPv4 header checksum for an address, and the
// UDP checksum through the pseudo-header; the UDP checksum for a port) — and the result is checked
// by recomputing both checksums from scratch. The same for a datagram whose UDP checksum the
// kernel still has to complete (CHECKSUM_PARTIAL: the field holds the pseudo-header seed, only
// address writes move it). The namespace suite checks the same with the real kernel.
import { describe, expect, it } from 'vitest';
import { carrierWords, onesSum } from '../../src/fastpath/checksum.ts';
import { addFlowLines, type KernelFlow } from '../../src/fastpath/nft-script.ts';
import {
  addrText,
  complete,
  datagram,
  ip4,
  natFlow,
  neg,
  put16,
  randomFlow,
  rng,
  rtpPayload,
  sum,
  u16,
  valid,
} from './ipv4-udp.ts';

const add = (a: number, b: number): number => {
  const s = a + b;
  return (s & 0xffff) + (s >>> 16);
};
/** What the kernel does for one statement of a flow chain (the forms nft-script.ts emits). */
function apply(d: Uint8Array, stmt: string, partial: boolean): void {
  const raw = /^@(nh|th),(\d+),(\d+) set 0x([0-9a-f]+)$/.exec(stmt);
  if (raw) {
    const at = (raw[1] === 'nh' ? 0 : 20) + Number(raw[2]) / 8;
    const hex = raw[4]!.padStart(Number(raw[3]) / 4, '0');
    for (let i = 0; i < hex.length / 2; i++) d[at + i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    return;
  }
  const field = /^(ip|udp) (saddr|daddr|sport|dport) set (\S+)$/.exec(stmt);
  if (!field) throw new Error(`unexpected statement ${stmt}`);
  const at = { saddr: 12, daddr: 16, sport: 20, dport: 22 }[field[2] as 'saddr']!;
  const bytes = field[1] === 'ip' ? ip4(field[3]!) : [Number(field[3]) >> 8, Number(field[3]) & 0xff];
  const before = sum(d, at, at + bytes.length);
  const after = sum(Uint8Array.from(bytes));
  // RFC 1624 eqn. 3 for each checksum the write covers.
  const update = (o: number): void => put16(d, o, neg(add(add(neg(u16(d, o)), neg(before)), after)));
  if (field[1] === 'ip') {
    update(10);
    // The pseudo-header: a seed (CHECKSUM_PARTIAL) moves by the plain difference.
    if (partial) put16(d, 26, add(add(u16(d, 26), neg(before)), after));
    else update(26);
  } else if (!partial) {
    update(26); // a port is not in the pseudo-header: a seed needs nothing
  }
  d.set(bytes, at);
}

/** The statements between the counter and `fwd` of a chain line. */
function statements(chainLine: string): string[] {
  const body = /\{ (.*); \}$/.exec(chainLine)![1]!;
  return body.split('; ').filter((s) => !s.startsWith('counter') && !s.startsWith('fwd'));
}

const LISTEN = { address: '198.18.0.1', port: 10000 };
const hop = { via: '10.77.0.1', dev: 'eth1' };

function forward(f: KernelFlow, partial: boolean, payload: number[]) {
  const [up, down] = addFlowLines(f, 1, LISTEN);
  const toBackend = datagram(
    [f.client.address, f.client.port],
    [LISTEN.address, LISTEN.port],
    payload,
    partial,
  );
  const toClient = datagram(
    [f.backend.address, f.backend.port],
    [f.source, f.upstreamPort],
    payload,
    partial,
  );
  for (const s of statements(up!)) apply(toBackend, s, partial);
  for (const s of statements(down!)) apply(toClient, s, partial);
  if (partial) {
    complete(toBackend);
    complete(toClient);
  }
  return { toBackend, toClient, up: up!, down: down! };
}

describe('checksums after the kernel path rewrites', () => {
  for (const partial of [false, true]) {
    it(`2000 random flows, both directions, backends on the listening port and off it${partial ? ' (CHECKSUM_PARTIAL)' : ''}`, () => {
      const r = rng(partial ? 7 : 11);
      for (let i = 0; i < 2000; i++) {
        const f = randomFlow(r, i, LISTEN.port, hop);
        const payload = rtpPayload(r);
        const { toBackend, toClient } = forward(f, partial, payload);
        // What the backend and the client receive: addressed as Node's sockets would have sent it.
        expect([
          addrText(toBackend, 12),
          u16(toBackend, 20),
          addrText(toBackend, 16),
          u16(toBackend, 22),
        ]).toEqual([f.source, f.upstreamPort, f.backend.address, f.backend.port]);
        expect([
          addrText(toClient, 12),
          u16(toClient, 20),
          addrText(toClient, 16),
          u16(toClient, 22),
        ]).toEqual([LISTEN.address, LISTEN.port, f.client.address, f.client.port]);
        expect(valid(toBackend)).toEqual({ ip: true, udp: true });
        expect(valid(toClient)).toEqual({ ip: true, udp: true });
      }
    });
  }

  it('one raw write and one checksummed write per changing pair (two checksummed writes per direction at most)', () => {
    const f = natFlow(hop);
    const { up, down } = forward(f, false, [0x80, 1, 2, 3]);
    expect(statements(up)).toHaveLength(3);
    expect(statements(down)).toHaveLength(3);
    const other = forward({ ...f, backend: { ...f.backend, port: 20000 } }, false, [0x80]);
    expect(statements(other.up).map((s) => s.split(' ')[0])).toEqual(['@nh,96,64', 'ip', '@th,0,32', 'udp']);
  });

  it('the check can fail: the same writes without the carrier (plain raw values) leave both checksums wrong', () => {
    const d = datagram(['203.0.113.7', 40000], [LISTEN.address, LISTEN.port], [0x80, 9, 9], false);
    apply(d, '@nh,96,64 set 0x0a4d02010a4d020b', false); // 10.77.2.1 → 10.77.2.11, no checksum update
    expect(valid(d)).toEqual({ ip: false, udp: false });
  });

  it('carrierWords: first + second − first′, folded (RFC 1071 arithmetic)', () => {
    // 0x0001 + 0x0002 − 0x0004 = −1 ≡ 0xfffe in one's complement.
    expect(carrierWords([0x0001], [0x0002], [0x0004])).toEqual([0xfffe]);
    expect(carrierWords([0xc612, 0x0002], [0xc612, 0x0001], [0x0a4d, 0x0201])).toEqual([
      onesSum([0xc612, 0x0002, 0xc612, 0x0001, ~0x0a4d & 0xffff, ~0x0201 & 0xffff]),
      0,
    ]);
    expect(onesSum([0xffff, 0x0001])).toBe(0x0001);
  });
});
