/**
 * `npm run bench:scale` (root): how the proxy and its kernel paths behave as sessions grow, in the
 * network namespaces of bench/bench-ns.ts (client → proxy → one C echo "JVB" that answers every
 * check). For each kernel path (`--fast-path nftables`, `--fast-path ebpf`) and each size (1,000,
 * 10,000 and the most this machine's open-file limit allows: every session holds an upstream
 * socket in the proxy and one in the client), one proxy (`--workers 1`, the image's V8 flags,
 * pinned to core 0) is given that many established sessions (bench/scale-client.ts, one socket
 * each), then:
 * - RSS per session: the proxy's resident memory with the sessions, less before the first one, ÷
 *   sessions (/proc/PID/status after a settle);
 * - idle CPU: the proxy's CPU time over IDLE_S seconds with every session idle (its sweep and its
 *   kernel path's counter reads: nft's listing of every counter, the eBPF path's read of the
 *   mapped counters), in ms per second;
 * - ROUNDS times in turn, 100 sessions opened on top within 1 s, each streaming media through its
 *   hand-over for 1.5 s (handover-client.ts): their routing time (first check → the backend's
 *   success, the proxy's `session opened` log) and hand-over time (established → in the kernel,
 *   its debug log, waited for up to 20 s after the media), p50 / p99 (hand-over: each round's
 *   p99 and their median), and the media datagrams lost.
 *
 * Environment: BENCH_SCALE_SIZES ("1000,10000,max"), BENCH_SCALE_PATHS ("nftables,ebpf"),
 * BENCH_SCALE_RATE (sessions opened per second, 2000), BENCH_SCALE_IDLE_S (5), BENCH_SCALE_ROUNDS
 * (rounds of 100 sessions on top, 3). Needs root, the packages of `sh test/fastpath-ns/prereqs.sh --bench` and the eBPF object (npm run build:bpf).
 * Wrap it in `flock /tmp/bench.lock` on a shared machine. Bounded: each size's sessions must open
 * within 60 s, and everything runs in its own namespaces, killed with them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { NODE_FLAGS } from '../src/runtime.ts';
import {
  benchNamespaces,
  buildBenchNamespaces,
  POD,
  PORT,
  PRX_C,
  pinned,
  root,
  startEcho,
  waitingSpawner,
} from './bench-ns.ts';

type Path = 'nftables' | 'ebpf';
const PATHS = (process.env.BENCH_SCALE_PATHS ?? 'nftables,ebpf').split(',') as Path[];
const RATE = Number(process.env.BENCH_SCALE_RATE ?? 2000);
const IDLE_S = Number(process.env.BENCH_SCALE_IDLE_S ?? 5);
const ROUNDS = Number(process.env.BENCH_SCALE_ROUNDS ?? 3);
/** The open-file limit less what a process holds besides sessions (listening socket, pipes, libs). */
const FILE_LIMIT = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim());
const MAX = Math.floor((FILE_LIMIT - 300) / 1000) * 1000;
const SIZES = (process.env.BENCH_SCALE_SIZES ?? '1000,10000,max')
  .split(',')
  .map((x) => (x === 'max' ? MAX : Number(x)))
  .filter((x, i, all) => x <= MAX && all.indexOf(x) === i);
const NODE = process.execPath;

const { topo, binary } = await benchNamespaces('bench:scale');
const spawnWaiting = waitingSpawner(topo);

/** Resident set of a process, in bytes. */
function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

