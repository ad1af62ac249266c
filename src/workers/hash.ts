/**
 * Two independent 32-bit hashes of a short latin1 byte string (an ICE ufrag pair), together a
 * 64-bit key for the shared directory (directory.ts). FNV-1a (two offset bases) finished with the
 * murmur3 fmix32 avalanche, so nearby strings spread over the whole table. Read from the
 * datagram's bytes in place (no string is made for a first check) or from a session's USERNAME
 * bytes: the same bytes give the same key. Not cryptographic: a collision only ever costs a wrong
 * first guess (docs/workers.md, "Directory"). Called once per new flow, never per datagram.
 */
function fnv(b: Uint8Array, start: number, end: number, basis: number): number {
  let h = basis;
  for (let i = start; i < end; i++) {
    h ^= b[i]!;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

export function hashHi(b: Uint8Array, start = 0, end = b.length): number {
  return fnv(b, start, end, 0x811c9dc5);
}

export function hashLo(b: Uint8Array, start = 0, end = b.length): number {
  return fnv(b, start, end, 0x2545f491);
}

/** The key of a USERNAME given as text (tests, tools): the same as for its latin1 bytes. */
export function usernameKey(username: string): [number, number] {
  const b = Buffer.from(username, 'latin1');
  return [hashHi(b), hashLo(b)];
}
