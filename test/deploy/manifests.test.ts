import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dumpYaml, loadYaml } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { OPTIONS } from '../../src/config.ts';
import { runJvbConfigCommand } from '../../src/jvb-config.ts';

// deploy/ is checked twice over: the raw files (always), and what kustomize renders from them
// (when a kustomize v4+ is on the machine: `kubectl kustomize`, or `kustomize build`).
// Each object is validated against the Kubernetes JSON schemas (kubernetes-models: types,
// required fields, enums) and, for unknown fields, against the typed models of
// @kubernetes/client-node: a field that does not survive a decode/encode round trip is a typo.

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
};

/** A rendered object, read as untyped JSON (the assertions check its shape). */
// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped JSON here; assertions check the shape
type Manifest = Obj & Record<string, any>;

const ROOT = join(import.meta.dirname, '..', '..', 'deploy');

function findRenderer(): { cmd: string; args: (dir: string) => string[]; version: string } | undefined {
  const tryRun = (cmd: string, args: string[]): string | undefined => {
    try {
      return execFileSync(cmd, args, {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 20_000,
      });
    } catch {
      return undefined;
    }
  };
  const kubectl = tryRun('kubectl', ['version', '--client']);
  const kv = /Kustomize Version: v(\d+)\S*/.exec(kubectl ?? '');
  if (kv && Number(kv[1]) >= 4) return { cmd: 'kubectl', args: (d) => ['kustomize', d], version: kv[0] };
  const kustomize = tryRun('kustomize', ['version']);
  const v = /v(\d+)\.\d+\.\d+/.exec(kustomize ?? '');
  if (v && Number(v[1]) >= 4)
    return { cmd: 'kustomize', args: (d) => ['build', d], version: `kustomize ${v[0]}` };
  return undefined;
}

const renderer = findRenderer();

