import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createHandoverHistogram, createRegistry, createRoutingHistogram } from './admin/metrics.ts';
import { startAdminServer } from './admin/server.ts';
import { BackendTable } from './backends/backend-table.ts';
import type { Config } from './config.ts';
import { Datapath, type DatapathDeps } from './datapath/datapath.ts';
import type { KernelPathSource } from './defs/interfaces.ts';
import { createDiscovery, type DiscoveryOptions } from './discovery/index.ts';
import type { DiscoverySource } from './discovery/types.ts';
import { type FastPathDeps, NftFastPath } from './fastpath/fast-path.ts';
import { NftCommand } from './fastpath/nft-runner.ts';
import { checkFastPath, FastPathUnavailable, systemProbes } from './fastpath/preflight.ts';
import { ingressDevices, NextHops } from './fastpath/routes.ts';
import { SourceAddresses } from './fastpath/source-address.ts';
import { UdpTransport } from './io/udp.ts';
import { createLogger } from './log.ts';
import { PortPool } from './session/port-pool.ts';

/**
 * The composition root: the only place that builds real sockets, clients, timers and the clock,
 * and wires them to the I/O-free data path.
 */

export interface ProxyHandle {
  readonly datapath: Datapath;
  readonly transport: UdpTransport;
  /** The upstream port range, when one is configured. */
  readonly ports: PortPool | undefined;
  readonly registry: Registry;
  readonly log: Logger;
  /** The kernel fast path, when `--fast-path nftables`. */
  readonly fastPath: NftFastPath | undefined;
  /** Where clients send (the bound listening address; port 0 resolved). */
  readonly listen: { address: string; port: number };
  /** Bound admin port, or undefined if admin is off. */
  readonly adminPort: number | undefined;
  ready(): boolean;
  /** SIGTERM behaviour: not ready, no new sessions, relay for `ms`, then close. */
  drain(ms: number): Promise<void>;
  /** Closes everything at once; idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  /** Replaces the source chosen by `config.discovery` (tests). */
  readonly discovery?: DiscoverySource;
  readonly processMetrics?: boolean;
  /** Set inside a worker thread (src/workers/worker.ts): its id, logged instead of "started". */
  readonly worker?: number;
  /** Bind the listening socket with SO_REUSEPORT (worker threads share the address). */
  readonly reusePort?: boolean;
  /** Replaces `performance.now()` (workers need a clock comparable across threads). */
  readonly clock?: () => number;
  /** Also told each routing time and outcome (workers forward them to the main thread). */
  readonly onRouted?: (ms: number, outcome: string) => void;
  /** Also told each fast-path hand-over time (workers forward them to the main thread). */
  readonly onHandover?: (ms: number) => void;
  /**
   * Set inside a worker thread: the shared budgets and session cap, the worker's own fair shares
   * and the hand-off to the other workers (src/workers/worker.ts, docs/workers.md).
   */
  readonly shared?: Pick<DatapathDeps, 'budgets' | 'slots' | 'shares' | 'handoff'>;
}

/** What the CLI needs from a running proxy, one process or a pool of worker threads. */
export interface IngressHandle {
  readonly registry: Registry;
  readonly log: Logger;
  readonly listen: { address: string; port: number };
  readonly adminPort: number | undefined;
  /** Data-path threads (1 = this thread, no workers). */
  readonly workers: number;
  ready(): boolean;
  drain(ms: number): Promise<void>;
  close(): Promise<void>;
  /** Settles if a worker thread dies: the pod must restart rather than run with a hole. */
  readonly failed: Promise<Error>;
}

/**
 * Starts the proxy with `config.workers` data-path threads: 1 (the default) is this thread alone,
 * exactly as {@link startProxy}; more start worker threads that share the listening address
 * (src/workers, docs/workers.md).
 */
export async function startIngress(config: Config, opts: StartOptions = {}): Promise<IngressHandle> {
  const { resolveWorkers } = await import('./workers/cpus.ts');
  const n = resolveWorkers(config.workers);
  if (n <= 1) {
    const p = await startProxy(config, opts);
    return Object.assign(p, { workers: 1, failed: new Promise<Error>(() => {}) });
  }
  const { startWorkerPool } = await import('./workers/pool.ts');
  return startWorkerPool(config, n, opts);
}

/** The discovery options of a config (one mapping for the single process and the worker pool). */
export function discoveryOptions(config: Config): DiscoveryOptions {
  return {
    kind: config.discovery,
    backends: config.backends,
    service: config.service,
    namespace: config.namespace,
    portName: config.portName,
    kubeconfig: config.kubeconfig,
    dnsName: config.dnsName,
    backendPort: config.backendPort,
    dnsInterval: config.dnsIntervalMs,
    dnsGrace: config.dnsGraceMs,
  };
}

/** Sweep period: probe timeouts and idle expiry are checked this often. */
function sweepInterval(config: Config): number {
  return Math.max(10, Math.min(1000, config.probeTimeoutMs / 4, config.idleTimeoutMs / 4));
}

/** Counter reads per idle timeout at least, so a kernel-path session is not expired by mistake. */
function pollInterval(config: Config): number {
  return Math.max(50, Math.min(2000, config.idleTimeoutMs / 4));
}

