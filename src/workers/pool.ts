import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { MetricSources, PeerMetricSource, WorkerMetricSource } from '../admin/metrics.ts';
import type { BackendSpec, KernelMaps, KernelPathSource } from '../defs/interfaces.ts';
import type { PeerSpec } from '../peers/peer-set.ts';
import type { Instance } from '../peers/wire.ts';
import { SharedDirectory } from './directory.ts';
import { perWorkerLimits, SharedSessionSlots, SharedTokenBucket } from './limits.ts';
import type { FromWorker, PoolConfig, ToWorker, WorkerInit } from './messages.ts';
import { splitPortRange } from './port-split.ts';
import { Doorbell, HandoffRing } from './ring.ts';
import { createStatsBuffer, PeerStat, Stat, WorkerStats } from './stats.ts';

/**
 * The worker pool of a pod with `--workers N` (N ≥ 2; docs/workers.md), as its main thread runs
 * it: it allocates the shared memory, starts N data-path worker threads on one listening address
 * (SO_REUSEPORT), sends every worker the pod's backend snapshots, relays learned and negative
 * ufrags, sums the workers' stats rows for the pod's one /metrics, and stops the workers on
 * drain, shutdown or the crash of any of them. Everything a pod does once (preflight, the nftables
 * table, discovery, admin) is the pod's (src/pod/pod.ts); each worker runs src/pod/worker-thread.ts,
 * and with `--fast-path nftables` writes only its own sessions' chains and elements into the
 * table (docs/workers.md, "Kernel fast path").
 */

export interface PoolOptions {
  readonly log: Logger;
  /** The worker threads' entry module (src/pod/worker-thread.ts; tests: a fixture wrapping it). */
  readonly workerEntry: URL;
  /** A kernel fast path is on: the workers' fast paths write into the pod's table or maps. */
  readonly fastPath: boolean;
  /** `--fast-path ebpf`: worker `i`'s view of the pod's maps (its own counter slots). */
  readonly ebpf?: (worker: number) => KernelMaps;
  /** A worker's routing time and outcome, and fast-path hand-over time (pod metrics). */
  readonly onRouted: (ms: number, outcome: string) => void;
  readonly onHandover: (ms: number) => void;
  /** With `--peers`: the replica's instance id, and each query round's duration (pod metrics). */
  readonly peers?: { readonly instance: Instance; readonly onRound: (ms: number) => void };
}

/**
 * The data-path threads of a pod, as the pod (src/pod/pod.ts) drives them: this pool, or one
 * process's one thread.
 */
export interface DataPlane {
  readonly listen: { address: string; port: number };
  readonly workers: number;
  readonly metrics: Omit<MetricSources, 'routing' | 'handover'>;
  /** The per-worker series, with worker threads. */
  readonly workerMetrics?: WorkerMetricSource;
  applyBackends(specs: readonly BackendSpec[]): void;
  /** Every thread has the first snapshot (and none has failed). */
  synced(): boolean;
  /** With `--peers`: a snapshot of the peer list, for every thread (docs/peers.md). */
  applyPeers(peers: readonly PeerSpec[]): void;
  /** Every listed peer has answered a ping (as the first thread sees it); true without peers. */
  peersHeard(): boolean;
  /** The peer series, with `--peers`. */
  readonly peerMetrics?: PeerMetricSource;
  /** Draining: no new sessions, and the peers hear so (existing sessions and tunnels go on). */
  stopAccepting(): void;
  sessions(): number;
  /** Waited before trusting a zero session count while draining (worker rows lag a little). */
  readonly settleMs: number;
  /** Stops every thread (each removes its own from the table first). */
  stop(): Promise<void>;
  /** Settles if a worker thread dies. */
  readonly failed: Promise<Error>;
}

interface Slot {
  readonly id: number;
  readonly worker: Worker;
  applied: boolean;
  closed: boolean;
  exited: boolean;
}

