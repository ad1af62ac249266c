/**
 * `npm run bench`: forwarded packets per second and added latency of ice-ingress beside a minimal
 * plain `dgram` relay (bench/plain-relay.ts) and beside no relay at all, in the same run, for
 * 1200-byte and 100-byte datagrams.
 *
 * Shared-CPU honesty (2-core machine): the relay under test is pinned to core 0 (taskset); the C
 * load generator and C echo server (bench/udpbench.c) share core 1. "direct" shows the ceiling of
 * that generator; read the relay figures as ratios measured in this one run. Relay CPU time comes
 * from /proc, so "datagrams per CPU-second" is the per-core capacity figure.
 *
 * Then the workers section: `--workers 1` against `--workers 2` under the same load with nothing
 * pinned (relay threads, generator and echo share both cores), and the cost of a hand-off between
 * workers (bench/handoff.ts).
 *
 * Environment: BENCH_SECONDS (default 3), BENCH_SESSIONS (default 100), BENCH_WINDOW (default 4),
 * BENCH_SIZES (default "1200,100"), BENCH_REPEATS (workers section, default 3). Needs a C compiler (cc) and taskset (util-linux).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../src/runtime.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 100);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 4);
const SIZES = (process.env.BENCH_SIZES ?? '1200,100').split(',').map(Number);

const binary = `${root}.bench/udpbench`;
mkdirSync(`${root}.bench`, { recursive: true });
execFileSync('cc', ['-O2', '-Wall', '-o', binary, `${root}bench/udpbench.c`], { stdio: 'inherit' });

const children: ChildProcess[] = [];
const cleanup = (): void => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
};
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

/**
 * The CLI as the image runs it (V8 flags), in front of one echo backend, with limits out of the
 * way of a load test; `extra` flags come first.
 */
