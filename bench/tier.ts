/**
 * `npm run bench:tier` (root; issue 16's "Must show"): the proxy tier at full size in network
 * namespaces (test/tier-ns: a kube-proxy-like balancer, replicas of the real CLI, fake JVBs that
 * answer 403 to a second remote address, clients behind a NAT), in one run:
 *
 * - the scenarios, 200 sessions at 50 datagrams/s each (echoed by the fake JVBs): steady state
 *   (the harness's own floor), rolling update (r1-r3 replaced by r4-r6 one at a time), scale-in
 *   3 -> 1, NAT rebindings that land most flows on another replica (`rebind`: each flow's at its
 *   own moment over 4 s; `rebind-all`: every flow's at once, a NAT that lost its mappings), SIGKILL of a replica (its
 *   sessions end and reconnect, the others lose nothing), forged traffic at 20 kpps from 1000
 *   addresses (peer queries against their budget): loss, each session's longest gap p99 and max,
 *   ICE restarts needed, sources per session at the JVB, 403s, with ✓/✗ against the targets;
 * - real stacks (Chromium, node-datachannel) across a rolling update;
 * - cost, replicas pinned to core 0 and the harness to core 1, CPU time of the replica processes
 *   (utime + stime) per datagram carried (client -> JVB and JVB -> client): a tunneled flow
 *   (received by one replica, owned by another) against the same flows direct, alternating; and
 *   the established path of a replica with peers configured against one without, alternating.
 *
 * Which CLI: TIER_PROXY_CLI (default src/bin.ts); TIER_EXTRA_FLAGS adds CLI flags to every replica
 * (e.g. "--peer-query-burst 500"), TIER_NODE_FLAGS Node flags (e.g. "--prof" to profile them),
 * TIER_SOFTIRQ=default leaves the kernel's softirq threads at their priority (harness.ts). The hand-off is on when its --help has --peers
 * (`--handoff on|off` overrides); without it the scenarios show the failure of issue 16 and the cost
 * part is skipped. Options: --sessions N (200), --pps N (50), --only a,b (scenario names, `stacks`,
 * `cost`), --fast-path nftables|ebpf (the scenarios and real stacks with that kernel path on every
 * replica; the cost part stays Node's), --cost-sessions N (100), --cost-seconds S (8),
 * --cost-reps N (5), --json FILE.
 * Run one at a time: `flock /tmp/bench.lock flock /tmp/ns.lock npm run bench:tier` (~10 min).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  cliHasPeers,
  PROXY_CLI,
  resultTable,
  type ScenarioKind,
  type ScenarioResult,
  TierHarness,
} from '../test/tier-ns/harness.ts';
import { quantile } from '../test/tier-ns/media.ts';
import { checkPrereqs } from '../test/tier-ns/prereqs.ts';
import { type RealStackRun, realStacksAcrossRollingUpdate, stackTable } from '../test/tier-ns/real-stacks.ts';
import type { Slot } from '../test/tier-ns/topology.ts';

const { values: opt } = parseArgs({
  options: {
    sessions: { type: 'string', default: '200' },
    pps: { type: 'string', default: '50' },
    only: { type: 'string' },
    handoff: { type: 'string' },
    'cost-sessions': { type: 'string', default: '100' },
    'cost-seconds': { type: 'string', default: '8' },
    'cost-reps': { type: 'string', default: '5' },
    json: { type: 'string' },
    'fast-path': { type: 'string' },
  },
});

const FAST_PATH = opt['fast-path'];
if (FAST_PATH !== undefined && FAST_PATH !== 'nftables' && FAST_PATH !== 'ebpf') {
  console.error(`--fast-path: ${FAST_PATH}: expected nftables or ebpf`);
  process.exit(2);
}
checkPrereqs({ ebpf: FAST_PATH === 'ebpf' });
const HANDOFF = opt.handoff === undefined ? cliHasPeers() : opt.handoff === 'on';
const SCENARIOS: ScenarioKind[] = [
  'steady',
  'rolling',
  'scale-in',
  'rebind',
  'rebind-all',
  'sigkill',
  'forged',
];
const only = opt.only?.split(',');
const wanted = (name: string): boolean => only === undefined || only.includes(name);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (line: string): void => {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
};

const h = await TierHarness.create({
  sessions: Number(opt.sessions),
  pps: Number(opt.pps),
  size: 200,
  checkIntervalMs: 2500,
  lockMs: 3000,
  steadyMs: 2000,
  stepMs: 3000,
  settleMs: 5000,
  rebindSpreadMs: 4000,
  handoff: HANDOFF,
  extraFlags: (process.env['TIER_EXTRA_FLAGS'] ?? '').split(' ').filter(Boolean),
  floodRate: 20_000,
  floodSeconds: 5,
  log,
});
const results: ScenarioResult[] = [];
let stacks: RealStackRun | undefined;
const cost: string[] = [];
try {
  log(
    `proxy ${PROXY_CLI}, hand-off ${HANDOFF ? 'on' : 'off'}, namespaces ${h.tier.topo.prefix}*, logs ${h.logDir}`,
  );
  // The scenarios and the real stacks with the kernel fast path, if asked; the cost part compares
  // Node's relaying, tunneled against direct, so it runs without.
  h.fastPath = FAST_PATH;
  for (const kind of SCENARIOS) {
    if (!wanted(kind)) continue;
    log(`scenario ${kind}`);
    results.push(await h.run(kind));
    log(resultTable(results.slice(-1)).split('\n').at(-1)!);
  }
  if (wanted('stacks')) {
    log('real stacks across a rolling update');
    stacks = await realStacksAcrossRollingUpdate(h, 5000);
  }
  h.fastPath = undefined;
  if (wanted('cost')) {
    if (HANDOFF) cost.push(...(await costFigures()));
    else cost.push('cost: skipped (the CLI under test has no peer flags)');
  }
} catch (err) {
  // Print what was measured before the failure, then fail.
  cost.push(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  await h.destroy();
}

console.log(`\n## bench:tier — proxy ${PROXY_CLI}, hand-off ${HANDOFF ? 'on' : 'off'}\n`);
console.log(
  `${Number(opt.sessions)} sessions at ${Number(opt.pps)} datagrams/s each way (200 B), echoed by the fake JVBs; consent checks every 2.5 s; targets: loss ≤ 0.1 % (SIGKILL's surviving sessions and forged: 0), longest gap per session p99 ≤ 50 ms and max ≤ 250 ms, no ICE restart, one source per session at the JVB.\n`,
);
console.log(resultTable(results));
if (stacks !== undefined) console.log(`\n${stackTable(stacks)}`);
if (cost.length > 0) console.log(`\n${cost.join('\n')}`);
if (opt.json !== undefined)
  writeFileSync(opt.json, JSON.stringify({ handoff: HANDOFF, results, stacks, cost }, null, 2));

/** CPU seconds of replicas `slots` per datagram carried, over `seconds` of media (µs). */
async function measure(
  slots: readonly Slot[],
  seconds: number,
): Promise<{ usPerDatagram: number; datagrams: number }> {
  await h.load.request({ cmd: 'mark' });
  const cpu0 = slots.map((s) => h.cpu(s));
  await sleep(seconds * 1000);
  const cpu1 = slots.map((s) => h.cpu(s));
  const rows = (await h.load.request({ cmd: 'report' })).sessions as Array<{ sent: number; echoed: number }>;
  const datagrams = rows.reduce((a, r) => a + r.sent + r.echoed, 0);
  const cpu = cpu1.reduce((a, c, i) => a + c - cpu0[i]!, 0);
  return { usPerDatagram: (1e6 * cpu) / datagrams, datagrams };
}

