// A proxy tier in network namespaces (issue 16): a load balancer that spreads the public address
// over the replicas as kube-proxy does, each replica in its own namespace, fake JVBs on the same
// cluster network, clients behind a NAT, and an attacker with many source addresses.
//
//   cli 192.168.79.2 ── rtr (nftables masquerade fully-random) 198.18.1.2 ─┐
//   atk 198.18.2.2 (sources 198.19.0.0/16, AnyIP) ─────────────────────────┤
//                                                                          lb: VIP 198.18.0.1:10000
//                                 DNAT: numgen random mod N map { replicas }, conntrack
//                                                                          │ br0 10.79.0.1
//        r1 … r6 10.79.0.11 … 16 (:10000 public, peer port between them)   │
//        jvb 10.79.0.21, .22 (fake JVBs), .23 (a real WebRTC server), :10000 ┘
//
// Replicas reach each other and the JVBs on the bridge (layer 2, no NAT); their replies to clients
// go through lb (default route), whose conntrack turns the replica's address back into the VIP,
// as kube-proxy's DNAT does for a LoadBalancer Service with externalTrafficPolicy: Local (the
// replica sees the client's address; here the NAT's). Removing a replica follows kube-proxy: the
// endpoint leaves the DNAT map, then its UDP conntrack entries are deleted (`conntrack -D
// --orig-dst VIP --dst-nat ENDPOINT`), so the next datagram of each of its flows is balanced anew.
// The namespaces are made and removed by test/interop/netns.ts (names `iit-<pid>-*`).
import { execFile } from 'node:child_process';
import { bridgeLan, createNamespaces, ip, nsSysctl, type Topology } from '../interop/netns.ts';

export const REPLICA_SLOTS = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6'] as const;
export type Slot = (typeof REPLICA_SLOTS)[number];
export type TierRole = 'cli' | 'rtr' | 'atk' | 'lb' | 'jvb' | Slot;
const ROLES: readonly TierRole[] = ['cli', 'rtr', 'atk', 'lb', 'jvb', ...REPLICA_SLOTS];

export const PORT = 10000;
export const TIER = {
  vip: '198.18.0.1',
  home: { cli: '192.168.79.2', gw: '192.168.79.1' },
  wan: { lb: '198.18.1.1', rtr: '198.18.1.2' },
  atk: { lb: '198.18.2.1', atk: '198.18.2.2', sources: '198.19.0.0/16' },
  /** jvbs: the fake JVBs; pod: a real WebRTC server (node-datachannel) in the same namespace. */
  cluster: { gw: '10.79.0.1', jvbs: ['10.79.0.21', '10.79.0.22'] as const, pod: '10.79.0.23' },
} as const;

export function replicaAddress(slot: Slot): string {
  return `10.79.0.${10 + REPLICA_SLOTS.indexOf(slot) + 1}`;
}

/** One UDP conntrack entry: original source/destination, and where the reply comes from. */
export interface Flow {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  replySrc: string;
  replyDport: number;
}

export class Tier {
  readonly topo: Topology<TierRole>;
  constructor(topo: Topology<TierRole>) {
    this.topo = topo;
  }

  ns(role: TierRole): string {
    return this.topo.ns(role);
  }

