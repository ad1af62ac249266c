import type { Backend } from '../backends/backend-table.ts';
import type { BudgetClass } from '../defs/interfaces.ts';
import type { ProbeState, Session } from '../session/session.ts';

/**
 * Routing state of a session whose owner is not known yet (docs/architecture.md, "Routing"):
 * candidates, refusals, rounds. Written only by the router; the session holds it while it probes
 * (the registry sees it as a {@link ProbeState}: only its budget class).
 */
export class Probe implements ProbeState {
  candidates: Backend[];
  /** Candidates that answered with an error: "not mine". */
  readonly excluded = new Set<Backend>();
  /** Probing began with a directed guess (prefix token or learned ufrag); fan out on failure. */
  directed: boolean;
  rounds = 0;
  /** The class this flow was admitted under: whose pending count it holds (registry.ts). */
  readonly budget: BudgetClass;

  constructor(candidates: Backend[], directed: boolean, budget: BudgetClass) {
    this.candidates = candidates;
    this.directed = directed;
    this.budget = budget;
  }

  /** Candidates still worth a datagram: not excluded, not removed. */
  remaining(): number {
    let n = 0;
    for (const b of this.candidates) if (!this.excluded.has(b) && !b.removed) n++;
    return n;
  }
}

/** The probe of a probing session: the router is the only one that sets it, always to a Probe. */
export function probeOf(s: Session): Probe {
  return s.probe as Probe;
}
