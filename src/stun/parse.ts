import {
  ATTR_ERROR_CODE,
  ATTR_FINGERPRINT,
  ATTR_MESSAGE_INTEGRITY,
  ATTR_MESSAGE_INTEGRITY_SHA256,
  ATTR_USERNAME,
  BINDING_ERROR,
  BINDING_REQUEST,
  BINDING_SUCCESS,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  MESSAGE_INTEGRITY_LENGTH,
  TRANSACTION_ID_END,
  TRANSACTION_ID_OFFSET,
  USERNAME_MAX_BYTES,
} from './constants.ts';
import { crc32Range } from './crc32.ts';
import { isUtf8 } from './utf8.ts';

/**
 * Pure STUN reading for the hot path. Nothing here throws or allocates: results are numeric codes
 * and offsets written into a caller-owned object, so the data path can reuse one scratch object
 * for every datagram (parsers return views and fail by returning; docs/architecture.md, "Data path").
 */

/** Outcome of {@link parseBindingRequest}; 0 = usable Binding Request. */
export const ParseResult = {
  Ok: 0,
  /** Shorter than the 20-byte header. */
  Truncated: 1,
  /** Top two bits set or wrong magic cookie (RFC 8489 §5): not STUN at all. */
  NotStun: 2,
  /** Length field not a multiple of 4 or not the rest of the datagram (RFC 8489 §5–6). */
  BadLength: 3,
  /**
   * An attribute runs past the end of the message, or a MESSAGE-INTEGRITY whose length is not 20
   * (RFC 8489 §14.5: HMAC-SHA1), or a MESSAGE-INTEGRITY-SHA256 whose length is not 16–32 in steps
   * of 4 (§14.6).
   */
  BadAttribute: 4,
  /** Well-formed STUN, but not a Binding Request. */
  NotBindingRequest: 5,
  /** No USERNAME: an ICE check always carries one (RFC 8445 §7.2.2). */
  NoUsername: 6,
  /**
   * USERNAME empty, too long, not UTF-8 (RFC 8489 §14.3), or not "<server ufrag>:<client ufrag>"
   * with both ufrags non-empty (RFC 8445 §7.2.2, §5.3).
   */
  BadUsername: 7,
  /** No MESSAGE-INTEGRITY: every ICE check is signed (RFC 8445 §7.2.2). */
  NoIntegrity: 8,
  /** FINGERPRINT present but wrong, or not the last attribute (RFC 8489 §14.7). */
  BadFingerprint: 9,
} as const;
export type ParseResult = (typeof ParseResult)[keyof typeof ParseResult];

/** Where the USERNAME value sits in the datagram; filled by {@link parseBindingRequest}. */
export interface UsernameView {
  /** Offset of the USERNAME value. */
  start: number;
  /** Offset just past the USERNAME value. */
  end: number;
  /** Offset of the first ':' (end of the server ufrag, RFC 8445 §7.2.2). */
  colon: number;
}

export function newUsernameView(): UsernameView {
  return { start: 0, end: 0, colon: 0 };
}

/**
 * The STUN message type if `buf` has a valid STUN header whose length field matches the datagram
 * (RFC 8489 §6: top two bits zero, magic cookie, length a multiple of 4 equal to the rest), else -1.
 */
export function stunMessageType(buf: Uint8Array): number {
  const len = buf.length;
  if (len < HEADER_LENGTH) return -1;
  if ((buf[0]! & 0xc0) !== 0) return -1;
  if (readU32(buf, 4) !== MAGIC_COOKIE) return -1;
  const bodyLength = (buf[2]! << 8) | buf[3]!;
  if ((bodyLength & 3) !== 0 || bodyLength !== len - HEADER_LENGTH) return -1;
  return (buf[0]! << 8) | buf[1]!;
}

/**
 * Checks that `buf` is a Binding Request fit to open a flow and locates its USERNAME.
 * Walks every attribute with bounds checks (RFC 8489 §14: type(2) length(2) value padded to 4).
 * A FINGERPRINT, when present, must be last and correct; MESSAGE-INTEGRITY must be present (the
 * proxy cannot verify it: only the owning backend knows the ICE password).
 */
