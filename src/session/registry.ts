import type { Logger } from 'pino';
import type { Counters } from '../defs/counters.ts';
import type {
  BackendRef,
  Clock,
  FlowListener,
  PeerRoute,
  SessionSlots,
  Upstream,
} from '../defs/interfaces.ts';
import type { KernelCounts } from '../defs/kernel-counts.ts';
import { CLOSE_REASONS, type CloseReason, DropReason, type RouteOutcome } from '../defs/reasons.ts';
import type { UsernameView } from '../stun/parse.ts';
import { usernameEquals } from '../stun/parse.ts';
import { FlowEvents } from './events.ts';
import { type Hold, type JoinWait, JoinWaits } from './join-waits.ts';
import type { PortPool } from './port-pool.ts';
import { type ClientEndpoint, type ProbeState, Session, SessionState, TX_SLOTS } from './session.ts';

/**
 * The one owner of session state (docs/architecture.md, "One owner of session state"). Only this
 * class creates and closes sessions, adds and removes client endpoints, and keeps every index that
 * depends on them: client 5-tuple → endpoint, ufrag pair → established session, backend →
 * sessions, flows being routed per source, and the release of upstream ports. After each change
 * it announces a flow event ({@link FlowListener}), which is how the kernel fast path and a pod's
 * other workers follow sessions without touching them (metrics read counters, not events).
 *
 * The router decides (who owns a ufrag, what admission allows) and the forwarder moves datagrams;
 * both call the named operations here instead of writing session fields. The router's own state
 * is the probe a probing session holds (src/datapath/probe.ts).
 */

