import { getRandomValues } from 'node:crypto';
import { isIP } from 'node:net';

/**
 * The peer protocol's bytes (docs/peers.md, "Wire format"): what the replicas of one proxy tier
 * send each other on `--peer-port`. Versioned and bounds-checked; nothing here throws on input —
 * a datagram that does not fit is a numeric result the caller counts by reason.
 *
 * Every message starts with a 4-byte header: 'I' 'P' (0x49 0x50), the version, the type. Two
 * families follow (a datagram holds one data message, or one or more control messages back to
 * back: {@link controlLength}):
 * - control (ping, pong, query, answer, release): the sender's 64-bit instance id next, so a
 *   replica recognises its own datagrams (itself in the peer list) and a peer that restarted;
 * - data (up, down): a 64-bit tunnel token minted by the receiving side, then the client's datagram
 *   as it was. The 12 header bytes are the same for every datagram of a tunnel, so a tunnel keeps
 *   one header buffer and sends it with the payload as a two-part datagram: nothing is copied.
 *
 * A token is a 32-bit slot of the minting side's table and a random 32-bit generation (never 0).
 */

export const MAGIC0 = 0x49;
export const MAGIC1 = 0x50;
export const VERSION = 1;

export const MsgType = {
  Ping: 1,
  Pong: 2,
  /** Receiver → every peer: whose is this client 5-tuple (and, for a check, this USERNAME)? */
  Query: 3,
  /** Peer → receiver: not mine, or mine with a tunnel token. */
  Answer: 4,
  /** Either side: forget the tunnel that *you* minted this token for. */
  Release: 5,
  /** Receiver → owner: a client datagram of a tunneled flow. */
  Up: 6,
  /** Owner → receiver: a datagram for the client of a tunneled flow. */
  Down: 7,
} as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];

/** What {@link peekType} returns besides a type. */
export const Malformed = -1;
/** The magic is ours but the version is not: a peer of another release. */
export const BadVersion = -2;

export const HEADER = 4;
/** Header + a token: the prefix of every up / down datagram. */
export const DATA_HEADER = 12;
/** Header + instance id: the prefix of every control message. */
const CONTROL = 12;

/** Answer results. */
export const Owned = {
  None: 0,
  /** The client 5-tuple is an endpoint of one of the owner's sessions. */
  Flow: 1,
  /** The check's USERNAME is one of the owner's sessions' ufrag pairs (a new 5-tuple of it). */
  Ufrag: 2,
} as const;
export type Owned = (typeof Owned)[keyof typeof Owned];

/** Pong/ping flags. */
export const FLAG_DRAINING = 1;

/** RFC 8489 §14.3: USERNAME is at most 513 bytes. */
export const USERNAME_MAX = 513;
/** Longest IP literal text dgram reports (IPv6 with an IPv4 tail, 45 characters). */
const ADDRESS_MAX = 45;

/** The type of a peer datagram, or {@link Malformed} / {@link BadVersion}. O(1), no allocation. */
export function peekType(buf: Uint8Array): number {
  if (buf.length < HEADER || buf[0] !== MAGIC0 || buf[1] !== MAGIC1) return Malformed;
  if (buf[2] !== VERSION) return BadVersion;
  const t = buf[3]!;
  if (t < MsgType.Ping || t > MsgType.Down) return Malformed;
  const min = t === MsgType.Up || t === MsgType.Down ? DATA_HEADER : MIN_LENGTH[t]!;
  return buf.length < min ? Malformed : t;
}

/**
 * The length of the control message at `off` (ping, pong, query, answer, release), or
 * {@link Malformed} / {@link BadVersion}. A control datagram may carry several messages back to
 * back (the peer socket coalesces what one event-loop turn sends to one peer port: a burst of
 * moved flows is a burst of queries and answers); each message is self-delimiting. O(1).
 */
export function controlLength(buf: Uint8Array, off: number): number {
  const left = buf.length - off;
  if (left < HEADER || buf[off] !== MAGIC0 || buf[off + 1] !== MAGIC1) return Malformed;
  if (buf[off + 2] !== VERSION) return BadVersion;
  const t = buf[off + 3]!;
  if (t < MsgType.Ping || t > MsgType.Release) return Malformed;
  const min = MIN_LENGTH[t]!;
  if (left < min) return Malformed;
  if (t !== MsgType.Query) return min;
  const alen = buf[off + CONTROL + 8]!;
  const u = off + CONTROL + 8 + 1 + alen + 2;
  if (u + 2 > buf.length) return Malformed;
  const n = CONTROL + 8 + 1 + alen + 2 + 2 + ((buf[u]! << 8) | buf[u + 1]!);
  return n > left ? Malformed : n;
}

