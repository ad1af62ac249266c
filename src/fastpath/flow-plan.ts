import type { Session } from '../session/session.ts';
import {
  addFlowLines,
  addSourceLine,
  deleteFlowLines,
  deleteSourceLine,
  flushMapsLines,
  type KernelFlow,
} from './nft-script.ts';

/**
 * What the kernel should hold for each session, what it does hold, and the transaction that takes
 * one to the other. Flow events only mark a session "dirty"; {@link FlowPlan.take} reads the
 * sessions once per batch window and diffs, so a burst of events for one session (joined, then
 * latched, then closed) costs at most one delete and one add, and an event order quirk can never
 * leave a stale element. Pure: no I/O, no clock of its own (docs/fast-path.md, "Hand-over").
 */

/** The kernel path of a session right now, or undefined if it must stay in userspace. */
export function desiredFlow(s: Session): KernelFlow | undefined {
  const b = s.backend;
  const c = s.current;
  const port = s.upstream.localPort;
  // IPv4 only (docs/fast-path.md, "IPv6"); the upstream port is known once the socket is bound.
  if (b === undefined || port <= 0 || b.address.includes(':') || c.address.includes(':')) return undefined;
  return {
    client: { address: c.address, port: c.port },
    backend: { address: b.address, port: b.port },
    upstreamPort: port,
  };
}

function sameFlow(a: KernelFlow | undefined, b: KernelFlow | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.upstreamPort === b.upstreamPort &&
    a.client.port === b.client.port &&
    a.client.address === b.client.address &&
    a.backend.port === b.backend.port &&
    a.backend.address === b.backend.address
  );
}

interface Tracked {
  installed: KernelFlow | undefined;
  closed: boolean;
  /** When `established` was heard; cleared once the first install committed (hand-over time). */
  establishedAt: number | undefined;
}

export interface Change {
  readonly s: Session;
  readonly from: KernelFlow | undefined;
  readonly to: KernelFlow | undefined;
}

export interface Batch {
  /** One transaction: every delete, then every add. */
  readonly lines: readonly string[];
  readonly changes: readonly Change[];
  readonly sourcesAdded: ReadonlyMap<string, string>;
  readonly sourcesDeleted: readonly string[];
  /** A full rewrite of the maps (after a failed transaction) rather than a diff. */
  readonly resync: boolean;
}

export class FlowPlan {
  readonly #tracked = new Map<Session, Tracked>();
  readonly #dirty = new Set<Session>();
  /** Backend address → source address installed in `bsrc`, with the number of flows using it. */
  readonly #sources = new Map<string, { source: string; flows: number }>();

  get dirty(): number {
    return this.#dirty.size;
  }

