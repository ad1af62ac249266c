import { createHash } from 'node:crypto';

/**
 * Prefix token of a backend: the first 30 bits of SHA-256(name), written as 6 characters of
 * RFC 4648 base32 in lower case ([a-z2-7]).
 *
 * Why this shape: JVB's `videobridge.ice.ufrag-prefix` must be letters and digits only (a ':' would
 * break JVB's own USERNAME demux, RFC 8445 §7.2.2); a fixed length lets the router look a ufrag's
 * prefix up in O(1) (`ufrag.slice(0, TOKEN_LENGTH)`); 30 bits keep chance collisions between a
 * few hundred pods negligible, and a collision or a random ufrag that happens to start with a token
 * only costs a fall-back to probing, never a wrong route.
 *
 * The same function runs in two places that may be of different versions: `ice-ingress jvb-config`
 * in each JVB's init container (which sets `videobridge.ice.ufrag-prefix`) and the proxy's router.
 * Changing it silently turns every prefix route into a probe, so it is pinned by a test
 * (test/jvb-config.test.ts: tokenFor('jvb-0') === '6gi5sz').
 */
export const TOKEN_LENGTH = 6;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

export function tokenFor(name: string): string {
  const digest = createHash('sha256').update(name, 'utf8').digest();
  // 30 bits = the top 30 bits of the first 4 bytes.
  const bits = digest.readUInt32BE(0) >>> 2;
  let out = '';
  for (let i = TOKEN_LENGTH - 1; i >= 0; i--) out += ALPHABET[(bits >>> (i * 5)) & 31];
  return out;
}

/** The 30-bit value of a token given as text (its 6 base32 characters), or -1 if it is not one. */
export function tokenBits(token: string): number {
  if (token.length !== TOKEN_LENGTH) return -1;
  let v = 0;
  for (let i = 0; i < TOKEN_LENGTH; i++) {
    const d = base32Digit(token.charCodeAt(i));
    if (d < 0) return -1;
    v = (v << 5) | d;
  }
  return v;
}

/**
 * The 30-bit value of the token that would start a server ufrag at `buf[start..end)`, or -1 if
 * the ufrag is not longer than a token or its first characters are not base32. Reads bytes, so the
 * router can test a first packet against every backend's token before allocating anything.
 */
export function ufragTokenBits(buf: Uint8Array, start: number, end: number): number {
  if (end - start <= TOKEN_LENGTH) return -1;
  let v = 0;
  for (let i = start; i < start + TOKEN_LENGTH; i++) {
    const d = base32Digit(buf[i]!);
    if (d < 0) return -1;
    v = (v << 5) | d;
  }
  return v;
}

/** RFC 4648 base32 in lower case: a-z = 0-25, 2-7 = 26-31. */
function base32Digit(c: number): number {
  if (c >= 0x61 && c <= 0x7a) return c - 0x61;
  if (c >= 0x32 && c <= 0x37) return c - 0x32 + 26;
  return -1;
}
