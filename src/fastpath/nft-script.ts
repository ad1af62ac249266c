/**
 * The text of every nftables transaction the fast path sends (`nft -f -`): the table with its
 * ingress chain and verdict map, and each session's two named counters, two chains and two
 * elements. Pure functions of their arguments, so the exact rules are unit-tested without root.
 * Design and rule-by-rule reasons: docs/fast-path.md.
 *
 * Only one table is ever created or changed: `netdev ice_ingress`. Start-up also removes
 * `ip ice_ingress`, the table of earlier versions of this fast path (same owner, same name).
 * IPv4 only (docs/fast-path.md, "IPv6").
 */

import { carrierWords, ipv4Words, wordsHex } from './checksum.ts';

export const TABLE = 'ice_ingress';
export const FAMILY = 'netdev';
const T = `${FAMILY} ${TABLE}`;
/** The table earlier versions created (ip family, prerouting/postrouting); removed at start. */
const LEGACY = `ip ${TABLE}`;

/** The verdict map: an element per session and direction, jumping to the session's chain. */
export const FLOWS = 'flows';

export interface TableParams {
  /** The address and port clients send to (the listening socket's, a specific IPv4 address). */
  readonly listenAddress: string;
  readonly listenPort: number;
  /** Interfaces whose ingress the chain hooks (those with an IPv4 address, routes.ts). */
  readonly devices: readonly string[];
}

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** Where a rewritten datagram is handed to: the next hop's address and the outgoing interface. */
export interface NextHop {
  readonly via: string;
  readonly dev: string;
}

/** One session's kernel path: its current client 5-tuple, its backend, its upstream socket. */
export interface KernelFlow {
  readonly client: Endpoint;
  readonly backend: Endpoint;
  /** The upstream socket's local port: the source port the backend sees. */
  readonly upstreamPort: number;
  /** The upstream socket's source address toward this backend (source-address.ts). */
  readonly source: string;
  readonly toBackend: NextHop;
  readonly toClient: NextHop;
}

/**
 * Creates the table, replacing a stale one from a crashed run (and an earlier version's `ip`
 * table) in the same transaction (`add` makes `delete` safe when there is none). Nothing outside
 * these names is touched. Also the whole of a resynchronisation (flow-plan.ts), followed there by
 * every live flow.
 *
 * - A netdev ingress chain runs as the interface receives, before the IP stack: a datagram that
 *   takes the kernel path is rewritten and handed to the next hop by `fwd`, with no routing
 *   decision, no forwarding, no prerouting/postrouting hooks and no conntrack. So the namespace
 *   needs no `ip_forward`, and a source address of our own is no martian.
 * - `@th,64,8 > 3`: the first UDP payload byte. RFC 7983: 0-3 is STUN, which always goes to Node
 *   (consent checks, rebinding, ICE restart); DTLS, SRTP/SRTCP (and SCTP over DTLS) take the
 *   kernel path.
 * - `ip frag-off & 0x3fff == 0`: no IP fragment. Only a first fragment carries the ports; the
 *   kernel path would send it on alone and leave the rest to the IP stack, which could never
 *   reassemble the datagram. Fragments go to the stack, and Node relays the reassembled datagram.
 * - `udp checksum != 0`: a UDP checksum of 0 means "none" (RFC 768). The kernel's address write
 *   gives up on such a datagram before writing (nft_payload_l4csum_offset: no checksum to update),
 *   and its port write updates the field regardless, leaving a wrong checksum the receiver drops.
 *   Such datagrams (rare: WebRTC stacks checksum theirs) are relayed by Node.
 * - One verdict-map lookup per datagram, keyed by its whole UDP 4-tuple, so one map serves both
 *   directions (client → listening address; backend → upstream socket) and matches nothing not
 *   addressed to us: its element jumps (`goto`) to the session's own chain of constant rewrites.
 *   No prefilter rule: measured cheaper without (docs/fast-path.md, "Performance"). A miss falls
 *   through to `policy accept`: the datagram reaches Node's socket untouched.
 */
