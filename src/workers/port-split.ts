/**
 * Splits the upstream port range into `n` contiguous slices without overlap, one per worker: each
 * worker's PortPool then quarantines its own ports and no two workers can hand out the same one.
 */
export function splitPortRange(first: number, last: number, n: number): Array<readonly [number, number]> {
  const size = last - first + 1;
  if (size < n) throw new Error(`upstream port range ${first}-${last} has fewer ports than ${n} workers`);
  const out: Array<readonly [number, number]> = [];
  let start = first;
  for (let i = 0; i < n; i++) {
    const len = Math.floor(size / n) + (i < size % n ? 1 : 0);
    out.push([start, start + len - 1]);
    start += len;
  }
  return out;
}
