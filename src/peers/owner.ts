import type { OwnerHost, PeerLog, PeerRoute, PeerSocket } from '../defs/interfaces.ts';
import {
  ANSWER_LABELS,
  type PeerCounters,
  PeerDrop,
  TUNNEL_CLOSE_LABELS,
  TunnelClose,
  TunnelDir,
} from './counters.ts';
import type { Peer } from './peer-set.ts';
import { TokenTable } from './tokens.ts';
import {
  DATA_HEADER,
  dataHeader,
  encodeAnswer,
  encodeRelease,
  type Instance,
  MsgType,
  Owned,
  type Query,
  ReleaseOf,
} from './wire.ts';

/**
 * The owning side (docs/peers.md, "Owner"): this replica holds a session, and another replica
 * receives one of its client's flows. It answers queries from its own sessions only — by client
 * 5-tuple, and for a check also by ufrag pair — never from the flows it itself tunnels to others
 * (an owner never tunnels a tunneled flow onwards: no loops). A "mine" mints a tunnel token; the
 * receiver's datagrams with that token go into the data path as the client's own, and the
 * session's datagrams for that client go back through the tunnel ({@link PeerRoute}).
 *
 * A tunnel is pending until its first datagram (a second owner, or a repeated query, may never be
 * used: the receiver releases it, or it expires), then active until the receiver releases it, the
 * session ends, the flow reaches this replica another way, or it idles out. Joining a session is
 * still the data path's integrity gate: a tunneled check of a new 5-tuple joins only on the
 * backend's Binding success, exactly as on one replica.
 */

export interface OwnerOptions<S> {
  readonly self: Instance;
  readonly socket: PeerSocket;
  readonly host: OwnerHost<S>;
  readonly counters: PeerCounters;
  readonly clock: () => number;
  readonly log: PeerLog;
  /** Tunnels at most (pending and active). */
  readonly capacity: number;
  /** An active tunnel with no datagram for this long ends (`--idle-timeout`). */
  readonly idleMs: number;
  /** A pending tunnel that carried nothing for this long ends. */
  readonly pendingMs: number;
}

const TunnelState = { Pending: 0, Active: 1, Closed: 2 } as const;
type TunnelState = (typeof TunnelState)[keyof typeof TunnelState];

export class OwnerTunnel<S extends object> implements PeerRoute {
  state: TunnelState = TunnelState.Pending;
  /** Its token, set once it has a slot. */
  slot = 0;
  gen = 0;
  /** The session it serves (an ICE restart may move its endpoint to another). */
  session: S;
  /** The client 5-tuple the receiver asked about. */
  readonly address: string;
  readonly port: number;
  readonly peerRef: Peer;
  /** The receiver's socket (its worker's peer port) and its token. */
  readonly peerPort: number;
  readonly receiverSlot: number;
  readonly receiverGen: number;
  readonly down: Buffer;
  readonly createdAt: number;
  lastSeen: number;
  packetsUp = 0;
  packetsDown = 0;
  readonly #owner: PeerOwner<S>;

  constructor(owner: PeerOwner<S>, session: S, q: Query, peer: Peer, peerPort: number, now: number) {
    this.#owner = owner;
    this.session = session;
    this.address = q.address;
    this.port = q.port;
    this.peerRef = peer;
    this.peerPort = peerPort;
    this.receiverSlot = q.slot;
    this.receiverGen = q.gen;
    this.down = dataHeader(MsgType.Down, q.slot, q.gen);
    this.createdAt = now;
    this.lastSeen = now;
  }

  get peer(): string {
    return this.peerRef.name;
  }

  get open(): boolean {
    return this.state !== TunnelState.Closed;
  }

  send(buf: Uint8Array): void {
    this.#owner.sendDown(this, buf);
  }
}

export class PeerOwner<S extends object> {
  readonly #o: OwnerOptions<S>;
  readonly #table: TokenTable<OwnerTunnel<S>>;
  /** Tunnels by session, so a session's end frees them in O(its tunnels). */
  readonly #bySession = new Map<S, OwnerTunnel<S>[]>();
  #active = 0;

