import type { Logger } from 'pino';
import type { BackendSpec } from '../defs/interfaces.ts';
import type { PeerSpec } from '../peers/peer-set.ts';
import type { PeersSource } from '../peers/peers-flag.ts';
import { createDiscovery } from './index.ts';
import type { DiscoverySource } from './types.ts';

/**
 * Where a replica learns the other replicas of its tier (`--peers`, docs/peers.md, "Peers"), on the
 * same adapters as the backends: a static list, a headless Service's DNS name (with
 * `publishNotReadyAddresses`, so starting and terminating replicas resolve too), or the
 * EndpointSlices of the proxy's own Service in the pod's own namespace. Every endpoint counts —
 * ready, not ready, terminating: a draining replica (not ready, its `/readyz` is 503) is the one
 * whose sessions must still be reached. Every address is a peer at `--peer-port` (a static entry
 * may name its own port); the slices' own port is the public one and is not used.
 */
export interface PeerDiscovery {
  readonly kind: string;
  start(onPeers: (peers: readonly PeerSpec[]) => void): void;
  stop(): Promise<void>;
}

export interface PeerDiscoveryOptions {
  readonly source: PeersSource;
  readonly peerPort: number;
  /** k8s: kubeconfig file (default: in-cluster, then ~/.kube/config). */
  readonly kubeconfig: string;
  /** dns: re-resolve period. */
  readonly dnsIntervalMs: number;
}

export async function createPeerDiscovery(
  o: PeerDiscoveryOptions,
  log: Logger,
): Promise<PeerDiscovery | undefined> {
  const src = o.source;
  let inner: DiscoverySource;
  switch (src.kind) {
    case 'off':
      return undefined;
    case 'static':
      inner = await createDiscovery(
        {
          kind: 'static',
          backends: src.peers.map(
            (p): BackendSpec => ({
              name: `${p.address}|${p.port}`,
              address: p.address,
              port: p.port,
              state: 'ready',
            }),
          ),
        },
        { log },
      );
      break;
    case 'dns':
      inner = await createDiscovery(
        { kind: 'dns', dnsName: src.name, backendPort: o.peerPort, dnsInterval: o.dnsIntervalMs },
        { log: log.child({ peers: true }) },
      );
      break;
    case 'k8s':
      // The pod's own namespace: namespace left blank (in cluster: the service account's).
      inner = await createDiscovery(
        { kind: 'k8s', service: src.service, kubeconfig: o.kubeconfig },
        { log: log.child({ peers: true }) },
      );
      break;
  }
  const port = (b: BackendSpec): number => (src.kind === 'static' ? b.port : o.peerPort);
  return {
    kind: src.kind,
    start(onPeers) {
      inner.start((specs) => onPeers(specs.map((b) => ({ address: b.address, port: port(b) }))));
    },
    stop: () => inner.stop(),
  };
}
