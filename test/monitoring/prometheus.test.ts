import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenFor } from '../../src/backends/token.ts';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';
import {
  alerts,
  dashboardQueries,
  metricNames,
  ruleFileText,
  splitThreshold,
  withInterval,
} from './monitoring.ts';

// `npm run test:monitoring`: the dashboard and the alerts against a real Prometheus (Debian
// package `prometheus`; .ci/run installs it) that scrapes the real CLI relaying real traffic on
// loopback, plus `promtool check rules` and `promtool test rules`. Fails, never skips, when
// prometheus or promtool is missing.

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'src', 'bin.ts');
const PROMETHEUS = process.env.PROMETHEUS ?? 'prometheus';
const PROMTOOL = process.env.PROMTOOL ?? 'promtool';
/** What the dashboard's $__rate_interval becomes: 15 scrapes at the 1 s interval below. */
const RATE_INTERVAL = '15s';

const dir = mkdtempSync(join(tmpdir(), 'ice-ingress-monitoring-'));
const children: ChildProcess[] = [];
const closers: Array<() => Promise<unknown>> = [];
let promUrl = '';
let metricsText = '';

function version(cmd: string): string {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) {
    throw new Error(
      `${cmd} not found or not runnable (${r.error?.message ?? r.stderr}): apt-get install prometheus`,
    );
  }
  return `${r.stdout}${r.stderr}`.split('\n')[0]!;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Spawned in its own process group, so afterAll can end it and anything it started. */
function spawnGroup(cmd: string, args: string[], log: string): ChildProcess {
  const fd = openSync(join(dir, log), 'a');
  const child = spawn(cmd, args, {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { PATH: process.env.PATH },
  });
  children.push(child);
  return child;
}

