import type {
  BackendRef,
  BudgetClass,
  FlowEndpoint,
  FlowSession,
  PeerRoute,
  Upstream,
} from '../defs/interfaces.ts';
import type { RouteOutcome } from '../defs/reasons.ts';
import { sameTransaction } from '../stun/parse.ts';

/**
 * One ICE session as the proxy sees it: a ufrag pair, the backend that owns it, and one upstream
 * socket (own local port) that the backend sees as the session's remote address for its whole life.
 *
 * The client side may have several 5-tuples ("client endpoints"): the original one, one after a NAT
 * rebinding, or several candidates of one ICE agent (host, server-reflexive, relayed) checking the
 * same server candidate. All of them share the one upstream socket, so the backend sees one remote
 * address and never answers 403 (ice4j #287: a new remote address ~3 s after ICE completed is
 * refused). A client endpoint joins a session only after the backend answered one of its checks
 * with a Binding success, i.e. after the backend verified MESSAGE-INTEGRITY, which the proxy cannot.
 * Downstream traffic goes to the endpoint that last sent media ("latching", as RTP proxies do), or
 * to the one that last joined; STUN responses go to the endpoint that sent the request.
 *
 * Who writes what (docs/architecture.md, "One owner of session state"): membership — state,
 * backend, endpoints, current, the indexes — only the session registry; the probe — only the
 * router; traffic accounting (last seen, packet counters) and the transaction ring — the registry's
 * `note*` methods, called by the forwarder. Everyone else reads.
 */

export const SessionState = {
  /** Owner unknown: the first check was sent to candidate backends; waiting for a success. */
  Probing: 0,
  /** Owner known; traffic flows. */
  Established: 1,
  Closed: 2,
} as const;
export type SessionState = (typeof SessionState)[keyof typeof SessionState];

export class ClientEndpoint implements FlowEndpoint {
  readonly address: string;
  readonly port: number;
  session: Session;
  lastSeen: number;
  /** True once it is in the 5-tuple index (a check from it was answered with a success). */
  joined = false;
  /**
   * Set while the peers are asked whether a check on this 5-tuple with another ufrag pair belongs
   * to one of their sessions (forwarder.ts, a NAT that handed this port to another client): its
   * datagrams wait in that round instead of going into this session. Written by the registry.
   */
  asking = false;
  /**
   * Set while the client's datagrams on this 5-tuple reach this replica through a peer: downstream
   * goes back through it (docs/peers.md, "Owner"). Written by the registry (`reroute`).
   */
  via: PeerRoute | undefined;

  constructor(session: Session, address: string, port: number, now: number, via?: PeerRoute) {
    this.session = session;
    this.address = address;
    this.port = port;
    this.lastSeen = now;
    this.via = via;
  }
}

/** How many outstanding client→backend transactions a session remembers (a small ring). */
export const TX_SLOTS = 8;

/**
 * Routing state of a flow whose owner is not known yet: the router's (src/datapath/probe.ts). The
 * registry reads only the budget class the flow was admitted under (whose pending count it holds).
 */
export interface ProbeState {
  readonly budget: BudgetClass;
}

export class Session implements FlowSession {
  readonly id: number;
  readonly username: string;
  readonly serverUfrag: string;
  /** USERNAME bytes, to recognise the same pair without decoding (ICE restarts change it). */
  readonly usernameBytes: Buffer;
  /** hashBytes() of the USERNAME: the ufrag-pair index key. */
  readonly usernameHash: number;
  /** hashBytes() of the server ufrag: the learned and negative cache key. */
  readonly serverUfragHash: number;
  readonly createdAt: number;
  /** The upstream port the registry took from the pool for it (0 without a pool: the kernel picks). */
  readonly poolPort: number;
  /**
   * Its upstream socket, opened by the router on `poolPort` right after the registry opened the
   * session (the socket's handler needs the session) and handed over with `registry.attach`.
   */
  upstream!: Upstream;
  /** Source address whose pending count this flow holds while it probes. */
  readonly source: string;
  state: SessionState = SessionState.Probing;
  backend: BackendRef | undefined;
  /** Endpoints in the 5-tuple index. */
  readonly endpoints: ClientEndpoint[] = [];
  /** Where downstream traffic goes. */
  current: ClientEndpoint;
  /** Last packet from any client endpoint (idle timeout). */
  lastClientAt: number;
  /** A backend answered a Binding success on this upstream port: it rests at release. */
  answered = false;
  routedBy: RouteOutcome = 'probe';
  /** Set while the owner is unknown. */
  probe: ProbeState | undefined;

  // Outstanding client transactions: request bytes (for the transaction id) and who sent them.
  readonly txRequests: (Uint8Array | undefined)[] = new Array(TX_SLOTS).fill(undefined);
  readonly txEndpoints: (ClientEndpoint | undefined)[] = new Array(TX_SLOTS).fill(undefined);
  txNext = 0;

  // Counters (exported per session in the close log).
  packetsUp = 0;
  packetsDown = 0;
  bytesUp = 0;
  bytesDown = 0;

  /** An ICE restart in progress for this session's endpoint: the session that probes the new ufrag. */
  restartOf: Session | undefined;
  /** The id of the session this one replaced by winning its ICE restart (-1: none). */
  replacedId = -1;

  constructor(
    id: number,
    username: string,
    colonIndex: number,
    hashes: { readonly username: number; readonly serverUfrag: number },
    poolPort: number,
    first: { address: string; port: number },
    now: number,
  ) {
    this.id = id;
    this.username = username;
    this.serverUfrag = username.slice(0, colonIndex);
    this.usernameBytes = Buffer.from(username, 'latin1');
    this.usernameHash = hashes.username;
    this.serverUfragHash = hashes.serverUfrag;
    this.poolPort = poolPort;
    this.createdAt = now;
    this.lastClientAt = now;
    this.source = first.address;
    this.current = new ClientEndpoint(this, first.address, first.port, now);
  }

  get clientUfrag(): string {
    return this.username.slice(this.serverUfrag.length + 1);
  }

  /** Index of the remembered request with the same transaction id as `response`, or -1. */
  findTransaction(response: Uint8Array): number {
    for (let i = 0; i < TX_SLOTS; i++) {
      const req = this.txRequests[i];
      if (req !== undefined && sameTransaction(req, response)) return i;
    }
    return -1;
  }
}
