/**
 * `npm run bench:flood`: can a flood of forged first packets keep new calls out?
 *
 * The real CLI (`node src/cli.ts`, default flags except --listen/--admin on loopback and
 * --backends naming two fake JVBs) is attacked with the native flooder (bench/flooder.c: forged
 * Binding Requests with USERNAME, MESSAGE-INTEGRITY and a valid FINGERPRINT, a fresh random server
 * ufrag each) while:
 *   - 10 established sessions exchange media (loss measured against a no-flood baseline first);
 *   - new legitimate clients join, half fan-out-routed (server ufrag without prefix token), half
 *     prefix-routed (server ufrag starting with the backend's token, src/backends/token.ts), each
 *     retransmitting its check like libwebrtc's StunRequest (RTO 250 ms, doubling, 8 s cap) for at
 *     most 5 s;
 *   - the same number of clients join right after the flood stops.
 * A second run floods from the legitimate clients' own address (127.0.0.1, many ports: an attacker
 * behind the same NAT). Each run gets a fresh proxy and fresh fake JVBs (upstream ports that rest in
 * quarantine would otherwise leak from one run into the next).
 *
 * The fake JVBs (test/fixtures/media-server.ts) drop unknown ufrags silently, as ice4j does, and
 * echo media. Metrics are read back from the proxy's /metrics by name pattern (drops by whatever
 * reasons appear, every probe counter), so the bench runs unchanged against a data path that adds
 * reasons or splits budgets. Probe budgets are read from the CLI's own --help defaults.
 *
 * CPU (2-core machine): the proxy is pinned to core 0; the flooder and this process (fake JVBs,
 * clients, media) share core 1, as bench/run.ts does. The output says what each used. Before the
 * runs, a short burst of the flooder is checked datagram by datagram with the fixtures' STUN parser.
 *
 * Flags: --rate N (30000 datagrams/s) --seconds S (8) --sources N (250) --ports N (2000)
 *        --same-address on|off|only (on: also the victims'-address run) --clients N (10 per kind)
 *        --flood-token BACKEND (the flood carries that backend's valid prefix token)
 *        --media-pps N (100 per established session) --rto MS (250) --proxy-flags "..." --json
 */
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { tokenFor } from '../src/backends/token.ts';
import { FakeIceClient } from '../test/fixtures/ice-client.ts';
import { FakeMediaServer } from '../test/fixtures/media-server.ts';
import {
  AttrType,
  type Endpoint,
  getAttribute,
  getUsername,
  MessageType,
  parseStun,
  verifyFingerprint,
} from '../test/fixtures/stun-bytes.ts';
import {
  type Cli,
  cliFlags,
  compileFlooder,
  cpuSeconds,
  deltas,
  flagValue,
  fmtInt,
  fmtMb,
  gauge,
  killChildren,
  type Metrics,
  machineCpu,
  pinSelf,
  RssSampler,
  type Series,
  scrape,
  sleep,
  spawnPinned,
  startCli,
  sum,
  udpRcvbufErrors,
} from './harness.ts';

const { values: argv } = parseArgs({
  options: {
    rate: { type: 'string', default: '30000' },
    seconds: { type: 'string', default: '8' },
    sources: { type: 'string', default: '250' },
    ports: { type: 'string', default: '2000' },
    'same-address': { type: 'string', default: 'on' },
    clients: { type: 'string', default: '10' },
    'flood-token': { type: 'string' },
    'media-pps': { type: 'string', default: '100' },
    rto: { type: 'string', default: '250' },
    'proxy-flags': { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
  },
});

function intFlag(name: keyof typeof argv, min: number, max: number): number {
  const v = String(argv[name]);
  const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!(n >= min && n <= max)) {
    process.stderr.write(`bench:flood: --${name}: expected a whole number ${min}..${max} (got ${v})\n`);
    process.exit(2);
  }
  return n;
}
const RATE = intFlag('rate', 1, 2_000_000);
const SECONDS = intFlag('seconds', 2, 120);
const SOURCES = intFlag('sources', 1, 65_000);
const PORTS = intFlag('ports', 1, 20_000);
const CLIENTS = intFlag('clients', 1, 100);
const MEDIA_PPS = intFlag('media-pps', 1, 1000);
const RTO = intFlag('rto', 10, 5000);
const SAME = argv['same-address'];
if (SAME !== 'on' && SAME !== 'off' && SAME !== 'only') {
  process.stderr.write(`bench:flood: --same-address: expected on, off or only (got ${SAME})\n`);
  process.exit(2);
}
const PROXY_FLAGS = argv['proxy-flags'].split(/\s+/).filter((s) => s !== '');
const JSON_OUT = argv.json;
const FLOOD_TOKEN = argv['flood-token'] === undefined ? undefined : tokenFor(argv['flood-token']);
const ESTABLISHED = 10;
const JOIN_TIMEOUT_MS = 5000;
const AFTER_WINDOW_MS = 2000;
const BACKENDS = ['jvb-0', 'jvb-1'] as const;

