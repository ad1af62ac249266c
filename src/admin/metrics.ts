import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { CLOSE_REASONS, type Counters, DROP_REASON_LABELS, ROUTE_LABELS } from '../proxy/counters.ts';
import type { SessionTable } from '../session/table.ts';

/**
 * Prometheus metrics (prom-client). The data path keeps plain numbers; each metric here reads them
 * in its `collect()` at scrape time, so the per-packet cost of metrics is one field increment.
 * Labels come only from fixed sets (direction, reason, outcome, state): never client addresses.
 */
export interface MetricSources {
  readonly counters: Counters;
  readonly sessions: SessionTable;
  readonly openUpstreams: () => number;
  /** From {@link createRoutingHistogram}; registered here. */
  readonly routing?: Histogram<'outcome'>;
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

export function createRegistry(src: MetricSources, withProcessMetrics = true): Registry {
  const registry = new Registry();
  if (withProcessMetrics) collectDefaultMetrics({ register: registry });
  const c = src.counters;
  if (src.routing !== undefined) registry.registerMetric(src.routing);

  // prom-client counters only go up; ours are the source of truth, so each scrape starts from a
  // reset and writes the absolute values (the exposition is the same as for a native counter).
  const setCounter = (m: Counter<string>, labels: Record<string, string>, value: number): void => {
    m.inc(labels, value);
  };

  new Counter({
    name: 'ice_ingress_packets_total',
    help: 'Datagrams relayed, by direction (client_in, backend_out, backend_in, client_out).',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.reset();
      setCounter(this, { direction: 'client_in' }, c.packetsFromClients);
      setCounter(this, { direction: 'backend_out' }, c.packetsToBackends);
      setCounter(this, { direction: 'backend_in' }, c.packetsFromBackends);
      setCounter(this, { direction: 'client_out' }, c.packetsToClients);
    },
  });
  new Counter({
    name: 'ice_ingress_bytes_total',
    help: 'UDP payload bytes relayed, by direction.',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.reset();
      setCounter(this, { direction: 'client_in' }, c.bytesFromClients);
      setCounter(this, { direction: 'backend_out' }, c.bytesToBackends);
      setCounter(this, { direction: 'backend_in' }, c.bytesFromBackends);
      setCounter(this, { direction: 'client_out' }, c.bytesToClients);
    },
  });
  new Counter({
    name: 'ice_ingress_drops_total',
    help: 'Datagrams dropped, by reason (fixed set; see README).',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (let i = 0; i < DROP_REASON_LABELS.length; i++) {
        setCounter(this, { reason: DROP_REASON_LABELS[i]! }, c.drops[i]!);
      }
    },
  });
  new Counter({
    name: 'ice_ingress_routes_total',
    help: 'How new client flows were routed: rebind, prefix, learned, probe_won, probe_failed, restart, rebind_refused.',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (let i = 0; i < ROUTE_LABELS.length; i++)
        setCounter(this, { outcome: ROUTE_LABELS[i]! }, c.routes[i]!);
    },
  });
  new Counter({
    name: 'ice_ingress_probes_total',
    help: 'Probe datagrams sent to backends (a fan-out sends one per candidate).',
    registers: [registry],
    collect() {
      this.reset();
      setCounter(this, {}, c.probesSent);
    },
  });
  new Counter({
    name: 'ice_ingress_sessions_opened_total',
    help: 'Sessions whose owner was found.',
    registers: [registry],
    collect() {
      this.reset();
      setCounter(this, {}, c.sessionsOpened);
    },
  });
  new Counter({
    name: 'ice_ingress_sessions_closed_total',
    help: 'Sessions ended, by reason (idle, probe_failed, backend_gone, restart, shutdown, upstream_error).',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (let i = 0; i < CLOSE_REASONS.length; i++)
        setCounter(this, { reason: CLOSE_REASONS[i]! }, c.closed[i]!);
    },
  });
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
  return registry;
}
