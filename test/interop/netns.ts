// Test topology in network namespaces: clients behind a real NAT, the proxy, and pods on a bridge.
//
//   c1  c2  c3 (192.168.77.11-13, "home")            pod1 10.77.2.11 ─┐
//    └───┼───┘ bridge br0 in rtr (192.168.77.1)       pod2 10.77.2.12 ─┼─ bridge br0 in prx (10.77.2.1)
//       rtr  ── masquerade on wan0 (198.18.0.2) ──    janus 10.77.2.13 ─┘
//             wan0 of prx (198.18.0.1, the proxy's public address; ip_forward off)
//
// Every interface is created directly inside its namespace (`ip link add … netns …`), so nothing
// appears on the host's interfaces. Addresses: RFC 1918 for home and pods, RFC 2544 (198.18/15)
// for the "public" segment. Namespace names carry the owning pid: a later run deletes those whose
// owner is gone (crashed run); `destroy()` and an exit hook remove this run's.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  createWriteStream,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  type WriteStream,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const NS_PREFIX = 'iit-';

export const ADDR = {
  home: {
    net: '192.168.77.0/24',
    gw: '192.168.77.1',
    c1: '192.168.77.11',
    c2: '192.168.77.12',
    c3: '192.168.77.13',
  },
  wan: { proxy: '198.18.0.1', natPublic: '198.18.0.2' },
  pods: { gw: '10.77.2.1', pod1: '10.77.2.11', pod2: '10.77.2.12', janus: '10.77.2.13' },
} as const;

export const CLIENTS = ['c1', 'c2', 'c3'] as const;
export const PODS = ['pod1', 'pod2', 'janus'] as const;
export type ClientName = (typeof CLIENTS)[number];
export type PodName = (typeof PODS)[number];
export type NsRole = ClientName | PodName | 'rtr' | 'prx';

export interface SpawnOptions {
  /** Name used for the log file and error messages. */
  label: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Send stdout to the log file too (for servers that log to stdout, e.g. Janus). */
  stdoutToLog?: boolean;
}