  constructor(o: OwnerOptions<S>) {
    this.#o = o;
    this.#table = new TokenTable(o.capacity);
  }

  /** Tunnels open now (pending and active). */
  get tunnels(): number {
    return this.#table.size;
  }

  get active(): number {
    return this.#active;
  }

  // --- From peers ---------------------------------------------------------------------------------

  onQuery(q: Query, peer: Peer, fromPort: number): void {
    const o = this.#o;
    // A check's ufrag pair first: a session it names is the flow's, whatever the 5-tuple was here
    // before — a NAT that lost its mappings hands one client's old port to another client, so a
    // 5-tuple known here may now carry another session's check. Only a pair no session here has
    // (an ICE restart) falls back to the 5-tuple's session.
    let owned: Owned = Owned.Ufrag;
    let s = q.username === undefined ? undefined : o.host.sessionOfUsername(q.username);
    if (s === undefined) {
      s = o.host.sessionOfFlow(q.address, q.port, q.username);
      owned = Owned.Flow;
    }
    let t: OwnerTunnel<S> | undefined;
    if (s !== undefined) {
      t = new OwnerTunnel(this, s, q, peer, fromPort, o.clock());
      const slot = this.#table.add(t);
      if (slot >= 0) {
        t.slot = slot;
        t.gen = this.#table.gen(slot);
        this.#track(t);
      } else t = undefined;
    }
    if (t === undefined) owned = Owned.None;
    o.counters.answers[owned]!++;
    const answer = encodeAnswer(o.self, q.slot, q.gen, owned, t?.slot ?? 0, t?.gen ?? 0);
    o.socket.send(answer, undefined, fromPort, peer.address);
    if (owned !== Owned.None)
      o.log.debug(
        { client: `${q.address}:${q.port}`, peer: peer.name, answer: ANSWER_LABELS[owned] },
        'peer asked: mine',
      );
  }

  onUp(buf: Buffer, slot: number, gen: number, peer: Peer, fromPort: number): void {
    const o = this.#o;
    const t = this.#table.get(slot, gen);
    if (t === undefined || t.peerRef !== peer || t.peerPort !== fromPort) {
      o.counters.drops[PeerDrop.UnknownTunnel]!++;
      return;
    }
    const c = o.counters;
    c.tunnelPackets[TunnelDir.FromReceiver]!++;
    c.tunnelBytes[TunnelDir.FromReceiver]! += buf.length - DATA_HEADER;
    t.lastSeen = o.clock();
    t.packetsUp++;
    if (t.state === TunnelState.Pending) {
      t.state = TunnelState.Active;
      this.#active++;
      c.handoffsIn++;
      o.log.info({ client: `${t.address}:${t.port}`, peer: t.peer }, 'flow taken from peer');
    }
    if (!o.host.tunneled(buf.subarray(DATA_HEADER), t.address, t.port, t))
      this.#close(t, TunnelClose.NoSession, true);
  }

  onRelease(slot: number, gen: number, peer: Peer): void {
    const t = this.#table.get(slot, gen);
    if (t === undefined || t.peerRef !== peer) {
      this.#o.counters.drops[PeerDrop.UnknownTunnel]!++;
      return;
    }
    this.#close(t, TunnelClose.Released, false);
  }

  /** @internal A session datagram for a tunneled client ({@link OwnerTunnel.send}). */
  sendDown(t: OwnerTunnel<S>, buf: Uint8Array): void {
    // A closed tunnel's endpoint waits for its client's next datagram, which comes another way.
    if (t.state === TunnelState.Closed) return;
    const c = this.#o.counters;
    c.tunnelPackets[TunnelDir.ToReceiver]!++;
    c.tunnelBytes[TunnelDir.ToReceiver]! += buf.length;
    t.packetsDown++;
    this.#o.socket.send(t.down, buf, t.peerPort, t.peerRef.address);
  }

  // --- From the data path (its flow events) ------------------------------------------------------