const say = (s: string): void => {
  if (!JSON_OUT) process.stderr.write(`${s}\n`);
};

// ---------------------------------------------------------------------------------------------
// Legitimate clients

type Kind = 'fanout' | 'prefix';
interface Join {
  kind: Kind;
  ok: boolean;
  /** performance.now() at the first transmission. */
  startedAt: number;
  /** ms to the verified Binding success. */
  ms: number | undefined;
  transmissions: number | undefined;
  error: string | undefined;
}

function credentials(jvbs: readonly FakeMediaServer[], kind: Kind, i: number) {
  const jvb = jvbs[i % jvbs.length]!;
  return kind === 'prefix' ? jvb.addSession({ prefix: tokenFor(jvb.name) }) : jvb.addSession();
}

/** libwebrtc StunRequest timing: RTO 250 ms doubling, capped at 8 s (RFC 8489 §6.2.1 shape). */
function retransmit(timeoutMs: number) {
  return { timeoutMs, rtoMs: RTO, maxRtoMs: 8000, maxTransmissions: 9 };
}

async function join(
  jvbs: readonly FakeMediaServer[],
  target: Endpoint,
  kind: Kind,
  i: number,
): Promise<Join> {
  const creds = credentials(jvbs, kind, i);
  const client = await FakeIceClient.open();
  const startedAt = performance.now();
  try {
    const r = await client.check(target, creds, retransmit(JOIN_TIMEOUT_MS));
    return { kind, ok: true, startedAt, ms: r.rtt, transmissions: r.transmissions, error: undefined };
  } catch (err) {
    const e = err as { code?: string; stunCode?: number; transmissions?: number };
    return {
      kind,
      ok: false,
      startedAt,
      ms: undefined,
      transmissions: e.transmissions,
      error: `${e.code ?? String(err)}${e.stunCode === undefined ? '' : ` ${e.stunCode}`}`,
    };
  } finally {
    await client.close();
  }
}

/** `n` of each kind, alternating, one every `spacingMs`. */
async function joinWave(
  jvbs: readonly FakeMediaServer[],
  target: Endpoint,
  n: number,
  spacingMs: number,
): Promise<Join[]> {
  const running: Promise<Join>[] = [];
  for (let i = 0; i < 2 * n; i++) {
    if (i > 0 && spacingMs > 0) await sleep(spacingMs);
    running.push(join(jvbs, target, i % 2 === 0 ? 'fanout' : 'prefix', i >> 1));
  }
  return Promise.all(running);
}

// ---------------------------------------------------------------------------------------------
// Established sessions and their media

interface Loss {
  sent: number;
  received: number;
}

/**
 * Media of the established sessions: `pps` datagrams per second each (RTP-looking, first byte
 * 0x80), echoed by the fake JVB. Byte 2 carries the phase, so every echo is counted against the
 * phase in which it was sent, whenever it comes back.
 */
class MediaPump {
  phase = 0;
  readonly sent: number[] = [0, 0, 0];
  readonly received: number[] = [0, 0, 0];
  readonly #clients: FakeIceClient[];
  readonly #target: Endpoint;
  readonly #timer: NodeJS.Timeout;
  readonly #t0 = performance.now();
  #ticks = 0;
  #running = true;

