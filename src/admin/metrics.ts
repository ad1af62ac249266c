import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Counters } from '../defs/counters.ts';
import type { BackendSpec, BackendState, KernelPathSource } from '../defs/interfaces.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from '../defs/reasons.ts';
import {
  ANSWER_LABELS,
  PEER_DROP_LABELS,
  type PeerCounters,
  QUERY_OUTCOME_LABELS,
  QUERY_SKIP_LABELS,
  TUNNEL_CLOSE_LABELS,
  TUNNEL_DIR_LABELS,
} from '../peers/counters.ts';

/**
 * Every Prometheus metric of the pod (prom-client), registered here and nowhere else: the data
 * path's, the kernel fast path's, discovery's and the worker threads' series. The data path keeps plain numbers; each metric here reads them
 * in its `collect()` at scrape time, so the per-packet cost of metrics is one field increment.
 * Labels come only from fixed sets (direction, reason, outcome, state): never client addresses.
 */
export interface MetricSources {
  /** The data path's counters, or a function that returns them at scrape time (summed workers). */
  readonly counters: Counters | (() => Counters);
  /** Sessions (established and probing) and client 5-tuples mapped to them. */
  readonly sessions: { readonly size: number; readonly endpointCount: number };
  /** Sources active in the last second (admission's fair-share table). */
  readonly activeSources?: () => number;
  /** Upstream ports free for new sessions (clean, or rested), when a range is configured. */
  readonly freePorts?: () => number;
  readonly openUpstreams: () => number;
  /** From {@link createRoutingHistogram}; registered here. */
  readonly routing?: Histogram<'outcome'>;
  /** The kernel fast path, when on (docs/fast-path.md): its totals get `path="kernel"`. */
  readonly kernel?: KernelPathSource;
  /** From {@link createHandoverHistogram}, with the kernel fast path; registered here. */
  readonly handover?: Histogram;
}

/**
 * Time from a session's establishment to its entries being in the kernel (once per session). The
 * eBPF path's hand-over is two map updates inside the flow event (tens of µs; a first session
 * toward a backend waits for its source address, about a millisecond), the nftables path's a
 * batched transaction (milliseconds to seconds as the table grows): buckets from 0.25 ms to 2.5 s.
 */
export const HANDOVER_BUCKETS = [
  0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
] as const;

export function createHandoverHistogram(): Histogram {
  return new Histogram({
    name: 'ice_ingress_fastpath_handover_seconds',
    help: 'Time from a session being established to its media being forwarded by the kernel.',
    buckets: [...HANDOVER_BUCKETS],
    registers: [],
  });
}

/**
 * Time from a flow's first datagram to its owner's Binding success, by how the owner was found.
 * Observed once per session (never per packet); made before the registry so the data path can
 * be handed its `observe` at construction.
 */
export function createRoutingHistogram(): Histogram<'outcome'> {
  return new Histogram({
    name: 'ice_ingress_routing_seconds',
    help: "Time from the first check of a new flow to the owning backend's success, by outcome (prefix, learned, probe_won, restart).",
    labelNames: ['outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [],
  });
}

type Rows = ReadonlyArray<readonly [string, number]>;

/**
 * A counter whose values are ours: prom-client counters only go up, and our plain numbers are the
 * source of truth, so each scrape starts from a reset and writes the absolute values (the
 * exposition is the same as for a native counter).
 */
function mirrorCounter(
  registry: Registry,
  name: string,
  help: string,
  label: string | undefined,
  read: () => Rows,
): void {
  new Counter({
    name,
    help,
    labelNames: label === undefined ? [] : [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [value, n] of read()) this.inc(label === undefined ? {} : { [label]: value }, n);
    },
  });
}

const byIndex = (labels: readonly string[], values: ArrayLike<number>): Rows =>
  labels.map((l, i) => [l, values[i]!]);
const DIRECTIONS = ['client_in', 'backend_out', 'backend_in', 'client_out'] as const;

