import { isIP } from 'node:net';
import {
  DiscoveryV1Api,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  ListWatch,
  type ObjectCache,
  type V1EndpointConditions,
  type V1EndpointSlice,
  Watch,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { BackendSpec, BackendState } from '../defs/interfaces.ts';
import type { DiscoverySource, SnapshotListener } from './types.ts';

/**
 * Backends from the EndpointSlices of one Service in one namespace (discovery.k8s.io/v1).
 *
 * The EndpointSlice controller labels every slice of a Service with `kubernetes.io/service-name`;
 * a Service can have several slices (more than 100 endpoints, one per address family, transient
 * duplicates during updates), so the snapshot is always computed from all of them together.
 *
 * RBAC needed: get/list/watch on `endpointslices` in `discovery.k8s.io`, in this namespace only.
 */

const RANK: Record<BackendState, number> = { ready: 0, terminating: 1, unready: 2 };

/**
 * EndpointSlice conditions → backend state (discovery.k8s.io/v1 EndpointConditions: a nil `ready`
 * or `serving` means true, a nil `terminating` means false).
 * - terminating and serving → 'terminating': a draining pod keeps its sessions and answers probes.
 *   Checked first: with `publishNotReadyAddresses` a terminating pod is reported `ready: true`,
 *   and a draining JVB must not get new sessions.
 * - ready → 'ready'.
 * - anything else (not ready; terminating and no longer serving) → 'unready'.
 */
export function endpointState(conditions: V1EndpointConditions | undefined): BackendState {
  const ready = conditions?.ready ?? true;
  const serving = conditions?.serving ?? ready;
  const terminating = conditions?.terminating ?? false;
  if (terminating) return serving ? 'terminating' : 'unready';
  return ready ? 'ready' : 'unready';
}

/**
 * The UDP port of a slice: the one named `portName`, else the first UDP port. A slice whose port
 * has a null `port` means "all ports" (no Service port): unusable here.
 */
function slicePort(slice: V1EndpointSlice, portName: string | undefined): number | undefined {
  for (const p of slice.ports ?? []) {
    // protocol defaults to TCP in the API; only UDP ports carry ICE here.
    if (p.protocol !== 'UDP' || p.port === undefined || p.port === null) continue;
    if (portName === undefined || (p.name ?? '') === portName) return p.port;
  }
  return undefined;
}

/**
 * Merges all slices of a Service into backends, sorted by name.
 * - name = the endpoint's `targetRef.name` (the pod), else its address.
 * - address = the first address (the API defines no meaning for the others; kube-proxy ignores them).
 * - FQDN slices and non-IP addresses are skipped.
 * - A name seen more than once (duplicates across slices during updates, or one pod in an IPv4 and
 *   an IPv6 slice of a dual-stack Service) keeps the best state (ready > terminating > unready),
 *   then IPv4 over IPv6, then the slice that sorts first by name: deterministic whatever the order.
 */
export function endpointSlicesToBackends(
  slices: Iterable<V1EndpointSlice>,
  portName?: string,
): BackendSpec[] {
  const sorted = [...slices].sort((a, b) => cmp(a.metadata?.name ?? '', b.metadata?.name ?? ''));
  const byName = new Map<string, BackendSpec & { family: number }>();
  for (const slice of sorted) {
    if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue;
    const port = slicePort(slice, portName);
    if (port === undefined) continue;
    for (const ep of slice.endpoints ?? []) {
      const address = ep.addresses?.[0];
      if (address === undefined) continue;
      const family = isIP(address);
      if (family === 0) continue;
      const name = ep.targetRef?.name || address;
      const cand = { name, address, port, state: endpointState(ep.conditions), family };
      const prev = byName.get(name);
      if (
        prev === undefined ||
        RANK[cand.state] < RANK[prev.state] ||
        (RANK[cand.state] === RANK[prev.state] && cand.family < prev.family)
      ) {
        byName.set(name, cand);
      }
    }
  }
  return [...byName.values()]
    .sort((a, b) => cmp(a.name, b.name))
    .map(({ name, address, port, state }) => ({ name, address, port, state }));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export type EndpointSliceInformer = Informer<V1EndpointSlice> & ObjectCache<V1EndpointSlice>;
type ListFn = () => Promise<KubernetesListObject<V1EndpointSlice>>;

/** Hooks the default informer reports through; see `defaultMakeInformer`. */
export interface InformerHooks {
  /** The watch stream is open (HTTP 200 and headers received): the API server is reachable. */
  onWatchOpen(): void;
  /** A watch attempt failed before its stream opened (refused, non-200, connect timeout). */
  onWatchFailed(err: unknown): void;
  /** Whether this informer has been retired; a retired informer must not open new watches. */
  retired(): boolean;
}

export type MakeInformer = (
  kc: KubeConfig,
  path: string,
  listFn: ListFn,
  labelSelector: string,
  hooks: InformerHooks,
) => EndpointSliceInformer;

/** A `Watch` that tells when its stream opens, and opens nothing once its informer is retired. */
class ObservedWatch extends Watch {
  readonly #hooks: InformerHooks;

  constructor(kc: KubeConfig, hooks: InformerHooks) {
    super(kc);
    this.#hooks = hooks;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    // ListWatch waits its reconnect delay and then watches without checking whether it was stopped
    // meanwhile (client-node 2.0.1 cache.js doneHandler); refuse here so nothing leaks after stop().
    if (this.#hooks.retired()) return new AbortController();
    let ended = false;
    const controller = await super.watch(path, queryParams, callback, (err) => {
      if (!ended && err && (err as { name?: string }).name !== 'AbortError') this.#hooks.onWatchFailed(err);
      ended = true;
      done(err);
    });
    // Watch.watch resolves once the response headers are in; `done` has already run on a failure.
    // Retired while the headers were on their way (stop() or a restart): the informer's stop() had
    // no request to abort yet (client-node 2.0.1 cache.js keeps it only once this resolves), so this
    // stream would stay open; close it here.
    if (this.#hooks.retired()) {
      controller.abort();
      return controller;
    }
    if (!ended) this.#hooks.onWatchOpen();
    return controller;
  }
}

/** Unref'd so a pending reconnect delay never keeps the process alive on its own. */
function unrefDelay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * The real list+watch informer of @kubernetes/client-node (ListWatch, as `makeInformer` builds it),
 * with a watch that reports reachability. On a 410 Gone it relists by itself; on any other error it
 * calls its 'error' callbacks and stops for good: restarting is the caller's job.
 */
export const defaultMakeInformer: MakeInformer = (kc, path, listFn, labelSelector, hooks) =>
  new ListWatch<V1EndpointSlice>(
    path,
    new ObservedWatch(kc, hooks),
    listFn,
    false,
    labelSelector,
    undefined,
    {
      delayFn: unrefDelay,
    },
  );

export interface BackoffOptions {
  /** First restart delay, ms. Default 500. */
  initialMs?: number;
  /** Cap, ms. Default 30_000. */
  maxMs?: number;
}

export interface K8sDiscoveryOptions {
  service: string;
  namespace: string;
  /** Name of the Service's UDP port; default: the first UDP port of each slice. */
  portName?: string | undefined;
  kubeConfig: KubeConfig;
  log: Logger;
  backoff?: BackoffOptions;
  /** Test seam; default: `defaultMakeInformer`. */
  makeInformer?: MakeInformer;
  /** Clock (ms since the epoch) and jitter source, swappable for tests. */
  now?: () => number;
  random?: () => number;
}

/** What the metrics export. */
export interface K8sDiscoveryState {
  /** The last list or watch attempt reached the API server. */
  readonly connected: boolean;
  /** When a list last succeeded, or a watch event last arrived (ms since the epoch). */
  readonly lastSyncAt: number | undefined;
  /** Informer restarts after errors (not counting 410 relists, which the informer does itself). */
  readonly restarts: number;
  /** Failed list or watch attempts, in total. */
  readonly errors: number;
  /** EndpointSlices currently known. */
  readonly slices: number;
}

export class K8sDiscovery implements DiscoverySource {
  readonly kind = 'k8s';
  readonly #o: Required<Omit<K8sDiscoveryOptions, 'portName' | 'backoff'>> & { portName: string | undefined };
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #path: string;
  readonly #labelSelector: string;
  readonly #api: DiscoveryV1Api;
  #slices = new Map<string, V1EndpointSlice>();
  #listener: SnapshotListener | undefined;
  #informer: EndpointSliceInformer | undefined;
  #generation = 0;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #lastEmitted: string | undefined;
  #connected = false;
  #lastSyncAt: number | undefined;
  #restarts = 0;
  #errors = 0;

  constructor(options: K8sDiscoveryOptions) {
    this.#o = {
      makeInformer: defaultMakeInformer,
      now: Date.now,
      random: Math.random,
      ...options,
      portName: options.portName,
    };
    this.#initialMs = options.backoff?.initialMs ?? 500;
    this.#maxMs = options.backoff?.maxMs ?? 30_000;
    this.#path = `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(options.namespace)}/endpointslices`;
    this.#labelSelector = `kubernetes.io/service-name=${options.service}`;
    this.#api = options.kubeConfig.makeApiClient(DiscoveryV1Api);
  }

  get state(): K8sDiscoveryState {
    return {
      connected: this.#connected,
      lastSyncAt: this.#lastSyncAt,
      restarts: this.#restarts,
      errors: this.#errors,
      slices: this.#slices.size,
    };
  }

  start(onSnapshot: SnapshotListener): void {
    if (this.#listener) throw new Error('K8sDiscovery already started');
    this.#listener = onSnapshot;
    this.#o.log.info(
      { namespace: this.#o.namespace, service: this.#o.service, portName: this.#o.portName },
      'watching EndpointSlices',
    );
    this.#startInformer();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#retire();
  }

  #startInformer(): void {
    const gen = ++this.#generation;
    const current = () => gen === this.#generation && !this.#stopped;
    const listFn: ListFn = async () => {
      const list = await this.#api.listNamespacedEndpointSlice({
        namespace: this.#o.namespace,
        labelSelector: this.#labelSelector,
      });
      if (current()) this.#onList(list.items);
      return list;
    };
    const hooks: InformerHooks = {
      onWatchOpen: () => {
        if (current()) this.#markAlive(false);
      },
      onWatchFailed: (err) => {
        // The informer retries a watch that timed out by itself; only say we are cut off.
        if (current()) this.#errors++;
        if (current() && this.#connected) {
          this.#connected = false;
          this.#o.log.warn({ err: describe(err) }, 'EndpointSlice watch failed; keeping last snapshot');
        }
      },
      retired: () => !current(),
    };
    const informer = this.#o.makeInformer(this.#o.kubeConfig, this.#path, listFn, this.#labelSelector, hooks);
    this.#informer = informer;
    const upsert = (obj: V1EndpointSlice) => {
      if (!current()) return;
      this.#slices.set(sliceKey(obj), obj);
      this.#markAlive(true);
      this.#emit();
    };
    informer.on('add', upsert);
    informer.on('update', upsert);
    informer.on('delete', (obj) => {
      if (!current()) return;
      this.#slices.delete(sliceKey(obj));
      this.#markAlive(true);
      this.#emit();
    });
    informer.on('error', (err) => {
      if (current()) this.#onError(err);
    });
    informer.start().catch((err: unknown) => {
      if (current()) this.#onError(err);
    });
  }

  /** A full list replaces everything: slices deleted while we were away vanish here. */
  #onList(items: V1EndpointSlice[]): void {
    this.#slices = new Map(items.map((s) => [sliceKey(s), s]));
    this.#markAlive(true);
    this.#emit();
  }

  #markAlive(synced: boolean): void {
    if (!this.#connected) {
      this.#o.log.info({ restarts: this.#restarts }, 'EndpointSlice list/watch connected');
    }
    this.#connected = true;
    this.#failures = 0;
    if (synced) this.#lastSyncAt = this.#o.now();
  }

  #onError(err: unknown): void {
    this.#connected = false;
    this.#errors++;
    const capped = Math.min(this.#maxMs, this.#initialMs * 2 ** Math.min(this.#failures, 30));
    // "Equal jitter": half fixed, half random, so many proxy replicas do not relist in step.
    const delay = Math.round(capped / 2 + (this.#o.random() * capped) / 2);
    this.#failures++;
    this.#o.log.warn(
      { err: describe(err), retryInMs: delay, failures: this.#failures },
      'EndpointSlice informer failed; keeping last snapshot',
    );
    void this.#retire();
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopped) return;
      this.#restarts++;
      this.#startInformer();
    }, delay);
    this.#timer.unref();
  }

  async #retire(): Promise<void> {
    const informer = this.#informer;
    this.#informer = undefined;
    this.#generation++;
    if (informer) await informer.stop().catch(() => {});
  }

  #emit(): void {
    const backends = endpointSlicesToBackends(this.#slices.values(), this.#o.portName);
    const key = JSON.stringify(backends);
    if (key === this.#lastEmitted) return;
    this.#lastEmitted = key;
    this.#listener?.(backends);
  }
}

function sliceKey(s: V1EndpointSlice): string {
  return s.metadata?.name ?? '';
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code =
      (err as { code?: unknown; statusCode?: unknown }).code ?? (err as { statusCode?: unknown }).statusCode;
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return [err.name, err.message, code, cause].filter((x) => x !== undefined && x !== '').join(': ');
  }
  return String(err);
}

/** The namespace to watch when none is given: the pod's own (in cluster), else the kubeconfig context's. */
export function defaultNamespace(kc: KubeConfig, readFile: (p: string) => string): string {
  try {
    const ns = readFile('/var/run/secrets/kubernetes.io/serviceaccount/namespace').trim();
    if (ns) return ns;
  } catch {
    // not in a cluster
  }
  return kc.getContextObject(kc.getCurrentContext())?.namespace || 'default';
}
