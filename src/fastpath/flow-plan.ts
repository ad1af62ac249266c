import type { FlowSession } from '../defs/interfaces.ts';
import {
  addCounterLines,
  addFlowLines,
  counterNames,
  deleteCounterLines,
  deleteFlowLines,
  deleteOwnedLines,
  type Endpoint,
  type KernelFlow,
  type NextHop,
  type OwnedObjects,
  type TableParams,
  tableScript,
} from './nft-script.ts';

/**
 * What the kernel should hold for each session, what it does hold, and the transaction that takes
 * one to the other. Flow events only mark a session "dirty"; {@link FlowPlan.take} reads the
 * sessions once per batch window and diffs, so a burst of events for one session (joined, then
 * latched, then closed) costs at most one delete and one add, and an event order quirk can never
 * leave a stale element. Pure: no I/O, no clock of its own (docs/fast-path.md, "Hand-over").
 */

/** What a flow needs from outside the session: looked up by the caller before each batch. */
export interface FlowLookup {
  /**
   * The upstream socket's source address toward a backend; undefined = not resolved yet (the
   * session waits, dirty); null = it could not be (the session stays in userspace).
   */
  sourceOf(backendAddress: string): string | null | undefined;
  /** The next hop toward an address; undefined = no route (the session stays in userspace). */
  nextHop(address: string): NextHop | undefined;
}

/** The kernel path of a session right now: a flow, 'userspace' (stays in Node) or 'pending'. */
export function desiredFlow(s: FlowSession, look: FlowLookup): KernelFlow | 'userspace' | 'pending' {
  const b = s.backend;
  const c = s.current;
  const port = s.upstream.localPort;
  // IPv4 only (docs/fast-path.md, "IPv6"); the upstream port is known once the socket is bound.
  if (b === undefined || port <= 0 || b.address.includes(':') || c.address.includes(':')) return 'userspace';
  // A client whose flow reaches this replica through a peer: the kernel would send the backend's
  // datagrams straight to the client from here, which the balancer no longer maps to it; Node
  // sends them back through the peer (docs/peers.md, "Workers and the kernel fast path").
  if (c.via !== undefined) return 'userspace';
  // Its last 5-tuple went to another session's client: that one's flow, not this session's.
  if (!c.joined) return 'userspace';
  const toBackend = look.nextHop(b.address);
  const toClient = look.nextHop(c.address);
  if (toBackend === undefined || toClient === undefined) return 'userspace';
  const source = look.sourceOf(b.address);
  if (source === null) return 'userspace';
  if (source === undefined) return 'pending';
  return {
    client: { address: c.address, port: c.port },
    backend: { address: b.address, port: b.port },
    upstreamPort: port,
    source,
    toBackend,
    toClient,
  };
}

const sameHop = (a: NextHop, b: NextHop): boolean => a.via === b.via && a.dev === b.dev;

function sameFlow(a: KernelFlow | undefined, b: KernelFlow | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.upstreamPort === b.upstreamPort &&
    a.client.port === b.client.port &&
    a.client.address === b.client.address &&
    a.backend.port === b.backend.port &&
    a.backend.address === b.backend.address &&
    a.source === b.source &&
    sameHop(a.toBackend, b.toBackend) &&
    sameHop(a.toClient, b.toClient)
  );
}

interface Installed {
  readonly flow: KernelFlow;
  /** Names the flow's two chains (nft-script.ts); a new one per install, never reused. */
  readonly id: number;
  /** Names the session's two counters (nft-script.ts, `counterNames`): kept across moves. */
  readonly counter: number;
}

interface Tracked {
  installed: Installed | undefined;
  /**
   * The session's counters, once created (its first install): they outlive its chains (a move
   * keeps them) and are retired when the session closes (docs/fast-path.md, "Counters").
   */
  counter: number | undefined;
  closed: boolean;
  /** When `established` was heard; cleared once the first install committed (hand-over time). */
  establishedAt: number | undefined;
}

export interface Change {
  readonly s: FlowSession;
  readonly from: Installed | undefined;
  readonly to: Installed | undefined;
}

/** A session's two counters by name, for a counter read. */
export interface SessionCounters {
  readonly s: FlowSession;
  readonly up: string;
  readonly down: string;
}

export interface Batch {
  /** One transaction: every delete, then every add. */
  readonly lines: readonly string[];
  readonly changes: readonly Change[];
  /**
   * Every flow written again (after a failed transaction) rather than a diff: the whole table in
   * one process, or one worker's share of it (its own elements and chains) with worker threads.
   */
  readonly resync: boolean;
}

