import type { Budget } from '../defs/interfaces.ts';

/**
 * A token bucket on an injected clock: `rate` tokens per second, at most `burst` saved up.
 * Used for the global probe budgets: a fan-out probe multiplies a client's datagram by the number
 * of backends, so an unbounded prober would be an amplifier aimed at our own pods.
 */
export class TokenBucket implements Budget {
  readonly rate: number;
  readonly burst: number;
  #tokens: number;
  #last: number;

  constructor(ratePerSecond: number, burst: number, now: number) {
    this.rate = ratePerSecond;
    this.burst = burst;
    this.#tokens = burst;
    this.#last = now;
  }

  /** Takes `n` tokens if all are there; otherwise takes none and returns false. */
  take(now: number, n = 1): boolean {
    if (now > this.#last) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) * this.rate) / 1000);
      this.#last = now;
    }
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }
}
