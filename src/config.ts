import { isIP } from 'node:net';
import type { DatapathOptions } from './datapath/datapath.ts';
import { BadInputError } from './defs/errors.ts';
import { parseBackends } from './discovery/static.ts';
import { type PeersSource, parsePeersFlag } from './peers/peers-flag.ts';
import { MAX_WORKERS } from './workers/cpus.ts';

/**
 * Command-line and environment configuration. Every option is one row of {@link OPTIONS}: its flag,
 * its environment variable (ICE_INGRESS_ + the flag in upper snake case), default and help text,
 * so `--help`, the README table and the parser cannot drift apart. Precedence: flag > environment
 * > default. All values are checked at once and every problem is reported together
 * (fastify-style); the result is frozen.
 */

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export type DiscoveryKind = 'static' | 'k8s' | 'dns';
export type FastPathKind = 'off' | 'nftables' | 'ebpf';
/**
 * `/readyz` while draining. Kubernetes marks a terminating pod's endpoint not ready whatever its
 * probe says; the probe decides whether it is still *serving*, and kube-proxy sends a node's
 * traffic to its serving terminating endpoints when it has no ready one (externalTrafficPolicy
 * Local; all of them, Cluster) — KEP-1669. A pod that fails its probe on SIGTERM opts out of that,
 * and its node's flows are dropped until the cloud load balancer's health check moves them.
 */
export type DrainReadiness = 'unready' | 'serving';

/** Every setting; the data path's own options are a part of it, passed through as they are. */
export interface Config extends DatapathOptions {
  readonly listen: HostPort;
  /** undefined = admin HTTP disabled (`--admin off`). */
  readonly admin: HostPort | undefined;
  readonly discovery: DiscoveryKind;
  /** `--backends` text for static discovery. */
  readonly backends: string;
  readonly service: string;
  readonly namespace: string;
  readonly portName: string;
  readonly kubeconfig: string;
  readonly dnsName: string;
  readonly backendPort: number;
  readonly dnsIntervalMs: number;
  readonly dnsGraceMs: number;
  /** [first, last] port of upstream sockets; undefined = kernel-chosen ports. */
  readonly upstreamPorts: readonly [number, number] | undefined;
  readonly portQuarantineMs: number;
  readonly upstreamBind: string;
  readonly upstreamBind6: string;
  readonly socketBufferBytes: number;
  readonly drainTimeoutMs: number;
  /** What `/readyz` says while draining (docs/peers.md, "Drain"). */
  readonly drainReadiness: DrainReadiness;
  /** Kernel forwarding of established media (docs/fast-path.md). */
  readonly fastPath: FastPathKind;
  readonly logLevel: string;
  /** Data-path worker threads; `auto` = the CPUs the pod may use (src/workers/cpus.ts). */
  readonly workers: number | 'auto';
  /** The other replicas of the tier (`--peers`, docs/peers.md); `off` without. */
  readonly peers: PeersSource;
  /** The peer protocol's port; worker i binds peerPort + i. */
  readonly peerPort: number;
  /** This replica's own address among the peers (`--pod-ip`), if given. */
  readonly podIp: string | undefined;
  readonly peerTimeoutMs: number;
  /** Query rounds per second at most (each data-path thread keeps 1/N). */
  readonly peerQueryRate: number;
  readonly peerQueryBurst: number;
  readonly peerNegativeTtlMs: number;
}

interface OptionSpec {
  readonly flag: string;
  readonly arg: string;
  readonly def: string;
  readonly help: string;
}

