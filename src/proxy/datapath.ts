import type { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { BackendSpec } from '../discovery/types.ts';
import type { Backend, BackendTable } from '../routing/backends.ts';
import { TokenBucket } from '../routing/token-bucket.ts';
import { createLearnedUfrags, createNegativeUfrags } from '../routing/ufrag-caches.ts';
import type { FlowListener } from '../session/events.ts';
import type { PortPool } from '../session/port-pool.ts';
import {
  ClientEndpoint,
  type RouteOutcome,
  Session,
  SessionState,
  type Upstream,
} from '../session/session.ts';
import { SessionTable } from '../session/table.ts';
import { classifyFirstByte, PacketClass } from '../stun/demux.ts';
import {
  bindingResponseKind,
  isBindingRequestHeader,
  newUsernameView,
  ParseResult,
  parseBindingRequest,
  usernameEquals,
} from '../stun/parse.ts';
import {
  CLOSE_REASONS,
  type CloseReason,
  Counters,
  DropReason,
  ROUTE_LABELS,
  RouteCounter,
} from './counters.ts';

/**
 * The I/O-free data path (DESIGN.md, "Data path"). It owns the routing decisions and the session
 * state; a transport adapter (udp.ts) owns the sockets and calls {@link Datapath.onClientDatagram}
 * and the per-session upstream handler. The clock is injected so tests can drive time.
 *
 * Hot path (a datagram on a known 5-tuple, either way): two Map lookups or none, a few field
 * writes, one send. No exceptions, no logging above debug, no allocation of our own.
 */

export interface DatapathOptions {
  /** A session with no client packet for this long ends (JVB expires endpoints after 60 s). */
  readonly idleTimeoutMs: number;
  /** A flow whose owner is not found within this time fails; its ufrag goes to the negative cache. */
  readonly probeTimeoutMs: number;
  /** Probe rounds per flow at most; a round is only ever triggered by a client (re)transmission. */
  readonly probeRounds: number;
  /** Global probe budget: datagrams sent to backends for probing, per second (burst = 1 s worth). */
  readonly probeRate: number;
  /** Flows being routed at once from one client IP. */
  readonly maxPendingPerSource: number;
  readonly maxSessions: number;
  readonly negativeTtlMs: number;
  readonly learnedMax: number;
}

export interface UpstreamHandler {
  onMessage(buf: Buffer, address: string, port: number): void;
  onError(err: NodeJS.ErrnoException): void;
}

/** What the data path needs from the socket layer. */
export interface Transport {
  sendToClient(buf: Uint8Array, port: number, address: string): void;
  /** Opens an upstream socket bound to `localPort` (0 = any) for backends of this address family. */
  openUpstream(family: 4 | 6, localPort: number, handler: UpstreamHandler): Upstream;
}

export interface DatapathDeps {
  readonly transport: Transport;
  readonly backends: BackendTable;
  /** Upstream ports with quarantine; undefined = let the kernel pick (no quarantine guarantee). */
  readonly ports: PortPool | undefined;
  readonly clock: () => number;
  readonly log: Logger;
  readonly options: DatapathOptions;
  /** Called once per session whose owner was found: routing time and outcome (a metrics hook). */
  readonly onRouted?: (ms: number, outcome: string) => void;
  /** TEMP: worker-thread hooks for this round-1 data path (docs/workers.md, "Porting"). */
  readonly workerHooks?: WorkerHooks;
}

/**
 * TEMP: what the worker layer (src/workers) plugs into this round-1 data path. Each hook is
 * optional and absent in a single process. To be ported onto the session registry (flow events),
 * admission (shared Budget / SessionSlots / per-source shares) and router (directory, hand-off).
 */
export interface WorkerHooks {
  /** Replaces the per-process probe budget. */
  readonly budget?: { take(now: number, n: number): boolean };
  /** Replaces the `table.size >= maxSessions` check: one slot per session, released on close. */
  readonly slots?: { tryAcquire(): boolean; release(): void };
  /** Replaces the per-process pending-per-source Map. */
  readonly sources?: { tryAcquire(source: string): boolean; release(source: string): void };
  /** An unknown 5-tuple already handed to another worker: true = consumed (handed off again). */
  readonly divert?: (buf: Buffer, address: string, port: number) => boolean;
  /** Owner of a ufrag pair if it is another worker, else -1; asked before routing a first check. */
  readonly directory?: { ownerOf(username: string): number };
  /** Hands a first check to the owner found by `directory`. */
  readonly handoff?: (buf: Buffer, address: string, port: number, owner: number) => void;
  /** Told `established` and `closed` (the round-1 data path announces nothing else). */
  readonly listener?: FlowListener;
}

const NO_PORT = -1;

export class Datapath {
  readonly counters = new Counters();
  readonly table = new SessionTable();
  readonly learned: LRUCache<string, string>;
  readonly negative: LRUCache<string, true>;
  readonly #t: Transport;
  readonly #backends: BackendTable;
  readonly #ports: PortPool | undefined;
  readonly #clock: () => number;
  readonly #log: Logger;
  readonly #opt: DatapathOptions;
  readonly #budget: { take(now: number, n: number): boolean };
  readonly #hooks: WorkerHooks;
  readonly #pendingBySource = new Map<string, number>();
  readonly #view = newUsernameView();
  readonly #debug: boolean;
  readonly #onRouted: ((ms: number, outcome: string) => void) | undefined;
  #nextId = 1;
  #accepting = true;

  constructor(deps: DatapathDeps) {
    this.#t = deps.transport;
    this.#backends = deps.backends;
    this.#ports = deps.ports;
    this.#clock = deps.clock;
    this.#log = deps.log;
    this.#opt = deps.options;
    this.#hooks = deps.workerHooks ?? {};
    this.#budget =
      this.#hooks.budget ?? new TokenBucket(deps.options.probeRate, deps.options.probeRate, deps.clock());
    this.learned = createLearnedUfrags(deps.options.learnedMax);
    this.negative = createNegativeUfrags(100_000, deps.options.negativeTtlMs);
    this.#debug = deps.log.isLevelEnabled('debug');
    this.#onRouted = deps.onRouted;
  }

  get accepting(): boolean {
    return this.#accepting;
  }

  /** Draining: existing sessions keep flowing, new flows are dropped (reason `draining`). */
  stopAccepting(): void {
    this.#accepting = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Client → backend

  onClientDatagram(buf: Buffer, address: string, port: number): void {
    const c = this.counters;
    c.packetsFromClients++;
    c.bytesFromClients += buf.length;
    const ep = this.table.lookup(address, port);
    if (ep === undefined) {
      this.#newFlow(buf, address, port);
      return;
    }
    const s = ep.session;
    const now = this.#clock();
    ep.lastSeen = now;
    s.lastClientAt = now;
    if (s.state === SessionState.Established) {
      if (buf.length > 0 && buf[0]! < 4) {
        if (isBindingRequestHeader(buf) && !this.#checkOnKnownFlow(s, ep, buf)) return;
      } else if (s.current !== ep) {
        // Latch: downstream follows the endpoint the client sends media from.
        s.current = ep;
      }
      s.packetsUp++;
      s.bytesUp += buf.length;
      c.packetsToBackends++;
      c.bytesToBackends += buf.length;
      s.upstream.send(buf);
      return;
    }
    // Still probing: only further checks (retransmits, new checks of the same pair) matter.
    if (!isBindingRequestHeader(buf)) {
      this.#drop(DropReason.ProbingNotStun);
      return;
    }
    const r = parseBindingRequest(buf, this.#view);
    if (r !== ParseResult.Ok) {
      this.#drop(PARSE_DROP[r]!);
      return;
    }
    if (!usernameEquals(buf, this.#view, s.usernameBytes)) {
      // The client changed credentials while we were still routing its first ones: start over.
      this.#closeSession(s, 'restart');
      this.#newFlow(buf, address, port);
      return;
    }
    this.#probeRound(s, buf, now);
  }

  /**
   * A Binding Request on an established 5-tuple. Same ufrag pair: remember the transaction so the
   * response reaches this endpoint, and forward. Another server ufrag: an ICE restart (RFC 8445
   * §9): route it like a new flow; the session that wins takes this 5-tuple over. Returns false if
   * the datagram was consumed here.
   */
  #checkOnKnownFlow(s: Session, ep: ClientEndpoint, buf: Buffer): boolean {
    const r = parseBindingRequest(buf, this.#view);
    if (r !== ParseResult.Ok) return true; // Not a well-formed check: the backend decides.
    if (usernameEquals(buf, this.#view, s.usernameBytes)) {
      s.rememberTransaction(buf, ep);
      return true;
    }
    const view = this.#view;
    const serverUfragLength = view.colon - view.start;
    if (
      serverUfragLength === s.serverUfrag.length &&
      buf.toString('latin1', view.start, view.colon) === s.serverUfrag
    ) {
      // Only the client side changed: the same backend agent decides (it verifies integrity).
      s.rememberTransaction(buf, ep);
      return true;
    }
    const restart = s.restartOf;
    if (restart !== undefined && restart.state === SessionState.Probing) {
      if (usernameEquals(buf, view, restart.usernameBytes)) {
        this.#probeRound(restart, buf, this.#clock());
        return false;
      }
      this.#closeSession(restart, 'restart');
    }
    const next = this.#route(buf, ep.address, ep.port, ep);
    if (next !== undefined) s.restartOf = next;
    return false;
  }

  #newFlow(buf: Buffer, address: string, port: number): void {
    const h = this.#hooks;
    if (h.divert?.(buf, address, port)) return;
    if (buf.length === 0 || buf[0]! > 3) {
      const cls = buf.length === 0 ? PacketClass.Other : classifyFirstByte(buf[0]!);
      this.#drop(
        cls === PacketClass.Dtls
          ? DropReason.UnknownFlowDtls
          : cls === PacketClass.RtpRtcp
            ? DropReason.UnknownFlowRtp
            : DropReason.UnknownFlowOther,
      );
      return;
    }
    const r = parseBindingRequest(buf, this.#view);
    if (r !== ParseResult.Ok) {
      this.#drop(PARSE_DROP[r]!);
      return;
    }
    if (h.directory !== undefined) {
      const v = this.#view;
      const owner = h.directory.ownerOf(buf.toString('latin1', v.start, v.end));
      if (owner >= 0) {
        h.handoff!(buf, address, port, owner);
        return;
      }
    }
    this.#route(buf, address, port, undefined);
  }

  /**
   * Decides where the first check of a flow goes (DESIGN.md, "Data path" §3): a live session with
   * the same ufrag pair, else a directed probe (prefix token, then learned ufrag), else a fan-out
   * probe. Returns the new probing session, if one was made. `restartOf` is the endpoint of an
   * established session whose client started an ICE restart.
   */
  #route(
    buf: Buffer,
    address: string,
    port: number,
    restartOf: ClientEndpoint | undefined,
  ): Session | undefined {
    const view = this.#view;
    const username = buf.toString('latin1', view.start, view.end);
    const now = this.#clock();

    // (a) Same ufrag pair as a live session: NAT rebinding or another candidate of the same agent.
    const live = this.table.bySessionUsername(username);
    if (live !== undefined && live.state === SessionState.Established && restartOf === undefined) {
      const ep = new ClientEndpoint(live, address, port, now);
      live.rememberTransaction(buf, ep);
      live.packetsUp++;
      live.bytesUp += buf.length;
      this.counters.packetsToBackends++;
      this.counters.bytesToBackends += buf.length;
      live.upstream.send(buf);
      return undefined;
    }

    if (!this.#accepting) return this.#dropU(DropReason.Draining);
    const colon = view.colon - view.start;
    const serverUfrag = username.slice(0, colon);
    if (this.negative.has(serverUfrag)) return this.#dropU(DropReason.UnknownUfrag);
    const candidates = this.#backends.probeCandidates();
    if (candidates.length === 0) return this.#dropU(DropReason.NoBackends);
    const { slots, sources } = this.#hooks;
    if (slots !== undefined ? !slots.tryAcquire() : this.table.size >= this.#opt.maxSessions)
      return this.#dropU(DropReason.SessionLimit);
    const pending = this.#pendingBySource.get(address) ?? 0;
    if (sources !== undefined ? !sources.tryAcquire(address) : pending >= this.#opt.maxPendingPerSource) {
      slots?.release();
      return this.#dropU(DropReason.SourceLimit);
    }

    let directed: Backend | undefined = this.#backends.byUfragPrefix(serverUfrag);
    let outcome: RouteOutcome = 'prefix';
    if (directed === undefined) {
      const name = this.learned.get(serverUfrag);
      if (name !== undefined) {
        const b = this.#backends.get(name);
        if (b !== undefined && b.state !== 'unready') {
          directed = b;
          outcome = 'learned';
        }
      }
    }
    if (directed === undefined) outcome = 'probe';
    // Budget before a socket is opened: a flood must cost us as little as possible.
    if (!this.#budget.take(now, directed !== undefined ? 1 : candidates.length)) {
      this.#unreserve(address);
      return this.#dropU(DropReason.ProbeBudget);
    }

    let localPort = 0;
    if (this.#ports !== undefined) {
      localPort = this.#ports.acquire(now);
      if (localPort === NO_PORT) {
        this.#unreserve(address);
        return this.#dropU(DropReason.PortsExhausted);
      }
    }
    const family = (directed ?? candidates[0]!).address.includes(':') ? 6 : 4;
    const id = this.#nextId++;
    let session!: Session;
    const upstream = this.#t.openUpstream(family, localPort, {
      onMessage: (b, a, p) => this.#onUpstreamDatagram(session, b, a, p),
      onError: (err) => this.#onUpstreamError(session, err),
    });
    session = new Session(
      id,
      username,
      colon,
      Buffer.from(username, 'latin1'),
      upstream,
      { address, port },
      now,
    );
    session.routedBy = restartOf !== undefined ? 'restart' : outcome;
    session.directed = directed !== undefined;
    session.candidates = directed !== undefined ? [directed] : candidates.slice();
    if (sources === undefined) this.#pendingBySource.set(address, pending + 1);
    this.table.sessions.add(session);
    if (restartOf === undefined) this.#joinEndpoint(session, session.current);
    else session.current = restartOf; // Same object: it moves when the restart is won.
    this.#sendProbes(session, buf);
    return session;
  }

  #probeRound(s: Session, buf: Buffer, now: number): void {
    if (s.probeRounds >= this.#opt.probeRounds) {
      this.#drop(DropReason.ProbeRounds);
      return;
    }
    if (s.directed) {
      // The directed guess stayed silent until the client retransmitted (JVB drops checks for
      // ufrags it does not know): fan out to every candidate from now on.
      s.directed = false;
      if (s.routedBy !== 'restart') s.routedBy = 'probe';
      s.candidates = this.#backends.probeCandidates().slice();
    }
    let n = 0;
    for (const b of s.candidates) if (!s.excluded.has(b) && !b.removed) n++;
    if (n === 0) return;
    if (!this.#budget.take(now, n)) {
      this.#drop(DropReason.ProbeBudget);
      return;
    }
    this.#sendProbes(s, buf);
  }

  /** One probe round: the client's own datagram to each remaining candidate (budget already taken). */
  #sendProbes(s: Session, buf: Buffer): void {
    s.probeRounds++;
    s.rememberTransaction(buf, s.current);
    const c = this.counters;
    for (const b of s.candidates) {
      if (s.excluded.has(b) || b.removed) continue;
      s.upstream.sendTo(buf, b.port, b.address);
      c.probesSent++;
      c.packetsToBackends++;
      c.bytesToBackends += buf.length;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Backend → client

  #onUpstreamDatagram(s: Session, buf: Buffer, address: string, port: number): void {
    const c = this.counters;
    c.packetsFromBackends++;
    c.bytesFromBackends += buf.length;
    if (s.state === SessionState.Established) {
      const b = s.backend!;
      // The socket is connected to the backend once established, so the kernel already filters
      // other sources; this check covers the moment before connect() completes.
      if (port !== b.port || address !== b.address) {
        // Usually a losing candidate's late answer to the fan-out, before connect() took effect.
        this.#drop(
          this.#isBackend(address, port) ? DropReason.ProbeStale : DropReason.UpstreamUnexpectedSource,
        );
        return;
      }
      let to = s.current;
      if (buf.length >= 20 && buf[0] === 0x01) {
        const kind = bindingResponseKind(buf);
        if (kind !== 0) {
          const i = s.findTransaction(buf);
          if (i >= 0) {
            const ep = s.txEndpoints[i]!;
            s.forgetTransaction(i);
            if (!ep.joined && ep.session === s) {
              if (kind === 1) this.#adoptEndpoint(s, ep);
              else c.routes[RouteCounter.RebindRefused]!++;
            }
            to = ep;
          }
        }
      }
      s.packetsDown++;
      s.bytesDown += buf.length;
      c.packetsToClients++;
      c.bytesToClients += buf.length;
      this.#t.sendToClient(buf, to.port, to.address);
      return;
    }
    if (s.state !== SessionState.Probing) {
      this.#drop(DropReason.UpstreamNoSession);
      return;
    }
    let from: Backend | undefined;
    for (const b of s.candidates) {
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
      this.#win(s, from, buf);
      return;
    }
    // An error (401 from libwebrtc for an unknown ufrag, 400, 487, …) means "not mine".
    s.excluded.add(from);
    this.#drop(DropReason.ProbeNotMine);
    if (s.directed) {
      // The directed guess was wrong (a random ufrag can start with a token; a learned entry can
      // be stale): fan the same request out to the other candidates at once.
      s.directed = false;
      s.routedBy = s.routedBy === 'restart' ? 'restart' : 'probe';
      s.candidates = this.#backends.probeCandidates().slice();
      let n = 0;
      for (const b of s.candidates) if (!s.excluded.has(b)) n++;
      if (n > 0 && this.#budget.take(this.#clock(), n)) {
        s.probeRounds--; // The fall-back continues the same round.
        this.#sendProbes(s, s.txRequests[i]! as Buffer);
        return;
      }
    }
    let left = 0;
    for (const b of s.candidates) if (!s.excluded.has(b) && !b.removed) left++;
    if (left === 0) this.#failProbe(s);
  }

  #win(s: Session, owner: Backend, response: Buffer): void {
    const now = this.#clock();
    const c = this.counters;
    this.#decPending(s);
    s.state = SessionState.Established;
    s.backend = owner;
    s.candidates = [];
    s.excluded.clear();
    owner.sessions.add(s);
    s.upstream.connect(owner.port, owner.address);
    this.learned.set(s.serverUfrag, owner.name);
    this.table.indexUsername(s);
    this.#hooks.listener?.established?.(s);
    c.sessionsOpened++;
    const route =
      s.routedBy === 'prefix'
        ? RouteCounter.Prefix
        : s.routedBy === 'learned'
          ? RouteCounter.Learned
          : s.routedBy === 'restart'
            ? RouteCounter.Restart
            : RouteCounter.ProbeWon;
    c.routes[route]!++;
    this.#onRouted?.(now - s.createdAt, ROUTE_LABELS[route]!);
    const ep = s.current;
    if (!ep.joined || ep.session !== s) this.#adoptEndpoint(s, ep);
    this.#log.info(
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
    c.packetsToClients++;
    c.bytesToClients += response.length;
    s.packetsDown++;
    s.bytesDown += response.length;
    this.#t.sendToClient(response, ep.port, ep.address);
  }

  #failProbe(s: Session): void {
    this.counters.routes[RouteCounter.ProbeFailed]!++;
    this.negative.set(s.serverUfrag, true);
    if (this.#debug)
      this.#log.debug({ serverUfrag: s.serverUfrag, rounds: s.probeRounds }, 'no backend owns ufrag');
    this.#closeSession(s, 'probe_failed');
  }

  #onUpstreamError(s: Session, err: NodeJS.ErrnoException): void {
    // ICMP port unreachable on a connected socket surfaces as ECONNREFUSED (TESTBED.md): the
    // backend may be restarting. Keep the session; idle expiry or discovery will end it.
    if (err.code === 'ECONNREFUSED') return;
    this.#log.warn({ session: s.id, err: err.message, code: err.code }, 'upstream socket error');
    this.#closeSession(s, 'upstream_error');
  }

  // ---------------------------------------------------------------------------------------------
  // Session bookkeeping

  /**
   * A client endpoint joins `s` (first check won, rebinding or another candidate confirmed by the
   * backend's success, or an ICE restart won). It becomes the current downstream target.
   */
  #adoptEndpoint(s: Session, ep: ClientEndpoint): void {
    const existing = this.table.lookup(ep.address, ep.port);
    if (existing !== undefined && existing !== ep) {
      // The 5-tuple belonged to another session (ICE restart, or a stale entry): it leaves there.
      this.#detachEndpoint(existing);
    }
    if (ep.session !== s) {
      // An ICE restart won: the endpoint leaves its old session, which ends if it was the last one.
      const old = ep.session;
      if (old.restartOf === s) old.restartOf = undefined;
      this.#removeFromSession(ep);
      ep.session = s;
      if (old.endpoints.length === 0) this.#closeSession(old, 'restart');
    }
    if (!s.endpoints.includes(ep)) s.endpoints.push(ep);
    if (!ep.joined) {
      this.table.addEndpoint(ep);
      if (s.state === SessionState.Established && s.endpoints.length > 1)
        this.counters.routes[RouteCounter.Rebind]!++;
    }
    s.current = ep;
  }

  #joinEndpoint(s: Session, ep: ClientEndpoint): void {
    s.endpoints.push(ep);
    this.table.addEndpoint(ep);
  }

  /** Takes an endpoint out of its session; a session left without endpoints ends. */
  #detachEndpoint(ep: ClientEndpoint): void {
    const old = ep.session;
    this.table.removeEndpoint(ep);
    this.#removeFromSession(ep);
    if (old.endpoints.length === 0 && old.state !== SessionState.Closed) this.#closeSession(old, 'restart');
  }

  #removeFromSession(ep: ClientEndpoint): void {
    const s = ep.session;
    const i = s.endpoints.indexOf(ep);
    if (i >= 0) s.endpoints.splice(i, 1);
    if (s.current === ep && s.endpoints.length > 0) s.current = s.endpoints[s.endpoints.length - 1]!;
  }

  #closeSession(s: Session, reason: CloseReason): void {
    if (s.state === SessionState.Closed) return;
    const wasEstablished = s.state === SessionState.Established;
    if (s.state === SessionState.Probing) this.#decPending(s);
    s.state = SessionState.Closed;
    for (const ep of s.endpoints) this.table.removeEndpoint(ep);
    s.endpoints.length = 0;
    this.table.unindexUsername(s);
    this.table.sessions.delete(s);
    s.backend?.sessions.delete(s);
    if (s.restartOf !== undefined) this.#closeSession(s.restartOf, reason);
    s.upstream.close();
    const now = this.#clock();
    if (this.#ports !== undefined && s.upstream.localPort > 0) this.#ports.release(s.upstream.localPort, now);
    this.counters.closed[CLOSE_REASONS.indexOf(reason)]!++;
    this.#hooks.slots?.release();
    this.#hooks.listener?.closed?.(s, reason, wasEstablished);
    if (wasEstablished) {
      this.#log.info(
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
    }
  }

  /** TEMP (worker hooks): gives back the shared slot and share taken by a flow that was refused. */
  #unreserve(address: string): void {
    this.#hooks.slots?.release();
    this.#hooks.sources?.release(address);
  }

  #decPending(s: Session): void {
    const addr = s.current.address;
    if (this.#hooks.sources !== undefined) {
      this.#hooks.sources.release(addr);
      return;
    }
    const n = (this.#pendingBySource.get(addr) ?? 1) - 1;
    if (n <= 0) this.#pendingBySource.delete(addr);
    else this.#pendingBySource.set(addr, n);
  }

  /**
   * Periodic housekeeping (call every few hundred ms): probe timeouts, idle sessions, idle extra
   * endpoints. O(sessions) per call.
   */
  sweep(): void {
    const now = this.#clock();
    const idle = this.#opt.idleTimeoutMs;
    for (const s of this.table.sessions) {
      if (s.state === SessionState.Probing) {
        if (now - s.createdAt >= this.#opt.probeTimeoutMs) this.#failProbe(s);
        continue;
      }
      if (now - s.lastClientAt >= idle) {
        this.#closeSession(s, 'idle');
        continue;
      }
      if (s.endpoints.length > 1) {
        for (let i = s.endpoints.length - 1; i >= 0; i--) {
          const ep = s.endpoints[i]!;
          if (now - ep.lastSeen >= idle) {
            this.table.removeEndpoint(ep);
            this.#removeFromSession(ep);
          }
        }
      }
    }
  }

  /** Applies a discovery snapshot. Sessions of backends that left end; the negative cache clears. */
  updateBackends(specs: readonly BackendSpec[]): void {
    const changes = this.#backends.update(specs);
    for (const b of changes.removed) {
      for (const s of [...b.sessions]) this.#closeSession(s, 'backend_gone');
    }
    if (changes.added.length > 0 || changes.changed.length > 0) this.negative.clear();
    if (changes.added.length + changes.removed.length + changes.changed.length > 0) {
      this.#log.info(
        {
          added: changes.added.map((b) => `${b.name}=${b.address}:${b.port}(${b.state})`),
          removed: changes.removed.map((b) => b.name),
          changed: changes.changed.map((b) => `${b.name}(${b.state})`),
          total: this.#backends.size,
        },
        'backends updated',
      );
    }
    if (this.#backends.tokenCollisions.length > 0) {
      this.#log.warn(
        { pairs: this.#backends.tokenCollisions },
        'backends share a prefix token; probing decides',
      );
    }
  }

  /** Ends every session (shutdown). */
  closeAll(reason: CloseReason = 'shutdown'): void {
    for (const s of [...this.table.sessions]) this.#closeSession(s, reason);
  }

  #isBackend(address: string, port: number): boolean {
    for (const b of this.#backends.all()) if (b.port === port && b.address === address) return true;
    return false;
  }

  #drop(reason: DropReason): void {
    this.counters.drops[reason]!++;
  }

  #dropU(reason: DropReason): undefined {
    this.counters.drops[reason]!++;
    return undefined;
  }
}

const PARSE_DROP: DropReason[] = [];
PARSE_DROP[ParseResult.Truncated] = DropReason.StunTruncated;
PARSE_DROP[ParseResult.NotStun] = DropReason.StunMalformed;
PARSE_DROP[ParseResult.BadLength] = DropReason.StunMalformed;
PARSE_DROP[ParseResult.BadAttribute] = DropReason.StunBadAttribute;
PARSE_DROP[ParseResult.NotBindingRequest] = DropReason.NotBindingRequest;
PARSE_DROP[ParseResult.NoUsername] = DropReason.NoUsername;
PARSE_DROP[ParseResult.BadUsername] = DropReason.BadUsername;
PARSE_DROP[ParseResult.NoIntegrity] = DropReason.NoIntegrity;
PARSE_DROP[ParseResult.BadFingerprint] = DropReason.BadFingerprint;