/** Namespaces and their children; `R` names the roles (the interop layout by default). */
export class Topology<R extends string = NsRole> {
  readonly prefix: string;
  readonly roles: readonly R[];
  /** Namespaces of crashed earlier runs that this run removed. */
  staleRemoved: string[] = [];
  readonly logDir: string;
  private readonly children = new Set<ChildProcess>();
  private readonly logs = new Set<WriteStream>();
  private destroyed = false;
  private readonly onExit = (): void => this.destroySync();
  /** Ctrl-C / a killed CI job: clean up, then die of the same signal as without the handler. */
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.destroySync();
    process.kill(process.pid, signal);
  };

  constructor(prefix: string, logDir: string, roles: readonly R[]) {
    this.prefix = prefix;
    this.logDir = logDir;
    this.roles = roles;
    process.on('exit', this.onExit);
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
  }

  ns(role: R): string {
    return this.prefix + role;
  }

  allNamespaces(): string[] {
    return this.roles.map((r) => this.ns(r));
  }

  /** Runs a short command inside a namespace and returns its stdout. */
  async exec(role: R, cmd: string, args: string[], timeoutMs = 10_000): Promise<string> {
    const { stdout } = await execFileP('ip', ['netns', 'exec', this.ns(role), cmd, ...args], {
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    });
    return stdout;
  }

  /**
   * Starts a long-running child inside a namespace, in its own process group (killed as a group
   * by `killAll`/`destroy`). stdout stays a pipe for the caller (or, with `stdoutToLog`, goes to
   * the log file too); stderr goes to the log file.
   */
  spawn(role: R, cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
    if (this.destroyed) throw new Error('topology destroyed');
    const logPath = join(this.logDir, `${opts.label}.log`);
    const log = createWriteStream(logPath, { flags: 'a' });
    this.logs.add(log);
    // stdoutToLog: the child writes its log file itself. Through a pipe to this process, a child
    // whose writes are synchronous (Node's stdout on a pipe) would wait on this runner whenever it
    // is slow to read — a stall measured as the child's.
    const fd = opts.stdoutToLog ? openSync(logPath, 'a') : undefined;
    const child = spawn('ip', ['netns', 'exec', this.ns(role), cmd, ...args], {
      detached: true,
      stdio: fd === undefined ? ['pipe', 'pipe', 'pipe'] : ['pipe', fd, fd],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    if (fd !== undefined) closeSync(fd);
    child.stderr?.pipe(log);
    // A child that dies closes its stdin; writing to it then must not crash the runner.
    child.stdin?.on('error', () => {});
    child.on('error', (err) => log.write(`spawn error: ${String(err)}\n`));
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  logPath(label: string): string {
    return join(this.logDir, `${label}.log`);
  }

  /** Kills one child's process group (SIGKILL: these are test peers, nothing to flush). */
  kill(child: ChildProcess): void {
    killGroup(child.pid);
    this.children.delete(child);
  }

  killAll(): void {
    for (const c of this.children) killGroup(c.pid);
    this.children.clear();
  }

  /** Direct variant for scenario (d): the proxy namespace routes clients straight to the pods. */
  async setForwarding(on: boolean, role = 'prx' as R): Promise<void> {
    await this.exec(role, 'sysctl', ['-qw', `net.ipv4.ip_forward=${on ? 1 : 0}`]);
    const now = (await this.exec(role, 'sysctl', ['-n', 'net.ipv4.ip_forward'])).trim();
    if (now !== (on ? '1' : '0')) throw new Error(`prx ip_forward is ${now}`);
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** Idempotent, synchronous so it can also run from the process 'exit' hook. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    this.killAll();
    for (const ns of this.allNamespaces()) removeNamespace(ns);
    for (const l of this.logs) l.end();
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Kills everything still running inside the namespace, then deletes it (its links go with it). */
function removeNamespace(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5000 })
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  } catch {
    // namespace does not exist
  }
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 });
  } catch {
    // not there
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Deletes namespaces left by runs whose process is gone. Returns their names. */
export function cleanupStale(): string[] {
  let list = '';
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 5000 });
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = /^iit-(\d+)-/.exec(name);
    if (!m) continue;
    if (pidAlive(Number(m[1]))) continue;
    removeNamespace(name);
    removed.push(name);
  }
  // Log folders of finished runs (the newest few stay for a look after a failure).
  const dirs = readdirSync(tmpdir())
    .map((d) => /^ice-ingress-interop-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null && !pidAlive(Number(m[1])))
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  for (const m of dirs.slice(3)) rmSync(join(tmpdir(), m[0]), { recursive: true, force: true });
  return removed;
}

/**
 * A LAN: a bridge `br0` in `hub` with address `gw`/24, and per host a veth pair, `eth0` in the
 * host (address/24, default route via `gw`) and `port` on the bridge.
 */
export async function bridgeLan(
  hub: string,
  gw: string,
  hosts: Array<{ ns: string; port: string; addr: string }>,
) {
  await ip(['-n', hub, 'link', 'add', 'br0', 'type', 'bridge']);
  await ip(['-n', hub, 'addr', 'add', `${gw}/24`, 'dev', 'br0']);
  await ip(['-n', hub, 'link', 'set', 'br0', 'up']);
  for (const h of hosts) {
    await ip(['link', 'add', 'eth0', 'netns', h.ns, 'type', 'veth', 'peer', 'name', h.port, 'netns', hub]);
    await ip(['-n', hub, 'link', 'set', h.port, 'master', 'br0']);
    await ip(['-n', hub, 'link', 'set', h.port, 'up']);
    await ip(['-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', 'eth0']);
    await ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    await ip(['-n', h.ns, 'route', 'add', 'default', 'via', gw]);
  }
}

