import type { Logger } from 'pino';
import type { FastPathHost, FlowEndpoint, FlowSession, KernelFlowListener } from '../defs/interfaces.ts';
import type { KernelCounts } from '../defs/kernel-counts.ts';
import type { CloseReason } from '../defs/reasons.ts';
import { type FlowLookup, FlowPlan } from './flow-plan.ts';
import { type CounterValue, parseCounters } from './kernel-counters.ts';
import type { KernelTable } from './kernel-table.ts';
import type { Nft } from './nft-runner.ts';
import type { TableParams } from './nft-script.ts';
import { LIST_COUNTERS, type RoleContext, TableAttached, TableOwner, type TableRole } from './table-role.ts';

/**
 * The kernel fast path (docs/fast-path.md): hears flow events, keeps the `netdev ice_ingress`
 * table's per-session chains, counters and map elements in step with the established sessions in
 * batched transactions, and reads the sessions' named counters back into them (idle clock, packet
 * and byte counts).
 *
 * It never writes a session: what it learns from the kernel goes through {@link FastPathHost}
 * (the session registry). One transaction or listing at a time (a promise chain), so counter
 * baselines and element changes never interleave.
 *
 * Two modes. One process ({@link NftFastPath.start}) owns the table: it creates it, and deletes
 * it at shutdown or when it gives up. A worker thread ({@link NftFastPath.attach}) writes its own
 * sessions' chains and elements into the table the main thread created (src/workers/pool.ts) and
 * never creates or deletes the table: the other workers' flows are in it (docs/workers.md,
 * "Kernel fast path").
 */

export interface FastPathOptions extends TableParams {
  /** Events within this window go into one transaction. */
  readonly batchWindowMs: number;
  /** Counters are read this often. */
  readonly pollIntervalMs: number;
  /**
   * Set in a worker thread (attached mode): its id, which its chain names carry. Unset: one
   * process, which owns the table.
   */
  readonly worker?: number;
}

export interface FastPathDeps {
  readonly nft: Nft;
  readonly host: FastPathHost;
  readonly sources: {
    get(backendAddress: string): string | null | undefined;
    resolve(backendAddress: string): Promise<string>;
  };
  /** The namespace's routes (routes.ts), re-read before each batch. */
  readonly nextHops: {
    refresh(): Promise<void>;
    get(address: string): { via: string; dev: string } | undefined;
  };
  readonly clock: () => number;
  readonly log: Logger;
  /** Once per session: ms from `established` to its elements being in the kernel. */
  readonly onHandover?: (ms: number) => void;
}

/** IPv4 + UDP headers: nft counts IP packet bytes, our counters count UDP payload. */
const HEADER_BYTES = 28;

export class NftFastPath implements KernelFlowListener {
  /** Everything the kernel forwarded, for /metrics (`path="kernel"`). */
  readonly totals: KernelCounts = { packetsUp: 0, bytesUp: 0, packetsDown: 0, bytesDown: 0 };
  /** Transactions applied and failed; sessions handed over. */
  readonly stats = { transactions: 0, failures: 0, handovers: 0, polls: 0 };
  readonly #plan: FlowPlan;
  readonly #d: FastPathDeps;
  readonly #opt: FastPathOptions;
  /** Last value read per counter name, for deltas. */
  readonly #seen = new Map<string, CounterValue>();
  readonly #look: FlowLookup;
  #queue: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #poller: NodeJS.Timeout | undefined;
  #flushing = false;
  #pollsYielded = 0;
  /**
   * Closed sessions whose close log waits for their last kernel counts (the registry writes it
   * when the promise `closed` returned settles): released once no counter of theirs is left to read.
   */
  readonly #closeLogs = new Map<FlowSession, () => void>();
  #stopped = false;
  /** Set after a resynchronisation failed too: the table is gone, everything stays in Node. */
  #disabled = false;

  readonly #role: TableRole;
  readonly #ctx: RoleContext;

