/**
 * The hand-off path between two worker threads: a single-producer single-consumer byte ring in a
 * SharedArrayBuffer, one per ordered pair of workers, plus one doorbell per consumer that producers
 * ring with Atomics.notify (docs/workers.md, "Hand-off").
 *
 * Record: u16 record length (header + address + data, padded to 4; 0 = wrap to the start), u8
 * address length, u8 spare, u16 client port, u16 data length, the address (latin1: an IP literal),
 * the datagram. `head` and `tail` are byte counters that only grow (mod 2^32); the producer alone
 * writes `head`, the consumer alone writes `tail`.
 */

/** Atomics.waitAsync (ES2024; Node >= 16): typed here because the project's lib is ES2023. */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<unknown> | string };
  }
).waitAsync;

const HEADER_INTS = 4; // head, tail, pushed, dropped
const REC_HEADER = 8;
const MAX_ADDRESS = 64;

export class HandoffRing {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly #h: Int32Array;
  readonly #data: Buffer;
  readonly #view: DataView;

  /** `capacity` bytes of records (a power of two, at least 64 KiB). */
  static create(capacity = 256 * 1024): HandoffRing {
    let cap = 65536;
    while (cap < capacity) cap *= 2;
    return new HandoffRing(new SharedArrayBuffer(HEADER_INTS * 4 + cap));
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#h = new Int32Array(buffer, 0, HEADER_INTS);
    this.capacity = buffer.byteLength - HEADER_INTS * 4;
    this.#data = Buffer.from(buffer, HEADER_INTS * 4, this.capacity);
    this.#view = new DataView(buffer, HEADER_INTS * 4, this.capacity);
  }

  /**
   * Producer: copies one datagram in. False (and counted) if it does not fit now, or ever (a
   * record may take at most a quarter of the ring: 16 KiB of a 64 KiB ring; media datagrams are
   * ≤ 1500 B).
   */
  push(buf: Uint8Array, address: string, port: number): boolean {
    const h = this.#h;
    const alen = address.length;
    const size = (REC_HEADER + alen + buf.length + 3) & ~3;
    if (alen > MAX_ADDRESS || buf.length > 0xffff || size > this.capacity / 4) {
      h[3]!++;
      return false;
    }
    const head = Atomics.load(h, 0) >>> 0;
    const tail = Atomics.load(h, 1) >>> 0;
    const cap = this.capacity;
    let pos = head & (cap - 1);
    let skip = 0;
    if (pos + size > cap) skip = cap - pos; // does not fit before the end: wrap first
    if (((head - tail) >>> 0) + skip + size > cap) {
      h[3]!++;
      return false;
    }
    const v = this.#view;
    if (skip > 0) {
      v.setUint16(pos, 0, true);
      pos = 0;
    }
    v.setUint8(pos + 2, alen);
    v.setUint16(pos + 4, port, true);
    v.setUint16(pos + 6, buf.length, true);
    this.#data.write(address, pos + REC_HEADER, alen, 'latin1');
    this.#data.set(buf, pos + REC_HEADER + alen);
    v.setUint16(pos, size, true);
    h[2]!++;
    // Publishing `head` makes the record (written above) visible to the consumer.
    Atomics.store(h, 0, (head + skip + size) | 0);
    return true;
  }

  /**
   * Consumer: hands up to `max` records to `deliver`, each as a fresh Buffer (the data path keeps
   * request bytes for transaction matching, so it cannot borrow ring memory). Returns how many.
   */
  drain(deliver: (buf: Buffer, address: string, port: number) => void, max: number): number {
    const h = this.#h;
    const cap = this.capacity;
    const v = this.#view;
    let tail = Atomics.load(h, 1) >>> 0;
    const head = Atomics.load(h, 0) >>> 0;
    let n = 0;
    while (tail !== head && n < max) {
      let pos = tail & (cap - 1);
      let size = v.getUint16(pos, true);
      if (size === 0) {
        tail = (tail + (cap - pos)) >>> 0;
        pos = 0;
        size = v.getUint16(0, true);
      }
      const alen = v.getUint8(pos + 2);
      const port = v.getUint16(pos + 4, true);
      const dlen = v.getUint16(pos + 6, true);
      const address = this.#data.toString('latin1', pos + REC_HEADER, pos + REC_HEADER + alen);
      const at = pos + REC_HEADER + alen;
      const out = Buffer.allocUnsafe(dlen);
      this.#data.copy(out, 0, at, at + dlen);
      tail = (tail + size) >>> 0;
      // Free the space before delivering: the consumer may push elsewhere from inside `deliver`.
      Atomics.store(h, 1, tail | 0);
      n++;
      deliver(out, address, port);
    }
    return n;
  }

  get pushed(): number {
    return this.#h[2]!;
  }

  get dropped(): number {
    return this.#h[3]!;
  }
}

/**
 * One per consumer worker: [bell, sleeping]. The consumer reads `bell`, sets `sleeping`, drains
 * every ring, then waits for `bell` to change; a producer that finds `sleeping` set clears it,
 * bumps `bell` and notifies. Reading `bell` before setting `sleeping` closes the race in which a
 * record lands after the last drain: either that producer rings, or one that rang after the read
 * already changed `bell` and the wait returns at once.
 */
export class Doorbell {
  readonly buffer: SharedArrayBuffer;
  readonly #a: Int32Array;

  static create(): Doorbell {
    return new Doorbell(new SharedArrayBuffer(8));
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#a = new Int32Array(buffer);
  }

  /** Producer, after a push. */
  ring(): void {
    if (Atomics.exchange(this.#a, 1, 0) === 1) {
      Atomics.add(this.#a, 0, 1);
      Atomics.notify(this.#a, 0);
    }
  }

  /** Consumer: read the bell, then declare sleep (in this order; see above). */
  arm(): number {
    const seen = Atomics.load(this.#a, 0);
    Atomics.store(this.#a, 1, 1);
    return seen;
  }

  /** Consumer: resolves when the bell moved past `seen` (at once if it already has). */
  wait(seen: number): Promise<unknown> | undefined {
    const r = waitAsync(this.#a, 0, seen);
    return r.async ? (r.value as Promise<unknown>) : undefined;
  }

  /** Wakes the consumer whatever its state (shutdown). */
  wake(): void {
    Atomics.add(this.#a, 0, 1);
    Atomics.notify(this.#a, 0);
  }
}
