import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createRegistry, createRoutingHistogram } from './admin/metrics.ts';
import { startAdminServer } from './admin/server.ts';
import type { Config } from './config.ts';
import { createDiscovery } from './discovery/index.ts';
import type { DiscoverySource } from './discovery/types.ts';
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

export async function startProxy(config: Config, opts: StartOptions = {}): Promise<ProxyHandle> {
  const log = opts.log ?? createLogger(config.logLevel);
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
      transport.close();
      throw err;
    }
  }
  log.info(
    { listen, admin: admin ? `${config.admin!.host}:${admin.port}` : 'off', discovery: discovery.kind },
    'ice-ingress started',
  );

  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    clearInterval(sweeper);
    await discovery.stop();
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
