import type { FlowListener, KernelPathSource } from '../defs/interfaces.ts';

/**
 * A data-path thread's kernel fast path, whichever it is (docs/fast-path.md): the nftables path
 * (fast-path.ts, NftFastPath) or the eBPF path (ebpf/fast-path.ts, EbpfFastPath). Both hear the
 * registry's flow events, feed /metrics, and remove what is the thread's own at stop.
 */
export interface KernelPath extends FlowListener, KernelPathSource {
  /** Kernel changes applied and failed; sessions handed over; counter reads. */
  readonly stats: {
    readonly transactions: number;
    readonly failures: number;
    readonly handovers: number;
    readonly polls: number;
  };
  /** Reads the kernel's counters now (tests, the namespace suite). */
  pollNow(): Promise<void> | void;
  /** The last counts, then what is the thread's own is removed. Idempotent. */
  stop(): Promise<void>;
}
