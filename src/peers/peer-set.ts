import type { PeerLog, PeerSocket } from '../defs/interfaces.ts';
import type { PeerCounters } from './counters.ts';
import { encodeHeartbeat, FLAG_DRAINING, type Heartbeat, type Instance, MsgType } from './wire.ts';

/**
 * The other replicas of this tier, as one data-path thread sees them (docs/peers.md, "Peers"):
 * the addresses a peer source lists (static, DNS, EndpointSlices), minus this replica itself, and
 * whether each answers its pings. A query round waits only for peers that answer (or have not
 * been asked yet); a peer silent for {@link SILENT_MS} is not waited for, and its tunnels end.
 *
 * A replica recognises itself without configuration: every control datagram carries the sender's
 * random instance id, so a query or ping that comes back with our own id names our own address.
 * A pong with another instance id than before means the peer restarted: its tunnels are void.
 */

export const PeerState = {
  /** Listed, not heard from yet: asked and waited for (it may own flows already). */
  Unknown: 0,
  Ready: 1,
  /** Answering, and draining (SIGTERM): it still owns sessions, takes no new ones. */
  Draining: 2,
  /** No ping or pong from it for {@link SILENT_MS}: still asked, not waited for. */
  Silent: 3,
} as const;
export type PeerState = (typeof PeerState)[keyof typeof PeerState];

/** Ping period. */
export const PING_MS = 1000;
/** A peer that sent nothing for this long is silent. */
export const SILENT_MS = 3000;
/** Worker sockets of a replica sit on consecutive ports from its peer port: at most this many. */
export const MAX_PEER_PORTS = 32;

/** One address a peer source lists: the replica's peer port (its worker 0). */
export interface PeerSpec {
  readonly address: string;
  readonly port: number;
}

export class Peer {
  readonly id: number;
  readonly address: string;
  readonly port: number;
  /** `address:port`, for logs. */
  readonly name: string;
  state: PeerState = PeerState.Unknown;
  /** Worker sockets (peer ports) the replica runs, from its pings and pongs. */
  workers: number;
  lastHeard = Number.NEGATIVE_INFINITY;
  /** When this thread first pinged it: a peer never heard from is silent {@link SILENT_MS} later. */
  firstPing = Number.NEGATIVE_INFINITY;
  instanceHi = 0;
  instanceLo = 0;
  /** Present in the last snapshot of the peer source. */
  listed = true;

  constructor(id: number, address: string, port: number, workers: number) {
    this.id = id;
    this.address = address;
    this.port = port;
    this.name = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
    this.workers = workers;
  }

  /** Worth waiting for in a query round. */
  get waited(): boolean {
    return this.state !== PeerState.Silent;
  }
}

export interface PeerSetOptions {
  readonly self: Instance;
  /** This replica's own address among the peers (`--pod-ip`), if known. */
  readonly selfAddress: string | undefined;
  /** This replica's peer port (its worker 0's). */
  readonly selfPort: number;
  /** This replica's worker count: announced, and assumed for a peer until it announces its own. */
  readonly workers: number;
  readonly socket: PeerSocket;
  readonly counters: PeerCounters;
  readonly clock: () => number;
  readonly log: PeerLog;
  /** A peer left the set, went silent, or restarted: its tunnels are void. */
  readonly onGone: (peer: Peer) => void;
}

export class PeerSet {
  /** Known peers, this replica excluded. */
  readonly peers: Peer[] = [];
  readonly #o: PeerSetOptions;
  readonly #byAddress = new Map<string, Peer[]>();
  /** `address:port` entries that turned out to be this replica. */
  readonly #self = new Set<string>();
  #nextId = 1;
  #seq = 0;
  #draining = false;
  #lastPing = Number.NEGATIVE_INFINITY;

  constructor(o: PeerSetOptions) {
    this.#o = o;
  }

  /** Whether a query round would wait for anyone (a peer not silent): asked per unknown flow. */
  get anyWaited(): boolean {
    for (const p of this.peers) if (p.waited) return true;
    return false;
  }

  /** Known peers by state: [unknown, ready, draining, silent]. */
  states(): [number, number, number, number] {
    const n: [number, number, number, number] = [0, 0, 0, 0];
    for (const p of this.peers) n[p.state]++;
    return n;
  }

  /** Pings and pongs say so from now on. */
  setDraining(): void {
    this.#draining = true;
  }

  get flags(): number {
    return this.#draining ? FLAG_DRAINING : 0;
  }