export async function ip(args: string[]): Promise<void> {
  try {
    await execFileP('ip', args, { timeout: 5000 });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${e.stderr?.trim() ?? String(err)}`);
  }
}

export async function nsSysctl(ns: string, key: string, value: string): Promise<void> {
  await execFileP('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `${key}=${value}`], { timeout: 5000 });
}

/**
 * Empty namespaces for `roles` (loopback up, IPv6 off), named and cleaned up like the interop
 * topology's (stale ones of crashed runs first). On failure removes what was made and rethrows.
 */
export async function createNamespaces<R extends string>(roles: readonly R[]): Promise<Topology<R>> {
  const stale = cleanupStale();
  const prefix = `${NS_PREFIX}${process.pid}-`;
  const logDir = join(tmpdir(), `ice-ingress-interop-${process.pid}`);
  mkdirSync(logDir, { recursive: true });
  const topo = new Topology<R>(prefix, logDir, roles);
  topo.staleRemoved = stale;
  try {
    for (const ns of topo.allNamespaces()) {
      await ip(['netns', 'add', ns]);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      // IPv4 only: fewer candidates, and nothing to leak through link-local v6.
      await nsSysctl(ns, 'net.ipv6.conf.all.disable_ipv6', '1');
      await nsSysctl(ns, 'net.ipv6.conf.default.disable_ipv6', '1');
    }
    return topo;
  } catch (err) {
    topo.destroySync();
    throw err;
  }
}

/** Builds the whole topology; on any failure removes what was made and rethrows. */
export async function createTopology(): Promise<Topology> {
  const topo = await createNamespaces<NsRole>([...CLIENTS, 'rtr', 'prx', ...PODS]);
  const n = (r: NsRole): string => topo.ns(r);
  try {
    // Home LAN: bridge in the router namespace, one veth per client.
    await bridgeLan(
      n('rtr'),
      ADDR.home.gw,
      CLIENTS.map((c) => ({ ns: n(c), port: `h${c.slice(1)}`, addr: ADDR.home[c] })),
    );

    // WAN: router <-> proxy. The router masquerades: all clients share ADDR.wan.natPublic.
    await ip([
      'link',
      'add',
      'wan0',
      'netns',
      n('rtr'),
      'type',
      'veth',
      'peer',
      'name',
      'wan0',
      'netns',
      n('prx'),
    ]);
    await ip(['-n', n('rtr'), 'addr', 'add', `${ADDR.wan.natPublic}/24`, 'dev', 'wan0']);
    await ip(['-n', n('prx'), 'addr', 'add', `${ADDR.wan.proxy}/24`, 'dev', 'wan0']);
    await ip(['-n', n('rtr'), 'link', 'set', 'wan0', 'up']);
    await ip(['-n', n('prx'), 'link', 'set', 'wan0', 'up']);
    await ip(['-n', n('rtr'), 'route', 'add', 'default', 'via', ADDR.wan.proxy]);
    await nsSysctl(n('rtr'), 'net.ipv4.ip_forward', '1');
    const ruleset = [
      'table ip nat {',
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      '    oifname "wan0" masquerade',
      '  }',
      '}',
    ].join('\n');
    await new Promise<void>((resolve, reject) => {
      const p = execFile(
        'ip',
        ['netns', 'exec', n('rtr'), 'nft', '-f', '-'],
        { timeout: 5000 },
        (err, _o, se) => (err ? reject(new Error(`nft: ${se || String(err)}`)) : resolve()),
      );
      p.stdin?.end(ruleset);
    });

    // Pod network: bridge in the proxy namespace. Forwarding off: the only way from the
    // clients to a pod is through a process in the proxy namespace. The pods' default route via
    // prx is used only when prx forwards (direct variant of scenario d).
    await bridgeLan(
      n('prx'),
      ADDR.pods.gw,
      PODS.map((p, i) => ({ ns: n(p), port: `p${i + 1}`, addr: ADDR.pods[p] })),
    );
    await topo.setForwarding(false);
    return topo;
  } catch (err) {
    topo.destroySync();
    throw err;
  }
}
