import type { LRUCache } from 'lru-cache';
import type { Backend, BackendTable } from '../backends/backend-table.ts';
import { ufragTokenBits } from '../backends/token.ts';
import type { Budget } from '../defs/interfaces.ts';
import { BudgetClass, type Shares } from '../defs/interfaces.ts';
import type { RouteOutcome } from '../defs/reasons.ts';
import { DropReason } from '../defs/reasons.ts';
import { hashBytes } from '../stun/hash.ts';
import type { UsernameView } from '../stun/parse.ts';
import { SourceShares } from './source-shares.ts';
import { createLearnedUfrags, NegativeUfrags } from './ufrag-caches.ts';

/**
 * Admission: what a first check on an unknown 5-tuple may cost, decided before anything is
 * allocated, bound or logged (docs/architecture.md, "Admission"). Every first check is an
 * unverified claim — anyone can send well-formed STUN with a valid FINGERPRINT from a forged
 * source, and only the owning backend can verify MESSAGE-INTEGRITY — so its cost is bounded here,
 * in this order, each refusal counted by its own reason:
 *
 * 1. strict prefix routing: a server ufrag that carries no backend's token is refused for free;
 * 2. the negative cache (ufrags nobody claimed lately), no backends, the session cap;
 * 3. the flow's class: directed (prefix token or learned ufrag: one datagram to one backend) or
 *    fan-out (one datagram to every candidate). The classes have separate budgets, so a flood of
 *    random ufrags cannot starve prefix-routed clients;
 * 4. flows being routed at once per source and class;
 * 5. the source's fair share of that class's budget (source-shares.ts), then the global budget.
 *
 * Everything here is O(1) and reads the datagram's bytes in place: the ufrag's token and hashes
 * are computed from the bytes, the tables are fixed-size typed arrays or Maps keyed by numbers.
 */

export interface AdmissionOptions {
  /** Drop first checks whose server ufrag carries no backend's prefix token (all JVBs use one). */
  readonly strictPrefix: boolean;
  /** Global fan-out probe budget, datagrams per second (burst: one second's worth). */
  readonly probeRate: number;
  /** Global directed probe budget, datagrams per second (burst: one second's worth). */
  readonly directedProbeRate: number;
  /** Flows being routed at once per source address, per class. */
  readonly maxPendingPerSource: number;
  readonly maxSessions: number;
  readonly negativeTtlMs: number;
  readonly learnedMax: number;
}

export interface AdmissionDeps {
  readonly backends: BackendTable;
  /** [fan-out, directed]: the global budgets (shared by a pod's workers when there are several). */
  readonly budgets: readonly [Budget, Budget];
  /** Flows from a source being routed now, per class; and the sessions open now. */
  readonly pending: (source: string, budget: BudgetClass) => number;
  readonly sessions: () => number;
  /**
   * The per-source fair shares; by default a {@link SourceShares} of the global rates. A pod's
   * workers pass one at 1/N of the shared budgets each (docs/workers.md, "Shared limits").
   */
  readonly shares?: Shares;
  readonly options: AdmissionOptions;
}

/** Filled by {@link Admission.admitFirst} when it admits: how the flow is to be routed. */
export interface Admitted {
  budget: BudgetClass;
  /** The directed guess, or undefined for a fan-out. */
  directed: Backend | undefined;
  outcome: RouteOutcome;
  usernameHash: number;
  serverUfragHash: number;
}

export function newAdmitted(): Admitted {
  return {
    budget: BudgetClass.Fanout,
    directed: undefined,
    outcome: 'probe',
    usernameHash: 0,
    serverUfragHash: 0,
  };
}

/** Returned when a datagram is admitted (every refusal is a DropReason ≥ 0). */
export const ADMIT = -1;

/** Slots of the fair-share table and of the negative cache: fixed memory, whatever the flood. */
export const SOURCE_SLOTS = 16384;
export const NEGATIVE_SLOTS = 1 << 16;

export class Admission {
  readonly learned: LRUCache<number, string>;
  readonly negative: NegativeUfrags;
  readonly shares: Shares;
  readonly #d: AdmissionDeps;
  readonly options: AdmissionOptions;

