import {
  type Budget,
  BudgetClass,
  type NegativeCache,
  type PeerLog,
  type PeerSocket,
  type ReceiverHost,
  type Shares,
} from '../defs/interfaces.ts';
import { hashBytes, hashString } from '../stun/hash.ts';
import type { UsernameView } from '../stun/parse.ts';
import {
  type PeerCounters,
  PeerDrop,
  QueryOutcome,
  QuerySkip,
  TUNNEL_CLOSE_LABELS,
  TunnelClose,
  TunnelDir,
} from './counters.ts';
import type { Peer, PeerSet } from './peer-set.ts';
import { TokenTable } from './tokens.ts';
import {
  type Answer,
  DATA_HEADER,
  dataHeader,
  encodeQuery,
  encodeRelease,
  type Instance,
  MsgType,
  Owned,
  ReleaseOf,
} from './wire.ts';

/**
 * The receiving side (docs/peers.md, "Receiver"): a datagram on a client 5-tuple this replica does
 * not know is not dropped or routed anew before the peers were asked whether the flow is theirs.
 *
 * - One query round per unknown flow: the query goes to every peer (every worker port of it); the
 *   round ends at the first "mine" (a tunnel), when every peer that answers pings said "not mine",
 *   or after `timeoutMs` (a lost answer is covered by one repeat to the silent ones at half time).
 * - While the round is in flight the flow's datagrams are **held** (at most `holdPerFlow` per flow
 *   and `holdMax` in all, then dropped and counted): the round takes one in-cluster round trip, and
 *   holding keeps a moved call's first datagrams — often a consent check — instead of losing them.
 * - No owner: the 5-tuple (and, for a check, 5-tuple + USERNAME) goes into a fixed-size negative
 *   cache for its TTL, and the held datagrams go to the data path as if there were no peers.
 * - Bounded: `--peer-query-rate` rounds per second in two halves. A round takes from the *open*
 *   half first, first come first served, so without a flood a rolling update's burst of moved
 *   flows (a NAT full of callers among them) is never held to a share. Once a flood has drained
 *   it, a round needs the source's fair share (admission's table: rate over active sources) and
 *   the *fair* half; the shares add up to less than the fair half's rate, so a source within its
 *   share always finds it open, however many sources flood. A fixed table of flows in flight and
 *   tunnels; a refused flow is handled as without peers.
 * - A tunnel: the flow's datagrams go to the owner with the owner's token; the owner's datagrams
 *   for the client come back with ours, and go out of the public socket to the one 5-tuple the
 *   tunnel was made for. A down datagram carries no address: a forged one cannot aim anywhere.
 *
 * A flow this replica knows never gets here (the forwarder asks only on its unknown-5-tuple path).
 */

/** What bounds the receiver side: its budget, tables and times (set by the composition root). */
export interface ReceiverPolicy {
  readonly shares: Shares;
  /** The open half of the round budget (first come, first served). */
  readonly open: Budget;
  /** The fair half: only for a source within its share. */
  readonly fair: Budget;
  readonly negative: NegativeCache;
  /** How long a round waits for answers (`--peer-timeout`). */
  readonly timeoutMs: number;
  /** A tunnel with no client datagram for this long ends (`--idle-timeout`). */
  readonly idleMs: number;
  /** Flows being asked about and tunnels, at most (each side). */
  readonly capacity: number;
  /** Rounds in flight at most. */
  readonly maxInflight: number;
  readonly holdPerFlow: number;
  readonly holdMax: number;
  /** Called when a round ends, with its duration (a metrics hook). */
  readonly onRound?: (ms: number) => void;
  /** Asks to be ticked at (about) this time: the earliest round deadline. */
  readonly wake?: (at: number) => void;
}

export interface ReceiverOptions extends ReceiverPolicy {
  readonly self: Instance;
  readonly peers: PeerSet;
  readonly socket: PeerSocket;
  readonly host: ReceiverHost;
  readonly counters: PeerCounters;
  readonly clock: () => number;
  readonly log: PeerLog;
}

