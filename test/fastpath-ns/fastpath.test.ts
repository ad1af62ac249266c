// The kernel fast path (docs/fast-path.md) in network namespaces: clients behind a real NAT, the
// proxy namespace with forwarding off (the kernel path needs none), fake JVBs in pod namespaces (the interop topology,
// test/interop/netns.ts). ice-ingress runs in the proxy namespace (proxy-agent.ts: startProxy with
// the CLI's flags and a discovery source the test drives); the fixtures' fake media server and
// fake ICE client (real STUN with MESSAGE-INTEGRITY and FINGERPRINT) run in their namespaces
// (peer-agent.ts). veth transmit checksum offload is off everywhere, so a wrong checksum after a
// rewrite would be dropped by the receiver instead of hidden. The last block runs the proxy with
// two worker threads (the kernel's SO_REUSEPORT hash picks a session's worker from the client's
// 5-tuple; the test tells which by the worker id in the chain its element jumps to).
//
// Run as root: `npm run test:fastpath-ns` (prerequisites: test/fastpath-ns/prereqs.sh).
import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type Msg, NODE, ROOT } from '../interop/agent.ts';
import { ADDR, createTopology, type NsRole, type Topology } from '../interop/netns.ts';
import { type Metrics, parseMetrics } from '../workers/pool-harness.ts';
import { checkPrereqs } from './prereqs.ts';

const PORT = 10000;
const PUBLIC = { address: ADDR.wan.proxy, port: PORT };
const BACKENDS = `pod1=${ADDR.pods.pod1}:${PORT},pod2=${ADDR.pods.pod2}:${PORT}`;
const IDLE_MS = 4000;
const PROXY_FLAGS = [
  '--listen',
  `${ADDR.wan.proxy}:${PORT}`,
  '--backends',
  BACKENDS,
  '--admin',
  'off',
  '--fast-path',
  'nftables',
  '--idle-timeout',
  `${IDLE_MS}ms`,
  '--log-level',
  'debug',
];
/** A foreign table in the proxy namespace: ours must never change it or its packets. */
const FOREIGN = `table inet foreign_fw {
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    iifname "wan0" udp dport 5555 counter
  }
  chain fwd_count {
    type filter hook forward priority 0; policy accept;
    counter
  }
}
`;

let topo: Topology | undefined;
let proxy: Agent;
let pod1: Agent;
let pod2: Agent;
let c1: Agent;
let c2: Agent;

const t = (): Topology => {
  if (!topo) throw new Error('topology not created');
  return topo;
};

function nft(role: NsRole, args: string[], stdin?: string): Promise<string> {
  return new Promise((res, rej) => {
    const p = execFile(
      'ip',
      ['netns', 'exec', t().ns(role), 'nft', ...args],
      { timeout: 10_000 },
      (e, out, err) => (e ? rej(new Error(`nft ${args.join(' ')}: ${err || String(e)}`)) : res(out)),
    );
    if (stdin !== undefined) p.stdin?.end(stdin);
  });
}

type FlowElem = [{ concat: [string, number, string, number] }, { goto: { target: string } }];
type Expr = {
  mangle?: { key: { payload?: { protocol: string; field: string } }; value: unknown };
  counter?: unknown;
};

/**
 * Our table in one listing: the verdict map's elements, each chain's rewrites and the named
 * counter it counts into, and each counter's packets.
 */
async function ourTable(): Promise<{
  elems: FlowElem[];
  daddrOf: Map<string, string>;
  counterOf: Map<string, string>;
  packets: Map<string, number>;
}> {
  const j = JSON.parse(await nft('prx', ['-j', 'list', 'table', 'netdev', 'ice_ingress'])) as {
    nftables: Array<{
      map?: { name: string; elem?: FlowElem[] };
      rule?: { chain: string; expr: Expr[] };
      counter?: { name: string; packets: number };
    }>;
  };
  const elems = j.nftables.find((x) => x.map?.name === 'flows')?.map?.elem ?? [];
  const daddrOf = new Map<string, string>();
  const counterOf = new Map<string, string>();
  const packets = new Map<string, number>();
  for (const x of j.nftables) {
    if (x.counter !== undefined) packets.set(x.counter.name, x.counter.packets);
    if (x.rule === undefined) continue;
    const set = x.rule.expr.find((e) => e.mangle?.key.payload?.field === 'daddr');
    if (set !== undefined) daddrOf.set(x.rule.chain, String(set.mangle!.value));
    const named = x.rule.expr.find((e) => typeof e.counter === 'string');
    if (named !== undefined) counterOf.set(x.rule.chain, String(named.counter));
  }
  return { elems, daddrOf, counterOf, packets };
}

