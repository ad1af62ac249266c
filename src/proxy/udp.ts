import dgram from 'node:dgram';
import type { Upstream } from '../session/session.ts';
import type { Transport, UpstreamHandler } from './datapath.ts';

/**
 * The `node:dgram` adapter: the public listening socket and one upstream socket per session.
 * Replies to clients always leave from the listening socket, i.e. from the address the client
 * sent to (DESIGN.md, "Data path" §1, §5).
 *
 * Traps handled (TESTBED.md): an `'error'` listener is attached before `bind()` (otherwise
 * EADDRINUSE is swallowed), and connected sockets report ICMP port-unreachable as ECONNREFUSED
 * errors, which go to the data path instead of killing the process.
 */

/**
 * dgram resolves the destination of every unconnected send through `dns.lookup`, which for an IP
 * literal still costs a closure and a `process.nextTick` per datagram. Every address the data path
 * sends to is already an IP literal (a client's `rinfo.address`, a backend from discovery), so the
 * answer is the input, given synchronously.
 */
function ipLiteralLookup(
  address: string,
  _options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  callback(null, address, address.includes(':') ? 6 : 4);
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface UdpTransportOptions {
  readonly listen: ListenAddress;
  /** Source address for upstream sockets to IPv4 / IPv6 backends. */
  readonly upstreamBind4: string;
  readonly upstreamBind6: string;
  /** SO_RCVBUF / SO_SNDBUF of the listening socket, bytes; 0 = kernel default. */
  readonly socketBufferBytes: number;
  /** SO_REUSEPORT on the listening socket: worker threads share one address (docs/workers.md). */
  readonly reusePort?: boolean;
  readonly onClientDatagram: (buf: Buffer, address: string, port: number) => void;
  readonly onListenError: (err: Error) => void;
}

export class UdpTransport implements Transport {
  readonly #opt: UdpTransportOptions;
  #listen: dgram.Socket | undefined;
  readonly #upstreams = new Set<UdpUpstream>();

  constructor(opt: UdpTransportOptions) {
    this.#opt = opt;
  }

  /** Binds the listening socket; resolves with the bound address (port 0 → the kernel's pick). */
  start(): Promise<{ address: string; port: number }> {
    const { host, port } = this.#opt.listen;
    const sock = dgram.createSocket({
      type: host.includes(':') ? 'udp6' : 'udp4',
      lookup: ipLiteralLookup,
      reusePort: this.#opt.reusePort === true,
    });
    this.#listen = sock;
    return new Promise((resolve, reject) => {
      const onStartError = (err: Error): void => reject(err);
      sock.once('error', onStartError);
      sock.on('message', (msg, rinfo) => this.#opt.onClientDatagram(msg, rinfo.address, rinfo.port));
      sock.bind(port, host, () => {
        sock.off('error', onStartError);
        sock.on('error', this.#opt.onListenError);
        if (this.#opt.socketBufferBytes > 0) {
          try {
            sock.setRecvBufferSize(this.#opt.socketBufferBytes);
            sock.setSendBufferSize(this.#opt.socketBufferBytes);
          } catch (err) {
            this.#opt.onListenError(err as Error);
          }
        }
        const a = sock.address();
        resolve({ address: a.address, port: a.port });
      });
    });
  }

  sendToClient(buf: Uint8Array, port: number, address: string): void {
    const sock = this.#listen;
    if (sock !== undefined) sock.send(buf, port, address);
  }

  openUpstream(family: 4 | 6, localPort: number, handler: UpstreamHandler): Upstream {
    const bind = family === 6 ? this.#opt.upstreamBind6 : this.#opt.upstreamBind4;
    const u = new UdpUpstream(family, bind, localPort, handler, this.#upstreams);
    this.#upstreams.add(u);
    return u;
  }

  get openUpstreams(): number {
    return this.#upstreams.size;
  }

  close(): void {
    for (const u of [...this.#upstreams]) u.close();
    if (this.#listen !== undefined) {
      try {
        this.#listen.close();
      } catch {
        // Already closed.
      }
      this.#listen = undefined;
    }
  }
}

class UdpUpstream implements Upstream {
  readonly #sock: dgram.Socket;
  readonly #owner: Set<UdpUpstream>;
  #localPort: number;
  #connected = false;
  #closed = false;
  #targetPort = 0;
  #targetAddress = '';

  constructor(family: 4 | 6, bind: string, localPort: number, h: UpstreamHandler, owner: Set<UdpUpstream>) {
    this.#owner = owner;
    this.#localPort = localPort;
    const sock = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', lookup: ipLiteralLookup });
    this.#sock = sock;
    sock.on('error', (err: NodeJS.ErrnoException) => h.onError(err));
    sock.on('message', (msg, rinfo) => h.onMessage(msg, rinfo.address, rinfo.port));
    if (localPort === 0) {
      sock.once('listening', () => {
        this.#localPort = sock.address().port;
      });
    }
    // Sends issued before the bind completes are queued by dgram itself.
    sock.bind(localPort, bind);
  }

  get localPort(): number {
    return this.#localPort;
  }

  sendTo(buf: Uint8Array, port: number, address: string): void {
    if (this.#closed || this.#connected) return;
    this.#sock.send(buf, port, address);
  }

  send(buf: Uint8Array): void {
    if (this.#connected) this.#sock.send(buf);
    else if (!this.#closed) this.#sock.send(buf, this.#targetPort, this.#targetAddress);
  }

  connect(port: number, address: string): void {
    if (this.#closed) return;
    this.#targetPort = port;
    this.#targetAddress = address;
    // A connected socket skips the per-send address lookup in dgram and lets the kernel drop
    // datagrams from anyone but the backend.
    this.#sock.connect(port, address, () => {
      if (!this.#closed) this.#connected = true;
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#connected = false;
    this.#owner.delete(this);
    try {
      this.#sock.close();
    } catch {
      // Already closed by the runtime after an error.
    }
  }
}
