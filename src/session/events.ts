import type { CloseReason } from '../defs/reasons.ts';
import type { ClientEndpoint, Session } from './session.ts';

/**
 * Flow events: what the session registry announces after each change it makes
 * (docs/architecture.md, "Flow events"). The registry is the only writer of sessions, endpoints
 * and indexes; everything else that must follow them (metrics, the kernel fast path, the
 * cross-worker directory) listens here instead of reading or writing session fields at will.
 *
 * Listeners are called synchronously, right after the change, with the live objects: they must
 * treat them as read-only and must not call back into the registry from inside the callback.
 * Events are per session, never per datagram (latching fires only when the target changes).
 */
export interface FlowListener {
  /** The owner answered the first check with a success: media may flow. `s.current` is set. */
  established?(s: Session): void;
  /**
   * Another client 5-tuple joined an established session after the backend answered its check with
   * a success: a NAT rebinding, a second candidate of the same agent, or an ICE restart won.
   */
  endpointJoined?(s: Session, ep: ClientEndpoint): void;
  /** Downstream traffic now goes to `ep` (a join, or latching onto the 5-tuple that sent media). */
  currentChanged?(s: Session, ep: ClientEndpoint): void;
  /** A 5-tuple left an established session (idle extra endpoint, taken over by an ICE restart). */
  endpointLeft?(s: Session, ep: ClientEndpoint): void;
  /**
   * The session ended. `established` says whether it ever was (probing flows close too). A
   * listener that still has counts of the session to add (the kernel fast path: what its counters
   * counted since their last read) returns a promise, and the registry writes the session's close
   * log once it has settled (docs/fast-path.md, "Counters").
   */
  closed?(s: Session, reason: CloseReason, established: boolean): void | Promise<void>;
}
