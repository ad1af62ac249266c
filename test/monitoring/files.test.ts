import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { alerts, DIR, dashboardQueries, metricNames, splitThreshold } from './monitoring.ts';

// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JavaScript template
const GRAFANA_DATASOURCE = '${datasource}';

// The monitoring files without Prometheus (npm test): shape and the helpers the Prometheus-backed
// suite (prometheus.test.ts, npm run test:monitoring) relies on.

describe('deploy/helm/ice-ingress/files: dashboard and alerts', () => {
  it('the dashboard is Grafana JSON with a Prometheus datasource variable and unique panel ids', () => {
    const d = JSON.parse(readFileSync(join(DIR, 'dashboard.json'), 'utf8')) as {
      uid: string;
      panels: { id: number; type: string; targets?: { refId: string; datasource: { uid: string } }[] }[];
      templating: { list: { name: string; type: string; query: string }[] };
    };
    expect(d.uid).toBe('ice-ingress');
    expect(d.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }),
    );
    expect(new Set(d.panels.map((p) => p.id)).size).toBe(d.panels.length);
    for (const p of d.panels.filter((x) => x.type !== 'row')) {
      expect(p.targets!.length, `panel ${p.id}`).toBeGreaterThan(0);
      expect(new Set(p.targets!.map((t) => t.refId)).size).toBe(p.targets!.length);
      for (const t of p.targets!) expect(t.datasource.uid).toBe(GRAFANA_DATASOURCE);
    }
  });

  it('covers what the issue asks: sessions, drops, routes, routing time, probes, discovery, lag, CPU', () => {
    const all = dashboardQueries()
      .map((q) => q.expr)
      .join('\n');
    for (const m of [
      'ice_ingress_sessions',
      'ice_ingress_drops_total',
      'ice_ingress_routes_total',
      'ice_ingress_routing_seconds_bucket',
      'ice_ingress_probes_total',
      'ice_ingress_discovery_connected',
      'ice_ingress_discovery_backends',
      'nodejs_eventloop_lag_p99_seconds',
      'process_cpu_seconds_total',
      // docs/peers.md
      'ice_ingress_peers',
      'ice_ingress_peer_queries_total',
      'ice_ingress_peer_handoffs_total',
      'ice_ingress_peer_tunnel_packets_total',
      'ice_ingress_peer_tunnels',
    ]) {
      expect(all, m).toContain(m);
    }
  });

  it('every alert has a severity, a summary, a `for`, and the `<query> <op> <threshold>` shape', () => {
    expect(alerts().map((a) => a.alert)).toEqual([
      'IceIngressProbeFailures',
      'IceIngressDiscoveryDisconnected',
      'IceIngressNoReadyBackends',
      'IceIngressLimitHit',
      'IceIngressFloodRefused',
      'IceIngressSlowRouting',
      'IceIngressEventLoopLag',
      'IceIngressCpuSaturated',
      'IceIngressPeerSilent',
    ]);
    for (const a of alerts()) {
      expect(a.labels?.severity, a.alert).toMatch(/^(critical|warning|info)$/);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.for, a.alert).toMatch(/^\d+m$/);
      expect(splitThreshold(a.expr), a.expr).toBeDefined();
    }
  });

  it('metricNames finds selected metrics, not functions, labels or keywords', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (job, le) (rate(ice_ingress_routing_seconds_bucket[5m]))) > 0.1',
      ),
    ).toEqual(['ice_ingress_routing_seconds_bucket']);
    expect(
      metricNames('time() - max by (instance, kind) (ice_ingress_discovery_last_sync_timestamp_seconds)'),
    ).toEqual(['ice_ingress_discovery_last_sync_timestamp_seconds']);
    expect(metricNames('sum(rate(a_total{reason=~"x|y"}[5m])) / on (job) group_left b')).toEqual([
      'a_total',
      'b',
    ]);
    expect(splitThreshold('max(x{a="b"}) == 0')).toEqual({
      query: 'max(x{a="b"})',
      op: '==',
      threshold: '0',
    });
    expect(splitThreshold('rate(x[5m])')).toBeUndefined();
  });
});
