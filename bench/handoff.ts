/**
 * The per-datagram cost of a hand-off between workers (docs/workers.md, "Hand-off"), measured on
 * the real CLI with `--workers 2`: sessions whose media arrives on the owner's socket ("local")
 * against sessions whose media arrives on the other worker's socket and is handed to the owner
 * ("handed off"), with the same load, in one run. Relay CPU comes from /proc (all its threads).
 *
 * How the arrangement is made without choosing the kernel's SO_REUSEPORT hash: every client socket
 * first opens a session of its own; the echo backend (in this process) sees the upstream port of
 * each, and the port slice (`--upstream-ports` is split per worker) tells which worker owns it,
 * i.e. which worker the kernel hashes that socket to. Those sessions then idle out; a socket of
 * worker 1 (or 0) then joins, as a NAT rebinding, the session of a socket of worker 0 that kept
 * it alive, and carries the media. Two backends: the sorting sessions go (by prefix token) to a
 * Node echo in this process that reports ports, the measured ones to the C echo of
 * bench/udpbench.c. The generator is Node, in this process, and shares the two cores with the
 * relay: it limits the rate equally in both runs; the relay's CPU per datagram is the figure.
 *
 * Run alone: `node bench/handoff.ts` (BENCH_SECONDS, BENCH_SESSIONS, BENCH_SIZES), or as part of
 * `npm run bench`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { tokenFor } from '../src/backends/token.ts';
import { NODE_FLAGS } from '../src/runtime.ts';
import { Doorbell, HandoffRing } from '../src/workers/ring.ts';
import { buildBindingRequest } from '../test/fixtures/stun-bytes.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const SLICE_SPLIT = 25000; // --upstream-ports 20000-29999 over 2 workers: 20000-24999 | 25000-29999

export interface HandoffResult {
  mode: 'local' | 'handed-off';
  size: number;
  roundTrips: number;
  seconds: number;
  cpuSeconds: number;
  usPerDatagram: number;
  reprimed: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Kills a detached child's whole process group (TESTBED: never leave relays behind). */
function killGroup(c: ChildProcess): void {
  try {
    process.kill(-c.pid!, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function bound(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

/** Echo backend: answers a Binding Request with a success (same bytes, type 0x0101), echoes media. */
async function startEcho(): Promise<{ sock: dgram.Socket; portOf: Map<string, number> }> {
  const sock = await bound();
  const portOf = new Map<string, number>();
  sock.on('message', (m, r) => {
    if (m.length >= 20 && m[0] === 0x00 && m[1] === 0x01) {
      // USERNAME is the first attribute in buildBindingRequest's output.
      const len = m.readUInt16BE(22);
      portOf.set(m.toString('latin1', 24, 24 + len), r.port);
      m[0] = 0x01;
    }
    sock.send(m, r.port, r.address);
  });
  return { sock, portOf };
}

function startRelay(
  port: number,
  sorterPort: number,
  echoPort: number,
  cores: string,
): Promise<ChildProcess> {
  const args = [
    '-c',
    cores,
    process.execPath,
    ...NODE_FLAGS,
    `${root}src/cli.ts`,
    '--workers',
    '2',
    '--listen',
    `127.0.0.1:${port}`,
    '--backends',
    `sorter=127.0.0.1:${sorterPort},echo=127.0.0.1:${echoPort}`,
    '--admin',
    'off',
    '--upstream-ports',
    '20000-29999',
    '--port-quarantine',
    '0s',
    '--idle-timeout',
    '1s',
    '--probe-rate',
    '1000000',
    '--max-pending-per-source',
    '100000',
  ];
  const child = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('relay did not start')), 15_000);
    let out = '';
    let started = false;
    // Session logs keep coming at info: read and discard them so the pipe never fills.
    child.stdout!.on('data', (d: Buffer) => {
      if (started) return;
      out += d.toString();
      if (out.includes('"ice-ingress started"')) {
        started = true;
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code) => reject(new Error(`relay exited ${code}: ${out}`)));
  });
}

async function check(s: dgram.Socket, port: number, username: string): Promise<void> {
  const req = buildBindingRequest({ username, password: 'x'.repeat(22) });
  for (let i = 0; i < 20; i++) {
    const answered = new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        s.off('message', on);
        resolve(false);
      }, 100);
      const on = (m: Buffer): void => {
        if (m[0] === 0x01 && m[1] === 0x01 && m.subarray(8, 20).equals(req.subarray(8, 20))) {
          clearTimeout(t);
          s.off('message', on);
          resolve(true);
        }
      };
      s.on('message', on);
    });
    s.send(req, port, '127.0.0.1');
    if (await answered) return;
  }
  throw new Error(`no answer to the check of ${username}`);
}

/**
 * Closed-loop load: `window` datagrams in flight per socket for `seconds`. A socket that heard
 * nothing for 100 ms lost its window (a drop) and is re-primed, as bench/udpbench.c does.
 */
