/**
 * STUN wire constants (RFC 8489) used by the data path. Only what ice-ingress reads: the proxy never
 * builds or signs STUN itself; it forwards the client's and the backend's bytes untouched.
 */

/** RFC 8489 §5: 20-byte header = type(2) length(2) magic cookie(4) transaction id(12). */
export const HEADER_LENGTH = 20;
export const MAGIC_COOKIE = 0x2112a442;
export const TRANSACTION_ID_OFFSET = 8;
export const TRANSACTION_ID_END = 20;

/** RFC 8489 §5: message types (method Binding = 0x001 with the class bits). */
export const BINDING_REQUEST = 0x0001;
export const BINDING_INDICATION = 0x0011;
export const BINDING_SUCCESS = 0x0101;
export const BINDING_ERROR = 0x0111;

/** RFC 8489 §18.3 attribute types. */
export const ATTR_USERNAME = 0x0006;
export const ATTR_MESSAGE_INTEGRITY = 0x0008;
export const ATTR_ERROR_CODE = 0x0009;
export const ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001c;
export const ATTR_FINGERPRINT = 0x8028;

/** RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XOR-ed with "STUN". */
export const FINGERPRINT_XOR = 0x5354554e;

/** RFC 8489 §14.3: USERNAME is shorter than 513 bytes. */
export const USERNAME_MAX_BYTES = 512;

/** MESSAGE-INTEGRITY's value: an HMAC-SHA1, always 20 bytes (RFC 8489 §14.5). */
export const MESSAGE_INTEGRITY_LENGTH = 20;
