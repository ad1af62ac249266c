import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { createHandoverHistogram, createRegistry, createRoutingHistogram } from '../admin/metrics.ts';
import { startAdminServer } from '../admin/server.ts';
import type { Config } from '../config.ts';
import type { BackendSpec, KernelPathSource } from '../defs/interfaces.ts';
import { createDiscovery } from '../discovery/index.ts';
import { NftCommand } from '../fastpath/nft-runner.ts';
import { deleteTableScript, FAMILY, TABLE, tableScript } from '../fastpath/nft-script.ts';
import { checkFastPath, FastPathUnavailable, systemProbes } from '../fastpath/preflight.ts';
import { ingressDevices } from '../fastpath/routes.ts';
import { createLogger } from '../log.ts';
import { discoveryOptions, type IngressHandle, type StartOptions } from '../main.ts';
import { SharedDirectory } from './directory.ts';
import { perWorkerLimits, SharedSessionSlots, SharedTokenBucket } from './limits.ts';
import type { FromWorker, ToWorker, WorkerInit } from './messages.ts';
import { registerWorkerMetrics } from './metrics.ts';
import { splitPortRange } from './port-split.ts';
import { Doorbell, HandoffRing } from './ring.ts';
import { createStatsBuffer, Stat, WorkerStats } from './stats.ts';

/**
 * The main thread of a pod with `--workers N` (N ≥ 2; docs/workers.md): it allocates the shared
 * memory, starts N data-path worker threads on one listening address (SO_REUSEPORT), runs
 * discovery once and sends every worker the same snapshot, relays learned and negative ufrags,
 * serves the one /metrics and /readyz of the pod, and stops everything on drain, shutdown or the
 * crash of any worker. With `--fast-path nftables` it owns the one nftables table of the network
 * namespace: it checks the requirements before any worker starts, creates the table once the
 * workers are bound (before the first backends, so before any session), and deletes it after
 * every worker stopped; each worker writes only its own sessions' chains and elements into it
 * (docs/workers.md, "Kernel fast path").
 */

export interface PoolOptions extends StartOptions {
  /** Replaces the worker's entry module (tests: a fixture that wraps the real one). */
  readonly workerEntry?: URL;
}

/** The worker module next to this one: worker.ts from source, worker.js in the built image (dist/). */
const WORKER_ENTRY = new URL(
  import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js',
  import.meta.url,
);

interface Slot {
  readonly id: number;
  readonly worker: Worker;
  applied: boolean;
  closed: boolean;
  exited: boolean;
}

export async function startWorkerPool(
  config: Config,
  n: number,
  opts: PoolOptions = {},
): Promise<IngressHandle> {
  const log: Logger = opts.log ?? createLogger(config.logLevel);
  const fastPath = config.fastPath === 'nftables';
  if (fastPath) {
    // Before any worker starts: say everything that is missing at once (as one process does).
    const problems = await checkFastPath(systemProbes());
    if (problems.length > 0) throw new FastPathUnavailable(problems);
  }
  const nft = new NftCommand();
  const now = performance.timeOrigin + performance.now();
  const directory = SharedDirectory.create(4 * Math.min(config.maxSessions, 1 << 20));
  // Shared by all workers: the two probe budgets (fan-out, directed) and the session cap.
  const budgets = [
    SharedTokenBucket.create(config.probeRate, config.probeRate, now),
    SharedTokenBucket.create(config.directedProbeRate, config.directedProbeRate, now),
  ] as const;
  const slotsCap = SharedSessionSlots.create(config.maxSessions);
  // Kept by each worker, at 1/N: flows being routed per source (the shares: worker.ts).
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

  const routing = createRoutingHistogram();
  const handover = createHandoverHistogram();
  // The workers' fast paths, summed from their stats rows; hand-over times arrive as messages.
  const kernel: KernelPathSource | undefined = fastPath
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
  const registry = createRegistry(
    {
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
      routing,
      ...(kernel === undefined ? {} : { kernel, handover }),
    },
    opts.processMetrics ?? true,
  );
  registerWorkerMetrics(registry, stats);

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
    const init: WorkerInit = {
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
    };
    const worker = new Worker(opts.workerEntry ?? WORKER_ENTRY, {
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
            routing.observe({ outcome: m.outcome }, m.ms / 1000);
            break;
          case 'handover':
            handover.observe(m.ms / 1000);
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

  // The table goes after the workers: each has removed its own flows by then (fast-path.ts, stop).
  let tableCreated = false;
  const deleteTable = async (): Promise<void> => {
    if (!tableCreated) return;
    tableCreated = false;
    try {
      await nft.apply(deleteTableScript());
      log.info({ table: `${FAMILY} ${TABLE}` }, 'fast path: nftables table removed');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'fast path: could not remove the nftables table');
    }
  };

  // Worker 0 binds first (it resolves port 0); the others join its address.
  let listen: { address: string; port: number };
  try {
    listen = await spawn(0, config.listen.port);
    await Promise.all(Array.from({ length: n - 1 }, (_, i) => spawn(i + 1, listen.port)));
    if (fastPath) {
      // Replacing a stale one (fast-path.ts, as one process does). No worker has a session yet:
      // they get their first backends below.
      const devices = ingressDevices();
      await nft.apply(tableScript({ listenAddress: listen.address, listenPort: listen.port, devices }));
      tableCreated = true;
      log.info(
        { table: `${FAMILY} ${TABLE}`, listen: `${listen.address}:${listen.port}`, devices },
        'fast path: nftables table created',
      );
    }
  } catch (err) {
    closing = true;
    await stopWorkers();
    throw err;
  }

  const discovery = opts.discovery ?? (await createDiscovery(discoveryOptions(config), { log, registry }));
  discovery.start((specs) => {
    snapshot = specs;
    broadcast({ type: 'backends', specs });
  });

  let draining = false;
  const ready = (): boolean =>
    !draining && !hasFailed && snapshot !== undefined && slots.every((s) => s.applied && !s.closed);

  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  if (config.admin !== undefined) {
    try {
      admin = await startAdminServer(config.admin.host, config.admin.port, registry, {
        ready,
        draining: () => draining,
      });
    } catch (err) {
      closing = true;
      await discovery.stop();
      await stopWorkers();
      await deleteTable();
      throw err;
    }
  }
  log.info(
    {
      listen,
      admin: admin ? `${config.admin!.host}:${admin.port}` : 'off',
      discovery: discovery.kind,
      workers: n,
      fastPath: config.fastPath,
    },
    'ice-ingress started',
  );

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      await discovery.stop();
      await stopWorkers();
      await deleteTable();
      if (admin !== undefined) {
        admin.server.closeAllConnections();
        await new Promise<void>((r) => admin!.server.close(() => r()));
      }
    })();
    return closed;
  };

  return {
    registry,
    log,
    listen,
    adminPort: admin?.port,
    workers: n,
    ready,
    failed,
    async drain(ms: number): Promise<void> {
      draining = true;
      broadcast({ type: 'drain' });
      log.info({ drainMs: ms, sessions: stats.sum(Stat.sessions) }, 'draining');
      const deadline = performance.now() + ms;
      // Worker rows are republished every PUBLISH_MS: wait one period before trusting a zero.
      await new Promise((r) => setTimeout(r, Math.min(ms, 150)));
      while (performance.now() < deadline && stats.sum(Stat.sessions) > 0 && !hasFailed) {
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - performance.now()))));
      }
      await close();
    },
    close,
  };
}
