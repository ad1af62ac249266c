/**
 * `npm run bench:hot`: nanoseconds per call of the hot functions, without sockets, so that a change
 * to the data path shows up here before it shows up in packets per second.
 *   - parseBindingRequest on a real ICE check (USERNAME, PRIORITY, ICE-CONTROLLED,
 *     MESSAGE-INTEGRITY, FINGERPRINT): the cost of every new flow's first datagram;
 *   - Datapath.onClientDatagram for media on an established session, and the return path,
 *     with a transport that only counts sends.
 * Also prints heap growth over the established-flow loop: the hot path should allocate nothing.
 */
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { BackendTable } from '../src/backends/backend-table.ts';
import { Datapath } from '../src/datapath/datapath.ts';
import type { Transport, Upstream, UpstreamHandler } from '../src/defs/interfaces.ts';
import { newUsernameView, parseBindingRequest } from '../src/stun/parse.ts';
import { buildBindingRequest, buildBindingSuccess } from '../test/fixtures/stun-bytes.ts';

function bench(name: string, n: number, fn: (i: number) => void): void {
  for (let i = 0; i < Math.min(n, 100_000); i++) fn(i); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn(i);
  const ns = ((performance.now() - t0) * 1e6) / n;
  console.log(`${name.padEnd(52)} ${ns.toFixed(1).padStart(8)} ns/op  (${n.toLocaleString('en-US')} ops)`);
}

const check = buildBindingRequest({ username: 'abcdefghijklmn:Xy9z', password: 'p'.repeat(22) });
const view = newUsernameView();
bench('parseBindingRequest (ICE check, FINGERPRINT verified)', 2_000_000, () => {
  parseBindingRequest(check, view);
});

let sends = 0;
let handler: UpstreamHandler | undefined;
const upstream: Upstream = {
  localPort: 40000,
  sendTo() {
    sends++;
  },
  send() {
    sends++;
  },
  connect() {},
  close() {},
};
const transport: Transport = {
  sendToClient() {
    sends++;
  },
  openUpstream(_family, _port, h) {
    handler = h;
    return upstream;
  },
};
let now = 0;
const backends = new BackendTable();
const dp = new Datapath({
  transport,
  backends,
  ports: undefined,
  clock: () => now,
  log: pino({ level: 'silent' }),
  options: {
    idleTimeoutMs: 60_000,
    probeTimeoutMs: 3000,
    probeRounds: 6,
    probeRate: 1e9,
    directedProbeRate: 1e9,
    strictPrefix: false,
    maxPendingPerSource: 1000,
    maxSessions: 1000,
    negativeTtlMs: 10_000,
    learnedMax: 1000,
  },
});
dp.updateBackends([{ name: 'jvb-0', address: '10.0.0.1', port: 10000, state: 'ready' }]);
dp.onClientDatagram(check, '192.0.2.1', 5000);
handler!.onMessage(
  buildBindingSuccess({
    transactionId: check.subarray(8, 20),
    mapped: { address: '10.0.0.9', port: 40000 },
    password: 'p'.repeat(22),
  }),
  '10.0.0.1',
  10000,
);
if (dp.size !== 1) throw new Error('session not established');

const media = Buffer.alloc(1200, 0x80);
const N = 5_000_000;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
gc();
const heap0 = process.memoryUsage().heapUsed;
bench('Datapath.onClientDatagram (media, established)', N, (i) => {
  now = i / 1000;
  dp.onClientDatagram(media, '192.0.2.1', 5000);
});
bench('upstream handler (media from backend → client)', N, () => {
  handler!.onMessage(media, '10.0.0.1', 10000);
});
gc();
const heap1 = process.memoryUsage().heapUsed;

// A flood's first checks, refused by admission before anything is allocated: every one has a fresh
// random server ufrag and arrives from one of 250 sources; the negative cache and the per-source
// shares refuse them once the (tiny) budget is spent.
const floodChecks = Array.from({ length: 1024 }, (_, i) =>
  buildBindingRequest({ username: `f${i.toString(36).padStart(13, 'x')}:abcd`, password: 'p'.repeat(22) }),
);
const sources = Array.from({ length: 250 }, (_, i) => `127.1.${i >> 8}.${i & 255}`);
const floodOptions = {
  idleTimeoutMs: 60_000,
  probeTimeoutMs: 3000,
  probeRounds: 6,
  probeRate: 1,
  directedProbeRate: 1,
  strictPrefix: true,
  maxPendingPerSource: 1000,
  maxSessions: 1000,
  negativeTtlMs: 10_000,
  learnedMax: 1000,
};
const strict = new Datapath({
  transport,
  backends: new BackendTable(),
  ports: undefined,
  clock: () => now,
  log: pino({ level: 'silent' }),
  options: floodOptions,
});
strict.updateBackends([{ name: 'jvb-0', address: '10.0.0.1', port: 10000, state: 'ready' }]);
bench('first check refused: --strict-prefix, no token', N / 5, (i) => {
  strict.onClientDatagram(floodChecks[i & 1023]!, sources[i % 250]!, 20000 + (i & 1023));
});
const loose = new Datapath({
  transport,
  backends: new BackendTable(),
  ports: undefined,
  clock: () => now,
  log: pino({ level: 'silent' }),
  options: { ...floodOptions, strictPrefix: false },
});
loose.updateBackends([{ name: 'jvb-0', address: '10.0.0.1', port: 10000, state: 'ready' }]);
bench('first check refused: fan-out share/budget spent', N / 5, (i) => {
  loose.onClientDatagram(floodChecks[i & 1023]!, sources[i % 250]!, 20000 + (i & 1023));
});
console.log(
  `heap growth over ${(2 * N + 200_000).toLocaleString('en-US')} hot-path calls: ${((heap1 - heap0) / 1024).toFixed(0)} KiB; datagrams "sent": ${sends.toLocaleString('en-US')}`,
);
