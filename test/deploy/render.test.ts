import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runJvbConfigCommand } from '../../src/jvb-config.ts';
import {
  CHART,
  checkConfig,
  ciValues,
  cleanupHelm,
  containerEnv,
  helm,
  helmVersion,
  JITSI_VALUES,
  parseObjects,
  REPO,
  type RenderOptions,
  render,
  renderText,
  templateArgs,
} from './helm.ts';
import { chartJvb, loadValues, releaseIn, VALUES_FILE } from './jitsi-helm.ts';
import { checkProxy, checkRbac, type Manifest, ofKind, one, schemaProblems } from './k8s.ts';

// `npm run test:deploy`: the chart deploy/helm/ice-ingress as Helm renders it (`helm lint
// --strict`, `helm template`, `helm package`; .ci/run installs helm), offline. Fails, never
// skips, without helm.

afterAll(cleanupHelm);

const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
const jitsiValues = parse(readFileSync(JITSI_VALUES, 'utf8'));

/** The value sets the chart is rendered with; each is a user's realistic choice. */
const VALUE_SETS: Record<string, RenderOptions & { mode: string; peers: string }> = {
  defaults: { mode: 'k8s', peers: 'k8s' },
  'Jitsi (jitsi-helm) with strict prefix': { mode: 'k8s', peers: 'k8s', values: [JITSI_VALUES] },
  workers: { mode: 'k8s', peers: 'k8s', values: [ciValues('workers')] },
  'kernel fast path': { mode: 'k8s', peers: 'k8s', values: [ciValues('fast-path')] },
  'Jitsi with the kernel fast path': {
    mode: 'k8s',
    peers: 'k8s',
    values: [JITSI_VALUES, ciValues('fast-path')],
  },
  'eBPF kernel fast path': { mode: 'k8s', peers: 'k8s', values: [ciValues('fast-path-ebpf')] },
  'Jitsi with the eBPF kernel fast path': {
    mode: 'k8s',
    peers: 'k8s',
    values: [JITSI_VALUES, ciValues('fast-path-ebpf')],
  },
  'monitoring off': { mode: 'k8s', peers: 'k8s', values: [ciValues('monitoring-off')] },
  'DNS discovery': { mode: 'dns', peers: 'dns', values: [ciValues('dns')] },
  'static discovery': { mode: 'static', peers: 'off', values: [ciValues('static')] },
  'bundled videobridges': { mode: 'k8s', peers: 'k8s', values: [ciValues('videobridge')] },
};

const POD_FIELDS = { 'status.podIP': '10.4.2.17', 'metadata.name': 'ice-ingress-7d9f-abcde' };

const proxyContainer = (objs: Manifest[]): Manifest =>
  one(objs, 'Deployment', 'ice-ingress').spec.template.spec.containers[0];

