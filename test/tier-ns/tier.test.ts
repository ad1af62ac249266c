// The proxy tier in network namespaces (issue 16), CI-sized: replicas of the real CLI behind a
// kube-proxy-like balancer (topology.ts), fake JVBs that answer 403 to a second remote address,
// clients with media behind a NAT (harness.ts). Each scenario starts from fresh replicas and
// sessions in the same namespaces.
//
// Two modes, chosen by the CLI under test (TIER_PROXY_CLI): when its --help has the peer flags, the
// hand-off is on and every scenario must meet the targets; without them (a proxy from
// before issue 16) the scenarios in which flows change replica must show the failure the issue
// describes — loss, 403s at the JVBs, sessions that need an ICE restart — which proves the harness
// sees loss when there is some. TIER_HANDOFF=on|off overrides the detection.
//
// Run as root: `npm run test:tier` (prerequisites: test/tier-ns/prereqs.sh).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../interop/agent.ts';
import {
  cliHasPeers,
  PROXY_CLI,
  resultTable,
  type ScenarioKind,
  type ScenarioResult,
  TARGETS,
  TierHarness,
} from './harness.ts';
import { checkPrereqs } from './prereqs.ts';
import { type RealStackRun, realStacksAcrossRollingUpdate, stackTable } from './real-stacks.ts';

const HANDOFF =
  process.env['TIER_HANDOFF'] === undefined ? cliHasPeers() : process.env['TIER_HANDOFF'] === 'on';

const RESULTS_DIR = join(ROOT, '.tmp-tier');
let h: TierHarness | undefined;
const results: ScenarioResult[] = [];
let stacks: RealStackRun | undefined;

beforeAll(async () => {
  checkPrereqs({ ebpf: true });
  h = await TierHarness.create({
    sessions: 30,
    pps: 50,
    size: 200,
    checkIntervalMs: 2500,
    lockMs: 3000,
    steadyMs: 1000,
    stepMs: 1500,
    settleMs: 3000,
    rebindSpreadMs: 1500,
    handoff: HANDOFF,
    extraFlags: [],
    floodRate: 20_000,
    floodSeconds: 3,
    log: () => {},
  });
}, 60_000);

afterAll(async () => {
  await h?.destroy();
  // In the checkout (.tmp-*/ is ignored): the log folder may be pruned by another suite's next run.
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    join(RESULTS_DIR, 'tier-results.json'),
    JSON.stringify({ handoff: HANDOFF, results, stacks }, null, 2),
  );
  console.log(
    `\n=== tier summary (proxy ${PROXY_CLI}, hand-off ${HANDOFF ? 'on' : 'off'}; logs in ${h?.logDir}, figures in ${RESULTS_DIR}) ===\n${resultTable(results)}\n\n${stackTable(stacks)}\n`,
  );
});

async function scenario(kind: ScenarioKind): Promise<ScenarioResult> {
  if (!h) throw new Error('harness not created');
  const r = await h.run(kind);
  results.push(r);
  return r;
}

/**
 * A scenario in which flows change replica: with the hand-off, the targets; without, the
 * failure the issue describes (moved flows dropped, their consent checks routed anew and refused
 * with 403, sessions that need an ICE restart), which the harness must see.
 */
function expectMovedFlows(r: ScenarioResult): void {
  if (HANDOFF) {
    expect(functional(r)).toEqual([]);
    return;
  }
  expect(r.lossPct).toBeGreaterThan(10 * TARGETS.lossPct);
  expect(r.jvb403).toBeGreaterThan(0);
  expect(r.restartsNeeded).toBeGreaterThan(0);
}

/**
 * The issue's targets less its timing ones: a gap on the clients' receive clock is a speed figure,
 * which `npm run bench:tier` prints against its target (the project's rule: speed targets are
 * checked by benchmarks that print numbers, never by timed tests). What stays is functional: loss
 * within target (a NAT rebinding onto another replica too, since the owner holds the media that
 * follows a rebinding's check until the backend's success: src/session/join-waits.ts), no ICE
 * restart, one source per session at the JVB, echoes only from the public address, queries within
 * budget.
 */