async function load(socks: dgram.Socket[], port: number, size: number, seconds: number, window: number) {
  const payload = Buffer.alloc(size, 0x80);
  let roundTrips = 0;
  let reprimed = 0;
  let running = true;
  const heard = new Map<dgram.Socket, number>();
  for (const s of socks) {
    s.removeAllListeners('message');
    heard.set(s, 0);
    s.on('message', () => {
      roundTrips++;
      heard.set(s, heard.get(s)! + 1);
      if (running) s.send(payload, port, '127.0.0.1');
    });
  }
  for (const s of socks) for (let i = 0; i < window; i++) s.send(payload, port, '127.0.0.1');
  const start = performance.now();
  let last = new Map(heard);
  const reprime = setInterval(() => {
    for (const s of socks) {
      if (heard.get(s) === last.get(s)) {
        reprimed++;
        for (let i = 0; i < window; i++) s.send(payload, port, '127.0.0.1');
      }
    }
    last = new Map(heard);
  }, 100);
  await sleep(seconds * 1000);
  running = false;
  clearInterval(reprime);
  const elapsed = (performance.now() - start) / 1000;
  await sleep(100);
  return { roundTrips, seconds: elapsed, reprimed };
}

export async function measureHandoff(opts: {
  /** UDP port of a running `udpbench echo` on 127.0.0.1. */
  echoPort: number;
  sessions: number;
  seconds: number;
  sizes: number[];
  cores: string;
  /** Local and handed-off runs alternate this many times (default 1); print takes medians. */
  repeats?: number;
}): Promise<HandoffResult[]> {
  const results: HandoffResult[] = [];
  const echo = await startEcho();
  const sorterPort = echo.sock.address().port;
  const toSorter = tokenFor('sorter');
  const toEcho = tokenFor('echo');
  const children: ChildProcess[] = [];
  try {
    const order = Array.from({ length: opts.repeats ?? 1 }, () => ['local', 'handed-off'] as const).flat();
    for (const size of opts.sizes) {
      for (const [rep, mode] of order.entries()) {
        const port = await (async () => {
          const s = await bound();
          const p = s.address().port;
          s.close();
          return p;
        })();
        const relay = await startRelay(port, sorterPort, opts.echoPort, opts.cores);
        children.push(relay);
        // 1. Sort client sockets by worker: each opens its own session; the echo sees its port.
        const owners: dgram.Socket[] = [];
        const partners: dgram.Socket[] = [];
        const all: dgram.Socket[] = [];
        const wantPartnerOn = mode === 'local' ? 0 : 1;
        for (
          let i = 0;
          (owners.length < opts.sessions || partners.length < opts.sessions) && i < 20 * opts.sessions;
          i++
        ) {
          const s = await bound();
          all.push(s);
          const u = `${toSorter}sort${size}r${rep}${i}:c`;
          await check(s, port, u);
          const worker = echo.portOf.get(u)! >= SLICE_SPLIT ? 1 : 0;
          if (worker === 0 && owners.length < opts.sessions) owners.push(s);
          else if (worker === wantPartnerOn && partners.length < opts.sessions) partners.push(s);
        }
        if (owners.length < opts.sessions || partners.length < opts.sessions)
          throw new Error('could not sort sockets');
        // 2. Owners open the measured sessions and keep them alive; everything else idles out.
        const names = owners.map((_, i) => `${toEcho}own${size}r${rep}${i}:c`);
        await Promise.all(owners.map((s, i) => check(s, port, names[i]!)));
        const keepalive = setInterval(() => {
          owners.forEach((s, i) => {
            s.send(buildBindingRequest({ username: names[i]!, password: 'x'.repeat(22) }), port, '127.0.0.1');
          });
        }, 200);
        await sleep(2000); // idle timeout 1 s, swept every 250 ms: the sorting sessions are gone
        // 3. Partners join the owners' sessions (a rebinding) and carry the media.
        await Promise.all(partners.map((s, i) => check(s, port, names[i]!)));
        clearInterval(keepalive);
        const cpu0 = cpuSeconds(relay.pid!);
        const r = await load(partners, port, size, opts.seconds, 4);
        const cpu = cpuSeconds(relay.pid!) - cpu0;
        results.push({
          mode,
          size,
          roundTrips: r.roundTrips,
          seconds: r.seconds,
          cpuSeconds: cpu,
          usPerDatagram: (cpu * 1e6) / (2 * r.roundTrips),
          reprimed: r.reprimed,
        });
        for (const s of all) s.close();
        const gone = new Promise((res) => relay.once('exit', res));
        killGroup(relay);
        await gone;
      }
    }
  } finally {
    for (const c of children) killGroup(c);
    echo.sock.close();
  }
  return results;
}

export interface RingResult {
  mode: 'stream' | 'ping-pong';
  datagrams: number;
  usCpuPerDatagram: number;
  perSecond: number;
}

/**
 * The hand-off mechanism alone, without sockets: 1200-byte datagrams from this thread to a worker
 * thread through HandoffRing + Doorbell. "stream": as fast as the ring takes them (the consumer
 * drains batches, producers rarely notify); "ping-pong": one at a time, each answered through a
 * reverse ring (every datagram wakes a sleeping thread: the unloaded case). CPU is the whole
 * process's (getrusage: both threads).
 */