function render(dir: string): Obj[] {
  // No silent skip: without a renderer these tests fail and say what to install.
  if (!renderer) {
    throw new Error(
      'deploy/ needs kustomize v4+ to render: install kubectl >= 1.21 (kubectl kustomize) or kustomize',
    );
  }
  const out = execFileSync(renderer!.cmd, renderer!.args(join(ROOT, dir)), {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return parseAllDocuments(out).map((d) => d.toJS() as Obj);
}

function rawObjects(dir: string): Obj[] {
  const files = readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
  return files.flatMap((f) =>
    parseAllDocuments(readFileSync(join(ROOT, dir, f), 'utf8')).map((d) => d.toJS() as Obj),
  );
}

/** Paths of fields in `a` that are missing from `b`. */
function droppedFields(a: unknown, b: unknown, path: string, out: string[]): string[] {
  if (Array.isArray(a)) {
    a.forEach((x, i) => {
      droppedFields(x, Array.isArray(b) ? b[i] : undefined, `${path}[${i}]`, out);
    });
  } else if (a !== null && typeof a === 'object') {
    for (const [k, v] of Object.entries(a)) {
      if (b === null || typeof b !== 'object' || !(k in b)) out.push(`${path}.${k}`);
      else droppedFields(v, (b as Record<string, unknown>)[k], `${path}.${k}`, out);
    }
  }
  return out;
}

/** Every problem with `obj` against the schemas; empty when valid. */
async function schemaProblems(obj: Obj): Promise<string[]> {
  const problems: string[] = [];
  const where = `${obj.kind}/${obj.metadata?.name}`;
  try {
    const specifier = `kubernetes-models/${obj.apiVersion}`;
    const mod = (await import(/* @vite-ignore */ specifier)) as Record<
      string,
      new (
        o: unknown,
      ) => { validate(): void }
    >;
    const Model = mod[obj.kind];
    if (!Model) problems.push(`${where}: unknown kind ${obj.apiVersion} ${obj.kind}`);
    else new Model(obj).validate();
  } catch (err) {
    problems.push(`${where}: ${(err as Error).message}`);
  }
  try {
    const roundTrip = parse(dumpYaml(loadYaml(JSON.stringify(obj))));
    for (const p of droppedFields(obj, roundTrip, obj.kind, []))
      problems.push(`${where}: unknown field ${p}`);
  } catch (err) {
    problems.push(`${where}: ${(err as Error).message}`);
  }
  return problems;
}

function one(objs: Obj[], kind: string, name: string): Manifest {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name.startsWith(name));
  expect(found.map((o) => `${o.kind}/${o.metadata.name}`)).toHaveLength(1);
  return found[0] as Manifest;
}

/** The only rights the proxy may have (DESIGN.md, "Control plane"). */
function checkRbac(objs: Obj[], namespace: string | undefined): void {
  expect(objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')).toEqual([]);
  const roles = objs.filter((o) => o.kind === 'Role');
  expect(roles.map((r) => r.metadata.name)).toEqual(['ice-ingress']);
  expect(roles[0]!.rules).toEqual([
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
  ]);
  const bindings = objs.filter((o) => o.kind === 'RoleBinding');
  expect(bindings).toHaveLength(1);
  const binding = bindings[0] as Manifest;
  expect(binding.roleRef).toEqual({
    apiGroup: 'rbac.authorization.k8s.io',
    kind: 'Role',
    name: 'ice-ingress',
  });
  expect(binding.subjects).toEqual([
    { kind: 'ServiceAccount', name: 'ice-ingress', namespace: namespace ?? binding.subjects[0].namespace },
  ]);
  // Only the proxy runs with that account; the JVBs get the namespace default (no rights).
  for (const d of objs.filter((o) => o.kind === 'Deployment') as Manifest[]) {
    const sa = d.spec.template.spec.serviceAccountName;
    expect(sa === undefined || (d.metadata.name === 'ice-ingress' && sa === 'ice-ingress')).toBe(true);
  }
}

/** `--flag=value` args → flag names; each must be one the CLI knows. */
function checkProxyArgs(args: string[]): Map<string, string> {
  const known = new Set(OPTIONS.map((o) => o.flag));
  const flags = new Map<string, string>();
  for (const a of args) {
    const m = /^--([a-z0-9-]+)=(.*)$/.exec(a);
    expect(m, `arg ${a} is --flag=value`).not.toBeNull();
    expect(known.has(m![1]!), `--${m![1]} is a flag of src/config.ts`).toBe(true);
    flags.set(m![1]!, m![2]!);
  }
  return flags;
}

/** Kubernetes CPU quantity ("2", "1500m", "0.5") → CPUs. */
function cpus(q: string | number): number {
  const t = String(q);
  return t.endsWith('m') ? Number(t.slice(0, -1)) / 1000 : Number(t);
}

/**
 * `--workers` and the container's CPU resources must agree (src/workers/cpus.ts): `auto` follows
 * the CPU limit, so a limit must exist, be whole CPUs (a fraction is rounded down: paid for,
 * unused) and equal the request; a fixed N needs at least N CPUs requested.
 */
function checkWorkersAgreeWithCpu(
  workers: string,
  resources: { requests?: { cpu?: string }; limits?: { cpu?: string } },
): void {
  const request = cpus(resources.requests?.cpu ?? '0');
  if (workers === 'auto') {
    expect(resources.limits?.cpu, '--workers=auto needs a CPU limit').toBeDefined();
    const limit = cpus(resources.limits!.cpu!);
    expect(Number.isInteger(limit), 'CPU limit in whole CPUs').toBe(true);
    expect(limit).toBe(request);
  } else {
    expect(request).toBeGreaterThanOrEqual(Number(workers));
  }
}

function checkProxy(objs: Obj[]): void {
  const dep = one(objs, 'Deployment', 'ice-ingress');
  const pod = dep.spec.template.spec;
  const [c] = pod.containers;
  expect(pod.serviceAccountName).toBe('ice-ingress');
  expect(pod.securityContext).toMatchObject({
    runAsNonRoot: true,
    seccompProfile: { type: 'RuntimeDefault' },
  });
  expect(c.securityContext).toEqual({
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    privileged: false,
    capabilities: { drop: ['ALL'] },
  });
  expect(pod.topologySpreadConstraints.map((t: { topologyKey: string }) => t.topologyKey)).toContain(
    'kubernetes.io/hostname',
  );
  expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(20); // > the default --drain-timeout
  expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
  expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'admin' });
  expect(c.resources.requests.cpu).toBeDefined(); // the HPA measures against it
  checkWorkersAgreeWithCpu(checkProxyArgs(c.args).get('workers') ?? '1', c.resources);
  expect(c.ports).toEqual([
    { name: 'media', containerPort: 10000, protocol: 'UDP' },
    { name: 'admin', containerPort: 9090, protocol: 'TCP' },
  ]);
  const flags = checkProxyArgs(c.args);
  expect(Object.fromEntries(flags)).toMatchObject({
    discovery: 'k8s',
    service: 'jvb',
    'port-name': 'media',
    listen: '0.0.0.0:10000',
    admin: '0.0.0.0:9090',
  });

  const svc = one(objs, 'Service', 'ice-ingress');
  expect(svc.spec).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local' });
  expect(svc.spec.ports).toEqual([{ name: 'media', port: 10000, targetPort: 'media', protocol: 'UDP' }]);
  expect(svc.spec.selector).toEqual(dep.spec.selector.matchLabels);

  const pdb = one(objs, 'PodDisruptionBudget', 'ice-ingress');
  expect(pdb.spec.selector.matchLabels).toEqual(dep.spec.selector.matchLabels);
  const hpa = one(objs, 'HorizontalPodAutoscaler', 'ice-ingress');
  expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'ice-ingress' });
  expect(hpa.spec.metrics[0].resource.name).toBe('cpu');
  expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
}

describe('deploy/ raw manifests', () => {
  for (const dir of ['base', 'overlays/jitsi']) {
    it(`${dir}: every object passes the schemas`, async () => {
      const objs = rawObjects(dir);
      expect(objs.length).toBeGreaterThan(0);
      const problems = (await Promise.all(objs.map(schemaProblems))).flat();
      expect(problems).toEqual([]);
    });
  }

  it('base: least-privilege RBAC and a hardened proxy', () => {
    const objs = rawObjects('base');
    checkRbac(objs, undefined);
    checkProxy(objs);
  });

  it('the schema checks can fail', async () => {
    const bad: Obj = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'bad' },
      spec: {
        replicas: 'two',
        selector: { matchLabels: { a: 'b' } },
        template: { spec: { containers: [{ name: 'c', securityContext: { readOnlyRootFS: true } }] } },
      },
    };
    expect(await schemaProblems(bad)).toEqual([
      'Deployment/bad: data/spec/replicas must be integer',
      'Deployment/bad: unknown field Deployment.spec.template.spec.containers[0].securityContext.readOnlyRootFS',
    ]);
    const role = { ...rawObjects('base').find((o) => o.kind === 'Role')! };
    role.rules = [
      {
        apiGroups: ['discovery.k8s.io'],
        resources: ['endpointslices'],
        verbs: ['get', 'list', 'watch', 'delete'],
      },
    ];
    expect(() => checkRbac([role], undefined)).toThrow();
  });
});

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
});
