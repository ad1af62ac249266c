// EbpfFastPath (src/fastpath/ebpf/fast-path.ts) over a model of its two maps: the flows hash
// (key bytes → value bytes, as bpf_map_update_elem/delete_elem would keep them) and the mapped
// counters array, which the model's `forward` bumps the way the program does (packets, UDP
// payload bytes, the monotonic time of an upstream datagram). Flow events are the registry's, on
// real Session objects; everything the kernel would hold is checked after each event returns
// (synchronous: no timer, no flush). Timers are never relied on: pollNow() does what the poll
// interval would.
import { describe, expect, it } from 'vitest';
import { EbpfFastPath, type FlowMaps } from '../../src/fastpath/ebpf/fast-path.ts';
import { COUNTER, COUNTER_BYTES, encodeKey, FLOW_UP, VALUE } from '../../src/fastpath/ebpf/map-layout.ts';
import { createLogger } from '../../src/log.ts';
import type { Session } from '../../src/session/session.ts';
import { Host, Routes, SOURCE, Sources, session } from './fakes.ts';

const LISTEN = { address: '198.18.0.1', port: 10000 };
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ENOENT = -2;

class FakeMaps implements FlowMaps {
  readonly flows = new Map<string, Uint8Array>();
  readonly counters: Uint32Array;
  readonly log: string[] = [];
  /** The next this many puts fail with E2BIG (a full map). */
  failPuts = 0;
  closed = false;
  constructor(slots: number) {
    this.counters = new Uint32Array((slots * COUNTER_BYTES) / 4);
  }
  put(k: Uint8Array, v: Uint8Array): number {
    if (this.failPuts > 0) {
      this.failPuts--;
      return -7;
    }
    this.log.push(`put ${describeKey(k)}`);
    this.flows.set(hex(k), Uint8Array.from(v));
    return 0;
  }
  drop(k: Uint8Array): number {
    this.log.push(`drop ${describeKey(k)}`);
    return this.flows.delete(hex(k)) ? 0 : ENOENT;
  }
  close(): void {
    this.closed = true;
  }
  value(src: [string, number], dst: [string, number]): DataView | undefined {
    const v = this.flows.get(
      hex(encodeKey({ address: src[0], port: src[1] }, { address: dst[0], port: dst[1] })),
    );
    return v === undefined ? undefined : new DataView(v.buffer);
  }
  /** The program forwarding `n` datagrams of `payload` bytes that arrive as src → dst; false on a miss. */
  forward(src: [string, number], dst: [string, number], n: number, payload: number, nowNs = 0): boolean {
    const v = this.value(src, dst);
    if (v === undefined) return false;
    const slot = v.getUint32(VALUE.slot, true);
    const at = (slot * COUNTER_BYTES) / 4;
    const c = this.counters;
    c[at + COUNTER.packets / 4] = c[at + COUNTER.packets / 4]! + n;
    c[at + COUNTER.bytes / 4] = c[at + COUNTER.bytes / 4]! + n * payload;
    if (v.getUint32(VALUE.flags, true) & FLOW_UP) {
      c[at + COUNTER.lastNs / 4] = nowNs % 2 ** 32;
      c[at + COUNTER.lastNs / 4 + 1] = Math.floor(nowNs / 2 ** 32);
    }
    return true;
  }
  /** Where an entry sends the datagram: the new destination address:port. */
  target(src: [string, number], dst: [string, number]): string | undefined {
    const v = this.value(src, dst);
    if (v === undefined) return undefined;
    const b = new Uint8Array(v.buffer);
    return `${[...b.subarray(VALUE.daddr, VALUE.daddr + 4)].join('.')}:${v.getUint16(VALUE.dport)}`;
  }
}

function describeKey(k: Uint8Array): string {
  const d = new DataView(k.buffer, k.byteOffset);
  return `${[...k.subarray(0, 4)].join('.')}:${d.getUint16(8)}>${[...k.subarray(4, 8)].join('.')}:${d.getUint16(10)}`;
}

const CLIENT = (port: number): [string, number] => ['198.18.0.2', port];
const PUBLIC: [string, number] = [LISTEN.address, LISTEN.port];
const BACKEND: [string, number] = ['10.77.2.11', 10000];
const UPSTREAM = (port: number): [string, number] => [SOURCE, port];
const flush = () => new Promise((r) => setTimeout(r, 0));

