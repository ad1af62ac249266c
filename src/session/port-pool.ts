/**
 * Upstream ports for sessions. A port on which a backend ever answered a Binding success rests
 * `quarantineMs` after its session ends and is handed out again oldest-released first; a port on
 * which no backend ever answered returns at once.
 *
 * Why the quarantine: the backend identifies an ICE remote by the source address of the proxy's
 * upstream socket. If such a port were reused right after its session ended, a backend could take
 * the new session's packets for the old remote (ice4j keeps the old pair until its own 60 s
 * expiry; docs/architecture.md, "Sessions"). A FIFO of released ports gives the longest possible
 * rest to every port, and the head of the queue is always the port released longest ago, so one
 * comparison decides.
 *
 * Why only after a success: a backend that dropped or refused every check on a port (JVB drops a
 * check for a ufrag it does not know; libwebrtc answers 401) holds no state for that remote, so
 * there is nothing to wait for. Without this, a flood of forged first checks, each taking a port
 * that then rests a minute, would exhaust the range in seconds (docs/architecture.md, "Admission").
 *
 * Ports that the OS refuses (EADDRINUSE: someone else holds them) go back via
 * {@link PortPool.release} with quarantine and are retried a full cycle later.
 */
export class PortPool {
  readonly first: number;
  readonly last: number;
  readonly quarantineMs: number;
  readonly #ports: Int32Array;
  readonly #releasedAt: Float64Array;
  #head = 0;
  #count: number;
  /** Ports that never saw a success: reusable at once (a stack). */
  readonly #clean: Int32Array;
  #cleanCount = 0;

  constructor(first: number, last: number, quarantineMs: number) {
    this.first = first;
    this.last = last;
    this.quarantineMs = quarantineMs;
    const size = last - first + 1;
    this.#ports = new Int32Array(size);
    this.#releasedAt = new Float64Array(size);
    this.#clean = new Int32Array(size);
    for (let i = 0; i < size; i++) {
      this.#ports[i] = first + i;
      this.#releasedAt[i] = Number.NEGATIVE_INFINITY;
    }
    this.#count = size;
  }

  get size(): number {
    return this.#ports.length;
  }

  /** Ports not in use: resting, ready, or clean. */
  get available(): number {
    return this.#count + this.#cleanCount;
  }

  /** Ports resting in quarantine or waiting in the queue. */
  get queued(): number {
    return this.#count;
  }

  /** A clean port, else one whose quarantine is over, or -1 if none is (all in use or resting). */
  acquire(now: number): number {
    if (this.#cleanCount > 0) return this.#clean[--this.#cleanCount]!;
    if (this.#count === 0) return -1;
    const at = this.#head;
    if (now - this.#releasedAt[at]! < this.quarantineMs) return -1;
    this.#head = (at + 1) % this.#ports.length;
    this.#count--;
    return this.#ports[at]!;
  }

  /**
   * Returns a port. `quarantine`: a backend answered a success on it (or the OS refused it), so it
   * goes to the tail of the queue and rests from `now`; otherwise it is reusable at once.
   */
  release(port: number, now: number, quarantine = true): void {
    if (port < this.first || port > this.last || this.available === this.#ports.length) return;
    if (!quarantine) {
      this.#clean[this.#cleanCount++] = port;
      return;
    }
    const tail = (this.#head + this.#count) % this.#ports.length;
    this.#ports[tail] = port;
    this.#releasedAt[tail] = now;
    this.#count++;
  }
}
