import type { BackendSpec } from '../defs/interfaces.ts';

/**
 * What every discovery source (static list, Kubernetes EndpointSlices, DNS) hands to the data path.
 *
 * A source emits full snapshots, never deltas: the consumer diffs by `name`. The first snapshot is
 * the "first discovery sync" that `/readyz` waits for. A source that loses its upstream (API server
 * down, DNS failing) emits nothing and the last good snapshot stays in force (docs/architecture.md, "Control plane").
 */

export type SnapshotListener = (backends: readonly BackendSpec[]) => void;

export interface DiscoverySource {
  /** Human-readable kind for logs and metrics: 'static' | 'k8s' | 'dns'. */
  readonly kind: string;
  /** Begin discovery; `onSnapshot` is called with the whole set each time it changes. */
  start(onSnapshot: SnapshotListener): void;
  /** Stop watches and timers; idempotent. */
  stop(): Promise<void>;
}
