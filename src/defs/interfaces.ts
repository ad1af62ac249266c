import type { UsernameView } from '../stun/parse.ts';
import type { KernelCounts } from './kernel-counts.ts';
import type { CloseReason } from './reasons.ts';

/**
 * Every interface between the I/O-free data path and the outside, in one module
 * (docs/architecture.md, "Layers"): the socket layer (src/io/udp.ts, fakes in tests), the clock,
 * the backend set discovery hands in, the limits a pod's workers share (budgets, session slots,
 * fair shares), the hand-off to a pod's other workers (src/workers/handoff.ts), the flow events
 * that listeners hear (the kernel fast path, the workers' directory), and what the kernel fast
 * path asks of the data path and shows /metrics. Everything below the data path may import this
 * module; it imports only the STUN view and the other definitions.
 */

// ---------------------------------------------------------------------------------------------
// Time

/** Milliseconds on a monotonic clock; injected, so tests drive time without sleeping. */
export type Clock = () => number;

// ---------------------------------------------------------------------------------------------
// Sockets

/** Callbacks of one upstream socket: the forwarder's, for the session that holds the socket. */
export interface UpstreamHandler {
  onMessage(buf: Buffer, address: string, port: number): void;
  onError(err: NodeJS.ErrnoException): void;
}

/** One upstream socket, owned by one session: its local port is the address the backend sees. */
export interface Upstream {
  readonly localPort: number;
  /** Send to an explicit backend (probing). */
  sendTo(buf: Uint8Array, port: number, address: string): void;
  /** Send to the owning backend (after {@link Upstream.connect}). */
  send(buf: Uint8Array): void;
  /** Fix the socket to the owning backend: the kernel then filters other sources. */
  connect(port: number, address: string): void;
  /**
   * Ends this session's use of the socket. `clean`: no backend ever answered on it and it was
   * never connected, so the transport may keep the bound socket for the next flow on that port
   * (a flood of first checks then costs no socket churn; docs/architecture.md, "Admission").
   */
  close(clean?: boolean): void;
}

/** What the data path needs from the socket layer. */
export interface Transport {
  /** Sends from the public listening socket (replies always leave from the address clients use). */
  sendToClient(buf: Uint8Array, port: number, address: string): void;
  /** Opens an upstream socket bound to `localPort` (0 = any) for backends of this address family. */
  openUpstream(family: 4 | 6, localPort: number, handler: UpstreamHandler): Upstream;
}

// ---------------------------------------------------------------------------------------------
// Backends

/**
 * Lifecycle of a backend, from EndpointSlice conditions (discovery.k8s.io/v1):
 * - `ready`: takes new sessions and answers probes.
 * - `terminating`: serving + terminating; keeps its sessions and learned ufrags and still answers
 *   probes (a draining JVB keeps its conferences for hours): only the owner of a ufrag answers a
 *   probe with a Binding success, so probing it costs nothing wrong.
 * - `unready`: neither ready nor serving; keeps existing sessions, gets no new probes.
 * A backend missing from the snapshot is gone: its sessions close.
 */
export type BackendState = 'ready' | 'terminating' | 'unready';

/** One backend of a discovery snapshot (src/discovery); a snapshot is always the whole set. */
export interface BackendSpec {
  /** Stable identity: the pod name (targetRef), the static NAME, or the address for DNS. */
  readonly name: string;
  /** IP literal (v4 or v6). */
  readonly address: string;
  readonly port: number;
  readonly state: BackendState;
}

/** A backend as sessions and flow listeners see it (src/backends/backend-table.ts holds them). */
export interface BackendRef {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly state: BackendState;
  /** Set once the backend left the snapshot. */
  readonly removed: boolean;
}

// ---------------------------------------------------------------------------------------------
// Limits (one process keeps its own; a pod's workers share them: docs/workers.md)

/** The two probe budgets of admission (docs/architecture.md, "Admission"). */
export const BudgetClass = {
  /** A fan-out probe: one datagram to each candidate backend. */
  Fanout: 0,
  /** A directed probe (prefix token, learned ufrag, rebinding check): one datagram, one backend. */
  Directed: 1,
} as const;
export type BudgetClass = (typeof BudgetClass)[keyof typeof BudgetClass];

/** A budget of datagrams on an injected clock (a token bucket; shared by a pod's workers). */
export interface Budget {
  /** Takes `n` tokens if all are there; otherwise takes none and returns false. */
  take(now: number, n: number): boolean;
}

/** The global session cap; a pod's workers share one. */
export interface SessionSlots {
  tryAcquire(): boolean;
  release(): void;
}

/**
 * What admission needs from a fair-share table: src/admission/source-shares.ts in one process; a
 * pod's workers each pass their own, at 1/N of the shared budgets (docs/workers.md, "Shared limits").
 */
export interface Shares {
  /** Sources active in the last second. */
  readonly active: number;
  slotOf(address: string, now: number): number;
  take(slot: number, cls: BudgetClass, n: number, now: number): boolean;
  refund(slot: number, cls: BudgetClass, n: number): void;
  sweep(now: number): void;
}

