import type { Config } from '../config.ts';
import type { BackendSpec } from '../discovery/types.ts';

/** What the main thread and the data-path workers tell each other (docs/workers.md). */

/** `workerData` of one worker thread: its identity, its share of the config, the shared memory. */
export interface WorkerInit {
  readonly id: number;
  readonly workers: number;
  /** The pod's config with this worker's listen port and upstream port slice filled in. */
  readonly config: Config;
  readonly shared: {
    readonly directory: SharedArrayBuffer;
    /** `rings[i][j]`: from worker i to worker j (undefined on the diagonal). */
    readonly rings: ReadonlyArray<ReadonlyArray<SharedArrayBuffer | undefined>>;
    readonly bells: readonly SharedArrayBuffer[];
    readonly budget: SharedArrayBuffer;
    readonly slots: SharedArrayBuffer;
    readonly sources: SharedArrayBuffer;
    readonly stats: SharedArrayBuffer;
  };
}

export type ToWorker =
  | { readonly type: 'backends'; readonly specs: readonly BackendSpec[] }
  | { readonly type: 'learned'; readonly serverUfrag: string; readonly backend: string }
  | { readonly type: 'negative'; readonly serverUfrag: string }
  | { readonly type: 'drain' }
  | { readonly type: 'close' };

export type FromWorker =
  | { readonly type: 'listening'; readonly address: string; readonly port: number }
  | { readonly type: 'applied' }
  | { readonly type: 'routed'; readonly ms: number; readonly outcome: string }
  | { readonly type: 'learned'; readonly serverUfrag: string; readonly backend: string }
  | { readonly type: 'negative'; readonly serverUfrag: string }
  | { readonly type: 'closed' };
