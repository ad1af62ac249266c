// Stand-ins for what a fast path needs from outside (the registry as FastPathHost, the upstream
// source addresses, the namespace's routes) and established sessions to feed it, shared by the
// nftables and eBPF fast paths' unit tests.
import type { FastPathHost } from '../../src/defs/interfaces.ts';
import type { KernelCounts } from '../../src/defs/kernel-counts.ts';
import type { NextHop } from '../../src/fastpath/nft-script.ts';
import { Session, SessionState } from '../../src/session/session.ts';

/** The upstream source address every test backend gets (Sources below). */
export const SOURCE = '10.77.2.1';

export class Host implements FastPathHost {
  readonly touched: Array<[number, number]> = [];
  readonly counts = new Map<number, KernelCounts>();
  touch(s: Session, now: number): void {
    this.touched.push([s.id, now]);
  }
  addKernelCounts(s: Session, c: KernelCounts): void {
    const t = this.counts.get(s.id) ?? { packetsUp: 0, bytesUp: 0, packetsDown: 0, bytesDown: 0 };
    t.packetsUp += c.packetsUp;
    t.bytesUp += c.bytesUp;
    t.packetsDown += c.packetsDown;
    t.bytesDown += c.bytesDown;
    this.counts.set(s.id, t);
  }
}

/** Upstream source addresses: known once resolved; `unreachable` ones fail to resolve. */
export class Sources {
  readonly known = new Map<string, string>();
  readonly resolved: string[] = [];
  readonly unreachable = new Set<string>();
  get(a: string): string | undefined {
    return this.known.get(a);
  }
  async resolve(a: string): Promise<string> {
    this.resolved.push(a);
    if (this.unreachable.has(a)) throw new Error('connect ENETUNREACH');
    this.known.set(a, SOURCE);
    return SOURCE;
  }
}

/** The namespace's routes: `next` becomes what get() answers only at refresh(), as with the file. */
export class Routes {
  refreshes = 0;
  next = (a: string): NextHop | undefined => {
    if (a.startsWith('10.77.')) return { via: a, dev: 'eth1' };
    if (a.startsWith('198.18.')) return { via: '198.18.0.254', dev: 'eth0' };
    return undefined;
  };
  #current: (a: string) => NextHop | undefined = () => undefined;
  async refresh(): Promise<void> {
    this.refreshes++;
    this.#current = this.next;
  }
  get(a: string): NextHop | undefined {
    return this.#current(a);
  }
}

let id = 1;
export function session(
  clientPort: number,
  upstreamPort: number,
  client = '198.18.0.2',
  backend = '10.77.2.11',
): Session {
  const up = { localPort: upstreamPort, sendTo() {}, send() {}, connect() {}, close() {} };
  const s = new Session(
    id++,
    's:c',
    1,
    { username: 1, serverUfrag: 2 },
    upstreamPort,
    { address: client, port: clientPort },
    0,
  );
  s.upstream = up;
  s.state = SessionState.Established;
  s.backend = { name: 'b', address: backend, port: 10000 } as Session['backend'];
  s.endpoints.push(s.current);
  s.current.joined = true; // as the registry indexes it
  return s;
}
