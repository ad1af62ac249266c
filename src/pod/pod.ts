import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Histogram, Registry } from 'prom-client';
import {
  createHandoverHistogram,
  createPeerRoundHistogram,
  createRegistry,
  createRoutingHistogram,
  registerDiscoveryMetrics,
  registerPeerMetrics,
  registerWorkerMetrics,
} from '../admin/metrics.ts';
import { startAdminServer } from '../admin/server.ts';
import type { Config } from '../config.ts';
import type { Datapath } from '../datapath/datapath.ts';
import { createDiscovery, type DiscoveryOptions } from '../discovery/index.ts';
import { createPeerDiscovery } from '../discovery/peers.ts';
import type { DiscoverySource } from '../discovery/types.ts';
import { openLibbpf } from '../fastpath/ebpf/libbpf.ts';
import {
  checkEbpf,
  defaultObjectPath,
  EbpfUnavailable,
  systemEbpfProbes,
} from '../fastpath/ebpf/preflight.ts';
import { EbpfProgram } from '../fastpath/ebpf/program.ts';
import type { KernelPath } from '../fastpath/kernel-path.ts';
import { KernelTable } from '../fastpath/kernel-table.ts';
import { NftCommand } from '../fastpath/nft-runner.ts';
import { checkFastPath, FastPathUnavailable, systemProbes } from '../fastpath/preflight.ts';
import { ingressDevices } from '../fastpath/routes.ts';
import type { UdpTransport } from '../io/udp.ts';
import { createLogger } from '../log.ts';
import { PeerState } from '../peers/peer-set.ts';
import { type Instance, newInstance } from '../peers/wire.ts';
import type { PortPool } from '../session/port-pool.ts';
import { resolveWorkers } from '../workers/cpus.ts';
import { type DataPlane, startWorkerPool } from '../workers/pool.ts';
import { startThread } from './thread.ts';

/**
 * The composition root (docs/architecture.md, "Layers"): what a pod does once, written once for
 * both ways it runs — one process (the data path in this thread, src/pod/thread.ts) or a pool of
 * worker threads (src/workers/pool.ts, each running src/pod/worker-thread.ts). In order: the fast
 * path's preflight, the data-path threads (bound), the one nftables table, the Prometheus
 * registry, discovery, the admin server; at the end, drain and close in reverse.
 */

export interface StartOptions {
  readonly log?: Logger;
  /** Replaces the source chosen by `config.discovery` (tests). */
  readonly discovery?: DiscoverySource;
  readonly processMetrics?: boolean;
  /** Replaces the worker threads' entry module (tests: a fixture that wraps the real one). */
  readonly workerEntry?: URL;
}

/** What the CLI needs from a running pod, one process or a pool of worker threads. */
export interface IngressHandle {
  readonly registry: Registry;
  readonly log: Logger;
  readonly listen: { address: string; port: number };
  /** Bound admin port, or undefined if admin is off. */
  readonly adminPort: number | undefined;
  /** Data-path threads (1 = this thread, no workers). */
  readonly workers: number;
  ready(): boolean;
  /** SIGTERM behaviour: not ready, no new sessions, relay for `ms`, then close. */
  drain(ms: number): Promise<void>;
  /** Closes everything at once; idempotent. */
  close(): Promise<void>;
  /** Settles if a worker thread dies: the pod must restart rather than run with a hole. */
  readonly failed: Promise<Error>;
}

/** How long a replica waits, at most, for every listed peer to answer before it turns ready. */
const PEERS_HEARD_MS = 3000;

/** One process: the pod, and its one data-path thread's parts (tests, the demo). */
export interface ProxyHandle extends IngressHandle {
  readonly datapath: Datapath;
  readonly transport: UdpTransport;
  /** The upstream port range, when one is configured. */
  readonly ports: PortPool | undefined;
  /** The kernel fast path, when `--fast-path nftables` or `ebpf`. */
  readonly fastPath: KernelPath | undefined;
}

/** What the pod hands the plane it starts. */
interface PodParts {
  readonly log: Logger;
  /** The one nftables table, with `--fast-path nftables`; created once the plane is bound. */
  readonly table: KernelTable | undefined;
  /** The eBPF program and its maps, with `--fast-path ebpf`; loaded before the plane starts. */
  readonly ebpf: EbpfProgram | undefined;
  readonly routing: Histogram<'outcome'>;
  readonly handover: Histogram;
  /** With `--peers`: this replica's instance id, and the query rounds' histogram (docs/peers.md). */
  readonly peers: { readonly instance: Instance; readonly rounds: Histogram } | undefined;
}

/** The discovery options of a config. */
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

/**
 * Starts the pod with `config.workers` data-path threads: 1 (the default) is this thread alone,
 * exactly as {@link startProxy}; more start worker threads that share the listening address
 * (docs/workers.md).
 */
