import { afterEach, describe, expect, it } from 'vitest';
import { registerDiscoveryMetrics } from '../../src/admin/metrics.ts';
import { parseConfig } from '../../src/config.ts';
import { CLOSE_REASONS } from '../../src/defs/reasons.ts';
import { createDiscovery } from '../../src/discovery/index.ts';
import { createLogger } from '../../src/log.ts';
import { type ProxyHandle, startProxy } from '../../src/pod/pod.ts';
import { FakeApiServer, kubeConfigFor, slice } from '../discovery/fake-apiserver.ts';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';
import { until } from './harness.ts';

/**
 * The proxy fed by EndpointSlice discovery from a local list+watch API server (real HTTP, the real
 * @kubernetes/client-node informer), in front of fake JVBs on two loopback addresses sharing one
 * port, as pods behind a Service do. Follows one pod through ready → terminating → gone, with the
 * API server going away in between.
 */

const log = createLogger(process.env.ICE_INGRESS_TEST_LOG ?? 'silent');
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const rtp = (tag: string): Buffer => Buffer.concat([Buffer.from([0x80, 0x60]), Buffer.from(tag)]);

async function echoes(
  c: FakeIceClient,
  target: { address: string; port: number },
  tag: string,
): Promise<boolean> {
  await c.sendMedia(target, rtp(tag));
  return c.nextMedia(400).then(
    (m) => m.data.subarray(2).toString() === tag,
    () => false,
  );
}

describe('proxy with Kubernetes EndpointSlice discovery', () => {
  it('keeps sessions of a terminating pod, still resolves its ufrags, survives an API outage, and closes sessions of a pod that left', async () => {
    const a = await FakeMediaServer.start({ name: 'jvb-0', host: '127.0.0.2' });
    cleanups.push(() => a.close());
    const b = await FakeMediaServer.start({ name: 'jvb-1', host: '127.0.0.3', port: a.port });
    cleanups.push(() => b.close());
    const port = a.port;

    const api = new FakeApiServer();
    await api.start();
    cleanups.push(() => api.stop());
    api.upsert(
      slice(
        'jvb-abc',
        'jvb',
        [
          { pod: 'jvb-0', ip: '127.0.0.2' },
          { pod: 'jvb-1', ip: '127.0.0.3' },
        ],
        { port },
      ),
    );
    const kubeConfig = kubeConfigFor(api);
    const discovery = await createDiscovery(
      { kind: 'k8s', service: 'jvb', portName: 'media' },
      { log, kubeConfig, backoff: { initialMs: 20, maxMs: 100 } },
    );
    const parsed = parseConfig(
      [
        '--discovery',
        'k8s',
        '--service',
        'jvb',
        '--listen',
        '127.0.0.1:0',
        '--admin',
        '127.0.0.1:0',
        '--upstream-ports',
        '0',
      ],
      {},
    );
    if (parsed.kind !== 'run') throw new Error('unexpected');
    const proxy: ProxyHandle = await startProxy(parsed.config, { log, discovery, processMetrics: false });
    cleanups.push(() => proxy.close());
    registerDiscoveryMetrics(proxy.registry, discovery);
    await until(() => proxy.ready(), 5000, 'first discovery sync');
    const target = { address: '127.0.0.1', port: proxy.listen.port };
    const clients: FakeIceClient[] = [];
    const client = async (): Promise<FakeIceClient> => {
      const c = await FakeIceClient.open();
      clients.push(c);
      cleanups.push(() => c.close());
      return c;
    };

    // Both pods ready: a session on jvb-0.
    const c1 = await client();
    await c1.check(target, a.addSession());
    expect(await echoes(c1, target, 'ready')).toBe(true);

    // jvb-0 starts draining (serving + terminating): its session keeps flowing and a new ufrag of
    // it (a new participant of a conference it still hosts) still resolves.
    api.upsert(
      slice(
        'jvb-abc',
        'jvb',
        [
          { pod: 'jvb-0', ip: '127.0.0.2', ready: false, serving: true, terminating: true },
          { pod: 'jvb-1', ip: '127.0.0.3' },
        ],
        { port },
      ),
    );
    const metrics = async (): Promise<string> =>
      (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text();
    await until(() => discovery.lastSnapshot?.[0]?.state === 'terminating', 5000, 'terminating');
    expect(await echoes(c1, target, 'draining')).toBe(true);
    const c2 = await client();
    await c2.check(target, a.addSession());
    expect(await echoes(c2, target, 'late-joiner')).toBe(true);

    // The API server goes away: routing stays as it was, new sessions still resolve.
    await api.stop();
    await until(() => !discovery.status.connected, 5000, 'discovery notices the outage');
    expect(await metrics()).toMatch(/^ice_ingress_discovery_connected\{kind="k8s"\} 0$/m);
    const c3 = await client();
    await c3.check(target, b.addSession());
    expect(await echoes(c3, target, 'outage')).toBe(true);
    expect(await echoes(c1, target, 'outage-existing')).toBe(true);
    expect(proxy.ready()).toBe(true);

    // It comes back; jvb-0 is gone: its sessions close, jvb-1's continue.
    await api.start();
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-1', ip: '127.0.0.3' }], { port }), { silent: true });
    const gone = proxy.datapath.counters.closed;
    await until(() => gone[CLOSE_REASONS.indexOf('backend_gone')] === 2, 10_000, 'sessions of jvb-0 closed');
    expect(await echoes(c1, target, 'after-gone')).toBe(false);
    expect(await echoes(c3, target, 'after-gone-b')).toBe(true);
    expect(proxy.datapath.size).toBe(1);
  });
});
