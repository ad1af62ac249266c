import { Counters } from '../defs/counters.ts';
import type { KernelPathSource } from '../defs/interfaces.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from '../defs/reasons.ts';

/**
 * Per-worker statistics in one SharedArrayBuffer: each worker copies its Counters and gauges into
 * its own slot (a Float64Array row) every {@link PUBLISH_MS}; the main thread sums the rows at
 * scrape time. Only the owner writes a row, so no Atomics are needed; a scrape may see a row up to
 * one period old (docs/workers.md, "Metrics").
 */

export const PUBLISH_MS = 100;

const SCALARS = [
  'packetsFromClients',
  'bytesFromClients',
  'packetsToBackends',
  'bytesToBackends',
  'packetsFromBackends',
  'bytesFromBackends',
  'packetsToClients',
  'bytesToClients',
  'probesSent',
  'directedProbesSent',
  'sessionsOpened',
] as const;
type Scalar = (typeof SCALARS)[number];

const DROPS = SCALARS.length;
const ROUTES = DROPS + DROP_REASON_LABELS.length;
const CLOSED = ROUTES + ROUTE_LABELS.length;
/** Gauges and hand-off counters after the Counters fields. */
export const Stat = {
  sessions: CLOSED + CLOSE_REASONS.length,
  endpoints: CLOSED + CLOSE_REASONS.length + 1,
  upstreams: CLOSED + CLOSE_REASONS.length + 2,
  handoffsOut: CLOSED + CLOSE_REASONS.length + 3,
  handoffsIn: CLOSED + CLOSE_REASONS.length + 4,
  handoffDrops: CLOSED + CLOSE_REASONS.length + 5,
  handoffRoutes: CLOSED + CLOSE_REASONS.length + 6,
  /** Each worker's own count: a source the kernel put on two workers counts in both. */
  activeSources: CLOSED + CLOSE_REASONS.length + 7,
  /** −1 when no upstream port range is configured. */
  freePorts: CLOSED + CLOSE_REASONS.length + 8,
  // The kernel fast path's view of this worker's sessions (0 with it off): fast-path.ts's totals
  // and stats, summed into the pod's `path="kernel"` series by the main thread.
  kernelPacketsUp: CLOSED + CLOSE_REASONS.length + 9,
  kernelBytesUp: CLOSED + CLOSE_REASONS.length + 10,
  kernelPacketsDown: CLOSED + CLOSE_REASONS.length + 11,
  kernelBytesDown: CLOSED + CLOSE_REASONS.length + 12,
  fastPathTransactions: CLOSED + CLOSE_REASONS.length + 13,
  fastPathFailures: CLOSED + CLOSE_REASONS.length + 14,
  fastPathSessions: CLOSED + CLOSE_REASONS.length + 15,
} as const;
export const ROW = CLOSED + CLOSE_REASONS.length + 16;

export interface Gauges {
  sessions: number;
  endpoints: number;
  upstreams: number;
  handoffsOut: number;
  handoffsIn: number;
  handoffDrops: number;
  handoffRoutes: number;
  activeSources: number;
  freePorts: number;
  /** The worker's kernel fast path, when on. */
  kernel?: KernelPathSource;
}

export function createStatsBuffer(workers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * ROW * 8);
}

/** Worker side: copies `c` and `g` into row `worker`. */
export function publish(buffer: SharedArrayBuffer, worker: number, c: Counters, g: Gauges): void {
  const row = new Float64Array(buffer, worker * ROW * 8, ROW);
  for (let i = 0; i < SCALARS.length; i++) row[i] = c[SCALARS[i]!];
  row.set(c.drops, DROPS);
  row.set(c.routes, ROUTES);
  row.set(c.closed, CLOSED);
  row[Stat.sessions] = g.sessions;
  row[Stat.endpoints] = g.endpoints;
  row[Stat.upstreams] = g.upstreams;
  row[Stat.handoffsOut] = g.handoffsOut;
  row[Stat.handoffsIn] = g.handoffsIn;
  row[Stat.handoffDrops] = g.handoffDrops;
  row[Stat.handoffRoutes] = g.handoffRoutes;
  row[Stat.activeSources] = g.activeSources;
  row[Stat.freePorts] = g.freePorts;
  const k = g.kernel;
  row[Stat.kernelPacketsUp] = k?.totals.packetsUp ?? 0;
  row[Stat.kernelBytesUp] = k?.totals.bytesUp ?? 0;
  row[Stat.kernelPacketsDown] = k?.totals.packetsDown ?? 0;
  row[Stat.kernelBytesDown] = k?.totals.bytesDown ?? 0;
  row[Stat.fastPathTransactions] = k?.stats.transactions ?? 0;
  row[Stat.fastPathFailures] = k?.stats.failures ?? 0;
  row[Stat.fastPathSessions] = k?.kernelSessions ?? 0;
}

/** Main-thread side: reads the rows. */
export class WorkerStats {
  readonly workers: number;
  readonly #all: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    this.#all = new Float64Array(buffer);
    this.workers = this.#all.length / ROW;
  }

  /** One value of one worker's row. */
  get(worker: number, index: number): number {
    return this.#all[worker * ROW + index]!;
  }

  sum(index: number): number {
    let s = 0;
    for (let w = 0; w < this.workers; w++) s += this.#all[w * ROW + index]!;
    return s;
  }

  /** The pod's kernel fast path: every worker's, summed, in the shape /metrics reads one process's. */
  kernel(): KernelPathSource {
    return {
      totals: {
        packetsUp: this.sum(Stat.kernelPacketsUp),
        bytesUp: this.sum(Stat.kernelBytesUp),
        packetsDown: this.sum(Stat.kernelPacketsDown),
        bytesDown: this.sum(Stat.kernelBytesDown),
      },
      stats: { transactions: this.sum(Stat.fastPathTransactions), failures: this.sum(Stat.fastPathFailures) },
      kernelSessions: this.sum(Stat.fastPathSessions),
    };
  }

  /** The pod's Counters: every worker's, summed (a fresh object; called once per scrape). */
  counters(): Counters {
    const c = new Counters();
    for (let i = 0; i < SCALARS.length; i++) (c as Record<Scalar, number>)[SCALARS[i]!] = this.sum(i);
    for (let i = 0; i < c.drops.length; i++) c.drops[i] = this.sum(DROPS + i);
    for (let i = 0; i < c.routes.length; i++) c.routes[i] = this.sum(ROUTES + i);
    for (let i = 0; i < c.closed.length; i++) c.closed[i] = this.sum(CLOSED + i);
    return c;
  }
}