export async function measureRing(count = 200_000): Promise<RingResult[]> {
  const out: RingResult[] = [];
  for (const pingPong of [false, true]) {
    const n = pingPong ? count / 4 : count;
    const ring = HandoffRing.create();
    const bell = Doorbell.create();
    const back = HandoffRing.create();
    const backBell = Doorbell.create();
    const w = new Worker(new URL('./ring-peer.ts', import.meta.url), {
      workerData: {
        ring: ring.buffer,
        bell: bell.buffer,
        back: back.buffer,
        backBell: backBell.buffer,
        count: n,
        pingPong,
      },
    });
    const done = new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await new Promise((r) => setTimeout(r, 200)); // the worker is up and asleep
    const data = Buffer.alloc(1200, 0x80);
    const alive = setInterval(() => {}, 1000); // a pending waitAsync alone does not keep us running
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    if (!pingPong) {
      for (let i = 0; i < n; i++) {
        while (!ring.push(data, '203.0.113.9', 40000)) await new Promise((r) => setImmediate(r));
        bell.ring();
      }
    } else {
      let got = 0;
      const deliver = (): void => {
        got++;
      };
      for (let i = 0; i < n; i++) {
        ring.push(data, '203.0.113.9', 40000);
        bell.ring();
        while (got <= i) {
          const seen = backBell.arm();
          if (back.drain(deliver, 16) > 0) continue;
          const wait = backBell.wait(seen);
          if (wait !== undefined) await wait;
        }
      }
    }
    await done;
    const wall = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    clearInterval(alive);
    await w.terminate();
    const handoffs = pingPong ? 2 * n : n;
    out.push({
      mode: pingPong ? 'ping-pong' : 'stream',
      datagrams: handoffs,
      usCpuPerDatagram: (cpu.user + cpu.system) / handoffs,
      perSecond: handoffs / wall,
    });
  }
  return out;
}

export function printRing(rows: RingResult[]): void {
  console.log('\nhand-off ring alone (1200 B, this thread → a worker thread; CPU of both threads)');
  for (const r of rows) {
    console.log(
      `${r.mode.padEnd(10)} ${Math.round(r.perSecond).toLocaleString('en-US').padStart(11)} datagrams/s   ${r.usCpuPerDatagram.toFixed(2).padStart(6)} µs CPU per datagram`,
    );
  }
}

export function printHandoff(all: HandoffResult[]): void {
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const runs = all.filter((r) => r.mode === 'local' && r.size === all[0]!.size).length;
  console.log(
    `\nhand-off (2 workers; Node generator in the bench process shares the cores; relay CPU from /proc; median of ${runs})`,
  );
  console.log('size   media arrives on    round trips/s   relay µs CPU / datagram   lost windows');
  const cpuPerRt = new Map<string, number>();
  for (const size of new Set(all.map((r) => r.size))) {
    for (const mode of ['local', 'handed-off'] as const) {
      const rs = all.filter((r) => r.size === size && r.mode === mode);
      const rtps = median(rs.map((r) => r.roundTrips / r.seconds));
      const us = median(rs.map((r) => r.usPerDatagram));
      cpuPerRt.set(`${size}${mode}`, median(rs.map((r) => r.cpuSeconds / r.roundTrips)));
      const lost = rs.reduce((n, r) => n + r.reprimed, 0);
      console.log(
        `${String(size).padEnd(6)} ${(mode === 'local' ? "owner's socket" : "other worker's").padEnd(18)} ${Math.round(
          rtps,
        )
          .toLocaleString('en-US')
          .padStart(13)}   ${us.toFixed(2).padStart(8)}${String(lost).padStart(29)}`,
      );
    }
    // One handed-off datagram per round trip (client → owner); replies leave the owner directly.
    const extra = (cpuPerRt.get(`${size}handed-off`)! - cpuPerRt.get(`${size}local`)!) * 1e6;
    console.log(
      `${size} B: a handed-off datagram costs ${extra.toFixed(2)} µs more relay CPU than a local one`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const binary = `${root}.bench/udpbench`;
  mkdirSync(`${root}.bench`, { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-o', binary, `${root}bench/udpbench.c`], { stdio: 'inherit' });
  const probe = await bound();
  const echoPort = probe.address().port;
  probe.close();
  const echoChild = spawn(
    'taskset',
    ['-c', process.env.BENCH_CORES ?? '0,1', binary, 'echo', '127.0.0.1', String(echoPort)],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
      detached: true,
    },
  );
  await sleep(200);
  process.on('exit', () => killGroup(echoChild));
  const rows = await measureHandoff({
    echoPort,
    sessions: Number(process.env.BENCH_SESSIONS ?? 50),
    seconds: Number(process.env.BENCH_SECONDS ?? 3),
    sizes: (process.env.BENCH_SIZES ?? '1200').split(',').map(Number),
    cores: process.env.BENCH_CORES ?? '0,1',
    repeats: Number(process.env.BENCH_REPEATS ?? 3),
  });
  printHandoff(rows);
  printRing(await measureRing());
  process.exit(0);
}