export function tableScript(p: TableParams): string {
  if (p.devices.length === 0) throw new Error('fast path: no interface to hook');
  const devices = p.devices.map((d) => `"${d}"`).join(', ');
  return `add table ${LEGACY}
delete table ${LEGACY}
add table ${T}
delete table ${T}
table ${T} {
  map ${FLOWS} { type ipv4_addr . inet_service . ipv4_addr . inet_service : verdict; }
  chain ingress {
    type filter hook ingress devices = { ${devices} } priority 0; policy accept;
    meta l4proto udp @th,64,8 > 3 ip frag-off & 0x3fff == 0 udp checksum != 0 ip saddr . udp sport . ip daddr . udp dport vmap @${FLOWS}
  }
}
`;
}

/** Removes the table (shutdown, drain). `add` first: no error when it is already gone. */
export function deleteTableScript(): string {
  return `add table ${T}\ndelete table ${T}\n`;
}

const ep = (e: Endpoint): string => `${e.address} . ${e.port}`;
const upKeyOf = (f: KernelFlow, listen: Endpoint): string => `${ep(f.client)} . ${ep(listen)}`;
const downKeyOf = (f: KernelFlow): string => `${ep(f.backend)} . ${f.source} . ${f.upstreamPort}`;

/**
 * The names of a flow's two chains. `id` is never reused by its owner. In one process they are
 * `u<id>` / `d<id>`; with worker threads every worker writes into the one table the main thread
 * created, so the worker's id is part of the name (`u<worker>_<id>`): names never collide across
 * workers, and a worker can tell its own chains from the others' (docs/workers.md, "Kernel fast
 * path").
 */
export function chainNames(id: number, worker?: number): { up: string; down: string } {
  const tag = worker === undefined ? String(id) : `${worker}_${id}`;
  return { up: `u${tag}`, down: `d${tag}` };
}

/** Whether `chain` is one of `worker`'s flow chains (as {@link chainNames} makes them). */
export function ownsChain(chain: string, worker: number): boolean {
  return new RegExp(`^[ud]${worker}_\\d+$`).test(chain);
}

/**
 * The names of a session's two named counters (one per direction): `cu<id>` / `cd<id>`, with
 * workers `cu<worker>_<id>`. `id` is the session's, kept across its moves: the counters outlive
 * the chains, so a latching move or a rebinding loses no count, and a closed session's are deleted
 * only after the next read has taken their final values (docs/fast-path.md, "Counters").
 */
export function counterNames(id: number, worker?: number): { up: string; down: string } {
  const tag = worker === undefined ? String(id) : `${worker}_${id}`;
  return { up: `cu${tag}`, down: `cd${tag}` };
}

/** Whether `counter` is one of `worker`'s (as {@link counterNames} makes them). */
export function ownsCounter(counter: string, worker: number): boolean {
  return new RegExp(`^c[ud]${worker}_\\d+$`).test(counter);
}

/** A session's two counters, created before the first chains that reference them. */
export function addCounterLines(id: number, worker?: number): string[] {
  const c = counterNames(id, worker);
  return [`add counter ${T} ${c.up}`, `add counter ${T} ${c.down}`];
}

/** Only once no chain references them (the kernel refuses otherwise: EBUSY). */
export function deleteCounterLines(id: number, worker?: number): string[] {
  const c = counterNames(id, worker);
  return [`delete counter ${T} ${c.up}`, `delete counter ${T} ${c.down}`];
}

/**
 * The writes that take a datagram's two adjacent fields `from` → `to` (addresses: `ip saddr`,
 * `ip daddr`; ports: `udp sport`, `udp dport`). A field the match already fixes to its new value
 * (the listening port when the backend's port is the same, as with JVB's 10000) is not written.
 * When both change, one raw write sets the first field and a carrier in the second, and one
 * checksummed write sets the second, which moves the checksums by the pair's whole difference
 * (checksum.ts): each checksummed write is the largest per-datagram cost (docs/fast-path.md,
 * "Performance").
 */