  /**
   * A new snapshot of the peer source. Entries that are this replica are skipped; peers that left
   * are gone (their tunnels end). Returns the names added and removed, for the log.
   */
  update(specs: readonly PeerSpec[]): { added: string[]; removed: string[] } {
    const o = this.#o;
    const want = new Map<string, PeerSpec>();
    for (const s of specs) {
      const key = `${s.address}|${s.port}`;
      if (this.#self.has(key) || (s.address === o.selfAddress && s.port === o.selfPort)) continue;
      want.set(key, s);
    }
    const added: string[] = [];
    const removed: string[] = [];
    for (let i = this.peers.length - 1; i >= 0; i--) {
      const p = this.peers[i]!;
      const key = `${p.address}|${p.port}`;
      if (want.has(key)) {
        want.delete(key);
        continue;
      }
      this.#remove(p);
      removed.push(p.name);
    }
    for (const s of want.values()) {
      const p = new Peer(this.#nextId++, s.address, s.port, o.workers);
      this.peers.push(p);
      let list = this.#byAddress.get(p.address);
      if (list === undefined) {
        list = [];
        this.#byAddress.set(p.address, list);
      }
      list.push(p);
      added.push(p.name);
      // Ask at once: a new peer (a replica that starts during a rolling update) is known within a
      // round trip, not a ping period.
      this.#ping(p);
    }
    return { added, removed };
  }

  /**
   * The peer a datagram from (address, port) comes from: a listed address, from one of the
   * replica's peer ports (its workers sit on consecutive ports). O(peers at that address).
   */
  find(address: string, port: number): Peer | undefined {
    const list = this.#byAddress.get(address);
    if (list === undefined) return undefined;
    for (const p of list) if (port >= p.port && port < p.port + MAX_PEER_PORTS) return p;
    return undefined;
  }

  /** A control datagram carried our own instance id: `peer` is this replica. Never asked again. */
  markSelf(peer: Peer): void {
    this.#self.add(`${peer.address}|${peer.port}`);
    this.#remove(peer);
    this.#o.log.info({ peer: peer.name }, 'peer list names this replica: ignored');
  }

  /** Whether a control datagram's instance id is this replica's own. */
  isSelf(hi: number, lo: number): boolean {
    return hi === this.#o.self.hi && lo === this.#o.self.lo;
  }

  /** A ping or pong from `peer` (from its socket at `fromPort`): it is alive. Answers a ping. */
  heard(peer: Peer, type: number, hb: Heartbeat, hi: number, lo: number, fromPort: number): void {
    const o = this.#o;
    if (type === MsgType.Ping) {
      o.socket.send(
        encodeHeartbeat(MsgType.Pong, o.self, hb.seq, o.workers, this.flags),
        undefined,
        fromPort,
        peer.address,
      );
    }
    if (
      (peer.instanceHi !== 0 || peer.instanceLo !== 0) &&
      (peer.instanceHi !== hi || peer.instanceLo !== lo)
    ) {
      // Same address, new process: every token it minted, and every tunnel it knew, is void.
      o.log.info({ peer: peer.name }, 'peer restarted');
      o.onGone(peer);
    }
    peer.instanceHi = hi;
    peer.instanceLo = lo;
    peer.workers = hb.workers;
    peer.lastHeard = o.clock();
    const state = (hb.flags & FLAG_DRAINING) !== 0 ? PeerState.Draining : PeerState.Ready;
    if (peer.state === PeerState.Silent) o.log.info({ peer: peer.name }, 'peer answering');
    peer.state = state;
  }

  /**
   * Call often (every few hundred ms): pings every peer once per {@link PING_MS}, and marks peers
   * silent that sent nothing for {@link SILENT_MS} (their tunnels end).
   */
  heartbeat(now: number): void {
    if (now - this.#lastPing >= PING_MS) {
      this.#lastPing = now;
      for (const p of this.peers) this.#ping(p);
    }
    for (const p of this.peers) {
      if (p.state === PeerState.Silent) continue;
      // A peer never heard from counts from when it was first pinged.
      const since = p.lastHeard === Number.NEGATIVE_INFINITY ? p.firstPing : p.lastHeard;
      if (now - since >= SILENT_MS) {
        p.state = PeerState.Silent;
        this.#o.log.info({ peer: p.name }, 'peer silent');
        this.#o.onGone(p);
      }
    }
  }

  #ping(p: Peer): void {
    const o = this.#o;
    if (p.firstPing === Number.NEGATIVE_INFINITY) p.firstPing = o.clock();
    o.socket.send(
      encodeHeartbeat(MsgType.Ping, o.self, ++this.#seq, o.workers, this.flags),
      undefined,
      p.port,
      p.address,
    );
  }

  #remove(p: Peer): void {
    const i = this.peers.indexOf(p);
    if (i < 0) return;
    this.peers.splice(i, 1);
    const list = this.#byAddress.get(p.address)!;
    list.splice(list.indexOf(p), 1);
    if (list.length === 0) this.#byAddress.delete(p.address);
    p.listed = false;
    this.#o.onGone(p);
  }
}
