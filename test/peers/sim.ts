// An in-memory network of PeerNodes on one injected clock: each node's peer socket puts datagrams
// on a shared queue, `net.flush()` delivers them (optionally losing some), `net.advance(ms)` moves
// the clock and ticks/sweeps every node. Each node has a fake data path: sessions by client
// 5-tuple and by USERNAME (its owner side), and records of what it sent to clients, what it
// handled locally and what reached it through tunnels. No sockets, no timers, no sleeps.

import { pino } from 'pino';
import { SourceShares } from '../../src/admission/source-shares.ts';
import { TokenBucket } from '../../src/admission/token-bucket.ts';
import { NegativeUfrags } from '../../src/admission/ufrag-caches.ts';
import type { PeerRoute } from '../../src/defs/interfaces.ts';
import { PeerNode, type PeerNodeOptions } from '../../src/peers/node.ts';
import type { PeerSpec } from '../../src/peers/peer-set.ts';
import { type Instance, MsgType } from '../../src/peers/wire.ts';

export interface Datagram {
  readonly buf: Buffer;
  readonly from: { address: string; port: number };
  readonly to: { address: string; port: number };
}

export class SimSession {
  readonly id: number;
  constructor(id: number) {
    this.id = id;
  }
}

export class SimNode {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly instance: Instance;
  readonly node: PeerNode<SimSession>;
  /** The owner side's sessions. */
  readonly byFlow = new Map<string, SimSession>();
  readonly byUsername = new Map<string, SimSession>();
  /** The route each client 5-tuple of this node's sessions last came through (undefined: direct). */
  readonly routes = new Map<string, PeerRoute | undefined>();
  readonly toClients: Array<{ buf: Buffer; address: string; port: number }> = [];
  readonly local: Array<{ buf: Buffer; address: string; port: number }> = [];
  /** 5-tuples a peer claimed (ReceiverHost.claimed). */
  readonly claimed: string[] = [];
  readonly tunneled: Array<{ buf: Buffer; address: string; port: number; route: PeerRoute }> = [];
  wakeAt = Number.POSITIVE_INFINITY;

  constructor(
    net: SimNet,
    name: string,
    address: string,
    port: number,
    opts: Partial<PeerNodeOptions<SimSession>>,
  ) {
    this.name = name;
    this.address = address;
    this.port = port;
    this.instance = { hi: (Math.random() * 2 ** 32) >>> 0 || 1, lo: (Math.random() * 2 ** 32) >>> 0 };
    const now = (): number => net.now;
    this.node = new PeerNode<SimSession>({
      self: this.instance,
      selfAddress: undefined,
      selfPort: port,
      workers: 1,
      socket: {
        send: (head, body, toPort, toAddress) => {
          const buf = body === undefined ? Buffer.from(head) : Buffer.concat([head, body]);
          net.queue.push({ buf, from: { address, port }, to: { address: toAddress, port: toPort } });
        },
      },
      receiverHost: {
        sendToClient: (buf, p, a) => this.toClients.push({ buf: Buffer.from(buf), address: a, port: p }),
        local: (buf, a, p) => this.local.push({ buf, address: a, port: p }),
        claimed: (a, p) => this.claimed.push(`${a}:${p}`),
      },
      ownerHost: {
        sessionOfFlow: (a, p) => this.byFlow.get(`${a}:${p}`),
        sessionOfUsername: (u) => this.byUsername.get(u.toString('latin1')),
        routeOf: (a, p) => this.routes.get(`${a}:${p}`),
        tunneled: (buf, a, p, route) => {
          this.tunneled.push({ buf: Buffer.from(buf), address: a, port: p, route });
          // As the data path does for a known 5-tuple: the endpoint's route follows its datagrams.
          const key = `${a}:${p}`;
          if (this.byFlow.has(key)) this.reroute(key, route);
          return true;
        },
      },
      clock: now,
      log: pino({ level: 'silent' }),
      // A round budget of 1000/s: half open, half fair; the shares add up to 90 % of the fair half.
      shares: new SourceShares(16384, [450, 450], undefined, 2),
      open: new TokenBucket(500, 500, 0),
      fair: new TokenBucket(500, 500, 0),
      negative: new NegativeUfrags(4096, 2000),
      timeoutMs: 250,
      idleMs: 60_000,
      capacity: 1024,
      wake: (at) => {
        this.wakeAt = Math.min(this.wakeAt, at);
      },
      ...opts,
    });
  }

  /** A session of this node owns the client 5-tuple (and USERNAME). */
  own(client: string, username?: string): SimSession {
    const s = new SimSession(this.byFlow.size + 1);
    this.byFlow.set(client, s);
    this.routes.set(client, undefined);
    if (username !== undefined) this.byUsername.set(username, s);
    return s;
  }