// ---------------------------------------------------------------------------------------------
// A pod's other workers

/**
 * A pod's other workers, as the forwarder sees them (docs/workers.md): absent in a single process,
 * and then not even looked at. Asked only for datagrams on 5-tuples that no session of this worker
 * holds, so the established-flow path never reaches it.
 */
export interface FlowHandoff {
  /**
   * Any datagram on an unknown 5-tuple, before it is classified: true if the 5-tuple's first check
   * was handed to another worker (the datagram followed it there; consumed).
   */
  divert(buf: Buffer, address: string, port: number): boolean;
  /**
   * A parsed first check (`view`) on an unknown 5-tuple: the worker that owns a live session of
   * its ufrag pair, if that is another worker, else -1.
   */
  ownerOf(buf: Buffer, view: UsernameView): number;
  /** Hands the first check to `owner` (just returned by {@link FlowHandoff.ownerOf}). */
  handoff(buf: Buffer, address: string, port: number, owner: number): void;
}

// ---------------------------------------------------------------------------------------------
// Flow events (docs/architecture.md, "Flow events")

/** A client 5-tuple of a session, as listeners see it. */
export interface FlowEndpoint {
  readonly address: string;
  readonly port: number;
  /** Set while the client's datagrams reach this replica through a peer (docs/peers.md). */
  readonly via: PeerRoute | undefined;
  /**
   * False once the 5-tuple left its session — another session's client took it (a NAT handed the
   * port on) or a peer's tunnel did: the session's `current` may still name it, but nothing goes
   * there (docs/architecture.md, "A NAT that hands a port on").
   */
  readonly joined: boolean;
}

/**
 * A session as listeners see it: read-only (src/session/session.ts is the whole object; the
 * session registry is its only writer).
 */
export interface FlowSession {
  readonly id: number;
  /** USERNAME bytes: the ufrag pair. */
  readonly usernameBytes: Uint8Array;
  /** hashBytes() of the server ufrag: the learned and negative cache key. */
  readonly serverUfragHash: number;
  /** The owner, once established. */
  readonly backend: BackendRef | undefined;
  /** Where downstream traffic goes. */
  readonly current: FlowEndpoint;
  /** The session's upstream socket: its port is the remote address the backend sees. */
  readonly upstream: { readonly localPort: number };
}

/**
 * What the session registry announces after each change it makes. The registry is the only writer
 * of sessions, endpoints and indexes; everything else that must follow them (the kernel fast
 * path, the cross-worker directory) listens here instead of reading or writing session fields.
 *
 * Listeners are called synchronously, right after the change, with the live objects: they must
 * treat them as read-only and must not call back into the data path from inside the callback.
 * Events are per session, never per datagram (latching fires only when the target changes).
 */
