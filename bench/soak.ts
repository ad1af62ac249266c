/**
 * `npm run bench:soak`: does the proxy give back what it takes? Not in CI (about 10 minutes).
 *
 * The real CLI (default flags, except loopback --listen/--admin, two fake JVBs as --backends and a
 * short --idle-timeout so that churn is visible within minutes) runs under:
 *   - session churn: calls join at --churn per second (half fan-out-routed, half prefix-routed),
 *     exchange media (50 datagrams/s, echoed by the fake JVB) for 2–20 s, one in five moves to a
 *     new port midway (NAT rebinding: a check from the new port, then media from there), then half
 *     leave (socket closed, the JVB ends the session) and half just go silent (socket kept open,
 *     the JVB expires the session 30 s later);
 *   - background junk: forged first packets at --junk-rate (bench/flooder.c, random ufrags, valid
 *     FINGERPRINT, 16 addresses of 127.1/16) and random bytes at --random-rate (a quarter of them
 *     with a STUN header) from 127.2.0.1–4.
 * Every --sample seconds it records the proxy's RSS (/proc/PID/status), its open socket fds
 * (/proc/PID/fd) and the session gauges from /metrics. When the churn time is up, new calls stop,
 * live calls stop and junk stops; once the idle timeout has passed it checks that sessions, client
 * endpoints and upstream sockets are back to 0, socket fds back to the start, and RSS within
 * --rss-tolerance-mb of the start; prints a table and exits 1 if a check fails.
 *
 * CPU: proxy pinned to core 0, this process (fake JVBs, clients, junk) and the flooder on core 1.
 *
 * Flags: --minutes M (10) --churn N (4 calls/s) --junk-rate N (100/s) --random-rate N (100/s)
 *        --idle-timeout D (5s) --sample S (5) --rss-tolerance-mb N (40) --proxy-flags "..." --json
 */
import { randomBytes, randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import { tokenFor } from '../src/backends/token.ts';
import { FakeIceClient } from '../test/fixtures/ice-client.ts';
import { FakeMediaServer } from '../test/fixtures/media-server.ts';
import type { Endpoint } from '../test/fixtures/stun-bytes.ts';
import {
  compileFlooder,
  deltas,
  fmtInt,
  fmtMb,
  gauge,
  killChildren,
  type Metrics,
  pinSelf,
  rssMb,
  type Series,
  scrape,
  sleep,
  socketFds,
  spawnPinned,
  startCli,
} from './harness.ts';

const { values: argv } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    churn: { type: 'string', default: '4' },
    'junk-rate': { type: 'string', default: '100' },
    'random-rate': { type: 'string', default: '100' },
    'idle-timeout': { type: 'string', default: '5s' },
    sample: { type: 'string', default: '5' },
    'rss-tolerance-mb': { type: 'string', default: '40' },
    'proxy-flags': { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
  },
});

function numFlag(name: keyof typeof argv, min: number, max: number): number {
  const v = String(argv[name]);
  const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : Number.NaN;
  if (!(n >= min && n <= max)) {
    process.stderr.write(`bench:soak: --${name}: expected a number ${min}..${max} (got ${v})\n`);
    process.exit(2);
  }
  return n;
}
const MINUTES = numFlag('minutes', 0.5, 240);
const CHURN = numFlag('churn', 0, 100);
const JUNK_RATE = numFlag('junk-rate', 0, 100_000);
const RANDOM_RATE = numFlag('random-rate', 0, 100_000);
const SAMPLE_S = numFlag('sample', 1, 600);
const RSS_TOLERANCE = numFlag('rss-tolerance-mb', 0, 10_000);
const IDLE = argv['idle-timeout'];
const idleMatch = /^(\d+)(ms|s)$/.exec(IDLE);
if (idleMatch === null) {
  process.stderr.write(`bench:soak: --idle-timeout: expected e.g. 5s or 5000ms (got ${IDLE})\n`);
  process.exit(2);
}
const IDLE_MS = Number(idleMatch[1]) * (idleMatch[2] === 's' ? 1000 : 1);
const PROXY_FLAGS = argv['proxy-flags'].split(/\s+/).filter((s) => s !== '');
const JSON_OUT = argv.json;
const MEDIA_PPS = 50;
/** A silent call's session ends at the fake JVB this long after its last media. */
const SILENT_EXPIRE_MS = 30_000;
const say = (s: string): void => {
  if (!JSON_OUT) process.stderr.write(`${s}\n`);
};