const MIN_LENGTH: number[] = [];
MIN_LENGTH[MsgType.Ping] = CONTROL + 6;
MIN_LENGTH[MsgType.Pong] = CONTROL + 6;
MIN_LENGTH[MsgType.Query] = CONTROL + 8 + 1 + 2 + 1 + 2;
MIN_LENGTH[MsgType.Answer] = CONTROL + 8 + 1 + 8;
MIN_LENGTH[MsgType.Release] = CONTROL + 9;

function header(buf: Buffer, type: MsgType): void {
  buf[0] = MAGIC0;
  buf[1] = MAGIC1;
  buf[2] = VERSION;
  buf[3] = type;
}

/** A 64-bit instance id as two unsigned 32-bit halves. */
export interface Instance {
  readonly hi: number;
  readonly lo: number;
}

/** A replica's random instance id, drawn once at start (every thread of the replica shares it). */
export function newInstance(): Instance {
  const r = getRandomValues(new Uint32Array(2));
  // Never all zero: a peer's id 0/0 means "not heard from yet" (peer-set.ts).
  return { hi: r[0]! || 1, lo: r[1]! };
}

function control(type: MsgType, length: number, self: Instance): Buffer {
  const b = Buffer.alloc(length);
  header(b, type);
  b.writeUInt32BE(self.hi, 4);
  b.writeUInt32BE(self.lo, 8);
  return b;
}

export function instanceHi(buf: Uint8Array): number {
  return readU32(buf, 4);
}
export function instanceLo(buf: Uint8Array): number {
  return readU32(buf, 8);
}

// --- ping / pong ---------------------------------------------------------------------------------

/** Ping and pong: a sequence number (echoed), the sender's worker count and flags. */
export function encodeHeartbeat(
  type: typeof MsgType.Ping | typeof MsgType.Pong,
  self: Instance,
  seq: number,
  workers: number,
  flags: number,
): Buffer {
  const b = control(type, CONTROL + 6, self);
  b.writeUInt32BE(seq >>> 0, CONTROL);
  b[CONTROL + 4] = workers;
  b[CONTROL + 5] = flags;
  return b;
}

export interface Heartbeat {
  seq: number;
  workers: number;
  flags: number;
}

/** Fills `out` from a ping or pong ({@link peekType} checked the length); false if it is unfit. */
export function decodeHeartbeat(buf: Uint8Array, out: Heartbeat): boolean {
  out.seq = readU32(buf, CONTROL);
  out.workers = buf[CONTROL + 4]!;
  out.flags = buf[CONTROL + 5]!;
  return out.workers >= 1;
}

// --- query ---------------------------------------------------------------------------------------

export interface Query {
  /** The asking side's token for this flow: answers and down datagrams carry it. */
  slot: number;
  gen: number;
  address: string;
  port: number;
  /** USERNAME bytes of the check that started the round, or undefined for a 5-tuple query. */
  username: Buffer | undefined;
}

/**
 * A query: token (8), address length (1) and text (IP literal, latin1), port (2), USERNAME length
 * (2) and bytes (0 = none: ask by 5-tuple only).
 */
export function encodeQuery(
  self: Instance,
  slot: number,
  gen: number,
  address: string,
  port: number,
  username: Uint8Array | undefined,
  uStart = 0,
  uEnd = username === undefined ? 0 : username.length,
): Buffer {
  const ulen = username === undefined ? 0 : uEnd - uStart;
  const b = control(MsgType.Query, CONTROL + 8 + 1 + address.length + 2 + 2 + ulen, self);
  let o = CONTROL;
  b.writeUInt32BE(slot >>> 0, o);
  b.writeUInt32BE(gen >>> 0, o + 4);
  o += 8;
  b[o++] = address.length;
  b.write(address, o, 'latin1');
  o += address.length;
  b.writeUInt16BE(port, o);
  o += 2;
  b.writeUInt16BE(ulen, o);
  o += 2;
  if (username !== undefined) b.set(username.subarray(uStart, uEnd), o);
  return b;
}

