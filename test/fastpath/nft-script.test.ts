import { describe, expect, it } from 'vitest';
import { desiredFlow, type FlowLookup, FlowPlan } from '../../src/fastpath/flow-plan.ts';
import { parseCounters } from '../../src/fastpath/kernel-counters.ts';
import { ownedChains, ownedCounters, ownedElements } from '../../src/fastpath/listing.ts';
import {
  addCounterLines,
  addFlowLines,
  chainNames,
  counterNames,
  deleteCounterLines,
  deleteFlowLines,
  deleteOwnedLines,
  deleteTableScript,
  type KernelFlow,
  type NextHop,
  ownsChain,
  ownsCounter,
  tableScript,
} from '../../src/fastpath/nft-script.ts';
import { checkFastPath } from '../../src/fastpath/preflight.ts';
import { ClientEndpoint, Session, SessionState } from '../../src/session/session.ts';

const PARAMS = {
  listenAddress: '198.18.0.1',
  listenPort: 10000,
  devices: ['eth0', 'eth1'],
};
const LISTEN = { address: '198.18.0.1', port: 10000 };

let nextId = 1;
function session(client: [string, number], backend: [string, number], upstreamPort: number): Session {
  const upstream = { localPort: upstreamPort, sendTo() {}, send() {}, connect() {}, close() {} };
  const s = new Session(
    nextId++,
    'srv:cli',
    3,
    { username: 1, serverUfrag: 2 },
    upstreamPort,
    { address: client[0], port: client[1] },
    0,
  );
  s.upstream = upstream;
  s.state = SessionState.Established;
  s.backend = { name: 'b', address: backend[0], port: backend[1] } as Session['backend'];
  s.endpoints.push(s.current);
  s.current.joined = true; // as the registry indexes it
  return s;
}

/** Moves the session's downstream target to a new client port (latching, a NAT rebinding). */
function latch(s: Session, port: number): void {
  const ep = new ClientEndpoint(s, s.current.address, port, 2);
  ep.joined = true; // as the registry indexes it
  s.endpoints.push(ep);
  s.current = ep;
}

/**
 * The namespace as the plan sees it: backends (10.77.0.0/16) on-link behind eth1, clients
 * (198.18.0.0/16) through a gateway on eth0, nothing else routed. Mutable per test.
 */
class Lookup implements FlowLookup {
  readonly sources = new Map<string, string>([
    ['10.77.2.11', '10.77.2.1'],
    ['10.77.2.12', '10.77.2.1'],
  ]);
  readonly hops = new Map<string, NextHop>();
  sourceOf(backendAddress: string): string | null | undefined {
    return this.sources.get(backendAddress);
  }
  nextHop(address: string): NextHop | undefined {
    const h = this.hops.get(address);
    if (h !== undefined) return h;
    if (address.startsWith('10.77.')) return { via: address, dev: 'eth1' };
    if (address.startsWith('198.18.')) return { via: '198.18.0.254', dev: 'eth0' };
    return undefined;
  }
}

/** The flow the default {@link Lookup} gives a session. */
function flowOf(client: [string, number], backend: [string, number], upstreamPort: number): KernelFlow {
  return {
    client: { address: client[0], port: client[1] },
    backend: { address: backend[0], port: backend[1] },
    upstreamPort,
    source: '10.77.2.1',
    toBackend: { via: backend[0], dev: 'eth1' },
    toClient: { via: '198.18.0.254', dev: 'eth0' },
  };
}

