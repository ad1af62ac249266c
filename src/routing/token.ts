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