/** Every flag, in `--help` order. Defaults are strings as a user would type them. */
export const OPTIONS: readonly OptionSpec[] = [
  { flag: 'listen', arg: 'HOST:PORT', def: '0.0.0.0:10000', help: 'public UDP address clients send to' },
  { flag: 'admin', arg: 'HOST:PORT|off', def: '0.0.0.0:9090', help: 'HTTP /metrics, /healthz, /readyz' },
  { flag: 'discovery', arg: 'static|k8s|dns', def: 'static', help: 'where backends come from' },
  { flag: 'backends', arg: 'NAME=HOST:PORT,...', def: '', help: 'static backends (discovery static)' },
  { flag: 'service', arg: 'NAME', def: '', help: 'Service whose EndpointSlices list the backends (k8s)' },
  { flag: 'namespace', arg: 'NS', def: '', help: "the Service's namespace (k8s; default: the pod's own)" },
  {
    flag: 'port-name',
    arg: 'NAME',
    def: '',
    help: 'EndpointSlice port name (k8s; default: the only UDP port)',
  },
  {
    flag: 'kubeconfig',
    arg: 'PATH',
    def: '',
    help: 'kubeconfig file (k8s; default: in-cluster, then ~/.kube/config)',
  },
  { flag: 'dns-name', arg: 'NAME', def: '', help: 'headless Service name to resolve (dns)' },
  { flag: 'backend-port', arg: 'PORT', def: '10000', help: 'backend UDP port (dns)' },
  { flag: 'dns-interval', arg: 'DURATION', def: '5s', help: 're-resolve period (dns)' },
  {
    flag: 'dns-grace',
    arg: 'DURATION',
    def: '0s',
    help: 'keep an address that left DNS as terminating this long (dns)',
  },
  {
    flag: 'idle-timeout',
    arg: 'DURATION',
    def: '60s',
    help: 'end a session after this long without client packets',
  },
  {
    flag: 'probe-timeout',
    arg: 'DURATION',
    def: '3s',
    help: 'give up finding the owner of a new ufrag after this long',
  },
  {
    flag: 'probe-rounds',
    arg: 'N',
    def: '6',
    help: 'probe rounds per new flow at most (one per client retransmit)',
  },
  {
    flag: 'probe-rate',
    arg: 'N',
    def: '5000',
    help: 'global budget of fan-out probes, datagrams to backends per second',
  },
  {
    flag: 'directed-probe-rate',
    arg: 'N',
    def: '5000',
    help: 'global budget of directed probes (prefix token, learned ufrag), datagrams per second',
  },
  {
    flag: 'strict-prefix',
    arg: 'true|false',
    def: 'false',
    help: 'drop first checks whose server ufrag has no backend prefix token (every backend uses jvb-config)',
  },
  {
    flag: 'max-pending-per-source',
    arg: 'N',
    def: '256',
    help: 'new flows being routed at once per client IP, fan-out and directed each',
  },
  { flag: 'max-sessions', arg: 'N', def: '16000', help: 'sessions at most; new flows beyond are dropped' },
  {
    flag: 'negative-ttl',
    arg: 'DURATION',
    def: '10s',
    help: 'how long an unclaimed ufrag is not probed again',
  },
  { flag: 'learned-max', arg: 'N', def: '100000', help: 'learned server ufrags kept (LRU)' },
  {
    flag: 'upstream-ports',
    arg: 'FIRST-LAST|0',
    def: '16384-32767',
    help: 'local ports of upstream sockets (kept below Linux ephemeral ports); 0 = kernel picks, no quarantine',
  },
  {
    flag: 'port-quarantine',
    arg: 'DURATION',
    def: '60s',
    help: 'an upstream port rests this long before reuse',
  },
  {
    flag: 'upstream-bind',
    arg: 'IPV4',
    def: '0.0.0.0',
    help: 'source address of upstream sockets to IPv4 backends',
  },
  {
    flag: 'upstream-bind6',
    arg: 'IPV6',
    def: '::',
    help: 'source address of upstream sockets to IPv6 backends',
  },
  {
    flag: 'socket-buffer',
    arg: 'BYTES',
    def: '4194304',
    help: 'SO_RCVBUF/SO_SNDBUF of the listening and peer sockets; 0 = OS default',
  },
  {
    flag: 'drain-timeout',
    arg: 'DURATION',
    def: '1h',
    help: 'on SIGTERM: keep relaying own and tunneled flows until none is left or this long, then exit',
  },
  {
    flag: 'drain-readiness',
    arg: 'unready|serving',
    def: 'unready',
    help: 'what /readyz answers while draining: unready (503: a load balancer that reads it sends no new flows) or serving (200: in Kubernetes a terminating pod is not ready anyway, and a serving one still gets the traffic of a node that has no other, externalTrafficPolicy Local)',
  },
  {
    flag: 'fast-path',
    arg: 'off|nftables|ebpf',
    def: 'off',
    help: 'forward established media in the kernel: nftables (needs NET_ADMIN and nft) or ebpf (needs BPF, NET_ADMIN, libbpf and the built program); both need --listen with a specific IPv4 address',
  },
  { flag: 'log-level', arg: 'LEVEL', def: 'info', help: 'fatal|error|warn|info|debug|trace|silent' },
  {
    flag: 'workers',
    arg: 'N|auto',
    def: '1',
    help: 'data-path threads sharing the listening port (SO_REUSEPORT); auto = CPUs of the cgroup quota',
  },
  {
    flag: 'peers',
    arg: 'IP[:PORT],...|dns:NAME|k8s:SERVICE',
    def: '',
    help: "the other replicas of this tier: a list, a headless Service's DNS name, or the proxy's own Service (EndpointSlices); empty = none",
  },
  {
    flag: 'peer-port',
    arg: 'PORT',
    def: '10001',
    help: 'UDP port of the peer protocol (worker i: PORT+i); never exposed by the load balancer',
  },
  {
    flag: 'pod-ip',
    arg: 'IP',
    def: '',
    help: "this replica's own address among the peers (optional: it also recognises itself)",
  },
  {
    flag: 'peer-timeout',
    arg: 'DURATION',
    def: '250ms',
    help: "how long one query round waits for the peers' answers",
  },
  {
    flag: 'peer-query-rate',
    arg: 'N',
    def: '500',
    help: 'query rounds to the peers per second at most, sustained (fair shares per client source)',
  },
  {
    flag: 'peer-query-burst',
    arg: 'N',
    def: '2000',
    help: 'query rounds a replica may start at once (the flows a removed replica moves here)',
  },
  {
    flag: 'peer-negative-ttl',
    arg: 'DURATION',
    def: '2s',
    help: 'how long a client 5-tuple no peer owns is not asked about again',
  },
];

