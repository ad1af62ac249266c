import { isIP } from 'node:net';
import type { PeerSpec } from './peer-set.ts';

/**
 * The `--peers` flag (docs/peers.md, "Peers"): where a replica learns the other replicas of its
 * tier. One flag, three sources:
 * - `HOST[:PORT],...` — a static list of IP literals (IPv6 as `[::1]:PORT`); the port defaults to
 *   `--peer-port` (VMs, tests);
 * - `dns:NAME` — a headless Service with `publishNotReadyAddresses: true`, so starting and
 *   terminating replicas are listed too; every address at `--peer-port`;
 * - `k8s:SERVICE` — the EndpointSlices of the proxy's own Service in the pod's own namespace:
 *   ready, not-ready and terminating endpoints alike; every address at `--peer-port`.
 * Empty: no peers (a lone replica, exactly as before peers existed).
 */
export type PeersSource =
  | { readonly kind: 'off' }
  | { readonly kind: 'static'; readonly peers: readonly PeerSpec[] }
  | { readonly kind: 'dns'; readonly name: string }
  | { readonly kind: 'k8s'; readonly service: string };

/** Parses `--peers`; `problems` names what is wrong, one entry per bad item. */
export function parsePeersFlag(
  text: string,
  defaultPort: number,
): { source: PeersSource; problems: string[] } {
  const t = text.trim();
  if (t === '') return { source: { kind: 'off' }, problems: [] };
  if (t.startsWith('dns:')) {
    const name = t.slice(4);
    const ok = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\.?$/.test(name);
    return ok
      ? { source: { kind: 'dns', name }, problems: [] }
      : { source: { kind: 'off' }, problems: [`dns:NAME needs a DNS name (got ${JSON.stringify(name)})`] };
  }
  if (t.startsWith('k8s:')) {
    const service = t.slice(4);
    // A Service name is an RFC 1035 label (Kubernetes "DNS-1035 label").
    const ok = /^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/.test(service);
    return ok
      ? { source: { kind: 'k8s', service }, problems: [] }
      : {
          source: { kind: 'off' },
          problems: [`k8s:SERVICE needs a Service name (got ${JSON.stringify(service)})`],
        };
  }
  const peers: PeerSpec[] = [];
  const problems: string[] = [];
  for (const raw of t.split(',')) {
    const item = raw.trim();
    const spec = parsePeer(item, defaultPort);
    if (spec === undefined) problems.push(`${JSON.stringify(item)} is not IP, IP:PORT or [IPv6]:PORT`);
    else peers.push(spec);
  }
  return { source: problems.length === 0 ? { kind: 'static', peers } : { kind: 'off' }, problems };
}

function parsePeer(item: string, defaultPort: number): PeerSpec | undefined {
  let host = item;
  let port = defaultPort;
  const v6 = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(item);
  if (v6 !== null) {
    host = v6[1]!;
    if (v6[2] !== undefined) port = Number(v6[2]);
    if (isIP(host) !== 6) return undefined;
  } else if (isIP(item) === 0) {
    const m = /^([^:]+):(\d{1,5})$/.exec(item);
    if (m === null || isIP(m[1]!) !== 4) return undefined;
    host = m[1]!;
    port = Number(m[2]);
  }
  if (port < 1 || port > 65535) return undefined;
  return { address: host, port };
}