/** A session cap for one process. */
export class LocalSessionSlots implements SessionSlots {
  readonly max: number;
  #used = 0;
  constructor(max: number) {
    this.max = max;
  }
  tryAcquire(): boolean {
    if (this.#used >= this.max) return false;
    this.#used++;
    return true;
  }
  release(): void {
    if (this.#used > 0) this.#used--;
  }
}

export interface RegistryDeps {
  /** Upstream ports with quarantine; undefined = let the kernel pick (no quarantine guarantee). */
  readonly ports: PortPool | undefined;
  readonly slots: SessionSlots;
  readonly clock: Clock;
  readonly log: Logger;
  readonly counters: Counters;
}

/** What {@link SessionRegistry.open} needs to know about a new flow. */
export interface OpenFlow {
  readonly buf: Buffer;
  readonly view: UsernameView;
  readonly usernameHash: number;
  readonly serverUfragHash: number;
  readonly address: string;
  readonly port: number;
  readonly probe: ProbeState;
  readonly routedBy: RouteOutcome;
  /** The endpoint of an established session whose client started an ICE restart. */
  readonly restartOf: ClientEndpoint | undefined;
}

const NO_PORT = -1;

export class SessionRegistry {
  readonly sessions = new Set<Session>();
  readonly #byAddress = new Map<string, Map<number, ClientEndpoint>>();
  /** usernameHash → established sessions with that hash (a chain: hashes may collide). */
  readonly #byUsername = new Map<number, Session[]>();
  readonly #byBackend = new Map<BackendRef, Set<Session>>();
  /** Flows being routed per source address, [fan-out, directed]. */
  readonly #pending = [new Map<string, number>(), new Map<string, number>()] as const;
  readonly #events = new FlowEvents();
  /** Datagrams of new 5-tuples waiting for their check's answer (join-waits.ts). */
  readonly #joinWaits = new JoinWaits<Session>();
  readonly #deps: RegistryDeps;
  #endpointCount = 0;
  #nextId = 1;

  constructor(deps: RegistryDeps) {
    this.#deps = deps;
  }

  addListener(l: FlowListener): void {
    this.#events.add(l);
  }

  get size(): number {
    return this.sessions.size;
  }

  get endpointCount(): number {
    return this.#endpointCount;
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  lookup(address: string, port: number): ClientEndpoint | undefined {
    const ports = this.#byAddress.get(address);
    return ports === undefined ? undefined : ports.get(port);
  }

  /** The established session whose USERNAME equals the one at `view` (hash, then bytes). */
  findLive(buf: Uint8Array, view: UsernameView, usernameHash: number): Session | undefined {
    const chain = this.#byUsername.get(usernameHash);
    if (chain === undefined) return undefined;
    for (const s of chain) if (usernameEquals(buf, view, s.usernameBytes)) return s;
    return undefined;
  }

  /** Flows from `source` being routed now, in one budget class (0 fan-out, 1 directed). */
  pending(source: string, budget: number): number {
    return this.#pending[budget]!.get(source) ?? 0;
  }

  sessionsOf(b: BackendRef): ReadonlySet<Session> {
    return this.#byBackend.get(b) ?? EMPTY;
  }

  // ---------------------------------------------------------------------------------------------
  // Session life

  /**
   * Opens a probing session: takes a session slot and an upstream port (its `poolPort`). Returns
   * the drop reason instead if either is exhausted (nothing is then allocated). The caller opens
   * the session's socket on that port and hands it over with {@link SessionRegistry.attach}
   * before anything else: the registry keeps the port, never the socket's traffic.
   */
  open(f: OpenFlow): Session | DropReason {
    const d = this.#deps;
    if (!d.slots.tryAcquire()) return DropReason.SessionLimit;
    let localPort = 0;
    if (d.ports !== undefined) {
      localPort = d.ports.acquire(d.clock());
      if (localPort === NO_PORT) {
        d.slots.release();
        return DropReason.PortsExhausted;
      }
    }
    const now = d.clock();
    const v = f.view;
    const username = f.buf.toString('latin1', v.start, v.end);
    const session = new Session(
      this.#nextId++,
      username,
      v.colon - v.start,
      { username: f.usernameHash, serverUfrag: f.serverUfragHash },
      localPort,
      { address: f.address, port: f.port },
      now,
    );
    session.routedBy = f.routedBy;
    session.probe = f.probe;
    const pending = this.#pending[f.probe.budget]!;
    pending.set(f.address, (pending.get(f.address) ?? 0) + 1);
    this.sessions.add(session);
    if (f.restartOf === undefined) this.#index(session, session.current);
    else session.current = f.restartOf; // Same object: it moves when the restart is won.
    return session;
  }

  /**
   * The owner answered the first check (or the restart's check) with a success. The endpoint that
   * sent the answered check joins (an ICE restart takes the 5-tuple over from its old session).
   */
  establish(s: Session, owner: BackendRef, first: ClientEndpoint = s.current): void {
    const d = this.#deps;
    this.#unpend(s);
    s.state = SessionState.Established;
    s.backend = owner;
    s.answered = true;
    s.probe = undefined;
    let set = this.#byBackend.get(owner);
    if (set === undefined) {
      set = new Set();
      this.#byBackend.set(owner, set);
    }
    set.add(s);
    s.upstream.connect(owner.port, owner.address);
    const chain = this.#byUsername.get(s.usernameHash);
    if (chain === undefined) this.#byUsername.set(s.usernameHash, [s]);
    else chain.push(s);
    d.counters.sessionsOpened++;
    this.#adopt(s, first);
    const now = d.clock();
    d.log.info(
      {
        session: s.id,
        backend: owner.name,
        serverUfrag: s.serverUfrag,
        clientUfrag: s.clientUfrag,
        routedBy: s.routedBy,
        upstreamPort: s.upstream.localPort,
        routingMs: now - s.createdAt,
      },
      'session opened',
    );
    this.#events.established(s);
  }

  /**
   * A new 5-tuple of an established session, confirmed by the backend's success for its check
   * (NAT rebinding or another candidate of the same agent): it joins and becomes current.
   */
  join(s: Session, ep: ClientEndpoint): void {
    if (s.state !== SessionState.Established) return;
    this.#adopt(s, ep);
    this.#deps.log.debug(
      { session: s.id, endpoint: `${ep.address}:${ep.port}`, via: ep.via?.peer },
      'endpoint joined',
    );
    this.#events.endpointJoined(s, ep);
    this.#events.currentChanged(s, ep);
  }

  /** Downstream follows the endpoint that sent media (latching). Called only on a change. */
  latch(s: Session, ep: ClientEndpoint): void {
    s.current = ep;
    this.#events.currentChanged(s, ep);
  }

  /**
   * The client's datagrams on `ep` now arrive another way: through a peer (`via`), or directly
   * (undefined). Downstream for the endpoint follows (docs/peers.md, "Owner"). Called only on a
   * change; announced for established sessions (the kernel fast path and the peer layer follow).
   */
  /** The peers are asked about a check on `ep`'s 5-tuple (true), or no longer (false). */
  setAsking(ep: ClientEndpoint, asking: boolean): void {
    ep.asking = asking;
  }

  reroute(ep: ClientEndpoint, via: PeerRoute | undefined): void {
    const old = ep.via;
    ep.via = via;
    this.#deps.log.debug(
      { session: ep.session.id, endpoint: `${ep.address}:${ep.port}`, via: via?.peer, was: old?.peer },
      'endpoint rerouted',
    );
    if (ep.session.state === SessionState.Established) this.#events.routeChanged(ep.session, ep, old);
  }

  /** Ends a session and everything it holds; idempotent. A probing restart of it ends too. */
  close(s: Session, reason: CloseReason): void {
    if (s.state === SessionState.Closed) return;
    const d = this.#deps;
    const wasEstablished = s.state === SessionState.Established;
    if (s.state === SessionState.Probing) this.#unpend(s);
    s.state = SessionState.Closed;
    for (const ep of s.endpoints) this.#unindex(ep);
    s.endpoints.length = 0;
    const chain = this.#byUsername.get(s.usernameHash);
    if (chain !== undefined) {
      const i = chain.indexOf(s);
      if (i >= 0) chain.splice(i, 1);
      if (chain.length === 0) this.#byUsername.delete(s.usernameHash);
    }
    this.sessions.delete(s);
    if (s.backend !== undefined) {
      const set = this.#byBackend.get(s.backend);
      set?.delete(s);
      if (set !== undefined && set.size === 0) this.#byBackend.delete(s.backend);
    }
    d.slots.release();
    if (s.restartOf !== undefined) this.close(s.restartOf, reason);
    // A socket no backend ever answered on may serve the next flow on its port (udp.ts).
    s.upstream.close(!s.answered);
    const now = d.clock();
    // A port rests only if a backend may hold state for it (port-pool.ts).
    if (d.ports !== undefined && s.upstream.localPort > 0)
      d.ports.release(s.upstream.localPort, now, s.answered);
    d.counters.closed[CLOSE_REASONS.indexOf(reason)]!++;
    const pending = this.#events.closed(s, reason, wasEstablished);
    if (!wasEstablished) return;
    const log = (): void =>
      d.log.info(
        {
          session: s.id,
          backend: s.backend?.name,
          serverUfrag: s.serverUfrag,
          clientUfrag: s.clientUfrag,
          reason,
          durationMs: now - s.createdAt,
          packetsUp: s.packetsUp,
          packetsDown: s.packetsDown,
          bytesUp: s.bytesUp,
          bytesDown: s.bytesDown,
        },
        'session closed',
      );
    // The kernel fast path's last counts of the session come with its next counter read
    // (docs/fast-path.md, "Counters"): the log waits for them.
    if (pending.length === 0) log();
    else void Promise.allSettled(pending).then(log);
  }

  /** The socket just opened for `s` on `s.poolPort` (see {@link SessionRegistry.open}). */
  attach(s: Session, upstream: Upstream): void {
    s.upstream = upstream;
  }

  /** How `s` is being routed: a directed guess that failed over to the fan-out is a probe now. */
  setRoutedBy(s: Session, outcome: RouteOutcome): void {
    s.routedBy = outcome;
  }

  /**
   * A backend keeps state for this session's upstream address although it refused the flow (a 403:
   * it knows the ufrag, and bound the address to it): the port rests at release like an answered
   * one, and its socket is not reused at once.
   */
  backendHolds(s: Session): void {
    s.answered = true;
  }

  /** Marks an ICE restart of `s` in progress (the probing session `next`), or none. */
  setRestart(s: Session, next: Session | undefined): void {
    s.restartOf = next;
  }

  /** An extra endpoint went idle: it leaves its session (never the last one: the session idles). */
  /**
   * The 5-tuple of `ep` now belongs to another replica's session (a NAT gave it to another
   * client): it leaves its session here even if it was the last one — the session's own client
   * comes back from a new 5-tuple (its rebinding) or the session idles out.
   */
  disown(ep: ClientEndpoint): void {
    ep.asking = false;
    this.#unindex(ep);
    this.#leave(ep);
    this.#deps.log.debug(
      { session: ep.session.id, endpoint: `${ep.address}:${ep.port}` },
      'endpoint disowned',
    );
  }

