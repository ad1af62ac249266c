/**
 * Two independent 32-bit hashes of a short ASCII/latin1 string (an ICE ufrag pair or a client IP),
 * together a 64-bit key for the shared tables in this folder. FNV-1a (two offset bases) finished
 * with the murmur3 fmix32 avalanche, so nearby strings spread over the whole table. Not
 * cryptographic: a collision only ever costs a wrong first guess (docs/workers.md, "Directory").
 * Called once per new flow, never per datagram.
 */
function fnv(s: string, basis: number): number {
  let h = basis;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

export function hashHi(s: string): number {
  return fnv(s, 0x811c9dc5);
}

export function hashLo(s: string): number {
  return fnv(s, 0x2545f491);
}
