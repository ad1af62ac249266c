// The tier harness (issue 16): the real CLI as replicas behind a kube-proxy-like balancer
// (topology.ts), fake JVBs (jvb-agent.ts) and many clients with media (load-agent.ts), and the
// scenarios of the "Must show": a rolling update, a scale-in, a NAT rebinding, the SIGKILL
// of a replica and forged traffic, each measured the same way (ScenarioResult). Used by
// test/tier-ns/tier.test.ts (CI sizes, asserting the targets when the hand-off is there) and
// bench/tier.ts (full size, printed).
//
// The proxy is a black box: `node <cli> --flags` in each replica namespace, read through its admin
// HTTP (/readyz, /metrics) and its exit. Which CLI: TIER_PROXY_CLI (default src/bin.ts of this
// checkout; e.g. another checkout's src/bin.ts or a build's dist/src/bin.js); TIER_NODE_FLAGS adds Node
// flags to every replica (e.g. "--prof").
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { compileFlooder, cpuSeconds } from '../../bench/proc.ts';
import type { FastPathKind as ProxyFastPath } from '../../src/config.ts';
import { NODE_FLAGS } from '../../src/runtime.ts';
import { Agent, NODE, ROOT } from '../interop/agent.ts';
import type { Topology } from '../interop/netns.ts';
import { type MetricRow, parseMetricRows } from '../workers/pool-harness.ts';
import { quantile } from './media.ts';
import { RunQueueSampler } from './runqueue.ts';
import {
  createTier,
  PORT,
  REPLICA_SLOTS,
  replicaAddress,
  type Slot,
  TIER,
  type Tier,
  type TierRole,
} from './topology.ts';

export const PROXY_CLI = resolve(ROOT, process.env['TIER_PROXY_CLI'] ?? 'src/bin.ts');
const ADMIN_PORT = 9090;
/** The fake JVBs, as the replicas' --backends. */
export const JVB_BACKENDS = TIER.cluster.jvbs.map((a, i) => `jvb${i + 1}=${a}:${PORT}`).join(',');

/** The targets for every scenario in which sessions must survive. */
export const TARGETS = { lossPct: 0.1, gapP99Ms: 50, gapMaxMs: 250 } as const;

export interface TierConfig {
  sessions: number;
  pps: number;
  /** UDP payload bytes of a media datagram. */
  size: number;
  /** Each session's consent check period (libwebrtc: 2.5 s on a stable pair). */
  checkIntervalMs: number;
  /** The fake JVBs' 403 rule: ms after a session's first success (ice4j ~3 s). */
  lockMs: number;
  /** Measured time before the change. */
  steadyMs: number;
  /** Between two replica changes of a rolling update or scale-in. */
  stepMs: number;
  /** Measured time after the last change. */
  settleMs: number;
  /** `rebind`: every session's NAT mapping changes once, at its own moment over this long. */
  rebindSpreadMs: number;
  /** Whether the replicas are told about each other (the hand-off); see peerFlags(). */
  handoff: boolean;
  /** Extra flags for every replica. */
  extraFlags: readonly string[];
  /** Pins every replica to this core (taskset), for CPU figures. */
  replicaCore?: number;
  /** Forged traffic: datagrams per second and seconds. */
  floodRate: number;
  floodSeconds: number;
  log: (line: string) => void;
}

export type ScenarioKind = 'steady' | 'rolling' | 'scale-in' | 'rebind' | 'rebind-all' | 'sigkill' | 'forged';

/** A replica's kernel fast path (`--fast-path`); undefined in the harness: every datagram relayed by Node. */
export type FastPathKind = Exclude<ProxyFastPath, 'off'>;

export interface SessionRow {
  sid: number;
  port: number;
  sent: number;
  echoed: number;
  winFrom: number;
  winTo: number;
  longestHole: number;
  maxGapMs: number;
  maxGapAtMs: number;
  /** The longest gap's echoes: sequence number and round trip ms of the one before, the one after. */
  maxGapEdges: [number, number, number, number];
  sinceLastEchoMs: number;
  maxRttMs: number;
  foreign: number;
  duplicates: number;
  checks: { sent: number; ok: number; e403: number; otherError: number; timeout: number };
}

export interface ScenarioResult {
  kind: ScenarioKind;
  handoff: boolean;
  /** The replicas' kernel fast path in this scenario, if any. */
  fastPath: FastPathKind | undefined;
  sessions: number;
  /** Sessions whose client flow reached another replica at the end than at the start. */
  moved: number;
  /** Sessions counted in loss and gaps (sigkill: the killed replica's are apart). */
  measured: number;
  sent: number;
  echoed: number;
  lossPct: number;
  /** Upstream leg alone (what the JVBs received of what was sent). */
  upLossPct: number;
  gapP99Ms: number;
  gapMaxMs: number;
  /** When the longest gaps ended (ms after the window's start): the three worst sessions'. */
  worstGapsAtMs: number[];
  rttP99Ms: number;
  /** Sessions that would need an ICE restart: a check answered 403, or no media at the end. */
  restartsNeeded: number;
  /** Most distinct source addresses one session's traffic reached its JVB from. */
  maxSources: number;
  multiSourceSessions: number;
  jvb403: number;
  /** Echoes from an address other than the public one, and duplicates (both must be 0). */
  foreign: number;
  duplicates: number;
  checks: SessionRow['checks'];
  /** Scenario-specific figures (sigkill, forged). */
  extra: Record<string, number | string>;
  /** Counters of the replicas that moved during the window, summed (name{labels} → delta). */
  proxyCounters: Record<string, number>;
  /** CPU of the replicas (all, summed), the fake JVBs and the clients, % of one core over the window. */
  cpuPct: { replicas: number; jvb: number; load: number };
  /** Whether the scenario's targets were met (see checkTargets). */
  failures: string[];
}

let helpText: string | undefined;
function cliHelp(): string {
  helpText ??= execFileSync(NODE, [PROXY_CLI, '--help'], { encoding: 'utf8', timeout: 20_000 });
  return helpText;
}

