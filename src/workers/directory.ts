/**
 * The cross-worker directory: ufrag pair (USERNAME "server:client") → the worker that owns the
 * established session, in one SharedArrayBuffer that every worker thread maps (docs/workers.md,
 * "Directory").
 *
 * Open addressing over 64-bit key hashes (src/workers/hash.ts), linear probing bounded to
 * {@link MAX_PROBE} slots, so every operation is O(1) however full or stale the table gets. A slot
 * is three Int32s: state, key hi, key lo. State: 0 empty, -1 deleted (tombstone, reusable), -2
 * being written, w + 1 owned by worker w. A writer claims a slot with compareExchange, writes the
 * key, then publishes the owner with a store (Atomics give the ordering), so a reader that sees an
 * owner sees its key.
 *
 * Writers: only the owner inserts (on `established`) and deletes (on `closed`) its own entries.
 * Readers: any worker, for the first check of an unknown 5-tuple. Wrong answers are harmless by
 * design: a false positive (hash collision, a slot reused under a reader) hands the datagram to a
 * worker that has no such session, which then routes it as a new flow itself; a false negative (a
 * full probe window, an insert racing the lookup) makes the receiving worker route it as today.
 */

export const MAX_PROBE = 32;
const SLOT = 3;
const EMPTY = 0;
const TOMB = -1;
const BUSY = -2;

export class SharedDirectory {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly #a: Int32Array;
  readonly #mask: number;

  /** A new table of `capacity` slots (rounded up to a power of two). */
  static create(capacity: number): SharedDirectory {
    let cap = 1024;
    while (cap < capacity) cap *= 2;
    return new SharedDirectory(new SharedArrayBuffer(cap * SLOT * 4));
  }

  /** Another thread's view of the same table. */
  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#a = new Int32Array(buffer);
    this.capacity = this.#a.length / SLOT;
    this.#mask = this.capacity - 1;
  }

  /** The worker that owns key (hi, lo), or -1. */
  lookup(hi: number, lo: number): number {
    const a = this.#a;
    let i = (hi ^ Math.imul(lo, 0x9e3779b1)) & this.#mask;
    for (let n = 0; n < MAX_PROBE; n++) {
      const at = i * SLOT;
      const state = Atomics.load(a, at);
      if (state === EMPTY) return -1;
      if (state > 0 && a[at + 1] === hi && a[at + 2] === lo && Atomics.load(a, at) === state)
        return state - 1;
      i = (i + 1) & this.#mask;
    }
    return -1;
  }

  /**
   * Records `owner` for the key unless some worker already owns it (the first to establish keeps
   * it, as in the session table). False if the key was owned already or the probe window is full.
   */
  insert(hi: number, lo: number, owner: number): boolean {
    const a = this.#a;
    const start = (hi ^ Math.imul(lo, 0x9e3779b1)) & this.#mask;
    let free = -1;
    let i = start;
    for (let n = 0; n < MAX_PROBE; n++) {
      const at = i * SLOT;
      const state = Atomics.load(a, at);
      if (state === EMPTY) {
        if (free < 0) free = i;
        break;
      }
      if (state === TOMB) {
        if (free < 0) free = i;
      } else if (state > 0 && a[at + 1] === hi && a[at + 2] === lo) {
        return false;
      }
      i = (i + 1) & this.#mask;
    }
    // Claim the first free slot; another writer may have taken it meanwhile: try the next ones.
    for (let n = 0, j = free < 0 ? start : free; free >= 0 && n < MAX_PROBE; n++) {
      const at = j * SLOT;
      const state = Atomics.load(a, at);
      if ((state === EMPTY || state === TOMB) && Atomics.compareExchange(a, at, state, BUSY) === state) {
        a[at + 1] = hi;
        a[at + 2] = lo;
        Atomics.store(a, at, owner + 1);
        return true;
      }
      j = (j + 1) & this.#mask;
    }
    return false;
  }

  /** Deletes the key if `owner` holds it. */
  remove(hi: number, lo: number, owner: number): boolean {
    const a = this.#a;
    let i = (hi ^ Math.imul(lo, 0x9e3779b1)) & this.#mask;
    for (let n = 0; n < MAX_PROBE; n++) {
      const at = i * SLOT;
      const state = Atomics.load(a, at);
      if (state === EMPTY) return false;
      if (state === owner + 1 && a[at + 1] === hi && a[at + 2] === lo) {
        return Atomics.compareExchange(a, at, state, TOMB) === state;
      }
      i = (i + 1) & this.#mask;
    }
    return false;
  }

  /** Live entries (a scan: for tests and diagnostics, not the data path). */
  get size(): number {
    let n = 0;
    for (let i = 0; i < this.capacity; i++) if (Atomics.load(this.#a, i * SLOT) > 0) n++;
    return n;
  }
}