  dropEndpoint(ep: ClientEndpoint): void {
    const s = ep.session;
    if (s.endpoints.length <= 1 || !s.endpoints.includes(ep)) return;
    this.#unindex(ep);
    this.#leave(ep);
  }

  // ---------------------------------------------------------------------------------------------
  // Traffic accounting and transactions (per datagram: field writes only)

  noteUp(s: Session, ep: ClientEndpoint, bytes: number, now: number): void {
    ep.lastSeen = now;
    s.lastClientAt = now;
    s.packetsUp++;
    s.bytesUp += bytes;
  }

  noteDown(s: Session, bytes: number): void {
    s.packetsDown++;
    s.bytesDown += bytes;
  }

  /**
   * The kernel fast path forwarded client datagrams of `s` (docs/fast-path.md), the last at `at`:
   * it is not idle. Never back in time: Node may have seen a later datagram of the client (a
   * consent check) than the kernel's last (the eBPF path reports the kernel's own time).
   */
  touch(s: Session, at: number): void {
    if (at > s.lastClientAt) s.lastClientAt = at;
    if (at > s.current.lastSeen) s.current.lastSeen = at;
  }

  /** Datagrams and bytes the kernel fast path forwarded for `s`, for its close log. */
  noteKernel(s: Session, c: KernelCounts): void {
    s.packetsUp += c.packetsUp;
    s.bytesUp += c.bytesUp;
    s.packetsDown += c.packetsDown;
    s.bytesDown += c.bytesDown;
  }

