import type { BudgetClass, Shares } from '../defs/interfaces.ts';
import { hashString } from '../stun/hash.ts';

/**
 * Fair shares of the probe budgets per source (docs/architecture.md, "Admission").
 *
 * The threat: anyone can send well-formed first checks from many (spoofed) source addresses. One
 * global token bucket is first come, first served: a flood drains it and a real client's
 * retransmits find it empty. Here each source has its own bucket per budget class, and the
 * refill rate of every bucket is the global rate divided by the number of sources active in the
 * last second, so the sum of all refills is the global rate and every source, the victims'
 * included, gets the same share however many sources flood. A source that activates may make
 * {@link ACTIVATION_ROUNDS} probe rounds at once, so new calls need no wait; after that it refills
 * at its share (saving up at most one second of it).
 *
 * The unit of fairness is the IPv4 address (a NAT's users share it, as they share everything else
 * behind it) and the IPv6 /64 (what one subscriber gets; an attacker holding a /64 has 2^64
 * addresses). Slots live in a fixed-size table: spoofed sources can never grow memory. A source's
 * key hash (seeded per process, so an attacker cannot aim at a victim's slot) picks a home slot;
 * the source takes the first of {@link PROBE} slots from there that holds its tag or is idle, so
 * sources do not share a slot until the table's neighbourhood is full of active ones. When it is
 * (a flood of sources from everywhere), a source shares its home slot, and each share degrades
 * towards rate / slots: strict prefix routing is the answer there.
 *
 * Pure: typed arrays, an injected `now`, no allocation per call.
 */
/** A source counts as active for this long after its last first check. */
export const ACTIVE_WINDOW_MS = 1000;
/** Slots a source may look at from its home slot (linear probing). */
export const PROBE = 8;
/** Probe rounds a source may make at once when it (re)activates, per class. */
export const ACTIVATION_ROUNDS = 8;

export class SourceShares implements Shares {
  readonly slots: number;
  readonly #mask: number;
  readonly #rates: readonly [number, number];
  /** [slot * 2 + class] */
  readonly #tokens: Float64Array;
  readonly #refilledAt: Float64Array;
  readonly #activeAt: Float64Array;
  /** When the slot last became active, and when each class last got its activation credit. */
  readonly #activeSince: Float64Array;
  readonly #creditedAt: Float64Array;
  /** Key hash of the source that holds each slot (0 = none). */
  readonly #tag: Uint32Array;
  readonly #seed: number;
  #active = 0;

  /** `rates`: the global budgets in datagrams per second, [fan-out, directed]. */
  /** Probe rounds an activating source may make at once, per class (see {@link ACTIVATION_ROUNDS}). */
  readonly #activationRounds: number;

  /**
   * `activationRounds`: a pod's N workers each keep a table, and the kernel spreads a source's
   * 5-tuples over them, so each gives ACTIVATION_ROUNDS / N: the credits a flood's first second
   * collects then add up as in one process, within the global budget's burst.
   */
  constructor(
    slots: number,
    rates: readonly [number, number],
    seed = (Math.random() * 0x100000000) >>> 0,
    activationRounds = ACTIVATION_ROUNDS,
  ) {
    this.#activationRounds = activationRounds;
    const size = 1 << Math.ceil(Math.log2(Math.max(2, slots)));
    this.slots = size;
    this.#mask = size - 1;
    this.#rates = rates;
    this.#tokens = new Float64Array(size * 2);
    this.#refilledAt = new Float64Array(size * 2);
    this.#activeAt = new Float64Array(size).fill(Number.NEGATIVE_INFINITY);
    this.#activeSince = new Float64Array(size);
    this.#creditedAt = new Float64Array(size * 2).fill(Number.NEGATIVE_INFINITY);
    this.#tag = new Uint32Array(size);
    this.#seed = seed;
  }

  /** Sources active in the last second (as of the last {@link sweep}, plus activations since). */
  get active(): number {
    return this.#active;
  }

