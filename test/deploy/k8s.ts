import { dumpYaml, loadYaml } from '@kubernetes/client-node';
import { expect } from 'vitest';
import { parse } from 'yaml';
import { OPTIONS, parseDuration } from '../../src/config.ts';

// Checks of Kubernetes objects, shared by the deploy/ suites: the chart's renders
// (render.test.ts, `npm run test:deploy`, needs helm) and the files read without a renderer
// (chart-files.test.ts, jitsi-helm.test.ts, in `npm test`). Each object is validated against the
// Kubernetes JSON schemas (kubernetes-models; prometheus-operator kinds:
// @kubernetes-models/prometheus-operator: types, required fields, enums) and for unknown fields
// against the typed models of @kubernetes/client-node (a field that does not survive a
// decode/encode round trip is a typo) or, for the prometheus-operator kinds, whose models accept
// any field, against the shape stated in CRD_FIELDS.

export type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
};

/** Part of a rendered object, read as untyped JSON (the assertions check its shape). */
// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped JSON here; assertions check the shape
export type Json = Record<string, any>;
export type Manifest = Obj & Json;

const CRD_GROUP = 'monitoring.coreos.com/';

/**
 * The fields of the prometheus-operator objects the chart renders (ServiceMonitor and
 * PrometheusRule of monitoring.coreos.com/v1, as documented in prometheus-operator's API
 * reference), by path with array indices dropped: anything else is a typo.
 */
const CRD_FIELDS: Record<string, readonly string[]> = {
  ServiceMonitor: [
    'spec',
    'spec.selector',
    'spec.selector.matchLabels',
    'spec.endpoints',
    'spec.endpoints.port',
    'spec.endpoints.path',
    'spec.endpoints.interval',
  ],
  PrometheusRule: [
    'spec',
    'spec.groups',
    'spec.groups.name',
    'spec.groups.rules',
    'spec.groups.rules.alert',
    'spec.groups.rules.expr',
    'spec.groups.rules.for',
    'spec.groups.rules.labels',
    'spec.groups.rules.annotations',
  ],
};
/** Maps whose keys are data (label names and the like), not fields. */
const CRD_MAPS = new Set([
  'spec.selector.matchLabels',
  'spec.groups.rules.labels',
  'spec.groups.rules.annotations',
]);

