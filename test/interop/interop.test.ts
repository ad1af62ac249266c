// Interop suite (issue 3): unmodified WebRTC stacks, several behind one real NAT, reach sessions
// on different single-port servers through one proxy port. See netns.ts for the topology.
//
// Run as root: `npm run test:interop` (vitest.interop.config.ts). Prerequisites:
// test/interop/prereqs.sh. Agent logs (stderr of every child) are in the printed log folder.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type Msg, ROOT } from './agent.ts';
import { ChromiumClient } from './chromium.ts';
import { adminGet, type Front, PROXY_CLI, startAffinityRelay, startProxy } from './front.ts';
import { startJanus } from './janus.ts';
import { ADDR, createTopology, type Topology } from './netns.ts';
import { checkPrereqs, systemVersions } from './prereqs.ts';
import { candidateAddresses } from './sdp.ts';

const PORT = 10000;
const PUBLIC = `${ADDR.wan.proxy}:${PORT}`;
const BACKENDS = [
  `pod1=${ADDR.pods.pod1}:${PORT}`,
  `pod2=${ADDR.pods.pod2}:${PORT}`,
  `janus=${ADDR.pods.janus}:${PORT}`,
].join(',');

/** How long a client that should connect gets (generous: a 2-core CI machine). */
const CONNECT_MS = 10_000;
/** How long the negative control waits before it calls a client "never connected". */
const CONTROL_MS = 8_000;

let topo: Topology | undefined;
let pod1: Agent;
let pod2: Agent;
let c1: Agent;
let c2: Agent;
let janusSignal: Agent;
let chrome: ChromiumClient | undefined;
let front: Front | undefined;
const versions: Record<string, string> = {};
const report: string[] = [];

function t(): Topology {
  if (!topo) throw new Error('topology not created');
  return topo;
}

async function useFront(kind: 'proxy' | 'affinity'): Promise<Front> {
  front?.stop();
  front = undefined;
  // The old front's port must be free before the new one binds.
  await new Promise((r) => setTimeout(r, 200));
  front =
    kind === 'proxy'
      ? await startProxy(t(), PUBLIC, BACKENDS)
      : await startAffinityRelay(t(), PUBLIC, BACKENDS);
  return front;
}

/** Pod offers (controlling, like JVB), Node client answers. */
async function ndcSession(
  pod: Agent,
  client: Agent,
  session: string,
  advertise: string | undefined,
): Promise<string> {
  const offer = await pod.request({ cmd: 'offer', session, advertise });
  const answer = await client.request({ cmd: 'answer', session, sdp: offer['sdp'] });
  await pod.request({ cmd: 'answer', session, sdp: answer['sdp'] });
  return String(offer['sdp']);
}

/** Pod offers, Chromium answers (data channel). */
async function chromeSession(pod: Agent, session: string, advertise: string): Promise<string> {
  const offer = await pod.request({ cmd: 'offer', session, advertise });
  const answer = await chrome!.answerDataOffer(session, String(offer['sdp']));
  await pod.request({ cmd: 'answer', session, sdp: answer });
  return String(offer['sdp']);
}

const is =
  (event: string, session: string, state?: string) =>
  (m: Msg): boolean =>
    m['event'] === event && m['session'] === session && (state === undefined || m['state'] === state);

/** The echo event of a Node client session, or undefined when none came within `ms`. */
async function ndcEcho(client: Agent, session: string, ms: number): Promise<Msg | undefined> {
  return client.waitFor(is('echo', session), ms, `echo of ${session}`).catch(() => undefined);
}

/** The latest data-channel echo of a Chromium session (`want`: wait for that one), or undefined. */
async function chromeEcho(session: string, ms: number, want?: string): Promise<string | undefined> {
  const end = Date.now() + ms;
  let last: string | undefined;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    const r = await chrome!.dataResult(session);
    last = r?.echo;
    if (r && (want === undefined || r.echo === want)) return r.echo;
    await new Promise((res) => setTimeout(res, 100));
  }
  return want === undefined ? undefined : last;
}

/**
 * The arrangement scenarios (a) and (c) share: node client c1's session on pod1, node client c2's
 * and Chromium's on pod2, all offered with the proxy's public address. Session ids are
 * `${tag}-c1` … `${tag}-c3`. Returns the offers and each client's first echo (undefined when none
 * came within `ms`).
 */