async function tunneledPackets(): Promise<number> {
  let n = 0;
  for (const rows of (await h.metrics()).values()) {
    for (const r of rows) {
      if (r.name === 'ice_ingress_peer_tunnel_packets_total' && r.labels['direction'] === 'to_owner')
        n += r.value;
    }
  }
  return n;
}

/**
 * Replicas on core 0, the harness (fake JVBs, clients) on core 1. (1) Tunnel: r1 owns every
 * session; "direct" = the balancer sends the flows to r1, "tunneled" = to r2 (r1 taken out of the
 * balancer and its conntrack entries deleted, not stopped), which relays them to r1; CPU of both.
 * (2) Peers: the same sessions opened on r1 (peers configured, r2 alive as its peer) and on r3
 * (no peer flags), direct, CPU of that replica alone.
 */
async function costFigures(): Promise<string[]> {
  const sessions = Number(opt['cost-sessions']);
  const seconds = Number(opt['cost-seconds']);
  const reps = Number(opt['cost-reps']);
  h.cfg.replicaCore = 0;
  h.pinAgents(1);
  const direct: number[] = [];
  const tunneled: number[] = [];
  log('cost: tunneled vs direct');
  await h.freshTier(['r1', 'r2']);
  await h.tier.setEndpoints(['r1']);
  await h.openSessions(sessions);
  await sleep(1000);
  for (let i = 0; i < reps; i++) {
    if (i > 0) await h.removeEndpoint('r2', ['r1']);
    await sleep(1000);
    direct.push((await measure(['r1', 'r2'], seconds)).usPerDatagram);
    await h.removeEndpoint('r1', ['r2']);
    await sleep(1000);
    const t0 = await tunneledPackets();
    tunneled.push((await measure(['r1', 'r2'], seconds)).usPerDatagram);
    const moved = (await tunneledPackets()) - t0;
    if (moved === 0) throw new Error('cost: no datagram was tunneled while the flows reached r2');
  }
  log('cost: established path, peers configured vs not');
  const withPeers: number[] = [];
  const without: number[] = [];
  await h.reset();
  await Promise.all([h.startReplica('r1'), h.startReplica('r2'), h.startReplica('r3', { peers: false })]);
  for (let i = 0; i < reps; i++) {
    for (const [slot, into] of [
      ['r1', withPeers],
      ['r3', without],
    ] as const) {
      await h.load.request({ cmd: 'close' }, 20_000);
      await h.jvb.request({ cmd: 'clear' });
      await h.tier.setEndpoints([slot]);
      await h.openSessions(sessions);
      await sleep(1000);
      into.push((await measure([slot], seconds)).usPerDatagram);
    }
  }
  const med = (xs: number[]): number => quantile(xs, 0.5);
  const fmt = (xs: number[]): string =>
    `${med(xs).toFixed(2)} µs (runs: ${xs.map((x) => x.toFixed(2)).join(', ')})`;
  return [
    `CPU of the replica processes per datagram carried, ${sessions} sessions at ${Number(opt.pps)}/s each way, ${seconds} s per run, median of ${reps}:`,
    '',
    '| path | CPU per datagram | ratio |',
    '|---|---|---|',
    `| direct (r1 owns and receives) | ${fmt(direct)} | 1 |`,
    `| tunneled (r2 receives, r1 owns) | ${fmt(tunneled)} | ${(med(tunneled) / med(direct)).toFixed(2)} |`,
    `| established, no peer flags (r3) | ${fmt(without)} | 1 |`,
    `| established, peers configured (r1) | ${fmt(withPeers)} | ${(med(withPeers) / med(without)).toFixed(3)} (target ≤ 1.03) |`,
  ];
}
