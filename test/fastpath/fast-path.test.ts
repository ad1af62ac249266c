import { describe, expect, it } from 'vitest';
import type { KernelCounts } from '../../src/defs/kernel-counts.ts';
import { NftFastPath } from '../../src/fastpath/fast-path.ts';
import { KernelTable } from '../../src/fastpath/kernel-table.ts';
import type { Nft } from '../../src/fastpath/nft-runner.ts';
import {
  addCounterLines,
  addFlowLines,
  deleteCounterLines,
  deleteFlowLines,
  deleteOwnedLines,
  deleteTableScript,
  type KernelFlow,
  tableScript,
} from '../../src/fastpath/nft-script.ts';
import { createLogger } from '../../src/log.ts';
import { ClientEndpoint } from '../../src/session/session.ts';
import { Host, Routes, SOURCE, Sources, session } from './fakes.ts';

/**
 * The orchestration around the pure plan, with `nft` replaced by a model of the table that keeps
 * the chains, the verdict map's elements and the named counters the chains count into, and
 * reports them the way `nft -j list map` / `list counters` do. It rejects a transaction the kernel
 * would reject as a whole (nftables 1.0.6, checked in a scratch namespace): a missing element,
 * chain or counter (ENOENT: also a chain whose `counter name` names none), a chain still jumped to
 * or a counter still referenced by a chain (EBUSY). No timers are relied on: flushNow()/pollNow() run
 * what the batch window and the poll interval would.
 */

interface Elem {
  target: string;
}
interface Count {
  packets: number;
  bytes: number;
}
interface State {
  legacy: boolean;
  table: boolean;
  chains: Map<string, string>;
  flows: Map<string, Elem>;
  counters: Map<string, Count>;
}
const T = 'netdev ice_ingress';

class FakeNft implements Nft {
  readonly scripts: string[] = [];
  readonly lists: string[][] = [];
  /** Starts with the table of an earlier version of the fast path in place. */
  state: State = {
    legacy: true,
    table: false,
    chains: new Map(),
    flows: new Map(),
    counters: new Map(),
  };
  failNext = 0;
  /** Fails the next transaction that deletes a counter (the poll's retirement). */
  failCounterDelete = 0;

  async apply(script: string): Promise<void> {
    this.scripts.push(script);
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('nft -f -: Error: Could not process rule: No such file or directory');
    }
    if (this.failCounterDelete > 0 && script.includes('delete counter ')) {
      this.failCounterDelete--;
      throw new Error('nft -f -: Error: Could not process rule: No such file or directory');
    }
    // All or nothing, like the kernel's transaction.
    const st = clone(this.state);
    const lines = script.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line === `table ${T} {`) {
        // The declaration (maps, ingress chain): skipped to its closing brace.
        st.table = true;
        while (lines[i] !== '}') {
          i++;
          if (i >= lines.length) throw new Error('nft: unterminated table block');
        }
      } else if (line !== '') applyLine(st, line);
    }
    this.state = st;
  }

  async listJson(args: readonly string[]): Promise<string> {
    this.lists.push([...args]);
    if (args.join(' ') === 'list chains netdev') {
      const names = this.state.table ? ['ingress', ...this.state.chains.keys()] : [];
      return JSON.stringify({
        nftables: [
          { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
          ...names.map((name, i) => ({
            chain: { family: 'netdev', table: 'ice_ingress', name, handle: i + 1 },
          })),
        ],
      });
    }
    if (args.join(' ') === 'list counters table netdev ice_ingress') {
      if (!this.state.table) throw new Error('Error: No such file or directory');
      return JSON.stringify({
        nftables: [
          { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
          ...[...this.state.counters].map(([name, c], i) => ({
            counter: { family: 'netdev', name, table: 'ice_ingress', handle: 100 + i, ...c },
          })),
        ],
      });
    }
    if (args.join(' ') !== 'list map netdev ice_ingress flows')
      throw new Error(`fake nft: unexpected listing ${args.join(' ')}`);
    const map = this.state.flows;
    if (!this.state.table) throw new Error('Error: No such file or directory');
    const elem = [...map].map(([key, e]) => [
      { concat: key.split('|').map((p) => (/^\d+$/.test(p) ? Number(p) : p)) },
      { goto: { target: e.target } },
    ]);
    return JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
        {
          map: {
            family: 'netdev',
            name: 'flows',
            table: 'ice_ingress',
            type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service'],
            handle: 1,
            map: 'verdict',
            ...(elem.length > 0 ? { elem } : {}),
          },
        },
      ],
    });
  }

  /**
   * The kernel forwarded `n` datagrams of `payload` bytes through an element: `up` keyed by the
   * client (`addr|port`), `down` by backend . port . upstream port (`addr|port|port`).
   */
  forward(dir: 'up' | 'down', key: string, n: number, payload: number): void {
    const e = this.state.flows.get(flowKey(dir, key));
    if (e === undefined) throw new Error(`no element ${dir} ${key}`);
    const name = counterOf(this.state.chains.get(e.target)!);
    if (name === undefined) throw new Error(`chain ${e.target} counts nothing`);
    const c = this.state.counters.get(name)!;
    c.packets += n;
    c.bytes += n * (payload + 28);
  }

  /** The name of the counter the element's chain counts into. */
  counterOf(dir: 'up' | 'down', key: string): string | undefined {
    const e = this.state.flows.get(flowKey(dir, key));
    return e === undefined ? undefined : counterOf(this.state.chains.get(e.target)!);
  }

  /** The rules of the chain the element jumps to. */
  chainOf(dir: 'up' | 'down', key: string): string | undefined {
    const e = this.state.flows.get(flowKey(dir, key));
    return e === undefined ? undefined : this.state.chains.get(e.target);
  }

  /** The elements of one direction, keyed as in {@link forward}. */
  keys(dir: 'up' | 'down'): string[] {
    const out: string[] = [];
    for (const k of this.state.flows.keys()) {
      const p = k.split('|');
      if (dir === 'up' && p[2] === LISTEN.address && p[3] === String(LISTEN.port))
        out.push(`${p[0]}|${p[1]}`);
      if (dir === 'down' && p[2] === SOURCE) out.push(`${p[0]}|${p[1]}|${p[3]}`);
    }
    return out;
  }
}

