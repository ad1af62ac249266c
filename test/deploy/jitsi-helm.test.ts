import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { tokenFor } from '../../src/backends/token.ts';
import { chartJvb, loadValues, ROOT, releaseIn, VALUES_FILE, type Values } from './jitsi-helm.ts';
import { type Obj, schemaProblems } from './k8s.ts';

// deploy/jitsi-helm/values.yaml (jitsi-helm's values) and ice-ingress-values.yaml (this chart's),
// without Helm (npm test). This chart rendered with them: render.test.ts (npm run test:deploy).

const HOCON_PARSER = '@pushcorn/hocon-parser';
const parseHocon = async (text: string): Promise<Record<string, unknown>> => {
  const { default: parser } = await import(HOCON_PARSER);
  return parser.parse({ text, strict: true });
};

const BIN = join(ROOT, '..', 'src', 'bin.ts');
const GUIDE = join(ROOT, '..', 'docs', 'jitsi-helm.md');
const PROXY_VALUES = join(ROOT, 'jitsi-helm', 'ice-ingress-values.yaml');
const values = loadValues();
const jvb = values.jvb;
const [init] = jvb.extraInitContainers;

/** The JVB pod as jitsi-helm v3.4.0 renders its volumes and mounts, with ours added. */
function podOf(): Obj {
  const chart = chartJvb(releaseIn(VALUES_FILE), values);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `${chart.deploymentName}-6d5f8c7b9-x2k9p`, labels: chart.podLabels },
    spec: {
      volumes: [
        { name: 'run', emptyDir: { sizeLimit: '16Mi' } },
        { name: 'tmp', emptyDir: { sizeLimit: '16Mi' } },
        ...jvb.extraVolumes,
      ],
      initContainers: jvb.extraInitContainers,
      containers: [
        {
          name: 'jitsi-meet',
          image: 'ghcr.io/jitsi/jvb:stable-11146-2',
          ports: [{ name: chart.udpPortName, containerPort: chart.udpPort, protocol: 'UDP' }],
          resources: jvb.resources,
          volumeMounts: [
            { name: 'run', mountPath: '/run' },
            { name: 'tmp', mountPath: '/tmp' },
            ...jvb.extraVolumeMounts,
          ],
        },
      ],
    },
  };
}