  /** Sessions with elements in the kernel. */
  get installed(): number {
    let n = 0;
    for (const t of this.#tracked.values()) if (t.installed !== undefined) n++;
    return n;
  }

  established(s: Session, now: number): void {
    this.#track(s).establishedAt = now;
    this.#dirty.add(s);
  }

  /** Any other change of an established session (join, latch, leave). */
  changed(s: Session): void {
    const t = this.#tracked.get(s);
    if (t === undefined || t.closed) return;
    this.#dirty.add(s);
  }

  closed(s: Session): void {
    const t = this.#tracked.get(s);
    if (t === undefined) return;
    t.closed = true;
    this.#dirty.add(s);
  }

  /** The installed flow of `s`, if any (for counters). */
  installedFlow(s: Session): KernelFlow | undefined {
    return this.#tracked.get(s)?.installed;
  }

  /** Every session with elements in the kernel. */
  *installedFlows(): IterableIterator<[Session, KernelFlow]> {
    for (const [s, t] of this.#tracked) if (t.installed !== undefined) yield [s, t.installed];
  }

  /** Backend addresses that dirty sessions need a source address for and `sourceOf` lacks. */
  missingSources(sourceOf: (backendAddress: string) => string | undefined): string[] {
    const out = new Set<string>();
    for (const s of this.#dirty) {
      const t = this.#tracked.get(s)!;
      const f = t.closed ? undefined : desiredFlow(s);
      if (
        f !== undefined &&
        !this.#sources.has(f.backend.address) &&
        sourceOf(f.backend.address) === undefined
      )
        out.add(f.backend.address);
    }
    return [...out];
  }

  /**
   * The next transaction for everything dirty, or undefined if the kernel already matches.
   * `sourceOf` gives the upstream source address for a backend address; a flow whose source is
   * not known yet stays dirty (and in userspace) until it is.
   */
  take(sourceOf: (backendAddress: string) => string | undefined): Batch | undefined {
    const changes: Change[] = [];
    const refs = new Map<string, number>();
    for (const [a, v] of this.#sources) refs.set(a, v.flows);
    const added = new Map<string, string>();
    for (const s of [...this.#dirty]) {
      const t = this.#tracked.get(s)!;
      let to = t.closed ? undefined : desiredFlow(s);
      if (to !== undefined && !refs.has(to.backend.address) && !added.has(to.backend.address)) {
        const src = sourceOf(to.backend.address);
        if (src === undefined) {
          to = undefined; // Not yet: stays dirty, stays in userspace meanwhile.
          if (t.installed === undefined) continue;
        } else added.set(to.backend.address, src);
      }
      this.#dirty.delete(s);
      if (sameFlow(t.installed, to)) {
        if (t.closed && t.installed === undefined) this.#tracked.delete(s);
        continue;
      }
      changes.push({ s, from: t.installed, to });
      if (t.installed !== undefined)
        refs.set(t.installed.backend.address, (refs.get(t.installed.backend.address) ?? 0) - 1);
      if (to !== undefined) refs.set(to.backend.address, (refs.get(to.backend.address) ?? 0) + 1);
    }
    if (changes.length === 0) return undefined;
    const deleted: string[] = [];
    for (const [a, n] of refs) if (n <= 0 && this.#sources.has(a)) deleted.push(a);
    for (const a of [...added.keys()]) if ((refs.get(a) ?? 0) <= 0) added.delete(a);
    const lines: string[] = [];
    for (const c of changes) if (c.from !== undefined) lines.push(...deleteFlowLines(c.from));
    for (const a of deleted) lines.push(deleteSourceLine(a));
    for (const [a, src] of added) lines.push(addSourceLine(a, src));
    for (const c of changes) if (c.to !== undefined) lines.push(...addFlowLines(c.to));
    return { lines, changes, sourcesAdded: added, sourcesDeleted: deleted, resync: false };
  }

  /**
   * The transaction ran. Returns the sessions installed for the first time with the time since
   * their establishment (hand-over latency).
   */
  commit(b: Batch, now: number): Array<{ s: Session; ms: number }> {
    const handed: Array<{ s: Session; ms: number }> = [];
    if (b.resync) this.#sources.clear();
    for (const a of b.sourcesDeleted) this.#sources.delete(a);
    for (const [a, source] of b.sourcesAdded) this.#sources.set(a, { source, flows: 0 });
    for (const c of b.changes) {
      const t = this.#tracked.get(c.s);
      if (t === undefined) continue;
      if (c.from !== undefined && !b.resync) {
        const v = this.#sources.get(c.from.backend.address);
        if (v !== undefined) v.flows--;
      }
      if (c.to !== undefined) {
        const v = this.#sources.get(c.to.backend.address);
        if (v !== undefined) v.flows++;
      }
      t.installed = c.to;
      if (c.to !== undefined && t.establishedAt !== undefined) {
        handed.push({ s: c.s, ms: now - t.establishedAt });
        t.establishedAt = undefined;
      }
      if (t.closed && t.installed === undefined) this.#tracked.delete(c.s);
    }
    return handed;
  }

  /**
   * A transaction failed (the kernel's state is unknown): one that empties every map and writes
   * every session's flow again, from the sessions as they are now.
   */
  resync(sourceOf: (backendAddress: string) => string | undefined): Batch {
    const changes: Change[] = [];
    const added = new Map<string, string>();
    const lines = flushMapsLines();
    for (const [s, t] of this.#tracked) {
      this.#dirty.delete(s);
      let to = t.closed ? undefined : desiredFlow(s);
      if (to !== undefined) {
        const src = added.get(to.backend.address) ?? sourceOf(to.backend.address);
        if (src === undefined) {
          to = undefined;
          this.#dirty.add(s);
        } else added.set(to.backend.address, src);
      }
      changes.push({ s, from: t.installed, to });
    }
    for (const [a, src] of added) lines.push(addSourceLine(a, src));
    for (const c of changes) if (c.to !== undefined) lines.push(...addFlowLines(c.to));
    return { lines, changes, sourcesAdded: added, sourcesDeleted: [], resync: true };
  }

  /** The table is gone (shutdown or giving up): nothing is installed any more. */
  forgetAll(): void {
    this.#tracked.clear();
    this.#dirty.clear();
    this.#sources.clear();
  }

  #track(s: Session): Tracked {
    let t = this.#tracked.get(s);
    if (t === undefined) {
      t = { installed: undefined, closed: false, establishedAt: undefined };
      this.#tracked.set(s, t);
    }
    return t;
  }
}