/** The whole 4-tuple key of an element: upstream to the listening address, downstream to SOURCE. */
function flowKey(dir: 'up' | 'down', key: string): string {
  const p = key.split('|');
  return dir === 'up' ? `${key}|${LISTEN.address}|${LISTEN.port}` : `${p[0]}|${p[1]}|${SOURCE}|${p[2]}`;
}

// `u<id>` in one process, `u<worker>_<id>` in a worker thread; counters `cu<id>`, `cu<worker>_<id>`.
const CHAIN_ADD = /^add chain netdev ice_ingress ([ud]\d+(?:_\d+)?) \{ (.+); \}$/;
const COUNTER = /^(add|delete) counter netdev ice_ingress (c[ud]\d+(?:_\d+)?)$/;

/** The named counter a chain's rules count into, if any. */
function counterOf(rules: string): string | undefined {
  return /(?:^|; )counter name "([^"]+)"/.exec(rules)?.[1];
}
const CHAIN_DELETE = /^delete chain netdev ice_ingress ([ud]\d+(?:_\d+)?)$/;
const ELEMENT = /^(add|delete) element netdev ice_ingress flows \{ ([^:}]+?)(?: : goto (\S+))? \}$/;

/** One line of a transaction, as the kernel would take it; throws where it would refuse. */
function applyLine(st: State, line: string): void {
  if (line === 'add table ip ice_ingress') {
    st.legacy = true;
    return;
  }
  if (line === 'delete table ip ice_ingress') {
    if (!st.legacy) throw new Error(`nft: no table: ${line}`);
    st.legacy = false;
    return;
  }
  if (line === `add table ${T}`) {
    st.table = true;
    return;
  }
  if (line === `delete table ${T}`) {
    if (!st.table) throw new Error(`nft: no table: ${line}`);
    st.table = false;
    st.chains.clear();
    st.flows.clear();
    st.counters.clear();
    return;
  }
  const counter = COUNTER.exec(line);
  if (counter !== null) {
    if (!st.table) throw new Error(`nft: no table: ${line}`);
    const name = counter[2]!;
    if (counter[1] === 'add') {
      // The kernel takes an existing one as is (no reset): never what the plan means.
      if (st.counters.has(name)) throw new Error(`fake nft: counter ${name} added twice`);
      st.counters.set(name, { packets: 0, bytes: 0 });
      return;
    }
    if (!st.counters.has(name)) throw new Error(`nft: No such file or directory: ${line}`);
    for (const rules of st.chains.values())
      if (counterOf(rules) === name) throw new Error(`nft: Device or resource busy: ${line}`);
    st.counters.delete(name);
    return;
  }
  const add = CHAIN_ADD.exec(line);
  if (add !== null) {
    if (!st.table) throw new Error(`nft: no table: ${line}`);
    // The kernel would append the rules to an existing chain: never what the plan means.
    if (st.chains.has(add[1]!)) throw new Error(`fake nft: chain ${add[1]} added twice`);
    const name = counterOf(add[2]!);
    if (name === undefined || !st.counters.has(name))
      throw new Error(`nft: No such file or directory: ${line}`);
    st.chains.set(add[1]!, add[2]!);
    return;
  }
  const del = CHAIN_DELETE.exec(line);
  if (del !== null) {
    if (!st.chains.has(del[1]!)) throw new Error(`nft: no such chain: ${line}`);
    for (const e of st.flows.values())
      if (e.target === del[1]) throw new Error(`nft: Device or resource busy: ${line}`);
    st.chains.delete(del[1]!);
    return;
  }
  const m = ELEMENT.exec(line);
  if (m === null) throw new Error(`fake nft: unexpected line: ${line}`);
  const map = st.flows;
  const key = m[2]!.split(' . ').join('|');
  if (m[1] === 'add') {
    const target = m[3];
    if (target === undefined || !st.chains.has(target)) throw new Error(`nft: no chain: ${line}`);
    if (map.has(key)) throw new Error(`nft: File exists: ${line}`);
    map.set(key, { target });
  } else {
    if (m[3] !== undefined || !map.has(key)) throw new Error(`nft: no such element: ${line}`);
    map.delete(key);
  }
}