  /** Applies an nftables script inside a namespace (one transaction). */
  nft(role: TierRole, script: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const p = execFile(
        'ip',
        ['netns', 'exec', this.ns(role), 'nft', '-f', '-'],
        { timeout: 10_000 },
        (err, _o, se) => (err ? reject(new Error(`nft in ${role}: ${se || String(err)}`)) : resolve()),
      );
      p.stdin?.end(script);
    });
  }

  /**
   * The balancer's endpoints, replaced in one transaction as kube-proxy's nftables mode replaces a
   * service chain: new flows pick one at random (`numgen random mod N`); none = dropped.
   */
  async setEndpoints(slots: readonly Slot[]): Promise<void> {
    const rule =
      slots.length === 0
        ? 'drop'
        : `dnat to numgen random mod ${slots.length} map { ${slots
            .map((s, i) => `${i} : ${replicaAddress(s)}`)
            .join(', ')} }`;
    await this.nft('lb', `flush chain ip tier_lb svc\nadd rule ip tier_lb svc ${rule}\n`);
  }

  /**
   * kube-proxy's clean-up for a UDP endpoint that left the service: deletes the conntrack entries
   * whose destination was the VIP and were DNAT-ed to it. Returns how many it deleted.
   */
  async deleteConntrack(slot: Slot): Promise<number> {
    return conntrackDelete(this.ns('lb'), [
      '-p',
      'udp',
      '--orig-dst',
      TIER.vip,
      '--dst-nat',
      replicaAddress(slot),
    ]);
  }

  /** The client-side NAT forgets every mapping: each client flow leaves from a new random port. */
  async natRebind(): Promise<number> {
    return conntrackDelete(this.ns('rtr'), ['-p', 'udp']);
  }

  /** Datagrams the kernel dropped in a namespace for a full socket receive buffer (Udp RcvbufErrors). */
  async udpRcvbufErrors(role: TierRole): Promise<number> {
    const lines = (await this.topo.exec(role, 'cat', ['/proc/net/snmp']))
      .split('\n')
      .filter((l) => l.startsWith('Udp:'));
    const names = lines[0]?.split(/\s+/) ?? [];
    return Number(lines[1]?.split(/\s+/)[names.indexOf('RcvbufErrors')] ?? Number.NaN);
  }

  /**
   * Counts, in the jvb namespace, every source address:port that sends to `server` (a set the
   * kernel fills): what a backend whose own state cannot be read (a real WebRTC stack) saw.
   * Starts empty.
   */
  async watchSources(server: string): Promise<void> {
    await this.nft('jvb', 'table ip tier_seen\ndelete table ip tier_seen\n').catch(() => {});
    await this.nft(
      'jvb',
      [
        'table ip tier_seen {',
        '  set seen { type ipv4_addr . inet_service; flags dynamic; size 65536; }',
        '  chain input {',
        '    type filter hook input priority 0; policy accept;',
        `    ip daddr ${server} udp dport ${PORT} ip saddr != ${server} add @seen { ip saddr . udp sport }`,
        '  }',
        '}',
        '',
      ].join('\n'),
    );
  }

  /** The sources watchSources() has seen so far, as `ip:port`. */
  async seenSources(): Promise<string[]> {
    const j = JSON.parse(
      await this.topo.exec('jvb', 'nft', ['-j', 'list', 'set', 'ip', 'tier_seen', 'seen']),
    ) as {
      nftables: Array<{ set?: { elem?: Array<{ concat: [string, number] }> } }>;
    };
    const elems = j.nftables.find((x) => x.set !== undefined)?.set?.elem ?? [];
    return elems.map((e) => `${e.concat[0]}:${e.concat[1]}`).sort();
  }

  /** UDP conntrack entries of a namespace. */
  async flows(role: TierRole): Promise<Flow[]> {
    const out = await this.topo.exec(role, 'conntrack', ['-L', '-p', 'udp'], 10_000).catch(() => '');
    const flows: Flow[] = [];
    for (const line of out.split('\n')) {
      const m = /src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) .*?src=(\S+) dst=\S+ sport=\d+ dport=(\d+)/.exec(
        line,
      );
      if (m === null) continue;
      flows.push({
        src: m[1]!,
        sport: Number(m[3]),
        dst: m[2]!,
        dport: Number(m[4]),
        replySrc: m[5]!,
        replyDport: Number(m[6]),
      });
    }
    return flows;
  }

  /**
   * Where each client port goes now, from one read of each table: its public port (the NAT's
   * mapping; the replicas log clients by it) and the replica it reaches (joined with the
   * balancer's public port → replica address). Ports without both entries have no replica.
   */
  async clientPorts(): Promise<{ replicaOf: Map<number, string>; publicPortOf: Map<number, number> }> {
    const [nat, lb] = await Promise.all([this.flows('rtr'), this.flows('lb')]);
    const byPublicPort = new Map<number, string>();
    for (const f of lb) {
      if (f.dst === TIER.vip && f.dport === PORT && f.src === TIER.wan.rtr)
        byPublicPort.set(f.sport, f.replySrc);
    }
    const replicaOf = new Map<number, string>();
    const publicPortOf = new Map<number, number>();
    for (const f of nat) {
      if (f.src !== TIER.home.cli || f.dst !== TIER.vip) continue;
      publicPortOf.set(f.sport, f.replyDport);
      const replica = byPublicPort.get(f.replyDport);
      if (replica !== undefined) replicaOf.set(f.sport, replica);
    }
    return { replicaOf, publicPortOf };
  }
}

/**
 * `conntrack -D ARGS` inside network namespace `ns` (its full name); how many entries it deleted.
 * Also used by the clients' agent, which rebinds the NAT itself (load-agent.ts).
 */
