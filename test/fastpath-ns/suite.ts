// The kernel fast paths (docs/fast-path.md) in network namespaces, one suite for both
// (`--fast-path nftables`: fastpath.test.ts; `--fast-path ebpf`: ebpf.test.ts): clients behind a
// real NAT, the proxy namespace with forwarding off (neither kernel path needs it), fake JVBs in pod
// namespaces (the interop topology, test/interop/netns.ts). ice-ingress runs in the proxy namespace
// (proxy-agent.ts: the pod with the CLI's flags and a discovery source the test drives); the
// fixtures' fake media server and fake ICE client (real STUN with MESSAGE-INTEGRITY and
// FINGERPRINT) run in their namespaces (peer-agent.ts). veth transmit checksum offload is off
// everywhere, so a wrong checksum after a rewrite would be dropped by the receiver instead of
// hidden. What the kernel holds is read from the kernel (kernel-view.ts), never from the proxy. The
// last block runs the proxy with two worker threads (the kernel's SO_REUSEPORT hash picks a
// session's worker from the client's 5-tuple; the kernel tells which worker's entry it is).
//
// Run as root: `npm run test:fastpath-ns` (prerequisites: test/fastpath-ns/prereqs.sh, then
// npm run build:bpf).
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type Msg, NODE, ROOT } from '../interop/agent.ts';
import { ADDR, createTopology, type NsRole, type Topology } from '../interop/netns.ts';
import { type Metrics, parseMetrics } from '../workers/pool-harness.ts';
import { EbpfView, type KernelView, NftView, nftIn } from './kernel-view.ts';
import { checkPrereqs } from './prereqs.ts';

const PORT = 10000;
const PUBLIC = { address: ADDR.wan.proxy, port: PORT };
const BACKENDS = `pod1=${ADDR.pods.pod1}:${PORT},pod2=${ADDR.pods.pod2}:${PORT}`;
const IDLE_MS = 4000;
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

