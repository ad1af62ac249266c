import type {
  FlowEndpoint,
  OwnerHost,
  PeerLog,
  PeerRoute,
  PeerRouting,
  PeerSocket,
  ReceiverHost,
} from '../defs/interfaces.ts';
import type { UsernameView } from '../stun/parse.ts';
import { PeerCounters, PeerDrop } from './counters.ts';
import { PeerOwner } from './owner.ts';
import { type Peer, PeerSet, type PeerSpec } from './peer-set.ts';
import { PeerReceiver, type ReceiverPolicy } from './receiver.ts';
import {
  type Answer,
  BadVersion,
  controlLength,
  dataGen,
  dataSlot,
  decodeAnswer,
  decodeHeartbeat,
  decodeQuery,
  type Heartbeat,
  type Instance,
  instanceHi,
  instanceLo,
  MsgType,
  Owned,
  peekType,
  type Query,
  ReleaseOf,
  releaseGen,
  releaseOf,
  releaseSlot,
} from './wire.ts';

/**
 * One data-path thread's end of the peer protocol (docs/peers.md): its peer set, its receiver side
 * (flows it receives and others own), its owner side (its sessions' flows that others receive),
 * and the dispatch of what arrives on its peer socket. I/O-free: a socket, a clock and the data
 * path's hosts are injected; the composition root feeds it datagrams, peer snapshots and ticks.
 *
 * What a peer trusts (docs/peers.md, "What a peer trusts"): a datagram on the peer port counts
 * only from a listed peer's address and peer ports; a tunnel datagram only with a token this side
 * minted for that very peer and port; anything else is dropped and counted by reason.
 */

export interface PeerNodeOptions<S>
  extends Omit<ReceiverPolicy, 'maxInflight' | 'holdPerFlow' | 'holdMax'>,
    Partial<Pick<ReceiverPolicy, 'maxInflight' | 'holdPerFlow' | 'holdMax'>> {
  readonly self: Instance;
  readonly selfAddress: string | undefined;
  readonly selfPort: number;
  /** This thread's worker id (0 in one process): its socket is on selfPort + worker. */
  readonly worker?: number;
  readonly workers: number;
  readonly socket: PeerSocket;
  readonly receiverHost: ReceiverHost;
  readonly ownerHost: OwnerHost<S>;
  readonly clock: () => number;
  readonly log: PeerLog;
}

/** Rounds in flight at most, held datagrams per flow and in all (docs/peers.md, "Receiver"). */
export const MAX_INFLIGHT = 4096;
export const HOLD_PER_FLOW = 8;
export const HOLD_MAX = 1024;
/** A tunnel the owner minted and the receiver never used ends after this long. */
export const PENDING_MS = 10_000;

export class PeerNode<S extends object> implements PeerRouting {
  readonly counters = new PeerCounters();
  readonly set: PeerSet;
  readonly receiver: PeerReceiver;
  readonly owner: PeerOwner<S>;
  readonly #hb: Heartbeat = { seq: 0, workers: 1, flags: 0 };
  readonly #query: Query = { slot: 0, gen: 0, address: '', port: 0, username: undefined };
  readonly #answer: Answer = { slot: 0, gen: 0, owned: Owned.None, ownerSlot: 0, ownerGen: 0 };
  readonly #ownPort: number;
  #swept = Number.NEGATIVE_INFINITY;

  constructor(o: PeerNodeOptions<S>) {
    const counters = this.counters;
    this.#ownPort = o.selfPort + (o.worker ?? 0);
    this.set = new PeerSet({
      self: o.self,
      selfAddress: o.selfAddress,
      selfPort: o.selfPort,
      workers: o.workers,
      socket: o.socket,
      counters,
      clock: o.clock,
      log: o.log,
      onGone: (p) => this.#peerGone(p),
    });
    this.receiver = new PeerReceiver({
      maxInflight: MAX_INFLIGHT,
      holdPerFlow: HOLD_PER_FLOW,
      holdMax: HOLD_MAX,
      ...o,
      peers: this.set,
      host: o.receiverHost,
      counters,
    });
    this.owner = new PeerOwner<S>({
      self: o.self,
      socket: o.socket,
      host: o.ownerHost,
      counters,
      clock: o.clock,
      log: o.log,
      capacity: o.capacity,
      idleMs: o.idleMs,
      pendingMs: PENDING_MS,
    });
  }

  // --- The forwarder's view (PeerRouting) --------------------------------------------------------

  divert(buf: Buffer, address: string, port: number): boolean {
    return this.receiver.divert(buf, address, port);
  }

  ask(buf: Buffer, address: string, port: number, view: UsernameView | undefined): boolean {
    return this.receiver.ask(buf, address, port, view);
  }

  // --- Flow events of the data path (a FlowListener when S is its FlowSession) ---------------------

