// The tier harness's media datagrams and the bookkeeping both ends keep about them.
//
// A datagram looks like RTP to the proxy (first byte 0x80: RFC 7983's RTP/RTCP class, so it is
// never mistaken for STUN or DTLS) and carries what the ends need to measure without asking each
// other: the session id, a sequence number and the send time (the client's performance.now(); only
// the client reads it back, from the fake JVB's echo, so one clock is enough).
//
//   0: 0x80  1: 0x60 (payload type 96)  2-5: session id  6-9: sequence  10-17: send time (float64, ms)

export const MEDIA_HEADER = 18;

export function writeMedia(buf: Buffer, sid: number, seq: number, sentAt: number): void {
  buf[0] = 0x80;
  buf[1] = 0x60;
  buf.writeUInt32BE(sid, 2);
  buf.writeUInt32BE(seq, 6);
  buf.writeDoubleBE(sentAt, 10);
}

/** True for a datagram of this format (anything else — STUN, stray bytes — is not media here). */
export function isMedia(buf: Buffer): boolean {
  return buf.length >= MEDIA_HEADER && buf[0] === 0x80 && buf[1] === 0x60;
}

export const mediaSid = (buf: Buffer): number => buf.readUInt32BE(2);
export const mediaSeq = (buf: Buffer): number => buf.readUInt32BE(6);
export const mediaSentAt = (buf: Buffer): number => buf.readDoubleBE(10);

/** Which sequence numbers arrived (duplicates count once), growing as needed. */
export class SeqSet {
  #bits = new Uint8Array(1024);

  add(seq: number): boolean {
    const byte = seq >>> 3;
    if (byte >= this.#bits.length) {
      const next = new Uint8Array(Math.max(this.#bits.length * 2, byte + 1));
      next.set(this.#bits);
      this.#bits = next;
    }
    const bit = 1 << (seq & 7);
    if ((this.#bits[byte]! & bit) !== 0) return false;
    this.#bits[byte]! |= bit;
    return true;
  }

  /** How many of [from, to) arrived. */
  countIn(from: number, to: number): number {
    let n = 0;
    for (let s = from; s < to; s++) {
      const byte = s >>> 3;
      if (byte < this.#bits.length && (this.#bits[byte]! & (1 << (s & 7))) !== 0) n++;
    }
    return n;
  }

  /** Longest run of missing sequence numbers in [from, to). */
  longestHole(from: number, to: number): number {
    let run = 0;
    let best = 0;
    for (let s = from; s < to; s++) {
      const byte = s >>> 3;
      const has = byte < this.#bits.length && (this.#bits[byte]! & (1 << (s & 7))) !== 0;
      run = has ? 0 : run + 1;
      if (run > best) best = run;
    }
    return best;
  }
}

/** The q-quantile (0..1) of `values`, nearest rank; NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