function functional(r: ScenarioResult): string[] {
  return r.failures.filter((x) => !x.startsWith('gap '));
}

describe(`proxy tier in network namespaces (hand-off ${HANDOFF ? 'on' : 'off'})`, () => {
  it('steady state: the harness itself loses nothing and adds no gap', async () => {
    const r = await scenario('steady');
    // Nothing moves: what is lost here is lost by the harness itself, in either mode.
    expect(r.moved).toBe(0);
    expect(r.lossPct).toBe(0);
    expect(r.restartsNeeded).toBe(0);
    expect(r.maxSources).toBe(1);
    if (HANDOFF) expect(functional(r)).toEqual([]);
  });

  it('rolling update: every replica replaced one at a time', async () => {
    const r = await scenario('rolling');
    expect(r.moved).toBe(r.sessions);
    expectMovedFlows(r);
  });

  it('rolling update with the eBPF kernel fast path: a session whose flow moved to a peer leaves the kernel and keeps flowing', async () => {
    if (!h) throw new Error('harness not created');
    h.fastPath = 'ebpf';
    try {
      const r = await scenario('rolling');
      expect(r.moved).toBe(r.sessions);
      // The kernel carried the established media until the flows moved (and Node, through the
      // peers, after): without it this scenario would prove nothing about the kernel path.
      expect(r.extra['kernel_packets']).toBeGreaterThan(r.sessions * 50);
      expectMovedFlows(r);
    } finally {
      h.fastPath = undefined;
    }
  });

  it('scale-in from 3 replicas to 1', async () => {
    const r = await scenario('scale-in');
    // The flows of r2 and r3 (numgen random spreads them: about two thirds) move to r1.
    expect(r.moved).toBeGreaterThan(0);
    expectMovedFlows(r);
  });

  it('NAT rebinding, flow by flow: each flow gets a new public port at its own moment, most land on another replica', async () => {
    const r = await scenario('rebind');
    expect(r.extra['rebound']).toBe(r.sessions);
    expect(r.moved).toBeGreaterThan(0);
    expectMovedFlows(r);
  });

  it('NAT rebinding of every flow at once: every flow gets a new public port, most land on another replica', async () => {
    const r = await scenario('rebind-all');
    expect(r.extra['nat_flows']).toBe(r.sessions);
    // numgen random keeps a third on the same replica; 30 sessions all staying is (1/3)^30.
    // Without the hand-off, those that stayed rebind on their replica as today; the others are lost.
    expect(r.moved).toBeGreaterThan(0);
    expectMovedFlows(r);
  });

  it("SIGKILL of a replica: its sessions end and reconnect at once, the others' lose nothing", async () => {
    const r = await scenario('sigkill');
    const killed = Number(r.extra['killed_sessions']);
    expect(killed).toBeGreaterThan(0);
    // Both modes: the harness sees the killed replica's sessions end, and only those.
    expect(r.extra['ended']).toBe(killed);
    if (HANDOFF) expect(functional(r)).toEqual([]);
  });

  it('forged traffic at 20 kpps from many sources: established sessions lose nothing', async () => {
    const r = await scenario('forged');
    // The flood really ran at (nearly) its rate.
    expect(Number(r.extra['flood_rate'])).toBeGreaterThan(0.9 * 20_000);
    if (HANDOFF) expect(functional(r)).toEqual([]);
  });

  it('real stacks: Chromium and node-datachannel keep their data channels echoing across the rolling update', async () => {
    if (!h) throw new Error('harness not created');
    const run = await realStacksAcrossRollingUpdate(h, 4000);
    stacks = run;
    for (const r of run.stacks) {
      expect(r.echoed, r.stack).toBeGreaterThan(0);
      if (!HANDOFF) continue;
      // Still connected (no ICE restart) and still echoing at the end.
      expect(r.state, r.stack).toBe('connected');
      expect(r.sinceLastEchoMs, r.stack).toBeLessThan(1000);
    }
    // One source per session at the server, before and after.
    expect(run.sourcesBefore).toHaveLength(run.stacks.length);
    if (HANDOFF) expect(run.sourcesAfter).toEqual(run.sourcesBefore);
  }, 90_000);
});
