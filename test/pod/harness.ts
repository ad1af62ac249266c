import type { Config } from '../../src/config.ts';
import { parseConfig } from '../../src/config.ts';
import { DROP_REASON_LABELS, ROUTE_LABELS } from '../../src/defs/reasons.ts';
import { createLogger } from '../../src/log.ts';
import { type ProxyHandle, startProxy } from '../../src/pod/pod.ts';
import { FakeMediaServer, type FakeMediaServerOptions } from '../fixtures/media-server.ts';
import type { Endpoint } from '../fixtures/stun-bytes.ts';

/** A proxy on 127.0.0.1:0 in front of fake ice4j-like servers, all over real UDP. */
export interface Rig {
  proxy: ProxyHandle;
  servers: FakeMediaServer[];
  /** The proxy's public address: where clients send. */
  target: Endpoint;
  config: Config;
  drops(reason: string): number;
  routes(outcome: string): number;
  close(): Promise<void>;
}

export async function startRig(
  serverOpts: Partial<FakeMediaServerOptions>[] = [{}, {}],
  flags: string[] = [],
): Promise<Rig> {
  const servers = await Promise.all(
    serverOpts.map((o, i) => FakeMediaServer.start({ name: `jvb-${i}`, ...o })),
  );
  const backends = servers.map((s) => `${s.name}=${s.address}:${s.port}`).join(',');
  const parsed = parseConfig(
    [
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
      '--backends',
      backends,
      '--upstream-ports',
      '0',
      '--probe-timeout',
      '1s',
      ...flags,
    ],
    {},
  );
  if (parsed.kind !== 'run') throw new Error('unexpected');
  const proxy = await startProxy(parsed.config, {
    log: createLogger(process.env.ICE_INGRESS_TEST_LOG ?? 'silent'),
    processMetrics: false,
  });
  await until(() => proxy.ready(), 2000);
  const c = proxy.datapath.counters;
  return {
    proxy,
    servers,
    config: parsed.config,
    target: { address: '127.0.0.1', port: proxy.listen.port },
    drops: (reason) => c.drops[indexOf(DROP_REASON_LABELS, reason)]!,
    routes: (outcome) => c.routes[indexOf(ROUTE_LABELS, outcome)]!,
    async close() {
      await proxy.close();
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}

function indexOf(labels: readonly string[], label: string): number {
  const i = labels.indexOf(label);
  if (i < 0) throw new Error(`no such label ${label}`);
  return i;
}

/** Polls `cond` every 5 ms until true or `ms` passed; throws on timeout (bounded waits only). */
export async function until(cond: () => boolean, ms: number, what = 'condition'): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