/** The elements of our verdict map. */
async function flowElements(): Promise<FlowElem[]> {
  return (await ourTable()).elems;
}

/** Upstream elements: those keyed by a client 5-tuple toward the listening address. */
async function upElements(): Promise<number> {
  return (await ourTable()).elems.filter(([k]) => k.concat[2] === PUBLIC.address).length;
}

/**
 * Where the kernel sends media from the NAT's public address and `port` (undefined: no element):
 * the destination written by the chain the upstream element jumps to. One listing, so a session
 * closed meanwhile cannot leave an element without its chain in the answer.
 */
async function c2bTarget(port: number): Promise<string | undefined> {
  const { elems, daddrOf } = await ourTable();
  const hit = elems.find(
    ([k]) => k.concat[0] === ADDR.wan.natPublic && k.concat[1] === port && k.concat[2] === PUBLIC.address,
  );
  return hit === undefined ? undefined : daddrOf.get(hit[1].goto.target);
}

/** The single proxy's `session closed` log line of session `id` (its agent's stderr), if written yet. */
function closeLogOf(id: number): { reason: string; packetsUp: number; packetsDown: number } | undefined {
  for (const line of readFileSync(t().logPath('proxy'), 'utf8').split('\n')) {
    if (!line.includes('"session closed"')) continue;
    const j = JSON.parse(line) as { session: number; reason: string; packetsUp: number; packetsDown: number };
    if (j.session === id) return j;
  }
  return undefined;
}

/** The foreign table's rules without counter values, and its counters in order. */
async function foreign(): Promise<{ rules: string; counters: number[] }> {
  const text = await nft('prx', ['list', 'table', 'inet', 'foreign_fw']);
  const counters = [...text.matchAll(/counter packets (\d+) bytes \d+/g)].map((m) => Number(m[1]));
  return { rules: text.replace(/counter packets \d+ bytes \d+/g, 'counter'), counters };
}

interface Creds {
  ufrag: string;
  password: string;
}
interface SessionRow {
  id: number;
  serverUfrag: string;
  current: string;
  upstreamPort: number;
  packetsUp: number;
  packetsDown: number;
}
interface Counts {
  packetsUp: number;
  bytesUp: number;
  packetsDown: number;
  bytesDown: number;
}
interface ProxyState {
  counters: Record<
    'packetsFromClients' | 'packetsToBackends' | 'packetsFromBackends' | 'packetsToClients',
    number
  >;
  drops: Record<string, number>;
  closed: Record<string, number>;
  sessions: SessionRow[];
  fastPath: {
    transactions: number;
    failures: number;
    handovers: number;
    kernelSessions: number;
    totals: Counts;
  };
}
interface Burst {
  sent: number;
  echoed: number;
  from: string[];
  port: number;
}

/** A reply of an agent, typed by the caller (the agents are ours: peer-agent.ts, proxy-agent.ts). */
async function ask<T>(a: Agent, msg: Msg, timeoutMs?: number): Promise<T> {
  return (await a.request(msg, timeoutMs)) as unknown as T;
}

/**
 * `count` RTP-looking datagrams from `client` to the public address, `intervalMs` apart (0: as
 * fast as the agent sends), and the distinct ones echoed back within `waitMs` (peer-agent.ts).
 */
function burst(
  client: Agent,
  count: number,
  o: { intervalMs?: number; size: number; waitMs: number },
  timeoutMs?: number,
): Promise<Burst> {
  return ask<Burst>(client, { cmd: 'burst', target: PUBLIC, count, ...o }, timeoutMs);
}

function state(poll = false): Promise<ProxyState> {
  return ask<ProxyState>(proxy, { cmd: 'state', poll });
}

async function received(pod: Agent): Promise<Record<string, number>> {
  return (await ask<{ from: Record<string, number> }>(pod, { cmd: 'received' })).from;
}

