import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dumpYaml, loadYaml } from '@kubernetes/client-node';
import { expect } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { OPTIONS } from '../../src/config.ts';

// Shared by the deploy/ suites. deploy/ is checked twice over: the raw files
// (manifests.test.ts, jitsi-helm.test.ts, in `npm test`), and what kustomize renders from them
// (render.test.ts, `npm run test:deploy`: needs `kubectl kustomize` or `kustomize build`, v4+).
// Each object is validated against the Kubernetes JSON schemas (kubernetes-models: types,
// required fields, enums) and, for unknown fields, against the typed models of
// @kubernetes/client-node: a field that does not survive a decode/encode round trip is a typo.

export type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
};

/** A rendered object, read as untyped JSON (the assertions check its shape). */
// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped JSON here; assertions check the shape
export type Manifest = Obj & Record<string, any>;

export const ROOT = join(import.meta.dirname, '..', '..', 'deploy');

export function findRenderer():
  | { cmd: string; args: (dir: string) => string[]; version: string }
  | undefined {
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

let renderer: ReturnType<typeof findRenderer> | null = null;

export function render(dir: string): Obj[] {
  if (renderer === null) renderer = findRenderer();
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

export function rawObjects(dir: string): Obj[] {
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
export async function schemaProblems(obj: Obj): Promise<string[]> {
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

/** The one object of `kind` named `name`. */
export function one(objs: Obj[], kind: string, name: string): Manifest {
  // `name-` matches a generated name (kustomize's hash suffix); any other name matches exactly.
  const matches = (n: string): boolean => (name.endsWith('-') ? n.startsWith(name) : n === name);
  const found = objs.filter((o) => o.kind === kind && matches(o.metadata.name));
  expect(found.map((o) => `${o.kind}/${o.metadata.name}`)).toHaveLength(1);
  return found[0] as Manifest;
}

/** The only rights the proxy may have (docs/architecture.md, "Control plane"). */
export function checkRbac(objs: Obj[], namespace: string | undefined): void {
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
export function checkProxyArgs(args: string[]): Map<string, string> {
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
export function checkWorkersAgreeWithCpu(
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

export function checkProxy(objs: Obj[]): void {
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
