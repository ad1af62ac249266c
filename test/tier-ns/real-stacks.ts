// Real WebRTC stacks across a rolling update of the tier (issue 16, "Real stacks"): headless
// Chromium (playwright-core) and node-datachannel (libdatachannel, libjuice) as clients behind the
// NAT, a node-datachannel single-port server as the backend (test/interop's pod: offers like JVB,
// advertises only the public address, echoes data-channel messages). Each client keeps a message
// going every 100 ms on its data channel while r1-r3 are replaced by r4-r6; what counts is whether
// the echoes keep coming (longest silence, silence at the end), whether the connection stays up
// (no ICE restart), and which source addresses reached the server (counted by the kernel in its
// namespace: one per session, the owners' upstream sockets, when nothing moved at the backend).
import { Agent } from '../interop/agent.ts';
import { ChromiumClient } from '../interop/chromium.ts';
import { JVB_BACKENDS, type TierHarness } from './harness.ts';
import { PORT, TIER, type TierRole } from './topology.ts';

export interface StackResult {
  stack: string;
  sent: number;
  echoed: number;
  maxGapMs: number;
  sinceLastEchoMs: number;
  /** Client's view at the end: 'connected' unless ICE or DTLS failed. */
  state: string;
}

export interface RealStackRun {
  stacks: StackResult[];
  /** Source addresses that reached the server: once both sessions were up, and at the end. */
  sourcesBefore: string[];
  sourcesAfter: string[];
}

const LOOP_MS = 100;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function realStacksAcrossRollingUpdate(h: TierHarness, settleMs: number): Promise<RealStackRun> {
  const topo = h.tier.topo;
  const vip = `${TIER.vip}:${PORT}`;
  h.backends = `pod=${TIER.cluster.pod}:${PORT}`;
  await h.freshTier();
  await h.tier.watchSources(TIER.cluster.pod);
  const pod = new Agent<TierRole>(topo, 'jvb', 'pod', 'pod-ndc.ts', [
    '--name',
    'pod',
    '--bind',
    TIER.cluster.pod,
    '--port',
    String(PORT),
  ]);
  const ndc = new Agent<TierRole>(topo, 'cli', 'client-ndc', 'client-ndc.ts');
  let chrome: ChromiumClient | undefined;
  try {
    await Promise.all([pod.ready(15_000), ndc.ready(15_000)]);
    chrome = await ChromiumClient.launch(topo, 'cli');

    // node-datachannel: the pod offers (controlling, as JVB), the client answers.
    const offer1 = await pod.request({ cmd: 'offer', session: 'ndc', advertise: vip });
    const answer1 = await ndc.request({ cmd: 'answer', session: 'ndc', sdp: offer1['sdp'] });
    await pod.request({ cmd: 'answer', session: 'ndc', sdp: answer1['sdp'] });
    // Chromium, the same way.
    const offer2 = await pod.request({ cmd: 'offer', session: 'chromium', advertise: vip });
    const answer2 = await chrome.answerDataOffer('chromium', String(offer2['sdp']));
    await pod.request({ cmd: 'answer', session: 'chromium', sdp: answer2 });

    await ndc.waitFor(
      (m) => m['event'] === 'echo' && m['session'] === 'ndc',
      15_000,
      'node-datachannel echo',
    );
    for (let i = 0; i < 150 && (await chrome.dataResult('chromium')) === undefined; i++) await sleep(100);
    if ((await chrome.dataResult('chromium')) === undefined)
      throw new Error('Chromium: no data-channel echo in 15 s');

    await ndc.request({ cmd: 'pingLoop', session: 'ndc', intervalMs: LOOP_MS });
    await chrome.startPingLoop('chromium', LOOP_MS);
    const sourcesBefore = await h.tier.seenSources();
    await sleep(1000);
    await h.rollingUpdate();
    await sleep(settleMs);

    const n = await ndc.request({ cmd: 'pingStats', session: 'ndc', stop: true });
    const c = await chrome.pingStats('chromium', true);
    const ndcState = [...ndc.events].reverse().find((m) => m['event'] === 'state' && m['session'] === 'ndc');
    const stacks: StackResult[] = [
      {
        stack: `node-datachannel ${String((await pod.request({ cmd: 'version' }))['libdatachannel'])}`,
        sent: Number(n['sent']),
        echoed: Number(n['echoed']),
        maxGapMs: Number(n['maxGapMs']),
        sinceLastEchoMs: Number(n['sinceLastEchoMs']),
        state: String(ndcState?.['state'] ?? 'unknown'),
      },
      { stack: `Chromium ${chrome.version()}`, ...c },
    ];
    return { stacks, sourcesBefore, sourcesAfter: await h.tier.seenSources() };
  } finally {
    h.backends = JVB_BACKENDS;
    await chrome?.close();
    pod.kill();
    ndc.kill();
  }
}

/** One markdown row per stack, and the server's sources. */
export function stackTable(run: RealStackRun | undefined): string {
  if (run === undefined) return '';
  return [
    '| client stack | messages sent / echoed | longest silence ms | silence at the end ms | state |',
    '|---|---|---|---|---|',
    ...run.stacks.map(
      (r) =>
        `| ${r.stack} | ${r.sent} / ${r.echoed} | ${r.maxGapMs.toFixed(0)} | ${r.sinceLastEchoMs.toFixed(0)} | ${r.state} |`,
    ),
    '',
    `sources at the server for ${run.stacks.length} sessions: ${run.sourcesBefore.length} once connected (${run.sourcesBefore.join(' ')}), ${run.sourcesAfter.length} at the end (${run.sourcesAfter.join(' ')})`,
  ].join('\n');
}