  private constructor(opt: FastPathOptions, deps: FastPathDeps, role: TableRole) {
    this.#opt = opt;
    this.#d = deps;
    this.#role = role;
    this.#plan = new FlowPlan(opt, role.worker);
    this.#look = {
      sourceOf: (a) => deps.sources.get(a),
      nextHop: (a) => deps.nextHops.get(a),
    };
    this.#ctx = {
      plan: this.#plan,
      look: this.#look,
      nft: deps.nft,
      log: deps.log,
      apply: (lines) => this.#apply(lines),
      committed: (batch) => {
        this.stats.transactions++;
        this.#afterCommit(batch);
      },
      giveUp: (err, message) => this.#giveUp(err, message),
    };
  }

  /**
   * One process: the fast path of the table's owner (the pod created `table`, or creates it once
   * the listening socket is bound: no session exists before), with the counter poller started.
   */
  static owner(table: KernelTable, opt: FastPathOptions, deps: FastPathDeps): NftFastPath {
    if (opt.worker !== undefined) throw new Error('fast path: a worker attaches to the table');
    const fp = new NftFastPath(opt, deps, new TableOwner(table));
    fp.#startPoller();
    return fp;
  }

  /**
   * A worker thread: uses the table the main thread creates (before any session can be
   * established: the main thread sends the first backends after it), touches nothing in it but
   * its own chains and elements.
   */
  static attach(opt: FastPathOptions & { readonly worker: number }, deps: FastPathDeps): NftFastPath {
    const fp = new NftFastPath(opt, deps, new TableAttached(opt.worker));
    fp.#startPoller();
    return fp;
  }

  #startPoller(): void {
    this.#poller = setInterval(() => this.#scheduledPoll(), this.#opt.pollIntervalMs);
    this.#poller.unref();
  }

  /** Sessions with elements in the kernel right now. */
  get kernelSessions(): number {
    return this.#plan.installed;
  }

  // KernelFlowListener: only marks; the batch reads the sessions when it runs. Once stopped or given
  // up, nothing is tracked any more.
  established(s: FlowSession): void {
    if (this.#stopped || this.#disabled) return;
    this.#plan.established(s, this.#d.clock());
    this.#schedule();
  }
  endpointJoined(s: FlowSession, _ep: FlowEndpoint): void {
    this.#plan.changed(s);
    this.#schedule();
  }
  currentChanged(s: FlowSession, _ep: FlowEndpoint): void {
    this.#plan.changed(s);
    this.#schedule();
  }
  endpointLeft(s: FlowSession, _ep: FlowEndpoint): void {
    this.#plan.changed(s);
    this.#schedule();
  }
  routeChanged(s: FlowSession, _ep: FlowEndpoint): void {
    this.#plan.changed(s);
    this.#schedule();
  }
  closed(s: FlowSession, _reason: CloseReason, established: boolean): Promise<void> | undefined {
    if (!established) return undefined;
    // A session in the kernel (or, while a batch runs, maybe about to be) has counts to come: its
    // close log waits for the read that takes its counters' last values (docs/fast-path.md,
    // "Counters"), at most a poll interval or so.
    const counted = this.#plan.closed(s) || this.#flushing;
    this.#schedule();
    if (!counted || this.#stopped || this.#disabled) return undefined;
    return new Promise((resolve) => this.#closeLogs.set(s, resolve));
  }

  /** Lets the close logs go of every waiting session with nothing left to read (all: `everyone`). */
  #releaseCloseLogs(everyone = false): void {
    for (const [s, resolve] of this.#closeLogs) {
      if (!everyone && !this.#disabled && this.#plan.hasCounters(s)) continue;
      this.#closeLogs.delete(s);
      resolve();
    }
  }

  /**
   * Waits for pending work, then removes the table (one process) or this worker's flows (attached:
   * the main thread deletes the table once every worker has stopped). Idempotent.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#poller);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#queue;
    try {
      // Counts since the last poll, so the close logs and /metrics get them.
      if (!this.#disabled) await this.#poll();
    } catch {
      // Best effort; the table goes anyway.
    }
    this.#releaseCloseLogs(true);
    await this.#role.release(this.#ctx);
  }

  /** Runs pending hand-over now (tests, drain). */
  flushNow(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    return this.#enqueue(() => this.#flush());
  }

  /** Reads the counters now (tests). */
  pollNow(): Promise<void> {
    return this.#enqueue(() => this.#poll());
  }

  /**
   * The periodic read yields to hand-over: while sessions wait for their transaction, the listing
   * (15 ms for 100 sessions, 163 ms for 10 000) would only delay it. It yields at most twice in a
   * row, so idle clocks and counters keep moving on a proxy that never stops taking sessions.
   */
  #scheduledPoll(): void {
    if ((this.#plan.dirty > 0 || this.#flushing) && this.#pollsYielded < 2) {
      this.#pollsYielded++;
      return;
    }
    this.#pollsYielded = 0;
    void this.#enqueue(() => this.#poll());
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#flushing || this.#stopped || this.#disabled) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#enqueue(() => this.#flush());
    }, this.#opt.batchWindowMs);
  }

  #enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(job).catch((err: Error) => {
      this.#d.log.error({ err: err.message }, 'fast path: job failed');
    });
    this.#queue = run;
    return run;
  }

  async #flush(): Promise<void> {
    if (this.#stopped || this.#disabled) return;
    this.#flushing = true;
    try {
      const sources = this.#d.sources;
      try {
        await this.#d.nextHops.refresh();
      } catch (err) {
        // The last table read stays in use (none yet: every flow stays in userspace).
        this.#d.log.warn({ err: (err as Error).message }, 'fast path: cannot read the routing table');
      }
      for (const a of this.#plan.missingSources(this.#look)) {
        try {
          await sources.resolve(a);
        } catch (err) {
          this.#d.log.warn({ backend: a, err: (err as Error).message }, 'fast path: no route to backend');
        }
      }
      const batch = this.#plan.take(this.#look);
      if (batch === undefined) return;
      try {
        await this.#apply(batch.lines);
      } catch (err) {
        await this.#repair(err as Error, this.#role.repairMessage);
        return;
      }
      this.stats.transactions++;
      this.#afterCommit(batch);
    } finally {
      this.#flushing = false;
      if (this.#plan.dirty > 0) this.#schedule();
    }
  }

  #afterCommit(batch: Parameters<FlowPlan['commit']>[0]): void {
    // A move keeps the session's counters (and so its baselines); a rewrite makes new ones.
    if (batch.resync) this.#seen.clear();
    for (const h of this.#plan.commit(batch, this.#d.clock())) {
      this.stats.handovers++;
      this.#d.onHandover?.(h.ms);
      this.#d.log.debug({ session: h.s.id, handoverMs: h.ms }, 'fast path: session in the kernel');
    }
  }

  /** Rewrites what is ours: the whole table (the owner) or this worker's objects (attached). */
  async #resync(): Promise<void> {
    try {
      await this.#role.resync(this.#ctx);
    } finally {
      // Closed sessions' counters went with the rewrite (their counts since the last read are lost).
      this.#releaseCloseLogs();
    }
  }

  /**
   * Reads every counter of ours in one listing of the table's counters; per session, the deltas
   * since the last read go to the registry. A move keeps a session's counters, so nothing is lost
   * across it; a closed session's counters are read here one last time, then deleted (one
   * transaction; if it fails, a resynchronisation).
   */
  async #poll(): Promise<void> {
    try {
      await this.#read();
    } finally {
      this.#releaseCloseLogs();
    }
  }

  async #read(): Promise<void> {
    // Nothing of ours to read (also: a worker's table may not exist yet before its first session).
    const sessions = this.#plan.counters();
    if (this.#disabled || sessions.length === 0) return;
    const counts = parseCounters(await this.#d.nft.listJson(LIST_COUNTERS));
    this.stats.polls++;
    const now = this.#d.clock();
    const delta = (name: string): CounterValue => {
      const c = counts.get(name);
      if (c === undefined) return { packets: 0, bytes: 0 };
      const prev = this.#seen.get(name);
      this.#seen.set(name, c);
      // No baseline: a new counter (it started at zero). Lower than the baseline: never expected
      // (names are not reused); taken as a restart rather than a negative delta.
      if (prev === undefined || c.packets < prev.packets) return c;
      return { packets: c.packets - prev.packets, bytes: c.bytes - prev.bytes };
    };
    const t = this.totals;
    for (const { s, up: upName, down: downName } of sessions) {
      const up = delta(upName);
      const down = delta(downName);
      if (up.packets === 0 && down.packets === 0) continue;
      const k: KernelCounts = {
        packetsUp: up.packets,
        bytesUp: up.bytes - HEADER_BYTES * up.packets,
        packetsDown: down.packets,
        bytesDown: down.bytes - HEADER_BYTES * down.packets,
      };
      t.packetsUp += k.packetsUp;
      t.bytesUp += k.bytesUp;
      t.packetsDown += k.packetsDown;
      t.bytesDown += k.bytesDown;
      this.#d.host.addKernelCounts(s, k);
      if (up.packets > 0) this.#d.host.touch(s, now);
    }
    // Stopping: the table (or this worker's deleteAllLines) takes them.
    if (this.#stopped) return;
    const retired = this.#plan.takeRetired();
    if (retired === undefined) return;
    for (const name of retired.names) this.#seen.delete(name);
    try {
      await this.#apply(retired.lines);
      this.stats.transactions++;
    } catch (err) {
      await this.#repair(err as Error, 'fast path: could not delete retired counters; rewriting');
    }
  }

  /** One transaction of `lines`. */
  #apply(lines: readonly string[]): Promise<void> {
    return this.#d.nft.apply(`${lines.join('\n')}\n`);
  }

  /** A transaction failed: the kernel's state is unknown, so rewrite what is ours. */
  async #repair(err: Error, message: string): Promise<void> {
    this.stats.failures++;
    this.#d.log.warn({ err: err.message }, message);
    await this.#resync();
  }

  /** The repair failed too: this fast path stops, its sessions are relayed by Node. */
  #giveUp(err: Error, message: string): void {
    this.stats.failures++;
    this.#disabled = true;
    this.#plan.forgetAll();
    this.#d.log.error({ err: err.message }, message);
  }
}