const State = { Querying: 0, Tunneled: 1, Free: 2 } as const;
type State = (typeof State)[keyof typeof State];

class Flow {
  state: State = State.Free;
  slot = -1;
  gen = 0;
  address = '';
  port = 0;
  /** Negative-cache keys: the 5-tuple, and the 5-tuple + USERNAME of a check's round. */
  flowKey = 0;
  roundKey = 0;
  // While querying.
  startedAt = 0;
  query: Buffer | undefined;
  /** (peer, worker) pairs asked, and those that answered "not mine". */
  asked: Peer[] = [];
  askedWorker: number[] = [];
  answered: boolean[] = [];
  held: Buffer[] = [];
  // While tunneled.
  peer: Peer | undefined;
  ownerPort = 0;
  ownerSlot = 0;
  ownerGen = 0;
  up: Buffer | undefined;
  lastSeen = 0;
  packets = 0;
}

export class PeerReceiver {
  readonly #o: ReceiverOptions;
  readonly #table: TokenTable<Flow>;
  readonly #byAddress = new Map<string, Map<number, Flow>>();
  #count = 0;
  #inflight = 0;
  #heldTotal = 0;
  /** Rounds by start (the timeout is fixed, so this is also deadline order): repeats and ends. */
  readonly #repeats = new Rounds();
  readonly #ends = new Rounds();
  readonly #spare: Flow[] = [];
  #sharesSwept = Number.NEGATIVE_INFINITY;

  constructor(o: ReceiverOptions) {
    this.#o = o;
    this.#table = new TokenTable<Flow>(o.capacity);
  }

  /** Tunnels open now (this side: flows sent to their owners). */
  get tunnels(): number {
    return this.#count - this.#inflight;
  }

  get inflight(): number {
    return this.#inflight;
  }

  get held(): number {
    return this.#heldTotal;
  }

  // --- From the forwarder (unknown 5-tuples only) -------------------------------------------------