export function envName(flag: string): string {
  return 'ICE_INGRESS_' + flag.toUpperCase().replaceAll('-', '_');
}

/** Bad flags or variables: every problem, each naming its flag or variable, in one line (exit 2). */
export class ConfigError extends BadInputError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('ICE_INGRESS_BAD_CONFIG', `invalid configuration: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

export type ParsedArgs = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: Config };

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** Parses argv (without node and script) and the environment. Throws {@link ConfigError}. */
export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedArgs {
  const problems: string[] = [];
  const known = new Map(OPTIONS.map((o) => [o.flag, o]));
  const given = new Map<string, { value: string; from: string }>();

  for (const o of OPTIONS) {
    const v = env[envName(o.flag)];
    if (v !== undefined && v !== '') given.set(o.flag, { value: v, from: envName(o.flag) });
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') return { kind: 'help' };
    if (a === '--version' || a === '-V') return { kind: 'version' };
    if (!a.startsWith('--')) {
      problems.push(`unexpected argument ${JSON.stringify(a)}`);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (!known.has(name)) {
      problems.push(`--${name}: unknown flag (see --help)`);
      if (eq < 0 && i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) i++;
      continue;
    }
    let value: string;
    if (eq > 0) value = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) value = argv[++i]!;
    else {
      problems.push(`--${name}: needs a value (${known.get(name)!.arg})`);
      continue;
    }
    given.set(name, { value, from: `--${name}` });
  }

  const raw = (flag: string): { value: string; from: string } =>
    given.get(flag) ?? { value: known.get(flag)!.def, from: `--${flag}` };
  const bad = (flag: string, why: string): void => {
    const r = raw(flag);
    problems.push(`${r.from}: ${why} (got ${JSON.stringify(r.value)})`);
  };
  const hostPort = (flag: string): HostPort => {
    const hp = parseHostPort(raw(flag).value);
    if (hp === undefined) {
      bad(flag, 'expected HOST:PORT with an IP address and a port 0-65535 (IPv6 as [::]:PORT)');
      return { host: '0.0.0.0', port: 0 };
    }
    return hp;
  };
  const duration = (flag: string, min = 1): number => {
    const ms = parseDuration(raw(flag).value);
    if (ms === undefined) {
      bad(flag, 'expected a duration with a unit: 500ms, 3s, 2m, 1h');
      return 0;
    }
    if (ms < min) bad(flag, `must be at least ${min}ms`);
    return ms;
  };
  const int = (flag: string, min: number, max: number): number => {
    const v = raw(flag).value;
    const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      bad(flag, `expected a whole number from ${min} to ${max}`);
      return min;
    }
    return n;
  };
  const ip = (flag: string, family: 4 | 6): string => {
    const v = raw(flag).value;
    if (isIP(v) !== family) bad(flag, `expected an IPv${family} address`);
    return v;
  };

  const listen = hostPort('listen');
  const adminText = raw('admin').value;
  const admin = adminText === 'off' ? undefined : hostPort('admin');
  const discovery = raw('discovery').value as DiscoveryKind;
  if (!['static', 'k8s', 'dns'].includes(discovery)) bad('discovery', 'expected static, k8s or dns');
  const backends = raw('backends').value;
  const service = raw('service').value;
  const dnsName = raw('dns-name').value;
  if (discovery === 'static') {
    if (backends === '') problems.push('--backends: required with --discovery static');
    else for (const e of parseBackends(backends).errors) problems.push(`${raw('backends').from}: ${e}`);
  }
  if (discovery === 'k8s' && service === '') problems.push('--service: required with --discovery k8s');
  if (discovery === 'dns' && dnsName === '') problems.push('--dns-name: required with --discovery dns');

  let upstreamPorts: [number, number] | undefined;
  const portsText = raw('upstream-ports').value;
  if (portsText !== '0') {
    const m = /^(\d{1,5})-(\d{1,5})$/.exec(portsText);
    const first = m ? Number(m[1]) : Number.NaN;
    const last = m ? Number(m[2]) : Number.NaN;
    if (!(first >= 1 && last <= 65535 && first <= last)) {
      bad('upstream-ports', 'expected FIRST-LAST within 1-65535, or 0');
    } else {
      upstreamPorts = [first, last];
      if (listen.port >= first && listen.port <= last) {
        bad('upstream-ports', `must not contain the listening port ${listen.port}`);
      }
    }
  }
  const bool = (flag: string): boolean => {
    const v = raw(flag).value;
    if (v !== 'true' && v !== 'false') bad(flag, 'expected true or false');
    return v === 'true';
  };
  const fastPath = raw('fast-path').value as FastPathKind;
  if (fastPath !== 'off' && fastPath !== 'nftables' && fastPath !== 'ebpf')
    bad('fast-path', 'expected off, nftables or ebpf');
  else if (fastPath !== 'off' && isIP(listen.host) !== 4) {
    problems.push(
      `--fast-path ${fastPath}: needs --listen with an IPv4 address (got ${listen.host}); the kernel path is IPv4 only`,
    );
  } else if (fastPath !== 'off' && listen.host === '0.0.0.0') {
    problems.push(
      `--fast-path ${fastPath}: needs --listen with the specific address clients send to (e.g. the pod IP), not 0.0.0.0: the kernel rewrites replies to come from it`,
    );
  }
  let workers: number | 'auto' = 'auto';
  if (raw('workers').value !== 'auto') {
    workers = int('workers', 1, MAX_WORKERS);
    if (upstreamPorts !== undefined && upstreamPorts[1] - upstreamPorts[0] + 1 < workers) {
      bad('upstream-ports', `needs at least one port per worker (${workers})`);
    }
  }
  const peerPort = int('peer-port', 1, 65535);
  const peersParsed = parsePeersFlag(raw('peers').value, peerPort);
  for (const p of peersParsed.problems) problems.push(`${raw('peers').from}: ${p}`);
  const podIpText = raw('pod-ip').value;
  if (podIpText !== '' && isIP(podIpText) === 0) bad('pod-ip', 'expected an IP address');
  if (peersParsed.source.kind !== 'off') {
    // Worker i binds peerPort + i: the whole range must be free of the other ports we bind.
    const span = typeof workers === 'number' ? workers : MAX_WORKERS;
    const last = peerPort + span - 1;
    const clash = (p: number): boolean => p >= peerPort && p <= last;
    if (last > 65535) bad('peer-port', `needs ${span} ports from it (one per worker), past 65535`);
    else if (clash(listen.port) || (admin !== undefined && clash(admin.port)))
      bad('peer-port', `its ${span} ports (one per worker) must not contain the listening or admin port`);
    else if (upstreamPorts !== undefined && peerPort <= upstreamPorts[1] && last >= upstreamPorts[0])
      bad('peer-port', `its ${span} ports (one per worker) must not overlap --upstream-ports`);
  }
  const drainReadiness = raw('drain-readiness').value as DrainReadiness;
  if (drainReadiness !== 'unready' && drainReadiness !== 'serving')
    bad('drain-readiness', 'expected unready or serving');

  const logLevel = raw('log-level').value;
  if (!LOG_LEVELS.has(logLevel)) bad('log-level', `expected one of ${[...LOG_LEVELS].join(', ')}`);

  const config: Config = {
    listen,
    admin,
    discovery,
    backends,
    service,
    namespace: raw('namespace').value,
    portName: raw('port-name').value,
    kubeconfig: raw('kubeconfig').value,
    dnsName,
    backendPort: int('backend-port', 1, 65535),
    dnsIntervalMs: duration('dns-interval', 100),
    dnsGraceMs: duration('dns-grace', 0),
    idleTimeoutMs: duration('idle-timeout', 100),
    probeTimeoutMs: duration('probe-timeout', 10),
    probeRounds: int('probe-rounds', 1, 100),
    probeRate: int('probe-rate', 1, 10_000_000),
    directedProbeRate: int('directed-probe-rate', 1, 10_000_000),
    strictPrefix: bool('strict-prefix'),
    maxPendingPerSource: int('max-pending-per-source', 1, 1_000_000),
    maxSessions: int('max-sessions', 1, 10_000_000),
    negativeTtlMs: duration('negative-ttl', 0),
    learnedMax: int('learned-max', 1, 100_000_000),
    upstreamPorts,
    portQuarantineMs: duration('port-quarantine', 0),
    upstreamBind: ip('upstream-bind', 4),
    upstreamBind6: ip('upstream-bind6', 6),
    socketBufferBytes: int('socket-buffer', 0, 1 << 30),
    drainTimeoutMs: duration('drain-timeout', 0),
    drainReadiness,
    fastPath,
    logLevel,
    workers,
    peers: peersParsed.source,
    peerPort,
    podIp: podIpText === '' ? undefined : podIpText,
    peerTimeoutMs: duration('peer-timeout', 1),
    peerQueryRate: int('peer-query-rate', 1, 10_000_000),
    peerQueryBurst: int('peer-query-burst', 1, 10_000_000),
    peerNegativeTtlMs: duration('peer-negative-ttl', 0),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return { kind: 'run', config: Object.freeze(config) };
}

/** `500ms`, `3s`, `1.5s`, `2m`, `1h` → milliseconds; undefined if malformed. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 3_600_000;
  return Math.round(n * unit);
}

/** `1.2.3.4:10000`, `[::1]:10000` → {host, port}; undefined if malformed. Hosts must be IP literals. */
export function parseHostPort(text: string): HostPort | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const host = m[1]!;
  const port = Number(m[2]);
  if (port > 65535 || isIP(host) === 0) return undefined;
  return { host, port };
}

export function helpText(version: string): string {
  const rows = OPTIONS.map((o) => {
    const left = `  --${o.flag} ${o.arg}`;
    const def = o.def === '' ? '' : ` [default: ${o.def}]`;
    return `${left.padEnd(44)} ${o.help}${def}\n${''.padEnd(45)}env ${envName(o.flag)}`;
  });
  return `ice-ingress ${version} — UDP ingress for WebRTC media servers, routed by ICE ufrag

Usage:
  ice-ingress [flags]                 run the proxy
  ice-ingress token NAME              print the prefix token of a backend name
  ice-ingress jvb-config --pod-name NAME --public-address IP[:PORT]
                                      print JVB config that advertises the proxy
  ice-ingress --check-config [flags]  check flags and environment as start-up would, bind nothing
  ice-ingress --help | --version

Flags (every flag can also be set by its environment variable; the flag wins):
${rows.join('\n')}

Durations take a unit: 500ms, 3s, 2m, 1h. Invalid input stops start-up with exit code 2.
`;
}