function proxyArgs(port: number, echoPort: number, extra: readonly string[] = []): string[] {
  return [
    ...NODE_FLAGS,
    `${root}src/cli.ts`,
    ...extra,
    '--listen',
    `127.0.0.1:${port}`,
    '--backends',
    `echo=127.0.0.1:${echoPort}`,
    '--admin',
    'off',
    '--upstream-ports',
    '0',
    '--probe-rate',
    '1000000',
    '--max-pending-per-source',
    '100000',
    '--log-level',
    'info',
  ];
}

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** Spawns a pinned child and resolves when it prints a line containing `marker`. */
function startPinned(
  core: number | string,
  cmd: string,
  args: string[],
  marker: string,
): Promise<ChildProcess> {
  const child = spawn('taskset', ['-c', String(core), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start`)), 10_000);
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes(marker)) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
    child.once('exit', (code) => reject(new Error(`${cmd} exited ${code}: ${out}`)));
  });
}

function cpuSeconds(pid: number): number {
  // /proc/PID/stat fields 14, 15: utime, stime in clock ticks (100 Hz on Linux).
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface LoadResult {
  roundTrips: number;
  seconds: number;
  roundTripsPerSec: number;
  p50us: number;
  p99us: number;
  reprimed: number;
  error?: string;
}

function load(
  port: number,
  sessions: number,
  size: number,
  seconds: number,
  window: number,
  cores = '1',
): LoadResult {
  const out = execFileSync(
    'taskset',
    [
      '-c',
      cores,
      binary,
      'load',
      '127.0.0.1',
      String(port),
      String(sessions),
      String(size),
      String(seconds),
      String(window),
    ],
    { encoding: 'utf8', timeout: (seconds + 30) * 1000 },
  );
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult;
  if (r.error) throw new Error(r.error);
  return r;
}

const node = process.execPath;
const echoPort = await freePort();
await startPinned(1, binary, ['echo', '127.0.0.1', String(echoPort)], 'ready');

type Kind = 'direct' | 'plain-relay' | 'ice-ingress';
interface Row {
  kind: Kind;
  size: number;
  rtps: number;
  fwdPerCpuSec: number | undefined;
  p50: number;
  p99: number;
  reprimed: number;
}
const rows: Row[] = [];

for (const size of SIZES) {
  for (const kind of ['direct', 'plain-relay', 'ice-ingress'] as Kind[]) {
    let port = echoPort;
    let relay: ChildProcess | undefined;
    if (kind !== 'direct') {
      port = await freePort();
      relay =
        kind === 'plain-relay'
          ? await startPinned(
              0,
              node,
              [...NODE_FLAGS, `${root}bench/plain-relay.ts`, String(port), String(echoPort)],
              'ready',
            )
          : await startPinned(0, node, proxyArgs(port, echoPort), 'ice-ingress started');
    }
    // Latency first, unloaded: one session, one datagram in flight.
    const lat = load(port, 1, size, 1, 1);
    const cpu0 = relay ? cpuSeconds(relay.pid!) : 0;
    const thr = load(port, SESSIONS, size, SECONDS, WINDOW);
    const cpu = relay ? cpuSeconds(relay.pid!) - cpu0 : 0;
    // Each round trip is two datagrams forwarded by a relay (client→backend, backend→client).
    const forwarded = thr.roundTrips * 2;
    rows.push({
      kind,
      size,
      rtps: thr.roundTripsPerSec,
      fwdPerCpuSec: relay && cpu > 0 ? forwarded / cpu : undefined,
      p50: lat.p50us,
      p99: lat.p99us,
      reprimed: thr.reprimed,
    });
    if (relay) {
      relay.kill('SIGKILL');
      await new Promise((r) => relay!.once('exit', r));
    }
  }
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

// Workers: `--workers 1` against `--workers 2`, twice each.
// - pinned: the relay process (all its threads) on core 0, generator + echo on core 1, as above:
//   "fwd per relay CPU-s" says whether the worker machinery costs anything per datagram (two
//   workers then share one core).
// - shared: nothing pinned apart: relay threads, the C generator and a second C echo share both
//   cores, so a second worker competes with the generator for the second core: "round trips/s" is
//   what this 2-core machine reaches, not what a pod with dedicated cores would.
const ALL = '0,1';
const echo2Port = await freePort();
await startPinned(ALL, binary, ['echo', '127.0.0.1', String(echo2Port)], 'ready');
interface WorkerRow {
  workers: number;
  size: number;
  placement: 'pinned' | 'shared';
  rtps: number;
  fwdPerCpuSec: number;
  reprimed: number;
}
const workerRows: WorkerRow[] = [];
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function workerRun(workers: number, size: number, placement: 'pinned' | 'shared') {
  const port = await freePort();
  const relayCores = placement === 'pinned' ? '0' : ALL;
  const loadCores = placement === 'pinned' ? '1' : ALL;
  const relay = await startPinned(
    relayCores,
    node,
    proxyArgs(port, placement === 'pinned' ? echoPort : echo2Port, ['--workers', String(workers)]),
    'ice-ingress started',
  );
  load(port, 4, size, 1, 1, loadCores); // warm-up
  const cpu0 = cpuSeconds(relay.pid!);
  const thr = load(port, SESSIONS, size, SECONDS, WINDOW, loadCores);
  const cpu = cpuSeconds(relay.pid!) - cpu0;
  relay.kill('SIGKILL');
  await new Promise((r) => relay.once('exit', r));
  return { rtps: thr.roundTripsPerSec, fwdPerCpuSec: (thr.roundTrips * 2) / cpu, reprimed: thr.reprimed };
}
for (const size of SIZES) {
  for (const placement of ['pinned', 'shared'] as const) {
    // 1 and 2 workers alternate, REPEATS times; each row is the median of its runs.
    const runs = new Map<number, Array<Awaited<ReturnType<typeof workerRun>>>>([
      [1, []],
      [2, []],
    ]);
    for (let i = 0; i < REPEATS; i++) {
      for (const workers of [1, 2]) runs.get(workers)!.push(await workerRun(workers, size, placement));
    }
    for (const [workers, rs] of runs) {
      workerRows.push({
        workers,
        size,
        placement,
        rtps: median(rs.map((r) => r.rtps)),
        fwdPerCpuSec: median(rs.map((r) => r.fwdPerCpuSec)),
        reprimed: rs.reduce((n, r) => n + r.reprimed, 0),
      });
    }
  }
}

const { measureHandoff, measureRing, printHandoff, printRing } = await import('./handoff.ts');
const handoffRows = await measureHandoff({
  echoPort: echo2Port,
  sessions: Math.min(SESSIONS, 50),
  seconds: SECONDS,
  sizes: SIZES,
  cores: ALL,
  repeats: REPEATS,
});
console.log(
  `\nice-ingress bench — ${SESSIONS} sessions × window ${WINDOW}, ${SECONDS}s per run, Node ${process.version}; relay on core 0, C generator + C echo share core 1\n`,
);
console.log(
  'size   relay         round trips/s   datagrams fwd/s   fwd per relay CPU-s   RTT p50 µs   RTT p99 µs   added p50 µs   lost windows',
);
for (const r of rows) {
  const direct = rows.find((d) => d.kind === 'direct' && d.size === r.size)!;
  console.log(
    [
      String(r.size).padEnd(6),
      r.kind.padEnd(13),
      fmt(r.rtps).padStart(13),
      (r.kind === 'direct' ? '-' : fmt(r.rtps * 2)).padStart(17),
      (r.fwdPerCpuSec === undefined ? '-' : fmt(r.fwdPerCpuSec)).padStart(21),
      String(r.p50).padStart(12),
      String(r.p99).padStart(12),
      (r.kind === 'direct' ? '-' : String(r.p50 - direct.p50)).padStart(14),
      String(r.reprimed).padStart(14),
    ].join(' '),
  );
}
for (const size of SIZES) {
  const p = rows.find((r) => r.kind === 'plain-relay' && r.size === size)!;
  const i = rows.find((r) => r.kind === 'ice-ingress' && r.size === size)!;
  console.log(
    `${size} B: ice-ingress / plain relay = ${(i.rtps / p.rtps).toFixed(2)} (throughput), ${
      i.fwdPerCpuSec && p.fwdPerCpuSec ? (i.fwdPerCpuSec / p.fwdPerCpuSec).toFixed(2) : '-'
    } (per CPU-second)`,
  );
}
console.log(
  `\nworkers — median of ${REPEATS} alternating runs; pinned: relay (all threads) on core 0, generator + echo on core 1; shared: relay threads, C generator and C echo all share both cores of this 2-core machine\n`,
);
console.log(
  'size   placement  workers   round trips/s   datagrams fwd/s   fwd per relay CPU-s   lost windows',
);
for (const r of workerRows) {
  console.log(
    [
      String(r.size).padEnd(6),
      r.placement.padEnd(9),
      String(r.workers).padStart(8),
      fmt(r.rtps).padStart(15),
      fmt(r.rtps * 2).padStart(17),
      fmt(r.fwdPerCpuSec).padStart(21),
      String(r.reprimed).padStart(14),
    ].join(' '),
  );
}
for (const size of SIZES) {
  const w = (placement: string, workers: number): WorkerRow =>
    workerRows.find((r) => r.size === size && r.placement === placement && r.workers === workers)!;
  console.log(
    `${size} B: 2 workers / 1 worker = ${(w('pinned', 2).fwdPerCpuSec / w('pinned', 1).fwdPerCpuSec).toFixed(2)} (per CPU-second, pinned), ${(w('shared', 2).fwdPerCpuSec / w('shared', 1).fwdPerCpuSec).toFixed(2)} (per CPU-second, shared), ${(w('shared', 2).rtps / w('shared', 1).rtps).toFixed(2)} (round trips/s, shared)`,
  );
}
printHandoff(handoffRows);
printRing(await measureRing());
cleanup();
process.exit(0);