  routeChanged(s: S, ep: FlowEndpoint, old: PeerRoute | undefined): void {
    this.owner.rerouted(s, old, ep.via);
  }

  endpointLeft(_s: S, ep: FlowEndpoint): void {
    if (ep.via !== undefined) this.owner.left(ep.via);
  }

  closed(s: S): void {
    this.owner.sessionClosed(s);
  }

  // --- The composition root's view ----------------------------------------------------------------

  /** A snapshot of the peer source. */
  updatePeers(specs: readonly PeerSpec[]): { added: string[]; removed: string[] } {
    return this.set.update(specs);
  }

  /** Pings and pongs say "draining" from now on; sessions, tunnels and answers go on. */
  setDraining(): void {
    this.set.setDraining();
  }

  /** Rounds due (call when woken, see `wake`). */
  tick(now: number): void {
    this.receiver.tick(now);
  }

  /**
   * Heartbeats and silent peers (call every few hundred ms); idle tunnels once a second (a walk of
   * the tunnel tables, for timeouts counted in seconds).
   */
  sweep(now: number): void {
    this.set.heartbeat(now);
    if (now - this.#swept < 1000) return;
    this.#swept = now;
    this.receiver.sweep(now);
    this.owner.sweep(now);
  }

  /** Ends every tunnel, telling the other ends (this replica stops). */
  close(): void {
    this.receiver.closeAll();
    this.owner.closeAll();
  }

  /** A datagram on the peer socket. Never throws; what does not fit is counted by reason. */
  onDatagram(buf: Buffer, address: string, port: number): void {
    const c = this.counters;
    const type = peekType(buf);
    if (type < 0) {
      c.drops[type === BadVersion ? PeerDrop.Version : PeerDrop.Malformed]!++;
      return;
    }
    const peer = this.set.find(address, port);
    if (peer === undefined) {
      c.drops[PeerDrop.UnknownPeer]!++;
      return;
    }
    // Data first: the tunnel's hot path.
    if (type === MsgType.Up) {
      this.owner.onUp(buf, dataSlot(buf), dataGen(buf), peer, port);
      return;
    }
    if (type === MsgType.Down) {
      this.receiver.onDown(buf, dataSlot(buf), dataGen(buf), peer, port);
      return;
    }
    // Control: one message, or several back to back (wire.ts, controlLength).
    const len = controlLength(buf, 0);
    if (len === buf.length) {
      this.#control(buf, type, peer, port);
      return;
    }
    for (let off = 0; off < buf.length; ) {
      const n = controlLength(buf, off);
      if (n < 0) {
        c.drops[n === BadVersion ? PeerDrop.Version : PeerDrop.Malformed]!++;
        return;
      }
      this.#control(buf.subarray(off, off + n), buf[off + 3]!, peer, port);
      off += n;
    }
  }

  /** One control message from a known peer. */
  #control(buf: Buffer, type: number, peer: Peer, port: number): void {
    const c = this.counters;
    const hi = instanceHi(buf);
    const lo = instanceLo(buf);
    if (this.set.isSelf(hi, lo)) {
      // Our own datagram: the peer list names this replica. A ping from another of its threads
      // gets a pong, so that thread learns it too (it pinged our port, not its own).
      c.drops[PeerDrop.Self]!++;
      if (type === MsgType.Ping && port !== this.#ownPort && decodeHeartbeat(buf, this.#hb))
        this.set.heard(peer, type, this.#hb, hi, lo, port);
      this.set.markSelf(peer);
      return;
    }
    switch (type) {
      case MsgType.Ping:
      case MsgType.Pong:
        if (decodeHeartbeat(buf, this.#hb)) this.set.heard(peer, type, this.#hb, hi, lo, port);
        else c.drops[PeerDrop.Malformed]!++;
        return;
      case MsgType.Query:
        if (decodeQuery(buf, this.#query)) this.owner.onQuery(this.#query, peer, port);
        else c.drops[PeerDrop.Malformed]!++;
        return;
      case MsgType.Answer:
        if (decodeAnswer(buf, this.#answer)) this.receiver.onAnswer(this.#answer, peer, port);
        else c.drops[PeerDrop.Malformed]!++;
        return;
      case MsgType.Release: {
        const which = releaseOf(buf);
        if (which === ReleaseOf.Receiving) this.receiver.onRelease(releaseSlot(buf), releaseGen(buf), peer);
        else if (which === ReleaseOf.Owning) this.owner.onRelease(releaseSlot(buf), releaseGen(buf), peer);
        else c.drops[PeerDrop.Malformed]!++;
        return;
      }
      default:
        c.drops[PeerDrop.Malformed]!++;
    }
  }

  #peerGone(p: Peer): void {
    this.receiver.peerGone(p);
    this.owner.peerGone(p);
  }
}
