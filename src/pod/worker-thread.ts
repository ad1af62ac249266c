import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { SOURCE_SLOTS } from '../admission/admission.ts';
import { ACTIVATION_ROUNDS, SourceShares } from '../admission/source-shares.ts';
import type { Config } from '../config.ts';
import { createLogger } from '../log.ts';
import { SharedDirectory } from '../workers/directory.ts';
import { HandoffNode } from '../workers/handoff.ts';
import { perWorkerLimits, SharedSessionSlots, SharedTokenBucket } from '../workers/limits.ts';
import type { FromWorker, ToWorker, WorkerInit } from '../workers/messages.ts';
import { Doorbell, HandoffRing } from '../workers/ring.ts';
import { PUBLISH_MS, publish } from '../workers/stats.ts';
import { startThread } from './thread.ts';

/**
 * Entry point of one data-path worker thread (docs/workers.md). It runs the same data-path thread
 * as one process does (src/pod/thread.ts), bound with SO_REUSEPORT to the pod's listening address,
 * and plugs in the shared directory, hand-off rings and limits. Everything the pod does once
 * (metrics, readiness, discovery, the nftables table) is the main thread's (src/pod/pod.ts).
 */

const init = workerData as WorkerInit<Config>;
const port = parentPort!;
const post = (m: FromWorker): void => port.postMessage(m);
const { id, config, shared } = init;

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

const thread = await startThread(config, {
  log,
  clock,
  reusePort: true,
  // The main thread owns the table or the program; this worker adds its own flows to it.
  ...(config.fastPath === 'nftables' ? { kernel: { worker: id } } : {}),
  ...(config.fastPath === 'ebpf' && init.ebpf !== undefined
    ? { kernel: { ebpf: init.ebpf, worker: id } }
    : {}),
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
  ...(init.peers === undefined
    ? {}
    : {
        peers: {
          instance: init.peers.instance,
          worker: id,
          workers: init.workers,
          onRound: (ms: number) => post({ type: 'peerRound', ms }),
        },
      }),
});
const { datapath, transport, ports, fastPath } = thread;
const peers = thread.peers?.node;
// No backends (so no sessions) before the main thread's first snapshot: nothing is missed.
datapath.addListener(node);
node.start((buf, address, p) => datapath.onClientDatagram(buf, address, p));
log.info({ listen: thread.listen }, 'worker started');

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
    ...(peers === undefined
      ? {}
      : {
          peers: {
            counters: peers.counters,
            receiverTunnels: peers.receiver.tunnels,
            ownerTunnels: peers.owner.tunnels,
            states: peers.set.states(),
          },
        }),
  });
const publisher = setInterval(() => {
  node.sweep();
  publishNow();
}, PUBLISH_MS);
publisher.unref();

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'backends':
      datapath.updateBackends(m.specs);
      publishNow();
      post({ type: 'applied' });
      break;
    case 'learned':
      datapath.learn(m.hash, m.backend);
      break;
    case 'negative':
      datapath.reject(m.hash);
      break;
    case 'peers':
      peers?.updatePeers(m.specs);
      break;
    case 'drain':
      datapath.stopAccepting();
      peers?.setDraining();
      break;
    case 'close':
      clearInterval(publisher);
      node.close();
      void thread.stop().then(() => {
        publishNow();
        post({ type: 'closed' });
        port.close();
      });
      break;
  }
});
post({ type: 'listening', address: thread.listen.address, port: thread.listen.port });
