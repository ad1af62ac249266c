import { LRUCache } from 'lru-cache';

/**
 * Learned server ufrag → backend name, filled when a probe is won (docs/architecture.md,
 * "Routing"). Lets the other candidates of the same ICE agent (host, srflx, relay; more users on
 * one NAT) go straight to the owner. Keyed by the 32-bit hash of the ufrag's bytes (stun/hash.ts)
 * so a lookup allocates nothing; a collision or a stale entry costs one fall-back probe, never a
 * wrong route, because a learned route is only a first guess confirmed by the backend's success.
 * Only a backend's success fills it, so a flood cannot.
 */
export function createLearnedUfrags(max: number): LRUCache<number, string> {
  return new LRUCache<number, string>({ max });
}

/**
 * Server ufrags that no backend claimed recently (the negative cache). A client keeps
 * retransmitting checks for tens of seconds; without this, each one would cost a fan-out to every
 * backend. Cleared whenever the backend set changes (a new pod may own them).
 *
 * A flood of random ufrags fills this cache, so it is a fixed-size table of (hash, expiry) in
 * typed arrays, not an LRU of strings: memory is fixed at start, a lookup or insert is O(1) and
 * allocates nothing, and a flood only overwrites other flood entries (a lost entry costs one more
 * probe round of a retransmit, bounded by the budgets). A false hit needs the same 32-bit hash in
 * the same slot within the TTL: it would refuse one unknown ufrag for at most the TTL, and the
 * backend set changing clears it.
 */
export class NegativeUfrags {
  readonly ttlMs: number;
  readonly #mask: number;
  readonly #hash: Int32Array;
  readonly #until: Float64Array;

  constructor(slots: number, ttlMs: number) {
    const size = 1 << Math.ceil(Math.log2(Math.max(2, slots)));
    this.ttlMs = ttlMs;
    this.#mask = size - 1;
    this.#hash = new Int32Array(size);
    this.#until = new Float64Array(size);
  }

  has(hash: number, now: number): boolean {
    const i = hash & this.#mask;
    return this.#hash[i] === (hash | 0) && this.#until[i]! > now;
  }

  add(hash: number, now: number): void {
    if (this.ttlMs <= 0) return;
    const i = hash & this.#mask;
    this.#hash[i] = hash | 0;
    this.#until[i] = now + this.ttlMs;
  }

  clear(): void {
    this.#until.fill(0);
  }

  /** Entries still in force (O(size); for tests and debugging, not the data path). */
  count(now: number): number {
    let n = 0;
    for (let i = 0; i < this.#until.length; i++) if (this.#until[i]! > now) n++;
    return n;
  }
}
