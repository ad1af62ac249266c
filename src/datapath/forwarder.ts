import type { Logger } from 'pino';
import type { Backend, BackendTable } from '../backends/backend-table.ts';
import type { Counters } from '../defs/counters.ts';
import type {
  Clock,
  FlowHandoff,
  PeerRoute,
  PeerRouting,
  Transport,
  UpstreamHandler,
} from '../defs/interfaces.ts';
import { DropReason, RouteCounter } from '../defs/reasons.ts';
import { Hold } from '../session/join-waits.ts';
import type { SessionRegistry } from '../session/registry.ts';
import { type ClientEndpoint, type Session, SessionState } from '../session/session.ts';
import { classifyFirstByte, PacketClass } from '../stun/demux.ts';
import { hashBytes } from '../stun/hash.ts';
import {
  bindingResponseKind,
  isBindingRequestHeader,
  newUsernameView,
  ParseResult,
  parseBindingRequest,
  usernameEquals,
} from '../stun/parse.ts';
import type { Router } from './router.ts';
import { sendToEndpoint } from './to-client.ts';

/**
 * The forwarder: the two hot paths (docs/architecture.md, "Data path"). A datagram on a known
 * client 5-tuple of an established session goes out of that session's upstream socket; a datagram
 * from the owning backend goes out of the listening socket to the session's current endpoint (a
 * STUN response: to the endpoint that sent the request). Each is two Map lookups or none, a few
 * field writes and one send: no exceptions, no logging, no allocation of our own.
 *
 * Everything rarer — first checks, probing, rebinding, ICE restarts — goes to the router.
 */

/**
 * The handler of one session's upstream socket: the socket layer calls it, and it calls the
 * forwarder with the session, so a backend's datagram goes from the socket to the forwarder in
 * one step (docs/architecture.md, "The walk of a first check").
 */
class UpstreamLink implements UpstreamHandler {
  readonly #f: Forwarder;
  readonly #s: Session;
  constructor(f: Forwarder, s: Session) {
    this.#f = f;
    this.#s = s;
  }
  onMessage(buf: Buffer, address: string, port: number): void {
    this.#f.onUpstreamDatagram(this.#s, buf, address, port);
  }
  onError(err: NodeJS.ErrnoException): void {
    this.#f.onUpstreamError(this.#s, err);
  }
}

export interface ForwarderDeps {
  readonly registry: SessionRegistry;
  readonly router: Router;
  readonly backends: BackendTable;
  readonly transport: Transport;
  readonly counters: Counters;
  readonly clock: Clock;
  readonly log: Logger;
  /** A pod's other workers (docs/workers.md); undefined in a single process. */
  readonly handoff?: FlowHandoff | undefined;
  /** The other replicas of the tier (docs/peers.md); undefined without `--peers`. */
  readonly peers?: PeerRouting | undefined;
}

export class Forwarder {
  readonly #d: ForwarderDeps;
  readonly #registry: SessionRegistry;
  readonly #c: Counters;
  readonly #view = newUsernameView();

  constructor(deps: ForwarderDeps) {
    this.#d = deps;
    this.#registry = deps.registry;
    this.#c = deps.counters;
  }

  // ---------------------------------------------------------------------------------------------
  // Client → backend

  onClientDatagram(buf: Buffer, address: string, port: number): void {
    const c = this.#c;
    c.packetsFromClients++;
    c.bytesFromClients += buf.length;
    this.#fromClient(buf, address, port, undefined);
  }

  /**
   * A datagram the peer layer held while it asked the other replicas about its 5-tuple, and none
   * owns it: handled as if there were no peers (counted when it arrived; docs/peers.md).
   */
  replay(buf: Buffer, address: string, port: number): void {
    this.#fromClient(buf, address, port, undefined);
  }

  /**
   * A client datagram that reached this replica, its session's owner, through the peer `via`
   * (docs/peers.md, "Owner"). False if it is a check that names no live session here: the route
   * leads nowhere, and the peer layer ends it.
   */
  onTunneledDatagram(buf: Buffer, address: string, port: number, via: PeerRoute): boolean {
    return this.#fromClient(buf, address, port, via);
  }