/** The CLI knows the peer flags (issue 16's hand-off)? Read from its own --help. */
export function cliHasPeers(): boolean {
  return /^\s+--peers\b/m.test(cliHelp());
}

/** A flag's value for the replicas: the last one in `extra`, else the CLI's own default (--help). */
export function flagValue(flag: string, extra: readonly string[]): string | undefined {
  let v = new RegExp(`^\\s+--${flag}\\s.*\\[default: ([^\\]]*)\\]`, 'm').exec(cliHelp())?.[1];
  for (let i = 0; i < extra.length; i++) {
    if (extra[i] === `--${flag}`) v = extra[i + 1];
    else if (extra[i]!.startsWith(`--${flag}=`)) v = extra[i]!.slice(flag.length + 3);
  }
  return v;
}

/**
 * The flags that make a replica part of the tier (/work/peers-contract.md of issue 16): every
 * slot's address, those not started yet included, as a static list for VMs would be (a replica
 * ignores itself; one that never answered is silent and waited for by no query), and its own
 * address. The peer port is the default (10001), reached on the bridge without NAT.
 */
export function peerFlags(handoff: boolean, self: Slot): string[] {
  if (!handoff) return [];
  return ['--peers', REPLICA_SLOTS.map(replicaAddress).join(','), '--pod-ip', replicaAddress(self)];
}

interface Replica {
  slot: Slot;
  child: ReturnType<Topology<TierRole>['spawn']>;
  exited: string | undefined;
  /** CPU seconds at the start of the measured window (or when it became ready, if later). */
  cpuMark: number;
}

/**
 * A child (its own session: spawned detached) at nice -10, every thread of its process group and
 * its scheduler autogroup (with CONFIG_SCHED_AUTOGROUP every session is a group that the
 * scheduler weighs as a whole, so a thread's own nice alone does not count against other
 * sessions): the tier's processes (replicas, fake JVBs, clients) get the CPU before other work of
 * a shared machine, so what is measured is the tier, not the neighbours. On a dedicated CI
 * machine this changes nothing.
 */
function prioritize(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    execFileSync('renice', ['-n', '-10', '-g', String(pid)], { stdio: 'ignore' });
    writeFileSync(`/proc/${pid}/autogroup`, '-10');
  } catch {
    // gone already, no autogroups, or not allowed: measured at the default priority then
  }
}

/**
 * The kernel's softirq threads (ksoftirqd/N) at the tier's priority while the harness runs; returns
 * what undoes it. Under load the kernel moves packet processing (NET_RX: the veths, the NAT, the
 * balancer's conntrack) to these threads, which run at nice 0 in the root group: next to the
 * tier's processes at -10 (prioritize) they got a tenth of a busy core, and every datagram of
 * every session waited for them at once — a stall of the whole machine that no process's event
 * loop showed. On a node of a real cluster the pods and ksoftirqd run at the same priority; so do
 * they here.
 */
function prioritizeSoftirq(): () => void {
  const old: Array<[string, string]> = [];
  try {
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        if (!readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('ksoftirqd/')) continue;
        // Field 19 of stat is the nice value (after the parenthesised command name).
        const nice = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]!;
        execFileSync('renice', ['-n', '-10', '-p', pid], { stdio: 'ignore' });
        old.push([pid, nice]);
      } catch {
        // gone, or not allowed: left as it is
      }
    }
  } catch {
    // no /proc: nothing to do
  }
  return () => {
    for (const [pid, nice] of old) {
      try {
        execFileSync('renice', ['-n', nice, '-p', pid], { stdio: 'ignore' });
      } catch {
        // gone
      }
    }
  };
}

