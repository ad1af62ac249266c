import { Counters } from '../defs/counters.ts';
import type { KernelPathSource } from '../defs/interfaces.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from '../defs/reasons.ts';
import { PeerCounters } from '../peers/counters.ts';

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
/**
 * The peer layer's counters (src/peers/counters.ts, with `--peers`; zeros without): its arrays in
 * this order, then its hand-off counts, its open tunnels and its view of the peers' states.
 */
const PEER_ARRAYS = [
  'queries',
  'skipped',
  'answers',
  'tunnelPackets',
  'tunnelBytes',
  'tunnelsClosed',
  'drops',
] as const;
const PEER = CLOSED + CLOSE_REASONS.length + 16;
const PEER_SIZES = PEER_ARRAYS.map((k) => new PeerCounters()[k].length);
const PEER_SCALARS = PEER + PEER_SIZES.reduce((a, b) => a + b, 0);
export const PeerStat = {
  handoffsOut: PEER_SCALARS,
  handoffsIn: PEER_SCALARS + 1,
  receiverTunnels: PEER_SCALARS + 2,
  ownerTunnels: PEER_SCALARS + 3,
  /** Known peers by state (peer-set.ts PeerState): not heard yet, ready, draining, silent. */
  peerStates: PEER_SCALARS + 4,
} as const;
export const ROW = PEER_SCALARS + 8;

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
  /** The worker's end of the peer protocol, with `--peers`. */
  peers?: PeerGauges;
}

/** What a worker publishes of its peer end. */
export interface PeerGauges {
  readonly counters: PeerCounters;
  readonly receiverTunnels: number;
  readonly ownerTunnels: number;
  readonly states: readonly [number, number, number, number];
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
  const p = g.peers;
  if (p === undefined) return;
  let o = PEER;
  for (const key of PEER_ARRAYS) {
    row.set(p.counters[key], o);
    o += p.counters[key].length;
  }
  row[PeerStat.handoffsOut] = p.counters.handoffsOut;
  row[PeerStat.handoffsIn] = p.counters.handoffsIn;
  row[PeerStat.receiverTunnels] = p.receiverTunnels;
  row[PeerStat.ownerTunnels] = p.ownerTunnels;
  row.set(p.states, PeerStat.peerStates);
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

  /** The pod's peer counters: every worker's, summed (a fresh object; called once per scrape). */
  peerCounters(): PeerCounters {
    const c = new PeerCounters();
    let o = PEER;
    for (const key of PEER_ARRAYS) {
      const a = c[key];
      for (let i = 0; i < a.length; i++) a[i] = this.sum(o + i);
      o += a.length;
    }
    c.handoffsOut = this.sum(PeerStat.handoffsOut);
    c.handoffsIn = this.sum(PeerStat.handoffsIn);
    return c;
  }

  /**
   * The peers' states as worker 0 sees them: every worker pings every peer on its own, and they
   * agree but for a ping period; a sum would count each peer once per worker.
   */
  peerStates(): [number, number, number, number] {
    const s = PeerStat.peerStates;
    return [this.get(0, s), this.get(0, s + 1), this.get(0, s + 2), this.get(0, s + 3)];
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
