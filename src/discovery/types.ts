/**
 * What every discovery source (static list, Kubernetes EndpointSlices, DNS) hands to the data path.
 *
 * A source emits full snapshots, never deltas: the consumer diffs by `name`. The first snapshot is
 * the "first discovery sync" that `/readyz` waits for. A source that loses its upstream (API server
 * down, DNS failing) emits nothing and the last good snapshot stays in force (docs/architecture.md, "Control plane").
 */

/**
 * Lifecycle of a backend, from EndpointSlice conditions (discovery.k8s.io/v1):
 * - `ready`: takes new sessions and answers probes.
 * - `terminating`: serving + terminating; keeps its sessions and learned ufrags and still answers
 *   probes (a draining JVB keeps its conferences for hours), but is never chosen for anything that
 *   does not already belong to it... in practice probes still reach it, because only the owner of a
 *   ufrag answers with a Binding success.
 * - `unready`: neither ready nor serving; keeps existing sessions, gets no new probes.
 * A backend missing from the snapshot is gone: its sessions close.
 */
export type BackendState = 'ready' | 'terminating' | 'unready';

export interface BackendSpec {
  /** Stable identity: the pod name (targetRef), the static NAME, or the address for DNS. */
  readonly name: string;
  /** IP literal (v4 or v6). */
  readonly address: string;
  readonly port: number;
  readonly state: BackendState;
}

export type SnapshotListener = (backends: readonly BackendSpec[]) => void;

export interface DiscoverySource {
  /** Human-readable kind for logs and metrics: 'static' | 'k8s' | 'dns'. */
  readonly kind: string;
  /** Begin discovery; `onSnapshot` is called with the whole set each time it changes. */
  start(onSnapshot: SnapshotListener): void;
  /** Stop watches and timers; idempotent. */
  stop(): Promise<void>;
}