  /**
   * The client's datagrams on an endpoint of `s` now arrive through `next` (or directly) instead
   * of `old`: the new tunnel serves `s`, the old one ends unless an endpoint still uses it.
   */
  rerouted(s: S, old: PeerRoute | undefined, next: PeerRoute | undefined): void {
    if (next instanceof OwnerTunnel && next.open && next.session !== s)
      this.#rehome(next as OwnerTunnel<S>, s);
    if (old !== next && old instanceof OwnerTunnel)
      this.#release(old as OwnerTunnel<S>, TunnelClose.Replaced);
  }

  /** An endpoint reached through `route` left its session. */
  left(route: PeerRoute): void {
    if (route instanceof OwnerTunnel) this.#release(route as OwnerTunnel<S>, TunnelClose.Idle);
  }

  /**
   * The session ended: its tunnels end and their receivers forget them — except one an endpoint
   * still uses (an ICE restart moved it to the new session: it serves that one now).
   */
  sessionClosed(s: S): void {
    const list = this.#bySession.get(s);
    if (list === undefined) return;
    for (const t of [...list]) this.#release(t, TunnelClose.SessionClosed);
  }

  /** A peer left, went silent or restarted: its tunnels end (nobody to tell). */
  peerGone(peer: Peer): void {
    for (const t of [...this.#table.values()])
      if (t.peerRef === peer) this.#close(t, TunnelClose.PeerGone, false);
  }

  /** Ends pending tunnels never used and active ones idle for `idleMs`. O(table); about once a second. */
  sweep(now: number): void {
    if (this.#table.size === 0) return;
    const o = this.#o;
    for (const t of [...this.#table.values()]) {
      const limit = t.state === TunnelState.Pending ? o.pendingMs : o.idleMs;
      if (now - t.lastSeen >= limit) this.#close(t, TunnelClose.Idle, true);
    }
  }

  /** Ends every tunnel (this replica stops), telling the receivers. */
  closeAll(): void {
    for (const t of [...this.#table.values()]) this.#close(t, TunnelClose.Shutdown, true);
  }

  // ---------------------------------------------------------------------------------------------

  /** Ends `t`, telling its receiver, unless the endpoint at its 5-tuple is still reached through it. */
  #release(t: OwnerTunnel<S>, reason: number): void {
    if (!t.open) return;
    if (this.#o.host.routeOf(t.address, t.port) === t) {
      const s = this.#o.host.sessionOfFlow(t.address, t.port, undefined);
      if (s !== undefined && s !== t.session) this.#rehome(t, s);
      return;
    }
    this.#close(t, reason, true);
  }

  /** `t` serves another session now (an ICE restart took its endpoint over). */
  #rehome(t: OwnerTunnel<S>, s: S): void {
    this.#untrack(t);
    t.session = s;
    this.#track(t);
  }

  #untrack(t: OwnerTunnel<S>): void {
    const list = this.#bySession.get(t.session)!;
    list.splice(list.indexOf(t), 1);
    if (list.length === 0) this.#bySession.delete(t.session);
  }

  #track(t: OwnerTunnel<S>): void {
    const list = this.#bySession.get(t.session);
    if (list === undefined) this.#bySession.set(t.session, [t]);
    else list.push(t);
  }

  #close(t: OwnerTunnel<S>, reason: number, tellReceiver: boolean): void {
    if (t.state === TunnelState.Closed) return;
    const o = this.#o;
    if (t.state === TunnelState.Active) this.#active--;
    t.state = TunnelState.Closed;
    this.#table.delete(t.slot, t.gen);
    this.#untrack(t);
    o.counters.tunnelsClosed[reason]!++;
    if (tellReceiver) {
      o.socket.send(
        encodeRelease(o.self, ReleaseOf.Receiving, t.receiverSlot, t.receiverGen),
        undefined,
        t.peerPort,
        t.peerRef.address,
      );
    }
    if (t.packetsUp > 0) {
      o.log.debug(
        {
          client: `${t.address}:${t.port}`,
          peer: t.peer,
          reason: TUNNEL_CLOSE_LABELS[reason],
          packetsUp: t.packetsUp,
          packetsDown: t.packetsDown,
        },
        'peer tunnel closed',
      );
    }
  }
}
