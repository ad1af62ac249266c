// How long the tier's event loops waited for a CPU during a scenario's window: the main thread's
// /proc/<pid>/schedstat (Linux: time on a CPU, time runnable but waiting on a run queue, in ns;
// Documentation/scheduler/sched-stats.rst). A Node process's event loop is its main thread, so
// its run-queue wait is latency every datagram it relays at that moment pays — on a machine
// whose cores the replicas share with the fake JVBs, the clients and the balancer, the part of a
// gap that is the machine's and not the proxy's.
import { readFileSync } from 'node:fs';

export interface SchedStat {
  /** ns on a CPU */
  run: number;
  /** ns runnable, waiting for a CPU */
  wait: number;
}

/** The main thread's schedstat, or undefined once the process is gone (or on a kernel without it). */
export function schedstat(pid: number | undefined): SchedStat | undefined {
  if (pid === undefined) return undefined;
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ');
    return { run: Number(run), wait: Number(wait) };
  } catch {
    return undefined;
  }
}

export interface RunQueueFigures {
  /** Per group: ms its processes waited for a CPU per second of the window, mean per process. */
  waitMsPerS: Record<string, number>;
  /** Per group: the highest share of one slice's wall time one process spent waiting (%), and when (ms). */
  peak: Record<string, { pct: number; atMs: number }>;
}

/**
 * Samples the main threads of groups of processes every `periodMs` (the groups are asked at each
 * sample: replicas come and go during a window) and sums their run-queue wait.
 */
export class RunQueueSampler {
  readonly #groups: () => Record<string, ReadonlyArray<number | undefined>>;
  readonly #periodMs: number;
  readonly #last = new Map<number, SchedStat & { at: number }>();
  /** Per group: ns waited, and ns of process lifetime sampled (a process counts while it lives). */
  readonly #wait = new Map<string, number>();
  readonly #alive = new Map<string, number>();
  readonly #peak = new Map<string, { pct: number; atMs: number }>();
  #timer: NodeJS.Timeout | undefined;
  #startAt = 0;

  constructor(groups: () => Record<string, ReadonlyArray<number | undefined>>, periodMs = 50) {
    this.#groups = groups;
    this.#periodMs = periodMs;
  }

  start(): void {
    this.#startAt = performance.now();
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), this.#periodMs);
  }

  stop(): RunQueueFigures {
    clearInterval(this.#timer);
    this.#sample();
    const waitMsPerS: Record<string, number> = {};
    for (const [g, alive] of this.#alive)
      waitMsPerS[g] = alive > 0 ? (1000 * (this.#wait.get(g) ?? 0)) / alive : 0;
    return { waitMsPerS, peak: Object.fromEntries(this.#peak) };
  }

  #sample(): void {
    const now = performance.now();
    for (const [group, pids] of Object.entries(this.#groups())) {
      for (const pid of pids) {
        if (pid === undefined) continue;
        const s = schedstat(pid);
        if (s === undefined) continue;
        const prev = this.#last.get(pid);
        this.#last.set(pid, { ...s, at: now });
        if (prev === undefined) continue;
        const dWait = s.wait - prev.wait;
        const sliceNs = (now - prev.at) * 1e6;
        if (sliceNs <= 0) continue;
        this.#wait.set(group, (this.#wait.get(group) ?? 0) + dWait);
        this.#alive.set(group, (this.#alive.get(group) ?? 0) + sliceNs);
        const pct = (100 * dWait) / sliceNs;
        if (pct > (this.#peak.get(group)?.pct ?? -1))
          this.#peak.set(group, { pct, atMs: Math.round(prev.at - this.#startAt) });
      }
    }
  }
}