describe('nftables script text', () => {
  it('creates the netdev ice_ingress table, removing the legacy ip table and a stale one first', () => {
    expect(tableScript(PARAMS).split('\n')).toEqual([
      'add table ip ice_ingress',
      'delete table ip ice_ingress',
      'add table netdev ice_ingress',
      'delete table netdev ice_ingress',
      'table netdev ice_ingress {',
      '  map flows { type ipv4_addr . inet_service . ipv4_addr . inet_service : verdict; }',
      '  chain ingress {',
      '    type filter hook ingress devices = { "eth0", "eth1" } priority 0; policy accept;',
      // One lookup of the whole UDP 4-tuple for both directions; STUN (first byte 0-3) excluded.
      '    meta l4proto udp @th,64,8 > 3 ip frag-off & 0x3fff == 0 udp checksum != 0 ip saddr . udp sport . ip daddr . udp dport vmap @flows',
      '  }',
      '}',
      '',
    ]);
    // Every table statement names ours (or the legacy one it removes); nothing else is addressed.
    for (const m of tableScript(PARAMS).matchAll(/table (\S+) (\S+)/g))
      expect(['netdev ice_ingress', 'ip ice_ingress']).toContain(`${m[1]} ${m[2]}`);
  });

  it('hooks exactly the devices it is given', () => {
    expect(tableScript({ ...PARAMS, devices: ['ens5'] })).toContain(
      '    type filter hook ingress devices = { "ens5" } priority 0; policy accept;\n',
    );
    expect(() => tableScript({ ...PARAMS, devices: [] })).toThrow(/no interface to hook/);
  });

  it('deletes the table without failing when it is gone', () => {
    expect(deleteTableScript()).toBe('add table netdev ice_ingress\ndelete table netdev ice_ingress\n');
  });

  it('one flow is two chains of constant rewrites and two elements jumping to them', () => {
    const f = flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    // The backend listens on our listening port: no dport rewrite up, no sport rewrite down.
    expect(addFlowLines(f, 7, LISTEN)).toEqual([
      'add chain netdev ice_ingress u7 { counter name "cu7"; @nh,96,64 set 0x0a4d02017fda0000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.77.2.11 device "eth1"; }',
      'add chain netdev ice_ingress d7 { counter name "cd7"; @nh,96,64 set 0xc612000152920000; ip daddr set 198.18.0.2; udp dport set 40000; fwd ip to 198.18.0.254 device "eth0"; }',
      'add element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 : goto u7 }',
      'add element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 : goto d7 }',
    ]);
    expect(deleteFlowLines(f, 7, LISTEN)).toEqual([
      'delete element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 }',
      'delete element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 }',
      'delete chain netdev ice_ingress u7',
      'delete chain netdev ice_ingress d7',
    ]);
  });

  it('a backend on another port gets the dport rewrite up and the sport rewrite down', () => {
    const f: KernelFlow = {
      ...flowOf(['198.18.0.2', 40000], ['10.77.2.11', 20000], 16390),
      source: '10.77.2.5',
      toBackend: { via: '10.77.0.1', dev: 'eth2' },
    };
    expect(addFlowLines(f, 12, LISTEN)).toEqual([
      'add chain netdev ice_ingress u12 { counter name "cu12"; @nh,96,64 set 0x0a4d02057fd60000; ip daddr set 10.77.2.11; @th,0,32 set 0x4006834a; udp dport set 20000; fwd ip to 10.77.0.1 device "eth2"; }',
      'add chain netdev ice_ingress d12 { counter name "cd12"; @nh,96,64 set 0xc612000152960000; ip daddr set 198.18.0.2; @th,0,32 set 0x27106716; udp dport set 40000; fwd ip to 198.18.0.254 device "eth0"; }',
      'add element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 : goto u12 }',
      'add element netdev ice_ingress flows { 10.77.2.11 . 20000 . 10.77.2.5 . 16390 : goto d12 }',
    ]);
    expect(deleteFlowLines(f, 12, LISTEN)).toEqual([
      'delete element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 }',
      'delete element netdev ice_ingress flows { 10.77.2.11 . 20000 . 10.77.2.5 . 16390 }',
      'delete chain netdev ice_ingress u12',
      'delete chain netdev ice_ingress d12',
    ]);
  });

  it("a worker's chains carry its id; one process's do not; ownership is read back from the name", () => {
    expect(chainNames(7)).toEqual({ up: 'u7', down: 'd7' });
    expect(chainNames(7, 0)).toEqual({ up: 'u0_7', down: 'd0_7' });
    expect(chainNames(12, 31)).toEqual({ up: 'u31_12', down: 'd31_12' });
    const f = flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    expect(addFlowLines(f, 7, LISTEN, 1)).toEqual([
      'add chain netdev ice_ingress u1_7 { counter name "cu1_7"; @nh,96,64 set 0x0a4d02017fda0000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.77.2.11 device "eth1"; }',
      'add chain netdev ice_ingress d1_7 { counter name "cd1_7"; @nh,96,64 set 0xc612000152920000; ip daddr set 198.18.0.2; udp dport set 40000; fwd ip to 198.18.0.254 device "eth0"; }',
      'add element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 : goto u1_7 }',
      'add element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 : goto d1_7 }',
    ]);
    expect(deleteFlowLines(f, 7, LISTEN, 1).slice(2)).toEqual([
      'delete chain netdev ice_ingress u1_7',
      'delete chain netdev ice_ingress d1_7',
    ]);
    expect(ownsChain('u1_7', 1)).toBe(true);
    expect(ownsChain('d1_7', 1)).toBe(true);
    // Worker 1 owns none of worker 11's, one process's, or the table's own chain.
    for (const c of ['u11_7', 'd11_7', 'u7', 'd17', 'ingress', 'u1_', 'x1_7', 'u1_7x'])
      expect(ownsChain(c, 1)).toBe(false);
  });

  it("deleting one worker's listed objects names its elements, then its chains, and nothing else", () => {
    expect(
      deleteOwnedLines({
        elements: ['198.18.0.2 . 40000 . 198.18.0.1 . 10000', '10.77.2.11 . 10000 . 10.77.2.1 . 16384'],
        chains: ['u0_3', 'd0_3', 'u0_9'],
        counters: ['cu0_3', 'cd0_3'],
      }),
    ).toEqual([
      'delete element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 }',
      'delete element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 }',
      'delete chain netdev ice_ingress u0_3',
      'delete chain netdev ice_ingress d0_3',
      'delete chain netdev ice_ingress u0_9',
      'delete counter netdev ice_ingress cu0_3',
      'delete counter netdev ice_ingress cd0_3',
    ]);
    expect(deleteOwnedLines({ elements: [], chains: [], counters: [] })).toEqual([]);
  });

  it("a session's named counters: one per direction, a worker's carry its id, created and deleted by name", () => {
    expect(counterNames(7)).toEqual({ up: 'cu7', down: 'cd7' });
    expect(counterNames(7, 2)).toEqual({ up: 'cu2_7', down: 'cd2_7' });
    expect(addCounterLines(7)).toEqual([
      'add counter netdev ice_ingress cu7',
      'add counter netdev ice_ingress cd7',
    ]);
    expect(deleteCounterLines(7, 2)).toEqual([
      'delete counter netdev ice_ingress cu2_7',
      'delete counter netdev ice_ingress cd2_7',
    ]);
    // A moved session's chains (a new chain id) keep counting into its counters.
    const f = flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    expect(addFlowLines(f, 9, LISTEN, undefined, 3).slice(0, 2)).toEqual([
      'add chain netdev ice_ingress u9 { counter name "cu3"; @nh,96,64 set 0x0a4d02017fda0000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.77.2.11 device "eth1"; }',
      'add chain netdev ice_ingress d9 { counter name "cd3"; @nh,96,64 set 0xc612000152920000; ip daddr set 198.18.0.2; udp dport set 40000; fwd ip to 198.18.0.254 device "eth0"; }',
    ]);
    expect(ownsCounter('cu2_7', 2)).toBe(true);
    expect(ownsCounter('cd2_7', 2)).toBe(true);
    for (const c of ['cu12_7', 'cu7', 'u2_7', 'cx2_7', 'cu2_7x', 'cu2_'])
      expect(ownsCounter(c, 2)).toBe(false);
  });
});