async function threeSessions(
  tag: string,
  ms: number,
): Promise<{ offers: string[]; echoes: [Msg | undefined, Msg | undefined, string | undefined] }> {
  const offers = await Promise.all([
    ndcSession(pod1, c1, `${tag}-c1`, PUBLIC),
    ndcSession(pod2, c2, `${tag}-c2`, PUBLIC),
    chromeSession(pod2, `${tag}-c3`, PUBLIC),
  ]);
  const echoes = await Promise.all([
    ndcEcho(c1, `${tag}-c1`, ms),
    ndcEcho(c2, `${tag}-c2`, ms),
    chromeEcho(`${tag}-c3`, ms),
  ]);
  return { offers, echoes };
}

async function closeNdc(pod: Agent, client: Agent, session: string): Promise<void> {
  await client.request({ cmd: 'close', session }).catch(() => {});
  await pod.request({ cmd: 'close', session }).catch(() => {});
}

async function proxyMetrics(): Promise<string> {
  const r = await adminGet(t(), '/metrics');
  return r.body
    .split('\n')
    .filter((l) => l.startsWith('ice_ingress_') && !/ 0$/.test(l))
    .join('\n');
}

/** The proxy (or relay) survived everything so far: no unhandled socket error killed it. */
function expectFrontAlive(): void {
  expect(front, 'no proxy running').toBeDefined();
  expect(front!.alive(), `${front!.kind} exited; see ${front!.log}`).toBe(true);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

beforeAll(async () => {
  checkPrereqs();
  topo = await createTopology();
  report.push(`namespaces ${topo.prefix}*, logs in ${topo.logDir}; proxy under test: ${PROXY_CLI}`);
  if (topo.staleRemoved.length)
    report.push(`removed namespaces of a crashed run: ${topo.staleRemoved.join(' ')}`);
  startJanus(topo, 'janus', ADDR.pods.janus, PORT);
  pod1 = new Agent(topo, 'pod1', 'pod1', 'pod-ndc.ts', [
    '--name',
    'pod1',
    '--bind',
    ADDR.pods.pod1,
    '--port',
    `${PORT}`,
  ]);
  pod2 = new Agent(topo, 'pod2', 'pod2', 'pod-ndc.ts', [
    '--name',
    'pod2',
    '--bind',
    ADDR.pods.pod2,
    '--port',
    `${PORT}`,
  ]);
  c1 = new Agent(topo, 'c1', 'c1', 'client-ndc.ts');
  c2 = new Agent(topo, 'c2', 'c2', 'client-ndc.ts');
  janusSignal = new Agent(topo, 'janus', 'janus-signal', 'janus-signal.ts', ['--http', '8088']);
  const [, , , , js] = await Promise.all([
    pod1.ready(),
    pod2.ready(),
    c1.ready(),
    c2.ready(),
    janusSignal.ready(25_000),
  ]);
  chrome = await ChromiumClient.launch(topo, 'c3');
  const ndcPkg = JSON.parse(
    readFileSync(resolve(ROOT, 'node_modules/node-datachannel/package.json'), 'utf8'),
  );
  const pwPkg = JSON.parse(readFileSync(resolve(ROOT, 'node_modules/playwright-core/package.json'), 'utf8'));
  Object.assign(versions, {
    chromium: chrome.version(),
    janus: String(js['version']),
    'node-datachannel': ndcPkg.version,
    libdatachannel: String((await pod1.request({ cmd: 'version' }))['libdatachannel']),
    'playwright-core': pwPkg.version,
    node: process.version,
    ...systemVersions(),
  });
}, 90_000);

afterAll(async () => {
  front?.stop();
  await chrome?.close();
  topo?.destroySync();
  console.log(
    `\n=== interop summary ===\n${report.join('\n')}\n--- tested with ---\n${Object.entries(versions)
      .map(([k, v]) => `${k}: ${v}`)
      .join('\n')}\n`,
  );
}, 30_000);

describe('interop through one proxy port, clients behind one NAT', () => {
  it('(a) Node and Chromium clients behind one NAT reach sessions on two single-port pods', async () => {
    await useFront('proxy');
    const started = Date.now();
    const {
      offers,
      echoes: [e1, e2, e3],
    } = await threeSessions('a', CONNECT_MS);
    // What the clients were told: the proxy's public address and nothing else.
    for (const sdp of offers) expect(candidateAddresses(sdp)).toEqual([PUBLIC]);

    // The echo names the pod that answered: each session reached the pod that owns its ufrag,
    // through DTLS (the fingerprint in the offer) and SCTP.
    expect(e1?.['msg']).toBe('echo:pod1:ping:a-c1');
    expect(e2?.['msg']).toBe('echo:pod2:ping:a-c2');
    // Chromium's state beside a missing echo (a clean-clone CI run once had none within 10 s, and
    // nothing else to tell where it stopped: ICE, DTLS or the data channel).
    const stateOfC3 = e3 === undefined ? JSON.stringify(await chrome!.stats('a-c3')) : '';
    expect(e3, `Chromium a-c3: ${stateOfC3}`).toBe('echo:pod2:ping:a-c3');
    for (const [c, s] of [
      [c1, 'a-c1'],
      [c2, 'a-c2'],
    ] as const) {
      expect((await c.waitFor(is('pair', s), 1000, 'pair'))['remote']).toBe(PUBLIC);
      expect(c.find(is('state', s, 'connected'))).toBeDefined();
    }
    const st = await chrome!.stats('a-c3');
    expect(st.connectionState).toBe('connected');
    expect(st.remoteCandidate).toBe(PUBLIC);
    report.push(
      `(a) PASS: c1(node)->pod1 ice ${c1.find(is('ice', 'a-c1', 'connected'))?.['t']} ms, echo ${e1?.['t']} ms; ` +
        `c2(node)->pod2 ice ${c2.find(is('ice', 'a-c2', 'connected'))?.['t']} ms, echo ${e2?.['t']} ms; ` +
        `c3(chromium)->pod2 echo; all done ${Date.now() - started} ms after signalling began ` +
        '(client times count from the offer; they include the signalling race, see (d))',
    );

    // The sessions live on: keepalives and consent checks (both directions, RFC 7675) pass the
    // proxy, and a later message still reaches the same pod.
    const HOLD_MS = 7000;
    await new Promise((r) => setTimeout(r, HOLD_MS));
    await c1.request({ cmd: 'send', session: 'a-c1', msg: 'again:a-c1' });
    await c2.request({ cmd: 'send', session: 'a-c2', msg: 'again:a-c2' });
    await chrome!.sendData('a-c3', 'again:a-c3');
    const again = (c: Agent, s: string) =>
      c.waitFor((m) => is('echo', s)(m) && String(m['msg']).includes('again'), 3000, `second echo of ${s}`);
    expect((await again(c1, 'a-c1'))['msg']).toBe('echo:pod1:again:a-c1');
    expect((await again(c2, 'a-c2'))['msg']).toBe('echo:pod2:again:a-c2');
    expect(await chromeEcho('a-c3', 3000, 'echo:pod2:again:a-c3')).toBe('echo:pod2:again:a-c3');
    for (const [c, s] of [
      [c1, 'a-c1'],
      [c2, 'a-c2'],
    ] as const) {
      expect(
        c.find((m) => m['session'] === s && ['disconnected', 'failed'].includes(String(m['state']))),
      ).toBeUndefined();
    }
    expect((await chrome!.stats('a-c3')).connectionState).toBe('connected');
    report.push(`(a) sessions still up after ${HOLD_MS} ms: a second message round-tripped for every client`);
    report.push(`proxy metrics after (a):\n${await proxyMetrics()}`);
    await closeNdc(pod1, c1, 'a-c1');
    await closeNdc(pod2, c2, 'a-c2');
    expectFrontAlive();
  }, 60_000);

  it('(b) Chromium sends canvas video to Janus echotest through the proxy and decodes the echo', async () => {
    if (front?.kind !== 'proxy') await useFront('proxy');
    const offer = await chrome!.offerCanvasVideo('b-video');
    const answer = await janusSignal.request(
      { cmd: 'offer', session: 'b-video', sdp: offer, advertise: PUBLIC },
      20_000,
    );
    expect(candidateAddresses(String(answer['sdp']))).toEqual([PUBLIC]);
    const t0 = Date.now();
    await chrome!.setAnswer('b-video', String(answer['sdp']));
    let st = await chrome!.stats('b-video');
    let connectedMs = -1;
    const end = Date.now() + 20_000;
    for (let i = 0; i < 200 && Date.now() < end && st.framesDecoded < 30; i++) {
      await new Promise((r) => setTimeout(r, 250));
      st = await chrome!.stats('b-video');
      if (connectedMs < 0 && st.connectionState === 'connected') connectedMs = Date.now() - t0;
    }
    expect(st.connectionState).toBe('connected');
    expect(st.remoteCandidate).toBe(PUBLIC);
    expect(st.framesSent).toBeGreaterThan(0);
    expect(st.framesDecoded).toBeGreaterThanOrEqual(30);
    expect(janusSignal.find((m) => m['event'] === 'janus' && m['janus'] === 'webrtcup')).toBeDefined();
    report.push(
      `(b) PASS: Chromium->Janus echotest: connected ~${connectedMs} ms after answer, ` +
        `${st.framesSent} frames sent, ${st.framesDecoded} decoded, ${st.bytesReceived} bytes back`,
    );
    expectFrontAlive();
  }, 60_000);

  it('(c) negative control: source-IP affinity fails NATed clients whose session is elsewhere; the proxy does not', async () => {
    const relay = await useFront('affinity');
    const {
      echoes: [e1, e2, e3],
    } = await threeSessions('c', CONTROL_MS);
    // All three clients share the NAT's one public address, so the relay pinned them all to
    // the backend it picked for that address (round-robin: the first, pod1).
    const assigns = relay.agent!.events.filter((m) => m['event'] === 'assign');
    expect(assigns.map((m) => [m['clientIp'], m['backend']])).toEqual([[ADDR.wan.natPublic, 'pod1']]);
    expect(e1?.['msg']).toBe('echo:pod1:ping:c-c1');
    // The sessions on pod2 never get through: ICE does not even connect.
    expect(e2).toBeUndefined();
    expect(c2.find(is('ice', 'c-c2', 'connected'))).toBeUndefined();
    expect(e3).toBeUndefined();
    expect((await chrome!.stats('c-c3')).connectionState).not.toBe('connected');
    report.push(
      `(c) control (source-IP affinity): c1->pod1 connected; c2(node)->pod2 and c3(chromium)->pod2 ` +
        `did not connect within ${CONTROL_MS} ms (all pinned to pod1 via ${ADDR.wan.natPublic}) — expected failure`,
    );
    await closeNdc(pod1, c1, 'c-c1');
    await closeNdc(pod2, c2, 'c-c2');
    expectFrontAlive();

    // Same arrangement, same NAT, the proxy on the same port: everyone connects.
    await useFront('proxy');
    const {
      echoes: [p1, p2, p3],
    } = await threeSessions('c2', CONNECT_MS);
    expect(p1?.['msg']).toBe('echo:pod1:ping:c2-c1');
    expect(p2?.['msg']).toBe('echo:pod2:ping:c2-c2');
    expect(p3).toBe('echo:pod2:ping:c2-c3');
    report.push('(c) proxy on the same arrangement: all three connected — PASS');
    await closeNdc(pod1, c1, 'c2-c1');
    await closeNdc(pod2, c2, 'c2-c2');
    expectFrontAlive();
  }, 90_000);

  it('(d) time to connected: through the proxy vs direct', async () => {
    if (front?.kind !== 'proxy') await useFront('proxy');
    // Here the client offers and the pod answers, so that when the client applies the answer
    // both sides know each other and the clock measures only the network path. (With the pod
    // offering, the client starts DTLS before the pod has its answer and the first DTLS flight
    // waits for a 1 s retransmit, which would measure the signalling race, not the path.)
    type Sample = { ice: number; dtls: number; echo: number };
    const podAddr = `${ADDR.pods.pod1}:${PORT}`;
    const ndcSample = async (kind: 'proxy' | 'direct', i: number): Promise<Sample> => {
      const s = `d-${kind}-node-${i}`;
      const offer = await c1.request({ cmd: 'offer', session: s });
      const advertise = kind === 'proxy' ? PUBLIC : undefined;
      const answer = await pod1.request({ cmd: 'answerOffer', session: s, sdp: offer['sdp'], advertise });
      expect(candidateAddresses(String(answer['sdp']))).toEqual([kind === 'proxy' ? PUBLIC : podAddr]);
      await c1.request({ cmd: 'setAnswer', session: s, sdp: answer['sdp'] });
      const echo = await c1.waitFor(is('echo', s), CONNECT_MS, `echo of ${s}`);
      expect(echo['msg']).toBe(`echo:pod1:ping:${s}`);
      const pair = await c1.waitFor(is('pair', s), 1000, `pair of ${s}`);
      expect(pair['remote']).toBe(kind === 'proxy' ? PUBLIC : podAddr);
      const sample = {
        ice: Number(c1.find(is('ice', s, 'connected'))?.['t']),
        dtls: Number(c1.find(is('state', s, 'connected'))?.['t']),
        echo: Number(echo['t']),
      };
      await closeNdc(pod1, c1, s);
      return sample;
    };
    const chromeSample = async (kind: 'proxy' | 'direct', i: number): Promise<Sample> => {
      const s = `d-${kind}-chromium-${i}`;
      const offer = await chrome!.offerData(s);
      const advertise = kind === 'proxy' ? PUBLIC : undefined;
      const answer = await pod1.request({ cmd: 'answerOffer', session: s, sdp: offer, advertise });
      await chrome!.setAnswer(s, String(answer['sdp']));
      const end = Date.now() + CONNECT_MS;
      let r = await chrome!.dataResult(s);
      for (let k = 0; k < 1000 && !r && Date.now() < end; k++) {
        await new Promise((res) => setTimeout(res, 20));
        r = await chrome!.dataResult(s);
      }
      expect(r?.echo).toBe(`echo:pod1:ping:${s}`);
      expect((await chrome!.stats(s)).remoteCandidate).toBe(kind === 'proxy' ? PUBLIC : podAddr);
      await chrome!.closeSession(s);
      await pod1.request({ cmd: 'close', session: s });
      return { ice: Number.NaN, dtls: Math.round(r!.connectedAtMs), echo: Math.round(r!.echoAtMs) };
    };
    const N = 5;
    const NC = 3;
    const node: Record<string, Sample[]> = { proxy: [], direct: [] };
    const browser: Record<string, Sample[]> = { proxy: [], direct: [] };
    for (let i = 0; i < N; i++) node['proxy']!.push(await ndcSample('proxy', i));
    for (let i = 0; i < NC; i++) browser['proxy']!.push(await chromeSample('proxy', i));

    // Isolation holds: with forwarding off a client cannot reach a pod's own address.
    await ndcSession(pod1, c2, 'd-blocked', undefined);
    expect(await ndcEcho(c2, 'd-blocked', 3000)).toBeUndefined();
    expect(c2.find(is('ice', 'd-blocked', 'connected'))).toBeUndefined();
    await closeNdc(pod1, c2, 'd-blocked');

    await t().setForwarding(true);
    try {
      for (let i = 0; i < N; i++) node['direct']!.push(await ndcSample('direct', i));
      for (let i = 0; i < NC; i++) browser['direct']!.push(await chromeSample('direct', i));
    } finally {
      await t().setForwarding(false);
    }
    const stat = (xs: number[]): string => `${median(xs)} (${Math.min(...xs)}-${Math.max(...xs)})`;
    const row = (name: string, xs: Sample[]): string =>
      `${name.padEnd(16)} ` +
      (xs.every((x) => Number.isNaN(x.ice)) ? '' : `ICE ${stat(xs.map((x) => x.ice))}, `) +
      `connected/DTLS ${stat(xs.map((x) => x.dtls))}, first echo ${stat(xs.map((x) => x.echo))}`;
    report.push(
      '(d) PASS: ms from the offerer applying the answer, median (min-max), ' +
        `node ${N} runs, chromium ${NC} runs, client -> pod1:\n` +
        `    ${row('node proxy', node['proxy']!)}\n    ${row('node direct', node['direct']!)}\n` +
        `    ${row('chromium proxy', browser['proxy']!)}\n    ${row('chromium direct', browser['direct']!)}`,
    );
    report.push(`proxy metrics at the end (this proxy process served (c) and (d)):\n${await proxyMetrics()}`);
    expectFrontAlive();
  }, 120_000);
});
