import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { registerDiscoveryMetrics } from '../../src/admin/metrics.ts';
import type { BackendSpec } from '../../src/defs/interfaces.ts';
import type { DnsResolver } from '../../src/discovery/dns.ts';
import { createDiscovery, DiscoveryConfigError, type ObservedDiscovery } from '../../src/discovery/index.ts';
import { FakeApiServer, kubeConfigFor, slice } from './fake-apiserver.ts';

const log = pino({ level: 'silent' });

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `name{labels} value` lines of the exposition, for exact assertions. */
async function metricLines(registry: Registry, prefix: string): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((l) => l.startsWith(prefix));
}

describe('createDiscovery', () => {
  let disco: ObservedDiscovery | undefined;
  let api: FakeApiServer | undefined;
  afterEach(async () => {
    await disco?.stop();
    await api?.stop();
    disco = undefined;
    api = undefined;
  });

  it('reports every bad option at once', async () => {
    await expect(createDiscovery({ kind: 'static', backends: 'a=1.2.3.4,b' }, { log })).rejects.toMatchObject(
      {
        problems: [
          'backends: backend #1 "a=1.2.3.4": missing :PORT in "1.2.3.4"',
          'backends: backend #2 "b": expected NAME=HOST:PORT',
        ],
      },
    );
    const err = await createDiscovery({ kind: 'dns', backendPort: 0, dnsInterval: 5 }, { log }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(DiscoveryConfigError);
    expect(err.problems).toEqual([
      'dnsName: required for dns discovery',
      'backendPort: expected 1-65535',
      'dnsInterval: expected at least 100 ms',
    ]);
    await expect(createDiscovery({ kind: 'k8s', service: '' }, { log })).rejects.toThrow(
      'service: required for k8s discovery',
    );
  });

  it('static: one snapshot and metrics', async () => {
    const registry = new Registry();
    disco = await createDiscovery({ kind: 'static', backends: 'jvb-0=10.0.0.10:10000' }, { log });
    registerDiscoveryMetrics(registry, disco);
    const seen: (readonly BackendSpec[])[] = [];
    disco.start((s) => seen.push(s));
    await waitFor('snapshot', () => seen.length === 1);
    expect(disco.kind).toBe('static');
    expect(await metricLines(registry, 'ice_ingress_discovery_backends')).toEqual([
      'ice_ingress_discovery_backends{state="ready"} 1',
      'ice_ingress_discovery_backends{state="terminating"} 0',
      'ice_ingress_discovery_backends{state="unready"} 0',
    ]);
    expect(await metricLines(registry, 'ice_ingress_discovery_connected')).toEqual([
      'ice_ingress_discovery_connected{kind="static"} 1',
    ]);
  });

  it('k8s: namespace from the kubeconfig context, metrics follow the API server', async () => {
    api = new FakeApiServer();
    await api.start();
    api.upsert(
      slice('jvb-a', 'jvb', [
        { pod: 'jvb-0', ip: '10.0.0.10' },
        { pod: 'jvb-1', ip: '10.0.0.11', ready: false, serving: true, terminating: true },
      ]),
    );
    const kubeConfig = kubeConfigFor(api);
    const registry = new Registry();
    disco = await createDiscovery(
      { kind: 'k8s', service: 'jvb', portName: 'media', namespace: '' },
      { log, kubeConfig, backoff: { initialMs: 20, maxMs: 100 } },
    );
    registerDiscoveryMetrics(registry, disco);
    const seen: (readonly BackendSpec[])[] = [];
    disco.start((s) => seen.push(s));
    await waitFor('snapshot', () => seen.length === 1);
    expect(api.requests[0]).toMatch(
      /^GET \/apis\/discovery\.k8s\.io\/v1\/namespaces\/jitsi\/endpointslices\?/,
    );
    expect(await metricLines(registry, 'ice_ingress_discovery_backends')).toEqual([
      'ice_ingress_discovery_backends{state="ready"} 1',
      'ice_ingress_discovery_backends{state="terminating"} 1',
      'ice_ingress_discovery_backends{state="unready"} 0',
    ]);
    expect(await metricLines(registry, 'ice_ingress_discovery_connected')).toEqual([
      'ice_ingress_discovery_connected{kind="k8s"} 1',
    ]);
    const [sync] = await metricLines(registry, 'ice_ingress_discovery_last_sync_timestamp_seconds');
    expect(Math.abs(Number(sync?.split(' ')[1]) - Date.now() / 1000)).toBeLessThan(10);

    await api.stop();
    await waitFor('connected 0 and restarts', async () => {
      const lines = await metricLines(registry, 'ice_ingress_discovery_');
      return (
        lines.includes('ice_ingress_discovery_connected{kind="k8s"} 0') &&
        !lines.includes('ice_ingress_discovery_restarts_total{kind="k8s"} 0')
      );
    });
    // The data path keeps the last good set.
    expect(disco.lastSnapshot?.length).toBe(2);
    expect(seen.length).toBe(1);
  });

  it('dns: resolves with the given port', async () => {
    const resolver: DnsResolver = {
      resolve4: async () => ['10.0.0.20'],
      resolve6: async () => {
        throw Object.assign(new Error('no AAAA'), { code: 'ENODATA' });
      },
    };
    disco = await createDiscovery(
      { kind: 'dns', dnsName: 'jvb.jitsi.svc.cluster.local', backendPort: 10001, dnsInterval: 60_000 },
      { log, resolver },
    );
    const seen: (readonly BackendSpec[])[] = [];
    disco.start((s) => seen.push(s));
    await waitFor('snapshot', () => seen.length === 1);
    expect(seen[0]).toEqual([{ name: '10.0.0.20', address: '10.0.0.20', port: 10001, state: 'ready' }]);
    expect(disco.status).toMatchObject({ connected: true, restarts: 0, errors: 0 });
  });
});