export class FlowPlan {
  readonly #tracked = new Map<FlowSession, Tracked>();
  readonly #dirty = new Set<FlowSession>();
  readonly #table: TableParams;
  readonly #listen: Endpoint;
  /** Set in a worker thread: its chains carry this id (nft-script.ts, `chainNames`). */
  readonly #worker: number | undefined;
  /**
   * Counters of closed sessions whose chains are gone: the next read takes their final values,
   * then they are deleted ({@link takeRetired}).
   */
  #retiring: Array<{ s: FlowSession; counter: number }> = [];
  #nextId = 1;

  constructor(table: TableParams, worker?: number) {
    this.#table = table;
    this.#listen = { address: table.listenAddress, port: table.listenPort };
    this.#worker = worker;
  }

  get dirty(): number {
    return this.#dirty.size;
  }

  /** Sessions with a flow in the kernel. */
  get installed(): number {
    let n = 0;
    for (const t of this.#tracked.values()) if (t.installed !== undefined) n++;
    return n;
  }

  established(s: FlowSession, now: number): void {
    this.#track(s).establishedAt = now;
    this.#dirty.add(s);
  }

  /** Any other change of an established session (join, latch, leave). */
  changed(s: FlowSession): void {
    const t = this.#tracked.get(s);
    if (t === undefined || t.closed) return;
    this.#dirty.add(s);
  }

  /** Returns whether the session has (or had) a kernel flow, i.e. counters still to read. */
  closed(s: FlowSession): boolean {
    const t = this.#tracked.get(s);
    if (t === undefined) return false;
    t.closed = true;
    this.#dirty.add(s);
    return t.counter !== undefined || t.installed !== undefined;
  }

  /** Whether `s` has counters in the kernel (live or retiring) that a read has yet to take. */
  hasCounters(s: FlowSession): boolean {
    return this.#tracked.get(s)?.counter !== undefined || this.#retiring.some((r) => r.s === s);
  }

  /** The installed flow of `s`, if any (for counters). */
  installedFlow(s: FlowSession): KernelFlow | undefined {
    return this.#tracked.get(s)?.installed?.flow;
  }

  /** Every session with a flow in the kernel. */
  *installedFlows(): IterableIterator<[FlowSession, KernelFlow]> {
    for (const [s, t] of this.#tracked) if (t.installed !== undefined) yield [s, t.installed.flow];
  }

  /** Every session whose counters exist in the kernel (live ones, then retiring ones). */
  counters(): SessionCounters[] {
    const out: SessionCounters[] = [];
    for (const [s, t] of this.#tracked) if (t.counter !== undefined) out.push(this.#named(s, t.counter));
    for (const r of this.#retiring) out.push(this.#named(r.s, r.counter));
    return out;
  }

  /**
   * After a counter read: the transaction that deletes the retiring counters it read (their chains
   * are gone, their final values taken), or undefined. They count as gone from here on.
   */
  takeRetired(): { lines: string[]; names: string[] } | undefined {
    if (this.#retiring.length === 0) return undefined;
    const lines = this.#retiring.flatMap((r) => deleteCounterLines(r.counter, this.#worker));
    const names = this.#retiring.flatMap((r) => {
      const n = counterNames(r.counter, this.#worker);
      return [n.up, n.down];
    });
    this.#retiring = [];
    return { lines, names };
  }

  #named(s: FlowSession, counter: number): SessionCounters {
    const n = counterNames(counter, this.#worker);
    return { s, up: n.up, down: n.down };
  }

  /** The counters of a closed session leave with the next read. */
  #retire(s: FlowSession, t: Tracked): void {
    if (t.counter !== undefined) this.#retiring.push({ s, counter: t.counter });
    t.counter = undefined;
  }

  /** Backend addresses that dirty sessions wait for a source address of. */
  missingSources(look: FlowLookup): string[] {
    const out = new Set<string>();
    for (const s of this.#dirty) {
      if (this.#tracked.get(s)!.closed || desiredFlow(s, look) !== 'pending') continue;
      out.add(s.backend!.address);
    }
    return [...out];
  }

  /**
   * The next transaction for everything dirty, or undefined if the kernel already matches. A flow
   * whose source address is not known yet stays dirty (and in userspace) until it is.
   */
  take(look: FlowLookup): Batch | undefined {
    const changes: Change[] = [];
    for (const s of [...this.#dirty]) {
      const t = this.#tracked.get(s)!;
      const want = t.closed ? 'userspace' : desiredFlow(s, look);
      if (want === 'pending' && t.installed === undefined) continue; // Not yet: stays dirty.
      if (want !== 'pending') this.#dirty.delete(s);
      const to = typeof want === 'string' ? undefined : want;
      if (sameFlow(t.installed?.flow, to)) {
        if (t.closed && t.installed === undefined) {
          this.#retire(s, t);
          this.#tracked.delete(s);
        }
        continue;
      }
      let to2: Installed | undefined;
      if (to !== undefined) {
        const id = this.#nextId++;
        // A first install creates the session's counters (with the chain's id as theirs).
        to2 = { flow: to, id, counter: t.counter ?? id };
      }
      changes.push({ s, from: t.installed, to: to2 });
    }
    if (changes.length === 0) return undefined;
    const lines: string[] = [];
    for (const c of changes)
      if (c.from !== undefined)
        lines.push(...deleteFlowLines(c.from.flow, c.from.id, this.#listen, this.#worker));
    for (const c of changes) {
      if (c.to === undefined) continue;
      if (this.#tracked.get(c.s)!.counter === undefined)
        lines.push(...addCounterLines(c.to.counter, this.#worker));
      lines.push(...addFlowLines(c.to.flow, c.to.id, this.#listen, this.#worker, c.to.counter));
    }
    return { lines, changes, resync: false };
  }

  /**
   * The transaction ran. Returns the sessions installed for the first time with the time since
   * their establishment (hand-over latency).
   */
  commit(b: Batch, now: number): Array<{ s: FlowSession; ms: number }> {
    const handed: Array<{ s: FlowSession; ms: number }> = [];
    for (const c of b.changes) {
      const t = this.#tracked.get(c.s);
      if (t === undefined) continue;
      t.installed = c.to;
      if (c.to !== undefined) t.counter = c.to.counter;
      if (c.to !== undefined && t.establishedAt !== undefined) {
        handed.push({ s: c.s, ms: now - t.establishedAt });
        t.establishedAt = undefined;
      }
      if (t.closed && t.installed === undefined) {
        this.#retire(c.s, t);
        this.#tracked.delete(c.s);
      }
    }
    return handed;
  }

  /**
   * A transaction failed (the kernel's state is unknown): one that recreates the table and writes
   * every session's flow again, from the sessions as they are now, with new counters starting at
   * zero (what the old ones counted since the last read is lost). One process only: the table is
   * its own.
   */
  resync(look: FlowLookup): Batch {
    return this.#rewrite([tableScript(this.#table).trimEnd()], look);
  }

  /**
   * The same for one worker thread, which shares the table with the others and must not recreate
   * it (that would delete their flows): deletes what the kernel holds of this worker's (`owned`,
   * as listed: listing.ts, counters included), then writes this worker's flows again, with new
   * counters, in one transaction.
   */
  resyncOwned(owned: OwnedObjects, look: FlowLookup): Batch {
    return this.#rewrite(deleteOwnedLines(owned), look);
  }

  /**
   * Deletes every installed flow and every counter: a worker leaving the shared table at shutdown,
   * after its last read (followed by {@link forgetAll}). Empty when nothing is installed.
   */
  deleteAllLines(): string[] {
    const lines: string[] = [];
    for (const t of this.#tracked.values())
      if (t.installed !== undefined)
        lines.push(...deleteFlowLines(t.installed.flow, t.installed.id, this.#listen, this.#worker));
    for (const t of this.#tracked.values())
      if (t.counter !== undefined) lines.push(...deleteCounterLines(t.counter, this.#worker));
    for (const r of this.#retiring) lines.push(...deleteCounterLines(r.counter, this.#worker));
    return lines;
  }

  /**
   * The rewrite's transaction starts with deleting every counter (with the table, or as listed),
   * so each flow written gets new counters; the sessions' counters are set at commit.
   */
  #rewrite(head: string[], look: FlowLookup): Batch {
    const changes: Change[] = [];
    const lines = head;
    this.#retiring = [];
    for (const [s, t] of this.#tracked) {
      this.#dirty.delete(s);
      t.counter = undefined;
      const want = t.closed ? 'userspace' : desiredFlow(s, look);
      if (want === 'pending') this.#dirty.add(s);
      let to: Installed | undefined;
      if (typeof want !== 'string') {
        const id = this.#nextId++;
        to = { flow: want, id, counter: id };
        lines.push(
          ...addCounterLines(id, this.#worker),
          ...addFlowLines(want, id, this.#listen, this.#worker),
        );
      }
      changes.push({ s, from: t.installed, to });
    }
    return { lines, changes, resync: true };
  }

  /** The table is gone (shutdown or giving up): nothing is installed any more. */
  forgetAll(): void {
    this.#tracked.clear();
    this.#dirty.clear();
    this.#retiring = [];
  }

  #track(s: FlowSession): Tracked {
    let t = this.#tracked.get(s);
    if (t === undefined) {
      t = { installed: undefined, counter: undefined, closed: false, establishedAt: undefined };
      this.#tracked.set(s, t);
    }
    return t;
  }
}