describe(`deploy/helm/ice-ingress with ${helmVersion() || 'helm (not found)'}`, () => {
  it('helm lint --strict passes with the defaults and with every value set', () => {
    for (const [name, set] of Object.entries(VALUE_SETS)) {
      const r = helm(['lint', '--strict', CHART, ...(set.values ?? []).flatMap((f) => ['--values', f])]);
      expect(r.stdout + r.stderr, name).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(r.status, name).toBe(0);
    }
  });

  for (const [name, set] of Object.entries(VALUE_SETS)) {
    it(`${name}: every object passes the schemas, the proxy is hardened, its RBAC is exactly what discovery ${set.mode} uses`, async () => {
      const objs = render(set);
      expect(objs.length).toBeGreaterThan(0);
      expect((await Promise.all(objs.map(schemaProblems))).flat()).toEqual([]);
      expect(new Set(objs.map((o) => o.metadata.namespace))).toEqual(new Set(['jitsi']));
      // Nothing is named twice within a kind.
      const ids = objs.map((o) => `${o.kind}/${o.metadata.name}`);
      expect(new Set(ids).size).toBe(ids.length);
      const flags = checkProxy(objs, 'ice-ingress');
      expect(flags.get('discovery')).toBe(set.mode);
      checkRbac(objs, {
        mode: set.mode,
        peers: set.peers,
        namespace: 'jitsi',
        releaseNamespace: 'jitsi',
        account: 'ice-ingress',
      });
      expect(proxyContainer(objs).image).toBe(`ice-ingress:${PKG.version}`);
    });

    it(`${name}: the proxy's own parser accepts the rendered arguments and environment (--check-config)`, () => {
      const objs = render(set);
      for (const dep of ofKind(objs, 'Deployment')) {
        for (const c of dep.spec.template.spec.containers.filter((x: Manifest) => x.name === 'ice-ingress')) {
          const r = checkConfig(c, containerEnv(c, POD_FIELDS));
          expect(r.stderr, `${dep.metadata.name}`).toBe('');
          expect(r.stdout).toBe('ice-ingress: configuration OK\n');
          expect(r.status).toBe(0);
        }
      }
    });
  }

  it('the --check-config step can fail: a rendered value the proxy refuses is reported by name', () => {
    // upstreamPorts holding the listening port passes the schema (a pattern cannot see it) and
    // is refused by the proxy, as it would be at start-up.
    const objs = render({ set: ['sessions.upstreamPorts=9000-11000'] });
    const c = proxyContainer(objs);
    const r = checkConfig(c, containerEnv(c, POD_FIELDS));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--upstream-ports: must not contain the listening port 10000');
  });

  it('renders are deterministic: two renders of each value set are byte-equal', () => {
    for (const [name, set] of Object.entries(VALUE_SETS)) expect(renderText(set), name).toBe(renderText(set));
  });

  it('Chart.yaml version and appVersion follow package.json, and so does the default image', () => {
    const chart = parse(helm(['show', 'chart', CHART]).stdout) as { version: string; appVersion: string };
    expect(chart.version).toBe(PKG.version);
    expect(chart.appVersion).toBe(PKG.version);
    expect(proxyContainer(render()).image).toBe(`ice-ingress:${PKG.version}`);
  });

  it('helm package builds ice-ingress-VERSION.tgz with the monitoring files and schema, without ci/', () => {
    const out = mkdtempSync(join(tmpdir(), 'ice-ingress-package-'));
    try {
      const r = helm(['package', CHART, '--destination', out]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const tgz = join(out, `ice-ingress-${PKG.version}.tgz`);
      const list = spawnSync('tar', ['tzf', tgz], { encoding: 'utf8' });
      expect(list.status).toBe(0);
      const files = list.stdout.split('\n').filter(Boolean).sort();
      for (const f of [
        'Chart.yaml',
        'values.yaml',
        'values.schema.json',
        'files/dashboard.json',
        'files/prometheus-rules.yaml',
        'templates/NOTES.txt',
        'templates/deployment.yaml',
      ]) {
        expect(files).toContain(`ice-ingress/${f}`);
      }
      expect(files.filter((f) => f.startsWith('ice-ingress/ci/'))).toEqual([]);
      // The package renders as the directory does.
      expect(helm(['template', 'ice-ingress', tgz, '--namespace', 'jitsi']).stdout).toBe(renderText());
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  describe('values.schema.json refuses a bad value before anything renders, naming it', () => {
    const cases: [string, string[], RegExp][] = [
      [
        'discovery mode the proxy lacks',
        ['discovery.mode=kubernetes'],
        /\/discovery\/mode.*one of 'k8s', 'dns', 'static'/,
      ],
      ['workers 0', ['workers=0'], /\/workers/],
      ['listen port out of range', ['listenPort=70000'], /\/listenPort': maximum/],
      ['duration without a unit', ['drainTimeout=20'], /\/drainTimeout/],
      [
        'probe rounds beyond the proxy’s 100',
        ['admission.probeRounds=101'],
        /\/admission\/probeRounds': maximum/,
      ],
      ['a misspelt key', ['strictprefix=true'], /additional properties 'strictprefix' not allowed/],
      ['DNS discovery without a name', ['discovery.mode=dns'], /\/discovery\/dns\/name': minLength/],
      [
        'static discovery without backends',
        ['discovery.mode=static'],
        /\/discovery\/static\/backends': minItems/,
      ],
      [
        'bundled videobridges without the public address',
        ['videobridge.enabled=true'],
        /\/publicAddress': minLength/,
      ],
      [
        'a malformed static backend',
        ['discovery.mode=static', 'discovery.static.backends={jvb-0}'],
        /\/discovery\/static\/backends\/0/,
      ],
    ];
    for (const [what, set, message] of cases) {
      it(what, () => {
        const r = helm(templateArgs({ set }));
        expect(r.status).not.toBe(0);
        expect(r.stdout).toBe('');
        expect(r.stderr).toContain("values don't meet the specifications of the schema");
        expect(r.stderr).toMatch(message);
      });
    }
    it('and the same values pass with a good value (the cases fail for the reason named)', () => {
      for (const set of [
        ['discovery.mode=k8s'],
        ['workers=1'],
        ['listenPort=65535', 'sessions.upstreamPorts=16384-32767'],
        ['admission.probeRounds=100'],
        ['strictPrefix=true'],
        ['discovery.mode=dns', 'discovery.dns.name=jvb.jitsi.svc'],
        ['discovery.mode=static', 'discovery.static.backends={jvb-0=10.0.0.5:10000}'],
        ['videobridge.enabled=true', 'publicAddress=203.0.113.10'],
      ]) {
        expect(helm(templateArgs({ set })).status, set.join(' ')).toBe(0);
      }
      expect(helm([...templateArgs(), '--set-string', 'drainTimeout=20s']).status).toBe(0);
    });
  });

  it('RBAC follows the Service’s namespace: the Role and its binding there, the account in the release’s', () => {
    const objs = render({ set: ['discovery.k8s.namespace=media'] });
    // And the peers' Role in the release's namespace, where the proxy's own Service is.
    checkRbac(objs, { mode: 'k8s', namespace: 'media', releaseNamespace: 'jitsi', account: 'ice-ingress' });
    checkRbac(render({ set: ['discovery.k8s.namespace=media', 'peers.mode=off'] }), {
      mode: 'k8s',
      peers: 'off',
      namespace: 'media',
      releaseNamespace: 'jitsi',
      account: 'ice-ingress',
    });
    expect(proxyContainer(objs).args).toContain('--namespace=media');
    // The checks can fail: the same objects do not pass as another mode's or namespace's.
    expect(() =>
      checkRbac(objs, { mode: 'k8s', namespace: 'jitsi', releaseNamespace: 'jitsi', account: 'ice-ingress' }),
    ).toThrow();
    expect(() =>
      checkRbac(objs, { mode: 'dns', namespace: 'media', releaseNamespace: 'jitsi', account: 'ice-ingress' }),
    ).toThrow();
  });

  it('peers (docs/peers.md): the peer port pod to pod only, the pod IP from the downward API, a headless Service for dns', () => {
    const objs = render({ set: ['networkPolicy.enabled=true'] });
    const c = proxyContainer(objs);
    expect(c.args).toContain('--peers=k8s:ice-ingress');
    expect(c.args).toContain('--pod-ip=$(POD_IP)');
    expect(c.env).toContainEqual({ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
    expect(c.ports).toContainEqual({ name: 'peer', containerPort: 10001, protocol: 'UDP' });
    // Never in the LoadBalancer Service.
    expect(one(objs, 'Service', 'ice-ingress').spec.ports.map((p: Manifest) => p.port)).toEqual([10000]);
    // The NetworkPolicy admits the peer ports (one per worker) from the proxy pods only.
    const np = one(objs, 'NetworkPolicy', 'ice-ingress');
    const peerRule = np.spec.ingress.find((r: Manifest) => r.ports[0].port === 10001);
    expect(peerRule).toEqual({
      ports: [{ port: 10001, endPort: 10032, protocol: 'UDP' }],
      from: [{ podSelector: { matchLabels: one(objs, 'Service', 'ice-ingress').spec.selector } }],
    });
    const dns = render({ set: ['peers.mode=dns'] });
    const svc = one(dns, 'Service', 'ice-ingress-peers');
    expect(svc.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
    expect(svc.spec.selector).toEqual(one(dns, 'Service', 'ice-ingress').spec.selector);
    expect(proxyContainer(dns).args).toContain('--peers=dns:ice-ingress-peers.jitsi.svc.cluster.local');
    const off = proxyContainer(render({ set: ['peers.mode=off'] }));
    expect(off.args.filter((a: string) => a.startsWith('--peer') || a.startsWith('--pod-ip'))).toEqual([]);
    expect(off.env).toBeUndefined();
  });

  it('every value marked "CLI: --flag" reaches that flag', () => {
    // Non-default values for every CLI-bound value, one render per discovery mode.
    const common = [
      'listenPort=10001',
      'adminPort=9091',
      'strictPrefix=true',
      'admission.probeRate=1234',
      'admission.directedProbeRate=2345',
      'admission.maxPendingPerSource=17',
      'admission.maxSessions=999',
      'admission.probeRounds=4',
      'admission.probeTimeout=2500ms',
      'admission.negativeTtl=11s',
      'admission.learnedMax=5555',
      'sessions.idleTimeout=45s',
      'sessions.upstreamPorts=20000-20999',
      'sessions.portQuarantine=30s',
      'socketBuffer=1048576',
      'drainTimeout=2m',
      'drainReadiness=unready',
      'logLevel=debug',
      'workers=2',
      'peers.port=11001',
      'peers.timeout=300ms',
      'peers.queryRate=3456',
      'peers.queryBurst=4567',
      'peers.negativeTtl=3s',
    ];
    const expected = {
      peers: 'k8s:ice-ingress',
      'peer-port': '11001',
      'pod-ip': '$(POD_IP)',
      'peer-timeout': '300ms',
      'peer-query-rate': '3456',
      'peer-query-burst': '4567',
      'peer-negative-ttl': '3s',
      listen: '0.0.0.0:10001',
      admin: '0.0.0.0:9091',
      'strict-prefix': 'true',
      'probe-rate': '1234',
      'directed-probe-rate': '2345',
      'max-pending-per-source': '17',
      'max-sessions': '999',
      'probe-rounds': '4',
      'probe-timeout': '2500ms',
      'negative-ttl': '11s',
      'learned-max': '5555',
      'idle-timeout': '45s',
      'upstream-ports': '20000-20999',
      'port-quarantine': '30s',
      'socket-buffer': '1048576',
      'drain-timeout': '2m',
      'drain-readiness': 'unready',
      'log-level': 'debug',
      workers: '2',
    };
    const flagsOf = (set: string[]): Record<string, string> => {
      const c = proxyContainer(render({ set }));
      expect(checkConfig(c, containerEnv(c, POD_FIELDS)).status).toBe(0);
      return Object.fromEntries(c.args.map((a: string) => a.slice(2).split(/=(.*)/s).slice(0, 2)));
    };
    expect(
      flagsOf([
        ...common,
        'discovery.k8s.service=bridges',
        'discovery.k8s.namespace=media',
        'discovery.k8s.portName=rtp',
      ]),
    ).toEqual({ ...expected, discovery: 'k8s', service: 'bridges', namespace: 'media', 'port-name': 'rtp' });
    expect(
      flagsOf([
        ...common,
        'discovery.mode=dns',
        'discovery.dns.name=jvb.media.svc',
        'discovery.dns.backendPort=10002',
        'discovery.dns.interval=7s',
        'discovery.dns.grace=1m',
      ]),
    ).toEqual({
      ...expected,
      discovery: 'dns',
      'dns-name': 'jvb.media.svc',
      'backend-port': '10002',
      'dns-interval': '7s',
      'dns-grace': '1m',
    });
    expect(
      flagsOf([
        ...common,
        'discovery.mode=static',
        'discovery.static.backends={a=10.0.0.5:10000,b=10.0.0.6:10000}',
      ]),
    ).toEqual({ ...expected, discovery: 'static', backends: 'a=10.0.0.5:10000,b=10.0.0.6:10000' });
    // By default a draining replica stays serving (docs/peers.md, "Drain": with externalTrafficPolicy
    // Local, kube-proxy keeps sending a node's traffic to its serving terminating proxy).
    const byDefault = proxyContainer(render());
    expect(byDefault.args).toContain('--drain-readiness=serving');
    // The pod's grace period follows the drain: 2m + the 30 s margin; by default 1 h + 30 s.
    expect(
      one(render({ set: common }), 'Deployment', 'ice-ingress').spec.template.spec
        .terminationGracePeriodSeconds,
    ).toBe(150);
    expect(one(render(), 'Deployment', 'ice-ingress').spec.template.spec.terminationGracePeriodSeconds).toBe(
      3630,
    );
  });

  it('Jitsi: the proxy watches a headless Service that selects exactly jitsi-helm’s JVB pods, strict prefix on', () => {
    const objs = render({ values: [JITSI_VALUES] });
    const flags = checkProxy(objs, 'ice-ingress');
    expect(flags.get('strict-prefix')).toBe('true');
    // The proxy's Deployment only: jitsi-helm deploys the JVBs.
    expect(ofKind(objs, 'Deployment').map((o) => o.metadata.name)).toEqual(['ice-ingress']);

    const values = loadValues();
    const chart = chartJvb(releaseIn(VALUES_FILE), values);
    const svc = one(objs, 'Service', flags.get('service')!);
    expect(svc.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: false });
    // Exactly the chart's JVB selector labels, which every JVB pod carries.
    expect(svc.spec.selector).toEqual(chart.selectorLabels);
    expect(chart.podLabels).toMatchObject(svc.spec.selector);
    expect(svc.spec.ports).toEqual([
      {
        name: flags.get('port-name'),
        port: values.jvb.UDPPort,
        targetPort: chart.udpPortName,
        protocol: 'UDP',
      },
    ]);
    // The HPA scales the chart's JVB Deployment, from the replica count Helm starts with, never down.
    const hpa = one(objs, 'HorizontalPodAutoscaler', 'ice-ingress-jvb');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: chart.deploymentName,
    });
    expect(hpa.spec.minReplicas).toBe(values.jvb.replicaCount);
    expect(hpa.spec.behavior.scaleDown.selectPolicy).toBe('Disabled');
    // The JVBs' init container uses the image this chart deploys, and advertises this Service's address.
    expect(values.jvb.extraInitContainers[0].image).toBe(proxyContainer(objs).image);
    const publicEnv = values.jvb.extraInitContainers[0].env.find(
      (e: { name: string }) => e.name === 'PUBLIC_ADDRESS',
    );
    expect(one(objs, 'Service', 'ice-ingress').spec.loadBalancerIP).toBe(publicEnv.value);
    expect(jitsiValues.publicAddress).toBe(publicEnv.value);
  });

  it('the selector check can fail: another jitsi-helm release name selects no JVB pod', () => {
    const svc = one(render({ values: [JITSI_VALUES] }), 'Service', 'jvb');
    expect(svc.spec.selector).not.toEqual(chartJvb('meet', loadValues()).selectorLabels);
  });

  it('monitoring: the ServiceMonitor finds the metrics Service, which selects the proxy pods; rules and dashboard are the files', () => {
    const objs = render({ values: [JITSI_VALUES] });
    const dep = one(objs, 'Deployment', 'ice-ingress');
    const metrics = one(objs, 'Service', 'ice-ingress-metrics');
    const sm = one(objs, 'ServiceMonitor', 'ice-ingress');
    expect(sm.metadata.namespace).toBe(metrics.metadata.namespace);
    expect(metrics.metadata.labels).toMatchObject(sm.spec.selector.matchLabels);
    // Only the metrics Service: not the public one, not the discovery one.
    for (const s of ofKind(objs, 'Service').filter((x) => x !== metrics)) {
      expect(s.metadata.labels).not.toMatchObject(sm.spec.selector.matchLabels);
    }
    expect(dep.spec.template.metadata.labels).toMatchObject(metrics.spec.selector);
    const admin = dep.spec.template.spec.containers[0].ports.find(
      (p: { name: string }) => p.name === 'admin',
    );
    expect(metrics.spec.ports).toEqual([
      { name: 'admin', port: admin.containerPort, targetPort: 'admin', protocol: 'TCP' },
    ]);
    expect(sm.spec.endpoints).toEqual([{ port: 'admin', path: '/metrics', interval: '15s' }]);
    const dash = one(objs, 'ConfigMap', 'ice-ingress-dashboard');
    expect(dash.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    expect(JSON.parse(dash.data['ice-ingress.json'])).toEqual(
      JSON.parse(readFileSync(join(CHART, 'files', 'dashboard.json'), 'utf8')),
    );
    expect(one(objs, 'PrometheusRule', 'ice-ingress').spec).toEqual(
      parse(readFileSync(join(CHART, 'files', 'prometheus-rules.yaml'), 'utf8')),
    );
  });

  it('monitoring off: no dashboard, ServiceMonitor, PrometheusRule or metrics Service; the proxy is the same', () => {
    const off = render({ values: [ciValues('monitoring-off')] });
    expect(off.filter((o) => /ServiceMonitor|PrometheusRule|ConfigMap/.test(o.kind))).toEqual([]);
    expect(ofKind(off, 'Service').map((s) => s.metadata.name)).toEqual(['ice-ingress']);
    expect(one(off, 'Deployment', 'ice-ingress')).toEqual(one(render(), 'Deployment', 'ice-ingress'));
    // The defaults ship the dashboard but no prometheus-operator objects (their CRDs may be missing).
    expect(
      render()
        .filter((o) => o.kind === 'ConfigMap')
        .map((o) => o.metadata.name),
    ).toEqual(['ice-ingress-dashboard']);
    expect(render().filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/'))).toEqual([]);
  });

  for (const { kind, file, caps } of [
    { kind: 'nftables', file: 'fast-path', caps: ['NET_ADMIN'] },
    { kind: 'ebpf', file: 'fast-path-ebpf', caps: ['BPF', 'NET_ADMIN'] },
  ])
    it(`kernel fast path (${kind}): ${caps.join(' and ')} and uid 0, $(POD_IP) as the listen address, no sysctl, no hostPath; nothing else changes`, () => {
      const objs = render({ values: [JITSI_VALUES, ciValues(file)] });
      const pod = one(objs, 'Deployment', 'ice-ingress').spec.template.spec;
      const [c] = pod.containers;
      const flags = checkProxy(objs, 'ice-ingress');
      expect(flags.get('fast-path')).toBe(kind);
      // The fast path runs with the default workers (the main thread owns the table or the program).
      expect(flags.get('workers')).toBe('auto');
      // The address clients send to (the kubelet expands $(POD_IP) from the downward API).
      expect(flags.get('listen')).toBe('$(POD_IP):10000');
      expect(c.env).toEqual([{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }]);
      expect(pod.securityContext).toEqual({
        runAsUser: 0,
        runAsNonRoot: false,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(c.securityContext.capabilities).toEqual({ drop: ['ALL'], add: caps });
      // Nothing of the node's is mounted (the eBPF path pins nothing in /sys/fs/bpf).
      expect(JSON.stringify(pod.volumes ?? [])).not.toContain('hostPath');
      // Everything else is the Jitsi render's, untouched.
      const plain = render({ values: [JITSI_VALUES] });
      const plainPod = one(plain, 'Deployment', 'ice-ingress').spec.template.spec;
      expect(c.ports).toEqual(plainPod.containers[0].ports);
      expect(c.args.filter((a: string) => !/^--(listen|fast-path)=/.test(a))).toEqual(
        plainPod.containers[0].args.filter((a: string) => !a.startsWith('--listen=')),
      );
      const strip = (o: Manifest[]) => o.filter((x) => x.kind !== 'Deployment');
      expect(strip(objs)).toEqual(strip(plain));
    });

  it('workers: a fixed count with as many CPUs requested', () => {
    const c = proxyContainer(render({ values: [ciValues('workers')] }));
    expect(c.args).toContain('--workers=4');
    expect(c.resources.requests.cpu).toBe('4');
    expect(proxyContainer(render()).args).toContain('--workers=auto');
  });

  it('DNS and static discovery: the right flags, no Role, no token, and a NetworkPolicy without the API server', () => {
    const dns = render({ values: [ciValues('dns')] });
    const args = proxyContainer(dns).args;
    expect(args).toEqual(
      expect.arrayContaining([
        '--discovery=dns',
        '--dns-name=jvb.jitsi.svc.cluster.local',
        '--backend-port=10000',
        '--dns-interval=2s',
        '--dns-grace=30s',
      ]),
    );
    expect(args.filter((a: string) => /^--(service|namespace|port-name|backends)=/.test(a))).toEqual([]);
    expect(one(dns, 'ServiceAccount', 'ice-ingress').automountServiceAccountToken).toBe(false);
    const np = one(dns, 'NetworkPolicy', 'ice-ingress');
    expect(np.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(np.spec.egress.flatMap((r: Manifest) => r.ports)).toEqual([
      { port: 53, protocol: 'UDP' },
      { port: 53, protocol: 'TCP' },
      { port: 10000, protocol: 'UDP' },
      // DNS peers (the chart's headless peer Service): the other proxy pods' peer ports.
      { port: 10001, endPort: 10032, protocol: 'UDP' },
    ]);
    const stat = render({ values: [ciValues('static')] });
    expect(proxyContainer(stat).args).toContain('--backends=jvb-0=10.0.0.5:10000,jvb-1=10.0.0.6:10000');
    expect(ofKind(stat, 'HorizontalPodAutoscaler')).toEqual([]);
    expect(one(stat, 'Deployment', 'ice-ingress').spec.replicas).toBe(3);
    // Headless discovery Services are for discovery k8s only; the peer Service for peers dns.
    expect([...dns, ...stat].filter((o) => o.kind === 'Service').map((o) => o.metadata.name)).toEqual([
      'ice-ingress-peers',
      'ice-ingress',
      'ice-ingress',
    ]);
  });

  it('NetworkPolicy: media from anywhere, admin from the namespace, egress to DNS, the backends and the API server', () => {
    const objs = render({ values: [ciValues('videobridge')] });
    const np = one(objs, 'NetworkPolicy', 'ice-ingress');
    const dep = one(objs, 'Deployment', 'ice-ingress');
    expect(np.spec.podSelector.matchLabels).toEqual(dep.spec.selector.matchLabels);
    const peers = [{ podSelector: { matchLabels: dep.spec.selector.matchLabels } }];
    const peerPorts = [{ port: 10001, endPort: 10032, protocol: 'UDP' }];
    expect(np.spec.ingress).toEqual([
      { ports: [{ port: 'media', protocol: 'UDP' }] },
      // The peer ports (docs/peers.md): from the proxy pods only.
      { ports: peerPorts, from: peers },
      { ports: [{ port: 'admin', protocol: 'TCP' }], from: [{ podSelector: {} }] },
    ]);
    const jvb = one(objs, 'Deployment', 'ice-ingress-jvb');
    expect(np.spec.egress).toEqual([
      {
        ports: [
          { port: 53, protocol: 'UDP' },
          { port: 53, protocol: 'TCP' },
        ],
      },
      {
        ports: [{ port: 'media', protocol: 'UDP' }],
        to: [
          {
            podSelector: { matchLabels: jvb.spec.selector.matchLabels },
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'jitsi' } },
          },
        ],
      },
      { ports: peerPorts, to: peers },
      { to: [{ ipBlock: { cidr: '10.0.0.1/32' } }], ports: [{ port: 443, protocol: 'TCP' }] },
    ]);
    // Egress with discovery k8s and no API server address would cut the watch: refused.
    const r = helm(
      templateArgs({ set: ['networkPolicy.enabled=true', 'networkPolicy.egress.enabled=true'] }),
    );
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('networkPolicy.egress.apiServer');
  });

  it('bundled videobridges: JVBs that drain, a headless Service the proxy watches, an HPA, each JVB’s config from publicAddress', () => {
    const objs = render({ values: [ciValues('videobridge')] });
    const flags = checkProxy(objs, 'ice-ingress');
    const jvb = one(objs, 'Deployment', 'ice-ingress-jvb');
    const svc = one(objs, 'Service', flags.get('service')!);
    expect(svc.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: false });
    expect(svc.spec.selector).toEqual(jvb.spec.selector.matchLabels);
    expect(jvb.spec.template.metadata.labels).toEqual(jvb.spec.selector.matchLabels);
    expect(svc.spec.ports).toEqual([
      { name: flags.get('port-name'), port: 10000, targetPort: 'media', protocol: 'UDP' },
    ]);
    const pod = jvb.spec.template.spec;
    expect(pod.containers[0].ports).toContainEqual({ name: 'media', containerPort: 10000, protocol: 'UDP' });
    expect(pod.containers[0].lifecycle.preStop.exec.command.join(' ')).toContain('graceful-shutdown');
    expect(pod.terminationGracePeriodSeconds).toBe(3600);
    const hpa = one(objs, 'HorizontalPodAutoscaler', 'ice-ingress-jvb');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: 'ice-ingress-jvb',
    });
    expect(hpa.spec.behavior.scaleDown.selectPolicy).toBeUndefined();
    expect(jvb.spec.replicas).toBeUndefined();

    // The init container's command line works: expand $(VAR) as the kubelet would and run it.
    const [init] = pod.initContainers;
    expect(init.image).toBe(`ice-ingress:${PKG.version}`);
    const env = containerEnv(init, {
      'metadata.name': 'ice-ingress-jvb-7d9c-x2k9p',
      'status.podIP': '10.1.2.3',
    });
    expect(env.PUBLIC_ADDRESS).toBe('203.0.113.10');
    const argv: string[] = init.args.map((a: string) =>
      a.replace(/\$\(([A-Z_]+)\)/g, (_m, v: string) => env[v]!),
    );
    expect(argv[0]).toBe('jvb-config');
    const written: [string, string][] = [];
    const result = runJvbConfigCommand(argv.slice(1), { env: {}, writeFile: (p, t) => written.push([p, t]) });
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    expect(written[0]?.[0]).toBe('/config/custom-jvb.conf');
    expect(written[0]?.[1]).toContain('public-address = "203.0.113.10"');
    // ... into the emptyDir that the JVB container sees at /config (docker-jitsi-meet's volume).
    const mount = init.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/config');
    expect(pod.volumes.find((v: { name: string }) => v.name === mount.name).emptyDir).toBeDefined();
    const jvbMount = pod.containers[0].volumeMounts.find((m: { name: string }) => m.name === mount.name);
    expect(jvbMount.mountPath).toBe('/config');
  });

  it('NOTES.txt tells what to do next on the JVB side', () => {
    const r = helm([
      'install',
      '--dry-run=client',
      'ice-ingress',
      CHART,
      '--namespace',
      'jitsi',
      '--values',
      JITSI_VALUES,
    ]);
    expect(r.status, r.stderr).toBe(0);
    const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
    expect(notes).toContain('It must be 203.0.113.10 (publicAddress)');
    expect(notes).toContain('ice-ingress jvb-config');
    expect(notes).toContain('jvb.extraInitContainers');
    expect(notes).toContain('kubectl -n jitsi port-forward deploy/ice-ingress 9090');
  });

  it('README "Install on Kubernetes": its helm install commands render, and the Jitsi one discovers the chart’s JVB pods', () => {
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Install on Kubernetes'));
    const body = section.slice(0, section.indexOf('\n## ', 3));
    // Our chart's installs (the jitsi-helm one needs its repository, which these tests never add).
    const installs = [...body.matchAll(/^helm install (\S+) (deploy\/\S+)(.*)$/gm)];
    expect(installs.length).toBeGreaterThanOrEqual(2);
    const rendered = new Map<string, Manifest[]>();
    for (const [line, release, chart, rest] of installs) {
      // As a new user runs it from the clone, with `template` for `install` (no cluster here).
      const args = rest!.split(/\s+/).filter((a) => a !== '' && a !== '\\' && a !== '--create-namespace');
      const r = helm(['template', release!, chart!, ...args]);
      expect(r.status, `${line}: ${r.stderr}`).toBe(0);
      rendered.set(line, parseObjects(r.stdout));
    }
    const jitsiHelm = /^helm install (\S+) jitsi\/jitsi-meet .*-f deploy\/jitsi-helm\/values\.yaml/m.exec(
      body,
    );
    expect(jitsiHelm, 'the jitsi-helm install command').not.toBeNull();
    const jitsi = [...rendered].find(([line]) =>
      line.includes('-f deploy/jitsi-helm/ice-ingress-values.yaml'),
    );
    expect(jitsi, 'the ice-ingress install with the Jitsi values').toBeDefined();
    const objs = jitsi![1];
    const service = proxyContainer(objs)
      .args.find((a: string) => a.startsWith('--service='))
      .slice('--service='.length);
    // The Service the proxy watches selects the pods of the jitsi-helm release installed beside it.
    expect(one(objs, 'Service', service).spec.selector).toEqual(
      chartJvb(jitsiHelm![1]!, loadValues()).selectorLabels,
    );
  });
});
