/**
 * Shared plumbing of `npm run bench:flood` and `npm run bench:soak`: the real CLI as a child
 * process pinned to a core, its Prometheus metrics read back by name pattern (so the benchmarks
 * keep working when the data path adds or renames labels), and what /proc says about the process.
 * Linux only (/proc, taskset). Nothing here talks to anything but 127.0.0.0/8.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../src/runtime.ts';
import { rssMb } from './proc.ts';

export const root = fileURLToPath(new URL('..', import.meta.url));
const node = process.execPath;

/** Every child started here; killed (whole process group) on exit, whatever the exit path. */
const children = new Set<ChildProcess>();
export function killChildren(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        c.kill('SIGKILL');
      }
    }
  }
  children.clear();
}
process.on('exit', killChildren);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

let haveTaskset: boolean | undefined;
export function tasksetAvailable(): boolean {
  if (haveTaskset === undefined) {
    try {
      execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
      haveTaskset = true;
    } catch {
      haveTaskset = false;
    }
  }
  return haveTaskset;
}

/** Pins this process (every thread) to `core`; false if taskset is missing or the core is not there. */
export function pinSelf(core: number): boolean {
  if (!tasksetAvailable()) return false;
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** `cmd args` on `core` (via taskset, which execs: the child's pid is the command's). */
export function spawnPinned(core: number | undefined, cmd: string, args: string[]): ChildProcess {
  const pinned = core !== undefined && tasksetAvailable();
  const child = spawn(pinned ? 'taskset' : cmd, pinned ? ['-c', String(core), cmd, ...args] : args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group, so killChildren() takes anything it started too
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

export async function freeTcpPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const p = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return p;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// The proxy under test

export interface Cli {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly listen: { address: string; port: number };
  readonly adminPort: number;
  readonly args: readonly string[];
  /** Log lines the proxy wrote (pino JSON), after start-up. */
  readonly log: string[];
  stop(): Promise<void>;
}

export interface CliOptions {
  core: number | undefined;
  backends: string;
  /** Flags appended after --listen/--admin/--backends (a later flag wins). */
  extra: readonly string[];
}

/** `node src/cli.ts` with loopback --listen/--admin; resolves once /readyz says ready. */
export async function startCli(opts: CliOptions): Promise<Cli> {
  const port = await freeUdpPort();
  const adminPort = await freeTcpPort();
  const args = [
    '--listen',
    `127.0.0.1:${port}`,
    '--admin',
    `127.0.0.1:${adminPort}`,
    '--backends',
    opts.backends,
    ...opts.extra,
  ];
  // The CLI as the image runs it: with the V8 flags of src/runtime.ts.
  const child = spawnPinned(opts.core, node, [...NODE_FLAGS, `${root}src/cli.ts`, ...args]);
  const log: string[] = [];
  let started = false;
  let buffered = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (started) log.push(line);
      else if (line.includes('ice-ingress started')) started = true;
      nl = buffered.indexOf('\n');
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const deadline = performance.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ice-ingress exited ${child.exitCode}: ${stderr}`);
    if (performance.now() > deadline) throw new Error(`ice-ingress not ready in 15 s: ${stderr}`);
    try {
      const r = await httpGet(adminPort, '/readyz');
      if (r.status === 200 && started) break;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  return {
    child,
    pid: child.pid!,
    listen: { address: '127.0.0.1', port },
    adminPort,
    args,
    log,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      process.kill(-child.pid!, 'SIGKILL');
      await gone;
    },
  };
}

/** The CLI's own `--help`: flags with their defaults, so budgets are read, not assumed. */
export interface FlagHelp {
  flag: string;
  def: string | undefined;
  help: string;
}
export function cliFlags(): FlagHelp[] {
  const text = execFileSync(node, [`${root}src/cli.ts`, '--help'], { encoding: 'utf8' });
  const out: FlagHelp[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s+--([a-z0-9-]+)\s+\S+\s+(.*?)(?:\s+\[default: (.*)\])?$/.exec(line);
    if (m !== null) out.push({ flag: m[1]!, def: m[3], help: m[2]! });
  }
  return out;
}

/** A flag's value in `extra` (last one wins), else its default. */
export function flagValue(
  flags: readonly FlagHelp[],
  extra: readonly string[],
  flag: string,
): string | undefined {
  let v = flags.find((f) => f.flag === flag)?.def;
  for (let i = 0; i < extra.length; i++) {
    const a = extra[i]!;
    if (a === `--${flag}` && i + 1 < extra.length) v = extra[i + 1];
    else if (a.startsWith(`--${flag}=`)) v = a.slice(flag.length + 3);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Prometheus text, read back generically

export interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export type Metrics = Map<string, Series>;

/** GET over a fresh connection that the server closes (no keep-alive socket left in the proxy). */
export function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on('error', reject);
  });
}

export async function scrape(adminPort: number): Promise<Metrics> {
  const r = await httpGet(adminPort, '/metrics');
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status}`);
  const text = r.body;
  const out: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!;
    }
    out.set(`${m[1]}${m[2] ?? ''}`, { name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** Series whose name matches `name`, as deltas `after - before` (counters; 0 if new). */
export function deltas(before: Metrics, after: Metrics, name: RegExp): Series[] {
  const out: Series[] = [];
  for (const [key, s] of after) {
    if (!name.test(s.name)) continue;
    out.push({ ...s, value: s.value - (before.get(key)?.value ?? 0) });
  }
  return out;
}

/** The value of the first series named `name` (a gauge), NaN if absent. */
export function gauge(m: Metrics, name: string): number {
  for (const s of m.values()) if (s.name === name) return s.value;
  return Number.NaN;
}

export function sum(series: readonly Series[], where: (s: Series) => boolean = () => true): number {
  let n = 0;
  for (const s of series) if (where(s)) n += s.value;
  return n;
}

export function labelText(s: Series): string {
  const parts = Object.entries(s.labels).map(([k, v]) => `${k}=${v}`);
  return parts.length === 0 ? s.name : `${s.name}{${parts.join(',')}}`;
}

// ---------------------------------------------------------------------------------------------
// /proc (bench/proc.ts, which the tier suite shares without this module's exit handlers)

export { compileFlooder, cpuSeconds, machineCpu, rssMb, socketFds, udpRcvbufErrors } from './proc.ts';

/** Samples RSS of `pid` every `everyMs` until stopped. */
export class RssSampler {
  readonly samples: Array<{ at: number; mb: number }> = [];
  readonly pid: number;
  readonly #timer: NodeJS.Timeout;
  constructor(pid: number, everyMs = 100) {
    this.pid = pid;
    this.sample();
    this.#timer = setInterval(() => this.sample(), everyMs);
  }
  sample(): number {
    const mb = rssMb(this.pid);
    if (!Number.isNaN(mb)) this.samples.push({ at: performance.now(), mb });
    return mb;
  }
  peak(from = 0, to = Number.POSITIVE_INFINITY): number {
    let p = 0;
    for (const s of this.samples) if (s.at >= from && s.at <= to && s.mb > p) p = s.mb;
    return p;
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');
export const fmtMb = (n: number): string => n.toFixed(1);