describe('deploy/jitsi-helm/values.yaml', () => {
  it('runs several JVBs without the chart Service, advertising the proxy, STUN off', () => {
    expect(jvb.replicaCount).toBeGreaterThan(1);
    expect(jvb.service.enabled).toBe(false);
    expect(jvb.useHostPort).toBe(false);
    expect(jvb.useHostNetwork).toBe(false);
    expect(jvb.portRangeSize).toBe(1);
    expect(jvb.disableStun).toBe(true);
    expect(jvb.useNodeIP).toBe(false);
    // The chart's own per-release custom-jvb.conf would be mounted over the per-pod one.
    expect(jvb.custom?.configs?._custom_jvb_conf ?? '').toBe('');
    // The chart accepts it (its replicaCount rule), and would not with its Service on.
    expect(chartJvb('jitsi', values).failure).toBeUndefined();
    expect(chartJvb('jitsi', { jvb: { ...jvb, service: { enabled: true } } }).failure).toBeDefined();
    // One public address, given twice: to docker-jitsi-meet (publicIPs) and to jvb-config.
    const publicEnv = init.env.find((e: { name: string }) => e.name === 'PUBLIC_ADDRESS');
    expect(jvb.publicIPs).toEqual([publicEnv.value]);
    expect(jvb.resources.requests.cpu).toBeDefined(); // the overlay's HPA measures against it
  });

  it('the guide and the values file install the same release', () => {
    expect(releaseIn(GUIDE)).toBe(releaseIn(VALUES_FILE));
  });

  it('ice-ingress-values.yaml selects that release’s JVB pods, targets its JVB Deployment, with the same public address', () => {
    const ours = parse(readFileSync(PROXY_VALUES, 'utf8')) as Values;
    const chart = chartJvb(releaseIn(VALUES_FILE), values);
    expect(ours.discovery.k8s.createService).toEqual({
      enabled: true,
      selector: chart.selectorLabels,
      port: jvb.UDPPort,
      targetPort: chart.udpPortName,
    });
    expect(chart.podLabels).toMatchObject(ours.discovery.k8s.createService.selector);
    expect(ours.jvbAutoscaler).toMatchObject({
      enabled: true,
      deployment: chart.deploymentName,
      minReplicas: jvb.replicaCount,
      scaleDown: false,
    });
    expect(ours.strictPrefix).toBe(true);
    const publicEnv = init.env.find((e: { name: string }) => e.name === 'PUBLIC_ADDRESS');
    expect(ours.publicAddress).toBe(publicEnv.value);
    expect(ours.service.loadBalancerIP).toBe(publicEnv.value);
    // The check can fail: another release's pods are not these.
    expect(ours.discovery.k8s.createService.selector).not.toEqual(chartJvb('meet', values).selectorLabels);
  });

  it('every container, volume and mount passes the Kubernetes schemas, beside the chart’s own', async () => {
    const pod = podOf();
    expect(await schemaProblems(pod)).toEqual([]);
    const chart = chartJvb('jitsi', values);
    for (const v of jvb.extraVolumes) expect(chart.chartVolumes, v.name).not.toContain(v.name);
    for (const m of jvb.extraVolumeMounts)
      expect(chart.chartMountPaths, m.mountPath).not.toContain(m.mountPath);
    // The init container writes where the JVB container reads: one emptyDir at /config.
    const initMount = init.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/config');
    const jvbMount = jvb.extraVolumeMounts.find((m: { mountPath: string }) => m.mountPath === '/config');
    expect(initMount.name).toBe(jvbMount.name);
    expect(jvb.extraVolumes.find((v: { name: string }) => v.name === initMount.name).emptyDir).toBeDefined();
    // The image is this version's.
    const pkg = JSON.parse(readFileSync(join(ROOT, '..', 'package.json'), 'utf8')) as { version: string };
    expect(init.image).toBe(`ice-ingress:${pkg.version}`);
  });

  it('the schema check sees a broken init container', async () => {
    const pod = podOf() as Obj & { spec: { initContainers: Record<string, unknown>[] } };
    pod.spec.initContainers = [
      { ...init, env: [{ name: 'POD_NAME', valueFrom: { fieldRef: {} } }], argz: [] },
    ];
    const problems = await schemaProblems(pod);
    expect(problems.join('\n')).toMatch(/fieldPath/);
    expect(problems.join('\n')).toMatch(/unknown field .*argz/);
  });

  it('the init container, run as the kubelet would, writes a custom-jvb.conf for that pod', async () => {
    // The kubelet resolves the downward-API env: metadata.name and status.podIP.
    const podName = `${chartJvb(releaseIn(VALUES_FILE), values).deploymentName}-6d5f8c7b9-x2k9p`;
    const podIp = '10.4.2.17';
    const field: Record<string, string> = { 'metadata.name': podName, 'status.podIP': podIp };
    const env: Record<string, string> = {};
    for (const e of init.env as {
      name: string;
      value?: string;
      valueFrom?: { fieldRef: { fieldPath: string } };
    }[]) {
      const v = e.value ?? field[e.valueFrom!.fieldRef.fieldPath];
      expect(v, e.name).toBeDefined();
      env[e.name] = v!;
    }
    // The emptyDir mounted at /config is a fresh directory here; everything else is verbatim.
    const dir = mkdtempSync(join(tmpdir(), 'jvb-config-'));
    try {
      const mountPath = '/config';
      const args = (init.args as string[]).map((a) => a.replace(`=${mountPath}/`, `=${dir}/`));
      expect(args).not.toEqual(init.args); // the output path was under the mount
      const r = spawnSync(process.execPath, [BIN, ...args], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH, ...env },
        timeout: 15_000,
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(readdirSync(dir)).toEqual(['custom-jvb.conf']);
      const conf = (await parseHocon(readFileSync(join(dir, 'custom-jvb.conf'), 'utf8'))) as {
        videobridge: { ice: Record<string, unknown> };
        ice4j: { harvest: { mapping: Record<string, unknown> } };
      };
      // The prefix ice-ingress computes for the backend named after this pod (EndpointSlice targetRef).
      expect(conf.videobridge.ice['ufrag-prefix']).toBe(tokenFor(podName));
      expect(conf.videobridge.ice.udp).toEqual({ port: jvb.UDPPort });
      expect(conf.ice4j.harvest.mapping).toEqual({
        stun: { addresses: [] },
        aws: { enabled: false },
        'static-mappings': [
          {
            'local-address': podIp,
            'public-address': jvb.publicIPs[0],
            'local-port': jvb.UDPPort,
            'public-port': 10000,
            name: 'ice-ingress',
          },
        ],
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