export async function startProxy(config: Config, opts: StartOptions = {}): Promise<ProxyHandle> {
  const log = opts.log ?? createLogger(config.logLevel);
  // A worker's main thread has checked already (src/workers/pool.ts).
  if (config.fastPath === 'nftables' && opts.worker === undefined) {
    // Before anything is bound: say everything that is missing at once.
    const problems = await checkFastPath(systemProbes());
    if (problems.length > 0) throw new FastPathUnavailable(problems);
  }
  const clock = opts.clock ?? ((): number => performance.now());
  const backends = new BackendTable();
  const ports =
    config.upstreamPorts === undefined
      ? undefined
      : new PortPool(config.upstreamPorts[0], config.upstreamPorts[1], config.portQuarantineMs);

  let datapath!: Datapath;
  const transport = new UdpTransport({
    listen: config.listen,
    upstreamBind4: config.upstreamBind,
    upstreamBind6: config.upstreamBind6,
    socketBufferBytes: config.socketBufferBytes,
    reusePort: opts.reusePort ?? false,
    onClientDatagram: (buf, address, port) => datapath.onClientDatagram(buf, address, port),
    onListenError: (err) => log.error({ err: err.message }, 'listening socket error'),
  });
  const routing = createRoutingHistogram();
  let fastPath: NftFastPath | undefined;
  const handover = createHandoverHistogram();
  const kernel: KernelPathSource | undefined =
    config.fastPath === 'nftables'
      ? {
          get totals() {
            return fastPath?.totals ?? { packetsUp: 0, bytesUp: 0, packetsDown: 0, bytesDown: 0 };
          },
          get stats() {
            return fastPath?.stats ?? { transactions: 0, failures: 0 };
          },
          get kernelSessions() {
            return fastPath?.kernelSessions ?? 0;
          },
        }
      : undefined;
  datapath = new Datapath({
    transport,
    backends,
    ports,
    clock,
    log,
    options: config,
    onRouted: (ms, outcome) => {
      routing.observe({ outcome }, ms / 1000);
      opts.onRouted?.(ms, outcome);
    },
    ...opts.shared,
  });
  const registry = createRegistry(
    {
      counters: datapath.counters,
      sessions: datapath,
      activeSources: () => datapath.activeSources,
      freePorts: ports === undefined ? undefined : () => ports.available,
      openUpstreams: () => transport.openUpstreams,
      routing,
      ...(kernel === undefined ? {} : { kernel, handover }),
    },
    opts.processMetrics ?? true,
  );

  const discovery = opts.discovery ?? (await createDiscovery(discoveryOptions(config), { log, registry }));
  let bound = false;
  let draining = false;
  const ready = (): boolean => bound && backends.synced && !draining;

  const listen = await transport.start();
  if (config.fastPath === 'nftables') {
    const options = {
      listenAddress: listen.address,
      listenPort: listen.port,
      devices: ingressDevices(),
      batchWindowMs: 5,
      pollIntervalMs: pollInterval(config),
    };
    try {
      const deps: FastPathDeps = {
        nft: new NftCommand(),
        host: datapath,
        sources: new SourceAddresses(config.upstreamBind),
        nextHops: new NextHops(),
        clock,
        log,
        onHandover: (ms: number) => {
          handover.observe(ms / 1000);
          opts.onHandover?.(ms);
        },
      };
      // In a worker thread the main thread owns the table; this worker adds its own flows to it.
      fastPath =
        opts.worker === undefined
          ? await NftFastPath.start(options, deps)
          : NftFastPath.attach({ ...options, worker: opts.worker }, deps);
    } catch (err) {
      transport.close();
      throw err;
    }
    // Subscribed before discovery starts, so no session is established before it listens.
    datapath.addListener(fastPath);
  }
  bound = true;
  const sweeper = setInterval(() => {
    datapath.sweep();
    transport.sweep();
  }, sweepInterval(config));
  sweeper.unref();
  discovery.start((snapshot) => datapath.updateBackends(snapshot));

  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  if (config.admin !== undefined) {
    try {
      admin = await startAdminServer(config.admin.host, config.admin.port, registry, {
        ready,
        draining: () => draining,
      });
    } catch (err) {
      clearInterval(sweeper);
      await discovery.stop();
      await fastPath?.stop().catch(() => {});
      transport.close();
      throw err;
    }
  }
  if (opts.worker !== undefined) log.info({ listen }, 'worker started');
  else {
    log.info(
      {
        listen,
        admin: admin ? `${config.admin!.host}:${admin.port}` : 'off',
        discovery: discovery.kind,
        fastPath: config.fastPath,
      },
      'ice-ingress started',
    );
  }

  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    clearInterval(sweeper);
    await discovery.stop();
    // The table goes first (its last counts go into the sessions' close logs; in a worker thread:
    // its own flows, the main thread deletes the table): after that every datagram reaches the
    // sockets, which close next.
    if (fastPath !== undefined) {
      try {
        await fastPath.stop();
      } catch (err) {
        log.error({ err: (err as Error).message }, 'fast path: could not remove the nftables table');
      }
    }
    datapath.closeAll('shutdown');
    transport.close();
    if (admin !== undefined) {
      admin.server.closeAllConnections();
      await new Promise<void>((r) => admin!.server.close(() => r()));
    }
  };

  return {
    datapath,
    transport,
    ports,
    registry,
    log,
    fastPath,
    listen,
    adminPort: admin?.port,
    ready,
    async drain(ms: number): Promise<void> {
      draining = true;
      datapath.stopAccepting();
      log.info({ drainMs: ms, sessions: datapath.size }, 'draining');
      const deadline = performance.now() + ms;
      while (performance.now() < deadline && datapath.size > 0) {
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - performance.now()))));
      }
      await close();
    },
    close,
  };
}
