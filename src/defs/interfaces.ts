import type { UsernameView } from '../stun/parse.ts';

/**
 * Every interface between the I/O-free data path and the outside world, in one module: the socket
 * layer (implemented by `udp.ts` with `node:dgram`, and by fakes in tests), a pod's other workers
 * (hand-off of flows they own) and the listeners that hear about flows.
 *
 * See docs/architecture.md, "Data path".
 */

/** Callbacks of one upstream socket, set by the data path when it opens the socket. */
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
