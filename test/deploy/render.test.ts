import { describe, expect, it } from 'vitest';
import { runJvbConfigCommand } from '../../src/jvb-config.ts';
import { chartJvb, loadValues, releaseIn, VALUES_FILE } from './jitsi-helm.ts';
import { checkProxy, checkProxyArgs, checkRbac, findRenderer, one, render, schemaProblems } from './k8s.ts';

// `npm run test:deploy`: what kustomize renders from deploy/ (kubectl kustomize, or kustomize
// build, v4+; .ci/run installs one). Fails, never skips, without a renderer.

const renderer = findRenderer();
const CRD = (o: { apiVersion: string }): boolean => o.apiVersion.startsWith('monitoring.coreos.com/');

describe(`deploy/ rendered by ${renderer?.version ?? 'kustomize (not found)'}`, () => {
  it('base renders and passes the schemas and the RBAC rule', async () => {
    const objs = render('base');
    expect(objs.map((o) => o.kind).sort()).toEqual([
      'Deployment',
      'HorizontalPodAutoscaler',
      'PodDisruptionBudget',
      'Role',
      'RoleBinding',
      'Service',
      'ServiceAccount',
    ]);
    expect((await Promise.all(objs.map(schemaProblems))).flat()).toEqual([]);
    checkRbac(objs, undefined);
    checkProxy(objs);
    expect(one(objs, 'Deployment', 'ice-ingress').spec.template.spec.containers[0].image).toBe(
      'ice-ingress:0.1.0',
    );
  });

  it('overlays/jitsi renders a JVB setup wired to the proxy by one parameter', async () => {
    const objs = render('overlays/jitsi');
    expect((await Promise.all(objs.map(schemaProblems))).flat()).toEqual([]);
    expect(new Set(objs.map((o) => o.metadata.namespace))).toEqual(new Set(['jitsi']));
    checkRbac(objs, 'jitsi');
    checkProxy(objs);

    // The headless Service the proxy watches: its name and port name match the proxy's flags.
    const proxyArgs = checkProxyArgs(
      one(objs, 'Deployment', 'ice-ingress').spec.template.spec.containers[0].args,
    );
    const jvbSvc = one(objs, 'Service', proxyArgs.get('service')!);
    expect(jvbSvc.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: false });
    expect(jvbSvc.spec.ports).toEqual([
      { name: proxyArgs.get('port-name'), port: 10000, targetPort: 'media', protocol: 'UDP' },
    ]);
    const jvb = one(objs, 'Deployment', 'jvb');
    expect(jvbSvc.spec.selector).toEqual(jvb.spec.selector.matchLabels);
    const hpa = one(objs, 'HorizontalPodAutoscaler', 'jvb');
    expect(hpa.spec.scaleTargetRef.name).toBe('jvb');

    // The public address is one ConfigMap literal; the generated (hashed) name is referenced.
    const cm = one(objs, 'ConfigMap', 'ice-ingress-public-');
    expect(Object.keys(cm.data)).toEqual(['PUBLIC_ADDRESS']);
    const pod = jvb.spec.template.spec;
    const [init] = pod.initContainers;
    const publicEnv = init.env.find((e: { name: string }) => e.name === 'PUBLIC_ADDRESS');
    expect(publicEnv.valueFrom.configMapKeyRef).toEqual({ name: cm.metadata.name, key: 'PUBLIC_ADDRESS' });
    expect(init.image).toBe('ice-ingress:0.1.0');

    // The init container's command line works: expand $(VAR) as the kubelet would and run it.
    const env: Record<string, string> = { POD_NAME: 'jvb-7d9c-x2k9p', POD_IP: '10.1.2.3', ...cm.data };
    const argv: string[] = init.args.map((a: string) =>
      a.replace(/\$\(([A-Z_]+)\)/g, (_m, v: string) => env[v]!),
    );
    expect(argv[0]).toBe('jvb-config');
    const written: [string, string][] = [];
    const result = runJvbConfigCommand(argv.slice(1), { env: {}, writeFile: (p, t) => written.push([p, t]) });
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    expect(written[0]?.[0]).toBe('/config/custom-jvb.conf');
    expect(written[0]?.[1]).toContain(`public-address = "${cm.data.PUBLIC_ADDRESS}"`);
    // ... into the emptyDir that the JVB container sees at /config (docker-jitsi-meet's volume).
    const mount = init.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/config');
    const vol = pod.volumes.find((v: { name: string }) => v.name === mount.name);
    expect(vol.emptyDir).toBeDefined();
    const jvbMount = pod.containers[0].volumeMounts.find((m: { name: string }) => m.name === mount.name);
    expect(jvbMount.mountPath).toBe('/config');
  });

  it('overlays/jitsi-helm: the proxy, strict prefix on, watching a Service that selects jitsi-helm’s JVB pods', async () => {
    const objs = render('overlays/jitsi-helm');
    expect((await Promise.all(objs.filter((o) => !CRD(o)).map(schemaProblems))).flat()).toEqual([]);
    expect(new Set(objs.map((o) => o.metadata.namespace))).toEqual(new Set(['jitsi']));
    checkRbac(objs, 'jitsi');
    checkProxy(objs);
    const proxyArgs = checkProxyArgs(
      one(objs, 'Deployment', 'ice-ingress').spec.template.spec.containers[0].args,
    );
    expect(proxyArgs.get('strict-prefix')).toBe('true');
    // The overlay deploys no JVBs: Helm does.
    expect(objs.filter((o) => o.kind === 'Deployment').map((o) => o.metadata.name)).toEqual(['ice-ingress']);

    const values = loadValues();
    const chart = chartJvb(releaseIn(VALUES_FILE), values);
    const svc = one(objs, 'Service', proxyArgs.get('service')!);
    expect(svc.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: false });
    // Exactly the chart's JVB selector labels, which every JVB pod carries.
    expect(svc.spec.selector).toEqual(chart.selectorLabels);
    expect(chart.podLabels).toMatchObject(svc.spec.selector);
    expect(svc.spec.ports).toEqual([
      {
        name: proxyArgs.get('port-name'),
        port: values.jvb.UDPPort,
        targetPort: chart.udpPortName,
        protocol: 'UDP',
      },
    ]);
    // The HPA scales the chart's JVB Deployment, from the replica count Helm starts with, never down.
    const hpa = one(objs, 'HorizontalPodAutoscaler', 'jvb');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: chart.deploymentName,
    });
    expect(hpa.spec.minReplicas).toBe(values.jvb.replicaCount);
    expect(hpa.spec.behavior.scaleDown.selectPolicy).toBe('Disabled');
    // The JVBs' init container uses the image this overlay deploys.
    const image = one(objs, 'Deployment', 'ice-ingress').spec.template.spec.containers[0].image;
    expect(values.jvb.extraInitContainers[0].image).toBe(image);
  });

  it('the selector check can fail: another release name selects no JVB pod', () => {
    const objs = render('overlays/jitsi-helm');
    const svc = one(objs, 'Service', 'jvb');
    expect(svc.spec.selector).not.toEqual(chartJvb('meet', loadValues()).selectorLabels);
  });

  it('components/monitoring: the ServiceMonitor finds the metrics Service, which selects the proxy pods', () => {
    const objs = render('overlays/jitsi-helm');
    const dep = one(objs, 'Deployment', 'ice-ingress');
    const metrics = one(objs, 'Service', 'ice-ingress-metrics');
    const sm = one(objs, 'ServiceMonitor', 'ice-ingress');
    expect(sm.metadata.namespace).toBe(metrics.metadata.namespace);
    expect(metrics.metadata.labels).toMatchObject(sm.spec.selector.matchLabels);
    expect(dep.spec.template.metadata.labels).toMatchObject(metrics.spec.selector);
    const admin = dep.spec.template.spec.containers[0].ports.find(
      (p: { name: string }) => p.name === 'admin',
    );
    expect(metrics.spec.ports).toEqual([
      { name: 'admin', port: admin.containerPort, targetPort: 'admin', protocol: 'TCP' },
    ]);
    expect(sm.spec.endpoints).toEqual([{ port: 'admin', path: '/metrics', interval: '15s' }]);
    // The public LoadBalancer does not expose the admin port.
    expect(one(objs, 'Service', 'ice-ingress').spec.ports.map((p: { name: string }) => p.name)).toEqual([
      'media',
    ]);
    const dash = one(objs, 'ConfigMap', 'ice-ingress-dashboard');
    expect(dash.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    expect(JSON.parse(dash.data['ice-ingress.json']).uid).toBe('ice-ingress');
    expect(one(objs, 'PrometheusRule', 'ice-ingress').spec.groups[0].rules.length).toBeGreaterThan(0);
  });

  it('overlays/jitsi-fast-path: the fast-path component grants NET_ADMIN, nothing more (no sysctl)', async () => {
    const objs = render('overlays/jitsi-fast-path');
    expect((await Promise.all(objs.map(schemaProblems))).flat()).toEqual([]);
    checkRbac(objs, 'jitsi');
    const dep = one(objs, 'Deployment', 'ice-ingress');
    const pod = dep.spec.template.spec;
    const [c] = pod.containers;
    const flags = checkProxyArgs(c.args);
    expect(flags.get('fast-path')).toBe('nftables');
    // The fast path runs with the base's workers (the main thread owns the table: docs/workers.md).
    expect(flags.get('workers')).toBe('auto');
    // The address clients send to (the kubelet expands $(POD_IP) from the downward API).
    expect(flags.get('listen')).toBe('$(POD_IP):10000');
    expect(c.env).toEqual([{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }]);
    // The kernel path needs no forwarding (docs/fast-path.md), so no unsafe sysctl for the kubelet.
    expect(pod.securityContext.sysctls).toBeUndefined();
    expect(pod.securityContext).toMatchObject({
      runAsUser: 0,
      runAsNonRoot: false,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(c.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      privileged: false,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] },
    });
    // Everything else is the jitsi overlay's, untouched.
    const plain = one(render('overlays/jitsi'), 'Deployment', 'ice-ingress');
    expect(c.ports).toEqual(plain.spec.template.spec.containers[0].ports);
    expect(c.args.filter((a: string) => !/^--(listen|fast-path)=/.test(a))).toEqual(
      plain.spec.template.spec.containers[0].args.filter((a: string) => !a.startsWith('--listen=')),
    );
  });
});
