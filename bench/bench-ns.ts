/**
 * The network namespaces of `npm run bench:fastpath` and `npm run bench:scale`, and what both do
 * in them (root):
 *
 *   cli 10.78.1.2 ── veth ── prx 10.78.1.1 | 10.78.2.1 ── veth ── pod 10.78.2.2:10000 (C echo)
 *
 * The proxy namespace's receive work is steered to core 0 with RPS (its relay process is pinned
 * there by the caller), the client's and the pod's to core 1. Made with the interop suite's
 * namespace helpers (test/interop/netns.ts): named per run, removed on exit.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createNamespaces, ip, nsSysctl, type Topology } from '../test/interop/netns.ts';

export const root = fileURLToPath(new URL('..', import.meta.url));
export const CLI = '10.78.1.2';
export const PRX_C = '10.78.1.1';
export const PRX_P = '10.78.2.1';
export const POD = '10.78.2.2';
export const PORT = 10000;

export type Role = 'cli' | 'prx' | 'pod';

/**
 * Checks for root, compiles bench/udpbench.c into .bench/ and makes the three (empty) namespaces.
 */
export async function benchNamespaces(name: string): Promise<{
  topo: Topology<Role>;
  n: (r: Role) => string;
  sh: (role: Role, script: string) => Promise<string>;
  binary: string;
}> {
  if (process.getuid?.() !== 0) {
    console.error(
      `${name} needs root (network namespaces, nftables, BPF); see sh test/fastpath-ns/prereqs.sh --bench`,
    );
    process.exit(1);
  }
  const binary = `${root}.bench/udpbench`;
  mkdirSync(`${root}.bench`, { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-o', binary, `${root}bench/udpbench.c`], { stdio: 'inherit' });
  const topo = await createNamespaces<Role>(['cli', 'prx', 'pod']);
  return {
    topo,
    n: (r) => topo.ns(r),
    sh: (role, script) => topo.exec(role, 'sh', ['-c', script]),
    binary,
  };
}

/** The links, addresses, routes and RPS masks of the picture above. */
export async function buildBenchNamespaces(topo: Topology<Role>): Promise<void> {
  const n = (r: Role): string => topo.ns(r);
  await ip([
    'link',
    'add',
    'eth0',
    'netns',
    n('cli'),
    'type',
    'veth',
    'peer',
    'name',
    'vc',
    'netns',
    n('prx'),
  ]);
  await ip([
    'link',
    'add',
    'eth0',
    'netns',
    n('pod'),
    'type',
    'veth',
    'peer',
    'name',
    'vp',
    'netns',
    n('prx'),
  ]);
  const links: Array<[Role, string, string]> = [
    ['cli', 'eth0', `${CLI}/24`],
    ['prx', 'vc', `${PRX_C}/24`],
    ['prx', 'vp', `${PRX_P}/24`],
    ['pod', 'eth0', `${POD}/24`],
  ];
  for (const [r, dev, addr] of links) {
    await ip(['-n', n(r), 'addr', 'add', addr, 'dev', dev]);
    await ip(['-n', n(r), 'link', 'set', dev, 'up']);
  }
  await ip(['-n', n('cli'), 'route', 'add', 'default', 'via', PRX_C]);
  await ip(['-n', n('pod'), 'route', 'add', 'default', 'via', PRX_P]);
  // Plain routing and nginx's replies need forwarding; the kernel paths do not (they hand media to
  // the next hop from the ingress hook) and work the same with it on.
  await nsSysctl(n('prx'), 'net.ipv4.ip_forward', '1');
  // RPS: the proxy namespace's receive work on core 0, the client's and the pod's on core 1.
  const sh = (role: Role, script: string): Promise<string> => topo.exec(role, 'sh', ['-c', script]);
  await sh(
    'prx',
    'echo 1 > /sys/class/net/vc/queues/rx-0/rps_cpus; echo 1 > /sys/class/net/vp/queues/rx-0/rps_cpus',
  );
  await sh('cli', 'echo 2 > /sys/class/net/eth0/queues/rx-0/rps_cpus');
  await sh('pod', 'echo 2 > /sys/class/net/eth0/queues/rx-0/rps_cpus');
}

/** Spawns in a namespace and resolves once the child printed `marker` on stdout. */
export function waitingSpawner(topo: Topology<Role>) {
  return (role: Role, cmd: string, args: string[], label: string, marker: string) => {
    const child = topo.spawn(role, cmd, args, { label, stdoutToLog: false });
    return new Promise<typeof child>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${label} did not start: ${out.slice(-500)}`)), 15_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes(marker)) {
          clearTimeout(timer);
          resolve(child);
        }
      });
      child.once('exit', (code) => reject(new Error(`${label} exited ${code}: ${out.slice(-500)}`)));
    });
  };
}

/** `nice` arguments that run `cmd` at the highest priority, pinned to `core`. */
export const pinned = (core: 0 | 1, ...cmd: string[]): string[] => [
  '-n',
  '-20',
  'taskset',
  '-c',
  String(core),
  ...cmd,
];

/** The C echo in the pod namespace, on core 1: a JVB that answers every check and echoes media. */
export function startEcho(topo: Topology<Role>, binary: string) {
  return waitingSpawner(topo)('pod', 'nice', pinned(1, binary, 'echo', POD, String(PORT)), 'echo', 'ready');
}