function pairWrites(
  from: readonly [string, string],
  to: readonly [string, string],
  kind: 'address' | 'port',
): string[] {
  const [first, second] = kind === 'address' ? ['ip saddr', 'ip daddr'] : ['udp sport', 'udp dport'];
  if (from[0] === to[0]) return from[1] === to[1] ? [] : [`${second} set ${to[1]}`];
  if (from[1] === to[1]) return [`${first} set ${to[0]}`];
  const words = kind === 'address' ? ipv4Words : (p: string): number[] => [Number(p)];
  const x = carrierWords(words(from[0]), words(from[1]), words(to[0]));
  const raw = kind === 'address' ? '@nh,96,64' : '@th,0,32';
  return [`${raw} set 0x${wordsHex([...words(to[0]), ...x])}`, `${second} set ${to[1]}`];
}

/**
 * One direction's statements: count, rewrite the datagram's source and destination endpoints
 * `from` → `to` ({@link pairWrites}: addresses, then ports), hand it to the next hop.
 */
function chainStatements(
  counter: string,
  from: readonly [Endpoint, Endpoint],
  to: readonly [Endpoint, Endpoint],
  hop: NextHop,
): string[] {
  return [
    `counter name "${counter}"`,
    ...pairWrites([from[0].address, from[1].address], [to[0].address, to[1].address], 'address'),
    ...pairWrites(
      [String(from[0].port), String(from[1].port)],
      [String(to[0].port), String(to[1].port)],
      'port',
    ),
    `fwd ip to ${hop.via} device "${hop.dev}"`,
  ];
}

/**
 * One flow: a chain per direction with the rewrites as constants, and the element that jumps to
 * it. Each chain first counts into the session's named counter for its direction (`counter`, the
 * session's counter id: {@link counterNames}; the chain id by default, which is the counter id of
 * a first install), then writes the addresses and the ports ({@link pairWrites}) and hands the
 * datagram to the next hop.
 */
export function addFlowLines(
  f: KernelFlow,
  id: number,
  listen: Endpoint,
  worker?: number,
  counter: number = id,
): string[] {
  const n = counterNames(counter, worker);
  const source = { address: f.source, port: f.upstreamPort };
  const up = chainStatements(n.up, [f.client, listen], [source, f.backend], f.toBackend);
  const down = chainStatements(n.down, [f.backend, source], [listen, f.client], f.toClient);
  const c = chainNames(id, worker);
  return [
    `add chain ${T} ${c.up} { ${up.join('; ')}; }`,
    `add chain ${T} ${c.down} { ${down.join('; ')}; }`,
    `add element ${T} ${FLOWS} { ${upKeyOf(f, listen)} : goto ${c.up} }`,
    `add element ${T} ${FLOWS} { ${downKeyOf(f)} : goto ${c.down} }`,
  ];
}

/** The elements first: a chain an element still jumps to cannot be deleted. */
export function deleteFlowLines(f: KernelFlow, id: number, listen: Endpoint, worker?: number): string[] {
  const c = chainNames(id, worker);
  return [
    `delete element ${T} ${FLOWS} { ${upKeyOf(f, listen)} }`,
    `delete element ${T} ${FLOWS} { ${downKeyOf(f)} }`,
    `delete chain ${T} ${c.up}`,
    `delete chain ${T} ${c.down}`,
  ];
}

/**
 * What one worker has in the table, as listed (listing.ts): element keys in nft's syntax, chains,
 * counters.
 */
export interface OwnedObjects {
  /** `ADDR . PORT . ADDR . PORT`, as an element statement names the key. */
  readonly elements: readonly string[];
  readonly chains: readonly string[];
  readonly counters: readonly string[];
}

/**
 * Deletes every listed element, chain and counter of one worker, in that order (a chain an element
 * jumps to, a counter a chain references, cannot be deleted). The start of a worker's
 * resynchronisation: nothing of another worker's is named, so their flows are untouched whatever
 * this worker's plan believed.
 */
export function deleteOwnedLines(o: OwnedObjects): string[] {
  return [
    ...o.elements.map((k) => `delete element ${T} ${FLOWS} { ${k} }`),
    ...o.chains.map((c) => `delete chain ${T} ${c}`),
    ...o.counters.map((c) => `delete counter ${T} ${c}`),
  ];
}