function clone(s: State): State {
  return {
    legacy: s.legacy,
    table: s.table,
    chains: new Map(s.chains),
    flows: new Map([...s.flows].map(([k, e]) => [k, { ...e }])),
    counters: new Map([...s.counters].map(([k, c]) => [k, { ...c }])),
  };
}

/** The flow of a session() with the default routes and sources. */
function flow(clientPort: number, upstreamPort: number): KernelFlow {
  return {
    client: { address: '198.18.0.2', port: clientPort },
    backend: { address: '10.77.2.11', port: 10000 },
    upstreamPort,
    source: '10.77.2.1',
    toBackend: { via: '10.77.2.11', dev: 'eth1' },
    toClient: { via: '198.18.0.254', dev: 'eth0' },
  };
}

const OPTS = {
  listenAddress: '198.18.0.1',
  listenPort: 10000,
  devices: ['eth0', 'eth1'],
  batchWindowMs: 60_000,
  pollIntervalMs: 60_000,
};
const LISTEN = { address: '198.18.0.1', port: 10000 };
const script = (lines: string[]): string => `${lines.join('\n')}\n`;
/** A session's first install: its counters, then its chains and elements (chain id = counter id). */
const install = (f: KernelFlow, id: number, worker?: number): string[] => [
  ...addCounterLines(id, worker),
  ...addFlowLines(f, id, LISTEN, worker),
];
const COUNTERS = ['list', 'counters', 'table', 'netdev', 'ice_ingress'];

async function setup() {
  const nft = new FakeNft();
  const host = new Host();
  const sources = new Sources();
  const routes = new Routes();
  let now = 1000;
  const handovers: number[] = [];
  // As the pod does: the table once the listening socket is bound, then the owner's fast path.
  const table = new KernelTable(nft, createLogger('silent'));
  await table.create(OPTS);
  const fp = NftFastPath.owner(table, OPTS, {
    nft,
    host,
    sources,
    nextHops: routes,
    clock: () => now,
    log: createLogger('silent'),
    onHandover: (ms) => handovers.push(ms),
  });
  return { nft, host, sources, routes, fp, handovers, advance: (ms: number) => (now += ms) };
}