describe('desiredFlow', () => {
  it('is the session with its source and both next hops', () => {
    const look = new Lookup();
    look.hops.set('198.18.0.2', { via: '198.18.0.2', dev: 'eth0' });
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    expect(desiredFlow(s, look)).toEqual({
      ...flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384),
      toClient: { via: '198.18.0.2', dev: 'eth0' },
    });
  });

  it('stays in userspace without a backend, a bound upstream port, IPv4 or a route; pending without a source', () => {
    const look = new Lookup();
    const noBackend = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    noBackend.backend = undefined;
    expect(desiredFlow(noBackend, look)).toBe('userspace');
    expect(desiredFlow(session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 0), look)).toBe('userspace');
    expect(desiredFlow(session(['2001:db8::1', 40000], ['10.77.2.11', 10000], 16384), look)).toBe(
      'userspace',
    );
    expect(desiredFlow(session(['198.18.0.2', 40000], ['fd00::11', 10000], 16384), look)).toBe('userspace');
    // No route to the client, none to the backend.
    expect(desiredFlow(session(['203.0.113.9', 40000], ['10.77.2.11', 10000], 16384), look)).toBe(
      'userspace',
    );
    expect(desiredFlow(session(['198.18.0.2', 40000], ['10.99.0.1', 10000], 16384), look)).toBe('userspace');
    // Routed, but the upstream source address toward this backend is not known yet.
    expect(desiredFlow(session(['198.18.0.2', 40000], ['10.77.2.13', 10000], 16384), look)).toBe('pending');
  });

  it("stays in userspace once its client's 5-tuple left it (another session's client took the port)", () => {
    const look = new Lookup();
    look.hops.set('198.18.0.2', { via: '198.18.0.2', dev: 'eth0' });
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    expect(desiredFlow(s, look)).not.toBe('userspace');
    s.current.joined = false;
    expect(desiredFlow(s, look)).toBe('userspace');
  });

  it('a source that could not be resolved (null) keeps the session in userspace, not waiting', () => {
    const look = new Lookup();
    look.sourceOf = (a: string) => (a === '10.77.2.13' ? null : look.sources.get(a));
    const s = session(['198.18.0.2', 40000], ['10.77.2.13', 10000], 16384);
    expect(desiredFlow(s, look)).toBe('userspace');
    const plan = new FlowPlan(PARAMS);
    plan.established(s, 0);
    expect(plan.missingSources(look)).toEqual([]);
    expect(plan.take(look)).toBeUndefined();
    expect(plan.dirty).toBe(0);
  });
});

