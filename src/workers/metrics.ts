import { Counter, Gauge, type Registry } from 'prom-client';
import { Stat, type WorkerStats } from './stats.ts';

/**
 * Per-worker series (label `worker`, bounded by --workers), beside the pod-wide sums that
 * admin/metrics.ts exposes: an uneven SO_REUSEPORT spread or a hand-off storm shows here.
 */
const DIRECTIONS = ['client_in', 'backend_out', 'backend_in', 'client_out'] as const;
// Indexes of the packet counters in a stats row (the order of Counters' first fields).
const PACKET_INDEX = [0, 2, 4, 6] as const;

export function registerWorkerMetrics(registry: Registry, stats: WorkerStats): void {
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
      for (const w of workers) this.set({ worker: w }, stats.get(Number(w), Stat.sessions));
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
        DIRECTIONS.forEach((direction, i) => {
          this.inc({ worker: w, direction }, stats.get(Number(w), PACKET_INDEX[i]!));
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
        this.inc({ worker: w, direction: 'out' }, stats.get(Number(w), Stat.handoffsOut));
        this.inc({ worker: w, direction: 'in' }, stats.get(Number(w), Stat.handoffsIn));
      }
    },
  });
  new Counter({
    name: 'ice_ingress_handoff_drops_total',
    help: 'Datagrams lost because the hand-off ring to the owning worker was full.',
    registers,
    collect() {
      this.reset();
      this.inc(stats.sum(Stat.handoffDrops));
    },
  });
  new Gauge({
    name: 'ice_ingress_handoff_routes',
    help: 'Client 5-tuples that a worker hands to another (rebound or second-candidate flows).',
    registers,
    collect() {
      this.set(stats.sum(Stat.handoffRoutes));
    },
  });
}
