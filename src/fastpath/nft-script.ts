/**
 * The text of every nftables transaction the fast path sends (`nft -f -`): the table with its
 * chains and maps, and the per-session map elements. Pure functions of their arguments, so the
 * exact rules are unit-tested without root. Design and rule-by-rule reasons: docs/fast-path.md.
 *
 * Only one table is ever named: `ip ice_ingress`. IPv4 only (docs/fast-path.md, "IPv6").
 */

export const TABLE = 'ice_ingress';
export const FAMILY = 'ip';
const T = `${FAMILY} ${TABLE}`;

/** Marks set in prerouting so postrouting knows which direction to rewrite the source of. */
export const MARK_UP = 0x1ce10001;
export const MARK_DOWN = 0x1ce10002;

/** Per-element counters live on these two maps (one lookup per packet and direction). */
export const COUNTED_UP = 'c2b_addr';
export const COUNTED_DOWN = 'b2c_addr';

export interface TableParams {
  /** The address and port clients send to (the listening socket's, a specific IPv4 address). */
  readonly listenAddress: string;
  readonly listenPort: number;
  /** Local ports of upstream sockets; the reply rule only looks at these. undefined = any port. */
  readonly upstreamPorts: readonly [number, number] | undefined;
}

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** One session's kernel path: its current client 5-tuple, its backend, its upstream socket. */
export interface KernelFlow {
  readonly client: Endpoint;
  readonly backend: Endpoint;
  /** The upstream socket's local port: the source port the backend sees. */
  readonly upstreamPort: number;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * Creates the table, replacing a stale one from a crashed run in the same transaction
 * (`add` makes `delete` safe when there is none). Nothing outside the table is named.
 *
 * - Raw priority (-300) runs before conntrack, so `notrack` keeps forwarded media out of the
 *   connection table (stateless, and no clash with entries made while Node relayed).
 * - `@th,64,8 > 3`: the first UDP payload byte. RFC 7983: 0-3 is STUN, which always goes to Node
 *   (consent checks, rebinding, ICE restart); DTLS, SRTP/SRTCP (and SCTP over DTLS) take the
 *   kernel path.
 * - A map miss ends the rule (no statement after a failed lookup runs): the datagram reaches
 *   Node's socket untouched.
 * - Lookups come before the statements that rewrite a field of their key; `accept` ends this
 *   chain only (other tables' chains still see the packet), so a rewritten datagram costs no
 *   second lookup here.
 * - The source is rewritten in postrouting: a local source address in prerouting makes the
 *   packet a martian, which the kernel drops.
 */
export function tableScript(p: TableParams): string {
  const ports = p.upstreamPorts === undefined ? '' : ` udp dport ${p.upstreamPorts[0]}-${p.upstreamPorts[1]}`;
  const upKey = 'ip saddr . udp sport';
  const downKey = 'ip saddr . udp sport . udp dport';
  return `add table ${T}
delete table ${T}
table ${T} {
  map c2b_addr { type ipv4_addr . inet_service : ipv4_addr; counter; }
  map c2b_port { type ipv4_addr . inet_service : inet_service; }
  map c2b_sport { type ipv4_addr . inet_service : inet_service; }
  map b2c_addr { type ipv4_addr . inet_service . inet_service : ipv4_addr; counter; }
  map b2c_port { type ipv4_addr . inet_service . inet_service : inet_service; }
  map bsrc { type ipv4_addr : ipv4_addr; }
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    ip daddr ${p.listenAddress} udp dport ${p.listenPort} @th,64,8 > 3 ip daddr set ${upKey} map @c2b_addr udp dport set ${upKey} map @c2b_port udp sport set ${upKey} map @c2b_sport meta mark set ${hex(MARK_UP)} notrack accept
    meta l4proto udp${ports} @th,64,8 > 3 ip daddr set ${downKey} map @b2c_addr udp dport set ${downKey} map @b2c_port udp sport set ${p.listenPort} meta mark set ${hex(MARK_DOWN)} notrack accept
  }
  chain post {
    type filter hook postrouting priority srcnat; policy accept;
    meta mark ${hex(MARK_UP)} ip saddr set ip daddr map @bsrc
    meta mark ${hex(MARK_DOWN)} ip saddr set ${p.listenAddress}
  }
}
`;
}

/** Removes the table (shutdown, drain). `add` first: no error when it is already gone. */
export function deleteTableScript(): string {
  return `add table ${T}\ndelete table ${T}\n`;
}

const ep = (e: Endpoint): string => `${e.address} . ${e.port}`;
const downKeyOf = (f: KernelFlow): string => `${ep(f.backend)} . ${f.upstreamPort}`;

/** The five elements of one flow. */
export function addFlowLines(f: KernelFlow): string[] {
  const up = ep(f.client);
  const down = downKeyOf(f);
  return [
    `add element ${T} c2b_addr { ${up} : ${f.backend.address} }`,
    `add element ${T} c2b_port { ${up} : ${f.backend.port} }`,
    `add element ${T} c2b_sport { ${up} : ${f.upstreamPort} }`,
    `add element ${T} b2c_addr { ${down} : ${f.client.address} }`,
    `add element ${T} b2c_port { ${down} : ${f.client.port} }`,
  ];
}

export function deleteFlowLines(f: KernelFlow): string[] {
  const up = ep(f.client);
  const down = downKeyOf(f);
  return [
    `delete element ${T} c2b_addr { ${up} }`,
    `delete element ${T} c2b_port { ${up} }`,
    `delete element ${T} c2b_sport { ${up} }`,
    `delete element ${T} b2c_addr { ${down} }`,
    `delete element ${T} b2c_port { ${down} }`,
  ];
}

/** Source address of upstream datagrams to a backend address (what Node's socket uses). */
export function addSourceLine(backendAddress: string, source: string): string {
  return `add element ${T} bsrc { ${backendAddress} : ${source} }`;
}

export function deleteSourceLine(backendAddress: string): string {
  return `delete element ${T} bsrc { ${backendAddress} }`;
}

/** Empties every map (resynchronisation after a failed transaction). */
export function flushMapsLines(): string[] {
  return ['c2b_addr', 'c2b_port', 'c2b_sport', 'b2c_addr', 'b2c_port', 'bsrc'].map(
    (m) => `flush map ${T} ${m}`,
  );
}

/** Keys as `nft -j` prints them, so counters can be matched to flows (kernel-counters.ts). */
export function upKey(client: Endpoint): string {
  return `${client.address}|${client.port}`;
}

export function downKey(f: KernelFlow): string {
  return `${f.backend.address}|${f.backend.port}|${f.upstreamPort}`;
}