describe('NftFastPath', () => {
  it('creates the table, batches events into one transaction, reports hand-over times', async () => {
    const { nft, sources, routes, fp, handovers, advance } = await setup();
    expect(nft.scripts).toEqual([tableScript(OPTS)]);
    expect(nft.state.legacy).toBe(false); // the earlier version's table is gone
    expect(nft.state.table).toBe(true);
    const a = session(40000, 16384);
    const b = session(40001, 16385);
    fp.established(a);
    fp.established(b);
    advance(7);
    await fp.flushNow();
    // The routes were read and the backend's source resolved (once) before the batch.
    expect(routes.refreshes).toBe(1);
    expect(sources.resolved).toEqual(['10.77.2.11']);
    expect(nft.scripts).toHaveLength(2);
    expect(nft.scripts[1]).toBe(
      script([...install(flow(40000, 16384), 1), ...install(flow(40001, 16385), 2)]),
    );
    expect(nft.keys('up')).toEqual(['198.18.0.2|40000', '198.18.0.2|40001']);
    expect(nft.keys('down')).toEqual(['10.77.2.11|10000|16384', '10.77.2.11|10000|16385']);
    expect(nft.state.flows.size).toBe(4);
    expect([...nft.state.counters.keys()]).toEqual(['cu1', 'cd1', 'cu2', 'cd2']);
    expect(handovers).toEqual([7, 7]);
    expect(fp.stats).toMatchObject({ transactions: 1, failures: 0, handovers: 2 });
    expect(fp.kernelSessions).toBe(2);
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(2); // nothing dirty: no transaction
  });

  it('feeds kernel counts back as deltas; client traffic refreshes the idle clock', async () => {
    const { nft, host, fp, advance } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    nft.forward('up', '198.18.0.2|40000', 10, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 4, 1200);
    advance(500);
    await fp.pollNow();
    // Only the counters are listed (not the table with every session's chains).
    expect(nft.lists).toEqual([COUNTERS]);
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 10, bytesUp: 1000, packetsDown: 4, bytesDown: 4800 });
    expect(host.touched).toEqual([[s.id, 1500]]);
    // Only the backend sent since: counts, but no touch (idle is about the client).
    nft.forward('down', '10.77.2.11|10000|16384', 1, 50);
    await fp.pollNow();
    expect(host.counts.get(s.id)!.packetsDown).toBe(5);
    expect(host.touched).toHaveLength(1);
    expect(fp.totals).toEqual({ packetsUp: 10, bytesUp: 1000, packetsDown: 5, bytesDown: 4850 });
    // Nothing forwarded: nothing reported.
    await fp.pollNow();
    expect(host.counts.get(s.id)!.packetsDown).toBe(5);
    expect(fp.stats.polls).toBe(3);
  });

  it('a move keeps counting into the same counters: nothing since the last read is lost', async () => {
    const { nft, host, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    nft.forward('up', '198.18.0.2|40000', 50, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 20, 100);
    await fp.pollNow();
    // More media through the old chains, then the move, before the next read.
    nft.forward('up', '198.18.0.2|40000', 7, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 5, 100);
    const ep = new ClientEndpoint(s, '198.18.0.2', 40999, 0);
    ep.joined = true; // as the registry indexes it
    s.endpoints.push(ep);
    s.current = ep;
    fp.currentChanged(s, ep);
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(
      script([
        ...deleteFlowLines(flow(40000, 16384), 1, LISTEN),
        ...addFlowLines(flow(40999, 16384), 2, LISTEN, undefined, 1),
      ]),
    );
    expect(nft.keys('up')).toEqual(['198.18.0.2|40999']);
    expect([...nft.state.chains.keys()]).toEqual(['u2', 'd2']);
    expect(nft.counterOf('up', '198.18.0.2|40999')).toBe('cu1');
    expect(nft.counterOf('down', '10.77.2.11|10000|16384')).toBe('cd1');
    nft.forward('up', '198.18.0.2|40999', 3, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 2, 100);
    await fp.pollNow();
    expect(host.counts.get(s.id)).toMatchObject({ packetsUp: 60, packetsDown: 27 });
    expect(fp.totals).toMatchObject({ packetsUp: 60, packetsDown: 27 });
  });

  it('a closed session keeps its counters until the next read has taken their last counts, then deletes them', async () => {
    const { nft, host, fp } = await setup();
    const s = session(40001, 16385);
    fp.established(s);
    await fp.flushNow();
    nft.forward('up', '198.18.0.2|40001', 4, 100);
    nft.forward('down', '10.77.2.11|10000|16385', 6, 100);
    fp.closed(s, 'idle', true);
    await fp.flushNow();
    // Chains and elements go; the counters stay (the kernel has nothing referencing them).
    expect(nft.scripts.at(-1)).toBe(script(deleteFlowLines(flow(40001, 16385), 1, LISTEN)));
    expect(nft.state.chains.size).toBe(0);
    expect([...nft.state.counters.keys()]).toEqual(['cu1', 'cd1']);
    expect(fp.kernelSessions).toBe(0);
    await fp.pollNow();
    expect(host.counts.get(s.id)).toMatchObject({ packetsUp: 4, packetsDown: 6 });
    expect(nft.scripts.at(-1)).toBe(script(deleteCounterLines(1)));
    expect(nft.state.counters.size).toBe(0);
    // Nothing left to read: no listing.
    const lists = nft.lists.length;
    await fp.pollNow();
    expect(nft.lists).toHaveLength(lists);
    expect(fp.stats).toMatchObject({ transactions: 3, failures: 0, polls: 1 });
  });

  it('the model refuses what nftables 1.0.6 refused in a scratch namespace, as a whole transaction', async () => {
    const { nft, fp } = await setup();
    fp.established(session(40000, 16384));
    await fp.flushNow();
    const before = JSON.stringify([...nft.state.counters]);
    const chains = nft.state.chains.size;
    // A counter a chain still references (EBUSY), one that does not exist (ENOENT), a chain that
    // counts into a missing counter (ENOENT).
    await expect(nft.apply('delete counter netdev ice_ingress cu1\n')).rejects.toThrow(/busy/);
    await expect(nft.apply('delete counter netdev ice_ingress cu9\n')).rejects.toThrow(/No such file/);
    await expect(
      nft.apply(
        'add counter netdev ice_ingress cu9\nadd chain netdev ice_ingress u9 { counter name "cu8"; }\n',
      ),
    ).rejects.toThrow(/No such file/);
    expect(JSON.stringify([...nft.state.counters])).toBe(before); // nothing of a refused one applied
    expect(nft.state.chains.size).toBe(chains);
    // Deleting the chains first frees the counters, in one transaction.
    await nft.apply(
      `${script([...deleteFlowLines(flow(40000, 16384), 1, LISTEN), ...deleteCounterLines(1)])}`,
    );
    expect(nft.state.counters.size).toBe(0);
  });

  it("a closed session's close log waits for the read that takes its last counts", async () => {
    const { nft, host, fp } = await setup();
    const s = session(40001, 16385);
    fp.established(s);
    await fp.flushNow();
    nft.forward('up', '198.18.0.2|40001', 9, 100);
    let logged: KernelCounts | undefined;
    const wait = fp.closed(s, 'idle', true);
    expect(wait).toBeInstanceOf(Promise);
    void wait!.then(() => {
      logged = { ...host.counts.get(s.id)! };
    });
    await fp.flushNow();
    await new Promise((r) => setImmediate(r));
    expect(logged).toBeUndefined(); // chains gone, counters not read yet
    await fp.pollNow();
    await new Promise((r) => setImmediate(r));
    expect(logged).toMatchObject({ packetsUp: 9 });
    // Nothing to wait for: a session never in the kernel, a probing flow, and after stop.
    const quick = session(40002, 16386);
    fp.established(quick);
    expect(fp.closed(quick, 'idle', true)).toBeUndefined();
    expect(fp.closed(session(40003, 16387), 'probe_failed', false)).toBeUndefined();
    const late = session(40004, 16388);
    fp.established(late);
    await fp.flushNow();
    const lateWait = fp.closed(late, 'shutdown', true)!;
    await fp.stop();
    await lateWait; // released by stop's last read
  });

  it('a failed deletion of retired counters is followed by a rewrite of the table', async () => {
    const { nft, host, fp } = await setup();
    const a = session(40000, 16384);
    const b = session(40001, 16385);
    fp.established(a);
    fp.established(b);
    await fp.flushNow();
    fp.closed(a, 'idle', true);
    await fp.flushNow();
    nft.forward('up', '198.18.0.2|40001', 2, 100);
    nft.failCounterDelete = 1;
    await fp.pollNow();
    expect(host.counts.get(b.id)).toMatchObject({ packetsUp: 2 });
    expect(nft.scripts.at(-1)).toBe(tableScript(OPTS) + script(install(flow(40001, 16385), 3)));
    expect([...nft.state.counters.keys()]).toEqual(['cu3', 'cd3']);
    expect(fp.stats.failures).toBe(1);
    // The new counters start at zero, and so do their baselines.
    nft.forward('up', '198.18.0.2|40001', 3, 100);
    await fp.pollNow();
    expect(host.counts.get(b.id)).toMatchObject({ packetsUp: 5 });
  });

  it('a session closing within the window costs nothing; a closed installed one is deleted', async () => {
    const { nft, fp } = await setup();
    const quick = session(40000, 16384);
    fp.established(quick);
    fp.closed(quick, 'idle', true);
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(1);

    const s = session(40001, 16385);
    fp.established(s);
    await fp.flushNow();
    fp.closed(s, 'idle', true);
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(script(deleteFlowLines(flow(40001, 16385), 1, LISTEN)));
    expect(nft.state.chains.size).toBe(0);
    expect(nft.state.flows.size).toBe(0);
    expect(fp.kernelSessions).toBe(0);
    // A flow that never was established is not ours to close.
    const probing = session(40002, 16386);
    fp.closed(probing, 'probe_failed', false);
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(3);
  });

  it('a changed route re-installs a session at its next change, with the new next hop', async () => {
    const { nft, host, routes, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    expect(nft.chainOf('up', '198.18.0.2|40000')).toContain('fwd ip to 10.77.2.11 device "eth1"');
    nft.forward('up', '198.18.0.2|40000', 5, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 5, 100);
    await fp.pollNow();

    routes.next = (a) =>
      a.startsWith('10.77.') ? { via: '10.88.0.1', dev: 'eth2' } : { via: '198.18.0.254', dev: 'eth0' };
    const ep = new ClientEndpoint(s, '198.18.0.2', 40001, 0);
    ep.joined = true; // as the registry indexes it
    s.endpoints.push(ep);
    fp.endpointJoined(s, ep); // current unchanged: only the route differs
    await fp.flushNow();
    expect(routes.refreshes).toBe(2);
    const moved = { ...flow(40000, 16384), toBackend: { via: '10.88.0.1', dev: 'eth2' } };
    expect(nft.scripts.at(-1)).toBe(
      script([
        ...deleteFlowLines(flow(40000, 16384), 1, LISTEN),
        ...addFlowLines(moved, 2, LISTEN, undefined, 1),
      ]),
    );
    expect(nft.chainOf('up', '198.18.0.2|40000')).toBe(
      'counter name "cu1"; @nh,96,64 set 0x0a4d02017fda0000; ip daddr set 10.77.2.11; udp sport set 16384; fwd ip to 10.88.0.1 device "eth2"',
    );
    expect(fp.kernelSessions).toBe(1);
    expect(fp.stats.handovers).toBe(1);
    // The same counters: the new count adds to the old one.
    nft.forward('up', '198.18.0.2|40000', 8, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 9, 100);
    await fp.pollNow();
    expect(host.counts.get(s.id)).toMatchObject({ packetsUp: 13, packetsDown: 14 });
  });

  it('a session without a route stays in userspace; a route gone takes an installed one out', async () => {
    const { nft, routes, fp } = await setup();
    const unrouted = session(40000, 16384, '203.0.113.9');
    const routed = session(40001, 16385);
    fp.established(unrouted);
    fp.established(routed);
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(script(install(flow(40001, 16385), 1)));
    expect(fp.kernelSessions).toBe(1);
    // Not retried: nothing is left to do.
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(2);

    routes.next = () => undefined;
    fp.currentChanged(routed, routed.current);
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(script(deleteFlowLines(flow(40001, 16385), 1, LISTEN)));
    expect(fp.kernelSessions).toBe(0);
  });

  it('a session whose client flow reaches it through a peer leaves the kernel, its counts stay right, and comes back with the flow', async () => {
    const { nft, host, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    expect(fp.kernelSessions).toBe(1);
    nft.forward('up', '198.18.0.2|40000', 5, 100);
    nft.forward('down', '10.77.2.11|10000|16384', 3, 100);
    // The balancer sent the client's flow to another replica, which tunnels it here (docs/peers.md).
    const route = { peer: '10.0.0.2:10001', send: () => {} };
    s.current.via = route;
    fp.routeChanged(s, s.current);
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(script(deleteFlowLines(flow(40000, 16384), 1, LISTEN)));
    expect(fp.kernelSessions).toBe(0);
    // What the kernel forwarded before it left still reaches the session's counts.
    await fp.pollNow();
    expect(host.counts.get(s.id)).toMatchObject({ packetsUp: 5, packetsDown: 3 });
    // The flow comes back to this replica directly: into the kernel again.
    s.current.via = undefined;
    fp.routeChanged(s, s.current);
    await fp.flushNow();
    expect(fp.kernelSessions).toBe(1);
    expect(nft.keys('up')).toEqual(['198.18.0.2|40000']);
  });

  it('a backend whose source cannot be resolved waits in userspace and goes in once it resolves', async () => {
    const { nft, sources, fp, handovers, advance } = await setup();
    sources.unreachable.add('10.77.2.11');
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    expect(sources.resolved).toEqual(['10.77.2.11']);
    expect(nft.scripts).toHaveLength(1);
    expect(fp.kernelSessions).toBe(0);

    sources.unreachable.clear();
    advance(30);
    await fp.flushNow(); // still dirty: tried again
    expect(sources.resolved).toEqual(['10.77.2.11', '10.77.2.11']);
    expect(nft.scripts.at(-1)).toBe(script(install(flow(40000, 16384), 1)));
    expect(handovers).toEqual([30]);
    await fp.stop();
  });

  it('a failed transaction is followed by a rewrite of the whole table; if that fails, the table goes', async () => {
    const { nft, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    nft.failNext = 1;
    await fp.flushNow();
    // The failed one (chains 1), then the table recreated with every flow (chains 2).
    expect(nft.scripts).toHaveLength(3);
    expect(nft.scripts[1]).toBe(script(install(flow(40000, 16384), 1)));
    expect(nft.scripts[2]).toBe(tableScript(OPTS) + script(install(flow(40000, 16384), 2)));
    expect(nft.chainOf('up', '198.18.0.2|40000')).toContain('fwd ip to 10.77.2.11 device "eth1"');
    expect(fp.stats).toMatchObject({ transactions: 1, failures: 1, handovers: 1 });
    expect(fp.kernelSessions).toBe(1);
    // The next change deletes what the rewrite installed.
    fp.closed(s, 'idle', true);
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(script(deleteFlowLines(flow(40000, 16384), 2, LISTEN)));
    expect(nft.state.chains.size).toBe(0);

    const t = session(40001, 16385);
    fp.established(t);
    nft.failNext = 2;
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(deleteTableScript());
    expect(nft.state.table).toBe(false);
    expect(fp.kernelSessions).toBe(0);
    expect(fp.stats.failures).toBe(3);
    // Disabled: later events cost nothing, and there is nothing to read.
    const n = nft.scripts.length;
    const lists = nft.lists.length;
    fp.established(session(40002, 16386));
    await fp.flushNow();
    await fp.pollNow();
    expect(nft.scripts).toHaveLength(n);
    expect(nft.lists).toHaveLength(lists);
  });

  it('stop reads the counters once more, then deletes the table', async () => {
    const { nft, host, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    nft.forward('up', '198.18.0.2|40000', 2, 10);
    await fp.stop();
    expect(host.counts.get(s.id)!.packetsUp).toBe(2);
    expect(nft.scripts.at(-1)).toBe(deleteTableScript());
    expect(nft.state.table).toBe(false);
    const n = nft.scripts.length;
    await fp.stop(); // idempotent
    expect(nft.scripts).toHaveLength(n);
  });
});

/** A worker thread's fast path on a table the "main thread" (the test) created in `nft`. */
function attached(nft: FakeNft, worker: number) {
  const host = new Host();
  const handovers: number[] = [];
  const fp = NftFastPath.attach(
    { ...OPTS, worker },
    {
      nft,
      host,
      sources: new Sources(),
      nextHops: new Routes(),
      clock: () => 1000,
      log: createLogger('silent'),
      onHandover: (ms) => handovers.push(ms),
    },
  );
  return { fp, host, handovers };
}

/** The main thread's part: the table, created once. */
async function sharedTable(): Promise<FakeNft> {
  const nft = new FakeNft();
  await nft.apply(tableScript(OPTS));
  return nft;
}

/** Workers 0 and 1 attached to one table, each with one session in the kernel (a: 40000, b: 40001). */
async function twoWorkersInstalled() {
  const nft = await sharedTable();
  const w0 = attached(nft, 0);
  const w1 = attached(nft, 1);
  const a = session(40000, 16384);
  const b = session(40001, 16385);
  w0.fp.established(a);
  w1.fp.established(b);
  await w0.fp.flushNow();
  await w1.fp.flushNow();
  return { nft, w0, w1, a, b };
}

describe("NftFastPath in worker threads (attached to the main thread's table)", () => {
  it('each worker adds its own chains, reads only its own counters, and at stop removes only its own flows', async () => {
    const nft = await sharedTable();
    const w0 = attached(nft, 0);
    const w1 = attached(nft, 1);
    // Nothing installed: nothing to list (nor, before its first session, a table to list).
    await w0.fp.pollNow();
    expect(nft.lists).toEqual([]);
    const a = session(40000, 16384);
    const b = session(40001, 16385);
    w0.fp.established(a);
    w1.fp.established(b);
    await w0.fp.flushNow();
    await w1.fp.flushNow();
    expect(nft.scripts.slice(1)).toEqual([
      script(install(flow(40000, 16384), 1, 0)),
      script(install(flow(40001, 16385), 1, 1)),
    ]);
    expect([...nft.state.chains.keys()]).toEqual(['u0_1', 'd0_1', 'u1_1', 'd1_1']);
    expect([...nft.state.counters.keys()]).toEqual(['cu0_1', 'cd0_1', 'cu1_1', 'cd1_1']);
    expect(w0.handovers).toHaveLength(1);
    expect(w0.fp.kernelSessions).toBe(1);

    nft.forward('up', '198.18.0.2|40000', 10, 100);
    nft.forward('up', '198.18.0.2|40001', 3, 100);
    await w0.fp.pollNow();
    await w1.fp.pollNow();
    expect(w0.host.counts.get(a.id)).toMatchObject({ packetsUp: 10 });
    expect(w0.host.counts.has(b.id)).toBe(false);
    expect(w1.host.counts.get(b.id)).toMatchObject({ packetsUp: 3 });
    expect(w0.fp.totals.packetsUp).toBe(10);
    expect(w1.fp.totals.packetsUp).toBe(3);

    nft.forward('up', '198.18.0.2|40000', 2, 100);
    await w0.fp.stop();
    // The last counts went in; its flows went out; the table and worker 1's flow stay.
    expect(w0.host.counts.get(a.id)).toMatchObject({ packetsUp: 12 });
    expect(nft.scripts.at(-1)).toBe(
      script([...deleteFlowLines(flow(40000, 16384), 1, LISTEN, 0), ...deleteCounterLines(1, 0)]),
    );
    expect(nft.state.table).toBe(true);
    expect([...nft.state.chains.keys()]).toEqual(['u1_1', 'd1_1']);
    expect([...nft.state.counters.keys()]).toEqual(['cu1_1', 'cd1_1']);
    expect(nft.keys('up')).toEqual(['198.18.0.2|40001']);
    const n = nft.scripts.length;
    await w0.fp.stop(); // idempotent
    // A worker with nothing installed has nothing to remove.
    const idle = attached(nft, 2);
    await idle.fp.stop();
    expect(nft.scripts).toHaveLength(n);
  });

  it("a worker retires its closed session's counters after its next read, naming only its own", async () => {
    const { nft, w0, a } = await twoWorkersInstalled();
    nft.forward('up', '198.18.0.2|40000', 5, 100);
    const logged = w0.fp.closed(a, 'idle', true)!;
    await w0.fp.flushNow();
    expect([...nft.state.counters.keys()]).toEqual(['cu0_1', 'cd0_1', 'cu1_1', 'cd1_1']);
    await w0.fp.pollNow();
    await logged;
    expect(w0.host.counts.get(a.id)).toMatchObject({ packetsUp: 5 });
    expect(nft.scripts.at(-1)).toBe(script(deleteCounterLines(1, 0)));
    expect([...nft.state.counters.keys()]).toEqual(['cu1_1', 'cd1_1']);
  });

  it("a failed transaction rewrites only the worker's own objects, as the kernel lists them", async () => {
    const { nft, w0, a } = await twoWorkersInstalled();
    const theirs = { chains: new Map(nft.state.chains), up: nft.chainOf('up', '198.18.0.2|40001') };
    // Someone deleted worker 0's upstream element: its next change (deleting it) fails.
    nft.state.flows.delete('198.18.0.2|40000|198.18.0.1|10000');
    const ep = new ClientEndpoint(a, '198.18.0.2', 40999, 0);
    ep.joined = true; // as the registry indexes it
    a.endpoints.push(ep);
    a.current = ep;
    w0.fp.currentChanged(a, ep);
    await w0.fp.flushNow();
    expect(nft.lists.slice(-3)).toEqual([
      ['list', 'map', 'netdev', 'ice_ingress', 'flows'],
      ['list', 'chains', 'netdev'],
      COUNTERS,
    ]);
    // What was left of worker 0's (its downstream element, both chains) goes; its live flow comes
    // back under a new name; worker 1's element and chains are not named.
    expect(nft.scripts.at(-1)).toBe(
      script([
        ...deleteOwnedLines({
          elements: ['10.77.2.11 . 10000 . 10.77.2.1 . 16384'],
          chains: ['u0_1', 'd0_1'],
          counters: ['cu0_1', 'cd0_1'],
        }),
        ...install(flow(40999, 16384), 3, 0),
      ]),
    );
    expect(w0.fp.stats).toMatchObject({ transactions: 2, failures: 1 });
    expect(w0.fp.kernelSessions).toBe(1);
    expect(nft.state.table).toBe(true);
    expect(nft.chainOf('up', '198.18.0.2|40001')).toBe(theirs.up);
    expect([...nft.state.chains.keys()]).toEqual(['u1_1', 'd1_1', 'u0_3', 'd0_3']);
    expect(nft.state.chains.get('u1_1')).toBe(theirs.chains.get('u1_1'));
    expect(nft.keys('up')).toEqual(['198.18.0.2|40001', '198.18.0.2|40999']);
    expect([...nft.state.counters.keys()]).toEqual(['cu1_1', 'cd1_1', 'cu0_3', 'cd0_3']);
    // Its counters start again from zero, and so do their baselines.
    nft.forward('up', '198.18.0.2|40999', 4, 100);
    await w0.fp.pollNow();
    expect(w0.host.counts.get(a.id)).toMatchObject({ packetsUp: 4 });
  });

  it('if the rewrite fails too, only that worker gives up: what it listed is deleted, the others keep theirs', async () => {
    const { nft, w0, w1 } = await twoWorkersInstalled();
    const a2 = session(40002, 16386);
    w0.fp.established(a2);
    nft.failNext = 2; // the batch, then the rewrite
    await w0.fp.flushNow();
    // The last attempt: delete exactly what the listing named of worker 0's.
    expect(nft.scripts.at(-1)).toBe(
      script(
        deleteOwnedLines({
          elements: ['198.18.0.2 . 40000 . 198.18.0.1 . 10000', '10.77.2.11 . 10000 . 10.77.2.1 . 16384'],
          chains: ['u0_1', 'd0_1'],
          counters: ['cu0_1', 'cd0_1'],
        }),
      ),
    );
    expect(w0.fp.stats).toMatchObject({ transactions: 1, failures: 2 });
    expect(w0.fp.kernelSessions).toBe(0);
    expect(nft.state.table).toBe(true);
    expect([...nft.state.chains.keys()]).toEqual(['u1_1', 'd1_1']);
    expect([...nft.state.counters.keys()]).toEqual(['cu1_1', 'cd1_1']);
    expect(nft.keys('up')).toEqual(['198.18.0.2|40001']);
    // Worker 0 is out: its events cost nothing, it lists nothing, its stop removes nothing.
    const n = nft.scripts.length;
    const lists = nft.lists.length;
    w0.fp.established(session(40003, 16387));
    await w0.fp.flushNow();
    await w0.fp.pollNow();
    await w0.fp.stop();
    expect(nft.scripts).toHaveLength(n);
    expect(nft.lists).toHaveLength(lists);
    // Worker 1 goes on.
    const c = session(40004, 16388);
    w1.fp.established(c);
    await w1.fp.flushNow();
    expect(nft.scripts.at(-1)).toBe(script(install(flow(40004, 16388), 2, 1)));
    expect(w1.fp.kernelSessions).toBe(2);
    expect(w1.fp.stats.failures).toBe(0);
  });

  it('a worker never creates the table; one process is never attached', async () => {
    const nft = await sharedTable();
    attached(nft, 0);
    expect(nft.scripts).toEqual([tableScript(OPTS)]);
    expect(() =>
      NftFastPath.owner(
        new KernelTable(nft, createLogger('silent')),
        { ...OPTS, worker: 0 },
        {
          nft,
          host: new Host(),
          sources: new Sources(),
          nextHops: new Routes(),
          clock: () => 0,
          log: createLogger('silent'),
        },
      ),
    ).toThrow(/a worker attaches/);
  });
});