export function conntrackDelete(ns: string, args: string[]): Promise<number> {
  // conntrack exits 1 when nothing matched; its summary line goes to stderr either way.
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, 'conntrack', '-D', ...args],
      { timeout: 10_000 },
      (err, _out, se) => {
        const m = /(\d+) flow entries have been deleted/.exec(se);
        if (m !== null) resolve(Number(m[1]));
        else reject(new Error(`conntrack -D in ${ns}: ${se || String(err)}`));
      },
    );
  });
}

/** Builds the tier's namespaces and links; on any failure removes what was made and rethrows. */
export async function createTier(): Promise<Tier> {
  const topo = await createNamespaces<TierRole>(ROLES);
  const n = (r: TierRole): string => topo.ns(r);
  const link = async (a: TierRole, aDev: string, b: TierRole, bDev: string): Promise<void> => {
    await ip(['link', 'add', aDev, 'netns', n(a), 'type', 'veth', 'peer', 'name', bDev, 'netns', n(b)]);
  };
  const addr = async (r: TierRole, dev: string, cidr: string): Promise<void> => {
    await ip(['-n', n(r), 'addr', 'add', cidr, 'dev', dev]);
    await ip(['-n', n(r), 'link', 'set', dev, 'up']);
  };
  try {
    // Cluster network: replicas and JVBs on a bridge in lb, default route via lb.
    await bridgeLan(n('lb'), TIER.cluster.gw, [
      ...REPLICA_SLOTS.map((s) => ({ ns: n(s), port: s, addr: replicaAddress(s) })),
      { ns: n('jvb'), port: 'jvb', addr: TIER.cluster.jvbs[0] },
    ]);
    await ip(['-n', n('jvb'), 'addr', 'add', `${TIER.cluster.jvbs[1]}/24`, 'dev', 'eth0']);
    await ip(['-n', n('jvb'), 'addr', 'add', `${TIER.cluster.pod}/24`, 'dev', 'eth0']);

    // Home: cli behind rtr.
    await link('cli', 'eth0', 'rtr', 'lan0');
    await addr('cli', 'eth0', `${TIER.home.cli}/24`);
    await addr('rtr', 'lan0', `${TIER.home.gw}/24`);
    await ip(['-n', n('cli'), 'route', 'add', 'default', 'via', TIER.home.gw]);

    // WAN: rtr and atk each on their own link to lb.
    await link('rtr', 'wan0', 'lb', 'rtr0');
    await addr('rtr', 'wan0', `${TIER.wan.rtr}/24`);
    await addr('lb', 'rtr0', `${TIER.wan.lb}/24`);
    await ip(['-n', n('rtr'), 'route', 'add', 'default', 'via', TIER.wan.lb]);
    await link('atk', 'eth0', 'lb', 'atk0');
    await addr('atk', 'eth0', `${TIER.atk.atk}/24`);
    await addr('lb', 'atk0', `${TIER.atk.lb}/24`);
    await ip(['-n', n('atk'), 'route', 'add', 'default', 'via', TIER.atk.lb]);
    // AnyIP: the attacker can bind any address of its /16 without adding each one.
    await ip(['-n', n('atk'), 'route', 'add', 'local', TIER.atk.sources, 'dev', 'lo']);
    await ip(['-n', n('lb'), 'route', 'add', TIER.atk.sources, 'via', TIER.atk.atk]);
    await ip(['-n', n('lb'), 'addr', 'add', `${TIER.vip}/32`, 'dev', 'lo']);

    await nsSysctl(n('lb'), 'net.ipv4.ip_forward', '1');
    await nsSysctl(n('rtr'), 'net.ipv4.ip_forward', '1');
    const tier = new Tier(topo);
    await tier.nft(
      'lb',
      [
        'table ip tier_lb {',
        '  chain prerouting {',
        '    type nat hook prerouting priority dstnat; policy accept;',
        `    ip daddr ${TIER.vip} udp dport ${PORT} goto svc`,
        '  }',
        '  chain svc {',
        '    drop',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    // fully-random: a mapping made after a flush takes a random port (plain masquerade would keep
    // the client's own port when it is free, and a flush would not rebind anything).
    await tier.nft(
      'rtr',
      [
        'table ip tier_nat {',
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    oifname "wan0" masquerade fully-random',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    return tier;
  } catch (err) {
    topo.destroySync();
    throw err;
  }
}