  /**
   * The slot of a source address as `dgram` reports it (IPv4 dotted, IPv6 canonical text): the
   * one that holds its tag near its home slot, else an idle one there (claimed), else the home slot.
   */
  slotOf(address: string, now: number): number {
    // `>>> 0`: `| 1` yields a signed int32, and the Uint32Array holds it unsigned.
    const tag = (fmix32(sourceKeyHash(address) ^ this.#seed) | 1) >>> 0;
    const home = tag & this.#mask;
    let idle = -1;
    for (let k = 0; k < PROBE; k++) {
      const i = (home + k) & this.#mask;
      if (this.#tag[i] === tag) return i;
      if (idle < 0 && now - this.#activeAt[i]! >= ACTIVE_WINDOW_MS) idle = i;
    }
    if (idle < 0) return home;
    this.#tag[idle] = tag;
    this.#activeAt[idle] = Number.NEGATIVE_INFINITY;
    return idle;
  }

  /**
   * Takes `n` datagrams of class `cls` from the slot's share if it has them. The share is the
   * global rate over the active sources; up to one second of it (at least `n`, so a fan-out stays
   * possible) may be saved up.
   */
  take(slot: number, cls: BudgetClass, n: number, now: number): boolean {
    const i = slot * 2 + cls;
    if (now - this.#activeAt[slot]! >= ACTIVE_WINDOW_MS) {
      this.#active++;
      this.#activeSince[slot] = now;
    }
    if (this.#creditedAt[i]! < this.#activeSince[slot]!) {
      // First take of this class since the source (re)activated: a few rounds at once, so a burst
      // of calls from one NAT needs no wait. Not "one second of the share": a wave of new sources
      // would then take many times the global budget between them, the global bucket would run
      // dry, and it would refuse fair sources too.
      this.#creditedAt[i] = now;
      this.#tokens[i] = this.#activationRounds * n;
      this.#refilledAt[i] = now;
    } else if (now > this.#refilledAt[i]!) {
      const share = this.#rates[cls]! / Math.max(1, this.#active);
      const cap = Math.max(share, n);
      const t = this.#tokens[i]!;
      // Refill up to the cap; an activation credit above it is spent, never cut.
      if (t < cap) this.#tokens[i] = Math.min(cap, t + ((now - this.#refilledAt[i]!) * share) / 1000);
      this.#refilledAt[i] = now;
    }
    this.#activeAt[slot] = now;
    if (this.#tokens[i]! < n) return false;
    this.#tokens[i]! -= n;
    return true;
  }

  /** Gives back what {@link take} took when a later check refused the flow. */
  refund(slot: number, cls: BudgetClass, n: number): void {
    this.#tokens[slot * 2 + cls]! += n;
  }

  /** Recounts the active sources (call about once a second; O(slots)). */
  sweep(now: number): void {
    let n = 0;
    for (let s = 0; s < this.#activeAt.length; s++) if (now - this.#activeAt[s]! < ACTIVE_WINDOW_MS) n++;
    this.#active = n;
  }
}

/** MurmurHash3's finalizer: spreads FNV's similar hashes of similar addresses over the table. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Scratch for the groups of an IPv6 address (one per module: the data path is single-threaded). */
const groups = new Uint16Array(8);

/**
 * Hash of the fairness key of a source address: the whole IPv4 address, or the first 64 bits of an
 * IPv6 address (its /64). IPv6 text may be compressed (`2001:db8::1`, RFC 5952), so the /64 is
 * computed from the expanded groups, not the characters; IPv4-mapped IPv6 (`::ffff:1.2.3.4`)
 * counts as the IPv4 address.
 */
export function sourceKeyHash(address: string): number {
  const n = address.length;
  if (address.indexOf(':') < 0) return hashString(address);
  if (address.startsWith('::ffff:') && address.indexOf('.') > 0) return hashString(address, 7, n);
  groups.fill(0);
  const dbl = address.indexOf('::');
  const headEnd = dbl < 0 ? n : dbl;
  let g = readGroups(address, 0, headEnd, 0);
  if (dbl >= 0 && dbl + 2 < n) {
    let tail = 1;
    for (let i = dbl + 2; i < n; i++) if (address.charCodeAt(i) === 0x3a) tail++;
    g = readGroups(address, dbl + 2, n, Math.max(g, 8 - tail));
  }
  let h = 0x811c9dc5;
  for (let k = 0; k < 4; k++) {
    h = Math.imul(h ^ (groups[k]! & 0xff), 0x01000193);
    h = Math.imul(h ^ (groups[k]! >>> 8), 0x01000193);
  }
  return h >>> 0;
}

/** Reads ':'-separated hex groups of `a[from..to)` into `groups` from index `g`; returns the next index. */
function readGroups(a: string, from: number, to: number, g: number): number {
  if (from >= to) return g;
  let v = 0;
  for (let i = from; i <= to && g < 8; i++) {
    const c = i < to ? a.charCodeAt(i) : 0x3a;
    if (c === 0x3a) {
      groups[g++] = v;
      v = 0;
    } else {
      v = ((v << 4) | hexDigit(c)) & 0xffff;
    }
  }
  return g;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return 0;
}
