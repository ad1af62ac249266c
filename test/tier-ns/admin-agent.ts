// Reads the replicas' admin HTTP (/readyz, /metrics) for the tier harness, from the lb namespace,
// which sits on the cluster bridge with them (the harness itself runs in the host's namespace,
// which has no route into the tier, on purpose).
//
// requests: {cmd:'get', url, timeoutMs} -> {status, body}  (status 0: no answer; body: the error)
import { emit, type Json, serve } from '../interop/jsonl.ts';

serve(async (req: Json) => {
  if (req['cmd'] !== 'get') throw new Error(`unknown cmd ${String(req['cmd'])}`);
  try {
    const r = await fetch(String(req['url']), {
      signal: AbortSignal.timeout(Number(req['timeoutMs'] ?? 2000)),
    });
    return { status: r.status, body: await r.text() };
  } catch (err) {
    return { status: 0, body: String(err) };
  }
});
emit({ event: 'ready' });
