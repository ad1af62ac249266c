import dgram from 'node:dgram';
import type { Transport, Upstream, UpstreamHandler } from '../defs/interfaces.ts';
import { ipLiteralLookup } from './ip-literal-lookup.ts';
import { setSocketBuffers } from './socket-buffers.ts';

/**
 * The `node:dgram` adapter: the public listening socket and one upstream socket per session.
 * Replies to clients always leave from the listening socket, i.e. from the address the client
 * sent to (docs/architecture.md, "Data path").
 *
 * Traps handled (docs/architecture.md, "UDP traps"): an `'error'` listener is attached before `bind()` (otherwise
 * EADDRINUSE is swallowed), and connected sockets report ICMP port-unreachable as ECONNREFUSED
 * errors, which go to the data path instead of killing the process.
 */

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

/** Clean sockets kept bound for reuse at most, and for how long (then closed). */
const PARK_MAX = 256;
const PARK_MS = 2000;

export class UdpTransport implements Transport {
  readonly #opt: UdpTransportOptions;
  #listen: dgram.Socket | undefined;
  readonly #upstreams = new Set<UdpUpstream>();
  /** Bound sockets no flow uses, by port × family (0 = kernel-chosen ports, by family). */
  readonly #parked = new Map<number, BoundSocket[]>();
  #parkedCount = 0;

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
        setSocketBuffers(sock, this.#opt.socketBufferBytes, this.#opt.onListenError);
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
    const key = localPort * 2 + (family === 6 ? 1 : 0);
    const parked = this.#parked.get(key);
    let bound = parked?.pop();
    if (bound !== undefined) {
      this.#parkedCount--;
      if (parked!.length === 0) this.#parked.delete(key);
    } else {
      const bind = family === 6 ? this.#opt.upstreamBind6 : this.#opt.upstreamBind4;
      bound = new BoundSocket(family, bind, localPort);
    }
    bound.handler = handler;
    const u = new UdpUpstream(bound, this);
    this.#upstreams.add(u);
    return u;
  }

  /** Session upstreams open now (parked sockets are not counted). */
  get openUpstreams(): number {
    return this.#upstreams.size;
  }

  get parkedUpstreams(): number {
    return this.#parkedCount;
  }

  /** @internal An upstream is done with its socket: park it if clean and room is left, else close. */
  release(u: UdpUpstream, bound: BoundSocket, clean: boolean): void {
    this.#upstreams.delete(u);
    if (!clean || bound.broken || this.#parkedCount >= PARK_MAX || this.#listen === undefined) {
      bound.close();
      return;
    }
    bound.handler = undefined;
    bound.parkedAt = performance.now();
    // Kernel-chosen ports are reused by family; a pool port by that port.
    const key = (bound.requestedPort === 0 ? 0 : bound.localPort * 2) + (bound.family === 6 ? 1 : 0);
    let list = this.#parked.get(key);
    if (list === undefined) {
      list = [];
      this.#parked.set(key, list);
    }
    list.push(bound);
    this.#parkedCount++;
  }

  /** Closes sockets parked for longer than a few seconds (call from the periodic sweep). */
  sweep(): void {
    if (this.#parkedCount === 0) return;
    const old = performance.now() - PARK_MS;
    for (const [key, list] of this.#parked) {
      let keep = 0;
      for (const b of list) {
        if (b.parkedAt < old) b.close();
        else list[keep++] = b;
      }
      this.#parkedCount -= list.length - keep;
      list.length = keep;
      if (keep === 0) this.#parked.delete(key);
    }
  }

  close(): void {
    for (const u of [...this.#upstreams]) u.close();
    for (const list of this.#parked.values()) for (const b of list) b.close();
    this.#parked.clear();
    this.#parkedCount = 0;
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

/** A bound upstream socket; its datagrams go to whichever flow holds it now (none while parked). */
class BoundSocket {
  readonly sock: dgram.Socket;
  readonly family: 4 | 6;
  readonly requestedPort: number;
  localPort: number;
  handler: UpstreamHandler | undefined;
  parkedAt = 0;
  /** An error other than ICMP unreachable (a failed bind, say): never parked. */
  broken = false;

  constructor(family: 4 | 6, bind: string, localPort: number) {
    this.family = family;
    this.requestedPort = localPort;
    this.localPort = localPort;
    const sock = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', lookup: ipLiteralLookup });
    this.sock = sock;
    // A parked socket still receives late answers to its last flow's probes: dropped here.
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNREFUSED') this.broken = true;
      this.handler?.onError(err);
    });
    sock.on('message', (msg, rinfo) => this.handler?.onMessage(msg, rinfo.address, rinfo.port));
    if (localPort === 0) {
      sock.once('listening', () => {
        this.localPort = sock.address().port;
      });
    }
    // Sends issued before the bind completes are queued by dgram itself.
    sock.bind(localPort, bind);
  }

  close(): void {
    this.handler = undefined;
    try {
      this.sock.close();
    } catch {
      // Already closed by the runtime after an error.
    }
  }
}

/** One flow's hold on a bound socket: calls after close() do nothing, whoever holds the socket next. */
class UdpUpstream implements Upstream {
  readonly #bound: BoundSocket;
  readonly #owner: UdpTransport;
  #connected = false;
  #everConnected = false;
  #closed = false;
  #targetPort = 0;
  #targetAddress = '';

  constructor(bound: BoundSocket, owner: UdpTransport) {
    this.#bound = bound;
    this.#owner = owner;
  }

  get localPort(): number {
    return this.#bound.localPort;
  }

  sendTo(buf: Uint8Array, port: number, address: string): void {
    if (this.#closed || this.#connected) return;
    this.#bound.sock.send(buf, port, address);
  }

  send(buf: Uint8Array): void {
    if (this.#connected) this.#bound.sock.send(buf);
    else if (!this.#closed) this.#bound.sock.send(buf, this.#targetPort, this.#targetAddress);
  }

  connect(port: number, address: string): void {
    if (this.#closed) return;
    this.#targetPort = port;
    this.#targetAddress = address;
    // A connected socket skips the per-send address lookup in dgram and lets the kernel drop
    // datagrams from anyone but the backend. A connected socket is never parked (UDP cannot be
    // disconnected portably from Node), so it is closed with its session.
    this.#bound.sock.connect(port, address, () => {
      if (!this.#closed) this.#connected = true;
    });
    this.#everConnected = true;
  }

  close(clean = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#connected = false;
    this.#owner.release(this, this.#bound, clean && !this.#everConnected);
  }
}