async function setup(slots = 64, ifindex: (dev: string) => number = (d) => ({ eth0: 2, eth1: 3 })[d] ?? 0) {
  const maps = new FakeMaps(slots);
  const host = new Host();
  const sources = new Sources();
  // Both test backends' source addresses are known from the start (one test forgets one).
  await sources.resolve('10.77.2.11');
  await sources.resolve('10.77.2.12');
  sources.resolved.length = 0;
  const routes = new Routes();
  let now = 1000;
  let mono = 5_000_000_000;
  const handovers: number[] = [];
  const fp = await EbpfFastPath.attach(
    {
      listenAddress: LISTEN.address,
      listenPort: LISTEN.port,
      pollIntervalMs: 60_000,
      slots: { first: 0, count: slots },
    },
    {
      maps,
      host,
      sources,
      nextHops: routes,
      ifindex,
      clock: () => now,
      monotonicNs: () => mono,
      log: createLogger('silent'),
      onHandover: (ms) => handovers.push(ms),
    },
  );
  return {
    maps,
    host,
    sources,
    routes,
    fp,
    handovers,
    advance(ms: number) {
      now += ms;
      mono += ms * 1e6;
    },
    now: () => now,
    mono: () => mono,
  };
}

describe('EbpfFastPath', () => {
  it('established: both entries are in the map before the event returns, with the rewrite of each direction', async () => {
    const { maps, fp, handovers } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    expect(maps.log).toEqual([
      `put 198.18.0.2:40000>198.18.0.1:10000`,
      `put 10.77.2.11:10000>10.77.2.1:16384`,
    ]);
    expect(maps.target(CLIENT(40000), PUBLIC)).toBe('10.77.2.11:10000');
    expect(maps.target(BACKEND, UPSTREAM(16384))).toBe('198.18.0.2:40000');
    const up = maps.value(CLIENT(40000), PUBLIC)!;
    expect([...new Uint8Array(up.buffer).subarray(0, 4)]).toEqual([10, 77, 2, 1]);
    expect(up.getUint16(VALUE.sport)).toBe(16384);
    expect(up.getUint32(VALUE.ifindex, true)).toBe(3);
    expect(maps.value(BACKEND, UPSTREAM(16384))!.getUint32(VALUE.ifindex, true)).toBe(2);
    expect(fp.kernelSessions).toBe(1);
    expect(fp.stats).toMatchObject({ handovers: 1, transactions: 1, failures: 0 });
    expect(handovers).toEqual([0]);
  });

  it('a rebinding moves the session without a gap: new upstream entry, downstream retargeted in place, old entry last', async () => {
    const { maps, fp, host } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    maps.forward(CLIENT(40000), PUBLIC, 10, 100, 1);
    maps.log.length = 0;
    const ep = { address: '198.18.0.2', port: 40500, joined: true } as Session['current'];
    s.endpoints.push(ep);
    s.current = ep;
    fp.endpointJoined(s, ep);
    expect(maps.log).toEqual([
      'put 198.18.0.2:40500>198.18.0.1:10000',
      'put 10.77.2.11:10000>10.77.2.1:16384', // replaces the target: the first echo goes to the new port
      'drop 198.18.0.2:40000>198.18.0.1:10000',
    ]);
    expect(maps.target(BACKEND, UPSTREAM(16384))).toBe('198.18.0.2:40500');
    expect(maps.flows.size).toBe(2);
    fp.currentChanged(s, ep); // the same state: nothing to do
    expect(maps.log).toHaveLength(3);
    // The counters are the session's, not the entries': the move lost nothing.
    maps.forward(CLIENT(40500), PUBLIC, 5, 100, 2);
    fp.pollNow();
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 15, bytesUp: 1500, packetsDown: 0, bytesDown: 0 });
    expect(fp.stats.handovers).toBe(1);
  });

  it('close: entries deleted at once, the final counts added before the close log (the returned promise)', async () => {
    const { maps, fp, host } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    maps.forward(CLIENT(40000), PUBLIC, 3, 50, 1);
    fp.pollNow();
    maps.forward(CLIENT(40000), PUBLIC, 2, 50, 2);
    maps.forward(BACKEND, UPSTREAM(16384), 4, 70);
    const p = fp.closed(s, 'idle', true);
    expect(maps.flows.size).toBe(0);
    expect(fp.kernelSessions).toBe(0);
    expect(maps.forward(CLIENT(40000), PUBLIC, 1, 50)).toBe(false); // to Node now
    expect(p).toBeInstanceOf(Promise);
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 3, bytesUp: 150, packetsDown: 0, bytesDown: 0 });
    await p;
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 5, bytesUp: 250, packetsDown: 4, bytesDown: 280 });
    expect(fp.totals).toEqual({ packetsUp: 5, bytesUp: 250, packetsDown: 4, bytesDown: 280 });
    // Nothing counted since the last read: no promise, the log is written at once.
    const q = session(40001, 16385);
    fp.established(q);
    expect(fp.closed(q, 'idle', true)).toBeUndefined();
  });

  it('a session closed and its slot reused: the new session starts from zero, freed slots are reused oldest first', async () => {
    const { maps, fp, host } = await setup(6); // three sessions' worth
    const a = session(40000, 16384);
    const b = session(40001, 16385);
    const c = session(40002, 16386);
    fp.established(a);
    fp.established(b);
    fp.established(c);
    const slotOf = (p: number): number => maps.value(CLIENT(p), PUBLIC)!.getUint32(VALUE.slot, true);
    expect([slotOf(40000), slotOf(40001), slotOf(40002)]).toEqual([0, 2, 4]);
    maps.forward(CLIENT(40000), PUBLIC, 7, 10);
    await fp.closed(a, 'idle', true);
    await fp.closed(b, 'idle', true);
    // No slot left for a fourth: it stays in Node (counted as a failure), the others go on.
    const d = session(40003, 16387);
    const e = session(40004, 16388);
    fp.established(d);
    fp.established(e);
    expect([slotOf(40003), slotOf(40004)]).toEqual([0, 2]);
    const f = session(40005, 16389);
    fp.established(f);
    expect(maps.value(CLIENT(40005), PUBLIC)).toBeUndefined();
    expect(fp.stats.failures).toBe(1);
    fp.pollNow();
    expect(host.counts.get(d.id)).toBeUndefined();
    expect(host.counts.get(a.id)?.packetsUp).toBe(7);
  });

  it('ICE restart takeover: the new owner of a 5-tuple keeps its entry when the old session closes or moves afterwards', async () => {
    const { maps, fp } = await setup();
    const old = session(40000, 16384);
    fp.established(old);
    const next = session(40000, 16390, '198.18.0.2', '10.77.2.12');
    fp.established(next);
    expect(maps.target(CLIENT(40000), PUBLIC)).toBe('10.77.2.12:10000');
    await fp.closed(old, 'restart', true);
    expect(maps.target(CLIENT(40000), PUBLIC)).toBe('10.77.2.12:10000');
    expect(maps.target(BACKEND, UPSTREAM(16384))).toBeUndefined();
    expect(maps.flows.size).toBe(2);
  });

  it('a session whose client flow reaches it through a peer leaves the kernel, its counts stay right, and comes back with the flow', async () => {
    const { maps, fp, host } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    maps.forward(CLIENT(40000), PUBLIC, 5, 100, 1);
    maps.forward(BACKEND, UPSTREAM(16384), 3, 100);
    // The balancer sent the client's flow to another replica, which tunnels it here (docs/peers.md):
    // the backend's datagrams must reach Node, which sends them back through that replica.
    s.current.via = { peer: '10.0.0.2:10001', send: () => {} };
    fp.routeChanged(s, s.current);
    expect(maps.flows.size).toBe(0);
    expect(fp.kernelSessions).toBe(0);
    expect(maps.forward(BACKEND, UPSTREAM(16384), 1, 100)).toBe(false); // to Node now
    // What the kernel forwarded before it left reaches the session's counts (its counter slot is
    // the session's, not the entries').
    fp.pollNow();
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 5, bytesUp: 500, packetsDown: 3, bytesDown: 300 });
    // The flow comes back to this replica directly: into the kernel again.
    s.current.via = undefined;
    fp.routeChanged(s, s.current);
    expect(maps.target(BACKEND, UPSTREAM(16384))).toBe('198.18.0.2:40000');
    expect(fp.kernelSessions).toBe(1);
  });

  it('polls: deltas to the registry, and the idle clock set to the time of the last client datagram', async () => {
    const { maps, fp, host, advance, mono, now } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    advance(100);
    maps.forward(CLIENT(40000), PUBLIC, 4, 20, mono()); // at now
    advance(300);
    maps.forward(BACKEND, UPSTREAM(16384), 2, 30, mono()); // downstream only: no client activity
    advance(50);
    fp.pollNow();
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 4, bytesUp: 80, packetsDown: 2, bytesDown: 60 });
    expect(host.touched).toEqual([[s.id, now() - 350]]);
    fp.pollNow(); // nothing new: nothing reported
    expect(host.touched).toHaveLength(1);
    expect(fp.stats.polls).toBe(2);
  });

  it('a backend whose source address is not known yet: in the kernel once it is resolved (hand-over time includes it)', async () => {
    const { maps, fp, sources, handovers } = await setup();
    sources.known.delete('10.77.2.11');
    const s = session(40000, 16384);
    fp.established(s);
    expect(maps.flows.size).toBe(0);
    await flush();
    await flush();
    expect(sources.resolved).toEqual(['10.77.2.11']);
    expect(maps.flows.size).toBe(2);
    expect(handovers).toHaveLength(1);
  });

  it('a client without a route in the last table read: the table is read again and the session placed', async () => {
    const { maps, fp, routes } = await setup();
    routes.next = () => undefined;
    await routes.refresh();
    routes.next = (a) => ({ via: a, dev: 'eth1' });
    fp.established(session(40000, 16384));
    expect(maps.flows.size).toBe(0);
    await flush();
    await flush();
    expect(maps.flows.size).toBe(2);
  });

  it('IPv6 sessions and sessions without a route stay in Node', async () => {
    const { maps, fp, routes } = await setup();
    fp.established(session(40000, 16384, '2001:db8::1'));
    routes.next = () => undefined;
    fp.established(session(40001, 16385, '203.0.113.9'));
    await flush();
    await flush();
    expect(maps.flows.size).toBe(0);
    expect(fp.kernelSessions).toBe(0);
  });

  it('a next hop on an interface that is gone (no index) keeps the session in Node', async () => {
    const { maps, fp, routes } = await setup();
    routes.next = (a) => ({ via: a, dev: 'gone0' });
    await routes.refresh();
    fp.established(session(40000, 16384));
    expect(maps.flows.size).toBe(0);
    expect(fp.kernelSessions).toBe(0);
  });

  it('interface indexes: looked up once per routing-table read, not per hand-over; a missing one is asked again', async () => {
    const indexes: Record<string, number> = { eth0: 2, eth1: 3 };
    const asked: string[] = [];
    const { maps, fp, sources } = await setup(64, (d) => {
      asked.push(d);
      return indexes[d] ?? 0;
    });
    fp.established(session(40000, 16384));
    fp.established(session(40001, 16385));
    fp.established(session(40002, 16386));
    expect(maps.flows.size).toBe(6);
    expect(asked.sort()).toEqual(['eth0', 'eth1']);
    // The routing table is read again (here: a session that waits for its backend's source
    // address): the indexes are asked afresh, and an interface that came back with a new index is
    // what the next session gets.
    indexes.eth1 = 7;
    sources.known.delete('10.77.2.12');
    fp.established(session(40003, 16387, '198.18.0.2', '10.77.2.12'));
    await flush();
    await flush();
    expect(asked.sort()).toEqual(['eth0', 'eth0', 'eth1', 'eth1']);
    expect(maps.value(CLIENT(40003), PUBLIC)!.getUint32(VALUE.ifindex, true)).toBe(7);
    // A missing interface is not remembered.
    indexes.eth1 = 0;
    sources.known.delete('10.77.2.11');
    fp.established(session(40004, 16388));
    await flush();
    await flush();
    fp.established(session(40005, 16389));
    expect(fp.kernelSessions).toBe(4);
    expect(asked.filter((d) => d === 'eth1')).toHaveLength(4);
  });

  it('a failed map update leaves nothing of the session in the kernel; it stays in Node', async () => {
    const { maps, fp } = await setup();
    maps.failPuts = 1;
    fp.established(session(40000, 16384));
    expect(maps.flows.size).toBe(0);
    // The downstream put fails after the upstream one went in: that one is taken out again.
    const s = session(40001, 16385);
    maps.log.length = 0;
    const put = maps.put.bind(maps);
    let n = 0;
    maps.put = (k, v) => (++n === 2 ? -7 : put(k, v));
    fp.established(s);
    expect(maps.flows.size).toBe(0);
    expect(maps.log).toEqual([
      'put 198.18.0.2:40001>198.18.0.1:10000',
      'drop 198.18.0.2:40001>198.18.0.1:10000',
    ]);
    expect(fp.stats.failures).toBe(2);
    expect(fp.kernelSessions).toBe(0);
  });

  it('stop: a last read, every entry deleted, the counters unmapped; events after it change nothing', async () => {
    const { maps, fp, host } = await setup();
    const a = session(40000, 16384);
    const b = session(40001, 16385);
    fp.established(a);
    fp.established(b);
    maps.forward(CLIENT(40001), PUBLIC, 9, 10, 1);
    await fp.stop();
    expect(host.counts.get(b.id)?.packetsUp).toBe(9);
    expect(maps.flows.size).toBe(0);
    expect(maps.closed).toBe(true);
    fp.established(session(40002, 16386));
    expect(maps.flows.size).toBe(0);
    await fp.stop(); // idempotent
  });
});