  constructor(clients: FakeIceClient[], target: Endpoint, pps: number) {
    this.#clients = clients;
    this.#target = target;
    this.#timer = setInterval(() => {
      const due = Math.floor(((performance.now() - this.#t0) * pps) / 1000) - this.#ticks;
      for (let k = 0; k < due; k++) this.#sendAll();
    }, 5);
    for (const c of clients) void this.#drain(c);
  }

  #sendAll(): void {
    const seq = this.#ticks++;
    for (const c of this.#clients) {
      const b = Buffer.alloc(172);
      b[0] = 0x80;
      b[1] = 0x6f;
      b[2] = this.phase;
      b.writeUInt32BE(seq >>> 0, 4);
      this.sent[this.phase]!++;
      c.sendMedia(this.#target, b).catch(() => {});
    }
  }

  async #drain(c: FakeIceClient): Promise<void> {
    while (this.#running) {
      try {
        const p = await c.nextMedia(60_000);
        const phase = p.data[2]!;
        if (p.data[0] === 0x80 && phase < this.received.length) this.received[phase]!++;
      } catch {
        return; // closed
      }
    }
  }

  stopSending(): void {
    clearInterval(this.#timer);
  }

  loss(phase: number): Loss {
    return { sent: this.sent[phase]!, received: this.received[phase]! };
  }

  async close(): Promise<void> {
    this.stopSending();
    this.#running = false;
    await Promise.all(this.#clients.map((c) => c.close()));
  }
}

// ---------------------------------------------------------------------------------------------
// One run: fresh JVBs and proxy, baseline, flood, after

interface FloodReport {
  sent: number;
  errors: number;
  seconds: number;
  rate: number;
  sockets: number;
  sources: number;
  cpuSeconds: number;
}

interface RunResult {
  label: string;
  sourceAddress: string | undefined;
  flood: FloodReport;
  loss: { baseline: Loss; during: Loss; after: Loss };
  /** Whole run: media datagrams the JVBs echoed (so sent − echoed were lost on the way in). */
  mediaAtJvbs: number;
  joins: { baseline: Join[]; during: Join[]; after: Join[] };
  /** Joins of the after wave connected within AFTER_WINDOW_MS of the flood's end. */
  afterDeadline: number;
  floodWindow: {
    drops: Series[];
    probes: Series[];
    counters: Series[];
    clientIn: number;
    /** Legitimate datagrams the clients sent in the window (media + checks): client_in minus these is flood. */
    legitimate: number;
    probesPerSecondPeak: number;
  };
  afterWindow: { drops: Series[]; probes: Series[] };
  rss: { before: number; peak: number; after: number };
  /** V8 heap used / total MB (prom-client default metrics) before the flood, at its end, at the run's end. */
  heap: Array<{ used: number; total: number }>;
  /** Shares of one core during the flood; `machine` = all cores busy, `others` = the rest of it. */
  cpu: {
    proxyCore0: number;
    benchProcess: number;
    flooder: number;
    machine: number;
    others: number;
    cores: number;
  };
  kernelRcvbufDrops: number;
  proxyLogLines: string[];
  proxyArgs: readonly string[];
}

function runFlooder(binary: string, target: Endpoint, sourceIp: string | undefined): ChildProcess {
  const args = [
    '--target',
    `${target.address}:${target.port}`,
    '--rate',
    String(RATE),
    '--seconds',
    String(SECONDS),
    '--ports',
    String(PORTS),
  ];
  if (sourceIp !== undefined) args.push('--source-ip', sourceIp);
  else args.push('--sources', String(SOURCES));
  if (FLOOD_TOKEN !== undefined) args.push('--token', FLOOD_TOKEN);
  return spawnPinned(1, binary, args);
}

const DROPS = /^ice_ingress_drop\w*_total$/;
const PROBES = /^ice_ingress_probe\w*_total$/;
const COUNTERS = /^ice_ingress_\w+_total$/;
const PACKETS = /^ice_ingress_packets_total$/;

function clientIn(m: Metrics): number {
  for (const s of m.values())
    if (PACKETS.test(s.name) && s.labels['direction'] === 'client_in') return s.value;
  return 0;
}

/** Checks the joining clients sent before `end`: the first send, then RTO doubling (as retransmit()). */
function checksDuringFlood(js: readonly Join[], end: number): number {
  let n = 0;
  for (const j of js) {
    const until = j.ok ? Math.min(end, j.startedAt + j.ms!) : end;
    let at = j.startedAt;
    let rto = RTO;
    for (let k = 0; k < 9 && at <= until && at - j.startedAt < JOIN_TIMEOUT_MS; k++) {
      n++;
      at += rto;
      rto = Math.min(rto * 2, 8000);
    }
  }
  return n;
}

async function runOnce(binary: string, label: string, sourceIp: string | undefined): Promise<RunResult> {
  const jvbs = await Promise.all(BACKENDS.map((name) => FakeMediaServer.start({ name })));
  let cli: Cli | undefined;
  let media: MediaPump | undefined;
  try {
    cli = await startCli({
      core: 0,
      backends: jvbs.map((j) => `${j.name}=127.0.0.1:${j.port}`).join(','),
      extra: PROXY_FLAGS,
    });
    const target = cli.listen;
    const rss = new RssSampler(cli.pid, 100);

    // Established sessions (half of each kind), then their media.
    const clients: FakeIceClient[] = [];
    for (let i = 0; i < ESTABLISHED; i++) {
      const kind: Kind = i % 2 === 0 ? 'fanout' : 'prefix';
      const c = await FakeIceClient.open();
      await c.check(target, credentials(jvbs, kind, i >> 1), retransmit(3000));
      clients.push(c);
    }
    media = new MediaPump(clients, target, MEDIA_PPS);

    say(`[${label}] baseline: ${ESTABLISHED} sessions with media, ${CLIENTS}+${CLIENTS} joins, no flood`);
    const t0 = performance.now();
    const baselineJoins = await joinWave(jvbs, target, CLIENTS, 50);
    await sleep(Math.max(0, 3000 - (performance.now() - t0)));

    const m0 = await scrape(cli.adminPort);
    const cpu0 = cpuSeconds(cli.pid);
    const bench0 = process.cpuUsage();
    const rcv0 = udpRcvbufErrors();
    const machine0 = machineCpu();
    say(`[${label}] flood: ${fmtInt(RATE)}/s for ${SECONDS} s`);
    const flooder = runFlooder(binary, target, sourceIp);
    let out = '';
    const exited = new Promise<void>((resolve) => flooder.once('exit', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('flooder did not start')), 10_000);
      flooder.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      flooder.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
      flooder.once('exit', (code) => reject(new Error(`flooder exited ${code}: ${out}`)));
    }).catch((err: Error) => {
      if (!out.includes('ready')) throw err;
    });
    const floodStart = performance.now();
    media.phase = 1;
    const rssBefore = rss.sample();

    // Probes per second, sampled once a second (peak shows what the budget's burst allows).
    let probesPeak = 0;
    let lastProbes = sum(deltas(new Map(), m0, PROBES));
    let lastAt = performance.now();
    const prober = setInterval(() => {
      scrape(cli!.adminPort).then(
        (m) => {
          const now = performance.now();
          const p = sum(deltas(new Map(), m, PROBES));
          probesPeak = Math.max(probesPeak, ((p - lastProbes) * 1000) / (now - lastAt));
          lastProbes = p;
          lastAt = now;
        },
        () => {}, // a slow scrape under flood: the next one catches up
      );
    }, 1000);

    // Joins during the flood: start after 1/8 of it (the flood has taken hold), all inside it.
    const offset = Math.min(1000, (SECONDS * 1000) / 8);
    const spacing = Math.max(0, Math.min(100, (SECONDS * 1000 - JOIN_TIMEOUT_MS - offset) / (2 * CLIENTS)));
    const duringJoins = sleep(offset).then(() => joinWave(jvbs, target, CLIENTS, spacing));

    await exited;
    const floodEnd = performance.now();
    clearInterval(prober);
    media.phase = 2;
    const flood = JSON.parse(out.trim().split('\n').at(-1)!) as FloodReport;
    const floodSecs = (floodEnd - floodStart) / 1000;
    const cpu1 = cpuSeconds(cli.pid);
    const bench1 = process.cpuUsage(bench0);
    const rcv1 = udpRcvbufErrors();
    const machine1 = machineCpu();
    const afterJoins = joinWave(jvbs, target, CLIENTS, 10);
    const m1 = await scrape(cli.adminPort);
    say(`[${label}] after: ${CLIENTS}+${CLIENTS} joins`);

    const during = await duringJoins;
    const after = await afterJoins;
    await sleep(500);
    media.stopSending();
    await sleep(300); // last echoes
    const m2 = await scrape(cli.adminPort);
    const rssAfter = rss.sample();
    rss.stop();

    const result: RunResult = {
      label,
      sourceAddress: sourceIp,
      flood,
      loss: { baseline: media.loss(0), during: media.loss(1), after: media.loss(2) },
      mediaAtJvbs: jvbs.reduce((a, j) => a + j.stats.mediaEchoed, 0),
      joins: { baseline: baselineJoins, during, after },
      afterDeadline: after.filter((j) => j.ok && j.startedAt + j.ms! <= floodEnd + AFTER_WINDOW_MS).length,
      floodWindow: {
        drops: deltas(m0, m1, DROPS).filter((s) => s.value > 0),
        probes: deltas(m0, m1, PROBES),
        counters: deltas(m0, m1, COUNTERS).filter(
          (s) => s.value > 0 && !DROPS.test(s.name) && !PROBES.test(s.name) && !/_bytes_/.test(s.name),
        ),
        clientIn: clientIn(m1) - clientIn(m0),
        legitimate: media.loss(1).sent + checksDuringFlood(during, floodEnd),
        probesPerSecondPeak: probesPeak,
      },
      afterWindow: {
        drops: deltas(m1, m2, DROPS).filter((s) => s.value > 0),
        probes: deltas(m1, m2, PROBES),
      },
      rss: { before: rssBefore, peak: rss.peak(), after: rssAfter },
      heap: [m0, m1, m2].map((m) => ({
        used: gauge(m, 'nodejs_heap_size_used_bytes') / 2 ** 20,
        total: gauge(m, 'nodejs_heap_size_total_bytes') / 2 ** 20,
      })),
      cpu: {
        proxyCore0: (cpu1 - cpu0) / floodSecs,
        benchProcess: (bench1.user + bench1.system) / 1e6 / floodSecs,
        flooder: flood.cpuSeconds / flood.seconds,
        machine: (machine1.busy - machine0.busy) / floodSecs,
        others:
          (machine1.busy -
            machine0.busy -
            (cpu1 - cpu0) -
            flood.cpuSeconds -
            (bench1.user + bench1.system) / 1e6) /
          floodSecs,
        cores: machine1.cores,
      },
      kernelRcvbufDrops: rcv1 - rcv0,
      proxyLogLines: cli.log.slice(),
      proxyArgs: cli.args,
    };
    return result;
  } finally {
    await media?.close();
    await cli?.stop();
    await Promise.all(jvbs.map((j) => j.close()));
  }
}

