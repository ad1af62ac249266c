/**
 * CRC-32 (IEEE 802.3, the one RFC 8489 §14.7 FINGERPRINT uses) over a byte range, table-driven.
 * `zlib.crc32` needs the range as its own view (`buf.subarray(…)`), one allocation per first
 * packet; admission promises that a refused datagram allocates nothing (docs/architecture.md,
 * "Admission"), and a STUN message is short enough that a JS loop costs the same.
 */
const TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c;
}

export function crc32Range(buf: Uint8Array, start: number, end: number): number {
  let c = -1;
  for (let i = start; i < end; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