async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** Starts the real CLI; resolves with its ports, read from its JSON start-up log. */
async function startProxy(args: string[]): Promise<{ listen: number; admin: number }> {
  const child = spawnGroup(process.execPath, [BIN, ...args], 'proxy.log');
  return until('the proxy to start', 15_000, async () => {
    if (child.exitCode !== null)
      throw new Error(`proxy exited ${child.exitCode}: ${readFileSync(join(dir, 'proxy.log'), 'utf8')}`);
    for (const line of readFileSync(join(dir, 'proxy.log'), 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      const rec = JSON.parse(line) as { msg: string; listen?: { port: number }; admin?: string };
      if (rec.msg === 'ice-ingress started') {
        return { listen: rec.listen!.port, admin: Number(rec.admin!.split(':').at(-1)) };
      }
    }
    return undefined;
  });
}

type Sample = { metric: Record<string, string>; value: [number, string] };

async function query(expr: string): Promise<Sample[]> {
  const res = await fetch(`${promUrl}/api/v1/query?${new URLSearchParams({ query: expr })}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data: { resultType: string; result: Sample[] };
  };
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
  expect(body.data.resultType, expr).toBe('vector');
  return body.data.result;
}

/** Real traffic, bounded: `rounds` rounds of new sessions, media and junk. */
async function traffic(
  proxy: { address: string; port: number },
  servers: { prefixed: FakeMediaServer; plain: FakeMediaServer },
  rounds: number,
): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    // Routed by the JVB's ufrag prefix, then media both ways.
    const a = await FakeIceClient.open();
    closers.push(() => a.close());
    await a.check(proxy, servers.prefixed.addSession());
    for (let k = 0; k < 5; k++) {
      await a.sendMedia(proxy, Buffer.from([0x80, 0x60, 0, k, 1, 2, 3, 4]));
      await a.nextMedia(2000);
    }
    // Found by probing (no prefix).
    const b = await FakeIceClient.open();
    closers.push(() => b.close());
    await b.check(proxy, servers.plain.addSession(), { timeoutMs: 3000 });
    // A ufrag no backend owns: probe_failed once --probe-timeout has passed.
    const c = await FakeIceClient.open();
    closers.push(() => c.close());
    await c.check(proxy, { ufrag: `nobody${i}x`, password: 'p'.repeat(24) }, { timeoutMs: 600 }).then(
      () => {
        throw new Error('a ufrag nobody owns was answered');
      },
      () => undefined,
    );
    // Not STUN on an unknown flow: dropped as unknown_flow_rtp.
    const junk = dgram.createSocket('udp4');
    await new Promise<void>((r) =>
      junk.send(Buffer.from([0x80, 0, 0, 1]), proxy.port, proxy.address, () => r()),
    );
    junk.close();
  }
}

/**
 * New flows for ufrags no backend owns, at once: `n` over a 5-minute rate window is above the
 * alert's 0.1/s when n > 30.
 */
const BURST = 40;
async function probeFailureBurst(proxy: { address: string; port: number }, n: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: n }, () => FakeIceClient.open()));
  for (const c of clients) closers.push(() => c.close());
  await Promise.all(
    clients.map((c, i) =>
      c.check(proxy, { ufrag: `burst${i}x`, password: 'p'.repeat(24) }, { timeoutMs: 600 }).then(
        () => {
          throw new Error('a ufrag nobody owns was answered');
        },
        () => undefined,
      ),
    ),
  );
}

beforeAll(async () => {
  version(PROMETHEUS);
  version(PROMTOOL);
  const prefixed = await FakeMediaServer.start({ name: 'jvb-a', ufragPrefix: tokenFor('jvb-a') });
  const plain = await FakeMediaServer.start({ name: 'jvb-b' });
  closers.push(
    () => prefixed.close(),
    () => plain.close(),
  );
  const upstreamBase = 20000 + Math.floor(Math.random() * 20) * 500;
  const { listen, admin } = await startProxy([
    '--listen=127.0.0.1:0',
    '--admin=127.0.0.1:0',
    // A port range of its own (below the kernel's ephemeral ports), so the free-ports gauge exists.
    `--upstream-ports=${upstreamBase}-${upstreamBase + 499}`,
    `--backends=jvb-a=${prefixed.address}:${prefixed.port},jvb-b=${plain.address}:${plain.port}`,
    '--probe-timeout=300ms',
    // Peers (docs/peers.md): the replica alone in its list, so every peer series exists and none
    // is silent (IceIngressPeerSilent stays quiet).
    `--peer-port=${upstreamBase + 600}`,
    `--peers=127.0.0.1:${upstreamBase + 600}`,
  ]);
  const proxy = { address: '127.0.0.1', port: listen };

  // Prometheus on loopback, its own config, storage and port; rules = the PrometheusRule's spec.
  writeFileSync(join(dir, 'rules.yaml'), ruleFileText());
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files: [rules.yaml]',
      'scrape_configs:',
      '  - job_name: ice-ingress',
      '    static_configs:',
      `      - targets: ['127.0.0.1:${admin}']`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  spawnGroup(
    PROMETHEUS,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
      '--log.level=warn',
    ],
    'prometheus.log',
  );
  await until('Prometheus to be ready', 30_000, async () =>
    (await fetch(`${promUrl}/-/ready`)).ok ? true : undefined,
  );

  // Scrapes from before any traffic (a rate needs the counters' rise inside its window), then
  // traffic while Prometheus scrapes every second, then enough scrapes after it for the rates.
  await until('3 scrapes of the idle proxy', 30_000, async () => {
    const r = await query('count_over_time(up{job="ice-ingress"}[1m])');
    return Number(r[0]?.value[1] ?? 0) >= 3 ? true : undefined;
  });
  await traffic(proxy, { prefixed, plain }, 3);
  await probeFailureBurst(proxy, BURST);
  await until('20 scrapes of the proxy', 40_000, async () => {
    const r = await query('count_over_time(up{job="ice-ingress"}[1m])');
    return Number(r[0]?.value[1] ?? 0) >= 20 ? true : undefined;
  });
  await until('the rules to be evaluated', 20_000, async () => {
    const res = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as {
      data: { groups: { rules: { lastEvaluation: string }[] }[] };
    };
    const rules = res.data.groups.flatMap((g) => g.rules);
    return rules.length > 0 && rules.every((r) => !r.lastEvaluation.startsWith('0001')) ? true : undefined;
  });
  metricsText = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
}, 150_000);

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.pid !== undefined) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
  await Promise.allSettled(closers.map((f) => f()));
  rmSync(dir, { recursive: true, force: true });
});

/** Series names in a Prometheus text exposition. */
function exported(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m) names.add(m[1]!);
  }
  return names;
}

describe(`monitoring against ${version(PROMETHEUS)}`, () => {
  it('Prometheus scraped the proxy, which relayed real traffic', async () => {
    expect(await query('up{job="ice-ingress"}')).toMatchObject([{ value: [expect.any(Number), '1'] }]);
    const routes = await query('ice_ingress_routes_total{outcome=~"prefix|probe_won|probe_failed"}');
    const byOutcome = Object.fromEntries(routes.map((s) => [s.metric.outcome, Number(s.value[1])]));
    expect(byOutcome).toEqual({ prefix: 3, probe_won: 3, probe_failed: 3 + BURST });
    expect(Number((await query('ice_ingress_drops_total{reason="unknown_flow_rtp"}'))[0]!.value[1])).toBe(3);
  });

  it('the dashboard and the alerts name only metrics that the proxy exports (a real /metrics)', () => {
    const have = exported(metricsText);
    expect(have.has('ice_ingress_routing_seconds_bucket')).toBe(true);
    const exprs = [...dashboardQueries().map((q) => q.expr), ...alerts().map((a) => a.expr)];
    expect(exprs.length).toBeGreaterThan(20);
    const missing: string[] = [];
    for (const expr of exprs) {
      const names = metricNames(expr);
      expect(names.length, expr).toBeGreaterThan(0);
      for (const n of names) if (!have.has(n)) missing.push(`${n} in ${expr}`);
    }
    expect(missing).toEqual([]);
    // The check can fail: the per-worker metrics are not exported (yet).
    expect(metricNames('sum by (worker) (rate(ice_ingress_worker_packets_total[5m]))')).toEqual([
      'ice_ingress_worker_packets_total',
    ]);
    expect(have.has('ice_ingress_worker_packets_total')).toBe(false);
  });

  it('every dashboard query returns a series', async () => {
    const empty: string[] = [];
    const queries = dashboardQueries();
    for (const q of queries) {
      const expr = withInterval(q.expr, RATE_INTERVAL);
      expect(expr, `${q.panel}: only $__rate_interval is a Grafana variable`).not.toContain('$');
      if ((await query(expr)).length === 0) empty.push(`${q.panel}: ${expr}`);
    }
    expect(empty).toEqual([]);
    // Not vacuous: a query for a series that does not exist is empty.
    expect(await query('ice_ingress_drops_total{reason="no_such_reason"}')).toEqual([]);
  });

  it('every alert is loaded and healthy, and its query returns a series', async () => {
    const res = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as {
      data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const loaded = res.data.groups.flatMap((g) => g.rules);
    expect(loaded.map((r) => r.name).sort()).toEqual(
      alerts()
        .map((a) => a.alert)
        .sort(),
    );
    for (const r of loaded)
      expect({ name: r.name, health: r.health, error: r.lastError ?? '' }).toEqual({
        name: r.name,
        health: 'ok',
        error: '',
      });
    for (const a of alerts()) {
      const parts = splitThreshold(a.expr);
      expect(parts, a.expr).toBeDefined();
      expect((await query(parts!.query)).length, parts!.query).toBeGreaterThan(0);
      // ... and so does the comparison, as 0/1.
      expect(
        (await query(`${parts!.query} ${parts!.op} bool ${parts!.threshold}`)).length,
        a.alert,
      ).toBeGreaterThan(0);
    }
  });

  it('the probe-failure burst of this run makes IceIngressProbeFailures pending; nothing else is', async () => {
    // 43 probe failures in the 5-minute window: above 0.1/s; the alert waits out its `for: 5m`.
    const pending = await until('IceIngressProbeFailures pending', 15_000, async () => {
      const r = await query('ALERTS{alertstate="pending"}');
      return r.some((s) => s.metric.alertname === 'IceIngressProbeFailures') ? r : undefined;
    });
    expect(pending.map((s) => s.metric.alertname)).toEqual(['IceIngressProbeFailures']);
    expect(pending[0]!.metric).toMatchObject({ job: 'ice-ingress', severity: 'warning' });
    expect(await query('ALERTS{alertstate="firing"}')).toEqual([]);
  });
});

describe('promtool', () => {
  it('check rules: the PrometheusRule spec is a valid rule file', () => {
    const out = execFileSync(PROMTOOL, ['check', 'rules', join(dir, 'rules.yaml')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(out).toContain(`SUCCESS: ${alerts().length} rules found`);
  });

  it('test rules: alerts fire on a probe-failure burst, a lost API server and a flood; silent when healthy', () => {
    copyFileSync(join(import.meta.dirname, 'alerts.promtool.yaml'), join(dir, 'alerts.promtool.yaml'));
    const r = spawnSync(PROMTOOL, ['test', 'rules', join(dir, 'alerts.promtool.yaml')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(`${r.stdout}${r.stderr}`).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('test rules can fail: with the probe-failure threshold raised out of reach, the burst case fails', () => {
    const sub = mkdtempSync(join(dir, 'broken-'));
    writeFileSync(join(sub, 'rules.yaml'), ruleFileText().replace('[5m])) > 0.1', '[5m])) > 100'));
    expect(readFileSync(join(sub, 'rules.yaml'), 'utf8')).toContain('> 100');
    copyFileSync(join(import.meta.dirname, 'alerts.promtool.yaml'), join(sub, 'alerts.promtool.yaml'));
    const r = spawnSync(PROMTOOL, ['test', 'rules', join(sub, 'alerts.promtool.yaml')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(1);
    expect(`${r.stdout}${r.stderr}`).toMatch(/IceIngressProbeFailures/);
  });
});
