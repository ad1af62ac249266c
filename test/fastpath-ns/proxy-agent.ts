// ice-ingress itself (src/pod/pod.ts startProxy, the CLI's own configuration parser) inside the proxy
// namespace, with a discovery source the test drives (backend removal) and a window onto its
// state over JSON lines. Logs (pino, JSON) go to stderr, i.e. the agent's log file.
//
// argv: the CLI's flags. requests: {cmd:'backends', text} (a new snapshot, static syntax);
// {cmd:'state'} -> counters, sessions, fast path; {cmd:'metrics'} -> text; {cmd:'close'}.
// With `--workers N` (N > 1) it runs the worker pool (startIngress, as the CLI does): then only
// the main thread is here and `state` is refused (the sessions are in the workers; /metrics shows
// the pod). The workers log to stdout (src/log.ts), between the replies, which the runner ignores.
import { pino } from 'pino';
import { parseConfig } from '../../src/config.ts';
import type { BackendSpec } from '../../src/defs/interfaces.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS } from '../../src/defs/reasons.ts';
import { parseBackends } from '../../src/discovery/static.ts';
import type { SnapshotListener } from '../../src/discovery/types.ts';
import {
  type IngressHandle,
  type ProxyHandle,
  type StartOptions,
  startIngress,
  startProxy,
} from '../../src/pod/pod.ts';
import { emit, type Json, serve } from '../interop/jsonl.ts';

const parsed = parseConfig(process.argv.slice(2), {});
if (parsed.kind !== 'run') throw new Error('expected flags to run');
const config = parsed.config;
let onSnapshot: SnapshotListener = () => {};
const snapshot = (text: string): BackendSpec[] => parseBackends(text).backends;
const opts: StartOptions = {
  log: pino({ level: config.logLevel, base: { name: 'ice-ingress' } }, pino.destination(2)),
  processMetrics: false,
  discovery: {
    kind: 'static',
    start(l) {
      onSnapshot = l;
      l(snapshot(config.backends));
    },
    async stop() {},
  },
};
const single: ProxyHandle | undefined = config.workers === 1 ? await startProxy(config, opts) : undefined;
const proxy: IngressHandle | ProxyHandle = single ?? (await startIngress(config, opts));

const named = (labels: readonly string[], values: ArrayLike<number>): Json =>
  Object.fromEntries(labels.map((l, i) => [l, values[i]]));

serve(async (req: Json) => {
  switch (req['cmd']) {
    case 'backends':
      onSnapshot(snapshot(String(req['text'])));
      return {};
    case 'state': {
      if (single === undefined) throw new Error('state: only without workers (use metrics)');
      const dp = single.datapath;
      const c = dp.counters;
      const fp = single.fastPath;
      if (req['poll'] === true) await fp?.pollNow();
      return {
        counters: {
          packetsFromClients: c.packetsFromClients,
          packetsToBackends: c.packetsToBackends,
          packetsFromBackends: c.packetsFromBackends,
          packetsToClients: c.packetsToClients,
          sessionsOpened: c.sessionsOpened,
        },
        drops: named(DROP_REASON_LABELS, c.drops),
        closed: named(CLOSE_REASONS, c.closed),
        sessions: [...dp.sessions].map((s) => ({
          id: s.id,
          serverUfrag: s.serverUfrag,
          current: `${s.current.address}:${s.current.port}`,
          upstreamPort: s.upstream.localPort,
          packetsUp: s.packetsUp,
          packetsDown: s.packetsDown,
        })),
        fastPath:
          fp === undefined ? null : { ...fp.stats, kernelSessions: fp.kernelSessions, totals: fp.totals },
      };
    }
    case 'metrics':
      return { text: await proxy.registry.metrics() };
    case 'close':
      await proxy.close();
      return {};
    default:
      throw new Error(`unknown cmd ${String(req['cmd'])}`);
  }
});
// Every worker has applied the first backends (the pool's /readyz), so a first check is routed.
while (!proxy.ready()) await new Promise((r) => setTimeout(r, 20));
emit({ event: 'ready', listen: proxy.listen });