export function createRegistry(src: MetricSources, withProcessMetrics = true): Registry {
  const registry = new Registry();
  if (withProcessMetrics) collectDefaultMetrics({ register: registry });
  const source = src.counters;
  const counters = typeof source === 'function' ? source : (): Counters => source;
  if (src.routing !== undefined) registry.registerMetric(src.routing);

  const mirror = (name: string, help: string, label: string | undefined, read: () => Rows): void =>
    mirrorCounter(registry, name, help, label, read);

  // By direction and path: `userspace` (Node's sockets) and, with the fast path on, `kernel` (read
  // from the nftables named counters every few seconds; the kernel forwards each datagram it
  // receives, so its in and out counts are equal).
  const k = src.kernel;
  const byPath = (name: string, help: string, user: () => number[], kernel: () => number[]): void => {
    new Counter({
      name,
      help,
      labelNames: ['direction', 'path'],
      registers: [registry],
      collect() {
        this.reset();
        const u = user();
        for (let i = 0; i < DIRECTIONS.length; i++)
          this.inc({ direction: DIRECTIONS[i]!, path: 'userspace' }, u[i]!);
        if (k === undefined) return;
        const kv = kernel();
        for (let i = 0; i < DIRECTIONS.length; i++)
          this.inc({ direction: DIRECTIONS[i]!, path: 'kernel' }, kv[i]!);
      },
    });
  };
  byPath(
    'ice_ingress_packets_total',
    'Datagrams relayed, by direction (client_in, backend_out, backend_in, client_out) and path (userspace, kernel).',
    () => {
      const c = counters();
      return [c.packetsFromClients, c.packetsToBackends, c.packetsFromBackends, c.packetsToClients];
    },
    () => [k!.totals.packetsUp, k!.totals.packetsUp, k!.totals.packetsDown, k!.totals.packetsDown],
  );
  byPath(
    'ice_ingress_bytes_total',
    'UDP payload bytes relayed, by direction and path.',
    () => {
      const c = counters();
      return [c.bytesFromClients, c.bytesToBackends, c.bytesFromBackends, c.bytesToClients];
    },
    () => [k!.totals.bytesUp, k!.totals.bytesUp, k!.totals.bytesDown, k!.totals.bytesDown],
  );
  if (k !== undefined) {
    if (src.handover !== undefined) registry.registerMetric(src.handover);
    mirror(
      'ice_ingress_fastpath_transactions_total',
      'nftables transactions of the fast path, by result (ok, failed).',
      'result',
      () => [
        ['ok', k.stats.transactions],
        ['failed', k.stats.failures],
      ],
    );
    new Gauge({
      name: 'ice_ingress_fastpath_sessions',
      help: 'Sessions whose media the kernel forwards.',
      registers: [registry],
      collect() {
        this.set(k.kernelSessions);
      },
    });
  }
  mirror('ice_ingress_drops_total', 'Datagrams dropped, by reason (fixed set; see README).', 'reason', () =>
    byIndex(DROP_REASON_LABELS, counters().drops),
  );
  mirror(
    'ice_ingress_routes_total',
    'How new client flows were routed: rebind, prefix, learned, probe_won, probe_failed, restart, rebind_refused.',
    'outcome',
    () => byIndex(ROUTE_LABELS, counters().routes),
  );
  mirror(
    'ice_ingress_probes_total',
    'Probe datagrams sent to backends, by kind: fanout (one per candidate) or directed (prefix token, learned ufrag).',
    'kind',
    () => [
      ['fanout', counters().probesSent - counters().directedProbesSent],
      ['directed', counters().directedProbesSent],
    ],
  );
  mirror('ice_ingress_sessions_opened_total', 'Sessions whose owner was found.', undefined, () => [
    ['', counters().sessionsOpened],
  ]);
  mirror(
    'ice_ingress_sessions_closed_total',
    'Sessions ended, by reason (idle, probe_failed, backend_gone, restart, superseded, shutdown, upstream_error).',
    'reason',
    () => byIndex(CLOSE_REASONS, counters().closed),
  );
  new Gauge({
    name: 'ice_ingress_sessions',
    help: 'Sessions in the table (established and still probing).',
    registers: [registry],
    collect() {
      this.set(src.sessions.size);
    },
  });
  new Gauge({
    name: 'ice_ingress_client_endpoints',
    help: 'Client 5-tuples mapped to sessions.',
    registers: [registry],
    collect() {
      this.set(src.sessions.endpointCount);
    },
  });
  new Gauge({
    name: 'ice_ingress_upstream_sockets',
    help: 'Open upstream sockets (one per session).',
    registers: [registry],
    collect() {
      this.set(src.openUpstreams());
    },
  });
  const activeSources = src.activeSources;
  if (activeSources !== undefined) {
    new Gauge({
      name: 'ice_ingress_admission_active_sources',
      help: 'Source addresses (IPv6: /64s) that sent a first check in the last second; each gets an equal share of the probe budgets.',
      registers: [registry],
      collect() {
        this.set(activeSources());
      },
    });
  }
  const freePorts = src.freePorts;
  if (freePorts !== undefined) {
    new Gauge({
      name: 'ice_ingress_upstream_ports_free',
      help: 'Upstream ports not in use (ready, or resting in quarantine after a backend answered on them).',
      registers: [registry],
      collect() {
        this.set(freePorts());
      },
    });
  }
  return registry;
}

