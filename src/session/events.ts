import type { FlowListener, PeerRoute } from '../defs/interfaces.ts';
import type { CloseReason } from '../defs/reasons.ts';
import type { ClientEndpoint, Session } from './session.ts';

/**
 * Flow events (docs/architecture.md, "Flow events"; the listener interface is in
 * src/defs/interfaces.ts): the session registry announces each change it makes through this
 * fan-out to every listener, in the order they were added. Synchronous, per session, never per
 * datagram.
 */
export class FlowEvents {
  readonly #listeners: FlowListener[] = [];

  add(l: FlowListener): void {
    this.#listeners.push(l);
  }

  established(s: Session): void {
    for (const l of this.#listeners) l.established?.(s);
  }

  endpointJoined(s: Session, ep: ClientEndpoint): void {
    for (const l of this.#listeners) l.endpointJoined?.(s, ep);
  }

  currentChanged(s: Session, ep: ClientEndpoint): void {
    for (const l of this.#listeners) l.currentChanged?.(s, ep);
  }

  endpointLeft(s: Session, ep: ClientEndpoint): void {
    for (const l of this.#listeners) l.endpointLeft?.(s, ep);
  }

  routeChanged(s: Session, ep: ClientEndpoint, old: PeerRoute | undefined): void {
    for (const l of this.#listeners) l.routeChanged?.(s, ep, old);
  }

  /** The promises of listeners that still have counts of the session to add (or none). */
  closed(s: Session, reason: CloseReason, established: boolean): Array<Promise<void>> {
    const pending: Array<Promise<void>> = [];
    for (const l of this.#listeners) {
      const p = l.closed?.(s, reason, established);
      if (p !== undefined) pending.push(p);
    }
    return pending;
  }
}
