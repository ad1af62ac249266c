import type { Logger } from 'pino';
import type { Backend, BackendTable } from '../backends/backend-table.ts';
import type { Counters } from '../defs/counters.ts';
import type { Clock, FlowHandoff, Transport, UpstreamHandler } from '../defs/interfaces.ts';
import { DropReason, RouteCounter } from '../defs/reasons.ts';
import type { SessionRegistry } from '../session/registry.ts';
import { type ClientEndpoint, type Session, SessionState } from '../session/session.ts';
import { classifyFirstByte, PacketClass } from '../stun/demux.ts';
import {
  bindingResponseKind,
  isBindingRequestHeader,
  newUsernameView,
  ParseResult,
  parseBindingRequest,
  usernameEquals,
} from '../stun/parse.ts';
import type { Router } from './router.ts';

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
    const ep = this.#registry.lookup(address, port);
    if (ep === undefined) {
      this.#newFlow(buf, address, port);
      return;
    }
    const s = ep.session;
    const now = this.#d.clock();
    if (s.state === SessionState.Established) {
      if (buf.length > 0 && buf[0]! < 4) {
        if (isBindingRequestHeader(buf) && !this.#checkOnKnownFlow(s, ep, buf)) return;
      } else if (s.current !== ep) {
        // Latch: downstream follows the endpoint the client sends media from.
        this.#registry.latch(s, ep);
      }
      this.#registry.noteUp(s, ep, buf.length, now);
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
    const view = this.#view;
    if (!this.#parsed(buf)) return;
    if (!usernameEquals(buf, view, s.usernameBytes)) {
      // The client changed credentials while we were still routing its first ones: start over.
      // (A flood that reuses its source ports does this with every datagram: hence a reason of
      // its own, not 'restart', which counts ICE restarts of established sessions.)
      this.#registry.close(s, 'superseded');
      this.#d.router.route(buf, view, address, port, undefined);
      return;
    }
    this.#d.router.round(s, buf, now);
  }

  /**
   * A Binding Request on an established 5-tuple. Same ufrag pair, or only the client ufrag
   * changed: remember the transaction so the response reaches this endpoint, and forward (the
   * backend verifies integrity). Another server ufrag: an ICE restart (RFC 8445 §9), for the
   * router. Returns false if the datagram was consumed here.
   */
  #checkOnKnownFlow(s: Session, ep: ClientEndpoint, buf: Buffer): boolean {
    const view = this.#view;
    const r = parseBindingRequest(buf, view);
    if (r !== ParseResult.Ok) return true; // Not a well-formed check: the backend decides.
    if (
      usernameEquals(buf, view, s.usernameBytes) ||
      sameServerUfrag(buf, view.start, view.colon, s.serverUfrag)
    ) {
      this.#registry.remember(s, buf, ep);
      return true;
    }
    this.#d.router.restart(s, ep, buf, view);
    return false;
  }

  #newFlow(buf: Buffer, address: string, port: number): void {
    const h = this.#d.handoff;
    // Before the not-STUN drop: media on a 5-tuple whose first check went to another worker
    // follows it there (docs/workers.md, "Hand-off").
    if (h?.divert(buf, address, port)) return;
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
    if (!this.#parsed(buf)) return;
    if (h !== undefined) {
      // Another worker holds a live session of this ufrag pair (NAT rebinding, another candidate
      // whose 5-tuple the kernel hashed here): it routes the check, through its own session.
      const owner = h.ownerOf(buf, this.#view);
      if (owner >= 0) {
        h.handoff(buf, address, port, owner);
        return;
      }
    }
    this.#d.router.route(buf, this.#view, address, port, undefined);
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
              } else c.routes[RouteCounter.RebindRefused]!++;
            }
            to = ep;
          }
        }
      }
      this.#registry.noteDown(s, buf.length);
      c.packetsToClients++;
      c.bytesToClients += buf.length;
      this.#d.transport.sendToClient(buf, to.port, to.address);
      return;
    }
    if (s.state !== SessionState.Probing) {
      this.#drop(DropReason.UpstreamNoSession);
      return;
    }
    this.#d.router.probeAnswer(s, buf, address, port);
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
