import { readFile } from 'node:fs/promises';
import { endianness, networkInterfaces } from 'node:os';
import type { NextHop } from './nft-script.ts';

/**
 * Where the kernel path hands a rewritten datagram: `fwd ip to VIA device DEV` in the session's
 * chain (nft-script.ts) skips the routing decision, so the next hop is looked up here, from the
 * network namespace's IPv4 main routing table (/proc/net/route: longest prefix, then lowest
 * metric), when the flow is installed. Policy routing (`ip rule`) and multipath routes are not
 * seen; a pod's namespace has neither (docs/fast-path.md, "Next hops"). Pure apart from reading
 * the file.
 */

interface Route {
  readonly dest: number;
  readonly mask: number;
  readonly prefix: number;
  readonly gateway: number | undefined;
  readonly dev: string;
  readonly metric: number;
  /** unreachable/prohibit/blackhole: wins like any route, then gives no next hop. */
  readonly reject: boolean;
}

/** linux/route.h */
const RTF_UP = 0x1;
const RTF_GATEWAY = 0x2;
const RTF_REJECT = 0x200;

/** Interface names nft can be handed verbatim inside quotes. */
const SAFE_DEV = /^[A-Za-z0-9_.-]{1,15}$/;

const toIp = (n: number): string => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

function parseIp(a: string): number | undefined {
  const p = a.split('.');
  if (p.length !== 4) return undefined;
  let n = 0;
  for (const x of p) {
    if (!/^\d{1,3}$/.test(x) || Number(x) > 255) return undefined;
    n = n * 256 + Number(x);
  }
  return n >>> 0;
}

/** /proc/net/route prints each address as the hex of its in-memory (network order) u32. */
function hexAddr(h: string, littleEndian: boolean): number {
  const v = Number.parseInt(h, 16) >>> 0;
  if (!littleEndian) return v;
  return (((v & 255) << 24) | (((v >>> 8) & 255) << 16) | (((v >>> 16) & 255) << 8) | (v >>> 24)) >>> 0;
}

function popcount(n: number): number {
  let c = 0;
  for (let x = n >>> 0; x !== 0; x >>>= 1) c += x & 1;
  return c;
}

const HEX32 = /^[0-9A-Fa-f]{8}$/;

/**
 * The routes of a /proc/net/route text that are up. Reject routes (printed with device `*`) are
 * kept, so that a more specific one hides a broader route as it does in the kernel. Malformed
 * lines are skipped.
 */
export function parseRoutes(text: string, littleEndian = endianness() === 'LE'): Route[] {
  const out: Route[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || !HEX32.test(f[1]!) || !HEX32.test(f[2]!) || !HEX32.test(f[7]!)) continue;
    if (!/^[0-9A-Fa-f]{1,4}$/.test(f[3]!) || !/^\d+$/.test(f[6]!)) continue;
    const flags = Number.parseInt(f[3]!, 16);
    const reject = (flags & RTF_REJECT) !== 0 || f[0] === '*';
    if (!(flags & RTF_UP) || (!reject && !SAFE_DEV.test(f[0]!))) continue;
    const mask = hexAddr(f[7]!, littleEndian);
    out.push({
      dest: hexAddr(f[1]!, littleEndian),
      mask,
      prefix: popcount(mask),
      gateway: flags & RTF_GATEWAY ? hexAddr(f[2]!, littleEndian) : undefined,
      dev: f[0]!,
      metric: Number(f[6]),
      reject,
    });
  }
  return out;
}

/** The route the kernel's main table picks for `address`, as a next hop; undefined without one. */
export function nextHopIn(routes: readonly Route[], address: string): NextHop | undefined {
  const a = parseIp(address);
  if (a === undefined) return undefined;
  let best: Route | undefined;
  for (const r of routes) {
    if ((a & r.mask) >>> 0 !== r.dest) continue;
    if (best === undefined || r.prefix > best.prefix || (r.prefix === best.prefix && r.metric < best.metric))
      best = r;
  }
  if (best === undefined || best.reject) return undefined;
  return { via: best.gateway === undefined ? address : toIp(best.gateway), dev: best.dev };
}

/** The namespace's routing table, re-read before each batch that installs flows (a tiny file). */
export class NextHops {
  readonly #read: () => Promise<string>;
  #routes: Route[] = [];

  constructor(read: () => Promise<string> = () => readFile('/proc/net/route', 'utf8')) {
    this.#read = read;
  }

  async refresh(): Promise<void> {
    this.#routes = parseRoutes(await this.#read());
  }

  get(address: string): NextHop | undefined {
    return nextHopIn(this.#routes, address);
  }
}

/**
 * The interfaces whose ingress the chain hooks: every one with an IPv4 address but loopback
 * (a pod: eth0). Media arriving on an interface created later misses the hook and is relayed by
 * Node, as without the fast path.
 */
export function ingressDevices(ifs = networkInterfaces()): string[] {
  const out: string[] = [];
  for (const [name, addrs] of Object.entries(ifs)) {
    if (!SAFE_DEV.test(name)) continue;
    if (addrs?.some((a) => a.family === 'IPv4' && !a.internal)) out.push(name);
  }
  return out.sort();
}