  /** Remembers a client request so its response reaches the endpoint that sent it. */
  remember(s: Session, request: Uint8Array, from: ClientEndpoint): void {
    const i = s.txNext;
    s.txRequests[i] = request;
    s.txEndpoints[i] = from;
    s.txNext = (i + 1) % TX_SLOTS;
  }

  forget(s: Session, i: number): void {
    s.txRequests[i] = undefined;
    s.txEndpoints[i] = undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // A new 5-tuple's datagrams while its check is answered (join-waits.ts)

  /** A check of `s` from the new 5-tuple of `ep` went to the backend: hold its media until the answer. */
  awaitJoin(s: Session, ep: ClientEndpoint, now: number): void {
    this.#joinWaits.open(s, ep.address, ep.port, now);
  }

  /** Holds a non-STUN datagram of a 5-tuple that waits to join; see {@link JoinWaits.hold}. */
  holdForJoin(address: string, port: number, buf: Buffer, now: number): Hold {
    return this.#joinWaits.hold(address, port, buf, now, isEstablished);
  }

  /**
   * The backend answered the 5-tuple's check: what it held, oldest first, for the forwarder to
   * send on after a success; after a refusal they are counted as dropped here (undefined back).
   */
  endJoinWait(address: string, port: number, joined: boolean): readonly Buffer[] | undefined {
    const w = this.#joinWaits.close(address, port);
    if (w === undefined || w.held.length === 0) return undefined;
    if (joined) return w.held;
    this.#deps.counters.drops[DropReason.JoinUnconfirmed]! += w.held.length;
    return undefined;
  }

  /** Ends the waits whose check was not answered in time, or whose session ended; counts their datagrams. */
  sweepJoinWaits(now: number): void {
    this.#joinWaits.sweep(now, isEstablished, this.#countUnconfirmed);
  }

  /** Datagrams held for joins now. */
  get joinHeld(): number {
    return this.#joinWaits.held;
  }

  readonly #countUnconfirmed = (w: JoinWait<Session>): void => {
    this.#deps.counters.drops[DropReason.JoinUnconfirmed]! += w.held.length;
  };