async function until<T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > end)
      throw new Error(
        `timeout after ${ms} ms: ${what}: ${JSON.stringify(v, (k, x) => (k === 'drops' ? undefined : x)).slice(0, 1500)}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function txOffload(): Promise<void> {
  for (const role of ['c1', 'c2', 'rtr', 'prx', 'pod1', 'pod2'] as NsRole[]) {
    const links = (await t().exec(role, 'ip', ['-o', 'link', 'show'])).split('\n');
    for (const l of links) {
      const name = /^\d+: ([^:@]+)/.exec(l)?.[1];
      if (name === undefined || name === 'lo') continue;
      await t()
        .exec(role, 'ethtool', ['-K', name, 'tx', 'off'])
        .catch(() => '');
    }
  }
}

async function startProxyAgent(label: string, flags = PROXY_FLAGS): Promise<Agent> {
  const a = new Agent(t(), 'prx', label, resolve(import.meta.dirname, 'proxy-agent.ts'), flags);
  await a.ready(15_000);
  return a;
}

beforeAll(async () => {
  checkPrereqs();
  topo = await createTopology();
  await txOffload();
  const peer = resolve(import.meta.dirname, 'peer-agent.ts');
  pod1 = new Agent(topo, 'pod1', 'pod1', peer, ['server', '--name', 'pod1', '--host', ADDR.pods.pod1]);
  pod2 = new Agent(topo, 'pod2', 'pod2', peer, ['server', '--name', 'pod2', '--host', ADDR.pods.pod2]);
  c1 = new Agent(topo, 'c1', 'c1', peer, ['client', '--host', ADDR.home.c1]);
  c2 = new Agent(topo, 'c2', 'c2', peer, ['client', '--host', ADDR.home.c2]);
  await Promise.all([pod1.ready(), pod2.ready(), c1.ready(), c2.ready()]);
  await nft('prx', ['-f', '-'], FOREIGN);
  // A stale table from a "crashed run", with a chain the new one does not have, and the `ip`
  // table of an earlier version of the fast path.
  await nft('prx', ['-f', '-'], 'table netdev ice_ingress {\n  chain stale_marker {\n  }\n}\n');
  await nft('prx', ['-f', '-'], 'table ip ice_ingress {\n  chain pre {\n  }\n}\n');
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

describe('kernel fast path (nftables) in network namespaces', () => {
  let s1: Creds;
  let upstreamSource = '';
  let foreignBefore: { rules: string; counters: number[] };
  let s2ufrag = '';

  it("replaces a stale table (and an earlier version's) at start and leaves another table alone", async () => {
    foreignBefore = await foreign();
    proxy = await startProxyAgent('proxy');
    const ours = await nft('prx', ['list', 'table', 'netdev', 'ice_ingress']);
    expect(ours).not.toContain('stale_marker');
    expect(ours).toContain('chain ingress');
    // The addressed interfaces are hooked; the bridge's ports (no address) are not.
    expect(ours).toMatch(/devices = \{ br0, wan0 \}/);
    const tables = await nft('prx', ['list', 'tables']);
    expect(tables).not.toContain('table ip ice_ingress');
    expect((await foreign()).rules).toBe(foreignBefore.rules);
  });

  it('hands an established session to the kernel: nothing lost at the switch, one source at the backend, no media through Node after', async () => {
    s1 = await ask<Creds>(pod1, { cmd: 'addSession' });
    await c1.request({ cmd: 'check', target: PUBLIC, server: s1 });
    // Straight after the success, while the hand-over is in flight: 300 datagrams, 1 ms apart.
    const during = await burst(c1, 300, { intervalMs: 1, size: 1200, waitMs: 2000 }, 20_000);
    expect(during.echoed).toBe(300);
    expect(during.from).toEqual([`${PUBLIC.address}:${PUBLIC.port}`]);
    const st = await until(
      'session in the kernel',
      () => state(true),
      (s) => s.fastPath.kernelSessions === 1,
    );
    expect(st.fastPath.handovers).toBe(1);
    const sources = Object.keys(await received(pod1));
    expect(sources).toHaveLength(1);
    upstreamSource = sources[0]!;
    expect(upstreamSource).toBe(`${ADDR.pods.gw}:${st.sessions[0]!.upstreamPort}`);

    // Established media now: not one datagram through Node's sockets, every one counted by the kernel.
    const before = await state(true);
    const after1 = await burst(c1, 500, { intervalMs: 1, size: 100, waitMs: 2000 });
    expect(after1.echoed).toBe(500);
    const after = await state(true);
    expect(after.counters.packetsFromClients - before.counters.packetsFromClients).toBe(0);
    expect(after.counters.packetsFromBackends - before.counters.packetsFromBackends).toBe(0);
    expect(after.fastPath.totals.packetsUp - before.fastPath.totals.packetsUp).toBe(500);
    expect(after.fastPath.totals.packetsDown - before.fastPath.totals.packetsDown).toBe(500);
    // UDP payload bytes, as Node counts them.
    expect(after.fastPath.totals.bytesUp - before.fastPath.totals.bytesUp).toBe(500 * 100);
    // The session's own counters (its close log) include the kernel's.
    expect(after.sessions[0]!.packetsUp - before.sessions[0]!.packetsUp).toBe(500);
    expect(Object.keys(await received(pod1))).toEqual([upstreamSource]);
    const metrics = (await ask<{ text: string }>(proxy, { cmd: 'metrics' })).text;
    expect(metrics).toMatch(/^ice_ingress_packets_total\{direction="client_in",path="kernel"\} [1-9]\d*$/m);
    expect(metrics).toMatch(/^ice_ingress_fastpath_sessions 1$/m);
    expect(metrics).toMatch(/^ice_ingress_fastpath_handover_seconds_count 1$/m);
  });

  it('a datagram larger than the MTU (IP fragments) is relayed by Node, both ways, on a kernel-path session', async () => {
    // Only a first fragment carries the ports: sent on alone by the kernel path, the datagram could
    // never be reassembled. The ingress rule leaves fragments to the IP stack and Node.
    const before = await state(true);
    const big = await burst(c1, 5, { intervalMs: 5, size: 3000, waitMs: 2000 });
    expect(big.echoed).toBe(5);
    const after = await state(true);
    expect(after.fastPath.kernelSessions).toBe(1);
    expect(after.counters.packetsFromClients - before.counters.packetsFromClients).toBe(5);
    expect(after.counters.packetsFromBackends - before.counters.packetsFromBackends).toBe(5);
    expect(after.fastPath.totals.packetsUp - before.fastPath.totals.packetsUp).toBe(0);
    expect(Object.keys(await received(pod1))).toEqual([upstreamSource]);
  });

  it('NAT rebinding: the backend confirms the new 5-tuple through Node, then the kernel follows it; no kernel count is lost across the move', async () => {
    const pre = await state(true); // a counter read: what follows is since it
    const old = pre.sessions[0]!.current;
    // Media through the kernel, then the rebinding moves the session's chains and elements before
    // the next read (every 1 s here): the session's counters are not the elements', so nothing is lost.
    const b0 = await burst(c1, 100, { intervalMs: 1, size: 200, waitMs: 2000 });
    expect(b0.echoed).toBe(100);
    await c1.request({ cmd: 'rebind' });
    await c1.request({ cmd: 'check', target: PUBLIC, server: s1 });
    const st = await until(
      'entries moved to the new 5-tuple',
      () => state(),
      (s) => s.sessions.length === 1 && s.sessions[0]!.current !== old && s.fastPath.kernelSessions === 1,
    );
    await until(
      'one client element',
      () => upElements(),
      (n) => n === 1,
    );
    const before = await state(true);
    // Every datagram of the burst before the move, in /metrics' kernel series and in the session.
    expect(before.fastPath.totals.packetsUp - pre.fastPath.totals.packetsUp).toBe(100);
    expect(before.fastPath.totals.packetsDown - pre.fastPath.totals.packetsDown).toBe(100);
    expect(before.fastPath.totals.bytesUp - pre.fastPath.totals.bytesUp).toBe(100 * 200);
    expect(before.sessions[0]!.packetsUp - pre.sessions[0]!.packetsUp).toBeGreaterThanOrEqual(100);
    expect(before.sessions[0]!.packetsDown - pre.sessions[0]!.packetsDown).toBeGreaterThanOrEqual(100);
    // Paced: 200 back-to-back datagrams can overflow the fake JVB's receive buffer when its
    // process is not scheduled at once (RcvbufErrors in its namespace), which is not under test.
    const r = await burst(c1, 200, { intervalMs: 1, size: 200, waitMs: 2000 });
    expect(r.echoed).toBe(200);
    const after = await state(true);
    expect(after.fastPath.totals.packetsUp - before.fastPath.totals.packetsUp).toBe(200);
    expect(after.counters.packetsFromClients).toBe(before.counters.packetsFromClients);
    expect(st.sessions[0]!.id).toBe(before.sessions[0]!.id);
    // Still the one upstream address for the whole session.
    expect(Object.keys(await received(pod1))).toEqual([upstreamSource]);
  });

  it('ICE restart on the same 5-tuple: the new owner gets the kernel path for it', async () => {
    const s2 = await ask<Creds>(pod2, { cmd: 'addSession' });
    const before = await state(true);
    // pod2 has seen the fan-out probe of the first session; what counts is what it sees from now.
    const pod2Before = await received(pod2);
    const r0 = await ask<{ port: number }>(c1, { cmd: 'check', target: PUBLIC, server: s2 });
    const tuple = `${ADDR.wan.natPublic}:`;
    const st = await until(
      'restarted session in the kernel',
      () => state(),
      (s) =>
        s.sessions.some((x: SessionRow) => x.serverUfrag === s2.ufrag && x.current.startsWith(tuple)) &&
        s.fastPath.handovers === before.fastPath.handovers + 1,
    );
    const restarted = st.sessions.find((x: SessionRow) => x.serverUfrag === s2.ufrag)!;
    // The 5-tuple's kernel element now leads to pod2, from the new session's upstream port.
    expect(await c2bTarget(Number(restarted.current.split(':')[1]))).toBe(ADDR.pods.pod2);
    // No other session keeps the 5-tuple.
    expect(st.sessions.filter((x: SessionRow) => x.current === restarted.current)).toHaveLength(1);
    const r = await burst(c1, 200, { intervalMs: 1, size: 200, waitMs: 2000 });
    expect(r.echoed).toBe(200);
    expect(r.port).toBe(r0.port);
    const after = await state(true);
    expect(after.counters.packetsFromClients).toBe(st.counters.packetsFromClients);
    const pod2After = await received(pod2);
    const grew = Object.keys(pod2After).filter((k) => pod2After[k]! > (pod2Before[k] ?? 0));
    expect(grew).toEqual([`${ADDR.pods.gw}:${restarted.upstreamPort}`]);
    s2ufrag = s2.ufrag;
  });

  it('backend removal deletes the entries: media then reaches Node, which drops it as an unknown flow; the close log has every kernel count', async () => {
    const pre = await state(true);
    const mine = pre.sessions.find((x: SessionRow) => x.serverUfrag === s2ufrag)!;
    // A burst through the kernel, and the session closes before the next counter read.
    const b0 = await burst(c1, 100, { intervalMs: 1, size: 200, waitMs: 2000 });
    expect(b0.echoed).toBe(100);
    await proxy.request({ cmd: 'backends', text: `pod1=${ADDR.pods.pod1}:${PORT}` });
    const st = await until(
      'entries deleted',
      () => state(true),
      (s) => s.closed.backend_gone === 1 && !s.sessions.some((x: SessionRow) => x.serverUfrag === s2ufrag),
    );
    await until(
      'no chain leads to pod2',
      () => nft('prx', ['list', 'table', 'netdev', 'ice_ingress']),
      (x) => !x.includes(ADDR.pods.pod2),
    );
    const r = await burst(c1, 50, { size: 200, waitMs: 500 });
    expect(r.echoed).toBe(0);
    const after = await until(
      'drops counted',
      () => state(true),
      (s) => s.drops.unknown_flow_rtp! - st.drops.unknown_flow_rtp! === 50,
    );
    expect(after.fastPath.totals.packetsUp).toBe(st.fastPath.totals.packetsUp);
    // The close log waited for the read that took the session's counters' last values.
    const log = await until(
      'its close log',
      async () => closeLogOf(mine.id),
      (x) => x !== undefined,
    );
    expect(log).toMatchObject({ reason: 'backend_gone' });
    expect(log!.packetsUp).toBe(mine.packetsUp + 100);
    expect(log!.packetsDown).toBe(mine.packetsDown + 100);
    await proxy.request({ cmd: 'backends', text: BACKENDS });
  });

  it('idle expiry: kernel-only media keeps a session alive; silence ends it and deletes its entries', async () => {
    const s3 = await ask<Creds>(pod1, { cmd: 'addSession' });
    const ck = await ask<{ port: number }>(c2, { cmd: 'check', target: PUBLIC, server: s3 });
    const mine = (x: SessionRow): boolean => x.serverUfrag === s3.ufrag;
    await until(
      'element for c2',
      () => c2bTarget(ck.port),
      (x) => x === ADDR.pods.pod1,
    );
    const before = await state(true);
    // 1.5 × the idle timeout of media only (no STUN at all): the kernel's counters keep it alive.
    const r = await burst(c2, 120, { intervalMs: 50, size: 200, waitMs: 1000 }, 30_000);
    expect(r.echoed).toBe(120);
    const mid = await state(true);
    expect(mid.sessions.filter(mine)).toHaveLength(1);
    expect(mid.counters.packetsFromClients).toBe(before.counters.packetsFromClients);
    const gone = await until(
      'idle session closed',
      () => state(),
      (s) => !s.sessions.some(mine),
      IDLE_MS + 4000,
    );
    expect(gone.closed.idle).toBeGreaterThan(mid.closed.idle!);
    await until(
      'its element deleted',
      () => c2bTarget(ck.port),
      (x) => x === undefined,
    );
  });

  it("another table and its packets are untouched: rules intact, its traffic still passes it, the kernel path's never does", async () => {
    const sink = t().spawn(
      'prx',
      NODE,
      [
        '-e',
        `const s=require('node:dgram').createSocket('udp4');let n=0,ok=0;s.on('message',(m,r)=>{n++;if(m.length===300&&m[0]===0x80&&m[6]===0x55&&r.address==='${ADDR.wan.natPublic}')ok++;if(n===100)console.log(JSON.stringify({n,ok}))});s.bind(5555,'${ADDR.wan.proxy}',()=>console.log('ready'))`,
      ],
      { label: 'sink' },
    );
    const lines = lineReader(sink);
    expect(await lines.next()).toBe('ready');
    const f0 = await foreign();
    const k0 = (await state(true)).fastPath.totals;
    await c2.request({
      cmd: 'burst',
      target: { address: PUBLIC.address, port: 5555 },
      count: 100,
      size: 300,
      waitMs: 300,
    });
    expect(JSON.parse(await lines.next())).toEqual({ n: 100, ok: 100 });
    const f1 = await foreign();
    const k1 = (await state(true)).fastPath.totals;
    expect(f1.rules).toBe(foreignBefore.rules);
    expect(f1.counters[0]! - f0.counters[0]!).toBe(100);
    // The kernel path hands media to the next hop from the ingress hook: over the whole run the
    // namespace forwarded nothing (forwarding is off), so the forward hook counted nothing, while
    // the kernel path carried media both ways.
    expect(k1.packetsUp).toBeGreaterThan(0);
    expect(k1.packetsDown).toBeGreaterThan(0);
    expect(f1.counters[1]).toBe(0);
    expect(k1.packetsUp).toBe(k0.packetsUp);
    t().kill(sink);
  });

  it('shutdown removes our table and only ours', async () => {
    await proxy.request({ cmd: 'close' });
    const tables = await nft('prx', ['list', 'tables']);
    expect(tables).not.toContain('ice_ingress');
    expect(tables).toContain('table inet foreign_fw');
    expect((await foreign()).rules).toBe(foreignBefore.rules);
    proxy.kill();
  });

  it('the CLI: SIGTERM drains and removes the table (exit 0); without nft, start-up stops naming it (exit 1)', async () => {
    const cli = resolve(ROOT, 'src/cli.ts');
    const child = t().spawn('prx', NODE, [cli, ...PROXY_FLAGS, '--drain-timeout', '200ms'], {
      label: 'cli',
      stdoutToLog: true,
    });
    await until(
      'started',
      async () => {
        try {
          return readFileSync(t().logPath('cli'), 'utf8');
        } catch {
          return ''; // The log file is opened asynchronously.
        }
      },
      (x) => x.includes('ice-ingress started'),
      15_000,
    );
    expect(await nft('prx', ['list', 'tables'])).toContain('ice_ingress');
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    // `ip netns exec` execs the command, so the child's pid is node's.
    process.kill(child.pid!, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(await nft('prx', ['list', 'tables'])).not.toContain('ice_ingress');

    // A PATH with `ip` (which runs the child in the namespace) but no `nft` for Node to run.
    const bin = mkdtempSync(join(tmpdir(), 'iit-nonft-'));
    const ipBin = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p))!;
    symlinkSync(ipBin, join(bin, 'ip'));
    const bad = t().spawn('prx', NODE, [cli, ...PROXY_FLAGS], {
      label: 'cli-nonft',
      env: { ...process.env, PATH: bin },
    });
    const err: string[] = [];
    bad.stderr?.on('data', (d: Buffer) => err.push(d.toString()));
    const code = await new Promise<number | null>((r) => bad.on('exit', (c) => r(c)));
    expect(code).toBe(1);
    expect(err.join('')).toMatch(/no `nft` binary on PATH/);
    expect(await nft('prx', ['list', 'tables'])).not.toContain('ice_ingress');
    rmSync(bin, { recursive: true, force: true });
  });
});

/**
 * Two workers; a longer idle timeout than above, so that sessions steered early stay up while
 * the test finds one for the other worker (counters are then read every 2 s). Upstream ports the
 * proxies above never used: the fake JVBs, like ice4j, still bind those source addresses to the
 * earlier sessions and refuse a probe for another ufrag from them (test/fixtures/media-server.ts;
 * a new process does not know the old one's port quarantine).
 */
const WORKER_FLAGS = [
  ...PROXY_FLAGS.map((f, i) => (PROXY_FLAGS[i - 1] === '--idle-timeout' ? '20s' : f)),
  '--upstream-ports',
  '20000-20999',
  '--workers',
  '2',
];

/**
 * The upstream element of the NAT's public address and `port`: its chain, and the packets of the
 * session's upstream counter (the one its chain counts into).
 */
async function upElement(port: number): Promise<{ chain: string; packets: number } | undefined> {
  const { elems, counterOf, packets } = await ourTable();
  const hit = elems.find(
    ([k]) => k.concat[0] === ADDR.wan.natPublic && k.concat[1] === port && k.concat[2] === PUBLIC.address,
  );
  if (hit === undefined) return undefined;
  const chain = hit[1].goto.target;
  return { chain, packets: packets.get(counterOf.get(chain)!)! };
}

/** The worker a chain belongs to (`u<worker>_<id>`, src/fastpath/nft-script.ts). */
function workerOfChain(chain: string): number {
  const m = /^[ud](\d+)_\d+$/.exec(chain);
  if (m === null) throw new Error(`not a worker's chain: ${chain}`);
  return Number(m[1]);
}

