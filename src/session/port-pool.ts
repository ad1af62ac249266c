/**
 * Upstream ports for sessions, handed out oldest-released first, never within `quarantineMs` of
 * their release.
 *
 * Why: the backend identifies an ICE remote by the source address of the proxy's upstream socket.
 * If a port were reused right after its session ended, a backend could take the new session's
 * packets for the old remote (ice4j keeps the old pair until its own 60 s expiry; DESIGN.md,
 * "Data path" §4). A FIFO of released ports gives the longest possible rest to every port, and the
 * head of the queue is always the port released longest ago, so one comparison decides.
 *
 * Ports that the OS refuses (EADDRINUSE: someone else holds them) go back to the tail via
 * {@link PortPool.release} and are retried a full cycle later.
 */
export class PortPool {
  readonly first: number;
  readonly last: number;
  readonly quarantineMs: number;
  readonly #ports: Int32Array;
  readonly #releasedAt: Float64Array;
  #head = 0;
  #count: number;

  constructor(first: number, last: number, quarantineMs: number) {
    this.first = first;
    this.last = last;
    this.quarantineMs = quarantineMs;
    const size = last - first + 1;
    this.#ports = new Int32Array(size);
    this.#releasedAt = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      this.#ports[i] = first + i;
      this.#releasedAt[i] = Number.NEGATIVE_INFINITY;
    }
    this.#count = size;
  }

  get size(): number {
    return this.#ports.length;
  }

  /** Ports in the queue, resting or ready. */
  get available(): number {
    return this.#count;
  }

  /** A port whose quarantine is over, or -1 if none is (all in use or all resting). */
  acquire(now: number): number {
    if (this.#count === 0) return -1;
    const at = this.#head;
    if (now - this.#releasedAt[at]! < this.quarantineMs) return -1;
    this.#head = (at + 1) % this.#ports.length;
    this.#count--;
    return this.#ports[at]!;
  }

  /** Returns a port to the tail of the queue; its quarantine starts at `now`. */
  release(port: number, now: number): void {
    if (port < this.first || port > this.last || this.#count === this.#ports.length) return;
    const tail = (this.#head + this.#count) % this.#ports.length;
    this.#ports[tail] = port;
    this.#releasedAt[tail] = now;
    this.#count++;
  }
}
