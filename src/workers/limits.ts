import { hashHi } from './hash.ts';

/**
 * Admission limits shared by every worker thread, in SharedArrayBuffers (docs/workers.md, "Shared
 * limits"): N workers must not multiply the probe budget, the session cap or a source's share.
 * Each class implements the small interface the admission code takes, so the single-process
 * implementations (TokenBucket, a counter, a Map) and these can be swapped.
 *
 * Time: `now` must be comparable across threads. Each thread's `performance.now()` counts from its
 * own start, so workers pass `performance.timeOrigin + performance.now()` (see worker.ts).
 */

/** A probe budget: `n` datagrams to backends, now or never. TokenBucket has the same shape. */
export interface Budget {
  take(now: number, n: number): boolean;
}

/** The global session cap. */
export interface SessionSlots {
  tryAcquire(): boolean;
  release(): void;
}

/** Flows being routed at once per client IP. */
export interface SourceShares {
  tryAcquire(source: string): boolean;
  release(source: string): void;
}

/**
 * A token bucket (routing/token-bucket.ts semantics) whose state lives in shared memory. Two
 * doubles change together, which Atomics cannot do on Float64Array, so a one-word spin lock
 * guards them; the critical section is a few arithmetic operations and runs once per new flow.
 */
export class SharedTokenBucket implements Budget {
  readonly buffer: SharedArrayBuffer;
  readonly #lock: Int32Array;
  readonly #f: Float64Array;

  static create(ratePerSecond: number, burst: number, now: number): SharedTokenBucket {
    const b = new SharedTokenBucket(new SharedArrayBuffer(8 + 4 * 8));
    b.#f[0] = burst;
    b.#f[1] = now;
    b.#f[2] = ratePerSecond;
    b.#f[3] = burst;
    return b;
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#lock = new Int32Array(buffer, 0, 2);
    this.#f = new Float64Array(buffer, 8, 4);
  }

  take(now: number, n = 1): boolean {
    const lock = this.#lock;
    while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) {
      // Another worker is inside a few arithmetic operations: spin.
    }
    const f = this.#f;
    let tokens = f[0]!;
    if (now > f[1]!) {
      tokens = Math.min(f[3]!, tokens + ((now - f[1]!) * f[2]!) / 1000);
      f[1] = now;
    }
    const ok = tokens >= n;
    f[0] = ok ? tokens - n : tokens;
    Atomics.store(lock, 0, 0);
    return ok;
  }

  get tokens(): number {
    return this.#f[0]!;
  }
}

/** A counter with a cap: sessions (probing and established) in all workers together. */
export class SharedSessionSlots implements SessionSlots {
  readonly buffer: SharedArrayBuffer;
  readonly #a: Int32Array;

  static create(max: number): SharedSessionSlots {
    const s = new SharedSessionSlots(new SharedArrayBuffer(8));
    s.#a[1] = max;
    return s;
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#a = new Int32Array(buffer);
  }

  tryAcquire(): boolean {
    if (Atomics.add(this.#a, 0, 1) < this.#a[1]!) return true;
    Atomics.sub(this.#a, 0, 1);
    return false;
  }

  release(): void {
    Atomics.sub(this.#a, 0, 1);
  }

  get used(): number {
    return Atomics.load(this.#a, 0);
  }
}

/**
 * Per-source shares in a fixed-size table: a source IP hashes to one of `slots` counters, each
 * capped at `max`. Memory is fixed whatever a flood forges; two sources that share a slot share
 * its cap (with 4096 slots, rare, and never worse than a cap on both).
 */
export class SharedSourceShares implements SourceShares {
  readonly buffer: SharedArrayBuffer;
  readonly #a: Int32Array;
  readonly #mask: number;

  static create(maxPerSource: number, slots = 4096): SharedSourceShares {
    let n = 16;
    while (n < slots) n *= 2;
    const s = new SharedSourceShares(new SharedArrayBuffer((n + 1) * 4));
    s.#a[0] = maxPerSource;
    return s;
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#a = new Int32Array(buffer);
    this.#mask = this.#a.length - 2;
  }

  #slot(source: string): number {
    return 1 + (hashHi(source) & this.#mask);
  }

  tryAcquire(source: string): boolean {
    const i = this.#slot(source);
    if (Atomics.add(this.#a, i, 1) < this.#a[0]!) return true;
    Atomics.sub(this.#a, i, 1);
    return false;
  }

  release(source: string): void {
    const i = this.#slot(source);
    if (Atomics.sub(this.#a, i, 1) <= 0) Atomics.store(this.#a, i, 0);
  }

  pending(source: string): number {
    return Atomics.load(this.#a, this.#slot(source));
  }
}
