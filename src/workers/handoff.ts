import type { FlowHandoff, FlowListener, FlowSession } from '../defs/interfaces.ts';
import type { CloseReason } from '../defs/reasons.ts';
import type { UsernameView } from '../stun/parse.ts';
import type { SharedDirectory } from './directory.ts';
import { hashHi, hashLo } from './hash.ts';
import type { Doorbell, HandoffRing } from './ring.ts';

/**
 * One worker's end of the cross-worker machinery (docs/workers.md): a flow listener that keeps the
 * directory in step with the sessions this worker owns, and the forwarder's FlowHandoff
 * (src/defs/interfaces.ts): it answers "who owns this ufrag pair?", hands datagrams to their owner through
 * the rings, remembers which unknown 5-tuples it handed where (so a rebound flow's media follows
 * its first check), and delivers what other workers hand to it.
 */

interface Route {
  readonly owner: number;
  readonly hi: number;
  readonly lo: number;
  lastSeen: number;
}

export interface HandoffNodeOptions {
  readonly id: number;
  readonly directory: SharedDirectory;
  /** `out[j]`: the ring from this worker to worker j (undefined for j = id). */
  readonly out: ReadonlyArray<HandoffRing | undefined>;
  /** Rings from every other worker to this one. */
  readonly in: readonly HandoffRing[];
  /** Every worker's doorbell, by worker id. */
  readonly bells: readonly Doorbell[];
  /** A handed-off 5-tuple with no datagram for this long is forgotten. */
  readonly idleMs: number;
  readonly clock: () => number;
  /**
   * Called when this worker's learned or negative server ufrag should be shared with the others
   * (established / probe failed), by its 32-bit hash: the key admission keeps them by.
   */
  readonly onLearned?: (serverUfragHash: number, backend: string) => void;
  readonly onNegative?: (serverUfragHash: number) => void;
}

/** Records delivered per turn of the consumer loop before it yields to socket I/O. */
const DRAIN_BATCH = 256;

export class HandoffNode implements FlowListener, FlowHandoff {
  readonly id: number;
  handedOut = 0;
  handedIn = 0;
  /** Datagrams lost because the ring to the owner was full. */
  dropped = 0;
  /** Directory inserts refused (probe window full): the session still works, its rebinds may not. */
  directoryFull = 0;

  readonly #o: HandoffNodeOptions;
  readonly #routes = new Map<string, Map<number, Route>>();
  #routeCount = 0;
  #handingIn = false;
  #lastHi = 0;
  #lastLo = 0;
  #closed = false;
  #flushQueued = false;
  readonly #toRing: boolean[];
  #deliver: ((buf: Buffer, address: string, port: number) => void) | undefined;

  constructor(o: HandoffNodeOptions) {
    this.id = o.id;
    this.#o = o;
    this.#toRing = o.bells.map(() => false);
  }

  get routes(): number {
    return this.#routeCount;
  }

  // --- Directory side: flow events of the sessions this worker owns -----------------------------