export async function startIngress(config: Config, opts: StartOptions = {}): Promise<IngressHandle> {
  const n = resolveWorkers(config.workers);
  if (n <= 1) return startProxy(config, opts);
  const { handle } = await startPod(config, opts, n, (parts) =>
    startWorkerPool(config, n, {
      log: parts.log,
      workerEntry: opts.workerEntry ?? WORKER_ENTRY,
      fastPath: parts.table !== undefined || parts.ebpf !== undefined,
      ...(parts.ebpf === undefined ? {} : { ebpf: (worker: number) => parts.ebpf!.handles(worker) }),
      onRouted: (ms, outcome) => parts.routing.observe({ outcome }, ms / 1000),
      onHandover: (ms) => parts.handover.observe(ms / 1000),
      ...(parts.peers === undefined
        ? {}
        : {
            peers: {
              instance: parts.peers.instance,
              onRound: (ms: number) => parts.peers!.rounds.observe(ms / 1000),
            },
          }),
    }),
  );
  return handle;
}

/** One process: the pod with its data path in this thread. */
export async function startProxy(config: Config, opts: StartOptions = {}): Promise<ProxyHandle> {
  const { handle, plane } = await startPod(config, opts, 1, async (parts) => {
    const p = parts.peers;
    const thread = await startThread(config, {
      log: parts.log,
      clock: () => performance.now(),
      reusePort: false,
      ...(parts.table !== undefined
        ? { kernel: { table: parts.table } }
        : parts.ebpf !== undefined
          ? { kernel: { ebpf: parts.ebpf.handles(0) } }
          : {}),
      onRouted: (ms, outcome) => parts.routing.observe({ outcome }, ms / 1000),
      onHandover: (ms) => parts.handover.observe(ms / 1000),
      ...(p === undefined
        ? {}
        : {
            peers: {
              instance: p.instance,
              worker: 0,
              workers: 1,
              onRound: (ms: number) => p.rounds.observe(ms / 1000),
            },
          }),
    });
    const { datapath, transport, ports, fastPath } = thread;
    const node = thread.peers?.node;
    return {
      thread,
      listen: thread.listen,
      workers: 1,
      metrics: {
        counters: datapath.counters,
        sessions: datapath,
        activeSources: () => datapath.activeSources,
        freePorts: ports === undefined ? undefined : () => ports.available,
        openUpstreams: () => transport.openUpstreams,
        ...(fastPath === undefined ? {} : { kernel: fastPath }),
      },
      applyBackends: (specs) => datapath.updateBackends(specs),
      synced: () => datapath.synced,
      applyPeers: (peers) => node?.updatePeers(peers),
      peersHeard: () => node === undefined || node.set.states()[PeerState.Unknown] === 0,
      ...(node === undefined
        ? {}
        : {
            peerMetrics: {
              counters: () => node.counters,
              tunnels: () => [node.receiver.tunnels, node.owner.tunnels] as const,
              peers: () => node.set.states(),
            },
          }),
      stopAccepting: () => {
        datapath.stopAccepting();
        node?.setDraining();
      },
      sessions: () => datapath.size,
      settleMs: 0,
      stop: () => thread.stop(),
      failed: new Promise<Error>(() => {}),
    };
  });
  const { datapath, transport, ports, fastPath } = plane.thread;
  return { ...handle, datapath, transport, ports, fastPath };
}

/** The worker threads' entry next to this module: .ts from source, .js in the built image. */
const WORKER_ENTRY = new URL(
  import.meta.url.endsWith('.ts') ? './worker-thread.ts' : './worker-thread.js',
  import.meta.url,
);

