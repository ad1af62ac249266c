import dgram from 'node:dgram';
import type { PeerSocket } from '../defs/interfaces.ts';
import { ipLiteralLookup } from './ip-literal-lookup.ts';
import { setSocketBuffers } from './socket-buffers.ts';

/**
 * The `node:dgram` adapter of the peer protocol (docs/peers.md): one UDP socket per data-path
 * thread on `--peer-port` + the worker id, bound before the thread takes client traffic. A tunnel's
 * datagram is sent as two parts (its fixed 12-byte header and the client's datagram): dgram
 * gathers them into one datagram (sendmsg with two iovecs), so nothing is copied together here.
 *
 * The same traps as the public socket (docs/architecture.md, "UDP traps"): the error listener is
 * attached before bind(), and the destination is always an IP literal, resolved synchronously.
 */

export interface UdpPeerSocketOptions {
  readonly host: string;
  readonly port: number;
  /** SO_RCVBUF / SO_SNDBUF, bytes (`--socket-buffer`, as the public socket); 0 = kernel default. */
  readonly socketBufferBytes: number;
  readonly onDatagram: (buf: Buffer, address: string, port: number) => void;
  readonly onError: (err: Error) => void;
}

/**
 * Control messages to one peer port sent within one event-loop turn share a datagram up to this
 * size: below the smallest MTU a pod network commonly has (1450 with VXLAN) minus IP/UDP headers.
 */
export const BATCH_BYTES = 1200;

/** Control messages queued for one peer port until the end of the event-loop turn. */
interface Batch {
  readonly port: number;
  readonly address: string;
  readonly parts: Uint8Array[];
  bytes: number;
}

export class UdpPeerSocket implements PeerSocket {
  readonly #o: UdpPeerSocketOptions;
  #sock: dgram.Socket | undefined;
  readonly #pair: Uint8Array[] = [];
  /** Queued control messages by port, then address (no key string to build), and in order. */
  readonly #batches = new Map<number, Map<string, Batch>>();
  readonly #order: Batch[] = [];
  #flushing = false;

  constructor(o: UdpPeerSocketOptions) {
    this.#o = o;
  }

  /** Binds; resolves with the bound port. Rejects (EADDRINUSE, …) without leaving a socket open. */
  start(): Promise<number> {
    const { host, port } = this.#o;
    const sock = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', lookup: ipLiteralLookup });
    return new Promise((resolve, reject) => {
      const onStartError = (err: Error): void => {
        try {
          sock.close();
        } catch {
          // Never bound.
        }
        reject(err);
      };
      sock.once('error', onStartError);
      sock.on('message', (msg, rinfo) => this.#o.onDatagram(msg, rinfo.address, rinfo.port));
      sock.bind(port, host, () => {
        sock.off('error', onStartError);
        sock.on('error', this.#o.onError);
        // A rolling update moves many flows at once: their query rounds, answers and first tunneled
        // datagrams arrive here in one burst, which the kernel's default buffer (212 KB, a few
        // hundred datagrams) overflows while the event loop is busy with the same burst.
        setSocketBuffers(sock, this.#o.socketBufferBytes, this.#o.onError);
        this.#sock = sock;
        resolve(sock.address().port);
      });
    });
  }

  /**
   * A control message (no body) waits for the end of this event-loop turn (setImmediate), and goes
   * out with the other control messages to the same peer port in one datagram (docs/peers.md,
   * "Wire format"): when many flows move at once — a replica removed from the balancer — each
   * replica asks and answers about dozens of them in one turn, and one datagram per peer instead
   * of one per flow and peer is what keeps the rounds short. A tunnel's datagram (head and body)
   * goes at once, after whatever control messages wait for that peer port (their order holds).
   */
  send(head: Uint8Array, body: Uint8Array | undefined, port: number, address: string): void {
    const sock = this.#sock;
    if (sock === undefined) return;
    if (body === undefined) {
      this.#queue(head, port, address);
      return;
    }
    if (this.#order.length > 0) {
      const b = this.#batches.get(port)?.get(address);
      if (b !== undefined) this.#sendBatch(b);
    }
    // dgram copies the list before it returns (it may queue the send): one array serves every call.
    const pair = this.#pair;
    pair[0] = head;
    pair[1] = body;
    sock.send(pair, port, address);
  }

  /** SO_RCVBUF and SO_SNDBUF as the kernel holds them (twice what was asked), once bound. */
  bufferSizes(): { recv: number; send: number } | undefined {
    const sock = this.#sock;
    return sock === undefined
      ? undefined
      : { recv: sock.getRecvBufferSize(), send: sock.getSendBufferSize() };
  }

  #queue(msg: Uint8Array, port: number, address: string): void {
    let byAddress = this.#batches.get(port);
    let b = byAddress?.get(address);
    if (b !== undefined && b.bytes + msg.length > BATCH_BYTES) {
      this.#sendBatch(b);
      b = undefined;
    }
    if (b === undefined) {
      if (byAddress === undefined) {
        byAddress = new Map();
        this.#batches.set(port, byAddress);
      }
      b = { port, address, parts: [], bytes: 0 };
      byAddress.set(address, b);
      this.#order.push(b);
    }
    b.parts.push(msg);
    b.bytes += msg.length;
    if (!this.#flushing) {
      this.#flushing = true;
      setImmediate(this.#flush);
    }
  }

  /** Sends every queued batch, in the order they were started. */
  readonly #flush = (): void => {
    this.#flushing = false;
    for (const b of this.#order) this.#sendBatch(b);
    this.#order.length = 0;
    this.#batches.clear();
  };

  /** Sends one batch now (gathered into one datagram) and empties it; it stays queued, empty. */
  #sendBatch(b: Batch): void {
    if (b.parts.length === 0) return;
    const sock = this.#sock;
    if (sock !== undefined)
      // dgram copies a buffer list before it returns (as for the pair in send()): emptied below.
      sock.send(b.parts.length === 1 ? b.parts[0]! : b.parts, b.port, b.address);
    b.parts.length = 0;
    b.bytes = 0;
  }

  close(): void {
    // What waits goes out first: the releases of a replica that stops are its last words.
    this.#flush();
    const sock = this.#sock;
    this.#sock = undefined;
    if (sock === undefined) return;
    try {
      sock.close();
    } catch {
      // Already closed.
    }
  }
}