/** utime + stime of a process, NaN once it is gone. */
function cpuOf(pid: number | undefined): number {
  try {
    return pid === undefined ? Number.NaN : cpuSeconds(pid);
  } catch {
    return Number.NaN;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class TierHarness {
  readonly tier: Tier;
  readonly cfg: TierConfig;
  readonly admin: Agent<TierRole>;
  readonly jvb: Agent<TierRole>;
  readonly load: Agent<TierRole>;
  readonly replicas = new Map<Slot, Replica>();
  #generation = 0;
  #restoreSoftirq: () => void = () => {};
  /** The measured window's start (performance.now()), and the tier changes made in it. */
  #markAt = 0;
  #timeline: string[] = [];

  private constructor(
    tier: Tier,
    cfg: TierConfig,
    admin: Agent<TierRole>,
    jvb: Agent<TierRole>,
    load: Agent<TierRole>,
  ) {
    this.tier = tier;
    this.cfg = cfg;
    this.admin = admin;
    this.jvb = jvb;
    this.load = load;
  }

  static async create(cfg: TierConfig): Promise<TierHarness> {
    if (!existsSync(PROXY_CLI)) throw new Error(`TIER_PROXY_CLI: ${PROXY_CLI} does not exist`);
    const tier = await createTier();
    try {
      const here = (f: string): string => resolve(import.meta.dirname, f);
      const admin = new Agent(tier.topo, 'lb', 'admin', here('admin-agent.ts'));
      const jvbArgs = TIER.cluster.jvbs.flatMap((a, i) => ['--jvb', `jvb${i + 1}=${a}:${PORT}`]);
      const jvb = new Agent(tier.topo, 'jvb', 'jvb', here('jvb-agent.ts'), [
        ...jvbArgs,
        '--lock-ms',
        String(cfg.lockMs),
      ]);
      const load = new Agent(tier.topo, 'cli', 'load', here('load-agent.ts'), [
        '--host',
        TIER.home.cli,
        '--target',
        `${TIER.vip}:${PORT}`,
      ]);
      await Promise.all([admin.ready(15_000), jvb.ready(15_000), load.ready(15_000)]);
      prioritize(jvb.child.pid);
      prioritize(load.child.pid);
      const h = new TierHarness(tier, cfg, admin, jvb, load);
      if (process.env['TIER_SOFTIRQ'] !== 'default') h.#restoreSoftirq = prioritizeSoftirq();
      return h;
    } catch (err) {
      tier.topo.destroySync();
      throw err;
    }
  }

  get logDir(): string {
    return this.tier.topo.logDir;
  }

  async destroy(): Promise<void> {
    this.tier.topo.destroySync();
    this.#restoreSoftirq();
  }

  // ---------------------------------------------------------------------------------------------
  // Replicas

  /** The replicas' --backends (the fake JVBs unless a scenario brings its own servers). */
  backends = JVB_BACKENDS;

  /**
   * The kernel fast path of the replicas started from now on (`--fast-path`, listening on the
   * replica's own address, as the chart does with the downward API), or undefined for none.
   */
  fastPath: FastPathKind | undefined;

  /** `peers: false`: this replica without the peer flags even when the hand-off is on (the cost bench). */
  async startReplica(slot: Slot, opts: { peers?: boolean } = {}): Promise<void> {
    if (this.replicas.has(slot)) throw new Error(`${slot} is running`);
    this.#event(`start-${slot}`);
    const flags = [
      '--listen',
      // The kernel path rewrites replies to come from the address clients send to: the pod's own.
      this.fastPath === undefined ? `0.0.0.0:${PORT}` : `${replicaAddress(slot)}:${PORT}`,
      ...(this.fastPath === undefined ? [] : ['--fast-path', this.fastPath]),
      '--admin',
      `0.0.0.0:${ADMIN_PORT}`,
      '--backends',
      this.backends,
      // Longer than any scenario: a draining owner keeps relaying until the harness ends it.
      '--drain-timeout',
      '600s',
      ...peerFlags(this.cfg.handoff && opts.peers !== false, slot),
      ...this.cfg.extraFlags,
    ];
    const node = [
      ...NODE_FLAGS,
      ...(process.env['TIER_NODE_FLAGS'] ?? '').split(' ').filter(Boolean),
      PROXY_CLI,
      ...flags,
    ];
    const pinned = this.cfg.replicaCore !== undefined;
    const label = `${slot}-${++this.#generation}`;
    const child = this.tier.topo.spawn(
      slot,
      pinned ? 'taskset' : NODE,
      pinned ? ['-c', String(this.cfg.replicaCore), NODE, ...node] : node,
      { label, stdoutToLog: true, cwd: ROOT },
    );
    prioritize(child.pid);
    const r: Replica = { slot, child, exited: undefined, cpuMark: 0 };
    child.on('exit', (code, signal) => {
      r.exited = `code=${code} signal=${signal}`;
    });
    this.replicas.set(slot, r);
    const end = Date.now() + 20_000;
    for (;;) {
      if (r.exited !== undefined) {
        throw new Error(`${slot} exited (${r.exited}) before ready; log: ${this.tier.topo.logPath(label)}`);
      }
      const got = await this.adminGet(slot, '/readyz');
      if (got.status === 200) {
        this.#event(`ready-${slot}`);
        r.cpuMark = cpuOf(child.pid);
        return;
      }
      if (Date.now() > end)
        throw new Error(`${slot} not ready in 20 s; log: ${this.tier.topo.logPath(label)}`);
      await sleep(100);
    }
  }

  pid(slot: Slot): number {
    const pid = this.replicas.get(slot)?.child.pid;
    if (pid === undefined) throw new Error(`${slot} is not running`);
    return pid;
  }

  signal(slot: Slot, signal: 'SIGTERM' | 'SIGKILL'): void {
    this.#event(`${signal === 'SIGTERM' ? 'term' : 'kill'}-${slot}`);
    process.kill(this.pid(slot), signal);
  }

  alive(slot: Slot): boolean {
    const r = this.replicas.get(slot);
    return r !== undefined && r.exited === undefined;
  }

  /** The kube-proxy steps of a replica that leaves the service: out of the map, conntrack deleted. */
  async removeEndpoint(slot: Slot, remaining: readonly Slot[]): Promise<number> {
    this.#event(`-${slot}`);
    await this.tier.setEndpoints(remaining);
    const n = await this.tier.deleteConntrack(slot);
    this.#event(`ct-${slot}`);
    return n;
  }

  /** A tier change at this time (ms after the window's start), for the scenario's timeline. */
  #event(what: string): void {
    if (this.#markAt > 0) this.#timeline.push(`${what}@${Math.round(performance.now() - this.#markAt)}`);
  }

  async adminGet(slot: Slot, path: string): Promise<{ status: number; body: string }> {
    const r = await this.admin.request(
      { cmd: 'get', url: `http://${replicaAddress(slot)}:${ADMIN_PORT}${path}` },
      5000,
    );
    return { status: Number(r['status']), body: String(r['body']) };
  }

  /** Every replica's metrics (running ones); a replica that does not answer is left out. */
  async metrics(): Promise<Map<Slot, MetricRow[]>> {
    const out = new Map<Slot, MetricRow[]>();
    await Promise.all(
      [...this.replicas.keys()].map(async (slot) => {
        if (!this.alive(slot)) return;
        const r = await this.adminGet(slot, '/metrics');
        if (r.status === 200) out.set(slot, parseMetricRows(r.body));
      }),
    );
    return out;
  }

  /** Kills every replica, forgets every flow, closes every session: a clean start for a scenario. */
  async reset(): Promise<void> {
    this.#markAt = 0;
    await this.load.request({ cmd: 'close' }, 20_000);
    await this.jvb.request({ cmd: 'clear' });
    for (const r of this.replicas.values()) this.tier.topo.kill(r.child);
    this.replicas.clear();
    await this.tier.setEndpoints([]);
    await this.tier.natRebind();
    await this.tier.topo.exec('lb', 'conntrack', ['-F']);
    // The killed replicas' sockets are gone with their processes; new ones bind the same ports.
    await sleep(200);
  }

  // ---------------------------------------------------------------------------------------------
  // Scenarios

  async run(kind: ScenarioKind): Promise<ScenarioResult> {
    const c = this.cfg;
    this.backends = JVB_BACKENDS;
    await this.freshTier();
    await this.openSessions(c.sessions);
    // Every session must be past the JVB's lock before anything moves (that is when a new remote
    // address gets 403), and the media settled.
    await sleep(c.lockMs + 500);
    const ports = (await this.load.request({ cmd: 'ports' })).ports as Record<string, number>;
    const { replicaOf: before, publicPortOf } = await this.tier.clientPorts();
    // Each client port's public port at the start, beside the logs: the replicas log clients by it.
    writeFileSync(
      resolve(this.logDir, `${kind}-public-ports.json`),
      JSON.stringify(Object.fromEntries(publicPortOf)),
    );
    const jvbBefore = await this.jvbReport({});
    const metricsBefore = await this.metrics();
    const dropRoles: TierRole[] = ['cli', 'jvb', ...REPLICA_SLOTS];
    const dropsBefore = await Promise.all(dropRoles.map((r) => this.tier.udpRcvbufErrors(r)));
    await this.load.request({ cmd: 'mark' });
    const markAt = performance.now();
    this.#markAt = markAt;
    this.#timeline = [];
    for (const r of this.replicas.values()) r.cpuMark = cpuOf(r.child.pid);
    const agentsCpu = [cpuOf(this.jvb.child.pid), cpuOf(this.load.child.pid)];
    const runQueue = new RunQueueSampler(() => ({
      replicas: [...this.replicas.values()].filter((r) => r.exited === undefined).map((r) => r.child.pid),
      jvbs: [this.jvb.child.pid],
      clients: [this.load.child.pid],
    }));
    runQueue.start();
    await sleep(c.steadyMs);

    const { extra, apart } = await this.#change(kind, ports, before);
    if (this.#timeline.length > 0) extra['timeline'] = this.#timeline.join(' ');
    await sleep(c.settleMs);
    if (kind === 'sigkill') Object.assign(extra, await this.reconnect(apart));

    const windowS = (performance.now() - markAt) / 1000;
    // How long the event loops waited for a CPU (the machine's share of every latency): ms per
    // second per process over the window, and one replica's worst 50 ms slice (when, on the timeline).
    const rq = runQueue.stop();
    extra['runq_wait_ms_per_s_replicas_jvbs_clients'] = ['replicas', 'jvbs', 'clients']
      .map((g) => Math.round(rq.waitMsPerS[g] ?? Number.NaN))
      .join('/');
    const peak = rq.peak['replicas'];
    if (peak !== undefined) extra['runq_wait_peak_pct_replica'] = `${Math.round(peak.pct)}@${peak.atMs}`;
    let replicasCpu = 0;
    for (const r of this.replicas.values()) {
      const now = cpuOf(r.child.pid);
      if (Number.isFinite(now)) replicasCpu += now - r.cpuMark;
    }
    const cpu = {
      replicas: (100 * replicasCpu) / windowS,
      jvb: (100 * (cpuOf(this.jvb.child.pid) - agentsCpu[0]!)) / windowS,
      load: (100 * (cpuOf(this.load.child.pid) - agentsCpu[1]!)) / windowS,
    };
    const stopped = await this.load.request({ cmd: 'stop', drainMs: 500 }, 30_000);
    // After the window: building /metrics takes a replica's event loop for a while.
    const metricsAfter = await this.metrics();
    extra['stall_ms_replicas'] = Math.round(
      1000 *
        Math.max(
          0,
          ...[...metricsAfter.values()].flatMap((rows) =>
            rows.filter((r) => r.name === 'nodejs_eventloop_lag_max_seconds').map((r) => r.value),
          ),
        ),
    );
    const rows = stopped['sessions'] as SessionRow[];
    // Every session's row beside the logs, to follow one session's gap there.
    writeFileSync(resolve(this.logDir, `${kind}-sessions.json`), JSON.stringify(rows));
    const ranges = Object.fromEntries(rows.map((r) => [r.sid, [r.winFrom, r.winTo]]));
    const jvbAfter = await this.jvbReport(ranges);
    extra['stall_ms_jvbs'] = Math.round(jvbAfter.stallMs);
    const after = (await this.tier.clientPorts()).replicaOf;
    // Before: by the session's port at the start (a per-flow rebinding gives it a new socket).
    const was = (r: SessionRow): string | undefined => before.get(ports[r.sid]!);
    const movedRows = rows.filter((r) => after.get(r.port) !== undefined && after.get(r.port) !== was(r));
    const moved = movedRows.length;
    // The three longest gaps: which replica the flow was on before and after, when, how long
    // (replica addresses by their last octet), to tell a tier change from a stall of the machine.
    extra['worst_gaps'] = [...rows]
      .sort((a, b) => b.maxGapMs - a.maxGapMs)
      .slice(0, 3)
      .map((r) => {
        const tail = (a: string | undefined): string => a?.split('.').at(-1) ?? '-';
        const at = Math.round(r.maxGapAtMs);
        // Echoes: sequence numbers before and after the gap with their round trips (the numbers
        // between were lost on the way, or came later).
        const [s0, rtt0, s1, rtt1] = r.maxGapEdges;
        return `${tail(was(r))}>${tail(after.get(r.port))}@${at - Math.round(r.maxGapMs)}-${at}:${Math.round(r.maxGapMs)}ms,seq${s0}(${rtt0}ms)..${s1}(${rtt1}ms)`;
      })
      .join(' ');
    // When the gaps over the target began, by 250 ms of the window: one moment for many sessions is
    // the machine or one tier change; its time against the timeline tells which.
    const late = new Map<number, number>();
    for (const r of rows) {
      if (r.maxGapMs <= TARGETS.gapP99Ms) continue;
      const from = 250 * Math.floor((r.maxGapAtMs - r.maxGapMs) / 250);
      late.set(from, (late.get(from) ?? 0) + 1);
    }
    if (late.size > 0)
      extra['gaps_over_target_from'] = [...late.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([t, n]) => `${t}:${n}`)
        .join(',');
    if (moved > 0 && moved < rows.length && apart.size === 0) {
      // Where the loss was: flows that reached another replica, or those that stayed.
      const lost = (rs: SessionRow[]): number =>
        pct(
          rs.reduce((a, r) => a + r.sent - r.echoed, 0),
          rs.reduce((a, r) => a + r.sent, 0),
        );
      extra['loss_pct_moved'] = lost(movedRows);
      extra['loss_pct_stayed'] = lost(rows.filter((r) => !movedRows.includes(r)));
      extra['lost_per_moved_session'] = movedRows.reduce((a, r) => a + r.sent - r.echoed, 0) / moved;
      // The same for the longest gaps: what the flows that stayed on their replica saw is what the
      // change (a NAT rebinding of every flow at once, a replica's removal) costs this machine
      // without any hand-off; the moved flows' figure adds the hand-off's.
      const gapP99 = (rs: SessionRow[]): number =>
        Math.round(
          quantile(
            rs.map((r) => r.maxGapMs),
            0.99,
          ),
        );
      extra['gap_p99_ms_moved'] = gapP99(movedRows);
      extra['gap_p99_ms_stayed'] = gapP99(rows.filter((r) => !movedRows.includes(r)));
    }
    const dropsAfter = await Promise.all(dropRoles.map((r) => this.tier.udpRcvbufErrors(r)));
    const socketDrops = dropRoles
      .map((r, i) => [r, dropsAfter[i]! - dropsBefore[i]!] as const)
      .filter(([, n]) => n !== 0)
      .map(([r, n]) => `${r}:${n}`);
    if (socketDrops.length > 0) extra['socket_drops'] = socketDrops.join(',');
    const stall = stopped['stall'] as { maxMs: number; atMs: number };
    // Where a gap may come from: each process's longest stall in the window (clients, fake JVBs,
    // replicas: prom-client's event-loop lag, reset by every scrape, the last one at the start).
    extra['stall_ms_clients'] = Math.round(stall.maxMs);
    extra['stall_at_ms_clients'] = Math.round(stall.atMs);
    const result = summarize(kind, c.handoff, this.fastPath, rows, apart, jvbBefore, jvbAfter, moved, extra);
    // Consent checks that were lost or refused otherwise than with 403 (libwebrtc tolerates lost
    // ones for 30 s, so they are shown, not counted as restarts).
    if (result.checks.timeout > 0) extra['checks_timed_out'] = result.checks.timeout;
    if (result.checks.otherError > 0) extra['checks_other_error'] = result.checks.otherError;
    result.proxyCounters = counterDeltas(metricsBefore, metricsAfter);
    result.cpuPct = cpu;
    const pc = (name: string, label = ''): number =>
      Object.entries(result.proxyCounters)
        .filter(([k]) => k === name || (k.startsWith(`${name}{`) && k.includes(label)))
        .reduce((a, [, v]) => a + v, 0);
    // Datagrams the kernel relayed in the window (every direction): proof the fast path carried
    // the established media, and did not leave everything to Node.
    if (this.fastPath !== undefined) extra['kernel_packets'] = pc('ice_ingress_packets_total', 'path=kernel');
    if (c.handoff) {
      extra['peer_queries'] = pc('ice_ingress_peer_queries_total');
      extra['peer_owned'] = pc('ice_ingress_peer_queries_total', 'outcome=owned');
      extra['handoffs'] = pc('ice_ingress_peer_handoffs_total', 'direction=out');
      extra['tunneled'] = pc('ice_ingress_peer_tunnel_packets_total', 'direction=to_owner');
      // The hand-off's own share of a moved flow's gap: how long its query rounds took, at the
      // replicas' histogram resolution (the bucket that holds the median and the 99th percentile).
      const rounds = roundBuckets(metricsBefore, metricsAfter);
      if (rounds.count > 0) {
        extra['query_round_ms_p50_le'] = 1000 * rounds.quantileLe(0.5);
        extra['query_round_ms_p99_le'] = 1000 * rounds.quantileLe(0.99);
      }
    }
    result.failures = checkTargets(result);
    return result;
  }

  /**
   * r1-r3 replaced by r4-r6 one at a time: the new replica ready and in the balancer, then the old
   * one out of it, its conntrack entries deleted, SIGTERM; `stepMs` between replacements. Returns
   * how many conntrack entries each removal deleted.
   */
  async rollingUpdate(): Promise<Record<string, number>> {
    const first: Slot[] = ['r1', 'r2', 'r3'];
    const live: Slot[] = [...first];
    const out: Record<string, number> = {};
    for (const [i, old] of first.entries()) {
      const next = REPLICA_SLOTS[3 + i]!;
      await this.startReplica(next);
      live.push(next);
      await this.tier.setEndpoints(live);
      this.#event(`+${next}`);
      live.splice(live.indexOf(old), 1);
      out[`conntrack_${old}`] = await this.removeEndpoint(old, live);
      this.signal(old, 'SIGTERM');
      this.cfg.log(`rolling: ${old} -> ${next}`);
      if (i < first.length - 1) await sleep(this.cfg.stepMs);
    }
    return out;
  }

  /**
   * `count` sessions on the fake JVBs, each connected by its client through the public address
   * (every one must connect), then media and consent checks on all of them.
   */
  async openSessions(count: number): Promise<void> {
    const c = this.cfg;
    const made = (await this.jvb.request({ cmd: 'add', count, firstSid: 0 })) as {
      sessions: Array<{ sid: number; ufrag: string; password: string }>;
    };
    const opened = await this.load.request({ cmd: 'open', sessions: made.sessions, timeoutMs: 5000 }, 60_000);
    const failed = opened['failed'] as Record<string, string>;
    if (Object.keys(failed).length > 0) {
      throw new Error(
        `${Object.keys(failed).length} of ${count} sessions did not connect: ${JSON.stringify(failed).slice(0, 300)}`,
      );
    }
    await this.load.request({ cmd: 'media', pps: c.pps, size: c.size, checkIntervalMs: c.checkIntervalMs });
  }

  /** Pins the fake JVBs and the clients (every thread) to `core`, away from the replicas' core. */
  pinAgents(core: number): void {
    for (const pid of [this.jvb.child.pid, this.load.child.pid]) {
      execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
    }
  }

  /** CPU seconds a running replica has used so far. */
  cpu(slot: Slot): number {
    return cpuOf(this.replicas.get(slot)?.child.pid);
  }

  /** A fresh tier: no replica, session or flow left (reset()), then r1-r3 ready and balanced. */
  async freshTier(first: readonly Slot[] = ['r1', 'r2', 'r3']): Promise<void> {
    await this.reset();
    await Promise.all(first.map((s) => this.startReplica(s)));
    await this.tier.setEndpoints(first);
  }

  async jvbReport(ranges: Record<string, number[]>): Promise<JvbReport> {
    return (await this.jvb.request({ cmd: 'report', ranges }, 20_000)) as unknown as JvbReport;
  }

  /**
   * The scenario's change of the tier, inside the measured window. Returns its own figures, and for
   * SIGKILL the sessions the killed replica carried (kept apart from the others' figures).
   */
  async #change(
    kind: ScenarioKind,
    ports: Record<string, number>,
    before: Map<number, string>,
  ): Promise<{ extra: Record<string, number | string>; apart: Set<number> }> {
    const c = this.cfg;
    const extra: Record<string, number | string> = {};
    let apart = new Set<number>();
    switch (kind) {
      case 'steady':
        break;
      case 'rolling':
        Object.assign(extra, await this.rollingUpdate());
        break;
      case 'scale-in': {
        extra['conntrack_r3'] = await this.removeEndpoint('r3', ['r1', 'r2']);
        this.signal('r3', 'SIGTERM');
        await sleep(c.stepMs);
        extra['conntrack_r2'] = await this.removeEndpoint('r2', ['r1']);
        this.signal('r2', 'SIGTERM');
        break;
      }
      case 'rebind': {
        // Each session's NAT mapping changes once, at its own moment (load-agent.ts, rebindEach):
        // a flow that leaves from a new public port, a new 5-tuple the balancer places anew.
        const r = await this.load.request({ cmd: 'rebindEach', spreadMs: c.rebindSpreadMs }, 60_000);
        extra['rebound'] = Number(r['rebound']);
        extra['rebind_span_ms'] = Math.round(Number(r['spanMs']));
        extra['rebind_late_ms_max'] = Math.round(Number(r['lateMsMax']));
        break;
      }
      case 'rebind-all': {
        // A NAT that forgets every mapping at once (a reboot, a CGNAT rebalancing): each flow leaves
        // from a new random port, a new 5-tuple the balancer places anew. See load-agent.ts
        // (rebindNat) for why each session's check is its first datagram on the new mapping.
        const r = await this.load.request({ cmd: 'rebindNat', netns: this.tier.ns('rtr') }, 20_000);
        extra['nat_flows'] = Number(r['deleted']);
        extra['media_held_ms'] = Math.round(Number(r['pauseMs']));
        break;
      }
      case 'sigkill': {
        const victim: Slot = 'r2';
        apart = new Set(
          Object.entries(ports)
            .filter(([, port]) => before.get(port) === replicaAddress(victim))
            .map(([sid]) => Number(sid)),
        );
        this.signal(victim, 'SIGKILL');
        // The endpoint controller notices the dead pod; kube-proxy removes it and its flows.
        extra['conntrack_r2'] = await this.removeEndpoint(victim, ['r1', 'r3']);
        extra['killed_sessions'] = apart.size;
        break;
      }
      case 'forged':
        Object.assign(extra, await this.flood());
        break;
    }
    return { extra, apart };
  }

  /**
   * SIGKILL's second half: the clients whose sessions ended open new ones (an ICE restart with new
   * credentials from the JVB, same socket) and report how long each took.
   */
  async reconnect(killed: Set<number>): Promise<Record<string, number>> {
    const now = (await this.load.request({ cmd: 'report' })).sessions as SessionRow[];
    const dead = now.filter((r) => r.checks.e403 > 0 || r.sinceLastEchoMs > 1000).map((r) => r.sid);
    const renewed = (await this.jvb.request({ cmd: 'renew', sids: dead })).sessions as Array<{ sid: number }>;
    const t = await this.load.request({ cmd: 'restart', sessions: renewed, timeoutMs: 5000 }, 30_000);
    const ms = Object.values(t['connectMs'] as Record<string, number | null>);
    const ok = ms.filter((x): x is number => x !== null);
    // Media of the new sessions is echoed again?
    await sleep(1000);
    const later = (await this.load.request({ cmd: 'report' })).sessions as SessionRow[];
    const flowing = later.filter((r) => dead.includes(r.sid) && r.sinceLastEchoMs < 200).length;
    return {
      ended: dead.length,
      ended_not_killed: dead.filter((s) => !killed.has(s)).length,
      reconnected: ok.length,
      reconnect_ms_max: ok.length ? Math.max(...ok) : Number.NaN,
      reconnect_ms_p50: quantile(ok, 0.5),
      flowing_after_reconnect: flowing,
    };
  }

  /**
   * Forged traffic from many sources (bench/flooder.c in atk: half forged checks with random ufrag
   * pairs, half RTP-looking datagrams, from 4000 sockets on 1000 addresses), while every second
   * each replica's peer query rounds are read: the most one replica asked in a second, and in
   * all, against its budget (--peer-query-burst at once, then --peer-query-rate).
   */
  async flood(): Promise<Record<string, number | string>> {
    const binary = compileFlooder();
    const c = this.cfg;
    // The attacker at the tier's priority too (its own session and autogroup at nice -10, as
    // prioritize() does for the others): starved by the tier, it would not reach its rate.
    const run = this.tier.topo.exec(
      'atk',
      'setsid',
      [
        '--wait',
        'sh',
        '-c',
        'echo -10 > /proc/self/autogroup; exec nice -n -10 "$0" "$@"',
        binary,
        '--target',
        `${TIER.vip}:${PORT}`,
        '--rate',
        String(c.floodRate),
        '--seconds',
        String(c.floodSeconds),
        '--source-net',
        '198.19',
        '--sources',
        '1000',
        '--ports',
        '4000',
        '--media-share',
        '50',
      ],
      (c.floodSeconds + 15) * 1000,
    );
    let done = false;
    void run.finally(() => {
      done = true;
    });
    const queries = async (): Promise<Map<Slot, number>> =>
      new Map(
        [...(await this.metrics())].map(([slot, rows]) => [
          slot,
          rows.filter((r) => r.name === 'ice_ingress_peer_queries_total').reduce((a, r) => a + r.value, 0),
        ]),
      );
    const first = await queries();
    let prev = first;
    let perSecondMax = 0;
    while (!done) {
      await sleep(1000);
      const now = await queries();
      for (const [slot, n] of now) perSecondMax = Math.max(perSecondMax, n - (prev.get(slot) ?? 0));
      prev = now;
    }
    const json = JSON.parse((await run).split('\n').find((l) => l.startsWith('{')) ?? '{}') as Record<
      string,
      number
    >;
    const last = await queries();
    const rate = Number(flagValue('peer-query-rate', c.extraFlags) ?? Number.NaN);
    const burst = Number(flagValue('peer-query-burst', c.extraFlags) ?? Number.NaN);
    return {
      flood_sent: json['sent'] ?? 0,
      flood_rate: Math.round(json['rate'] ?? 0),
      flood_seconds: json['seconds'] ?? 0,
      ...(c.handoff
        ? {
            peer_queries_per_s_max: perSecondMax,
            peer_queries_replica_max: Math.max(0, ...[...last].map(([s, n]) => n - (first.get(s) ?? 0))),
            // The open half's burst, then the sustained rate (both halves) for the flood's time.
            peer_query_budget: Math.round(burst + rate * ((json['seconds'] ?? c.floodSeconds) + 1)),
          }
        : {}),
    };
  }
}

interface JvbReport {
  sessions: Record<string, { ufrag: string; jvb: string; up: number; sources: string[] }>;
  jvbs: Record<string, { errors403: number }>;
  stallMs: number;
}

/** Every metric row `pick` selects, of each replica scraped after the window, with its change since before. */
function rowDeltas(
  before: Map<Slot, MetricRow[]>,
  after: Map<Slot, MetricRow[]>,
  pick: (r: MetricRow) => boolean,
): Array<[MetricRow, number]> {
  const out: Array<[MetricRow, number]> = [];
  for (const [slot, rows] of after) {
    const prev = new Map((before.get(slot) ?? []).map((r) => [key(r), r.value]));
    for (const r of rows) if (pick(r)) out.push([r, r.value - (prev.get(key(r)) ?? 0)]);
  }
  return out;
}

function counterDeltas(
  before: Map<Slot, MetricRow[]>,
  after: Map<Slot, MetricRow[]>,
): Record<string, number> {
  const out: Record<string, number> = {};
  const counters = (r: MetricRow): boolean => r.name.startsWith('ice_ingress_') && r.name.endsWith('_total');
  for (const [r, d] of rowDeltas(before, after, counters)) if (d !== 0) out[key(r)] = (out[key(r)] ?? 0) + d;
  return out;
}

/**
 * `ice_ingress_peer_query_seconds` over the window, all replicas summed: how many rounds ended, and
 * the upper bound of the bucket that holds a quantile.
 */
function roundBuckets(
  before: Map<Slot, MetricRow[]>,
  after: Map<Slot, MetricRow[]>,
): { count: number; quantileLe: (q: number) => number } {
  const byLe = new Map<number, number>();
  for (const [r, d] of rowDeltas(before, after, (x) => x.name === 'ice_ingress_peer_query_seconds_bucket')) {
    const le = r.labels['le'] === '+Inf' ? Number.POSITIVE_INFINITY : Number(r.labels['le']);
    byLe.set(le, (byLe.get(le) ?? 0) + d);
  }
  const cumulative = [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  const count = cumulative.at(-1)?.[1] ?? 0;
  return {
    count,
    quantileLe: (q) => cumulative.find(([, n]) => n >= q * count)?.[0] ?? Number.NaN,
  };
}

function key(r: MetricRow): string {
  const l = Object.entries(r.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return l === '' ? r.name : `${r.name}{${l}}`;
}

function summarize(
  kind: ScenarioKind,
  handoff: boolean,
  fastPath: FastPathKind | undefined,
  rows: SessionRow[],
  apart: Set<number>,
  jvbBefore: JvbReport,
  jvbAfter: JvbReport,
  moved: number,
  extra: Record<string, number | string>,
): ScenarioResult {
  const measured = rows.filter((r) => !apart.has(r.sid));
  const sent = measured.reduce((a, r) => a + r.sent, 0);
  const echoed = measured.reduce((a, r) => a + r.echoed, 0);
  const up = measured.reduce((a, r) => a + (jvbAfter.sessions[r.sid]?.up ?? 0), 0);
  const gaps = measured.map((r) => r.maxGapMs);
  const sources = rows.map((r) => jvbAfter.sessions[r.sid]?.sources.length ?? 0);
  const checks = { sent: 0, ok: 0, e403: 0, otherError: 0, timeout: 0 };
  for (const r of measured)
    for (const k of Object.keys(checks) as Array<keyof typeof checks>) checks[k] += r.checks[k];
  const jvb403 = Object.entries(jvbAfter.jvbs).reduce(
    (a, [name, s]) => a + s.errors403 - (jvbBefore.jvbs[name]?.errors403 ?? 0),
    0,
  );
  if (apart.size > 0) {
    const killed = rows.filter((r) => apart.has(r.sid));
    extra['killed_loss_pct'] = pct(
      killed.reduce((a, r) => a + r.sent - r.echoed, 0),
      killed.reduce((a, r) => a + r.sent, 0),
    );
  }
  return {
    kind,
    handoff,
    fastPath,
    sessions: rows.length,
    moved,
    measured: measured.length,
    sent,
    echoed,
    lossPct: pct(sent - echoed, sent),
    upLossPct: pct(sent - up, sent),
    gapP99Ms: quantile(gaps, 0.99),
    gapMaxMs: gaps.length ? Math.max(...gaps) : Number.NaN,
    worstGapsAtMs: [...measured]
      .sort((a, b) => b.maxGapMs - a.maxGapMs)
      .slice(0, 3)
      .map((r) => Math.round(r.maxGapAtMs)),
    rttP99Ms: quantile(
      measured.map((r) => r.maxRttMs),
      0.99,
    ),
    restartsNeeded: measured.filter((r) => r.checks.e403 > 0 || r.sinceLastEchoMs > 1000).length,
    maxSources: Math.max(0, ...sources),
    multiSourceSessions: sources.filter((n) => n > 1).length,
    jvb403,
    foreign: measured.reduce((a, r) => a + r.foreign, 0),
    duplicates: measured.reduce((a, r) => a + r.duplicates, 0),
    checks,
    extra,
    proxyCounters: {},
    cpuPct: { replicas: 0, jvb: 0, load: 0 },
    failures: [],
  };
}

const pct = (part: number, whole: number): number => (whole === 0 ? Number.NaN : (100 * part) / whole);

/**
 * What the issue demands of a scenario, as a list of failures (empty = met). Steady, rolling update,
 * scale-in and rebinding: loss, gaps, no restart, one source per session. SIGKILL: no loss and no
 * restart for the sessions of the replicas that live (the killed one's are apart), every ended
 * session opens a new one. Forged: no loss at all, no restart, peer queries within their budget.
 */
export function checkTargets(r: ScenarioResult): string[] {
  const f: string[] = [];
  // SIGKILL's surviving sessions and forged traffic: the "lose nothing" and "loss at 0";
  // its gap targets are for the changes of the tier (the gaps of all are shown).
  const lossTarget = r.kind === 'forged' || r.kind === 'sigkill' ? 0 : TARGETS.lossPct;
  if (!(r.lossPct <= lossTarget)) f.push(`loss ${r.lossPct.toFixed(3)} % > ${lossTarget} %`);
  if (r.kind !== 'forged' && r.kind !== 'sigkill') {
    if (!(r.gapP99Ms <= TARGETS.gapP99Ms))
      f.push(`gap p99 ${r.gapP99Ms.toFixed(0)} ms > ${TARGETS.gapP99Ms} ms`);
    if (!(r.gapMaxMs <= TARGETS.gapMaxMs))
      f.push(`gap max ${r.gapMaxMs.toFixed(0)} ms > ${TARGETS.gapMaxMs} ms`);
  }
  if (r.restartsNeeded !== 0) f.push(`${r.restartsNeeded} sessions need an ICE restart`);
  if (r.kind !== 'sigkill' && r.maxSources !== 1)
    f.push(`a session reached its JVB from ${r.maxSources} sources`);
  if (r.foreign !== 0) f.push(`${r.foreign} echoes from another address than the public one`);
  if (r.kind === 'forged' && r.handoff) {
    const asked = Number(r.extra['peer_queries_replica_max']);
    const budget = Number(r.extra['peer_query_budget']);
    if (!(asked <= budget)) f.push(`a replica asked its peers ${asked} times, budget ${budget}`);
  }
  if (r.kind === 'sigkill') {
    const killed = Number(r.extra['killed_sessions']);
    if (!(killed > 0)) f.push('the killed replica carried no session');
    if (r.extra['ended_not_killed'] !== 0)
      f.push(`${r.extra['ended_not_killed']} sessions of live replicas ended`);
    if (r.extra['reconnected'] !== r.extra['ended'])
      f.push(`${r.extra['reconnected']} of ${r.extra['ended']} ended sessions reconnected`);
  }
  return f;
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(n < 10 ? 2 : 0) : '–');

/** One markdown row per scenario, the figures, and ✓/✗ against its targets. */
export function resultTable(results: readonly ScenarioResult[]): string {
  const head =
    '| scenario | hand-off | sessions | moved | loss % (up) | gap p99 / max ms | rtt p99 ms | ICE restarts | sources/session max | JVB 403s | CPU % replicas / JVBs / clients | other | targets |';
  const sep = `|${'---|'.repeat(13)}`;
  const rows = results.map((r) => {
    const other = Object.entries(r.extra)
      .filter(([k]) => !k.startsWith('conntrack_'))
      .map(([k, v]) => `${k}=${typeof v === 'number' ? f1(v) : v}`)
      .join(' ');
    return [
      r.fastPath === undefined ? r.kind : `${r.kind} (${r.fastPath} fast path)`,
      r.handoff ? 'on' : 'off',
      r.measured === r.sessions ? String(r.sessions) : `${r.measured} of ${r.sessions}`,
      String(r.moved),
      `${r.lossPct.toFixed(3)} (${r.upLossPct.toFixed(3)})`,
      `${f1(r.gapP99Ms)} / ${f1(r.gapMaxMs)}`,
      f1(r.rttP99Ms),
      String(r.restartsNeeded),
      String(r.maxSources),
      String(r.jvb403),
      `${r.cpuPct.replicas.toFixed(0)} / ${r.cpuPct.jvb.toFixed(0)} / ${r.cpuPct.load.toFixed(0)}`,
      other,
      r.failures.length === 0 ? '✓' : `✗ ${r.failures.join('; ')}`,
    ].join(' | ');
  });
  return [head, sep, ...rows.map((r) => `| ${r} |`)].join('\n');
}
