import { readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { BadInputError } from '../defs/errors.ts';
import type { BackendSpec } from '../defs/interfaces.ts';
import type { DnsResolver } from './dns.ts';
import type { BackoffOptions, MakeInformer } from './k8s.ts';
import { parseBackends, StaticDiscovery } from './static.ts';
import type { DiscoverySource, SnapshotListener } from './types.ts';

/**
 * The one place that turns configuration into a discovery source, and the discovery metrics.
 * The Kubernetes client (≈0.5 s to import) is loaded only for `kind: 'k8s'`.
 */

export interface DiscoveryOptions {
  readonly kind: 'static' | 'k8s' | 'dns';
  /** static: `NAME=HOST:PORT,...` text or already parsed backends. */
  readonly backends?: string | readonly BackendSpec[] | undefined;
  /** k8s: the Service whose EndpointSlices list the backends. */
  readonly service?: string | undefined;
  /** k8s: default the pod's own namespace (in cluster), else the kubeconfig context's, else 'default'. */
  readonly namespace?: string | undefined;
  /** k8s: the Service port's name; default the first UDP port. */
  readonly portName?: string | undefined;
  /** k8s: kubeconfig file; default KUBECONFIG, ~/.kube/config, then in-cluster service account. */
  readonly kubeconfig?: string | undefined;
  /** dns: name of the headless Service. */
  readonly dnsName?: string | undefined;
  /** dns: backend UDP port. Default 10000. */
  readonly backendPort?: number | undefined;
  /** dns: re-resolve period, ms. Default 5000. */
  readonly dnsInterval?: number | undefined;
  /** dns: how long an address that left DNS stays 'terminating', ms. Default 0. */
  readonly dnsGrace?: number | undefined;
}

export interface DiscoveryDeps {
  readonly log: Logger;
  /** Test seams. */
  readonly kubeConfig?: KubeConfig;
  readonly makeInformer?: MakeInformer;
  readonly backoff?: BackoffOptions;
  readonly resolver?: DnsResolver;
}

/** Health of the upstream a source reads, the same shape for every kind. */
export interface DiscoveryStatus {
  /** The upstream (API server, DNS) answered last time; static: always true. */
  readonly connected: boolean;
  /** ms since the epoch of the last successful sync; undefined before the first. */
  readonly lastSyncAt: number | undefined;
  /** k8s: informer restarts after errors; other kinds: 0. */
  readonly restarts: number;
  /** Failed list/watch attempts (k8s) or resolutions (dns), in total. */
  readonly errors: number;
}

export interface ObservedDiscovery extends DiscoverySource {
  readonly status: DiscoveryStatus;
  /** The last snapshot emitted; undefined before the first sync. */
  readonly lastSnapshot: readonly BackendSpec[] | undefined;
  /** Snapshots emitted so far. */
  readonly snapshots: number;
}

/** Bad discovery options, or a file they name; `problems` lists every one (exit 2). */
export class DiscoveryConfigError extends BadInputError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('ICE_INGRESS_DISCOVERY_CONFIG', `invalid configuration: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

/**
 * Reads the kubeconfig that --kubeconfig names. The client's own errors name neither the flag nor
 * the file (a directory: `EISDIR: illegal operation on a directory, read`; not YAML: the parser's
 * code frame over several lines), so they become one line that names both.
 */
function loadKubeconfig(kc: KubeConfig, path: string): void {
  try {
    kc.loadFromFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reason =
      e.code === 'EISDIR'
        ? 'is a directory, not a kubeconfig file'
        : e.code === 'ENOENT'
          ? 'no such file'
          : e.code === 'EACCES'
            ? 'permission denied'
            : `not a kubeconfig file (${(e.message ?? String(err)).split('\n')[0]!.trim()})`;
    throw new DiscoveryConfigError([`--kubeconfig ${path}: ${reason}`]);
  }
}

const blank = (s: string | undefined): s is undefined => s === undefined || s === '';

export async function createDiscovery(
  opts: DiscoveryOptions,
  deps: DiscoveryDeps,
): Promise<ObservedDiscovery> {
  const log = deps.log.child({ component: 'discovery', kind: opts.kind });
  const problems: string[] = [];
  let inner: DiscoverySource & { readonly status?: () => DiscoveryStatus };
  switch (opts.kind) {
    case 'static': {
      let backends: readonly BackendSpec[] = [];
      if (typeof opts.backends === 'string' || opts.backends === undefined) {
        const parsed = parseBackends(opts.backends ?? '');
        problems.push(...parsed.errors.map((e) => `backends: ${e}`));
        backends = parsed.backends;
      } else {
        backends = opts.backends;
      }
      if (problems.length > 0) throw new DiscoveryConfigError(problems);
      inner = new StaticDiscovery(backends);
      break;
    }
    case 'k8s': {
      if (blank(opts.service)) problems.push('service: required for k8s discovery');
      if (problems.length > 0) throw new DiscoveryConfigError(problems);
      const { KubeConfig } = await import('@kubernetes/client-node');
      const { K8sDiscovery, defaultNamespace } = await import('./k8s.ts');
      let kc = deps.kubeConfig;
      if (kc === undefined) {
        kc = new KubeConfig();
        if (blank(opts.kubeconfig)) kc.loadFromDefault();
        else loadKubeconfig(kc, opts.kubeconfig);
      }
      const namespace = blank(opts.namespace)
        ? defaultNamespace(kc, (p) => readFileSync(p, 'utf8'))
        : opts.namespace;
      const source = new K8sDiscovery({
        service: opts.service!,
        namespace,
        portName: blank(opts.portName) ? undefined : opts.portName,
        kubeConfig: kc,
        log,
        ...(deps.backoff ? { backoff: deps.backoff } : {}),
        ...(deps.makeInformer ? { makeInformer: deps.makeInformer } : {}),
      });
      inner = Object.assign(source, {
        status: (): DiscoveryStatus => {
          const s = source.state;
          return { connected: s.connected, lastSyncAt: s.lastSyncAt, restarts: s.restarts, errors: s.errors };
        },
      });
      break;
    }
    case 'dns': {
      if (blank(opts.dnsName)) problems.push('dnsName: required for dns discovery');
      const port = opts.backendPort ?? 10000;
      if (!Number.isInteger(port) || port < 1 || port > 65535) problems.push('backendPort: expected 1-65535');
      const interval = opts.dnsInterval ?? 5000;
      if (!(interval >= 100)) problems.push('dnsInterval: expected at least 100 ms');
      const grace = opts.dnsGrace ?? 0;
      if (!(grace >= 0)) problems.push('dnsGrace: expected 0 or more ms');
      if (problems.length > 0) throw new DiscoveryConfigError(problems);
      const { DnsDiscovery } = await import('./dns.ts');
      const source = new DnsDiscovery({
        name: opts.dnsName!,
        port,
        intervalMs: interval,
        vanishedGraceMs: grace,
        log,
        ...(deps.resolver ? { resolver: deps.resolver } : {}),
      });
      inner = Object.assign(source, {
        status: (): DiscoveryStatus => {
          const s = source.state;
          return { connected: s.connected, lastSyncAt: s.lastSyncAt, restarts: 0, errors: s.errors };
        },
      });
      break;
    }
    default:
      throw new DiscoveryConfigError([`kind: expected static, k8s or dns, got "${String(opts.kind)}"`]);
  }
  return new Observed(inner);
}

/** Wraps a source to remember its last snapshot and report a uniform status. */
class Observed implements ObservedDiscovery {
  readonly #inner: DiscoverySource & { readonly status?: () => DiscoveryStatus };
  #last: readonly BackendSpec[] | undefined;
  #snapshots = 0;
  #syncedAt: number | undefined;

  constructor(inner: DiscoverySource & { readonly status?: () => DiscoveryStatus }) {
    this.#inner = inner;
  }

  get kind(): string {
    return this.#inner.kind;
  }

  get status(): DiscoveryStatus {
    if (this.#inner.status) return this.#inner.status();
    // static: "connected" from the start; synced when its snapshot went out.
    return { connected: true, lastSyncAt: this.#syncedAt, restarts: 0, errors: 0 };
  }

  get lastSnapshot(): readonly BackendSpec[] | undefined {
    return this.#last;
  }

  get snapshots(): number {
    return this.#snapshots;
  }

  start(onSnapshot: SnapshotListener): void {
    this.#inner.start((backends) => {
      this.#last = backends;
      this.#snapshots++;
      this.#syncedAt = Date.now();
      onSnapshot(backends);
    });
  }

  stop(): Promise<void> {
    return this.#inner.stop();
  }
}