export function parseBindingRequest(buf: Uint8Array, out: UsernameView): ParseResult {
  const len = buf.length;
  if (len < HEADER_LENGTH) return ParseResult.Truncated;
  if ((buf[0]! & 0xc0) !== 0 || readU32(buf, 4) !== MAGIC_COOKIE) return ParseResult.NotStun;
  const bodyLength = (buf[2]! << 8) | buf[3]!;
  if ((bodyLength & 3) !== 0 || bodyLength !== len - HEADER_LENGTH) return ParseResult.BadLength;
  if (((buf[0]! << 8) | buf[1]!) !== BINDING_REQUEST) return ParseResult.NotBindingRequest;

  let usernameStart = -1;
  let usernameEnd = -1;
  let integrity = false;
  let pos = HEADER_LENGTH;
  while (pos < len) {
    if (pos + 4 > len) return ParseResult.BadAttribute;
    const type = (buf[pos]! << 8) | buf[pos + 1]!;
    const valueLength = (buf[pos + 2]! << 8) | buf[pos + 3]!;
    const valueStart = pos + 4;
    const valueEnd = valueStart + valueLength;
    if (valueEnd > len) return ParseResult.BadAttribute;
    const next = valueStart + ((valueLength + 3) & ~3);
    if (next > len) return ParseResult.BadAttribute;
    if (type === ATTR_USERNAME) {
      // RFC 8489 §14: only the first occurrence of an attribute counts.
      if (usernameStart < 0) {
        usernameStart = valueStart;
        usernameEnd = valueEnd;
      }
    } else if (type === ATTR_MESSAGE_INTEGRITY) {
      // The backend could not verify it either: a malformed first check, not an unverified one.
      if (valueLength !== MESSAGE_INTEGRITY_LENGTH) return ParseResult.BadAttribute;
      integrity = true;
    } else if (type === ATTR_MESSAGE_INTEGRITY_SHA256) {
      if (valueLength < 16 || valueLength > 32 || (valueLength & 3) !== 0) return ParseResult.BadAttribute;
      integrity = true;
    } else if (type === ATTR_FINGERPRINT) {
      if (valueLength !== 4 || next !== len) return ParseResult.BadFingerprint;
      const expected = (crc32Range(buf, 0, pos) ^ FINGERPRINT_XOR) >>> 0;
      if (readU32(buf, valueStart) !== expected) return ParseResult.BadFingerprint;
    }
    pos = next;
  }

  if (usernameStart < 0) return ParseResult.NoUsername;
  const usernameLength = usernameEnd - usernameStart;
  if (usernameLength === 0 || usernameLength > USERNAME_MAX_BYTES) return ParseResult.BadUsername;
  let colon = -1;
  for (let i = usernameStart; i < usernameEnd; i++) {
    if (buf[i] === 0x3a) {
      colon = i;
      break;
    }
  }
  // "<server ufrag>:<client ufrag>" (RFC 8445 §7.2.2); neither ufrag may be empty (§5.3 gives
  // them 4 to 256 characters: only emptiness is checked here, see docs/architecture.md,
  // "Routing"), and the USERNAME must be UTF-8 (RFC 8489 §14.3).
  if (colon <= usernameStart || colon === usernameEnd - 1) return ParseResult.BadUsername;
  if (!isUtf8(buf, usernameStart, usernameEnd)) return ParseResult.BadUsername;
  if (!integrity) return ParseResult.NoIntegrity;
  out.start = usernameStart;
  out.end = usernameEnd;
  out.colon = colon;
  return ParseResult.Ok;
}

/**
 * Cheap test on the return path: is this a Binding success (1) or error (2) response, else 0.
 * Only the header is checked; the backend is trusted to send well-formed STUN.
 */
export function bindingResponseKind(buf: Uint8Array): 0 | 1 | 2 {
  if (buf.length < HEADER_LENGTH || buf[0] !== 0x01) return 0;
  const type = (buf[0] << 8) | buf[1]!;
  if (readU32(buf, 4) !== MAGIC_COOKIE) return 0;
  if (type === BINDING_SUCCESS) return 1;
  if (type === BINDING_ERROR) return 2;
  return 0;
}

/**
 * The code of a Binding error response's ERROR-CODE attribute (RFC 8489 §14.8: class × 100 +
 * number), or 0 if it has none or the attributes do not fit. Walks the attributes bounds-checked;
 * no allocation.
 */
export function bindingErrorCode(buf: Uint8Array): number {
  if (bindingResponseKind(buf) !== 2) return 0;
  const end = Math.min(buf.length, HEADER_LENGTH + ((buf[2]! << 8) | buf[3]!));
  let at = HEADER_LENGTH;
  while (at + 4 <= end) {
    const type = (buf[at]! << 8) | buf[at + 1]!;
    const len = (buf[at + 2]! << 8) | buf[at + 3]!;
    if (at + 4 + len > end) return 0;
    if (type === ATTR_ERROR_CODE) return len < 4 ? 0 : (buf[at + 6]! & 0x07) * 100 + buf[at + 7]!;
    at += 4 + ((len + 3) & ~3);
  }
  return 0;
}

/** True if both datagrams carry the same 96-bit transaction id (RFC 8489 §5). */
export function sameTransaction(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length < TRANSACTION_ID_END || b.length < TRANSACTION_ID_END) return false;
  for (let i = TRANSACTION_ID_OFFSET; i < TRANSACTION_ID_END; i++) {
    if (a[i] !== b[i]) return false;
  }
  return true;
}

/** True if `buf` looks like a Binding Request header (type 0x0001 + cookie), without a full parse. */
export function isBindingRequestHeader(buf: Uint8Array): boolean {
  return (
    buf.length >= HEADER_LENGTH && buf[0] === 0x00 && buf[1] === 0x01 && readU32(buf, 4) === MAGIC_COOKIE
  );
}

/** True if the USERNAME value at `view` equals `expected` byte for byte. */
export function usernameEquals(buf: Uint8Array, view: UsernameView, expected: Uint8Array): boolean {
  const n = view.end - view.start;
  if (n !== expected.length) return false;
  for (let i = 0; i < n; i++) {
    if (buf[view.start + i] !== expected[i]) return false;
  }
  return true;
}

function readU32(buf: Uint8Array, at: number): number {
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}