describe('FlowPlan batches', () => {
  it('many established sessions become one transaction', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const a = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    const b = session(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385);
    plan.established(a, 10);
    plan.established(b, 12);
    expect(plan.dirty).toBe(2);
    const batch = plan.take(look)!;
    expect(batch.resync).toBe(false);
    // Each session's counters first, then the chains that count into them.
    expect(batch.lines).toEqual([
      ...addCounterLines(1),
      ...addFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 1, LISTEN),
      ...addCounterLines(2),
      ...addFlowLines(flowOf(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385), 2, LISTEN),
    ]);
    expect(batch.changes.map((c) => [c.s, c.from, c.to?.id])).toEqual([
      [a, undefined, 1],
      [b, undefined, 2],
    ]);
    expect(plan.commit(batch, 20).map((h) => h.ms)).toEqual([10, 8]);
    expect(plan.installed).toBe(2);
    expect(plan.installedFlow(a)).toEqual(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384));
    expect([...plan.installedFlows()].map(([s]) => s)).toEqual([a, b]);
    expect(plan.dirty).toBe(0);
    expect(plan.take(look)).toBeUndefined();
  });

  it('latching moves the flow: the old elements and chains are deleted first, then the new ones added', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);
    latch(s, 40999);
    plan.changed(s);
    const batch = plan.take(look)!;
    expect(batch.lines).toEqual([
      'delete element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 }',
      'delete element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 }',
      'delete chain netdev ice_ingress u1',
      'delete chain netdev ice_ingress d1',
      // New chains, the same counters: nothing counted before the move is lost.
      'add chain netdev ice_ingress u2 { counter name "cu1"; @nh,96,64 set 0x0a4d02017fda0000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.77.2.11 device "eth1"; }',
      'add chain netdev ice_ingress d2 { counter name "cd1"; @nh,96,64 set 0xc612000152920000; ip daddr set 198.18.0.2; udp dport set 40999; fwd ip to 198.18.0.254 device "eth0"; }',
      'add element netdev ice_ingress flows { 198.18.0.2 . 40999 . 198.18.0.1 . 10000 : goto u2 }',
      'add element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 : goto d2 }',
    ]);
    // Not a first install: no hand-over time again.
    expect(plan.commit(batch, 3)).toEqual([]);
    expect(plan.counters()).toEqual([{ s, up: 'cu1', down: 'cd1' }]);
    expect(plan.takeRetired()).toBeUndefined();
    expect(plan.installedFlow(s)!.client).toEqual({ address: '198.18.0.2', port: 40999 });
  });

  it('a change that leaves the flow as it is costs nothing', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);
    plan.changed(s); // e.g. a second endpoint joined, current unchanged
    expect(plan.dirty).toBe(1);
    expect(plan.take(look)).toBeUndefined();
    expect(plan.dirty).toBe(0);
    expect(plan.installed).toBe(1);
  });

  it('a session that closes within the window costs nothing; a closed installed one is deleted', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const quick = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(quick, 0);
    plan.closed(quick);
    expect(plan.take(look)).toBeUndefined();
    expect(plan.dirty).toBe(0);
    // Forgotten: a late change event does not bring it back.
    plan.changed(quick);
    expect(plan.dirty).toBe(0);

    const s = session(['198.18.0.2', 40001], ['10.77.2.12', 10000], 16385);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);
    plan.closed(s);
    const batch = plan.take(look)!;
    // The chains and elements go; the counters stay for the next read.
    expect(batch.lines).toEqual(
      deleteFlowLines(flowOf(['198.18.0.2', 40001], ['10.77.2.12', 10000], 16385), 1, LISTEN),
    );
    plan.commit(batch, 2);
    expect(plan.installed).toBe(0);
    expect(plan.counters()).toEqual([{ s, up: 'cu1', down: 'cd1' }]);
    // After that read they are deleted, once.
    expect(plan.takeRetired()).toEqual({ lines: deleteCounterLines(1), names: ['cu1', 'cd1'] });
    expect(plan.counters()).toEqual([]);
    expect(plan.takeRetired()).toBeUndefined();
    plan.changed(s);
    expect(plan.dirty).toBe(0);
    // Not tracked any more: a resync has nothing to say about either.
    expect(plan.resync(look).changes).toEqual([]);
  });

  it('an ICE restart taking over a 5-tuple deletes the old session before adding the new one', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const old = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(old, 0);
    plan.commit(plan.take(look)!, 1);
    const next = session(['198.18.0.2', 40000], ['10.77.2.12', 10000], 16390);
    plan.closed(old);
    plan.established(next, 5);
    const batch = plan.take(look)!;
    expect(batch.lines).toEqual([
      ...deleteFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 1, LISTEN),
      ...addCounterLines(2),
      ...addFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.12', 10000], 16390), 2, LISTEN),
    ]);
    expect(plan.commit(batch, 6)).toEqual([{ s: next, ms: 1 }]);
    expect(plan.installed).toBe(1);
    // The taken-over session's counters are read once more, then deleted.
    expect(plan.counters()).toEqual([
      { s: next, up: 'cu2', down: 'cd2' },
      { s: old, up: 'cu1', down: 'cd1' },
    ]);
    expect(plan.takeRetired()!.lines).toEqual(deleteCounterLines(1));
  });

  it('IPv6 sessions stay in userspace; one without a resolved source waits, dirty, until it has one', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const v6 = session(['2001:db8::1', 40000], ['fd00::11', 10000], 16384);
    plan.established(v6, 0);
    expect(plan.take(look)).toBeUndefined();
    expect(plan.dirty).toBe(0);

    const s = session(['198.18.0.2', 40000], ['10.77.2.13', 10000], 16385);
    plan.established(s, 0);
    expect(plan.missingSources(look)).toEqual(['10.77.2.13']);
    expect(plan.take(look)).toBeUndefined();
    expect(plan.dirty).toBe(1);
    expect(plan.installed).toBe(0);

    look.sources.set('10.77.2.13', '10.77.2.9');
    expect(plan.missingSources(look)).toEqual([]);
    const batch = plan.take(look)!;
    expect(batch.lines).toEqual([
      ...addCounterLines(1),
      ...addFlowLines(
        { ...flowOf(['198.18.0.2', 40000], ['10.77.2.13', 10000], 16385), source: '10.77.2.9' },
        1,
        LISTEN,
      ),
    ]);
    // The raw write carries the new source address (10.77.2.9 = 0a4d0209) before the carrier.
    expect(batch.lines[2]).toContain('@nh,96,64 set 0x0a4d0209');
    expect(plan.dirty).toBe(0);
  });

  it('without a route to the backend or the client a session stays in userspace, not pending', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const noBackendRoute = session(['198.18.0.2', 40000], ['10.99.0.1', 10000], 16384);
    const noClientRoute = session(['203.0.113.9', 40000], ['10.77.2.11', 10000], 16385);
    plan.established(noBackendRoute, 0);
    plan.established(noClientRoute, 0);
    expect(plan.take(look)).toBeUndefined();
    expect(plan.dirty).toBe(0);
    expect(plan.installed).toBe(0);

    // An installed session whose route went away leaves the kernel at its next change.
    const s = session(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16386);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);
    const gone = new Lookup();
    gone.nextHop = () => undefined;
    plan.changed(s);
    const batch = plan.take(gone)!;
    expect(batch.lines).toEqual(
      deleteFlowLines(flowOf(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16386), 1, LISTEN),
    );
    plan.commit(batch, 2);
    expect(plan.installed).toBe(0);
    expect(plan.dirty).toBe(0);
  });

  it('a changed next hop re-installs a dirty session: delete, then add with the new fwd', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);

    // The backend's network moved behind a router on another interface.
    look.hops.set('10.77.2.11', { via: '10.77.0.1', dev: 'eth2' });
    plan.changed(s);
    const batch = plan.take(look)!;
    expect(batch.lines).toEqual([
      ...deleteFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 1, LISTEN),
      'add chain netdev ice_ingress u2 { counter name "cu1"; @nh,96,64 set 0x0a4d02017fda0000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.77.0.1 device "eth2"; }',
      'add chain netdev ice_ingress d2 { counter name "cd1"; @nh,96,64 set 0xc612000152920000; ip daddr set 198.18.0.2; udp dport set 40000; fwd ip to 198.18.0.254 device "eth0"; }',
      'add element netdev ice_ingress flows { 198.18.0.2 . 40000 . 198.18.0.1 . 10000 : goto u2 }',
      'add element netdev ice_ingress flows { 10.77.2.11 . 10000 . 10.77.2.1 . 16384 : goto d2 }',
    ]);
    plan.commit(batch, 2);

    // Only the gateway of the client side changed: the down chain's fwd changes.
    look.hops.set('198.18.0.2', { via: '198.18.0.253', dev: 'eth0' });
    plan.changed(s);
    const lines = plan.take(look)!.lines;
    expect(lines.slice(0, 4)).toEqual(
      deleteFlowLines(
        {
          ...flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384),
          toBackend: { via: '10.77.0.1', dev: 'eth2' },
        },
        2,
        LISTEN,
      ),
    );
    expect(lines[5]).toBe(
      'add chain netdev ice_ingress d3 { counter name "cd1"; @nh,96,64 set 0xc612000152920000; ip daddr set 198.18.0.2; udp dport set 40000; fwd ip to 198.18.0.253 device "eth0"; }',
    );
    expect(lines).toHaveLength(8);
  });

  it('a changed source address re-installs a dirty session too', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);
    look.sources.set('10.77.2.11', '10.77.2.2');
    plan.changed(s);
    const lines = plan.take(look)!.lines;
    expect(lines).toHaveLength(8);
    expect(lines[4]).toBe(
      'add chain netdev ice_ingress u2 { counter name "cu1"; @nh,96,64 set 0x0a4d02027fd90000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.77.2.11 device "eth1"; }',
    );
  });

  it('resync recreates the table and adds every live flow under new chain names', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    const closing = session(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385);
    plan.established(s, 0);
    plan.established(closing, 0);
    plan.commit(plan.take(look)!, 1);
    // A transaction is in flight when it fails: a close and a session still waiting for its source.
    plan.closed(closing);
    const waiting = session(['198.18.0.2', 40002], ['10.77.2.13', 10000], 16386);
    plan.established(waiting, 1);
    expect(plan.take(look)!.changes).toHaveLength(1); // the close; the waiting one is not ready
    const r = plan.resync(look);
    expect(r.resync).toBe(true);
    expect(r.lines).toEqual([
      tableScript(PARAMS).trimEnd(),
      // The table's recreation took the old counters: new ones, from zero.
      ...addCounterLines(3),
      ...addFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 3, LISTEN),
    ]);
    expect(plan.commit(r, 2)).toEqual([]);
    expect(plan.installed).toBe(1);
    // The closed session's old counters went with the table: nothing to retire.
    expect(plan.counters()).toEqual([{ s, up: 'cu3', down: 'cd3' }]);
    expect(plan.takeRetired()).toBeUndefined();
    // The waiting one is still dirty; the closed one is forgotten.
    expect(plan.dirty).toBe(1);
    plan.changed(closing);
    expect(plan.dirty).toBe(1);
    // Later changes delete the chains the resync wrote, not the old ones.
    latch(s, 40500);
    plan.changed(s);
    const next = plan.take(look)!;
    expect(next.lines.slice(0, 4)).toEqual(
      deleteFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 3, LISTEN),
    );
  });

  it('resync of a session installed only by the failed transaction still reports its hand-over', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 4);
    plan.take(look); // the transaction fails: never committed
    const r = plan.resync(look);
    expect(r.lines.slice(1)).toEqual([
      ...addCounterLines(2),
      ...addFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 2, LISTEN),
    ]);
    expect(plan.commit(r, 9)).toEqual([{ s, ms: 5 }]);
  });

  it('forgetAll drops every flow and every pending change', () => {
    const plan = new FlowPlan(PARAMS);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(look)!, 1);
    plan.established(session(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385), 1);
    plan.forgetAll();
    expect(plan.installed).toBe(0);
    expect(plan.dirty).toBe(0);
    expect(plan.take(look)).toBeUndefined();
  });
});

