import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { SOURCE_SLOTS } from '../admission/admission.ts';
import { ACTIVATION_ROUNDS, SourceShares } from '../admission/source-shares.ts';
import type { BackendSpec } from '../defs/interfaces.ts';
import type { DiscoverySource, SnapshotListener } from '../discovery/types.ts';
import { createLogger } from '../log.ts';
import { startProxy } from '../main.ts';
import { SharedDirectory } from './directory.ts';
import { HandoffNode } from './handoff.ts';
import { perWorkerLimits, SharedSessionSlots, SharedTokenBucket } from './limits.ts';
import type { FromWorker, ToWorker, WorkerInit } from './messages.ts';
import { Doorbell, HandoffRing } from './ring.ts';
import { PUBLISH_MS, publish } from './stats.ts';

/**
 * Entry point of one data-path worker thread (docs/workers.md). It runs the same data path as a
 * single process (startProxy, with admin off and discovery fed by the main thread), bound with
 * SO_REUSEPORT to the pod's listening address, and plugs in the shared directory, hand-off rings
 * and limits. Everything the pod shows (metrics, readiness, discovery) lives in the main thread.
 */

const init = workerData as WorkerInit;
const port = parentPort!;
const post = (m: FromWorker): void => port.postMessage(m);
const { id, config, shared } = init;

/** Discovery is the main thread's: this source replays its snapshots. */
class MainThreadDiscovery implements DiscoverySource {
  readonly kind = 'main-thread';
  #listener: SnapshotListener | undefined;
  start(l: SnapshotListener): void {
    this.#listener = l;
  }
  push(specs: readonly BackendSpec[]): void {
    this.#listener?.(specs);
  }
  async stop(): Promise<void> {}
}

// Comparable across threads (each thread's performance.now() starts at its own timeOrigin), as
// the shared token bucket needs.
const origin = performance.timeOrigin;
const clock = (): number => origin + performance.now();
const log = createLogger(config.logLevel).child({ worker: id });
const directory = new SharedDirectory(shared.directory);
const bells = shared.bells.map((b) => new Doorbell(b));
const node = new HandoffNode({
  id,
  directory,
  out: shared.rings[id]!.map((b) => (b === undefined ? undefined : new HandoffRing(b))),
  in: shared.rings.flatMap((row, i) =>
    i === id || row[id] === undefined ? [] : [new HandoffRing(row[id]!)],
  ),
  bells,
  idleMs: config.idleTimeoutMs,
  clock,
  onLearned: (hash, backend) => post({ type: 'learned', hash, backend }),
  onNegative: (hash) => post({ type: 'negative', hash }),
});
const discovery = new MainThreadDiscovery();

const proxy = await startProxy(config, {
  log,
  discovery,
  processMetrics: false,
  worker: id,
  reusePort: true,
  clock,
  onRouted: (ms, outcome) => post({ type: 'routed', ms, outcome }),
  onHandover: (ms) => post({ type: 'handover', ms }),
  shared: {
    budgets: [new SharedTokenBucket(shared.budgets[0]), new SharedTokenBucket(shared.budgets[1])],
    slots: new SharedSessionSlots(shared.slots),
    // This worker's fair shares, of 1/N of the shared budgets (limits.ts, perWorkerLimits).
    shares: new SourceShares(
      SOURCE_SLOTS,
      perWorkerLimits(config, init.workers).shareRates,
      undefined,
      Math.max(1, Math.ceil(ACTIVATION_ROUNDS / init.workers)),
    ),
    handoff: node,
  },
});
const { datapath, transport, ports, fastPath } = proxy;
// No backends (so no sessions) before the main thread's first snapshot: nothing is missed.
datapath.addListener(node);
node.start((buf, address, p) => datapath.onClientDatagram(buf, address, p));

const publishNow = (): void =>
  publish(shared.stats, id, datapath.counters, {
    sessions: datapath.size,
    endpoints: datapath.endpointCount,
    upstreams: transport.openUpstreams,
    handoffsOut: node.handedOut,
    handoffsIn: node.handedIn,
    handoffDrops: node.dropped,
    handoffRoutes: node.routes,
    activeSources: datapath.activeSources,
    freePorts: ports === undefined ? -1 : ports.available,
    kernel: fastPath,
  });
const publisher = setInterval(() => {
  node.sweep();
  publishNow();
}, PUBLISH_MS);
publisher.unref();

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'backends':
      discovery.push(m.specs);
      publishNow();
      post({ type: 'applied' });
      break;
    case 'learned':
      datapath.learn(m.hash, m.backend);
      break;
    case 'negative':
      datapath.reject(m.hash);
      break;
    case 'drain':
      datapath.stopAccepting();
      break;
    case 'close':
      clearInterval(publisher);
      node.close();
      void proxy.close().then(() => {
        publishNow();
        post({ type: 'closed' });
        port.close();
      });
      break;
  }
});
post({ type: 'listening', address: proxy.listen.address, port: proxy.listen.port });