// ---------------------------------------------------------------------------------------------

interface Stats {
  calls: number;
  joined: number;
  joinFailed: number;
  rebinds: number;
  rebindFailed: number;
  left: number;
  silent: number;
  mediaSent: number;
  mediaReceived: number;
  junkRandom: number;
}
const stats: Stats = {
  calls: 0,
  joined: 0,
  joinFailed: 0,
  rebinds: 0,
  rebindFailed: 0,
  left: 0,
  silent: 0,
  mediaSent: 0,
  mediaReceived: 0,
  junkRandom: 0,
};

const retransmit = { timeoutMs: 5000, rtoMs: 250, maxRtoMs: 8000, maxTransmissions: 9 };

/** Calls sending media now; one ticker sends for all of them. */
const talking = new Set<FakeIceClient>();
/** Calls that went silent, sockets kept open until the end. */
const silentClients: FakeIceClient[] = [];

async function drainEchoes(c: FakeIceClient): Promise<void> {
  for (;;) {
    try {
      await c.nextMedia(3_600_000);
      stats.mediaReceived++;
    } catch {
      return; // closed
    }
  }
}

async function call(jvbs: readonly FakeMediaServer[], target: Endpoint, id: number): Promise<void> {
  stats.calls++;
  const jvb = jvbs[id % jvbs.length]!;
  const creds = id % 4 < 2 ? jvb.addSession({ prefix: tokenFor(jvb.name) }) : jvb.addSession();
  const client = await FakeIceClient.open();
  try {
    await client.check(target, creds, retransmit);
    stats.joined++;
  } catch {
    stats.joinFailed++;
    jvb.removeSession(creds.ufrag);
    await client.close();
    return;
  }
  void drainEchoes(client);
  talking.add(client);
  const lifetime = 2000 + randomInt(18_000);
  if (randomInt(5) === 0) {
    await sleep(lifetime / 2);
    talking.delete(client);
    await client.rebind();
    try {
      await client.check(target, creds, retransmit);
      stats.rebinds++;
    } catch {
      stats.rebindFailed++;
    }
    talking.add(client);
    await sleep(lifetime / 2);
  } else {
    await sleep(lifetime);
  }
  talking.delete(client);
  await sleep(300); // the last echoes
  if (randomInt(2) === 0) {
    stats.left++;
    jvb.removeSession(creds.ufrag);
    await client.close();
  } else {
    stats.silent++;
    silentClients.push(client);
    // JVB expires an endpoint that stopped answering; until then ice4j keeps the proxy's upstream
    // address bound to that session and answers another ufrag from it with 401. The fake must let
    // go before the proxy may reuse the port (--idle-timeout + --port-quarantine), else the soak
    // would measure the fake's memory, not the proxy's routing.
    setTimeout(() => jvb.removeSession(creds.ufrag), SILENT_EXPIRE_MS).unref();
  }
}

/** Random bytes from 127.2.0.1–4; a quarter start with a STUN header (type, length, cookie). */
async function junkSockets(): Promise<dgram.Socket[]> {
  const out: dgram.Socket[] = [];
  for (let i = 1; i <= 4; i++) {
    const s = dgram.createSocket('udp4');
    s.on('error', () => {});
    await new Promise<void>((r) => s.bind(0, `127.2.0.${i}`, () => r()));
    out.push(s);
  }
  return out;
}
function junkDatagram(): Buffer {
  const b = randomBytes(1 + randomInt(1200));
  if (randomInt(4) === 0 && b.length >= 20) {
    b[0] = randomInt(4);
    b.writeUInt16BE(randomInt(2) === 0 ? b.length - 20 : randomInt(65536), 2);
    b.writeUInt32BE(0x2112a442, 4);
  }
  return b;
}

