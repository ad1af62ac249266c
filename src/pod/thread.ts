import type { Logger } from 'pino';
import { BackendTable } from '../backends/backend-table.ts';
import type { Config } from '../config.ts';
import { Datapath, type DatapathDeps } from '../datapath/datapath.ts';
import { EnvironmentError } from '../defs/errors.ts';
import type { Clock, KernelMaps } from '../defs/interfaces.ts';
import { EbpfFastPath, openFlowMaps } from '../fastpath/ebpf/fast-path.ts';
import { openLibbpf } from '../fastpath/ebpf/libbpf.ts';
import { type FastPathDeps, type FastPathOptions, NftFastPath } from '../fastpath/fast-path.ts';
import type { KernelPath } from '../fastpath/kernel-path.ts';
import type { KernelTable } from '../fastpath/kernel-table.ts';
import { NftCommand } from '../fastpath/nft-runner.ts';
import { ingressDevices, NextHops } from '../fastpath/routes.ts';
import { SourceAddresses } from '../fastpath/source-address.ts';
import { UdpTransport } from '../io/udp.ts';
import { PortPool } from '../session/port-pool.ts';
import { createThreadPeers, type PeerThreadOptions, type ThreadPeers } from './thread-peers.ts';

/**
 * What one data-path thread does, written once for both ways a pod runs (docs/architecture.md,
 * "Layers"): the pod's only thread in one process, or each worker thread of the pool
 * (src/pod/worker-thread.ts). It builds the listening and upstream sockets, the data path and,
 * with `--fast-path nftables`, the thread's kernel fast path, and sweeps them; it has no admin
 * server, no discovery and no Prometheus registry (the pod's, src/pod/pod.ts).
 */

export interface ThreadOptions {
  readonly log: Logger;
  readonly clock: Clock;
  /** SO_REUSEPORT on the listening socket: the pool's worker threads share one address. */
  readonly reusePort: boolean;
  /**
   * With a fast path on, the thread's part in it. `--fast-path nftables`: its place at the table
   * (src/fastpath/table-role.ts), the pod's table itself (one process: its owner) or the worker's
   * id (a worker thread). `--fast-path ebpf`: the pod's maps and this thread's counter slots (the
   * pod owns the program in both cases; a worker's id only names it in the logs).
   */
  readonly kernel?:
    | { readonly table: KernelTable }
    | { readonly worker: number }
    | { readonly ebpf: KernelMaps; readonly worker?: number };
  /** Once per session whose owner was found: routing time and outcome. */
  readonly onRouted: (ms: number, outcome: string) => void;
  /** Once per session the kernel took over: ms from established to its elements in the kernel. */
  readonly onHandover: (ms: number) => void;
  /** A worker's shared limits, fair shares and hand-off (docs/workers.md); none in one process. */
  readonly shared?: Pick<DatapathDeps, 'budgets' | 'slots' | 'shares' | 'handoff'>;
  /** With `--peers`: this thread's place in the replica (docs/peers.md). */
  readonly peers?: PeerThreadOptions;
}

export interface DataThread {
  readonly datapath: Datapath;
  readonly transport: UdpTransport;
  /** The upstream port range, when one is configured. */
  readonly ports: PortPool | undefined;
  /** The kernel fast path, when `--fast-path nftables` or `ebpf`. */
  readonly fastPath: KernelPath | undefined;
  /** Where clients send (the bound listening address; port 0 resolved). */
  readonly listen: { address: string; port: number };
  /** The thread's end of the peer protocol, with `--peers`. */
  readonly peers: ThreadPeers | undefined;
  /** Stops the sweeps, the fast path (its last counts, then what is its own in the table), the
   * sessions and the sockets, in that order; idempotent. */
  stop(): Promise<void>;
}

/** Sweep period: probe timeouts and idle expiry are checked this often. */
function sweepInterval(config: Config): number {
  return Math.max(10, Math.min(1000, config.probeTimeoutMs / 4, config.idleTimeoutMs / 4));
}

/** Counter reads per idle timeout at least, so a kernel-path session is not expired by mistake. */
function pollInterval(config: Config): number {
  return Math.max(50, Math.min(2000, config.idleTimeoutMs / 4));
}