  /** `via`: the peer the datagram came through, undefined for the public socket. */
  #fromClient(buf: Buffer, address: string, port: number, via: PeerRoute | undefined): boolean {
    const c = this.#c;
    const ep = this.#registry.lookup(address, port);
    if (ep === undefined) return this.#newFlow(buf, address, port, via);
    if (ep.asking) {
      // The peers are asked whose a check on this 5-tuple is (#checkOnKnownFlow): what follows
      // waits in that round, and goes into this session only if no peer owns the 5-tuple.
      if (this.#d.peers?.divert(buf, address, port)) return true;
      this.#registry.setAsking(ep, false);
    }
    // The balancer sent the flow another way (another replica, or back here): downstream follows.
    if (ep.via !== via) this.#registry.reroute(ep, via);
    const s = ep.session;
    const now = this.#d.clock();
    if (s.state === SessionState.Established) {
      if (buf.length > 0 && buf[0]! < 4) {
        if (isBindingRequestHeader(buf)) {
          const k = this.#checkOnKnownFlow(s, ep, buf);
          if (k !== Check.Forward) return k === Check.Consumed;
        }
      } else if (s.current !== ep) {
        // Latch: downstream follows the endpoint the client sends media from.
        this.#registry.latch(s, ep);
      }
      this.#registry.noteUp(s, ep, buf.length, now);
      c.packetsToBackends++;
      c.bytesToBackends += buf.length;
      s.upstream.send(buf);
      return true;
    }
    // Still probing: only further checks (retransmits, new checks of the same pair) matter.
    if (!isBindingRequestHeader(buf)) {
      this.#drop(DropReason.ProbingNotStun);
      return true;
    }
    const view = this.#view;
    if (!this.#parsed(buf)) return true;
    if (!usernameEquals(buf, view, s.usernameBytes)) {
      // The client changed credentials while we were still routing its first ones: start over.
      // (A flood that reuses its source ports does this with every datagram: hence a reason of
      // its own, not 'restart', which counts ICE restarts of established sessions.)
      this.#registry.close(s, 'superseded');
      if (via !== undefined) return this.#d.router.routeTunneled(buf, view, address, port, via);
      this.#d.router.route(buf, view, address, port, undefined);
      return true;
    }
    this.#d.router.round(s, buf, now);
    return true;
  }

  /**
   * A Binding Request on an established 5-tuple. Same ufrag pair, or only the client ufrag
   * changed: remember the transaction so the response reaches this endpoint, and forward (the
   * backend verifies integrity). Another server ufrag: an ICE restart (RFC 8445 §9), for the
   * router. Says whether the datagram goes on to the backend, was consumed here, or (through a
   * peer) leads nowhere.
   */
  #checkOnKnownFlow(s: Session, ep: ClientEndpoint, buf: Buffer): Check {
    const view = this.#view;
    const r = parseBindingRequest(buf, view);
    if (r !== ParseResult.Ok) return Check.Forward; // Not a well-formed check: the backend decides.
    if (
      usernameEquals(buf, view, s.usernameBytes) ||
      sameServerUfrag(buf, view.start, view.colon, s.serverUfrag)
    ) {
      this.#registry.remember(s, buf, ep);
      return Check.Forward;
    }
    const p = this.#d.peers;
    if (
      p !== undefined &&
      ep.via === undefined &&
      this.#registry.findLive(buf, view, hashBytes(buf, view.start, view.end)) === undefined &&
      p.ask(buf, ep.address, ep.port, view)
    ) {
      this.#registry.setAsking(ep, true);
      // Another server ufrag on a known 5-tuple, naming no session here: an ICE restart — or a
      // rebinding of another replica's session onto a port a NAT took from one of ours (a NAT that
      // lost its mappings hands the ports out again). The peers are asked by ufrag pair first; if
      // one owns it, the 5-tuple leaves its session here (ReceiverHost.claimed) and follows the
      // tunnel; if none does, the check comes back (negative now) and is this session's restart.
      return Check.Consumed;
    }
    if (ep.via !== undefined && !this.#d.router.accepting) {
      // A draining owner opens no session, and its peers no longer name it the owner of a restart
      // (datapath.ts, sessionOfFlow): the replica that receives the flow routes it.
      this.#drop(DropReason.Draining);
      return Check.DeadEnd;
    }
    this.#d.router.restart(s, ep, buf, view);
    return Check.Consumed;
  }

