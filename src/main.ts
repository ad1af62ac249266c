import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import {
  createHandoverHistogram,
  createRegistry,
  createRoutingHistogram,
  type KernelPathSource,
} from './admin/metrics.ts';
import { startAdminServer } from './admin/server.ts';
import type { Config } from './config.ts';
import { createDiscovery } from './discovery/index.ts';
import type { DiscoverySource } from './discovery/types.ts';
import { NftFastPath } from './fastpath/fast-path.ts';
import { NftCommand } from './fastpath/nft-runner.ts';
import { checkFastPath, FastPathUnavailable, systemProbes } from './fastpath/preflight.ts';
import { SourceAddresses } from './fastpath/source-address.ts';
import { createLogger } from './log.ts';
import { Datapath } from './proxy/datapath.ts';
import { UdpTransport } from './proxy/udp.ts';
import { BackendTable } from './routing/backends.ts';
import { PortPool } from './session/port-pool.ts';

/**
 * The composition root: the only place that builds real sockets, clients, timers and the clock,
 * and wires them to the I/O-free data path.
 */

export interface ProxyHandle {
  readonly datapath: Datapath;
  readonly transport: UdpTransport;
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
  if (config.fastPath === 'nftables') {
    // Before anything is bound: say everything that is missing at once.
    const problems = await checkFastPath(systemProbes());
    if (problems.length > 0) throw new FastPathUnavailable(problems);
  }
  const clock = (): number => performance.now();
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
          handover,
        }
      : undefined;
  datapath = new Datapath({
    transport,
    backends,
    ports,
    clock,
    log,
    options: config,
    onRouted: (ms, outcome) => routing.observe({ outcome }, ms / 1000),
  });
  const registry = createRegistry(
    {
      counters: datapath.counters,
      sessions: datapath.registry,
      activeSources: () => datapath.admission.shares.active,
      freePorts: ports === undefined ? undefined : () => ports.available,
      openUpstreams: () => transport.openUpstreams,
      routing,
      ...(kernel === undefined ? {} : { kernel }),
    },
    opts.processMetrics ?? true,
  );

  const discovery =
    opts.discovery ??
    (await createDiscovery(
      {
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
      },
      { log, registry },
    ));
  let bound = false;
  let draining = false;
  const ready = (): boolean => bound && backends.synced && !draining;

  const listen = await transport.start();
  if (config.fastPath === 'nftables') {
    try {
      fastPath = await NftFastPath.start(
        {
          listenAddress: listen.address,
          listenPort: listen.port,
          upstreamPorts: config.upstreamPorts,
          batchWindowMs: 5,
          pollIntervalMs: pollInterval(config),
        },
        {
          nft: new NftCommand(),
          host: {
            touch: (s, now) => datapath.registry.touch(s, now),
            addKernelCounts: (s, c) =>
              datapath.registry.noteKernel(s, c.packetsUp, c.bytesUp, c.packetsDown, c.bytesDown),
          },
          sources: new SourceAddresses(config.upstreamBind),
          clock,
          log,
          onHandover: (ms) => handover.observe(ms / 1000),
        },
      );
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
  log.info(
    {
      listen,
      admin: admin ? `${config.admin!.host}:${admin.port}` : 'off',
      discovery: discovery.kind,
      fastPath: config.fastPath,
    },
    'ice-ingress started',
  );

  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    clearInterval(sweeper);
    await discovery.stop();
    // The table goes first (its last counts go into the sessions' close logs): after that every
    // datagram reaches the sockets, which close next.
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
    registry,
    log,
    fastPath,
    listen,
    adminPort: admin?.port,
    ready,
    async drain(ms: number): Promise<void> {
      draining = true;
      datapath.stopAccepting();
      log.info({ drainMs: ms, sessions: datapath.table.size }, 'draining');
      const deadline = performance.now() + ms;
      while (performance.now() < deadline && datapath.table.size > 0) {
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - performance.now()))));
      }
      await close();
    },
    close,
  };
}