// ---------------------------------------------------------------------------------------------
// Report

const pct = (l: Loss): number => (l.sent === 0 ? 0 : (100 * (l.sent - l.received)) / l.sent);
const lossText = (l: Loss): string =>
  `${pct(l).toFixed(3)} % (${fmtInt(l.sent - l.received)}/${fmtInt(l.sent)})`;

function joinText(js: readonly Join[], kind: Kind, withinMs = JOIN_TIMEOUT_MS): string {
  const mine = js.filter((j) => j.kind === kind);
  const ok = mine.filter((j) => j.ok && j.ms! <= withinMs);
  const times = ok.map((j) => j.ms!).sort((a, b) => a - b);
  const med = times.length === 0 ? '-' : `${Math.round(times[times.length >> 1]!)}`;
  const max = times.length === 0 ? '-' : `${Math.round(times.at(-1)!)}`;
  const sends = ok.map((j) => j.transmissions!).sort((a, b) => a - b);
  const errors = [...new Set(mine.filter((j) => !j.ok).map((j) => j.error))].join(', ');
  return `${ok.length} / ${mine.length} (median ${med} ms, max ${max} ms, sends median ${
    sends.length === 0 ? '-' : sends[sends.length >> 1]
  })${errors === '' ? '' : `; failed: ${errors}`}`;
}
const joined = (js: readonly Join[], kind: Kind): number =>
  js.filter((j) => j.kind === kind && j.ok && j.ms! <= JOIN_TIMEOUT_MS).length;