  #newFlow(buf: Buffer, address: string, port: number, via: PeerRoute | undefined): boolean {
    // Media of a new 5-tuple whose check is on its way to the backend (a NAT rebinding, directly
    // or through a peer): held until the answer (src/session/join-waits.ts).
    if (buf.length > 0 && buf[0]! > 3 && this.#heldForJoin(buf, address, port)) return true;
    if (via !== undefined) return this.#tunneledNewFlow(buf, address, port, via);
    const h = this.#d.handoff;
    // Before the not-STUN drop: media on a 5-tuple whose first check went to another worker
    // follows it there (docs/workers.md, "Hand-off"); media of a flow that another replica owns
    // goes through its tunnel, or waits for the answer (docs/peers.md, "Receiver").
    if (h?.divert(buf, address, port)) return true;
    const p = this.#d.peers;
    if (p?.divert(buf, address, port)) return true;
    if (buf.length === 0 || buf[0]! > 3) {
      const cls = buf.length === 0 ? PacketClass.Other : classifyFirstByte(buf[0]!);
      // Media or DTLS of an unknown 5-tuple may be a call that the balancer moved here.
      const media = cls === PacketClass.RtpRtcp || cls === PacketClass.Dtls;
      if (media && p?.ask(buf, address, port, undefined)) return true;
      this.#drop(UNKNOWN_FLOW_DROP[cls]!);
      return true;
    }
    const r = parseBindingRequest(buf, this.#view);
    if (r !== ParseResult.Ok) {
      // A client's answer to its backend's consent check: STUN, but no first check.
      if (r === ParseResult.NotBindingRequest && p?.ask(buf, address, port, undefined)) return true;
      this.#drop(PARSE_DROP[r]!);
      return true;
    }
    if (h !== undefined) {
      // Another worker holds a live session of this ufrag pair (NAT rebinding, another candidate
      // whose 5-tuple the kernel hashed here): it routes the check, through its own session.
      const owner = h.ownerOf(buf, this.#view);
      if (owner >= 0) {
        h.handoff(buf, address, port, owner);
        return true;
      }
    }
    // Another replica may hold its session (by 5-tuple, or by ufrag pair): asked before routing —
    // unless a live session of this ufrag pair is ours (a NAT rebinding or another candidate that
    // stayed on this replica): then no other replica can own the flow, and a query round would
    // only delay the join while the client's media on its new 5-tuple is dropped (docs/peers.md,
    // "Receiver").
    if (p !== undefined) {
      const view = this.#view;
      const ours = this.#registry.findLive(buf, view, hashBytes(buf, view.start, view.end));
      if (ours === undefined && p.ask(buf, address, port, view)) return true;
    }
    this.#d.router.route(buf, this.#view, address, port, undefined);
    return true;
  }

  /**
   * A datagram of an unknown 5-tuple through a peer: never asked about, never handed to another
   * worker (no loops): a check of a live session's ufrag pair is that session's rebinding, anything
   * else is dropped by reason. False when a check names no session here.
   */
  #tunneledNewFlow(buf: Buffer, address: string, port: number, via: PeerRoute): boolean {
    if (buf.length === 0 || buf[0]! > 3) {
      // Media before its 5-tuple joined (a rebinding's check is on its way to the backend).
      const cls = buf.length === 0 ? PacketClass.Other : classifyFirstByte(buf[0]!);
      this.#drop(UNKNOWN_FLOW_DROP[cls]!);
      return true;
    }
    if (!this.#parsed(buf)) return true;
    return this.#d.router.routeTunneled(buf, this.#view, address, port, via);
  }

  #heldForJoin(buf: Buffer, address: string, port: number): boolean {
    const h = this.#registry.holdForJoin(address, port, buf, this.#d.clock());
    if (h === Hold.Full) this.#drop(DropReason.JoinUnconfirmed);
    return h !== Hold.NotWaiting;
  }

  /** Parses a check a flow may start or continue with into the view; drops it by reason if unfit. */
  #parsed(buf: Buffer): boolean {
    const r = parseBindingRequest(buf, this.#view);
    if (r === ParseResult.Ok) return true;
    this.#drop(PARSE_DROP[r]!);
    return false;
  }

  // ---------------------------------------------------------------------------------------------
  // Backend → client

  /** The handler of a new session's upstream socket (the router opens the socket with it). */
  upstreamHandler(s: Session): UpstreamHandler {
    return new UpstreamLink(this, s);
  }

  onUpstreamError(s: Session, err: NodeJS.ErrnoException): void {
    // A connected UDP socket reports ICMP port unreachable as ECONNREFUSED: the backend may be
    // restarting. Keep the session; idle expiry or discovery will end it.
    if (err.code === 'ECONNREFUSED') return;
    this.#d.log.warn({ session: s.id, err: err.message, code: err.code }, 'upstream socket error');
    this.#registry.close(s, 'upstream_error');
  }

  onUpstreamDatagram(s: Session, buf: Buffer, address: string, port: number): void {
    const c = this.#c;
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
            this.#registry.forget(s, i);
            // A retransmitted check from a new 5-tuple leaves one endpoint object per copy in the
            // ring: the first answer joins the 5-tuple, a later one finds it joined already.
            if (!ep.joined && ep.session === s && this.#registry.lookup(ep.address, ep.port)?.session !== s) {
              if (kind === 1) {
                this.#registry.join(s, ep);
                c.routes[RouteCounter.Rebind]!++;
                const held = this.#registry.endJoinWait(ep.address, ep.port, true);
                if (held !== undefined) this.#sendHeld(s, ep, held);
              } else {
                c.routes[RouteCounter.RebindRefused]!++;
                this.#registry.endJoinWait(ep.address, ep.port, false);
              }
            }
            to = ep;
          }
        }
      }
      if (!to.joined && to === s.current) {
        // The session's last 5-tuple left it (registry.ts, #adopt and disown): nowhere to send.
        this.#drop(DropReason.NoClientEndpoint);
        return;
      }
      this.#registry.noteDown(s, buf.length);
      sendToEndpoint(to, buf, this.#d.transport, c);
      return;
    }
    if (s.state !== SessionState.Probing) {
      this.#drop(DropReason.UpstreamNoSession);
      return;
    }
    this.#d.router.probeAnswer(s, buf, address, port);
  }

  /** The media a joined 5-tuple sent while its check was answered, in order, upstream. */
  #sendHeld(s: Session, ep: ClientEndpoint, held: readonly Buffer[]): void {
    const c = this.#c;
    const now = this.#d.clock();
    for (const buf of held) {
      this.#registry.noteUp(s, ep, buf.length, now);
      c.packetsToBackends++;
      c.bytesToBackends += buf.length;
      s.upstream.send(buf);
    }
  }

  #isBackend(address: string, port: number): boolean {
    for (const b of this.#d.backends.all() as Iterable<Backend>)
      if (b.port === port && b.address === address) return true;
    return false;
  }

  #drop(reason: DropReason): void {
    this.#c.drops[reason]!++;
  }
}

/** The server ufrag at buf[start..colon) equals `ufrag` (latin1), compared without decoding. */
function sameServerUfrag(buf: Uint8Array, start: number, colon: number, ufrag: string): boolean {
  if (colon - start !== ufrag.length) return false;
  for (let i = 0; i < ufrag.length; i++) if (buf[start + i] !== ufrag.charCodeAt(i)) return false;
  return true;
}

/** What becomes of a check on a known 5-tuple (Forwarder.#checkOnKnownFlow). */
const Check = { Forward: 0, Consumed: 1, DeadEnd: 2 } as const;
type Check = (typeof Check)[keyof typeof Check];

/** Non-STUN that cannot start a flow, dropped by its RFC 7983 class. */
const UNKNOWN_FLOW_DROP: DropReason[] = Object.values(PacketClass).map(() => DropReason.UnknownFlowOther);
UNKNOWN_FLOW_DROP[PacketClass.Dtls] = DropReason.UnknownFlowDtls;
UNKNOWN_FLOW_DROP[PacketClass.RtpRtcp] = DropReason.UnknownFlowRtp;

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
