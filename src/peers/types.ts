import type { UsernameView } from '../stun/parse.ts';

/**
 * Every interface between the peer layer and the rest of the proxy (docs/peers.md). The peer
 * layer is I/O-free: it sends through a {@link PeerSocket}, reads an injected clock, and reaches
 * the data path only through the hosts below.
 */

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
}

/** The owner side's view of the data path; `S` is its session type, opaque here. */
export interface OwnerHost<S> {
  /** The established session one of whose endpoints is the client 5-tuple, if any. */
  sessionOfFlow(address: string, port: number): S | undefined;
  /** The established session with this USERNAME (`server:client` ufrag pair), if any. */
  sessionOfUsername(username: Buffer): S | undefined;
  /**
   * A client datagram that reached this replica through a peer: handled as if it had arrived on
   * the public socket from (address, port), except that downstream for that 5-tuple goes back
   * through `route`. It is never asked about or handed to another peer or worker (no loops), and
   * opens no session of its own: it belongs to a live session or is dropped.
   */
  tunneled(buf: Buffer, address: string, port: number, route: PeerRoute): void;
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

/** Per-source fair shares of the query budget (admission's `Shares`, one class used). */
export interface QueryShares {
  slotOf(address: string, now: number): number;
  take(slot: number, cls: 0 | 1, n: number, now: number): boolean;
  refund(slot: number, cls: 0 | 1, n: number): void;
  /** Recounts the sources active in the last second (about once a second). */
  sweep(now: number): void;
}

/** A budget of query rounds (admission's `Budget`: a token bucket). */
export interface QueryBudget {
  take(now: number, n: number): boolean;
}

/** A fixed-size table of hashes with an expiry (admission's negative cache). */
export interface NegativeCache {
  has(hash: number, now: number): boolean;
  add(hash: number, now: number): void;
}

/** Where the peer layer logs (a pino logger fits). */
export interface PeerLog {
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}