export interface FlowListener {
  /** The owner answered the first check with a success: media may flow. `s.current` is set. */
  established?(s: FlowSession): void;
  /**
   * Another client 5-tuple joined an established session after the backend answered its check with
   * a success: a NAT rebinding, a second candidate of the same agent, or an ICE restart won.
   */
  endpointJoined?(s: FlowSession, ep: FlowEndpoint): void;
  /** Downstream traffic now goes to `ep` (a join, or latching onto the 5-tuple that sent media). */
  currentChanged?(s: FlowSession, ep: FlowEndpoint): void;
  /** A 5-tuple left an established session (idle extra endpoint, taken over by an ICE restart). */
  endpointLeft?(s: FlowSession, ep: FlowEndpoint): void;
  /**
   * The client's datagrams on `ep` now reach this replica another way: through a peer (`ep.via`),
   * or directly (`ep.via` undefined); `old` is the route before (docs/peers.md, "Owner").
   */
  routeChanged?(s: FlowSession, ep: FlowEndpoint, old: PeerRoute | undefined): void;
  /**
   * The session ended. `established` says whether it ever was (probing flows close too). A
   * listener that still has counts of the session to add (the kernel fast path: what its counters
   * counted since their last read) returns a promise, and the registry writes the session's close
   * log once it has settled (docs/fast-path.md, "Counters").
   */
  closed?(s: FlowSession, reason: CloseReason, established: boolean): void | Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// The kernel fast path (docs/fast-path.md)

/**
 * A kernel fast path follows every flow event: each one can change what the kernel must hold
 * (docs/fast-path.md). Required, so that an event added to {@link FlowListener} cannot be left out
 * of one kernel path by mistake — the eBPF path once missed `routeChanged`, and kept sending a
 * session's downstream straight to a client whose flow had moved to a peer.
 */
export type KernelFlowListener = Required<FlowListener>;

/** What the kernel fast path asks of the data path (for sessions it heard of as a listener). */
export interface FastPathHost {
  /**
   * The kernel forwarded client datagrams of `s`, the last at `at` (the fast path's clock):
   * refresh its idle clock, never back in time.
   */
  touch(s: FlowSession, at: number): void;
  /** Datagrams and UDP payload bytes the kernel forwarded for `s` since the last call. */
  addKernelCounts(s: FlowSession, c: KernelCounts): void;
}

/**
 * The eBPF kernel path's maps as a data-path thread writes them (docs/fast-path.md, "eBPF"): the
 * descriptors of the pod's loaded maps (threads share a process's descriptors, so they travel to
 * worker threads as numbers) and the thread's own range of counter slots.
 */
export interface KernelMaps {
  readonly flowsFd: number;
  readonly countsFd: number;
  /** Bytes of the counters array's values (what to map). */
  readonly countsBytes: number;
  /** This thread's counter slots: [first, first + count), two per session. */
  readonly slots: { readonly first: number; readonly count: number };
}

/** What /metrics reads from the kernel fast path (one, or a pod's workers' summed). */
export interface KernelPathSource {
  readonly totals: KernelCounts;
  readonly stats: { readonly transactions: number; readonly failures: number };
  readonly kernelSessions: number;
}

// ---------------------------------------------------------------------------------------------
// The other replicas of the tier (docs/peers.md): the peer layer (src/peers) and the data path
// talk only through these, as the forwarder and a pod's other workers do through FlowHandoff.

/** This data-path thread's peer socket (`--peer-port`, + the worker id with `--workers`). */
export interface PeerSocket {
  /**
   * Sends one datagram to a peer: `head`, then `body` if given, as one datagram (a tunnel's fixed
   * header and the client's datagram, without copying them together).
   */
  send(head: Uint8Array, body: Uint8Array | undefined, port: number, address: string): void;
}

/**
 * A client 5-tuple that reaches this replica, its session's owner, through another replica: the
 * owner's end of a tunnel. A session endpoint holds one while its client's datagrams arrive through
 * that replica; downstream datagrams for the endpoint go back through it.
 */
export interface PeerRoute {
  /** Sends a datagram for the client to the replica that receives its flow (it sends it on). */
  send(buf: Uint8Array): void;
  /** The receiving replica (`address:port`), for logs. */
  readonly peer: string;
}

/** The receiver side's view of the data path. */
export interface ReceiverHost {
  /** Sends from the public listening socket (a datagram from the owner for a tunneled client). */
  sendToClient(buf: Uint8Array, port: number, address: string): void;
  /**
   * A datagram that was held while its flow's query round was in flight, and no peer owns the
   * flow: handle it as the data path would without peers (drop it by reason, or route the check).
   * The flow is in the negative cache by then, so it is not asked about again.
   */
  local(buf: Buffer, address: string, port: number): void;
  /**
   * A peer owns the flow of this 5-tuple (its round ended "mine"). If the 5-tuple is still an
   * endpoint of a session here — a NAT that lost its mappings gave this client the port another
   * client had (docs/peers.md, "Receiver") — it leaves that session, so that its datagrams follow
   * the tunnel from now on.
   */
  claimed(address: string, port: number): void;
}

/** The owner side's view of the data path; `S` is its session type, opaque here. */
export interface OwnerHost<S> {
  /**
   * The established session one of whose endpoints is the client 5-tuple, if any. `username`: the
   * check the receiver asked with, if any — a draining owner does not claim an ICE restart (another
   * server ufrag), which the receiving replica then routes itself.
   */
  sessionOfFlow(address: string, port: number, username: Buffer | undefined): S | undefined;
  /** The established session with this USERNAME (`server:client` ufrag pair), if any. */
  sessionOfUsername(username: Buffer): S | undefined;
  /** The route the endpoint at this client 5-tuple is reached through now (undefined: directly). */
  routeOf(address: string, port: number): PeerRoute | undefined;
  /**
   * A client datagram that reached this replica through a peer: handled as if it had arrived on
   * the public socket from (address, port), except that downstream for that 5-tuple goes back
   * through `route`. It is never asked about or handed to another peer or worker (no loops), and
   * opens no session of its own: it belongs to a live session or is dropped. False if it was a
   * check that names no session here (or an ICE restart a draining owner will not take): the
   * route leads nowhere.
   */
  tunneled(buf: Buffer, address: string, port: number, route: PeerRoute): boolean;
}

/**
 * The peer layer as the forwarder sees it (like the workers' FlowHandoff): asked only on the
 * unknown-5-tuple path, so a flow this replica knows pays nothing for it.
 */
export interface PeerRouting {
  /**
   * Any datagram on an unknown 5-tuple: true if it was consumed — sent through the tunnel to the
   * flow's owner, or held while a query about the 5-tuple is in flight.
   */
  divert(buf: Buffer, address: string, port: number): boolean;
  /**
   * A datagram the data path would otherwise drop (media, a STUN response) or route as a new flow
   * (a parsed check, `view`): true if a query round started and holds it; false if the flow is not
   * to be asked about (negative cache, budget, no peers): the data path goes on without peers.
   */
  ask(buf: Buffer, address: string, port: number, view: UsernameView | undefined): boolean;
}

/** A fixed-size table of hashes with an expiry (admission's negative caches). */
export interface NegativeCache {
  has(hash: number, now: number): boolean;
  add(hash: number, now: number): void;
}

/** Where the peer layer logs (a pino logger fits). */
export interface PeerLog {
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}
