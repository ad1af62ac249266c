import type { Logger } from 'pino';
import { ADMIT, type Admission, newAdmitted } from '../admission/admission.ts';
import type { Backend, BackendTable } from '../backends/backend-table.ts';
import type { Counters } from '../defs/counters.ts';
import { BudgetClass, type PeerRoute, type Transport, type UpstreamHandler } from '../defs/interfaces.ts';
import { DropReason, ROUTE_LABELS, RouteCounter } from '../defs/reasons.ts';
import type { SessionRegistry } from '../session/registry.ts';
import { ClientEndpoint, type Session, SessionState } from '../session/session.ts';
import { hashBytes } from '../stun/hash.ts';
import { bindingErrorCode, bindingResponseKind, type UsernameView, usernameEquals } from '../stun/parse.ts';
import { Probe, probeOf } from './probe.ts';
import { sendToEndpoint } from './to-client.ts';

/**
 * The router: where a first check goes, and who owns its ufrag (docs/architecture.md, "Routing").
 * In order: a live session with the same ufrag pair (NAT rebinding or another candidate: forwarded
 * through that session's socket, joined only on the backend's success), else admission decides a
 * directed probe (prefix token, learned ufrag) or a fan-out to every candidate, else the datagram
 * is dropped by reason. The first Binding success for the flow's transaction wins; error responses
 * and silence mean "not mine"; a wrong or silent directed guess falls back to the fan-out. Also
 * ICE restarts (RFC 8445 §9) on a known 5-tuple, which are routed like a new flow.
 *
 * It changes sessions only through the registry's named operations; the probes are its own
 * (probe.ts).
 */

export interface RouterDeps {
  readonly registry: SessionRegistry;
  readonly backends: BackendTable;
  readonly admission: Admission;
  readonly transport: Transport;
  readonly counters: Counters;
  readonly clock: () => number;
  readonly log: Logger;
  readonly probeRounds: number;
  /** Every backend carries a prefix token (admission.ts): a silent owner is asked again, not fanned out. */
  readonly strictPrefix: boolean;
  /** Called once per session whose owner was found: routing time and outcome (a metrics hook). */
  readonly onRouted: ((ms: number, outcome: string) => void) | undefined;
  /** The forwarder's handler for a new session's upstream socket. */
  readonly upstreamHandler: (s: Session) => UpstreamHandler;
}

export class Router {
  readonly #d: RouterDeps;
  readonly #admitted = newAdmitted();
  readonly #debug: boolean;
  #accepting = true;

  constructor(deps: RouterDeps) {
    this.#d = deps;
    this.#debug = deps.log.isLevelEnabled('debug');
  }

  get accepting(): boolean {
    return this.#accepting;
  }

  stopAccepting(): void {
    this.#accepting = false;
  }