/** `nft -j list map netdev ice_ingress flows` (nftables 1.0.6) with elements jumping to `targets`. */
function mapListing(elems: Array<[[string, number, string, number], string]>): string {
  return JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
      {
        map: {
          family: 'netdev',
          name: 'flows',
          table: 'ice_ingress',
          type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service'],
          handle: 2,
          map: 'verdict',
          elem: elems.map(([concat, target]) => [
            { elem: { val: { concat }, counter: { packets: 0, bytes: 0 } } },
            { goto: { target } },
          ]),
          stmt: [{ counter: null }],
        },
      },
    ],
  });
}

describe("one worker's objects in the shared table, from nft -j", () => {
  it('its elements are those that jump to its chains, keyed as an element statement writes them', () => {
    const text = mapListing([
      [['198.18.0.2', 40000, '198.18.0.1', 10000], 'u0_1'],
      [['10.77.2.11', 10000, '10.77.2.1', 16384], 'd0_1'],
      [['198.18.0.3', 40000, '198.18.0.1', 10000], 'u1_1'],
      [['10.77.2.11', 10000, '10.77.2.1', 20000], 'd10_4'],
    ]);
    expect(ownedElements(text, 0)).toEqual([
      '198.18.0.2 . 40000 . 198.18.0.1 . 10000',
      '10.77.2.11 . 10000 . 10.77.2.1 . 16384',
    ]);
    expect(ownedElements(text, 1)).toEqual(['198.18.0.3 . 40000 . 198.18.0.1 . 10000']);
    expect(ownedElements(text, 10)).toEqual(['10.77.2.11 . 10000 . 10.77.2.1 . 20000']);
    expect(ownedElements(text, 2)).toEqual([]);
    // The keys delete the very elements they were listed from.
    const f = flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    expect(deleteOwnedLines({ elements: ownedElements(text, 0), chains: [], counters: [] })).toEqual(
      deleteFlowLines(f, 1, LISTEN, 0).slice(0, 2),
    );
    // An empty map has no `elem`; malformed text names nothing.
    expect(ownedElements(mapListing([]).replace(/"elem":\[\],/, ''), 0)).toEqual([]);
    expect(ownedElements('not json', 0)).toEqual([]);
    expect(
      ownedElements(
        '{"nftables":[{"map":{"family":"ip","table":"ice_ingress","name":"flows","elem":[]}}]}',
        0,
      ),
    ).toEqual([]);
  });

  it('its chains are those named for it in our table (`list chains netdev`, nftables 1.0.6)', () => {
    const text = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
        {
          chain: {
            family: 'netdev',
            table: 'ice_ingress',
            name: 'ingress',
            handle: 1,
            type: 'filter',
            hook: 'ingress',
            prio: 0,
            policy: 'accept',
          },
        },
        { chain: { family: 'netdev', table: 'ice_ingress', name: 'u0_1', handle: 4 } },
        { chain: { family: 'netdev', table: 'ice_ingress', name: 'd1_2', handle: 7 } },
        { chain: { family: 'netdev', table: 'ice_ingress', name: 'd0_1', handle: 8 } },
        // Someone else's netdev table with a chain of the same shape: not ours.
        { chain: { family: 'netdev', table: 'other', name: 'u0_5', handle: 2 } },
      ],
    });
    expect(ownedChains(text, 0)).toEqual(['u0_1', 'd0_1']);
    expect(ownedChains(text, 1)).toEqual(['d1_2']);
    expect(ownedChains(text, 3)).toEqual([]);
    expect(ownedChains('', 0)).toEqual([]);
  });
});