interface Sample {
  t: number;
  rssMb: number;
  socketFds: number;
  sessions: number;
  clientEndpoints: number;
  upstreamSockets: number;
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
  talking: number;
}

function sampleOf(pid: number, m: Metrics, t: number): Sample {
  return {
    t,
    rssMb: rssMb(pid),
    socketFds: Number.NaN, // filled by the caller, before the scrape's own connection
    sessions: gauge(m, 'ice_ingress_sessions'),
    clientEndpoints: gauge(m, 'ice_ingress_client_endpoints'),
    upstreamSockets: gauge(m, 'ice_ingress_upstream_sockets'),
    heapUsedMb: gauge(m, 'nodejs_heap_size_used_bytes') / 2 ** 20,
    heapTotalMb: gauge(m, 'nodejs_heap_size_total_bytes') / 2 ** 20,
    externalMb: gauge(m, 'nodejs_external_memory_bytes') / 2 ** 20,
    talking: talking.size,
  };
}

// ---------------------------------------------------------------------------------------------

const pinned = pinSelf(1);
const flooderBinary = compileFlooder();
const jvbs = await Promise.all(['jvb-0', 'jvb-1'].map((name) => FakeMediaServer.start({ name })));
const cli = await startCli({
  core: 0,
  backends: jvbs.map((j) => `${j.name}=127.0.0.1:${j.port}`).join(','),
  extra: ['--idle-timeout', IDLE, ...PROXY_FLAGS],
});
const target = cli.listen;
const samples: Sample[] = [];
const take = async (t0: number): Promise<Sample> => {
  const fds = socketFds(cli.pid);
  const s = sampleOf(cli.pid, await scrape(cli.adminPort), (performance.now() - t0) / 1000);
  s.socketFds = fds;
  samples.push(s);
  return s;
};

const t0 = performance.now();
await sleep(500);
const m0 = await scrape(cli.adminPort);
const start = await take(t0);
say(
  `soak: ${MINUTES} min churn at ${CHURN} calls/s, junk ${JUNK_RATE} forged + ${RANDOM_RATE} random datagrams/s, idle timeout ${IDLE}`,
);
const churnMs = MINUTES * 60_000;

// Background junk for the whole churn period.
const flooder =
  JUNK_RATE > 0
    ? spawnPinned(1, flooderBinary, [
        '--target',
        `${target.address}:${target.port}`,
        '--rate',
        String(Math.round(JUNK_RATE)),
        '--seconds',
        String(Math.ceil(churnMs / 1000)),
        '--sources',
        '16',
        '--ports',
        '64',
      ])
    : undefined;
let flooderOut = '';
if (flooder !== undefined) {
  flooder.stdout!.on('data', (d: Buffer) => {
    flooderOut += d.toString();
  });
}
const flooderDone = flooder === undefined ? Promise.resolve() : new Promise((r) => flooder.once('exit', r));
const junk = await junkSockets();
let junkTicks = 0;
const junkTimer =
  RANDOM_RATE > 0
    ? setInterval(() => {
        const due = Math.floor(((performance.now() - t0) * RANDOM_RATE) / 1000) - junkTicks;
        for (let k = 0; k < due; k++, junkTicks++) {
          junk[junkTicks % junk.length]!.send(junkDatagram(), target.port, target.address);
          stats.junkRandom++;
        }
      }, 10)
    : undefined;

// Media for every talking call.
let mediaTicks = 0;
const mediaTimer = setInterval(() => {
  const due = Math.floor(((performance.now() - t0) * MEDIA_PPS) / 1000) - mediaTicks;
  for (let k = 0; k < due; k++, mediaTicks++) {
    for (const c of talking) {
      const b = Buffer.alloc(172);
      b[0] = 0x80;
      b[1] = 0x6f;
      b.writeUInt32BE(mediaTicks >>> 0, 4);
      stats.mediaSent++;
      c.sendMedia(target, b).catch(() => {});
    }
  }
}, 10);