/** The suite, run against one kernel path (its view of the kernel: kernel-view.ts). */
export function kernelPathSuite(k: KernelView): void {
  const KIND = k.kind;
  const PROXY_FLAGS = [
    '--listen',
    `${ADDR.wan.proxy}:${PORT}`,
    '--backends',
    BACKENDS,
    '--admin',
    'off',
    '--fast-path',
    KIND,
    '--idle-timeout',
    `${IDLE_MS}ms`,
    '--log-level',
    'debug',
  ];

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
  k.bind(t);

  const nft = (_role: 'prx', args: string[], stdin?: string): Promise<string> => nftIn(t(), args, stdin);

  /**
   * Where the kernel sends media from the NAT's public address and `port` (undefined: no entry):
   * the backend address its upstream entry rewrites to.
   */
  async function c2bTarget(port: number): Promise<string | undefined> {
    return (await k.upstream()).get(port)?.to;
  }

  /** The single proxy's `session closed` log line of session `id` (its agent's stderr), if written yet. */
  function closeLogOf(id: number): { reason: string; packetsUp: number; packetsDown: number } | undefined {
    for (const line of readFileSync(t().logPath('proxy'), 'utf8').split('\n')) {
      if (!line.includes('"session closed"')) continue;
      const j = JSON.parse(line) as {
        session: number;
        reason: string;
        packetsUp: number;
        packetsDown: number;
      };
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

  /**
   * Nothing of ours is left in the kernel, looked at until it holds (2 s at most): a program taken
   * off its hook is freed after an RCU grace period, and the maps it used only then, so `bpftool
   * map show` can list them for a few ms after the proxy closed the last descriptor.
   */
  async function nothingOurs(): Promise<void> {
    expect(
      await until(
        'nothing of ours left in the kernel',
        () => k.ours(),
        (x) => x.length === 0,
        2000,
      ),
    ).toEqual([]);
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
    await k.prepare(t(), async () => {
      // A run that dies without stopping (SIGKILL) once it is up.
      const crashed = await startProxyAgent('proxy-crashed');
      crashed.kill();
    });
  }, 60_000);

  afterAll(async () => {
    await topo?.destroy();
  });

  describe(`kernel fast path (${k.kind}) in network namespaces`, () => {
    let s1: Creds;
    let upstreamSource = '';
    let foreignBefore: { rules: string; counters: number[] };
    let s2ufrag = '';

    it("replaces a crashed run's leftovers at start, hooks the addressed interfaces, and leaves foreign tables and filters alone", async () => {
      foreignBefore = await foreign();
      proxy = await startProxyAgent('proxy');
      await k.checkStarted();
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
        'one upstream entry',
        async () => (await k.upstream()).size,
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

    // eBPF only: its entries move inside the flow event, before the backend's success reaches the
    // client. The nftables path moves them in the next batch (measured: 5-7 of 50 echoes at 2 ms
    // pacing still go to the old 5-tuple), so it has no such test.
    if (k.kind === 'ebpf')
      it("NAT rebinding: the first media from the new 5-tuple is echoed to it, not one datagram lost (the downstream entry moved before the client got the backend's success)", async () => {
        const pre = await state(true);
        const old = pre.sessions[0]!.current;
        const { port } = await ask<{ port: number }>(c1, { cmd: 'rebind' });
        await c1.request({ cmd: 'check', target: PUBLIC, server: s1 });
        // No wait for the proxy: straight after the success, 50 datagrams 2 ms apart.
        const r = await burst(c1, 50, { intervalMs: 2, size: 200, waitMs: 1000 });
        expect(r.port).toBe(port);
        expect(r.echoed).toBe(50);
        expect(r.from).toEqual([`${PUBLIC.address}:${PUBLIC.port}`]);
        const after = await state(true);
        expect(after.sessions[0]!.current).not.toBe(old);
        // All through the kernel: Node's sockets saw only the check.
        expect(after.counters.packetsFromBackends).toBe(pre.counters.packetsFromBackends + 1);
        expect(after.fastPath.totals.packetsDown - pre.fastPath.totals.packetsDown).toBe(50);
        expect((await k.upstream()).has(port)).toBe(true);
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
        'nothing of ours leads to pod2',
        () => k.mentions(ADDR.pods.pod2),
        (x) => !x,
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

    // eBPF only: the nftables path hooks the interfaces there are at start (docs/fast-path.md).
    if (k instanceof EbpfView)
      it('an interface that comes up after start gets the program; one that goes away is forgotten', async () => {
        const ip = (args: string[]): Promise<string> => t().exec('prx', 'ip', args);
        await ip(['link', 'add', 'late0', 'type', 'veth', 'peer', 'name', 'late1']);
        try {
          expect(await k.programOn('late0')).toBeUndefined();
          await ip(['addr', 'add', '10.99.0.1/24', 'dev', 'late0']);
          await ip(['link', 'set', 'late1', 'up']);
          await ip(['link', 'set', 'late0', 'up']);
          const on = await until(
            'the program on late0',
            () => k.programOn('late0'),
            (id) => id !== undefined,
            5000,
          );
          expect(on).toBe(await k.programOn('wan0'));
        } finally {
          await ip(['link', 'del', 'late0']);
        }
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

    it('shutdown removes what is ours and only that', async () => {
      await proxy.request({ cmd: 'close' });
      await nothingOurs();
      expect(await nft('prx', ['list', 'tables'])).toContain('table inet foreign_fw');
      expect((await foreign()).rules).toBe(foreignBefore.rules);
      await k.checkForeign();
      proxy.kill();
    });

    it('the CLI: SIGTERM drains and removes what is ours (exit 0); without a prerequisite, start-up stops naming it in one line (exit 1)', async () => {
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
      expect(await k.ours()).not.toEqual([]);
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      // `ip netns exec` execs the command, so the child's pid is node's.
      process.kill(child.pid!, 'SIGTERM');
      expect(await exited).toBe(0);
      await nothingOurs();

      const broken = k.broken();
      const [cmd, args] = broken.wrap(NODE, [cli, ...PROXY_FLAGS]);
      const bad = t().spawn('prx', cmd, args, {
        label: 'cli-broken',
        ...(broken.env ? { env: broken.env } : {}),
      });
      const err: string[] = [];
      bad.stderr?.on('data', (d: Buffer) => err.push(d.toString()));
      const code = await new Promise<number | null>((r) => bad.on('exit', (c) => r(c)));
      broken.cleanup();
      expect(code).toBe(1);
      expect(err.join('')).toMatch(broken.message);
      expect(err.join('').trim().split('\n')).toHaveLength(1);
      expect(await k.ours()).toEqual([]);
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

  /** The upstream entry of the NAT's public address and `port`, as the kernel holds it. */
  async function upElement(port: number) {
    return (await k.upstream()).get(port);
  }

  describe(`kernel fast path (${k.kind}) with worker threads (--workers 2)`, () => {
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
          `kernel entry for ${ADDR.wan.natPublic}:${port}`,
          () => upElement(port),
          (x) => x !== undefined,
        );
        const worker = el!.worker!;
        if (worker !== not) return { worker, port, creds };
      }
      // Each try lands on the other worker with probability 1/2.
      throw new Error(`no session on a worker other than ${not} in 16 tries`);
    }

    let a: Owned;
    let b: Owned;

    it("each worker hands its own sessions to the kernel, into the main thread's table or maps; /metrics sums them", async () => {
      foreignBefore = await foreign();
      pool = await startProxyAgent('proxy-workers', WORKER_FLAGS);
      expect(await k.ours()).not.toEqual([]);
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

    // nftables only: the eBPF path has no transaction to fail (each change is a map update).
    if (k instanceof NftView)
      it("a failed transaction in one worker rewrites only that worker's flows; the other worker's stay as they were", async () => {
        const theirs = await k.objectsOf(b.worker);
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
        expect(el!.worker).toBe(a.worker);
        const m = await until(
          'the failure counted',
          () => metrics(),
          (x) => x('ice_ingress_fastpath_transactions_total', { result: 'failed' }) > 0,
        );
        // One failure: the rewrite of worker a's flows went through.
        expect(m('ice_ingress_fastpath_transactions_total', { result: 'failed' })).toBe(1);
        // Worker a has no chain left that no element jumps to (its old ones went with the rewrite).
        const mine = await k.objectsOf(a.worker);
        const targets = new Set(mine.elements.map((e) => e.split(' -> ')[1]));
        expect(Object.keys(mine.chains).sort()).toEqual([...targets].sort());
        // Worker b's elements and chains were not touched, and it keeps forwarding.
        expect(await k.objectsOf(b.worker)).toEqual(theirs);
        const [ra, rb] = await Promise.all([c1, c2].map((c) => burst(c, 100, { size: 100, waitMs: 2000 })));
        expect(ra!.echoed).toBe(100);
        expect(rb!.echoed).toBe(100);
        expect(await upElement(port)).toMatchObject({ packets: 100 });
        expect(await upElement(b.port)).toMatchObject({ packets: 300 });
      });

    it('shutdown: the workers stop, then the main thread removes what is ours, and only that', async () => {
      await pool.request({ cmd: 'close' }, 20_000);
      await nothingOurs();
      expect((await foreign()).rules).toBe(foreignBefore.rules);
      await k.checkForeign();
      pool.kill();
    });
  });
}

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