describe('FlowPlan in a worker thread', () => {
  it('names its chains for the worker and, after a failure, rewrites only its own objects', () => {
    const plan = new FlowPlan(PARAMS, 1);
    const look = new Lookup();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    const closing = session(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385);
    plan.established(s, 0);
    plan.established(closing, 0);
    const first = plan.take(look)!;
    expect(first.lines).toEqual([
      ...addCounterLines(1, 1),
      ...addFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 1, LISTEN, 1),
      ...addCounterLines(2, 1),
      ...addFlowLines(flowOf(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385), 2, LISTEN, 1),
    ]);
    plan.commit(first, 1);
    plan.closed(closing);
    plan.take(look); // fails in the kernel
    // What the kernel said this worker has (whatever the plan believed): written off, then the
    // live flows again under new names. No table statement: the other workers' flows are in it.
    const owned = {
      elements: ['198.18.0.2 . 40000 . 198.18.0.1 . 10000', '10.77.2.11 . 10000 . 10.77.2.1 . 16384'],
      chains: ['u1_1', 'd1_1', 'u1_2', 'd1_2'],
      counters: ['cu1_1', 'cd1_1', 'cu1_2', 'cd1_2'],
    };
    const r = plan.resyncOwned(owned, look);
    expect(r.resync).toBe(true);
    expect(r.lines).toEqual([
      ...deleteOwnedLines(owned),
      ...addCounterLines(3, 1),
      ...addFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 3, LISTEN, 1),
    ]);
    expect(r.lines.join('\n')).not.toMatch(/table/);
    plan.commit(r, 2);
    expect(plan.installed).toBe(1);
    latch(s, 40500);
    plan.changed(s);
    expect(plan.take(look)!.lines.slice(0, 4)).toEqual(
      deleteFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 3, LISTEN, 1),
    );
  });

  it('at shutdown it deletes every installed flow of its own, and nothing when none is installed', () => {
    const plan = new FlowPlan(PARAMS, 0);
    const look = new Lookup();
    expect(plan.deleteAllLines()).toEqual([]);
    const a = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    const b = session(['198.18.0.2', 40001], ['10.77.2.12', 10000], 16385);
    const waiting = session(['198.18.0.2', 40002], ['10.77.2.13', 10000], 16386);
    plan.established(a, 0);
    plan.established(b, 0);
    plan.established(waiting, 0);
    plan.commit(plan.take(look)!, 1);
    expect(plan.deleteAllLines()).toEqual([
      ...deleteFlowLines(flowOf(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384), 1, LISTEN, 0),
      ...deleteFlowLines(flowOf(['198.18.0.2', 40001], ['10.77.2.12', 10000], 16385), 2, LISTEN, 0),
      ...deleteCounterLines(1, 0),
      ...deleteCounterLines(2, 0),
    ]);
    // A closed session's counters, retiring, go too (after the chains that referenced them).
    plan.closed(a);
    plan.commit(plan.take(look)!, 2);
    expect(plan.deleteAllLines()).toEqual([
      ...deleteFlowLines(flowOf(['198.18.0.2', 40001], ['10.77.2.12', 10000], 16385), 2, LISTEN, 0),
      ...deleteCounterLines(2, 0),
      ...deleteCounterLines(1, 0),
    ]);
  });
});

