import { parseConfig } from '../../src/config.ts';
import { createLogger } from '../../src/log.ts';
import { type IngressHandle, startIngress } from '../../src/pod/pod.ts';
import type { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer, type FakeMediaServerOptions } from '../fixtures/media-server.ts';
import type { Endpoint } from '../fixtures/stun-bytes.ts';

/**
 * A proxy with `--workers N` (worker threads sharing 127.0.0.1:PORT with SO_REUSEPORT) in front of
 * fake ice4j-like servers, all over real UDP, plus the one thing a test cannot choose: which
 * worker the kernel hashes a client 4-tuple to. {@link PoolRig.workerOf} finds out by sending a
 * datagram the proxy drops and counts (RTP from an unknown flow) and reading the per-worker
 * counters on /metrics; a test then opens sockets until one lands on the worker it needs.
 */
export interface PoolRig {
  proxy: IngressHandle;
  servers: FakeMediaServer[];
  target: Endpoint;
  metrics(): Promise<Metrics>;
  /** Which worker's socket the kernel gives datagrams from `c`'s current 5-tuple. */
  workerOf(c: FakeIceClient): Promise<number>;
  /** Rebinds `c` (new source port) until its 5-tuple hashes to `worker`; bounded. */
  steer(c: FakeIceClient, worker: number): Promise<void>;
  close(): Promise<void>;
}

export type Metrics = (name: string, labels?: Record<string, string>) => number;

export interface MetricRow {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample of a Prometheus text exposition. */
export function parseMetricRows(text: string): MetricRow[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(l);
      if (!m) throw new Error(`bad exposition line ${l}`);
      const labels: Record<string, string> = {};
      for (const [, k, v] of (m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)) labels[k!] = v!;
      return { name: m[1]!, labels, value: Number(m[3]) };
    });
}

export function parseMetrics(text: string): Metrics {
  const rows = parseMetricRows(text);
  return (name, labels = {}) => {
    const row = rows.find(
      (r) => r.name === name && Object.entries(labels).every(([k, v]) => r.labels[k] === v),
    );
    if (row === undefined) throw new Error(`no metric ${name} ${JSON.stringify(labels)}`);
    return row.value;
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startPool(
  serverOpts: Partial<FakeMediaServerOptions>[] = [{}, {}],
  flags: string[] = [],
  workers = 2,
  host = '127.0.0.1',
): Promise<PoolRig> {
  const servers = await Promise.all(
    serverOpts.map((o, i) => FakeMediaServer.start({ name: `jvb-${i}`, host, ...o })),
  );
  const hostPort = (h: string, p: number): string => (h.includes(':') ? `[${h}]:${p}` : `${h}:${p}`);
  const backends = servers.map((s) => `${s.name}=${hostPort(s.address, s.port)}`).join(',');
  const parsed = parseConfig(
    [
      '--listen',
      hostPort(host, 0),
      '--admin',
      '127.0.0.1:0',
      '--backends',
      backends,
      '--upstream-ports',
      '0',
      '--probe-timeout',
      '1s',
      '--workers',
      String(workers),
      ...flags,
    ],
    {},
  );
  if (parsed.kind !== 'run') throw new Error('unexpected');
  const proxy = await startIngress(parsed.config, {
    log: createLogger(process.env.ICE_INGRESS_TEST_LOG ?? 'silent'),
    processMetrics: false,
  });
  const deadline = performance.now() + 5000;
  while (!proxy.ready()) {
    if (performance.now() > deadline) throw new Error('pool not ready');
    await sleep(10);
  }
  const target = { address: host, port: proxy.listen.port };
  const metrics = async (): Promise<Metrics> =>
    parseMetrics(await (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text());
  const clientIn = async (): Promise<number[]> => {
    const m = await metrics();
    return Array.from({ length: workers }, (_, w) =>
      m('ice_ingress_worker_packets_total', { worker: String(w), direction: 'client_in' }),
    );
  };
  // Worker rows are published every 100 ms (src/workers/stats.ts): a count read right after other
  // traffic (the check a test just sent) may still grow from it, and would then be taken for the
  // probe's worker. Read until two reads more than one period apart agree.
  const settled = async (): Promise<number[]> => {
    let a = await clientIn();
    for (let i = 0; i < 20; i++) {
      await sleep(130);
      const b = await clientIn();
      if (b.every((n, w) => n === a[w])) return b;
      a = b;
    }
    throw new Error('per-worker counters never settled');
  };
  const workerOf = async (c: FakeIceClient): Promise<number> => {
    const before = await settled();
    const probe = Buffer.from([0x80, 0x60, 0x70, 0x72, 0x6f, 0x62, 0x65]);
    await c.sendMedia(target, probe);
    const until = performance.now() + 2000;
    let resendAt = performance.now() + 300;
    while (performance.now() < until) {
      await sleep(20);
      const after = await clientIn();
      const moved = after.findIndex((n, w) => n > before[w]!);
      if (moved >= 0) return moved;
      // A loaded machine can drop a loopback datagram (a full receive queue): send it again. The
      // same 5-tuple always hashes to the same worker, so a second copy cannot change the answer.
      if (performance.now() >= resendAt) {
        resendAt += 300;
        await c.sendMedia(target, probe);
      }
    }
    throw new Error('probe datagram reached no worker');
  };
  return {
    proxy,
    servers,
    target,
    metrics,
    workerOf,
    async steer(c, worker) {
      // Each fresh source port lands on a given worker with probability 1/N: 40 tries leave a
      // chance of (1/2)^40 to fail with two workers.
      for (let i = 0; i < 40; i++) {
        if ((await workerOf(c)) === worker) return;
        await c.rebind();
      }
      throw new Error(`no source port hashed to worker ${worker} in 40 tries`);
    },
    async close() {
      await proxy.close();
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}