// ---------------------------------------------------------------------------------------------
// Discovery (src/discovery)

/** What the discovery metrics read (src/discovery/index.ts, ObservedDiscovery). */
export interface DiscoveryMetricSource {
  readonly kind: string;
  readonly status: {
    readonly connected: boolean;
    readonly lastSyncAt: number | undefined;
    readonly restarts: number;
    readonly errors: number;
  };
  readonly snapshots: number;
  readonly lastSnapshot: readonly BackendSpec[] | undefined;
}

const STATES: readonly BackendState[] = ['ready', 'terminating', 'unready'];

/**
 * Read at scrape time from the source's status; nothing is updated on the hot path.
 * - ice_ingress_discovery_connected: 1 while the upstream answers; 0 while the last snapshot is
 *   served from memory (API server or DNS unreachable). Alert on it staying 0.
 * - ice_ingress_discovery_last_sync_timestamp_seconds: last successful list/watch event/resolution.
 * - ice_ingress_discovery_restarts_total, ice_ingress_discovery_errors_total.
 * - ice_ingress_discovery_snapshots_total: snapshots handed to the data path (changes only).
 * - ice_ingress_discovery_backends{state}: backends in the last snapshot.
 */
export function registerDiscoveryMetrics(registry: Registry, source: DiscoveryMetricSource): void {
  const registers = [registry];
  const labels = { kind: source.kind };
  new Gauge({
    name: 'ice_ingress_discovery_connected',
    help: 'Whether the discovery upstream (Kubernetes API, DNS) answered last time (1) or the last good snapshot is served from memory (0).',
    labelNames: ['kind'],
    registers,
    collect() {
      this.set(labels, source.status.connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ice_ingress_discovery_last_sync_timestamp_seconds',
    help: 'Unix time of the last successful discovery sync (list, watch event or DNS answer); 0 before the first.',
    labelNames: ['kind'],
    registers,
    collect() {
      this.set(labels, (source.status.lastSyncAt ?? 0) / 1000);
    },
  });
  new Counter({
    name: 'ice_ingress_discovery_restarts_total',
    help: 'Restarts of the EndpointSlice informer after errors (a 410 Gone relist is not a restart).',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      this.inc(labels, source.status.restarts);
    },
  });
  new Counter({
    name: 'ice_ingress_discovery_errors_total',
    help: 'Failed discovery attempts: list/watch errors (k8s) or failed resolutions (dns).',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      this.inc(labels, source.status.errors);
    },
  });
  new Counter({
    name: 'ice_ingress_discovery_snapshots_total',
    help: 'Backend snapshots handed to the data path (emitted on change only).',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      this.inc(labels, source.snapshots);
    },
  });
  new Gauge({
    name: 'ice_ingress_discovery_backends',
    help: 'Backends in the current discovery snapshot, by state (ready, terminating, unready).',
    labelNames: ['state'],
    registers,
    collect() {
      const counts: Record<BackendState, number> = { ready: 0, terminating: 0, unready: 0 };
      for (const b of source.lastSnapshot ?? []) counts[b.state]++;
      for (const state of STATES) this.set({ state }, counts[state]);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// A pod's worker threads (src/workers)

/** What the per-worker series read (src/workers/pool.ts, from the workers' stats rows). */
export interface WorkerMetricSource {
  readonly workers: number;
  sessions(worker: number): number;
  /** Datagrams relayed by `worker`: client_in, backend_out, backend_in, client_out. */
  packets(worker: number): readonly [number, number, number, number];
  handoffsOut(worker: number): number;
  handoffsIn(worker: number): number;
  /** Summed over the workers. */
  handoffDrops(): number;
  handoffRoutes(): number;
}

/**
 * Per-worker series (label `worker`, bounded by --workers), beside the pod-wide sums that
 * admin/metrics.ts exposes: an uneven SO_REUSEPORT spread or a hand-off storm shows here.
 */

export function registerWorkerMetrics(registry: Registry, stats: WorkerMetricSource): void {
  const registers = [registry];
  const workers = Array.from({ length: stats.workers }, (_, i) => String(i));
  new Gauge({
    name: 'ice_ingress_workers',
    help: 'Data-path worker threads sharing the listening port.',
    registers,
    collect() {
      this.set(stats.workers);
    },
  });
  new Gauge({
    name: 'ice_ingress_worker_sessions',
    help: 'Sessions owned by each worker (established and probing).',
    labelNames: ['worker'],
    registers,
    collect() {
      for (const w of workers) this.set({ worker: w }, stats.sessions(Number(w)));
    },
  });
  new Counter({
    name: 'ice_ingress_worker_packets_total',
    help: 'Datagrams relayed by each worker, by direction.',
    labelNames: ['worker', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const w of workers) {
        const p = stats.packets(Number(w));
        DIRECTIONS.forEach((direction, i) => {
          this.inc({ worker: w, direction }, p[i]!);
        });
      }
    },
  });
  new Counter({
    name: 'ice_ingress_worker_handoffs_total',
    help: 'Client datagrams handed between workers: out = to the owner of their session, in = from another worker.',
    labelNames: ['worker', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const w of workers) {
        this.inc({ worker: w, direction: 'out' }, stats.handoffsOut(Number(w)));
        this.inc({ worker: w, direction: 'in' }, stats.handoffsIn(Number(w)));
      }
    },
  });
  new Counter({
    name: 'ice_ingress_handoff_drops_total',
    help: 'Datagrams lost because the hand-off ring to the owning worker was full.',
    registers,
    collect() {
      this.reset();
      this.inc(stats.handoffDrops());
    },
  });
  new Gauge({
    name: 'ice_ingress_handoff_routes',
    help: 'Client 5-tuples that a worker hands to another (rebound or second-candidate flows).',
    registers,
    collect() {
      this.set(stats.handoffRoutes());
    },
  });
}

// ---------------------------------------------------------------------------------------------
// The other replicas of the tier (src/peers, docs/peers.md)

/** What the peer series read: one thread's peer end, or a pod's workers' summed. */
export interface PeerMetricSource {
  /** The peer layer's counters (summed over the data-path threads). */
  counters(): PeerCounters;
  /** Tunnels open now: [receiver side, owner side]. */
  tunnels(): readonly [number, number];
  /** Known peers (self excluded) by state: [not heard yet, ready, draining, silent]. */
  peers(): readonly [number, number, number, number];
}

/** Time from a query round's start to its end (a "mine", every "not mine", or the timeout). */
export function createPeerRoundHistogram(): Histogram {
  return new Histogram({
    name: 'ice_ingress_peer_query_seconds',
    help: "Time from a query round's start to its end: the first owner's answer, every peer's no, or the timeout.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [],
  });
}

/** `rounds`: from {@link createPeerRoundHistogram}, registered here. */
export function registerPeerMetrics(registry: Registry, src: PeerMetricSource, rounds: Histogram): void {
  const registers = [registry];
  registry.registerMetric(rounds);
  const counter = (name: string, help: string, label: string | undefined, rows: () => Rows): void =>
    mirrorCounter(registry, name, help, label, rows);
  new Gauge({
    name: 'ice_ingress_peers',
    help: 'Known peers (this replica excluded) by state: ready, draining (answering, in SIGTERM drain), silent (no answer for 3 s, or not heard from yet).',
    labelNames: ['state'],
    registers,
    collect() {
      const [unknown, ready, draining, silent] = src.peers();
      this.set({ state: 'ready' }, ready);
      this.set({ state: 'draining' }, draining);
      this.set({ state: 'silent' }, silent + unknown);
    },
  });
  counter(
    'ice_ingress_peer_queries_total',
    'Query rounds this replica asked its peers about unknown client 5-tuples, by outcome (owned, none, timeout).',
    'outcome',
    () => byIndex(QUERY_OUTCOME_LABELS, src.counters().queries),
  );
  counter(
    'ice_ingress_peer_queries_skipped_total',
    'Unknown client 5-tuples not asked about (handled as without peers), by reason.',
    'reason',
    () => byIndex(QUERY_SKIP_LABELS, src.counters().skipped),
  );
  counter(
    'ice_ingress_peer_answers_total',
    "Answers this replica gave to its peers' queries: flow (a 5-tuple of its sessions), ufrag (a ufrag pair of its sessions), none.",
    'answer',
    () => byIndex(ANSWER_LABELS, src.counters().answers),
  );
  counter(
    'ice_ingress_peer_handoffs_total',
    'Client flows handed between replicas: out = this replica tunnels one to its owner, in = this replica (the owner) took one from the replica that receives it.',
    'direction',
    () => [
      ['out', src.counters().handoffsOut],
      ['in', src.counters().handoffsIn],
    ],
  );
  counter(
    'ice_ingress_peer_tunnel_packets_total',
    'Tunneled datagrams, by direction (to_owner, from_receiver, to_receiver, from_owner).',
    'direction',
    () => byIndex(TUNNEL_DIR_LABELS, src.counters().tunnelPackets),
  );
  counter(
    'ice_ingress_peer_tunnel_bytes_total',
    'Payload bytes of tunneled datagrams (without the 12-byte tunnel header), by direction.',
    'direction',
    () => byIndex(TUNNEL_DIR_LABELS, src.counters().tunnelBytes),
  );
  new Gauge({
    name: 'ice_ingress_peer_tunnels',
    help: 'Tunnels open now: receiver (flows this replica sends to their owners), owner (its sessions reached through a peer).',
    labelNames: ['side'],
    registers,
    collect() {
      const [receiver, owner] = src.tunnels();
      this.set({ side: 'receiver' }, receiver);
      this.set({ side: 'owner' }, owner);
    },
  });
  counter('ice_ingress_peer_tunnels_closed_total', 'Tunnels ended, by reason.', 'reason', () =>
    byIndex(TUNNEL_CLOSE_LABELS, src.counters().tunnelsClosed),
  );
  counter(
    'ice_ingress_peer_drops_total',
    'Peer-port datagrams dropped by reason, and client datagrams that could not be held while their query was in flight (hold_full).',
    'reason',
    () => byIndex(PEER_DROP_LABELS, src.counters().drops),
  );
}