/** Fills `out` from a query; false if any field is out of bounds (counted as malformed). */
export function decodeQuery(buf: Buffer, out: Query): boolean {
  let o = CONTROL;
  out.slot = readU32(buf, o);
  out.gen = readU32(buf, o + 4);
  o += 8;
  const alen = buf[o++]!;
  if (alen === 0 || alen > ADDRESS_MAX || o + alen + 4 > buf.length) return false;
  const address = buf.toString('latin1', o, o + alen);
  if (isIP(address) === 0) return false;
  o += alen;
  const port = (buf[o]! << 8) | buf[o + 1]!;
  o += 2;
  const ulen = (buf[o]! << 8) | buf[o + 1]!;
  o += 2;
  if (port === 0 || ulen > USERNAME_MAX || o + ulen !== buf.length || out.gen === 0) return false;
  out.address = address;
  out.port = port;
  out.username = ulen === 0 ? undefined : buf.subarray(o, o + ulen);
  return true;
}

// --- answer --------------------------------------------------------------------------------------

export interface Answer {
  /** The asker's token (from its query). */
  slot: number;
  gen: number;
  owned: Owned;
  /** The owner's token for the tunnel (0/0 when not owned). */
  ownerSlot: number;
  ownerGen: number;
}

export function encodeAnswer(
  self: Instance,
  slot: number,
  gen: number,
  owned: Owned,
  ownerSlot: number,
  ownerGen: number,
): Buffer {
  const b = control(MsgType.Answer, CONTROL + 17, self);
  b.writeUInt32BE(slot >>> 0, CONTROL);
  b.writeUInt32BE(gen >>> 0, CONTROL + 4);
  b[CONTROL + 8] = owned;
  b.writeUInt32BE(ownerSlot >>> 0, CONTROL + 9);
  b.writeUInt32BE(ownerGen >>> 0, CONTROL + 13);
  return b;
}

export function decodeAnswer(buf: Uint8Array, out: Answer): boolean {
  if (buf.length !== CONTROL + 17) return false;
  out.slot = readU32(buf, CONTROL);
  out.gen = readU32(buf, CONTROL + 4);
  const owned = buf[CONTROL + 8]!;
  if (owned > Owned.Ufrag) return false;
  out.owned = owned as Owned;
  out.ownerSlot = readU32(buf, CONTROL + 9);
  out.ownerGen = readU32(buf, CONTROL + 13);
  return owned === Owned.None || out.ownerGen !== 0;
}

// --- release -------------------------------------------------------------------------------------

/** Which of the recipient's tables a release names. */
export const ReleaseOf = {
  /** Sent by an owner: the recipient's tunnel to it (the receiver's token). */
  Receiving: 0,
  /** Sent by a receiver: the recipient's tunnel from it (the owner's token). */
  Owning: 1,
} as const;
export type ReleaseOf = (typeof ReleaseOf)[keyof typeof ReleaseOf];

/** Release: the recipient's own token of the tunnel it should forget, and which side it is on. */
export function encodeRelease(self: Instance, which: ReleaseOf, slot: number, gen: number): Buffer {
  const b = control(MsgType.Release, CONTROL + 9, self);
  b.writeUInt32BE(slot >>> 0, CONTROL);
  b.writeUInt32BE(gen >>> 0, CONTROL + 4);
  b[CONTROL + 8] = which;
  return b;
}

/** The side a release names, or -1 if the byte is out of range. */
export function releaseOf(buf: Uint8Array): number {
  const w = buf[CONTROL + 8]!;
  return w <= ReleaseOf.Owning ? w : -1;
}

export function releaseSlot(buf: Uint8Array): number {
  return readU32(buf, CONTROL);
}
export function releaseGen(buf: Uint8Array): number {
  return readU32(buf, CONTROL + 4);
}

// --- data ----------------------------------------------------------------------------------------

/** The 12 bytes that precede every datagram of one tunnel in one direction. */
export function dataHeader(type: typeof MsgType.Up | typeof MsgType.Down, slot: number, gen: number): Buffer {
  const b = Buffer.alloc(DATA_HEADER);
  header(b, type);
  b.writeUInt32BE(slot >>> 0, 4);
  b.writeUInt32BE(gen >>> 0, 8);
  return b;
}

/** The token of an up / down datagram (the recipient's own). */
export function dataSlot(buf: Uint8Array): number {
  return readU32(buf, 4);
}
export function dataGen(buf: Uint8Array): number {
  return readU32(buf, 8);
}

function readU32(buf: Uint8Array, o: number): number {
  return ((buf[o]! << 24) | (buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!) >>> 0;
}