/** "reason 123, …" (largest first); with `named`, each prefixed by its short metric name. */
function seriesText(ss: readonly Series[], named = false): string {
  if (ss.length === 0) return 'none';
  return [...ss]
    .sort((a, b) => b.value - a.value)
    .map((s) => {
      const values = Object.values(s.labels).join(',');
      const short = s.name.replace(/^ice_ingress_/, '').replace(/_total$/, '');
      const head = named ? (values === '' ? short : `${short}{${values}}`) : values === '' ? short : values;
      return `${head} ${fmtInt(s.value)}`;
    })
    .join(', ');
}

interface Budget {
  flag: string;
  help: string;
  value: number;
}

/** Probe budgets as the CLI documents them: flags "per second" about probes, with the values in use. */
function probeBudgets(): Budget[] {
  const flags = cliFlags();
  return flags
    .filter((f) => /probe|budget/.test(f.flag + f.help) && /per second/.test(f.help))
    .map((f) => ({ flag: f.flag, help: f.help, value: Number(flagValue(flags, PROXY_FLAGS, f.flag)) }))
    .filter((b) => Number.isFinite(b.value));
}

function row(what: string, measured: string, target = '', pass?: boolean): string {
  const verdict = pass === undefined ? '' : pass ? ' ✓' : ' ✗';
  return `| ${what} | ${measured} | ${target}${verdict} |`;
}