  // ---------------------------------------------------------------------------------------------

  #adopt(s: Session, ep: ClientEndpoint): void {
    const existing = this.lookup(ep.address, ep.port);
    if (existing !== undefined && existing !== ep) {
      // The 5-tuple belonged to another endpoint object: it leaves there.
      this.#unindex(existing);
      const other = existing.session;
      this.#leave(existing);
      if (other.restartOf === s || s.replacedId === other.id) {
        // `s` is `other`'s ICE restart and won (now, or with another of the endpoints the client
        // checked the new credentials from): `other` ends with its last endpoint, as below.
        this.#restartWon(s, other);
      } else if (other !== s) {
        // Another session's client sends from this 5-tuple now: a NAT that lost its mappings gave
        // the port to another of its clients. `other`'s client lives on behind a new 5-tuple and
        // joins it with its next check (a rebinding), so `other` stays, with no endpoint until
        // then: its downstream is dropped (no_client_endpoint), its idle timeout ends it if the
        // client never comes back. Ending it here broke that client's call (docs/architecture.md).
        this.#deps.log.debug(
          { session: other.id, by: s.id, endpoint: `${ep.address}:${ep.port}` },
          'endpoint taken by another session',
        );
      }
    }
    if (ep.session !== s) {
      // An ICE restart won: the endpoint leaves its old session, which ends if it was the last one.
      const old = ep.session;
      this.#leave(ep);
      ep.session = s;
      this.#restartWon(s, old);
    }
    if (!s.endpoints.includes(ep)) s.endpoints.push(ep);
    if (!ep.joined) this.#index(s, ep);
    s.current = ep;
  }

  /** `s` won `old`'s ICE restart (with one of its endpoints): `old` ends once it has none left. */
  #restartWon(s: Session, old: Session): void {
    if (old.restartOf === s) old.restartOf = undefined;
    s.replacedId = old.id;
    if (old.endpoints.length === 0) this.close(old, 'restart');
  }

  /** Takes `ep` out of its session's endpoint list (not the index), with the flow events. */
  #leave(ep: ClientEndpoint): void {
    const s = ep.session;
    const i = s.endpoints.indexOf(ep);
    if (i < 0) return;
    s.endpoints.splice(i, 1);
    const wasCurrent = s.current === ep;
    if (wasCurrent && s.endpoints.length > 0) s.current = s.endpoints[s.endpoints.length - 1]!;
    if (s.state !== SessionState.Established) return;
    this.#events.endpointLeft(s, ep);
    if (wasCurrent && s.endpoints.length > 0) this.#events.currentChanged(s, s.current);
  }

  #index(s: Session, ep: ClientEndpoint): void {
    if (!s.endpoints.includes(ep)) s.endpoints.push(ep);
    let ports = this.#byAddress.get(ep.address);
    if (ports === undefined) {
      ports = new Map();
      this.#byAddress.set(ep.address, ports);
    }
    if (!ports.has(ep.port)) this.#endpointCount++;
    ports.set(ep.port, ep);
    ep.joined = true;
  }

  #unindex(ep: ClientEndpoint): void {
    const ports = this.#byAddress.get(ep.address);
    if (ports === undefined || ports.get(ep.port) !== ep) return;
    ports.delete(ep.port);
    this.#endpointCount--;
    if (ports.size === 0) this.#byAddress.delete(ep.address);
    ep.joined = false;
  }

  #unpend(s: Session): void {
    const p = s.probe;
    if (p === undefined) return;
    const m = this.#pending[p.budget]!;
    const n = (m.get(s.source) ?? 1) - 1;
    if (n <= 0) m.delete(s.source);
    else m.set(s.source, n);
  }
}

const EMPTY: ReadonlySet<Session> = new Set();

const isEstablished = (s: Session): boolean => s.state === SessionState.Established;
