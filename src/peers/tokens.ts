import { getRandomValues } from 'node:crypto';

/**
 * A fixed-capacity table whose entries are named by tokens: a slot index and a random 32-bit
 * generation (docs/peers.md, "What a peer trusts"). Both ends of a tunnel look datagrams up by a
 * token they minted themselves, so a lookup is one array read and one compare, and a datagram with
 * a guessed or stale token (a freed slot gets a new generation) finds nothing: a forger who can
 * send from a peer's address still has to guess 32 random bits per try.
 *
 * Capacity is fixed at construction: a flood cannot grow it, a full table refuses.
 */
export class TokenTable<T> {
  readonly capacity: number;
  readonly #values: (T | undefined)[];
  readonly #gens: Uint32Array;
  readonly #free: Int32Array;
  #freeTop: number;
  #size = 0;
  readonly #random = new Uint32Array(256);
  #randomLeft = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.#values = new Array<T | undefined>(capacity).fill(undefined);
    this.#gens = new Uint32Array(capacity);
    this.#free = new Int32Array(capacity);
    // Lowest slots first: a small table stays small in the datagrams' tokens too.
    for (let i = 0; i < capacity; i++) this.#free[i] = capacity - 1 - i;
    this.#freeTop = capacity;
  }

  get size(): number {
    return this.#size;
  }

  /** Stores `value` and returns its slot (its generation: {@link gen}), or -1 if the table is full. */
  add(value: T): number {
    if (this.#freeTop === 0) return -1;
    const slot = this.#free[--this.#freeTop]!;
    this.#values[slot] = value;
    this.#gens[slot] = this.#nextGen();
    this.#size++;
    return slot;
  }

  gen(slot: number): number {
    return this.#gens[slot]!;
  }

  /** The value under a token, or undefined if the slot is free, out of range or of another generation. */
  get(slot: number, gen: number): T | undefined {
    if (slot >= this.capacity || gen === 0 || this.#gens[slot] !== gen) return undefined;
    return this.#values[slot];
  }

  /** Frees a slot (its generation dies with it); idempotent for a token that is already stale. */
  delete(slot: number, gen: number): boolean {
    if (this.get(slot, gen) === undefined) return false;
    this.#values[slot] = undefined;
    this.#gens[slot] = 0;
    this.#free[this.#freeTop++] = slot;
    this.#size--;
    return true;
  }

  /** Every stored value (O(capacity); for sweeps and shutdown, not per datagram). */
  *values(): IterableIterator<T> {
    for (let i = 0; i < this.capacity; i++) {
      const v = this.#values[i];
      if (v !== undefined) yield v;
    }
  }

  #nextGen(): number {
    for (;;) {
      if (this.#randomLeft === 0) {
        getRandomValues(this.#random);
        this.#randomLeft = this.#random.length;
      }
      const g = this.#random[--this.#randomLeft]!;
      if (g !== 0) return g;
    }
  }
}