/** One worker's elements (key → chain) and the rules of its chains, as the kernel has them. */
async function objectsOf(worker: number): Promise<{ elements: string[]; chains: Record<string, string> }> {
  const elements = (await flowElements())
    .filter(([, v]) => workerOfChain(v.goto.target) === worker)
    .map(([k, v]) => `${k.concat.join(' ')} -> ${v.goto.target}`);
  const listed = JSON.parse(await nft('prx', ['-j', 'list', 'chains', 'netdev'])) as {
    nftables: Array<{ chain?: { table: string; name: string } }>;
  };
  const chains: Record<string, string> = {};
  for (const x of listed.nftables) {
    const c = x.chain;
    if (
      c === undefined ||
      c.table !== 'ice_ingress' ||
      c.name === 'ingress' ||
      workerOfChain(c.name) !== worker
    )
      continue;
    chains[c.name] = await nft('prx', ['list', 'chain', 'netdev', 'ice_ingress', c.name]);
  }
  return { elements, chains };
}

describe('kernel fast path with worker threads (--workers 2)', () => {
  let pool: Agent;
  let foreignBefore: { rules: string; counters: number[] };
  const metrics = async (): Promise<Metrics> =>
    parseMetrics((await ask<{ text: string }>(pool, { cmd: 'metrics' })).text);
  const clientIn = (m: Metrics, worker: number): number =>
    m('ice_ingress_worker_packets_total', { worker: String(worker), direction: 'client_in' });
  /** /metrics once the workers' stats rows (republished every 100 ms) have caught up with Node's traffic. */
  const settled = async (): Promise<Metrics> => {
    let a = await metrics();
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const b = await metrics();
      if (clientIn(a, 0) === clientIn(b, 0) && clientIn(a, 1) === clientIn(b, 1)) return b;
      a = b;
    }
    throw new Error('per-worker counters never settled');
  };

  interface Owned {
    worker: number;
    port: number;
    creds: Creds;
  }
  /**
   * Opens sessions from `c` (a new source port each time: the NAT keeps it, so the 4-tuple the
   * proxy sees changes) until one lands on a worker other than `not`.
   */
  async function sessionOn(c: Agent, pod: Agent, not?: number): Promise<Owned> {
    for (let i = 0; i < 16; i++) {
      if (i > 0) await c.request({ cmd: 'rebind' });
      const creds = await ask<Creds>(pod, { cmd: 'addSession' });
      const { port } = await ask<{ port: number }>(c, { cmd: 'check', target: PUBLIC, server: creds });
      const el = await until(
        `kernel element for ${ADDR.wan.natPublic}:${port}`,
        () => upElement(port),
        (x) => x !== undefined,
      );
      const worker = workerOfChain(el!.chain);
      if (worker !== not) return { worker, port, creds };
    }
    // Each try lands on the other worker with probability 1/2.
    throw new Error(`no session on a worker other than ${not} in 16 tries`);
  }

  let a: Owned;
  let b: Owned;

  it('each worker hands its own sessions to the kernel, in the one table the main thread created; /metrics sums them', async () => {
    foreignBefore = await foreign();
    pool = await startProxyAgent('proxy-workers', WORKER_FLAGS);
    const table = await nft('prx', ['list', 'table', 'netdev', 'ice_ingress']);
    expect(table).toContain('chain ingress');
    expect(table).toMatch(/devices = \{ br0, wan0 \}/);
    a = await sessionOn(c1, pod1);
    b = await sessionOn(c2, pod2, a.worker);
    expect([a.worker, b.worker].sort()).toEqual([0, 1]);

    const before = await settled();
    const [ra, rb] = await Promise.all(
      [c1, c2].map((c) => burst(c, 200, { intervalMs: 1, size: 100, waitMs: 2000 }, 20_000)),
    );
    expect(ra!.echoed).toBe(200);
    expect(rb!.echoed).toBe(200);
    expect(ra!.from).toEqual([`${PUBLIC.address}:${PUBLIC.port}`]);
    expect(rb!.from).toEqual([`${PUBLIC.address}:${PUBLIC.port}`]);
    // The kernel counted every datagram of both sessions on their own worker's elements.
    expect(await upElement(a.port)).toMatchObject({ packets: 200 });
    expect(await upElement(b.port)).toMatchObject({ packets: 200 });
    const kernel = (m: Metrics, direction: string): number =>
      m('ice_ingress_packets_total', { direction, path: 'kernel' });
    // Each worker reads its own elements' counters every 2 s and publishes them; the main thread sums.
    const after = await until(
      'the kernel counts of both workers in /metrics',
      async () => {
        const m = await metrics();
        return { m, up: kernel(m, 'client_in') - kernel(before, 'client_in') };
      },
      (x) =>
        x.up >= 400 &&
        x.m('ice_ingress_fastpath_sessions') === x.m('ice_ingress_sessions') &&
        x.m('ice_ingress_fastpath_handover_seconds_count') === x.m('ice_ingress_sessions_opened_total'),
      6000,
    );
    const m = after.m;
    expect(after.up).toBe(400);
    expect(kernel(m, 'backend_in') - kernel(before, 'backend_in')).toBe(400);
    expect(m('ice_ingress_bytes_total', { direction: 'client_in', path: 'kernel' })).toBeGreaterThanOrEqual(
      400 * 100,
    );
    // Not one of those datagrams went through either worker's sockets.
    expect(clientIn(m, 0)).toBe(clientIn(before, 0));
    expect(clientIn(m, 1)).toBe(clientIn(before, 1));
    expect(m('ice_ingress_packets_total', { direction: 'backend_in', path: 'userspace' })).toBe(
      before('ice_ingress_packets_total', { direction: 'backend_in', path: 'userspace' }),
    );
    expect(m('ice_ingress_fastpath_sessions')).toBeGreaterThanOrEqual(2);
    expect(m('ice_ingress_fastpath_transactions_total', { result: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(m('ice_ingress_fastpath_transactions_total', { result: 'failed' })).toBe(0);
  });

  it("a failed transaction in one worker rewrites only that worker's flows; the other worker's stay as they were", async () => {
    const theirs = await objectsOf(b.worker);
    expect(theirs.elements.length).toBeGreaterThanOrEqual(2);
    // Worker a's upstream element disappears behind its back: the transaction that moves its
    // session after the rebinding below (deleting that element first) fails in the kernel.
    await nft('prx', [
      'delete',
      'element',
      'netdev',
      'ice_ingress',
      'flows',
      `{ ${ADDR.wan.natPublic} . ${a.port} . ${PUBLIC.address} . ${PORT} }`,
    ]);
    const { port } = await ask<{ port: number }>(c1, { cmd: 'rebind' });
    await c1.request({ cmd: 'check', target: PUBLIC, server: a.creds });
    const el = await until(
      "the rebound 5-tuple in the kernel, under the session's worker",
      () => upElement(port),
      (x) => x !== undefined,
    );
    expect(workerOfChain(el!.chain)).toBe(a.worker);
    const m = await until(
      'the failure counted',
      () => metrics(),
      (x) => x('ice_ingress_fastpath_transactions_total', { result: 'failed' }) > 0,
    );
    // One failure: the rewrite of worker a's flows went through.
    expect(m('ice_ingress_fastpath_transactions_total', { result: 'failed' })).toBe(1);
    // Worker a has no chain left that no element jumps to (its old ones went with the rewrite).
    const mine = await objectsOf(a.worker);
    const targets = new Set(mine.elements.map((e) => e.split(' -> ')[1]));
    expect(Object.keys(mine.chains).sort()).toEqual([...targets].sort());
    // Worker b's elements and chains were not touched, and it keeps forwarding.
    expect(await objectsOf(b.worker)).toEqual(theirs);
    const [ra, rb] = await Promise.all([c1, c2].map((c) => burst(c, 100, { size: 100, waitMs: 2000 })));
    expect(ra!.echoed).toBe(100);
    expect(rb!.echoed).toBe(100);
    expect(await upElement(port)).toMatchObject({ packets: 100 });
    expect(await upElement(b.port)).toMatchObject({ packets: 300 });
  });

  it('shutdown: the workers stop, then the main thread removes the table, and only ours', async () => {
    await pool.request({ cmd: 'close' }, 20_000);
    const tables = await nft('prx', ['list', 'tables']);
    expect(tables).not.toContain('ice_ingress');
    expect((await foreign()).rules).toBe(foreignBefore.rules);
    pool.kill();
  });
});

function lineReader(child: ChildProcess): { next(): Promise<string> } {
  const queue: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else queue.push(l);
  });
  return {
    next: () =>
      new Promise((res, rej) => {
        const q = queue.shift();
        if (q !== undefined) return res(q);
        const timer = setTimeout(() => rej(new Error('no line from child in 5 s')), 5000);
        waiters.push((l) => {
          clearTimeout(timer);
          res(l);
        });
      }),
  };
}
