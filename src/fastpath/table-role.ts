import type { Logger } from 'pino';
import type { FlowLookup, FlowPlan } from './flow-plan.ts';
import type { KernelTable } from './kernel-table.ts';
import { ownedChains, ownedCounters, ownedElements } from './listing.ts';
import type { Nft } from './nft-runner.ts';
import { deleteOwnedLines, FAMILY, FLOWS, type OwnedObjects, TABLE } from './nft-script.ts';

/**
 * What a fast path may do to the one nftables table (docs/fast-path.md; docs/workers.md, "Kernel
 * fast path"), as two small strategies instead of a mode flag:
 * - {@link TableOwner}: one process. Its fast path holds the pod's {@link KernelTable}: after a
 *   failed transaction it rewrites the whole table, and when even that fails, or at stop, it
 *   deletes the table.
 * - {@link TableAttached}: a worker thread. It names and touches only its own chains, counters and
 *   elements (their names carry its id); after a failed transaction it lists and rewrites those,
 *   and at stop it deletes them. The table is the pod's main thread's, which deletes it after every
 *   worker stopped.
 */

/** The parts of a fast path a role works with. */
export interface RoleContext {
  readonly plan: FlowPlan;
  readonly look: FlowLookup;
  readonly nft: Nft;
  readonly log: Logger;
  /** One transaction of `lines`. */
  apply(lines: readonly string[]): Promise<void>;
  /** A rewrite was applied: counted, and its sessions' hand-overs taken. */
  committed(batch: Parameters<FlowPlan['commit']>[0]): void;
  /** The repair failed too: the fast path stops, its sessions are relayed by Node. */
  giveUp(err: Error, message: string): void;
}

export interface TableRole {
  /** The worker id its objects' names carry; undefined for the owner (one process). */
  readonly worker: number | undefined;
  /** Logged when a transaction failed and {@link TableRole.resync} runs. */
  readonly repairMessage: string;
  /** Rewrites what is ours after a failed transaction. */
  resync(c: RoleContext): Promise<void>;
  /** At stop, after the last counter read: removes what is ours (before the sockets close). */
  release(c: RoleContext): Promise<void>;
}

/** One listing of every named counter of the table (docs/fast-path.md, "Counters"). */
export const LIST_COUNTERS = ['list', 'counters', 'table', FAMILY, TABLE] as const;

export class TableOwner implements TableRole {
  readonly worker = undefined;
  readonly repairMessage = 'fast path: transaction failed; rewriting the table';
  readonly #table: KernelTable;

  constructor(table: KernelTable) {
    this.#table = table;
  }

  async resync(c: RoleContext): Promise<void> {
    const batch = c.plan.resync(c.look);
    try {
      await c.apply(batch.lines);
      c.committed(batch);
    } catch (err) {
      // The kernel state is unknown and cannot be repaired: take the table away; Node relays all.
      c.giveUp(err as Error, 'fast path: cannot repair the table; removed, every session relayed by Node');
      await this.#table.delete();
    }
  }

  async release(c: RoleContext): Promise<void> {
    c.plan.forgetAll();
    await this.#table.delete();
  }
}

export class TableAttached implements TableRole {
  readonly worker: number;
  readonly repairMessage = "fast path: transaction failed; rewriting this worker's flows";

  constructor(worker: number) {
    this.worker = worker;
  }

  /**
   * The kernel is asked what of this worker's is in the table (the map's elements that jump to its
   * chains, its chains, its counters), and one transaction deletes all of it and writes the live
   * flows again. Nothing of another worker's is named. If it fails, this worker stops using the
   * kernel path (its sessions are relayed by Node), after a last attempt to delete what it listed,
   * and the other workers keep theirs.
   */
  async resync(c: RoleContext): Promise<void> {
    let owned: OwnedObjects | undefined;
    try {
      // Three listings, not one of the table: that would print every session's rules too. Between
      // them only other workers change the table, and nothing of theirs is used.
      const map = await c.nft.listJson(['list', 'map', FAMILY, TABLE, FLOWS]);
      const chains = await c.nft.listJson(['list', 'chains', FAMILY]);
      const counters = await c.nft.listJson(LIST_COUNTERS);
      owned = {
        elements: ownedElements(map, this.worker),
        chains: ownedChains(chains, this.worker),
        counters: ownedCounters(counters, this.worker),
      };
      const batch = c.plan.resyncOwned(owned, c.look);
      await c.apply(batch.lines);
      c.committed(batch);
    } catch (err) {
      c.giveUp(
        err as Error,
        "fast path: cannot repair this worker's flows; its sessions are relayed by Node",
      );
      const lines = owned === undefined ? [] : deleteOwnedLines(owned);
      if (lines.length > 0) await c.apply(lines).catch(() => {});
    }
  }

  async release(c: RoleContext): Promise<void> {
    // Before the worker's sockets close, as one process deletes its table first: from here on
    // Node sees this worker's media. A failure leaves them to the table's deletion.
    const lines = c.plan.deleteAllLines();
    c.plan.forgetAll();
    if (lines.length === 0) return;
    try {
      await c.apply(lines);
      c.log.info({ table: `${FAMILY} ${TABLE}` }, "fast path: this worker's flows removed");
    } catch (err) {
      c.log.warn({ err: (err as Error).message }, "fast path: could not remove this worker's flows");
    }
  }
}