/** User + system CPU time of a process, in ms (USER_HZ = 100). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A JSON-lines child: one request, one answer. */
function talker(child: ReturnType<typeof topo.spawn>) {
  const answers: Array<(o: unknown) => void> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    if (!l.startsWith('{')) return;
    answers.shift()?.(JSON.parse(l));
  });
  return <T>(req: object, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(req)}`)), timeoutMs);
      answers.push((o) => {
        clearTimeout(timer);
        resolve(o as T);
      });
      child.stdin!.write(`${JSON.stringify(req)}\n`);
    });
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};

interface Row {
  path: Path;
  sessions: number;
  opened: number;
  rssPerSessionKb: number;
  idleCpuMsPerS: number;
  routingP50: number;
  routingP99: number;
  handoverP50: number;
  /** The median of the rounds' p99s. */
  handoverP99: number;
  roundP99: number[];
  handed: number;
  lost: number;
  sent: number;
}

async function runOne(path: Path, size: number): Promise<Row> {
  const pod = await startEcho(topo, binary);
  const lines: string[] = [];
  const proxy = await spawnWaiting(
    'prx',
    'nice',
    pinned(
      0,
      NODE,
      ...NODE_FLAGS,
      `${root}src/cli.ts`,
      ...['--listen', `${PRX_C}:${PORT}`, '--backends', `echo=${POD}:${PORT}`, '--admin', 'off'],
      ...['--workers', '1', '--fast-path', path, '--max-sessions', String(size + 1000)],
      ...['--upstream-ports', '20000-60999', '--idle-timeout', '600s', '--drain-timeout', '0s'],
      ...['--probe-rate', '1000000', '--max-pending-per-source', '1000000', '--log-level', 'debug'],
    ),
    `ice-ingress-${path}-${size}`,
    'ice-ingress started',
  );
  proxy.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().split('\n')));
  const pid = proxy.pid!;
  const client = await spawnWaiting(
    'cli',
    'nice',
    pinned(1, NODE, `${root}bench/scale-client.ts`, PRX_C, String(PORT)),
    `scale-client-${path}-${size}`,
    '"ready"',
  );
  const ask = talker(client);
  try {
    await sleep(1000);
    const rss0 = rss(pid);
    const opened = await ask<{ opened: number; ms: number }>({ cmd: 'open', n: size, rate: RATE }, 60_000);
    // Settle: the kernel path's last hand-overs, a sweep, the allocator.
    await sleep(3000);
    const rss1 = rss(pid);
    const c0 = cpuMs(pid);
    await sleep(IDLE_S * 1000);
    const idleCpuMsPerS = (cpuMs(pid) - c0) / IDLE_S;
    // ROUNDS rounds of 100 sessions on top, one after the other (each waits for its hand-overs):
    // a p99 of 100 is a round's second-slowest hand-over, so one stray preemption decides it; the
    // rounds show the spread, and their median is the figure compared across sizes.
    const routing: number[] = [];
    const handover: number[] = [];
    const roundP99: number[] = [];
    let lost = 0;
    let sent = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const mark = lines.length;
      const ho = await ask<{ sent: number; lost: number; established: number }>({ cmd: 'handover' }, 30_000);
      let mine: number[] = [];
      let opened: number[] = [];
      // A slow kernel path is still handing over after the media ended: wait for it (bounded).
      for (let waited = 0; waited <= 20_000; waited += 250) {
        const now = lines.slice(mark);
        opened = now
          .filter((l) => l.includes('"session opened"'))
          .map((l) => (JSON.parse(l) as { routingMs: number }).routingMs);
        mine = now
          .filter((l) => l.includes('"handoverMs"'))
          .map((l) => (JSON.parse(l) as { handoverMs: number }).handoverMs);
        if (mine.length >= ho.established) break;
        await sleep(250);
      }
      routing.push(...opened);
      handover.push(...mine);
      roundP99.push(quantile(mine, 0.99));
      lost += ho.lost;
      sent += ho.sent;
    }
    return {
      path,
      sessions: size,
      opened: opened.opened,
      rssPerSessionKb: (rss1 - rss0) / opened.opened / 1024,
      idleCpuMsPerS,
      routingP50: quantile(routing, 0.5),
      routingP99: quantile(routing, 0.99),
      handoverP50: quantile(handover, 0.5),
      handoverP99: quantile(roundP99, 0.5),
      roundP99,
      handed: handover.length,
      lost,
      sent,
    };
  } finally {
    await ask({ cmd: 'close' }, 10_000).catch(() => undefined);
    // SIGTERM: the proxy removes its table or program on the way out.
    const exited = new Promise((r) => proxy.once('exit', r));
    proxy.kill('SIGTERM');
    await Promise.race([exited, sleep(20_000)]);
    topo.kill(proxy);
    topo.kill(client);
    topo.kill(pod);
  }
}

try {
  await buildBenchNamespaces(topo);
  const rows: Row[] = [];
  for (const size of SIZES) {
    for (const path of PATHS) {
      const r = await runOne(path, size);
      rows.push(r);
      console.error(`${path} ${size}: ${JSON.stringify(r)}`);
    }
  }
  console.log(
    `\nice-ingress scale bench — --workers 1, V8 flags ${NODE_FLAGS.join(' ')}, proxy on core 0, clients and echo on core 1; open-file limit ${FILE_LIMIT}; Node ${process.version}, kernel ${execFileSync('uname', ['-r']).toString().trim()}\n`,
  );
  console.log(
    `path       sessions (opened)   RSS/session   idle CPU (sweep + counter reads)   ${ROUNDS} × 100 on top: routing p50 / p99   hand-over p50 / p99 (median; each round's)   handed   lost / sent`,
  );
  for (const r of rows) {
    console.log(
      [
        r.path.padEnd(10),
        `${r.sessions} (${r.opened})`.padEnd(19),
        `${r.rssPerSessionKb.toFixed(1)} KB`.padStart(11),
        `${r.idleCpuMsPerS.toFixed(1)} ms/s`.padStart(34),
        `${r.routingP50.toFixed(2)} / ${r.routingP99.toFixed(2)} ms`.padStart(35),
        `${r.handoverP50.toFixed(2)} / ${r.handoverP99.toFixed(2)} ms (${r.roundP99.map((x) => x.toFixed(2)).join(', ')})`.padStart(
          44,
        ),
        String(r.handed).padStart(8),
        `${r.lost} / ${r.sent}`.padStart(13),
      ].join(' '),
    );
  }
  for (const path of PATHS) {
    const mine = rows.filter((r) => r.path === path);
    const small = mine.find((r) => r.sessions === 1000);
    const largest = mine.at(-1);
    if (small !== undefined && largest !== undefined && largest !== small)
      console.log(
        `${path}: hand-over p99 (median of the rounds) at ${largest.sessions} ÷ at 1000 = ${(largest.handoverP99 / small.handoverP99).toFixed(2)}`,
      );
  }
} finally {
  topo.destroySync();
}
process.exit(0);