export async function startWorkerPool<C extends PoolConfig>(
  config: C,
  n: number,
  opts: PoolOptions,
): Promise<DataPlane> {
  const { log } = opts;
  const now = performance.timeOrigin + performance.now();
  const directory = SharedDirectory.create(4 * Math.min(config.maxSessions, 1 << 20));
  // Shared by all workers: the two probe budgets (fan-out, directed) and the session cap.
  const budgets = [
    SharedTokenBucket.create(config.probeRate, config.probeRate, now),
    SharedTokenBucket.create(config.directedProbeRate, config.directedProbeRate, now),
  ] as const;
  const slotsCap = SharedSessionSlots.create(config.maxSessions);
  // Kept by each worker, at 1/N: flows being routed per source (the shares: src/pod/worker-thread.ts).
  const { maxPendingPerSource } = perWorkerLimits(config, n);
  const statsBuffer = createStatsBuffer(n);
  const stats = new WorkerStats(statsBuffer);
  // N × (N − 1) rings: 256 KiB each up to 8 workers (≈ 170 datagrams of 1500 B in flight per
  // pair), 64 KiB beyond (32 workers: 62 MiB in all).
  const ringBytes = n <= 8 ? 256 * 1024 : 64 * 1024;
  const rings = Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => (i === j ? undefined : HandoffRing.create(ringBytes).buffer)),
  );
  const bells = Array.from({ length: n }, () => Doorbell.create().buffer);
  const portSlices =
    config.upstreamPorts === undefined
      ? undefined
      : splitPortRange(config.upstreamPorts[0], config.upstreamPorts[1], n);

  // The workers' fast paths, summed from their stats rows.
  const kernel: KernelPathSource | undefined = opts.fastPath
    ? {
        get totals() {
          return stats.kernel().totals;
        },
        get stats() {
          return stats.kernel().stats;
        },
        get kernelSessions() {
          return stats.kernel().kernelSessions;
        },
      }
    : undefined;

  let failWith: (err: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => {
    failWith = resolve;
  });
  let closing = false;
  let hasFailed = false;
  const slots: Slot[] = [];
  let snapshot: readonly BackendSpec[] | undefined;

  const fail = (id: number, err: Error): void => {
    if (closing || hasFailed) return;
    hasFailed = true;
    log.error({ worker: id, err: err.message, stack: err.stack }, 'worker crashed; the pod must restart');
    failWith(err);
  };
  const send = (s: Slot, m: ToWorker): void => {
    if (!s.closed) s.worker.postMessage(m);
  };
  const broadcast = (m: ToWorker, except = -1): void => {
    for (const s of slots) if (s.id !== except) send(s, m);
  };

  const spawn = (id: number, port: number): Promise<{ address: string; port: number }> => {
    const init: WorkerInit<C> = {
      id,
      workers: n,
      config: {
        ...config,
        listen: { host: config.listen.host, port },
        admin: undefined,
        upstreamPorts: portSlices?.[id],
        maxPendingPerSource,
        workers: 1,
        // Workers log at the main thread's level (a test's silent logger included).
        logLevel: log.level,
      },
      shared: {
        directory: directory.buffer,
        rings,
        bells,
        budgets: [budgets[0].buffer, budgets[1].buffer],
        slots: slotsCap.buffer,
        stats: statsBuffer,
      },
      ...(opts.peers === undefined ? {} : { peers: { instance: opts.peers.instance } }),
      ...(opts.ebpf === undefined ? {} : { ebpf: opts.ebpf(id) }),
    };
    const worker = new Worker(opts.workerEntry, {
      workerData: init,
      name: `ice-ingress-worker-${id}`,
    });
    const slot: Slot = { id, worker, applied: false, closed: false, exited: false };
    slots.push(slot);
    return new Promise((resolve, reject) => {
      let listening = false;
      worker.on('message', (m: FromWorker) => {
        switch (m.type) {
          case 'listening':
            listening = true;
            resolve({ address: m.address, port: m.port });
            break;
          case 'applied':
            slot.applied = true;
            break;
          case 'routed':
            opts.onRouted(m.ms, m.outcome);
            break;
          case 'handover':
            opts.onHandover(m.ms);
            break;
          case 'peerRound':
            opts.peers?.onRound(m.ms);
            break;
          case 'learned':
            broadcast(m, id);
            break;
          case 'negative':
            broadcast(m, id);
            break;
          case 'closed':
            slot.closed = true;
            break;
        }
      });
      worker.on('error', (err) => {
        if (!listening) reject(err);
        fail(id, err);
      });
      worker.on('exit', (code) => {
        slot.closed = true;
        slot.exited = true;
        if (!listening) reject(new Error(`worker ${id} exited with code ${code} before binding`));
        else if (!closing) fail(id, new Error(`worker ${id} exited with code ${code}`));
      });
    });
  };

  const stopWorkers = async (): Promise<void> => {
    await Promise.all(
      slots.map(async (s) => {
        if (s.exited) return;
        const exited = new Promise<void>((r) => s.worker.once('exit', () => r()));
        send(s, { type: 'close' });
        const timer = setTimeout(() => void s.worker.terminate(), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
  };

  // Worker 0 binds first (it resolves port 0); the others join its address.
  let listen: { address: string; port: number };
  try {
    listen = await spawn(0, config.listen.port);
    await Promise.all(Array.from({ length: n - 1 }, (_, i) => spawn(i + 1, listen.port)));
  } catch (err) {
    closing = true;
    await stopWorkers();
    throw err;
  }

  return {
    listen,
    workers: n,
    metrics: {
      counters: () => stats.counters(),
      sessions: {
        get size() {
          return stats.sum(Stat.sessions);
        },
        get endpointCount() {
          return stats.sum(Stat.endpoints);
        },
      },
      activeSources: () => stats.sum(Stat.activeSources),
      freePorts: config.upstreamPorts === undefined ? undefined : () => stats.sum(Stat.freePorts),
      openUpstreams: () => stats.sum(Stat.upstreams),
      ...(kernel === undefined ? {} : { kernel }),
    },
    workerMetrics: {
      workers: n,
      sessions: (w) => stats.get(w, Stat.sessions),
      // The packet counters of a row, in the order of Counters' first fields.
      packets: (w) => [stats.get(w, 0), stats.get(w, 2), stats.get(w, 4), stats.get(w, 6)],
      handoffsOut: (w) => stats.get(w, Stat.handoffsOut),
      handoffsIn: (w) => stats.get(w, Stat.handoffsIn),
      handoffDrops: () => stats.sum(Stat.handoffDrops),
      handoffRoutes: () => stats.sum(Stat.handoffRoutes),
    },
    applyBackends(specs: readonly BackendSpec[]): void {
      snapshot = specs;
      broadcast({ type: 'backends', specs });
    },
    synced: () => !hasFailed && snapshot !== undefined && slots.every((s) => s.applied && !s.closed),
    applyPeers: (specs) => broadcast({ type: 'peers', specs }),
    // Worker 0's row lags its pongs by a publish period at most.
    peersHeard: () => opts.peers === undefined || stats.peerStates()[0] === 0,
    ...(opts.peers === undefined
      ? {}
      : {
          peerMetrics: {
            counters: () => stats.peerCounters(),
            tunnels: () => [stats.sum(PeerStat.receiverTunnels), stats.sum(PeerStat.ownerTunnels)] as const,
            peers: () => stats.peerStates(),
          },
        }),
    stopAccepting: () => broadcast({ type: 'drain' }),
    sessions: () => stats.sum(Stat.sessions),
    // Worker rows are republished every PUBLISH_MS: a drain waits one period before trusting a zero.
    settleMs: 150,
    stop(): Promise<void> {
      closing = true;
      return stopWorkers();
    },
    failed,
  };
}
