import type { BackendSpec, BackendState } from '../defs/interfaces.ts';
import { TOKEN_LENGTH, tokenBits, tokenFor } from './token.ts';

/**
 * A backend as the data path holds it: the spec plus its prefix token. Which sessions it owns is
 * the session registry's index (src/session/registry.ts), not a field here.
 */
export interface Backend {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly token: string;
  state: BackendState;
  /** Set once the backend left the snapshot; sessions and probes drop their references. */
  removed: boolean;
}

export interface BackendChanges {
  readonly added: Backend[];
  readonly removed: Backend[];
  readonly changed: Backend[];
}

/**
 * The current backend set, diffed from discovery snapshots by name (docs/architecture.md,
 * "Control plane"). A backend whose address or port changed under the same name is a new backend:
 * the old one's sessions cannot continue (the ICE state lived in the old pod).
 */
export class BackendTable {
  readonly #byName = new Map<string, Backend>();
  /** Token value (30 bits, see token.ts) → backend: looked up from a ufrag's bytes. */
  readonly #byToken = new Map<number, Backend>();
  #probeCandidates: Backend[] = [];
  #synced = false;
  /** Token collisions seen in the last update (names), for a warning log. */
  tokenCollisions: string[] = [];

  /** True after the first snapshot (first discovery sync). */
  get synced(): boolean {
    return this.#synced;
  }

  get size(): number {
    return this.#byName.size;
  }

  get(name: string): Backend | undefined {
    return this.#byName.get(name);
  }

  all(): IterableIterator<Backend> {
    return this.#byName.values();
  }

  /**
   * Backends that may own a ufrag and so are probed: `ready` ones and `terminating` ones (a draining
   * JVB still owns its conferences' ufrags). `unready` backends get no new probes.
   */
  probeCandidates(): readonly Backend[] {
    return this.#probeCandidates;
  }

  /** The backend with this token value (from {@link ufragTokenBits}), whatever its state. */
  byTokenBits(bits: number): Backend | undefined {
    return bits < 0 ? undefined : this.#byToken.get(bits);
  }

  /** The probe-eligible backend whose token starts this server ufrag, if any. */
  byUfragPrefix(serverUfrag: string): Backend | undefined {
    if (serverUfrag.length <= TOKEN_LENGTH) return undefined;
    const b = this.#byToken.get(tokenBits(serverUfrag.slice(0, TOKEN_LENGTH)));
    return b !== undefined && b.state !== 'unready' ? b : undefined;
  }

  update(specs: readonly BackendSpec[]): BackendChanges {
    const added: Backend[] = [];
    const removed: Backend[] = [];
    const changed: Backend[] = [];
    const seen = new Set<string>();
    for (const spec of specs) {
      seen.add(spec.name);
      const old = this.#byName.get(spec.name);
      if (old !== undefined && old.address === spec.address && old.port === spec.port) {
        if (old.state !== spec.state) {
          old.state = spec.state;
          changed.push(old);
        }
        continue;
      }
      if (old !== undefined) {
        old.removed = true;
        removed.push(old);
      }
      const b: Backend = {
        name: spec.name,
        address: spec.address,
        port: spec.port,
        token: tokenFor(spec.name),
        state: spec.state,
        removed: false,
      };
      this.#byName.set(b.name, b);
      added.push(b);
    }
    for (const [name, b] of this.#byName) {
      if (!seen.has(name)) {
        b.removed = true;
        removed.push(b);
        this.#byName.delete(name);
      }
    }
    this.#rebuildIndexes();
    this.#synced = true;
    return { added, removed, changed };
  }

  #rebuildIndexes(): void {
    this.#byToken.clear();
    this.tokenCollisions = [];
    const candidates: Backend[] = [];
    for (const b of this.#byName.values()) {
      if (b.state !== 'unready') candidates.push(b);
      const bits = tokenBits(b.token);
      const other = this.#byToken.get(bits);
      if (other !== undefined) this.tokenCollisions.push(`${other.name}/${b.name}`);
      else this.#byToken.set(bits, b);
    }
    this.#probeCandidates = candidates;
  }
}
