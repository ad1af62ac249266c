// Signalling agent for a Janus pod, run inside the pod's namespace (Janus's HTTP API listens on
// 127.0.0.1 there). Waits for Janus, then for each request creates a session, attaches the
// echotest plugin, sends the client's offer and returns Janus's answer, rewritten so that the
// proxy's public address is its only candidate.
//
// argv: --http PORT
// requests: {cmd:'offer', session, sdp, advertise?: 'IP:PORT'} -> {sdp, ufrag}
// events:   {event:'ready', version}, {event:'janus', session, janus, ...} (webrtcup, media, hangup)
import { argValue, emit, type Json, log, serve } from './jsonl.ts';
import { advertiseOnly, iceUfrag } from './sdp.ts';

const base = `http://127.0.0.1:${Number(argValue('--http') ?? 8088)}/janus`;
let tx = 0;

async function call(path: string, body: Json | undefined, timeoutMs = 5000): Promise<Json> {
  const res = await fetch(base + path, {
    method: body ? 'POST' : 'GET',
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify({ ...body, transaction: `t${++tx}` }) : undefined,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const json = (await res.json()) as Json;
  if (json['janus'] === 'error') throw new Error(`janus: ${JSON.stringify(json['error'])}`);
  return json;
}

async function waitForJanus(): Promise<Json> {
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      return await call('/info', undefined, 1000);
    } catch (err) {
      if (Date.now() > end) throw new Error(`Janus HTTP API not up after 20 s: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Long-polls Janus's session events until `stop()`; forwards them as events; returns the answer. */
function pollEvents(sid: number, session: string, onJsep: (sdp: string) => void): () => void {
  let stopped = false;
  void (async () => {
    for (let i = 0; i < 10_000 && !stopped; i++) {
      try {
        const ev = await call(`/${sid}?maxev=5&rid=${Date.now()}`, undefined, 35_000);
        const list = Array.isArray(ev) ? (ev as Json[]) : [ev];
        for (const e of list) {
          const jsep = e['jsep'] as Json | undefined;
          if (jsep && typeof jsep['sdp'] === 'string') onJsep(jsep['sdp']);
          if (e['janus'] !== 'keepalive')
            emit({ event: 'janus', session, janus: e['janus'], data: e['plugindata'] ?? null });
        }
      } catch (err) {
        if (!stopped) log('poll error', String(err));
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  })();
  return () => {
    stopped = true;
  };
}

const stops: (() => void)[] = [];

const info = await waitForJanus();
serve(
  async (req) => {
    if (req['cmd'] !== 'offer') throw new Error(`unknown cmd ${String(req['cmd'])}`);
    const session = String(req['session']);
    const created = await call('', { janus: 'create' });
    const sid = (created['data'] as Json)['id'] as number;
    const attached = await call(`/${sid}`, { janus: 'attach', plugin: 'janus.plugin.echotest' });
    const hid = (attached['data'] as Json)['id'] as number;
    let answer: string | undefined;
    stops.push(pollEvents(sid, session, (sdp) => (answer ??= sdp)));
    await call(`/${sid}/${hid}`, {
      janus: 'message',
      body: { audio: false, video: true },
      jsep: { type: 'offer', sdp: String(req['sdp']) },
    });
    // The offer carried all of the client's candidates (gathered before it was sent).
    await call(`/${sid}/${hid}`, { janus: 'trickle', candidate: { completed: true } });
    const end = Date.now() + 10_000;
    while (answer === undefined && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    if (answer === undefined) throw new Error('no answer from Janus within 10 s');
    const adv = req['advertise'];
    let sdp = answer;
    if (typeof adv === 'string') {
      const [ip, p] = adv.split(':');
      sdp = advertiseOnly(sdp, ip!, Number(p));
    }
    return { sdp, ufrag: iceUfrag(sdp) };
  },
  () => {
    for (const s of stops) s();
  },
);
emit({ event: 'ready', version: info['version_string'] ?? info['version'] });