function crdUnknownFields(kind: string, value: unknown, path: string, out: string[]): string[] {
  if (Array.isArray(value)) {
    for (const x of value) crdUnknownFields(kind, x, path, out);
  } else if (value !== null && typeof value === 'object' && !CRD_MAPS.has(path)) {
    for (const [k, v] of Object.entries(value)) {
      const p = path === '' ? k : `${path}.${k}`;
      if (path === '' && ['apiVersion', 'kind', 'metadata'].includes(k)) continue;
      if (!(CRD_FIELDS[kind] ?? []).includes(p)) out.push(p);
      else crdUnknownFields(kind, v, p, out);
    }
  }
  return out;
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
  const crd = obj.apiVersion.startsWith(CRD_GROUP);
  try {
    const specifier = crd
      ? `@kubernetes-models/prometheus-operator/${obj.apiVersion}`
      : `kubernetes-models/${obj.apiVersion}`;
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
  if (crd) {
    if (!CRD_FIELDS[obj.kind]) problems.push(`${where}: no stated shape for ${obj.kind}`);
    for (const p of crdUnknownFields(obj.kind, obj, '', [])) problems.push(`${where}: unknown field ${p}`);
    return problems;
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
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  expect(found.map((o) => `${o.kind}/${o.metadata.name}`)).toHaveLength(1);
  return found[0] as Manifest;
}

export const ofKind = (objs: Obj[], kind: string): Manifest[] =>
  objs.filter((o) => o.kind === kind) as Manifest[];

/**
 * The only rights the proxy may have (docs/architecture.md, "Control plane"): with discovery k8s,
 * get/list/watch on EndpointSlices in the one namespace its Service is in, bound to its own
 * account; with DNS or static discovery, none at all, and no API token in the pod.
 */
/**
 * The proxy's RBAC is exactly what it reads: with discovery k8s a Role on endpointslices (read
 * only) in the discovered Service's namespace; with peers k8s (docs/peers.md) the same in the
 * release's namespace (one Role serves both when that is the same namespace); otherwise nothing,
 * and no token mounted.
 */
export function checkRbac(
  objs: Obj[],
  expected: { mode: string; peers?: string; namespace: string; releaseNamespace: string; account: string },
): void {
  const rbacKinds = ['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding'];
  const proxy = ofKind(objs, 'Deployment').find((d) => d.metadata.name === expected.account)!;
  const pod = proxy.spec.template.spec;
  expect(pod.serviceAccountName).toBe(expected.account);
  const peers = expected.peers ?? 'k8s';
  const want: [string, string][] = [];
  if (expected.mode === 'k8s') want.push([expected.account, expected.namespace]);
  if (peers === 'k8s' && !(expected.mode === 'k8s' && expected.namespace === expected.releaseNamespace))
    want.push([`${expected.account}-peers`, expected.releaseNamespace]);
  if (want.length === 0) {
    expect(objs.filter((o) => rbacKinds.includes(o.kind))).toEqual([]);
    expect(pod.automountServiceAccountToken).toBe(false);
    return;
  }
  expect(pod.automountServiceAccountToken).toBe(true);
  expect(objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')).toEqual([]);
  const roles = ofKind(objs, 'Role');
  expect(roles.map((r) => [r.metadata.name, r.metadata.namespace])).toEqual(want);
  for (const r of roles) {
    expect(r.rules).toEqual([
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    ]);
  }
  const bindings = ofKind(objs, 'RoleBinding');
  expect(bindings.map((b) => [b.metadata.name, b.metadata.namespace])).toEqual(want);
  for (const [i, b] of bindings.entries()) {
    expect(b.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: want[i]![0] });
    expect(b.subjects).toEqual([
      { kind: 'ServiceAccount', name: expected.account, namespace: expected.releaseNamespace },
    ]);
  }
  // Only the proxy runs with that account; any other pod has no token (the bundled JVBs).
  for (const d of ofKind(objs, 'Deployment').filter((x) => x !== proxy)) {
    expect(d.spec.template.spec.serviceAccountName).toBeUndefined();
    expect(d.spec.template.spec.automountServiceAccountToken).toBe(false);
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
    expect(flags.has(m![1]!), `--${m![1]} given once`).toBe(false);
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

/**
 * What every proxy Deployment must be, whatever the values: hardened (non-root, read-only, no
 * capability; with the fast path, uid 0 and NET_ADMIN only), probed on the admin port, spread
 * over nodes, a grace period that outlasts its drain, CPU that matches its workers, and a public
 * Service, PodDisruptionBudget and HPA (when on) that select exactly its pods.
 */
export function checkProxy(objs: Obj[], name: string): Map<string, string> {
  const dep = one(objs, 'Deployment', name);
  const pod = dep.spec.template.spec;
  const [c] = pod.containers;
  const flags = checkProxyArgs(c.args);
  const kind = flags.get('fast-path');
  const fastPath = kind === 'nftables' || kind === 'ebpf';
  expect(pod.securityContext).toMatchObject({ seccompProfile: { type: 'RuntimeDefault' } });
  expect(pod.securityContext).toMatchObject(
    fastPath ? { runAsNonRoot: false, runAsUser: 0 } : { runAsNonRoot: true, runAsUser: 10001 },
  );
  // The kernel path needs no forwarding (docs/fast-path.md), so never an unsafe sysctl.
  expect(pod.securityContext.sysctls).toBeUndefined();
  expect(c.securityContext).toEqual({
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    privileged: false,
    capabilities: fastPath
      ? { drop: ['ALL'], add: kind === 'ebpf' ? ['BPF', 'NET_ADMIN'] : ['NET_ADMIN'] }
      : { drop: ['ALL'] },
  });
  expect(pod.topologySpreadConstraints.map((t: { topologyKey: string }) => t.topologyKey)).toContain(
    'kubernetes.io/hostname',
  );
  const drainMs = parseDuration(
    flags.get('drain-timeout') ?? OPTIONS.find((o) => o.flag === 'drain-timeout')!.def,
  );
  expect(drainMs).toBeDefined();
  expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(drainMs!);
  expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
  expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'admin' });
  expect(c.resources.requests.cpu).toBeDefined(); // the HPA measures against it
  checkWorkersAgreeWithCpu(flags.get('workers') ?? '1', c.resources);
  const listenPort = Number(flags.get('listen')!.split(':').at(-1));
  const adminPort = Number(flags.get('admin')!.split(':').at(-1));
  const peerPort = flags.get('peer-port');
  expect(c.ports).toEqual([
    { name: 'media', containerPort: listenPort, protocol: 'UDP' },
    { name: 'admin', containerPort: adminPort, protocol: 'TCP' },
    // With peers (docs/peers.md): worker 0's peer port, never on the public Service below.
    ...(peerPort === undefined ? [] : [{ name: 'peer', containerPort: Number(peerPort), protocol: 'UDP' }]),
  ]);
  if (flags.has('peers')) expect(flags.get('pod-ip')).toBe('$(POD_IP)');

  const selector = dep.spec.selector.matchLabels;
  expect(dep.spec.template.metadata.labels).toMatchObject(selector);
  const svc = one(objs, 'Service', name);
  expect(svc.spec).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local' });
  // UDP only: the admin port is never on the public Service.
  expect(svc.spec.ports).toEqual([{ name: 'media', port: listenPort, targetPort: 'media', protocol: 'UDP' }]);
  expect(svc.spec.selector).toEqual(selector);
  const pdb = one(objs, 'PodDisruptionBudget', name);
  expect(pdb.spec.selector.matchLabels).toEqual(selector);
  const hpa = ofKind(objs, 'HorizontalPodAutoscaler').find((h) => h.metadata.name === name);
  if (hpa) {
    expect(dep.spec.replicas).toBeUndefined(); // the HPA owns the count
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name });
    expect(hpa.spec.metrics[0].resource.name).toBe('cpu');
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
  } else {
    expect(dep.spec.replicas).toBeGreaterThanOrEqual(2);
  }
  return flags;
}