  divert(buf: Buffer, address: string, port: number): boolean {
    if (this.#count === 0) return false;
    const f = this.#byAddress.get(address)?.get(port);
    if (f === undefined) return false;
    if (f.state === State.Tunneled) {
      f.lastSeen = this.#o.clock();
      f.packets++;
      this.#sendUp(f, buf);
      return true;
    }
    this.#hold(f, buf);
    return true;
  }

  ask(buf: Buffer, address: string, port: number, view: UsernameView | undefined): boolean {
    const o = this.#o;
    const c = o.counters;
    if (!o.peers.anyWaited) {
      c.skipped[QuerySkip.NoPeers]!++;
      return false;
    }
    const now = o.clock();
    const flowKey = flowHash(address, port);
    const roundKey = view === undefined ? flowKey : (flowKey ^ hashBytes(buf, view.start, view.end)) >>> 0;
    if (o.negative.has(roundKey, now)) {
      c.skipped[QuerySkip.Negative]!++;
      return false;
    }
    if (this.#inflight >= o.maxInflight || this.#table.size >= this.#table.capacity) {
      c.skipped[QuerySkip.TableFull]!++;
      return false;
    }
    if (!o.open.take(now, 1)) {
      const share = o.shares.slotOf(address, now);
      if (!o.shares.take(share, BudgetClass.Fanout, 1, now)) {
        c.skipped[QuerySkip.SourceShare]!++;
        return false;
      }
      // Not refunded: a share spent on a refusal is gone, so a flood's sources cannot pile up
      // credit while the fair half is empty and drain it the moment it refills.
      if (!o.fair.take(now, 1)) {
        c.skipped[QuerySkip.Budget]!++;
        return false;
      }
    }
    const f = this.#spare.pop() ?? new Flow();
    const slot = this.#table.add(f);
    f.state = State.Querying;
    f.slot = slot;
    f.gen = this.#table.gen(slot);
    f.address = address;
    f.port = port;
    f.flowKey = flowKey;
    f.roundKey = roundKey;
    f.startedAt = now;
    f.query = encodeQuery(
      o.self,
      slot,
      f.gen,
      address,
      port,
      view === undefined ? undefined : buf,
      view?.start,
      view?.end,
    );
    for (const p of o.peers.peers) {
      // Not a silent one: it sent nothing, not even a pong, for SILENT_MS, so an answer would not
      // come back either; and a datagram to an address with no host behind it costs this node a
      // failed neighbour resolution each time — per round, under a flood (docs/peers.md, "Peers").
      if (!p.waited) continue;
      for (let w = 0; w < p.workers; w++) {
        f.asked.push(p);
        f.askedWorker.push(w);
        f.answered.push(false);
        o.socket.send(f.query, undefined, p.port + w, p.address);
      }
    }
    this.#index(f);
    this.#inflight++;
    this.#hold(f, buf);
    // Due twice: a repeat to the peers that did not answer at half time, the end at full time.
    if (this.#repeats.empty) o.wake?.(now + o.timeoutMs / 2);
    this.#repeats.push(f);
    this.#ends.push(f);
    return true;
  }

  // --- From peers ---------------------------------------------------------------------------------

  onAnswer(a: Answer, peer: Peer, fromPort: number): void {
    const o = this.#o;
    const f = this.#table.get(a.slot, a.gen);
    if (f === undefined || f.state !== State.Querying) {
      // A "mine" after the round ended (late, or a second owner): free what the owner minted for
      // us. A late "not mine" is the normal end of a round that a first "mine" ended: not counted.
      if (a.owned !== Owned.None) {
        o.counters.drops[PeerDrop.StaleAnswer]!++;
        this.#release(peer, fromPort, a.ownerSlot, a.ownerGen);
      }
      return;
    }
    if (a.owned !== Owned.None) {
      this.#tunnel(f, a, peer, fromPort);
      return;
    }
    const w = fromPort - peer.port;
    for (let i = 0; i < f.asked.length; i++)
      if (f.asked[i] === peer && f.askedWorker[i] === w) f.answered[i] = true;
    if (this.#everyoneAnswered(f)) this.#noOwner(f, QueryOutcome.None);
  }

  onDown(buf: Buffer, slot: number, gen: number, peer: Peer, fromPort: number): void {
    const o = this.#o;
    const f = this.#table.get(slot, gen);
    if (f === undefined || f.state !== State.Tunneled || f.peer !== peer || f.ownerPort !== fromPort) {
      o.counters.drops[PeerDrop.UnknownTunnel]!++;
      return;
    }
    const n = buf.length - DATA_HEADER;
    o.counters.tunnelPackets[TunnelDir.FromOwner]!++;
    o.counters.tunnelBytes[TunnelDir.FromOwner]! += n;
    o.host.sendToClient(buf.subarray(DATA_HEADER), f.port, f.address);
  }

  /** The owner released our tunnel (its session ended, or the flow reaches it another way now). */
  onRelease(slot: number, gen: number, peer: Peer): void {
    const f = this.#table.get(slot, gen);
    if (f === undefined || f.state !== State.Tunneled || f.peer !== peer) {
      this.#o.counters.drops[PeerDrop.UnknownTunnel]!++;
      return;
    }
    this.#close(f, TunnelClose.Released, false);
  }

  /** A peer left, went silent or restarted: its tunnels end; rounds stop waiting for it. */
  peerGone(peer: Peer): void {
    for (const f of [...this.#table.values()]) {
      if (f.state === State.Tunneled && f.peer === peer) this.#close(f, TunnelClose.PeerGone, false);
      else if (f.state === State.Querying && this.#everyoneAnswered(f)) this.#noOwner(f, QueryOutcome.None);
    }
  }

  // --- Time ---------------------------------------------------------------------------------------

  /** Repeats and ends rounds that are due. O(due rounds). */
  tick(now: number): void {
    const o = this.#o;
    const half = o.timeoutMs / 2;
    this.#repeats.pop(now - half, (f) => {
      if (f.query === undefined) return;
      // Half time: once more to the peers that have not answered (a lost query or answer).
      for (let i = 0; i < f.asked.length; i++) {
        const p = f.asked[i]!;
        if (!f.answered[i] && p.listed && p.waited)
          o.socket.send(f.query, undefined, p.port + f.askedWorker[i]!, p.address);
      }
    });
    this.#ends.pop(now - o.timeoutMs, (f) => this.#noOwner(f, QueryOutcome.Timeout));
    const next = Math.min(this.#repeats.next + half, this.#ends.next + o.timeoutMs);
    if (next < Number.POSITIVE_INFINITY) o.wake?.(next);
  }

  /**
   * Ends tunnels without a client datagram for `idleMs` (O(table)), and recounts the sources that
   * share the budget; call every few hundred ms.
   */
  sweep(now: number): void {
    if (now - this.#sharesSwept >= 1000) {
      this.#sharesSwept = now;
      this.#o.shares.sweep(now);
    }
    if (this.#count === this.#inflight) return;
    for (const f of [...this.#table.values()]) {
      if (f.state === State.Tunneled && now - f.lastSeen >= this.#o.idleMs)
        this.#close(f, TunnelClose.Idle, true);
    }
  }

  /** Ends every tunnel (this replica stops), telling the owners. */
  closeAll(): void {
    for (const f of [...this.#table.values()]) {
      if (f.state === State.Tunneled) this.#close(f, TunnelClose.Shutdown, true);
    }
  }

  // ---------------------------------------------------------------------------------------------

  #hold(f: Flow, buf: Buffer): void {
    const o = this.#o;
    if (f.held.length >= o.holdPerFlow || this.#heldTotal >= o.holdMax) {
      o.counters.drops[PeerDrop.HoldFull]!++;
      return;
    }
    f.held.push(buf);
    this.#heldTotal++;
  }

  #everyoneAnswered(f: Flow): boolean {
    for (let i = 0; i < f.asked.length; i++) {
      const p = f.asked[i]!;
      if (!f.answered[i] && p.listed && p.waited) return false;
    }
    return true;
  }

  #tunnel(f: Flow, a: Answer, peer: Peer, fromPort: number): void {
    const o = this.#o;
    const now = o.clock();
    this.#inflight--;
    f.state = State.Tunneled;
    f.peer = peer;
    f.ownerPort = fromPort;
    f.ownerSlot = a.ownerSlot;
    f.ownerGen = a.ownerGen;
    f.up = dataHeader(MsgType.Up, a.ownerSlot, a.ownerGen);
    f.lastSeen = now;
    f.query = undefined;
    this.#clearRound(f);
    o.host.claimed(f.address, f.port);
    const c = o.counters;
    c.queries[QueryOutcome.Owned]!++;
    c.handoffsOut++;
    o.onRound?.(now - f.startedAt);
    o.log.info(
      {
        client: endpointName(f.address, f.port),
        peer: peer.name,
        by: a.owned === Owned.Flow ? 'flow' : 'ufrag',
        queryMs: now - f.startedAt,
      },
      'flow handed to peer',
    );
    const held = f.held;
    f.held = [];
    this.#heldTotal -= held.length;
    for (const b of held) {
      f.packets++;
      this.#sendUp(f, b);
    }
  }

  #noOwner(f: Flow, outcome: number): void {
    const o = this.#o;
    const now = o.clock();
    o.negative.add(f.flowKey, now);
    if (f.roundKey !== f.flowKey) o.negative.add(f.roundKey, now);
    o.counters.queries[outcome]!++;
    o.onRound?.(now - f.startedAt);
    this.#inflight--;
    const { address, port } = f;
    const held = f.held;
    f.held = [];
    this.#heldTotal -= held.length;
    this.#free(f);
    // Negative by now: the data path handles them as without peers, and asks nothing again.
    for (const b of held) o.host.local(b, address, port);
  }

  #sendUp(f: Flow, buf: Buffer): void {
    const o = this.#o;
    o.counters.tunnelPackets[TunnelDir.ToOwner]!++;
    o.counters.tunnelBytes[TunnelDir.ToOwner]! += buf.length;
    o.socket.send(f.up!, buf, f.ownerPort, f.peer!.address);
  }

  #close(f: Flow, reason: number, tellOwner: boolean): void {
    const o = this.#o;
    o.counters.tunnelsClosed[reason]!++;
    const fields = {
      client: endpointName(f.address, f.port),
      peer: f.peer!.name,
      reason: TUNNEL_CLOSE_LABELS[reason],
      packets: f.packets,
    };
    if (reason === TunnelClose.Idle) o.log.debug(fields, 'peer tunnel closed');
    else o.log.info(fields, 'peer tunnel closed');
    if (tellOwner) this.#release(f.peer!, f.ownerPort, f.ownerSlot, f.ownerGen);
    this.#free(f);
  }

  #release(peer: Peer, port: number, slot: number, gen: number): void {
    this.#o.socket.send(
      encodeRelease(this.#o.self, ReleaseOf.Owning, slot, gen),
      undefined,
      port,
      peer.address,
    );
  }

  #index(f: Flow): void {
    let ports = this.#byAddress.get(f.address);
    if (ports === undefined) {
      ports = new Map();
      this.#byAddress.set(f.address, ports);
    }
    ports.set(f.port, f);
    this.#count++;
  }

