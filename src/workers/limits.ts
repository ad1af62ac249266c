import type { Budget, SessionSlots } from '../defs/interfaces.ts';

/**
 * Admission limits shared by every worker thread, in SharedArrayBuffers (docs/workers.md, "Shared
 * limits"): N workers must not multiply the probe budgets or the session cap.
 * Each class implements the interface the data path takes (routing/token-bucket.ts Budget,
 * session/registry.ts SessionSlots), so the single-process implementations and these can be
 * swapped.
 *
 * Time: `now` must be comparable across threads. Each thread's `performance.now()` counts from its
 * own start, so workers pass `performance.timeOrigin + performance.now()` (see src/pod/worker-thread.ts).
 */

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
 * What one of `n` workers takes of the per-source limits (docs/workers.md, "Shared limits"): the
 * budgets and the session cap are shared, but a source's fair share and its flows being routed at
 * once are kept by each worker, each at 1/N. The kernel spreads 5-tuples over the workers, so a
 * source's flows (and a flood's sources) spread too; a source's total stays about what one process
 * would allow it, and the sum of all shares stays the global rate (so share-abiding traffic does
 * not empty the shared bucket for the other workers).
 */
export function perWorkerLimits(
  config: {
    readonly probeRate: number;
    readonly directedProbeRate: number;
    readonly maxPendingPerSource: number;
  },
  n: number,
): { maxPendingPerSource: number; shareRates: [number, number] } {
  return {
    maxPendingPerSource: Math.max(1, Math.ceil(config.maxPendingPerSource / n)),
    shareRates: [config.probeRate / n, config.directedProbeRate / n],
  };
}
