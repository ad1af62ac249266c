/**
 * FNV-1a (32 bit) over a byte range or a string's char codes: the keys of the fixed-size tables
 * that admission consults before anything is allocated (docs/architecture.md, "Admission"). A
 * collision can only cost a wrong first guess or a shared slot, never a wrong route: every route
 * is confirmed by the owning backend's Binding success.
 */
const OFFSET = 0x811c9dc5;
const PRIME = 0x01000193;

export function hashBytes(buf: Uint8Array, start: number, end: number): number {
  let h = OFFSET;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, PRIME);
  return h >>> 0;
}

export function hashString(s: string, start = 0, end = s.length): number {
  let h = OFFSET;
  for (let i = start; i < end; i++) h = Math.imul(h ^ s.charCodeAt(i), PRIME);
  return h >>> 0;
}