  /**
   * A parsed first check (`view`) on a 5-tuple that no session holds, or (`restartOf`) an ICE
   * restart on an established session's endpoint. Returns the probing session, if one was opened.
   */
  route(
    buf: Buffer,
    view: UsernameView,
    address: string,
    port: number,
    restartOf: ClientEndpoint | undefined,
  ): Session | undefined {
    const d = this.#d;
    const now = d.clock();
    if (restartOf === undefined) {
      const live = d.registry.findLive(buf, view, hashBytes(buf, view.start, view.end));
      if (live !== undefined) {
        this.#rebind(live, buf, address, port, now);
        return undefined;
      }
    }
    if (!this.#accepting) return this.#drop(DropReason.Draining);
    const candidates = d.backends.probeCandidates();
    const a = this.#admitted;
    const r = d.admission.admitFirst(buf, view, address, candidates, now, a);
    if (r !== ADMIT) return this.#drop(r);
    const probe = new Probe(
      a.directed !== undefined ? [a.directed] : candidates.slice(),
      a.directed !== undefined,
      a.budget,
    );
    const s = d.registry.open({
      buf,
      view,
      usernameHash: a.usernameHash,
      serverUfragHash: a.serverUfragHash,
      address,
      port,
      probe,
      routedBy: restartOf !== undefined ? 'restart' : a.outcome,
      restartOf,
    });
    if (typeof s === 'number') return this.#drop(s);
    // Its socket, on the port the registry took; the socket's datagrams go to the forwarder.
    const family = probe.candidates[0]!.address.includes(':') ? 6 : 4;
    d.registry.attach(s, d.transport.openUpstream(family, s.poolPort, d.upstreamHandler(s)));
    this.#sendProbes(s, probe, buf);
    return s;
  }

  /**
   * A parsed check on a new 5-tuple that reached this replica through a peer (`via`): a rebinding
   * of a live session here, exactly as from the public socket, or nothing — a tunneled datagram
   * never opens a session (docs/peers.md, "Owner"). False if no live session has its ufrag pair.
   */
  routeTunneled(buf: Buffer, view: UsernameView, address: string, port: number, via: PeerRoute): boolean {
    const d = this.#d;
    const live = d.registry.findLive(buf, view, hashBytes(buf, view.start, view.end));
    if (live === undefined) {
      this.#drop(DropReason.TunnelNoSession);
      return false;
    }
    this.#rebind(live, buf, address, port, d.clock(), via);
    return true;
  }

  /** The same ufrag pair as a live session from a new 5-tuple: ask its owner, move nothing yet. */
  #rebind(live: Session, buf: Buffer, address: string, port: number, now: number, via?: PeerRoute): void {
    const d = this.#d;
    const r = d.admission.admitRebind(address, hasAddress(live, address), now);
    if (r !== ADMIT) {
      this.#drop(r);
      return;
    }
    // Joins only when the owner answers this transaction with a success (forwarder.ts); a check
    // that came through a peer joins with its route.
    const ep = new ClientEndpoint(live, address, port, now, via);
    d.registry.remember(live, buf, ep);
    // Its media that follows at once is held until the answer, not dropped (join-waits.ts).
    d.registry.awaitJoin(live, ep, now);
    d.counters.packetsToBackends++;
    d.counters.bytesToBackends += buf.length;
    live.upstream.send(buf);
  }

  /**
   * A Binding Request with another server ufrag on an established session's endpoint: an ICE
   * restart. A retransmit of the restart in progress — from this endpoint or another endpoint of
   * the session (the agent checks the new pair from each of its candidates) — is another probe
   * round, remembered for the endpoint that sent it; a different pair supersedes it. A pair that
   * an established session already has (the restart was won from another endpoint) is a
   * rebinding of that session: through its socket, joined on its owner's success.
   */
  restart(s: Session, ep: ClientEndpoint, buf: Buffer, view: UsernameView): void {
    const d = this.#d;
    const pending = s.restartOf;
    if (pending !== undefined && pending.state === SessionState.Probing) {
      if (usernameEquals(buf, view, pending.usernameBytes)) {
        this.round(pending, buf, d.clock(), ep);
        return;
      }
      d.registry.close(pending, 'superseded');
    }
    const live = d.registry.findLive(buf, view, hashBytes(buf, view.start, view.end));
    if (live !== undefined && live !== s) {
      d.registry.setRestart(s, undefined);
      this.#rebind(live, buf, ep.address, ep.port, d.clock(), ep.via);
      return;
    }
    d.registry.setRestart(s, this.route(buf, view, ep.address, ep.port, ep));
  }

