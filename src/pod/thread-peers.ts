import type { Logger } from 'pino';
import { NEGATIVE_SLOTS, SOURCE_SLOTS } from '../admission/admission.ts';
import { SourceShares } from '../admission/source-shares.ts';
import { TokenBucket } from '../admission/token-bucket.ts';
import { NegativeUfrags } from '../admission/ufrag-caches.ts';
import type { Config } from '../config.ts';
import type { Datapath } from '../datapath/datapath.ts';
import { EnvironmentError } from '../defs/errors.ts';
import type { Clock, FlowSession } from '../defs/interfaces.ts';
import { UdpPeerSocket } from '../io/peer-socket.ts';
import { PeerNode } from '../peers/node.ts';
import type { Instance } from '../peers/wire.ts';

/**
 * What one data-path thread needs to talk to the other replicas (docs/peers.md): its peer socket
 * (`--peer-port` + its worker id), its end of the peer protocol wired to its data path, the timer
 * that ends query rounds on time and the sweep (pings, silent peers, idle tunnels). Built by
 * src/pod/thread.ts before the data path, which it is handed as the forwarder's PeerRouting.
 */

export interface PeerThreadOptions {
  /** This replica's random instance id: one for all its threads. */
  readonly instance: Instance;
  /** This thread's worker id (0 in one process) and the pod's count of data-path threads. */
  readonly worker: number;
  readonly workers: number;
  /** Each query round's duration (the pod's histogram). */
  readonly onRound: (ms: number) => void;
}

export interface ThreadPeers {
  readonly node: PeerNode<FlowSession>;
  /** Binds the peer socket; rejects naming --peer-port. */
  start(): Promise<void>;
  /** Tells the other ends their tunnels are over, stops the timers, closes the socket. */
  stop(): void;
}

/** Sweep period: pings are once a second, silence counts after three. */
const SWEEP_MS = 250;
/** The shares of the fair half add up to this much of its rate (docs/peers.md, "Receiver"). */
const SHARE_OF_FAIR = 0.9;
/** Rounds a source may ask at once when it activates. */
const ACTIVATION_ROUNDS = 2;

export function createThreadPeers(
  config: Config,
  o: PeerThreadOptions,
  log: Logger,
  clock: Clock,
  datapath: () => Datapath,
): ThreadPeers {
  const port = config.peerPort + o.worker;
  const host = config.podIp ?? (config.listen.host.includes(':') ? '::' : '0.0.0.0');
  let node!: PeerNode<FlowSession>;
  const socket = new UdpPeerSocket({
    host,
    port,
    socketBufferBytes: config.socketBufferBytes,
    onDatagram: (buf, address, p) => node.onDatagram(buf, address, p),
    onError: (err) => log.warn({ err: err.message }, 'peer socket error'),
  });
  // This thread's part of --peer-query-rate, half open and half fair; the open half holds the
  // burst (--peer-query-burst): a replica removed from the balancer moves its flows here at once,
  // and a flood, which drains it, then costs the peers only the sustained rate (docs/peers.md).
  const rate = config.peerQueryRate / o.workers;
  const burst = Math.max(rate / 2, config.peerQueryBurst / o.workers);
  const now = clock();
  let timer: NodeJS.Timeout | undefined;
  let timerAt = Number.POSITIVE_INFINITY;
  node = new PeerNode<FlowSession>({
    self: o.instance,
    selfAddress: config.podIp,
    selfPort: config.peerPort,
    worker: o.worker,
    workers: o.workers,
    socket,
    // The data path is built after this node (it is handed the node): reached when called.
    receiverHost: {
      sendToClient: (buf, p, address) => datapath().sendToClient(buf, p, address),
      local: (buf, address, p) => datapath().local(buf, address, p),
      claimed: (address, p) => datapath().claimed(address, p),
    },
    ownerHost: {
      sessionOfFlow: (address, p, username) => datapath().sessionOfFlow(address, p, username),
      sessionOfUsername: (username) => datapath().sessionOfUsername(username),
      routeOf: (address, p) => datapath().routeOf(address, p),
      tunneled: (buf, address, p, route) => datapath().tunneled(buf, address, p, route),
    },
    clock,
    log: log.child({ component: 'peers' }),
    shares: new SourceShares(
      SOURCE_SLOTS,
      [(SHARE_OF_FAIR * rate) / 2, (SHARE_OF_FAIR * rate) / 2],
      undefined,
      ACTIVATION_ROUNDS,
    ),
    open: new TokenBucket(rate / 2, burst, now),
    fair: new TokenBucket(rate / 2, rate / 2, now),
    negative: new NegativeUfrags(NEGATIVE_SLOTS, config.peerNegativeTtlMs),
    timeoutMs: config.peerTimeoutMs,
    idleMs: config.idleTimeoutMs,
    capacity: config.maxSessions,
    onRound: o.onRound,
    wake: (at) => {
      // One timer, at the earliest time asked for: a round's repeat or end.
      if (at >= timerAt) return;
      clearTimeout(timer);
      timerAt = at;
      timer = setTimeout(
        () => {
          timer = undefined;
          timerAt = Number.POSITIVE_INFINITY;
          node.tick(clock());
        },
        Math.max(0, at - clock()),
      );
      timer.unref();
    },
  });
  let sweeper: NodeJS.Timeout | undefined;
  return {
    node,
    async start(): Promise<void> {
      try {
        await socket.start();
      } catch (err) {
        const at = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
        throw new EnvironmentError('ICE_INGRESS_PEER_PORT', `--peer-port ${at}: ${(err as Error).message}`);
      }
      sweeper = setInterval(() => node.sweep(clock()), SWEEP_MS);
      sweeper.unref();
    },
    stop(): void {
      clearInterval(sweeper);
      clearTimeout(timer);
      node.close();
      socket.close();
    },
  };
}