export async function startThread(config: Config, o: ThreadOptions): Promise<DataThread> {
  const { log, clock } = o;
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
    reusePort: o.reusePort,
    onClientDatagram: (buf, address, port) => datapath.onClientDatagram(buf, address, port),
    onListenError: (err) => log.error({ err: err.message }, 'listening socket error'),
  });
  const peers =
    o.peers === undefined ? undefined : createThreadPeers(config, o.peers, log, clock, () => datapath);
  datapath = new Datapath({
    transport,
    backends: new BackendTable(),
    ports,
    clock,
    log,
    options: config,
    onRouted: o.onRouted,
    ...o.shared,
    ...(peers === undefined ? {} : { peers: peers.node }),
  });
  let listen: { address: string; port: number };
  try {
    listen = await transport.start();
  } catch (err) {
    throw listenError(config, err as NodeJS.ErrnoException);
  }
  if (peers !== undefined) {
    try {
      await peers.start();
    } catch (err) {
      transport.close();
      throw err;
    }
    // Before the first backends, so it hears of every session (its tunnels follow them).
    datapath.addListener(peers.node);
  }

  let fastPath: KernelPath | undefined;
  if (o.kernel !== undefined && 'ebpf' in o.kernel) {
    try {
      fastPath = await startEbpf(config, o, o.kernel, datapath, listen);
    } catch (err) {
      transport.close();
      throw err;
    }
    datapath.addListener(fastPath);
  } else if (o.kernel !== undefined) {
    const options: FastPathOptions = {
      listenAddress: listen.address,
      listenPort: listen.port,
      devices: ingressDevices(),
      batchWindowMs: 5,
      pollIntervalMs: pollInterval(config),
    };
    const deps: FastPathDeps = {
      nft: new NftCommand(),
      host: datapath,
      sources: new SourceAddresses(config.upstreamBind),
      nextHops: new NextHops(),
      clock,
      log,
      onHandover: o.onHandover,
    };
    try {
      fastPath =
        'table' in o.kernel
          ? NftFastPath.owner(o.kernel.table, options, deps)
          : NftFastPath.attach({ ...options, worker: o.kernel.worker }, deps);
    } catch (err) {
      peers?.stop();
      transport.close();
      throw err;
    }
    // Subscribed before the first backends, so no session is established before it listens.
    datapath.addListener(fastPath);
  }
  const sweeper = setInterval(() => {
    datapath.sweep();
    transport.sweep();
  }, sweepInterval(config));
  sweeper.unref();

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      clearInterval(sweeper);
      // The fast path goes first (its last counts go into the sessions' close logs; then what is
      // its own in the table): after that every datagram reaches the sockets, which close next.
      if (fastPath !== undefined) {
        try {
          await fastPath.stop();
        } catch (err) {
          log.error({ err: (err as Error).message }, 'fast path: could not stop');
        }
      }
      // The other ends of its tunnels hear it first: they ask again instead of sending into a
      // closed socket.
      peers?.stop();
      datapath.closeAll('shutdown');
      transport.close();
    })();
    return stopped;
  };
  return { datapath, transport, ports, fastPath, listen, peers, stop };
}

/** The thread's eBPF fast path: its sessions' entries in the pod's maps (docs/fast-path.md, "eBPF"). */
function startEbpf(
  config: Config,
  o: ThreadOptions,
  k: { readonly ebpf: KernelMaps; readonly worker?: number },
  datapath: Datapath,
  listen: { address: string; port: number },
): Promise<EbpfFastPath> {
  const libbpf = openLibbpf();
  return EbpfFastPath.attach(
    {
      listenAddress: listen.address,
      listenPort: listen.port,
      pollIntervalMs: pollInterval(config),
      slots: k.ebpf.slots,
      ...(k.worker === undefined ? {} : { worker: k.worker }),
    },
    {
      maps: openFlowMaps(libbpf, k.ebpf),
      host: datapath,
      sources: new SourceAddresses(config.upstreamBind),
      nextHops: new NextHops(),
      ifindex: (dev) => libbpf.ifindex(dev),
      clock: o.clock,
      // CLOCK_MONOTONIC (libuv's hrtime), the clock of bpf_ktime_get_coarse_ns() (as of its last tick).
      monotonicNs: () => Number(process.hrtime.bigint()),
      log: o.log,
      onHandover: o.onHandover,
    },
  );
}

/** A listening socket that cannot bind names the flag (--listen) and the reason. */
function listenError(config: Config, err: NodeJS.ErrnoException): Error {
  const { host, port } = config.listen;
  const at = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return new EnvironmentError('ICE_INGRESS_LISTEN', `--listen ${at}: ${err.message}`);
}