  constructor(deps: AdmissionDeps) {
    this.#d = deps;
    this.options = deps.options;
    this.learned = createLearnedUfrags(deps.options.learnedMax);
    this.negative = new NegativeUfrags(NEGATIVE_SLOTS, deps.options.negativeTtlMs);
    this.shares =
      deps.shares ?? new SourceShares(SOURCE_SLOTS, [deps.options.probeRate, deps.options.directedProbeRate]);
  }

  /**
   * Decides whether the first check at `view` from `source` may open a probing flow, and how.
   * Returns {@link ADMIT} (and fills `out`) or the DropReason. Takes the budget it admits.
   */
  admitFirst(
    buf: Uint8Array,
    view: UsernameView,
    source: string,
    candidates: readonly Backend[],
    now: number,
    out: Admitted,
  ): number {
    const backends = this.#d.backends;
    const tokenOwner = backends.byTokenBits(ufragTokenBits(buf, view.start, view.colon));
    if (this.options.strictPrefix && tokenOwner === undefined) return DropReason.StrictPrefix;
    const serverUfragHash = hashBytes(buf, view.start, view.colon);
    if (this.negative.has(serverUfragHash, now)) return DropReason.UnknownUfrag;
    if (candidates.length === 0) return DropReason.NoBackends;
    if (this.#d.sessions() >= this.options.maxSessions) return DropReason.SessionLimit;

    let directed: Backend | undefined;
    let outcome: RouteOutcome = 'probe';
    if (tokenOwner !== undefined && tokenOwner.state !== 'unready') {
      directed = tokenOwner;
      outcome = 'prefix';
    } else {
      const name = this.learned.get(serverUfragHash);
      if (name !== undefined) {
        const b = backends.get(name);
        if (b !== undefined && b.state !== 'unready') {
          directed = b;
          outcome = 'learned';
        }
      }
    }
    const budget = directed !== undefined ? BudgetClass.Directed : BudgetClass.Fanout;
    if (this.#d.pending(source, budget) >= this.options.maxPendingPerSource) return DropReason.SourceLimit;
    const r = this.#spend(source, budget, directed !== undefined ? 1 : candidates.length, now);
    if (r !== ADMIT) return r;
    out.budget = budget;
    out.directed = directed;
    out.outcome = outcome;
    out.serverUfragHash = serverUfragHash;
    out.usernameHash = hashBytes(buf, view.start, view.end);
    return ADMIT;
  }

  /** A further probe round (a retransmit, or the fall-back from a wrong directed guess). */
  admitRound(source: string, budget: BudgetClass, n: number, now: number): number {
    return this.#spend(source, budget, n, now);
  }

  /**
   * A rebinding check through a live session: one datagram to its owner, from the directed share.
   * `sameAddress`: the check comes from an address the session already has (only the port
   * changed — a NAT that dropped its mappings and made new ones, RFC 4787 §4.3): then from the
   * global directed budget only. A NAT's users share its address, so when it rebinds all their
   * flows at once — hundreds, within one media interval — the source's share (an activation
   * credit of a few rounds, then its rate) would refuse most of them and end their calls. Such a
   * check cannot come from anyone who cannot send from that address; it names a live session's
   * ufrag pair; and it moves nothing until the backend accepts its MESSAGE-INTEGRITY.
   */
  admitRebind(source: string, sameAddress: boolean, now: number): number {
    if (!sameAddress) return this.#spend(source, BudgetClass.Directed, 1, now);
    return this.#d.budgets[BudgetClass.Directed]!.take(now, 1) ? ADMIT : DropReason.DirectedBudget;
  }

  /** The owner of `serverUfragHash` answered: later flows of that ufrag go to it directly. */
  learn(serverUfragHash: number, backend: string): void {
    this.learned.set(serverUfragHash, backend);
  }

  /** No backend claimed the ufrag: do not probe it again for the negative TTL. */
  reject(serverUfragHash: number, now: number): void {
    this.negative.add(serverUfragHash, now);
  }

  /** Recounts active sources (once a second from the sweep). */
  sweep(now: number): void {
    this.shares.sweep(now);
  }

  #spend(source: string, budget: BudgetClass, n: number, now: number): number {
    const slot = this.shares.slotOf(source, now);
    if (!this.shares.take(slot, budget, n, now)) return DropReason.SourceShare;
    if (!this.#d.budgets[budget]!.take(now, n)) {
      this.shares.refund(slot, budget, n);
      return budget === BudgetClass.Directed ? DropReason.DirectedBudget : DropReason.FanoutBudget;
    }
    return ADMIT;
  }
}
