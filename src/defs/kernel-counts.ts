/**
 * Datagrams and UDP payload bytes the kernel fast path forwarded (docs/fast-path.md, "Counters"):
 * per session since the last read, a fast path's totals, and a pod's sum over its workers. One
 * shape for all of them.
 */
export interface KernelCounts {
  packetsUp: number;
  bytesUp: number;
  packetsDown: number;
  bytesDown: number;
}