  #clearRound(f: Flow): void {
    f.asked.length = 0;
    f.askedWorker.length = 0;
    f.answered.length = 0;
  }

  #free(f: Flow): void {
    const ports = this.#byAddress.get(f.address);
    if (ports?.get(f.port) === f) {
      ports.delete(f.port);
      if (ports.size === 0) this.#byAddress.delete(f.address);
      this.#count--;
    }
    this.#table.delete(f.slot, f.gen);
    this.#clearRound(f);
    f.state = State.Free;
    f.peer = undefined;
    f.up = undefined;
    f.query = undefined;
    f.packets = 0;
    this.#spare.push(f);
  }
}

/** Hash of a client 5-tuple (the local side is the one public address): FNV-1a of address, port. */
function flowHash(address: string, port: number): number {
  let h = hashString(address);
  h = Math.imul(h ^ (port & 0xff), 0x01000193);
  h = Math.imul(h ^ (port >>> 8), 0x01000193);
  return h >>> 0;
}

function endpointName(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Rounds in start order (a FIFO of flow, generation): the head is the earliest due. An entry whose
 * round ended meanwhile (answered, or its slot reused: another generation) is skipped.
 */
class Rounds {
  readonly #q: Array<Flow | number> = [];
  #head = 0;

  get empty(): boolean {
    return this.#head === this.#q.length;
  }

  /** Start time of the earliest live round, or +Infinity. */
  get next(): number {
    this.#skipDead();
    return this.empty ? Number.POSITIVE_INFINITY : (this.#q[this.#head] as Flow).startedAt;
  }

  push(f: Flow): void {
    this.#q.push(f, f.gen);
  }

  /** Calls `fn` for each live round that started at or before `startedBy`, in order, and drops it. */
  pop(startedBy: number, fn: (f: Flow) => void): void {
    for (;;) {
      this.#skipDead();
      if (this.empty) break;
      const f = this.#q[this.#head] as Flow;
      if (f.startedAt > startedBy) break;
      this.#head += 2;
      fn(f);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#q.length) {
      this.#q.splice(0, this.#head);
      this.#head = 0;
    }
  }

  #skipDead(): void {
    while (this.#head < this.#q.length) {
      const f = this.#q[this.#head] as Flow;
      if (f.state === State.Querying && f.gen === this.#q[this.#head + 1]) return;
      this.#head += 2;
    }
  }
}
