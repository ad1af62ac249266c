import type { BackendSpec, BackendState } from '../discovery/types.ts';
import type { Session } from '../session/session.ts';
import { TOKEN_LENGTH, tokenFor } from './token.ts';

/** A backend as the data path holds it: the spec plus its prefix token and its live sessions. */
export interface Backend {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly token: string;
  state: BackendState;
  /** Set once the backend left the snapshot; sessions and probes drop their references. */
  removed: boolean;
  readonly sessions: Set<Session>;
}

export interface BackendChanges {
  readonly added: Backend[];
  readonly removed: Backend[];
  readonly changed: Backend[];
}

/**
 * The current backend set, diffed from discovery snapshots by name (DESIGN.md, "Control plane").
 * A backend whose address or port changed under the same name is a new backend: the old one's
 * sessions cannot continue (the ICE state lived in the old pod).
 */
export class BackendTable {
  readonly #byName = new Map<string, Backend>();
  readonly #byToken = new Map<string, Backend>();
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

  /** The probe-eligible backend whose token starts this server ufrag, if any. */
  byUfragPrefix(serverUfrag: string): Backend | undefined {
    if (serverUfrag.length <= TOKEN_LENGTH || this.#byToken.size === 0) return undefined;
    const b = this.#byToken.get(serverUfrag.slice(0, TOKEN_LENGTH));
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
        sessions: new Set(),
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
      const other = this.#byToken.get(b.token);
      if (other !== undefined) this.tokenCollisions.push(`${other.name}/${b.name}`);
      else this.#byToken.set(b.token, b);
    }
    this.#probeCandidates = candidates;
  }
}