  /** A client datagram on the public socket of this node, as the forwarder sees an unknown 5-tuple. */
  client(buf: Buffer, address: string, port: number): 'diverted' | 'asked' | 'local' {
    const key = `${address}:${port}`;
    if (this.byFlow.has(key)) {
      // A known 5-tuple: the peer layer is never asked; the route becomes direct.
      this.reroute(key, undefined);
      return 'local';
    }
    if (this.node.divert(buf, address, port)) return 'diverted';
    if (this.node.ask(buf, address, port, undefined)) return 'asked';
    this.local.push({ buf, address, port });
    return 'local';
  }

  /** As the registry does: the endpoint's route changes, and the flow event follows. */
  reroute(key: string, route: PeerRoute | undefined): void {
    const old = this.routes.get(key);
    if (old !== route) {
      this.routes.set(key, route);
      const [address, port] = key.split(':') as [string, string];
      this.node.routeChanged(
        this.byFlow.get(key)!,
        { address, port: Number(port), via: route, joined: true },
        old,
      );
    }
  }

  /** The session ends (as the registry does: its endpoints leave the index, then the event). */
  close(s: SimSession): void {
    for (const [key, x] of this.byFlow) {
      if (x !== s) continue;
      this.byFlow.delete(key);
      this.routes.delete(key);
    }
    this.node.closed(s);
  }

  spec(): PeerSpec {
    return { address: this.address, port: this.port };
  }
}

export class SimNet {
  now = 0;
  readonly queue: Datagram[] = [];
  readonly nodes: SimNode[] = [];
  /** Every datagram delivered or lost, in order. */
  readonly log: Datagram[] = [];
  /** Datagrams for which this returns true are lost. */
  lose: (d: Datagram) => boolean = () => false;
  /** Nodes that are down: datagrams to them vanish, they send nothing. */
  readonly down = new Set<SimNode>();

  add(name: string, address: string, port: number, opts: Partial<PeerNodeOptions<SimSession>> = {}): SimNode {
    const n = new SimNode(this, name, address, port, opts);
    this.nodes.push(n);
    return n;
  }

  /** Every node lists every node (itself included, as a static list or DNS would). */
  meshAll(): void {
    const specs = this.nodes.map((n) => n.spec());
    for (const n of this.nodes) n.node.updatePeers(specs);
  }

  /**
   * Control messages queued from one node to one peer port go as one datagram, as the peer socket
   * sends what one event-loop turn queued (src/io/peer-socket.ts): applied to the queue as it is
   * now, and by {@link flush} after every delivery while on.
   */
  coalesce = false;

  #coalesceQueue(): void {
    const out: Datagram[] = [];
    const open = new Map<string, number>();
    for (const d of this.queue) {
      const control = d.buf[3]! <= MsgType.Release;
      const k = `${d.from.address}:${d.from.port}>${d.to.address}:${d.to.port}`;
      const at = control ? open.get(k) : undefined;
      if (at !== undefined) {
        out[at] = { ...out[at]!, buf: Buffer.concat([out[at]!.buf, d.buf]) };
        continue;
      }
      if (control) open.set(k, out.length);
      else open.delete(k); // a data datagram keeps its place after the control messages before it
      out.push(d);
    }
    this.queue.splice(0, this.queue.length, ...out);
  }

  /** Delivers queued datagrams (and those they cause) until the network is quiet. */
  flush(max = 100_000): number {
    let n = 0;
    if (this.coalesce) this.#coalesceQueue();
    while (this.queue.length > 0 && n < max) {
      if (this.coalesce && n > 0) this.#coalesceQueue();
      const d = this.queue.shift()!;
      n++;
      this.log.push(d);
      const from = this.nodes.find((x) => x.address === d.from.address && x.port === d.from.port);
      if (from !== undefined && this.down.has(from)) continue;
      if (this.lose(d)) continue;
      const to = this.nodes.find(
        (x) => x.address === d.to.address && d.to.port >= x.port && d.to.port < x.port + 32,
      );
      if (to === undefined || this.down.has(to)) continue;
      to.node.onDatagram(d.buf, d.from.address, d.from.port);
    }
    return n;
  }

  /** Moves the clock, ticking nodes whose wake time came and sweeping all every 100 ms step. */
  advance(ms: number, step = 10): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now = Math.min(end, this.now + step);
      for (const n of this.nodes) {
        if (this.down.has(n)) continue;
        if (n.wakeAt <= this.now) {
          n.wakeAt = Number.POSITIVE_INFINITY;
          n.node.tick(this.now);
        }
        n.node.sweep(this.now);
      }
      this.flush();
    }
  }

  /** Datagrams of a peer message type sent so far (from the log). */
  sent(type: number, from?: SimNode): number {
    return [...this.log, ...this.queue].filter(
      (d) =>
        d.buf[3] === type &&
        (from === undefined || (d.from.port === from.port && d.from.address === from.address)),
    ).length;
  }
}
