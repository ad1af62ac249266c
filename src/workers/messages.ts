import type { BackendSpec, KernelMaps } from '../defs/interfaces.ts';
import type { PeerSpec } from '../peers/peer-set.ts';
import type { Instance } from '../peers/wire.ts';

/** What the main thread and the data-path workers tell each other (docs/workers.md). */

/**
 * What the pool reads of the pod's configuration (src/config.ts `Config` has all of it, and more;
 * the pool passes the whole of it on to its workers).
 */
export interface PoolConfig {
  readonly listen: { readonly host: string; readonly port: number };
  readonly admin: unknown;
  readonly upstreamPorts: readonly [number, number] | undefined;
  readonly maxSessions: number;
  readonly probeRate: number;
  readonly directedProbeRate: number;
  readonly maxPendingPerSource: number;
  readonly logLevel: string;
  readonly workers: unknown;
}

/** `workerData` of one worker thread: its identity, its share of the config, the shared memory. */
export interface WorkerInit<C extends PoolConfig = PoolConfig> {
  readonly id: number;
  readonly workers: number;
  /** The pod's config with this worker's listen port and upstream port slice filled in. */
  readonly config: C;
  readonly shared: {
    readonly directory: SharedArrayBuffer;
    /** `rings[i][j]`: from worker i to worker j (undefined on the diagonal). */
    readonly rings: ReadonlyArray<ReadonlyArray<SharedArrayBuffer | undefined>>;
    readonly bells: readonly SharedArrayBuffer[];
    /** The shared [fan-out, directed] probe budgets (SharedTokenBucket). */
    readonly budgets: readonly [SharedArrayBuffer, SharedArrayBuffer];
    readonly slots: SharedArrayBuffer;
    readonly stats: SharedArrayBuffer;
  };
  /** With `--peers`: the replica's instance id, one for all its workers (docs/peers.md). */
  readonly peers?: { readonly instance: Instance };
  /** `--fast-path ebpf`: the pod's maps (descriptors are the process's) and this worker's slots. */
  readonly ebpf?: KernelMaps;
}

/** A won probe: the server ufrag's 32-bit hash (stun/hash.ts, as admission keys it) → backend name. */
export interface Learned {
  readonly type: 'learned';
  readonly hash: number;
  readonly backend: string;
}

/** No backend claimed the server ufrag with this hash (admission's negative cache). */
export interface Negative {
  readonly type: 'negative';
  readonly hash: number;
}

export type ToWorker =
  | { readonly type: 'backends'; readonly specs: readonly BackendSpec[] }
  | { readonly type: 'peers'; readonly specs: readonly PeerSpec[] }
  | Learned
  | Negative
  | { readonly type: 'drain' }
  | { readonly type: 'close' };

export type FromWorker =
  | { readonly type: 'listening'; readonly address: string; readonly port: number }
  | { readonly type: 'applied' }
  | { readonly type: 'routed'; readonly ms: number; readonly outcome: string }
  /** A session's media went to the kernel fast path this long after it was established. */
  | { readonly type: 'handover'; readonly ms: number }
  /** A query round to the peers ended after this long. */
  | { readonly type: 'peerRound'; readonly ms: number }
  | Learned
  | Negative
  | { readonly type: 'closed' };