/** `nft -j list counters table netdev ice_ingress`, as nftables 1.0.6 printed it in a scratch namespace. */
const COUNTERS_LISTING =
  '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, ' +
  '{"counter": {"family": "netdev", "name": "cu1", "table": "ice_ingress", "handle": 4, "packets": 7, "bytes": 1428}}, ' +
  '{"counter": {"family": "netdev", "name": "cd1", "table": "ice_ingress", "handle": 5, "packets": 3, "bytes": 300}}, ' +
  '{"counter": {"family": "netdev", "name": "cu0_2", "table": "ice_ingress", "handle": 9, "packets": 0, "bytes": 0}}]}';

describe('named counters from nft -j', () => {
  it("reads every counter of our table by name and ignores others' and malformed input", () => {
    expect([...parseCounters(COUNTERS_LISTING)]).toEqual([
      ['cu1', { packets: 7, bytes: 1428 }],
      ['cd1', { packets: 3, bytes: 300 }],
      ['cu0_2', { packets: 0, bytes: 0 }],
    ]);
    // A table with no counters prints only the metainfo.
    expect(parseCounters('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}').size).toBe(0);
    expect(
      parseCounters(
        '{"nftables":[{"counter":{"family":"ip","table":"ice_ingress","name":"cu1","packets":1,"bytes":1}},' +
          '{"counter":{"family":"netdev","table":"other","name":"cu1","packets":1,"bytes":1}},' +
          '{"counter":{"family":"netdev","table":"ice_ingress","name":"cu2"}}]}',
      ).size,
    ).toBe(0);
    expect(parseCounters('not json').size).toBe(0);
    expect(parseCounters('{"nftables":7}').size).toBe(0);
    expect(parseCounters('null').size).toBe(0);
  });

  it("a worker's own counters are those named for it", () => {
    expect(ownedCounters(COUNTERS_LISTING, 0)).toEqual(['cu0_2']);
    expect(ownedCounters(COUNTERS_LISTING, 1)).toEqual([]);
    expect(ownedCounters('not json', 0)).toEqual([]);
  });
});