function report(runs: RunResult[], budgets: Budget[], pinned: boolean): string {
  const out: string[] = [];
  const spread = runs.find((r) => r.sourceAddress === undefined);
  const same = runs.find((r) => r.sourceAddress !== undefined);
  const budgetSum = budgets.reduce((a, b) => a + b.value, 0);
  // The fan-out budget, if the CLI has one of its own; else the one global budget.
  const fanout = budgets.filter((b) => /fan/.test(b.flag + b.help));
  const fanoutBudget = fanout.length > 0 ? fanout.reduce((a, b) => a + b.value, 0) : budgetSum;
  const budgetText =
    budgets.map((b) => `--${b.flag} ${fmtInt(b.value)}`).join(' + ') || 'none found in --help';
  out.push('');
  out.push(
    `ice-ingress bench:flood — Node ${process.version}; proxy: real CLI, default flags${
      PROXY_FLAGS.length > 0 ? ` + ${PROXY_FLAGS.join(' ')}` : ''
    }, 2 backends (fake JVBs, unknown ufrags dropped silently)`,
  );
  out.push(
    pinned
      ? 'CPU: proxy pinned to core 0; flooder + this process (fake JVBs, clients, media) share core 1'
      : 'CPU: taskset unavailable, nothing pinned (proxy, flooder and fakes compete freely)',
  );
  out.push(
    `flood: forged Binding Requests (USERNAME, MESSAGE-INTEGRITY, valid FINGERPRINT, fresh random server ufrag${
      FLOOD_TOKEN === undefined ? '' : ` after token ${FLOOD_TOKEN}`
    }), ${fmtInt(RATE)}/s for ${SECONDS} s; ${ESTABLISHED} established sessions × ${MEDIA_PPS} media pps; joins retransmit at RTO ${RTO} ms doubling, give up after ${JOIN_TIMEOUT_MS / 1000} s`,
  );
  out.push(`probe budgets (from --help): ${budgetText}`);
  out.push(
    `load average at start ${LOAD_AT_START} (/proc/loadavg; other work on the machine shows as "other processes" under CPU)`,
  );
  out.push('');
  out.push('| what | measured | target (bench/README.md) |');
  out.push('|---|---|---|');
  for (const r of runs) {
    const isSame = r === same;
    const tag = isSame
      ? `victims' address ${r.sourceAddress}, ${fmtInt(r.flood.sockets)} ports`
      : `${fmtInt(r.flood.sources)} addresses × ${fmtInt(r.flood.sockets)} ports`;
    out.push(
      row(
        `**flood from ${tag}**`,
        `sent ${fmtInt(r.flood.sent)} in ${r.flood.seconds.toFixed(1)} s = ${fmtInt(r.flood.rate)}/s (asked ${fmtInt(
          RATE,
        )}/s); proxy received ≈ ${fmtInt(r.floodWindow.clientIn - r.floodWindow.legitimate)} of them (client_in ${fmtInt(
          r.floodWindow.clientIn,
        )} − ${fmtInt(r.floodWindow.legitimate)} legitimate); kernel rcvbuf drops ${fmtInt(
          r.kernelRcvbufDrops,
        )} (machine-wide)`,
        isSame
          ? ''
          : `≥ 10× fan-out budget: ${((RATE * BACKENDS.length) / fanoutBudget).toFixed(1)}× (${BACKENDS.length} probes per flow)`,
        isSame ? undefined : RATE * BACKENDS.length >= 10 * fanoutBudget,
      ),
    );
    const extra = pct(r.loss.during) - pct(r.loss.baseline);
    const sentAll = r.loss.baseline.sent + r.loss.during.sent + r.loss.after.sent;
    const gotAll = r.loss.baseline.received + r.loss.during.received + r.loss.after.received;
    const lostIn = sentAll - r.mediaAtJvbs;
    const lostBack = r.mediaAtJvbs - gotAll;
    out.push(
      row(
        "established sessions' media loss",
        `baseline ${lossText(r.loss.baseline)}; during ${lossText(r.loss.during)}; after ${lossText(
          r.loss.after,
        )}; of all ${fmtInt(lostIn + lostBack)} lost, ${fmtInt(lostIn)} before the JVB, ${fmtInt(lostBack)} on the way back`,
        '< 0.1 % more than baseline',
        extra < 0.1,
      ),
    );
    out.push(
      row(
        'joins without flood (baseline)',
        `fan-out ${joinText(r.joins.baseline, 'fanout')}; prefix ${joinText(r.joins.baseline, 'prefix')}`,
      ),
    );
    const fd = joined(r.joins.during, 'fanout');
    const pd = joined(r.joins.during, 'prefix');
    out.push(
      row(
        'new fan-out sessions during the flood (≤ 5 s)',
        joinText(r.joins.during, 'fanout'),
        isSame ? '' : `≥ ${Math.ceil(CLIENTS * 0.9)} / ${CLIENTS}`,
        isSame ? undefined : fd >= Math.ceil(CLIENTS * 0.9),
      ),
    );
    out.push(
      row(
        'new prefix sessions during the flood (≤ 5 s)',
        joinText(r.joins.during, 'prefix'),
        `${CLIENTS} / ${CLIENTS}`,
        pd === CLIENTS,
      ),
    );
    const afterFan = joined(r.joins.after, 'fanout');
    const afterPre = joined(r.joins.after, 'prefix');
    out.push(
      row(
        'new sessions right after the flood',
        `fan-out ${joinText(r.joins.after, 'fanout')}; prefix ${joinText(r.joins.after, 'prefix')}; connected by flood end + 2 s: ${r.afterDeadline} / ${2 * CLIENTS}`,
        isSame ? '' : `${2 * CLIENTS} / ${2 * CLIENTS} within 2 s`,
        isSame ? undefined : r.afterDeadline === 2 * CLIENTS && afterFan + afterPre === 2 * CLIENTS,
      ),
    );
    out.push(row('drops during the flood, by reason', seriesText(r.floodWindow.drops)));
    out.push(row('drops after the flood, by reason', seriesText(r.afterWindow.drops)));
    const probes = sum(r.floodWindow.probes);
    const floodIn = Math.max(1, r.floodWindow.clientIn - r.floodWindow.legitimate);
    const avg = probes / r.flood.seconds;
    // A token bucket may spend its burst (1 s worth in main's) on top of the rate.
    const allowed = budgetSum * (r.flood.seconds + 1);
    out.push(
      row(
        'probe datagrams during the flood',
        `${fmtInt(probes)} = ${(probes / floodIn).toFixed(3)} per flood datagram received; ${fmtInt(avg)}/s average, ${fmtInt(
          r.floodWindow.probesPerSecondPeak,
        )}/s peak 1-s sample${r.floodWindow.probes.length > 1 ? ` (${seriesText(r.floodWindow.probes)})` : ''}`,
        `within budgets: ≤ ${fmtInt(budgetSum)}/s × (${r.flood.seconds.toFixed(1)} s + 1 s burst) = ${fmtInt(allowed)}`,
        budgetSum > 0 ? probes <= allowed : undefined,
      ),
    );
    out.push(
      row(
        'proxy RSS',
        `${fmtMb(r.rss.before)} → peak ${fmtMb(r.rss.peak)} → ${fmtMb(r.rss.after)} MB (${r.rss.peak - r.rss.before >= 0 ? '+' : ''}${fmtMb(
          r.rss.peak - r.rss.before,
        )}); V8 heap used / total ${r.heap.map((h) => `${fmtMb(h.used)} / ${fmtMb(h.total)}`).join(' → ')} MB`,
        'grows ≤ 50 MB',
        r.rss.peak - r.rss.before <= 50,
      ),
    );
    out.push(
      row(
        'CPU during the flood',
        `proxy ${(100 * r.cpu.proxyCore0).toFixed(0)} % of core 0; flooder ${(100 * r.cpu.flooder).toFixed(
          0,
        )} % + fakes/clients ${(100 * r.cpu.benchProcess).toFixed(0)} % of core 1; machine ${(
          100 * r.cpu.machine
        ).toFixed(0)} % of one core busy in all (${r.cpu.cores} cores), other processes ≈ ${Math.max(
          0,
          100 * r.cpu.others,
        ).toFixed(0)} %`,
      ),
    );
    out.push(row('other counters during the flood', seriesText(r.floodWindow.counters, true)));
    if (r.proxyLogLines.length > 0) {
      const msgs = new Map<string, number>();
      for (const l of r.proxyLogLines) {
        let m = l;
        try {
          m = (JSON.parse(l) as { msg?: string }).msg ?? l;
        } catch {
          // not JSON
        }
        msgs.set(m, (msgs.get(m) ?? 0) + 1);
      }
      out.push(row('proxy log lines', [...msgs].map(([m, n]) => `${n}× "${m}"`).join('; ')));
    }
  }
  if (spread === undefined && same === undefined) out.push('(no runs)');
  return out.join('\n');
}