  /**
   * A retransmit of a flow's first check while its owner is unknown: one more round. `from`: the
   * endpoint that sent it (a restart's checks may come from any endpoint of the session).
   */
  round(s: Session, buf: Buffer, now: number, from: ClientEndpoint = s.current): void {
    const p = probeOf(s);
    if (p.rounds >= this.#d.probeRounds) {
      this.#drop(DropReason.ProbeRounds);
      return;
    }
    if (p.directed && !this.#d.strictPrefix) {
      // The directed guess stayed silent until the client retransmitted (JVB drops checks for
      // ufrags it does not know; a random ufrag can start with a token): fan out to every
      // candidate from now on. With strict prefix routing the token is the owner's by
      // construction, so the retransmit goes to it again (a lost datagram, a slow backend).
      this.#toFanout(s, p);
    }
    const n = p.remaining();
    if (n === 0) {
      // Every candidate left the backend set since the flow opened: nobody to ask.
      this.#drop(DropReason.NoBackends);
      return;
    }
    const r = this.#d.admission.admitRound(
      s.source,
      p.directed ? BudgetClass.Directed : BudgetClass.Fanout,
      n,
      now,
    );
    if (r !== ADMIT) {
      this.#drop(r);
      return;
    }
    this.#sendProbes(s, p, buf, from);
  }

  /** A datagram from a backend on a probing session's socket. */
  probeAnswer(s: Session, buf: Buffer, address: string, port: number): void {
    const d = this.#d;
    const p = probeOf(s);
    let from: Backend | undefined;
    for (const b of p.candidates) {
      if (b.port === port && b.address === address) {
        from = b;
        break;
      }
    }
    if (from === undefined || from.removed) {
      this.#drop(DropReason.UpstreamUnexpectedSource);
      return;
    }
    const kind = bindingResponseKind(buf);
    const i = kind === 0 ? -1 : s.findTransaction(buf);
    if (i < 0) {
      this.#drop(DropReason.ProbeStale);
      return;
    }
    if (kind === 1) {
      this.#win(s, from, buf, s.txEndpoints[i]!);
      return;
    }
    // An error (401 from libwebrtc for an unknown ufrag, 400, 487, …) means "not mine". A 403 is
    // a backend that knows the ufrag and refuses this address for it (ice4j #287, after ICE
    // completed): it has bound the address to that session, so the port must rest before another
    // flow uses it — at once, the backend would refuse the next session's checks from it too.
    if (bindingErrorCode(buf) === 403) d.registry.backendHolds(s);
    p.excluded.add(from);
    this.#drop(DropReason.ProbeNotMine);
    if (p.directed) {
      // The directed guess was wrong (a random ufrag can start with a token; a learned entry can
      // be stale): fan the same request out to the other candidates at once.
      this.#toFanout(s, p);
      const n = p.remaining();
      if (n > 0 && d.admission.admitRound(s.source, BudgetClass.Fanout, n, d.clock()) === ADMIT) {
        p.rounds--; // The fall-back continues the same round.
        this.#sendProbes(s, p, s.txRequests[i]! as Buffer, s.txEndpoints[i]!);
        return;
      }
    }
    if (p.remaining() === 0) this.fail(s);
  }

  /** No backend claimed the flow's ufrag (all refused, or the probe timed out). */
  fail(s: Session): void {
    const d = this.#d;
    d.counters.routes[RouteCounter.ProbeFailed]!++;
    d.admission.reject(s.serverUfragHash, d.clock());
    if (this.#debug)
      d.log.debug(
        { serverUfrag: s.serverUfrag, rounds: s.probe === undefined ? undefined : probeOf(s).rounds },
        'no backend owns ufrag',
      );
    d.registry.close(s, 'probe_failed');
  }

  /** `ep`: the endpoint whose check the owner answered; it is the one that joins. */
  #win(s: Session, owner: Backend, response: Buffer, ep: ClientEndpoint): void {
    const d = this.#d;
    const c = d.counters;
    const route =
      s.routedBy === 'prefix'
        ? RouteCounter.Prefix
        : s.routedBy === 'learned'
          ? RouteCounter.Learned
          : s.routedBy === 'restart'
            ? RouteCounter.Restart
            : RouteCounter.ProbeWon;
    c.routes[route]!++;
    d.admission.learn(s.serverUfragHash, owner.name);
    d.registry.establish(s, owner, ep);
    d.onRouted?.(d.clock() - s.createdAt, ROUTE_LABELS[route]!);
    d.registry.noteDown(s, response.length);
    sendToEndpoint(ep, response, d.transport, c);
  }

  #toFanout(s: Session, p: Probe): void {
    p.directed = false;
    if (s.routedBy !== 'restart') this.#d.registry.setRoutedBy(s, 'probe');
    p.candidates = this.#d.backends.probeCandidates().slice();
  }

  /** One probe round: the client's own datagram to each remaining candidate (budget already taken). */
  #sendProbes(s: Session, p: Probe, buf: Buffer, from: ClientEndpoint = s.current): void {
    const d = this.#d;
    p.rounds++;
    d.registry.remember(s, buf, from);
    const c = d.counters;
    for (const b of p.candidates) {
      if (p.excluded.has(b) || b.removed) continue;
      s.upstream.sendTo(buf, b.port, b.address);
      c.probesSent++;
      if (p.directed) c.directedProbesSent++;
      c.packetsToBackends++;
      c.bytesToBackends += buf.length;
    }
  }

  #drop(reason: DropReason): undefined {
    this.#d.counters.drops[reason]!++;
    return undefined;
  }
}

/** Whether one of the session's endpoints has this address (a rebinding that changed only the port). */
function hasAddress(s: Session, address: string): boolean {
  for (const ep of s.endpoints) if (ep.address === address) return true;
  return false;
}