// Churn.
const calls = new Set<Promise<void>>();
let nextId = 0;
let nextSample = SAMPLE_S * 1000;
let lastSay = 0;
while (performance.now() - t0 < churnMs) {
  const due = Math.floor(((performance.now() - t0) * CHURN) / 1000);
  while (nextId < due) {
    const p = call(jvbs, target, nextId++).catch(() => {});
    calls.add(p);
    void p.then(() => calls.delete(p));
  }
  if (performance.now() - t0 >= nextSample) {
    nextSample += SAMPLE_S * 1000;
    const s = await take(t0);
    if (s.t - lastSay >= 30) {
      lastSay = s.t;
      say(
        `  t=${s.t.toFixed(0)} s: RSS ${fmtMb(s.rssMb)} MB, socket fds ${s.socketFds}, sessions ${s.sessions}, talking ${s.talking}, calls ${stats.calls}`,
      );
    }
  }
  await sleep(20);
}
const churnEnd = performance.now();
const peakDuringChurn = samples.reduce((a, s) => Math.max(a, s.rssMb), 0);
say('churn over: no new calls; live calls finish, junk stops');
await Promise.all(calls);
clearInterval(mediaTimer);
if (junkTimer !== undefined) clearInterval(junkTimer);
flooder?.kill('SIGKILL');
await flooderDone;
for (const s of junk) s.close();
const quietAt = performance.now();
const quietT = (quietAt - t0) / 1000;

// Back to baseline: wait for the idle timeout (and the probe timeout of any last forged flow).
const settleDeadline = performance.now() + IDLE_MS * 2 + 10_000;
let settled: Sample;
for (;;) {
  await sleep(1000);
  settled = await take(t0);
  const base = settled.sessions === 0 && settled.clientEndpoints === 0 && settled.upstreamSockets === 0;
  if ((base && settled.socketFds <= start.socketFds) || performance.now() > settleDeadline) break;
}
const settledAfterS = (performance.now() - quietAt) / 1000;
await sleep(1000);
const end = await take(t0);
const mEnd = await scrape(cli.adminPort);
for (const c of silentClients) await c.close();
await cli.stop();
await Promise.all(jvbs.map((j) => j.close()));
killChildren();

// ---------------------------------------------------------------------------------------------

interface Check {
  what: string;
  start: string;
  end: string;
  tolerance: string;
  ok: boolean;
}
const checks: Check[] = [
  {
    what: 'sessions (ice_ingress_sessions)',
    start: String(start.sessions),
    end: String(end.sessions),
    tolerance: '= start',
    ok: end.sessions === start.sessions,
  },
  {
    what: 'client endpoints',
    start: String(start.clientEndpoints),
    end: String(end.clientEndpoints),
    tolerance: '= start',
    ok: end.clientEndpoints === start.clientEndpoints,
  },
  {
    what: 'upstream sockets (gauge)',
    start: String(start.upstreamSockets),
    end: String(end.upstreamSockets),
    tolerance: '= start',
    ok: end.upstreamSockets === start.upstreamSockets,
  },
  {
    what: 'open socket fds (/proc/PID/fd)',
    start: String(start.socketFds),
    end: String(end.socketFds),
    tolerance: '= start',
    ok: end.socketFds === start.socketFds,
  },
  {
    what: 'RSS MB',
    start: fmtMb(start.rssMb),
    end: fmtMb(end.rssMb),
    tolerance: `≤ start + ${RSS_TOLERANCE}`,
    ok: end.rssMb <= start.rssMb + RSS_TOLERANCE,
  },
];

const counters = (re: RegExp): Series[] => deltas(m0, mEnd, re).filter((s) => s.value > 0);
const text = (ss: Series[]): string =>
  ss
    .sort((a, b) => b.value - a.value)
    .map((s) => `${Object.values(s.labels).join(',') || s.name} ${fmtInt(s.value)}`)
    .join(', ') || 'none';
const flooderReport = (() => {
  try {
    return JSON.parse(flooderOut.trim().split('\n').at(-1) ?? '') as { sent: number };
  } catch {
    return undefined; // killed before it printed (it runs for the whole churn time)
  }
})();

