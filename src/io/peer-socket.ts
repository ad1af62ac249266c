import dgram from 'node:dgram';
import type { PeerSocket } from '../defs/interfaces.ts';
import { ipLiteralLookup } from './ip-literal-lookup.ts';

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

export class UdpPeerSocket implements PeerSocket {
  readonly #o: UdpPeerSocketOptions;
  #sock: dgram.Socket | undefined;
  readonly #pair: Uint8Array[] = [];

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
        if (this.#o.socketBufferBytes > 0) {
          try {
            sock.setRecvBufferSize(this.#o.socketBufferBytes);
            sock.setSendBufferSize(this.#o.socketBufferBytes);
          } catch (err) {
            this.#o.onError(err as Error);
          }
        }
        this.#sock = sock;
        resolve(sock.address().port);
      });
    });
  }

  send(head: Uint8Array, body: Uint8Array | undefined, port: number, address: string): void {
    const sock = this.#sock;
    if (sock === undefined) return;
    if (body === undefined) {
      sock.send(head, port, address);
      return;
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

  close(): void {
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