async function startPod<P extends DataPlane>(
  config: Config,
  opts: StartOptions,
  threads: number,
  startPlane: (parts: PodParts) => Promise<P>,
): Promise<{ handle: IngressHandle; plane: P }> {
  const log = opts.log ?? createLogger(config.logLevel);
  let table: KernelTable | undefined;
  if (config.fastPath === 'nftables') {
    // Before anything is bound: say everything that is missing at once.
    const problems = await checkFastPath(systemProbes());
    if (problems.length > 0) throw new FastPathUnavailable(problems);
    table = new KernelTable(new NftCommand(), log);
  }
  if (config.fastPath === 'ebpf') {
    // Before anything is bound, as for nftables; then the program, so the threads can open its
    // maps. It passes every datagram to the stack until a thread writes a session's entries.
    const problems = await checkEbpf(systemEbpfProbes(), defaultObjectPath());
    if (problems.length > 0) throw new EbpfUnavailable(problems);
  }
  // Before anything is bound: bad discovery input (a --kubeconfig that is no kubeconfig) stops
  // start-up with nothing to undo.
  const observed =
    opts.discovery === undefined ? await createDiscovery(discoveryOptions(config), { log }) : undefined;
  const discovery: DiscoverySource = opts.discovery ?? observed!;
  const peerDiscovery = await createPeerDiscovery(
    {
      source: config.peers,
      peerPort: config.peerPort,
      kubeconfig: config.kubeconfig,
      dnsIntervalMs: config.dnsIntervalMs,
    },
    log,
  );
  const routing = createRoutingHistogram();
  const handover = createHandoverHistogram();
  const peers =
    peerDiscovery === undefined ? undefined : { instance: newInstance(), rounds: createPeerRoundHistogram() };
  let ebpf: EbpfProgram | undefined;
  if (config.fastPath === 'ebpf') {
    try {
      ebpf = EbpfProgram.load(
        {
          objectPath: defaultObjectPath(),
          maxSessions: config.maxSessions,
          owners: threads,
          linkPollMs: 1000,
        },
        { libbpf: openLibbpf(), devices: () => ingressDevices(), log },
      );
    } catch (err) {
      // The kernel refused the object (too old a kernel, a verifier refusal): one line, exit 1.
      throw new EbpfUnavailable([(err as Error).message]);
    }
  }
  let plane: P;
  try {
    plane = await startPlane({ log, table, ebpf, routing, handover, peers });
  } catch (err) {
    ebpf?.stop();
    throw err;
  }
  const listen = plane.listen;
  if (table !== undefined) {
    // Once bound (the rules match the listening address), before the first backends (so before
    // any session): replaces a stale table (docs/fast-path.md).
    try {
      await table.create({
        listenAddress: listen.address,
        listenPort: listen.port,
        devices: ingressDevices(),
      });
    } catch (err) {
      await plane.stop();
      throw err;
    }
  }

  const registry = createRegistry(
    { ...plane.metrics, routing, ...(table === undefined && ebpf === undefined ? {} : { handover }) },
    opts.processMetrics ?? true,
  );
  if (plane.workerMetrics !== undefined) registerWorkerMetrics(registry, plane.workerMetrics);
  if (observed !== undefined) registerDiscoveryMetrics(registry, observed);
  if (plane.peerMetrics !== undefined && peers !== undefined)
    registerPeerMetrics(registry, plane.peerMetrics, peers.rounds);
  discovery.start((specs) => plane.applyBackends(specs));
  // The peers: before the first ready, every listed one answered a ping, or PEERS_HEARD_MS passed
  // (a dead one in a static list must not keep a replica unready): a new replica in a rolling
  // update can ask about the flows the balancer is about to move to it.
  let peersAt: number | undefined;
  let peerList: readonly string[] = [];
  peerDiscovery?.start((specs) => {
    peersAt ??= performance.now();
    const next = specs.map((p) => `${p.address}:${p.port}`);
    const added = next.filter((x) => !peerList.includes(x));
    const removed = peerList.filter((x) => !next.includes(x));
    if (added.length + removed.length > 0) log.info({ added, removed, total: next.length }, 'peers updated');
    peerList = next;
    plane.applyPeers(specs);
  });
  const peersReady = (): boolean =>
    peerDiscovery === undefined ||
    (peersAt !== undefined && (plane.peersHeard() || performance.now() - peersAt >= PEERS_HEARD_MS));

  let draining = false;
  const started = (): boolean => plane.synced() && peersReady();
  const ready = (): boolean => !draining && started();
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  if (config.admin !== undefined) {
    try {
      admin = await startAdminServer(config.admin.host, config.admin.port, registry, {
        started,
        draining: () => draining,
        servingWhileDraining: config.drainReadiness === 'serving',
      });
    } catch (err) {
      await discovery.stop();
      await peerDiscovery?.stop();
      await plane.stop();
      await table?.delete();
      ebpf?.stop();
      throw err;
    }
  }
  log.info(
    {
      listen,
      admin: admin ? `${config.admin!.host}:${admin.port}` : 'off',
      discovery: discovery.kind,
      ...(peerDiscovery === undefined ? {} : { peers: peerDiscovery.kind, peerPort: config.peerPort }),
      ...(plane.workers > 1 ? { workers: plane.workers } : {}),
      fastPath: config.fastPath,
    },
    'ice-ingress started',
  );

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      await discovery.stop();
      await peerDiscovery?.stop();
      // Each thread removes its own from the table (or the maps) before its sockets close; the
      // table (or the program) goes last.
      await plane.stop();
      await table?.delete();
      ebpf?.stop();
      if (admin !== undefined) {
        admin.server.closeAllConnections();
        await new Promise<void>((r) => admin!.server.close(() => r()));
      }
    })();
    return closed;
  };

  const handle: IngressHandle = {
    registry,
    log,
    listen,
    adminPort: admin?.port,
    workers: plane.workers,
    ready,
    failed: plane.failed,
    async drain(ms: number): Promise<void> {
      draining = true;
      plane.stopAccepting();
      log.info({ drainMs: ms, sessions: plane.sessions() }, 'draining');
      const deadline = performance.now() + ms;
      if (plane.settleMs > 0) await new Promise((r) => setTimeout(r, Math.min(ms, plane.settleMs)));
      let failed = false;
      void plane.failed.then(() => {
        failed = true;
      });
      while (performance.now() < deadline && plane.sessions() > 0 && !failed) {
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - performance.now()))));
      }
      await close();
    },
    close,
  };
  return { handle, plane };
}