/**
 * Before measuring anything: a short burst of the flooder into a plain socket, every datagram
 * checked with the fixtures' own STUN parser (FINGERPRINT valid, USERNAME "<ufrag>:<ufrag>" with
 * the token if one was asked for, MESSAGE-INTEGRITY of 20 bytes). A flooder that sent junk would
 * measure the wrong thing.
 */
async function selfCheck(binary: string): Promise<string> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  let received = 0;
  let valid = 0;
  sock.on('message', (msg) => {
    received++;
    const m = parseStun(msg);
    const user = m === undefined ? undefined : getUsername(m);
    if (
      m !== undefined &&
      m.type === MessageType.BINDING_REQUEST &&
      verifyFingerprint(m) &&
      getAttribute(m, AttrType.MESSAGE_INTEGRITY)?.value.length === 20 &&
      user !== undefined &&
      /^[0-9a-zA-Z]+:[A-Za-z0-9+/]+$/.test(user) &&
      (FLOOD_TOKEN === undefined || user.startsWith(FLOOD_TOKEN))
    ) {
      valid++;
    }
  });
  const args = ['--target', `127.0.0.1:${sock.address().port}`, '--rate', '2000', '--seconds', '1'];
  args.push('--max', '200', '--sources', '4', '--ports', '8');
  if (FLOOD_TOKEN !== undefined) args.push('--token', FLOOD_TOKEN);
  const child = spawnPinned(1, binary, args);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  await new Promise((r) => child.once('exit', r));
  await sleep(100);
  sock.close();
  const sent = (JSON.parse(out.trim().split('\n').at(-1)!) as FloodReport).sent;
  if (sent !== 200 || received !== sent || valid !== received) {
    throw new Error(`flooder self-check failed: sent ${sent}, received ${received}, valid ${valid}`);
  }
  return `${valid}/${sent} datagrams valid`;
}

// ---------------------------------------------------------------------------------------------

const LOAD_AT_START = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const pinned = pinSelf(1);
const binary = compileFlooder();
const checked = await selfCheck(binary);
say(`flooder self-check: ${checked}`);
const budgets = probeBudgets();
const runs: RunResult[] = [];
try {
  if (SAME !== 'only') runs.push(await runOnce(binary, 'spread', undefined));
  if (SAME !== 'off') runs.push(await runOnce(binary, 'same-address', '127.0.0.1'));
} finally {
  killChildren();
}
if (JSON_OUT) {
  process.stdout.write(
    `${JSON.stringify(
      {
        node: process.version,
        pinned,
        rate: RATE,
        seconds: SECONDS,
        proxyFlags: PROXY_FLAGS,
        floodToken: FLOOD_TOKEN,
        loadAverageAtStart: LOAD_AT_START,
        budgets,
        runs,
      },
      null,
      2,
    )}\n`,
  );
} else {
  process.stdout.write(`${report(runs, budgets, pinned)}\n`);
}
process.exit(0);