  established(s: FlowSession): void {
    const hi = hashHi(s.usernameBytes);
    const lo = hashLo(s.usernameBytes);
    if (!this.#o.directory.insert(hi, lo, this.id)) {
      if (this.#o.directory.lookup(hi, lo) < 0) this.directoryFull++;
    }
    if (s.backend !== undefined) this.#o.onLearned?.(s.serverUfragHash, s.backend.name);
  }

  closed(s: FlowSession, reason: CloseReason, established: boolean): void {
    if (established) this.#o.directory.remove(hashHi(s.usernameBytes), hashLo(s.usernameBytes), this.id);
    if (reason === 'probe_failed') this.#o.onNegative?.(s.serverUfragHash);
  }

  // --- Router side ------------------------------------------------------------------------------

  /**
   * The worker that owns this ufrag pair if it is another one, else -1. Never another worker while
   * delivering a handed-in datagram: the owner routes it itself (a false positive ends here).
   */
  ownerOf(buf: Buffer, view: UsernameView): number {
    if (this.#handingIn) return -1;
    const hi = hashHi(buf, view.start, view.end);
    const lo = hashLo(buf, view.start, view.end);
    const w = this.#o.directory.lookup(hi, lo);
    if (w === this.id || w < 0 || this.#o.out[w] === undefined) return -1;
    this.#lastHi = hi;
    this.#lastLo = lo;
    return w;
  }

  /** Hands a first check to `owner` (just returned by ownerOf) and remembers its 5-tuple. */
  handoff(buf: Buffer, address: string, port: number, owner: number): void {
    let ports = this.#routes.get(address);
    if (ports === undefined) {
      ports = new Map();
      this.#routes.set(address, ports);
    }
    if (!ports.has(port)) this.#routeCount++;
    ports.set(port, { owner, hi: this.#lastHi, lo: this.#lastLo, lastSeen: this.#o.clock() });
    this.#push(buf, address, port, owner);
  }

  /** An unknown 5-tuple that was handed off before: hand this datagram off too. */
  divert(buf: Buffer, address: string, port: number): boolean {
    if (this.#routeCount === 0 || this.#handingIn) return false;
    const r = this.#routes.get(address)?.get(port);
    if (r === undefined) return false;
    r.lastSeen = this.#o.clock();
    this.#push(buf, address, port, r.owner);
    return true;
  }

  #push(buf: Buffer, address: string, port: number, owner: number): void {
    if (this.#o.out[owner]!.push(buf, address, port)) {
      this.handedOut++;
      // One doorbell per owner per turn of the event loop: libuv reads a burst of datagrams per
      // poll, and waking another thread costs far more than the record (docs/workers.md).
      this.#toRing[owner] = true;
      if (!this.#flushQueued) {
        this.#flushQueued = true;
        setImmediate(this.#flush);
      }
    } else {
      this.dropped++;
    }
  }

  readonly #flush = (): void => {
    this.#flushQueued = false;
    const pending = this.#toRing;
    for (let w = 0; w < pending.length; w++) {
      if (pending[w]) {
        pending[w] = false;
        this.#o.bells[w]!.ring();
      }
    }
  };

  /** Forgets 5-tuples idle for `idleMs`, or whose owner no longer holds their ufrag pair. */
  sweep(): void {
    if (this.#routeCount === 0) return;
    const now = this.#o.clock();
    for (const [address, ports] of this.#routes) {
      for (const [port, r] of ports) {
        if (now - r.lastSeen >= this.#o.idleMs || this.#o.directory.lookup(r.hi, r.lo) !== r.owner) {
          ports.delete(port);
          this.#routeCount--;
        }
      }
      if (ports.size === 0) this.#routes.delete(address);
    }
  }

  // --- Consumer side ----------------------------------------------------------------------------

  /** Starts delivering datagrams that other workers hand to this one. */
  start(deliver: (buf: Buffer, address: string, port: number) => void): void {
    this.#deliver = deliver;
    void this.#loop();
  }

  readonly #onRecord = (buf: Buffer, address: string, port: number): void => {
    this.handedIn++;
    this.#handingIn = true;
    try {
      this.#deliver!(buf, address, port);
    } finally {
      this.#handingIn = false;
    }
  };

  async #loop(): Promise<void> {
    const bell = this.#o.bells[this.id]!;
    while (!this.#closed) {
      const seen = bell.arm();
      let full = false;
      for (const ring of this.#o.in) if (ring.drain(this.#onRecord, DRAIN_BATCH) === DRAIN_BATCH) full = true;
      if (full) {
        // More may be queued: let socket I/O run between batches.
        await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      // Anything that arrived after the drain above rang the bell (armed before it): the wait
      // then returns at once.
      const wait = bell.wait(seen);
      if (wait !== undefined) await wait;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#o.bells[this.id]!.wake();
  }
}