if (JSON_OUT) {
  process.stdout.write(
    `${JSON.stringify(
      {
        node: process.version,
        pinned,
        minutes: MINUTES,
        churn: CHURN,
        idleTimeout: IDLE,
        stats,
        checks,
        samples,
        settledAfterS,
        drops: counters(/^ice_ingress_drop\w*_total$/),
        closed: counters(/^ice_ingress_sessions_closed_total$/),
        routes: counters(/^ice_ingress_routes_total$/),
      },
      null,
      2,
    )}\n`,
  );
} else {
  const out: string[] = [];
  out.push('');
  out.push(
    `ice-ingress bench:soak — Node ${process.version}; real CLI, default flags + --idle-timeout ${IDLE}${
      PROXY_FLAGS.length > 0 ? ` ${PROXY_FLAGS.join(' ')}` : ''
    }; 2 fake JVBs; ${pinned ? 'proxy on core 0, clients/fakes/junk on core 1' : 'not pinned (no taskset)'}`,
  );
  out.push(
    `${MINUTES} min churn: ${fmtInt(stats.calls)} calls (${fmtInt(stats.joined)} joined, ${fmtInt(
      stats.joinFailed,
    )} failed to join), ${fmtInt(stats.rebinds)} rebinds (${stats.rebindFailed} failed), ${fmtInt(
      stats.left,
    )} left, ${fmtInt(stats.silent)} went silent; media ${fmtInt(stats.mediaSent)} sent, ${fmtInt(
      stats.mediaReceived,
    )} echoed (${((100 * (stats.mediaSent - stats.mediaReceived)) / Math.max(1, stats.mediaSent)).toFixed(
      3,
    )} % lost)`,
  );
  out.push(
    `junk: ${flooderReport === undefined ? `≈ ${fmtInt(JUNK_RATE * MINUTES * 60)}` : fmtInt(flooderReport.sent)} forged first packets, ${fmtInt(
      stats.junkRandom,
    )} random datagrams`,
  );
  out.push(`drops by reason: ${text(counters(/^ice_ingress_drop\w*_total$/))}`);
  out.push(`sessions closed by reason: ${text(counters(/^ice_ingress_sessions_closed_total$/))}`);
  out.push(`routes: ${text(counters(/^ice_ingress_routes_total$/))}`);
  out.push('');
  out.push(
    '| t (s) | RSS MB | V8 heap used / total MB | external MB | socket fds | sessions | client endpoints | upstream sockets | calls talking |',
  );
  out.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const every = Math.max(1, Math.round(30 / SAMPLE_S));
  samples.forEach((s, i) => {
    if (i % every !== 0 && i !== samples.length - 1 && s !== settled) return;
    out.push(
      `| ${s.t.toFixed(0)} | ${fmtMb(s.rssMb)} | ${fmtMb(s.heapUsedMb)} / ${fmtMb(s.heapTotalMb)} | ${fmtMb(s.externalMb)} | ${s.socketFds} | ${s.sessions} | ${s.clientEndpoints} | ${s.upstreamSockets} | ${s.talking} |`,
    );
  });
  out.push('');
  out.push(
    `peak RSS during churn ${fmtMb(peakDuringChurn)} MB, over the whole run ${fmtMb(
      samples.reduce((a, s) => Math.max(a, s.rssMb), 0),
    )} MB; churn stopped at t=${((churnEnd - t0) / 1000).toFixed(0)} s, the last call ended and junk stopped at t=${quietT.toFixed(
      0,
    )} s; gauges and fds back to baseline ${settledAfterS.toFixed(1)} s later (idle timeout ${IDLE})`,
  );
  out.push('');
  out.push('| returns to baseline | start | end | tolerance | |');
  out.push('|---|---:|---:|---|---|');
  for (const c of checks)
    out.push(`| ${c.what} | ${c.start} | ${c.end} | ${c.tolerance} | ${c.ok ? '✓' : '✗'} |`);
  process.stdout.write(`${out.join('\n')}\n`);
}
process.exit(checks.every((c) => c.ok) ? 0 : 1);