describe('fast path preflight', () => {
  const probes = (o: { capEff?: string; nft?: boolean | 'broken'; nftDenied?: boolean }) => ({
    status: async () => `Name:\tnode\nCapEff:\t${o.capEff ?? '000001ffffffffff'}\n`,
    nftVersion: async () => {
      if (o.nft === false) throw Object.assign(new Error('spawn nft ENOENT'), { code: 'ENOENT' });
      if (o.nft === 'broken') throw new Error('nft: error while loading shared libraries');
      return 'nftables v1.0.6';
    },
    nftList: async () => {
      if (o.nftDenied) throw new Error('Error: Operation not permitted');
      return '';
    },
  });
  it('passes with nft allowed to change the ruleset (no ip_forward needed)', async () => {
    expect(await checkFastPath(probes({}))).toEqual([]);
    // nft with file capabilities: the process itself need not hold NET_ADMIN.
    expect(await checkFastPath(probes({ capEff: '0000000000000000' }))).toEqual([]);
  });
  it('names everything that is missing at once', async () => {
    const p = await checkFastPath(probes({ capEff: '0000000000000000', nft: false }));
    expect(p).toEqual([
      'no `nft` binary on PATH (Debian/Ubuntu: apt-get install nftables)',
      'no CAP_NET_ADMIN: run as root in the pod, or grant the NET_ADMIN capability',
    ]);
    expect(await checkFastPath(probes({ nftDenied: true }))).toEqual([
      'no CAP_NET_ADMIN: run as root in the pod, or grant the NET_ADMIN capability (`nft list tables`: Error: Operation not permitted)',
    ]);
    expect(await checkFastPath(probes({ nft: 'broken' }))).toEqual([
      '`nft --version` failed: nft: error while loading shared libraries',
    ]);
  });
  it('without nft, CAP_NET_ADMIN is bit 12 of CapEff exactly', async () => {
    expect(await checkFastPath(probes({ nft: false, capEff: '0000000000001000' }))).toHaveLength(1);
    expect(await checkFastPath(probes({ nft: false, capEff: '0000000000000fff' }))).toHaveLength(2);
    expect(await checkFastPath(probes({ nft: false, capEff: '0000000000002000' }))).toHaveLength(2);
    expect(
      await checkFastPath({ ...probes({ nft: false }), status: async () => 'Name:\tnode\n' }),
    ).toHaveLength(2);
  });
});
