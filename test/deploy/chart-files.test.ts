import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ConfigError, OPTIONS, parseConfig } from '../../src/config.ts';
import { checkRbac, checkWorkersAgreeWithCpu, type Obj, schemaProblems } from './k8s.ts';

// The chart's files without Helm (npm test): its version, its values files, and values.schema.json
// kept in step with the proxy's option table (src/config.ts OPTIONS) and parser. What Helm
// renders from them: render.test.ts (npm run test:deploy).

const REPO = join(import.meta.dirname, '..', '..');
const CHART = join(REPO, 'deploy', 'helm', 'ice-ingress');
const readYaml = (file: string): Record<string, unknown> =>
  // `yaml` rejects duplicate keys, which Helm would silently merge.
  parse(readFileSync(file, 'utf8'), { uniqueKeys: true }) as Record<string, unknown>;

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  oneOf?: Schema[];
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  description?: string;
}
const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as Schema;
const values = readYaml(join(CHART, 'values.yaml'));

/** Every value whose description says "CLI: --flag": the chart passes it to that flag. */
function cliBound(s: Schema, path: string[] = []): { path: string; flag: string; schema: Schema }[] {
  const here = /CLI: --([a-z0-9-]+)/.exec(s.description ?? '');
  const own = here && path.length > 0 ? [{ path: path.join('.'), flag: here[1]!, schema: s }] : [];
  return [...own, ...Object.entries(s.properties ?? {}).flatMap(([k, sub]) => cliBound(sub, [...path, k]))];
}
/**
 * A discovery mode's own requirements (allOf: if discovery.mode is M then ...) merged into the
 * values they constrain: the proxy reads those values in that mode only.
 */
function withModeRules(bound: { path: string; flag: string; schema: Schema }) {
  let merged = bound.schema;
  for (const rule of (schema as { allOf?: { if: Schema; then: Schema }[] }).allOf ?? []) {
    if (rule.if.properties?.discovery?.properties?.mode?.const === undefined) continue;
    const sub = bound.path.split('.').reduce<Schema | undefined>((s, k) => s?.properties?.[k], rule.then);
    if (sub) merged = { ...merged, ...sub, description: merged.description };
  }
  return { ...bound, inMode: merged };
}
const BOUND = cliBound(schema).map(withModeRules);

/** Proxy options the chart does not expose, and why. */
const NOT_EXPOSED: Record<string, string> = {
  kubeconfig: 'in a pod the client uses its in-cluster account',
  'upstream-bind': 'a pod has one address; 0.0.0.0 picks it',
  'upstream-bind6': 'likewise for IPv6',
  peers: "made from peers.mode: k8s:<the release's Service> or dns:<the chart's headless peer Service>",
  'pod-ip': 'the downward API (status.podIP), whenever peers are on',
};

/** The flag's text for a chart value (how templates/_helpers.tpl writes it). */
function asFlag(flag: string, v: unknown): string {
  if (flag === 'listen' || flag === 'admin') return `0.0.0.0:${v}`;
  if (flag === 'backends') return (v as string[]).join(',');
  if (flag === 'fast-path') return String(v); // fastPath.kind, passed when fastPath.enabled
  return String(v);
}

/** What else the proxy needs to start for a flag to be read (its discovery mode). */
function baseArgs(flag: string): string[] {
  if (flag === 'discovery')
    return ['--backends=a=10.0.0.5:10000', '--service=jvb', '--dns-name=jvb.jitsi.svc'];
  if (['service', 'namespace', 'port-name'].includes(flag)) return ['--discovery=k8s', '--service=jvb'];
  if (['dns-name', 'backend-port', 'dns-interval', 'dns-grace'].includes(flag))
    return ['--discovery=dns', '--dns-name=jvb.jitsi.svc'];
  if (flag === 'fast-path') return ['--listen=10.0.0.9:10000', '--backends=a=10.0.0.5:10000'];
  return ['--backends=a=10.0.0.5:10000'];
}

/** The proxy's parser on one flag: its config, or the problems it reports. */
function cli(flag: string, text: string): { ok: true; config: unknown } | { ok: false; problems: string } {
  const base = baseArgs(flag).filter((a) => !a.startsWith(`--${flag}=`));
  try {
    const r = parseConfig([...base, `--${flag}=${text}`], {});
    return { ok: true, config: r.kind === 'run' ? r.config : r.kind };
  } catch (err) {
    if (err instanceof ConfigError) return { ok: false, problems: err.problems.join('; ') };
    throw err;
  }
}

/**
 * Whether `s` accepts `v`, for the keywords the CLI-bound values use. Helm's own validator is run
 * on the schema in test:deploy (render.test.ts: bad values refused, shipped values accepted).
 */
function accepts(s: Schema, v: unknown): boolean {
  if (s.oneOf) return s.oneOf.filter((x) => accepts(x, v)).length === 1;
  if ('const' in s) return v === s.const;
  if (s.enum) return s.enum.includes(v);
  const types = [s.type ?? []].flat();
  const typed = types.some((t) =>
    t === 'integer' ? Number.isInteger(v) : t === 'array' ? Array.isArray(v) : typeof v === t,
  );
  if (!typed) return false;
  if (typeof v === 'number') return v >= (s.minimum ?? -Infinity) && v <= (s.maximum ?? Infinity);
  if (typeof v === 'string') {
    return (
      v.length >= (s.minLength ?? 0) &&
      v.length <= (s.maxLength ?? Infinity) &&
      (s.pattern === undefined || new RegExp(s.pattern, 'u').test(v))
    );
  }
  if (Array.isArray(v)) return v.every((x) => accepts(s.items ?? {}, x));
  return true;
}

const STRING_SAMPLES = [
  '500ms',
  '3s',
  '1.5s',
  '2m',
  '1h',
  '0s',
  '20',
  '3 s',
  '1d',
  '-1s',
  's',
  '',
  '0',
  '16384-32767',
  '1-65535',
  '70000-70001',
  '10-5',
  'abc',
  'jvb',
  'media',
  'jvb.jitsi.svc.cluster.local',
  'UPPER',
  'a b',
  'info',
  'trace',
  'verbose',
];
const ARRAY_SAMPLES = [
  ['jvb-0=10.0.0.5:10000'],
  ['jvb-0=10.0.0.5:10000', 'jvb-1=[fd00::6]:10000'],
  ['jvb-0'],
  ['=10.0.0.5:1'],
  ['jvb-0=10.0.0.5:70000'],
];

/**
 * What the schema lets through and the proxy refuses, on purpose: rules JSON Schema cannot state
 * for a string (a duration's minimum, a port range's order and bounds and that it must not hold
 * the listening port, a port number inside NAME=HOST:PORT). The proxy refuses them at start-up, naming the value, and render.test.ts runs
 * every shipped value set through its parser (--check-config).
 */
const SCHEMA_WIDER: Record<string, unknown[]> = {
  'idle-timeout': ['0s'],
  'dns-interval': ['0s'],
  'probe-timeout': ['0s'],
  'peer-timeout': ['0s'],
  'upstream-ports': ['70000-70001', '10-5', '1-65535'], // the last holds the listening port
  backends: [['jvb-0=10.0.0.5:70000']],
};

/** Chart defaults that differ from the proxy's on purpose. */
const CHART_DEFAULTS: Record<string, string> = {
  discovery: 'k8s', // the chart is for Kubernetes: EndpointSlices
  service: 'jvb',
  'port-name': 'media',
  workers: 'auto', // one data-path thread per CPU of the limit (values.yaml resources)
  'fast-path': 'nftables', // fastPath.kind: which path when fastPath.enabled (off without it)
  // A terminating pod is not ready in Kubernetes anyway; serving keeps a node's traffic flowing to
  // it when it has no other proxy (docs/peers.md, "Drain").
  'drain-readiness': 'serving',
};

describe('deploy/helm/ice-ingress files', () => {
  it('Chart.yaml: version and appVersion are package.json’s version', () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    const chart = readYaml(join(CHART, 'Chart.yaml'));
    expect(chart.version).toBe(pkg.version);
    expect(chart.appVersion).toBe(pkg.version);
  });

  it('every values file parses without duplicate keys', () => {
    const files = [
      join(CHART, 'values.yaml'),
      join(REPO, 'deploy', 'jitsi-helm', 'ice-ingress-values.yaml'),
      ...readdirSync(join(CHART, 'ci')).map((f) => join(CHART, 'ci', f)),
    ];
    for (const f of files) expect(() => readYaml(f), f).not.toThrow();
  });
});

describe('values.schema.json and the proxy’s option table (src/config.ts OPTIONS)', () => {
  it('every CLI-bound value names a flag the proxy has, each flag once; every other flag is not exposed on purpose', () => {
    const known = new Set(OPTIONS.map((o) => o.flag));
    for (const b of BOUND) expect(known.has(b.flag), `${b.path}: --${b.flag}`).toBe(true);
    const bound = BOUND.map((b) => b.flag);
    expect(new Set(bound).size).toBe(bound.length);
    expect([...bound, ...Object.keys(NOT_EXPOSED)].sort()).toEqual([...known].sort());
    // values.yaml comments name the same flag for the same value.
    const text = readFileSync(join(CHART, 'values.yaml'), 'utf8');
    for (const b of BOUND) expect(text, b.path).toContain(`CLI: --${b.flag}`);
  });

  it('integer ranges are the proxy’s: it takes the minimum and maximum and refuses one beyond each', () => {
    const ints = BOUND.filter((b) => [b.schema.type].flat().includes('integer'));
    expect(ints.length).toBeGreaterThan(8);
    for (const { path, flag, schema: s } of ints) {
      expect(s.minimum, path).toBeDefined();
      expect(s.maximum, path).toBeDefined();
      for (const v of [s.minimum!, s.maximum!])
        expect(cli(flag, asFlag(flag, v)).ok, `${path}=${v}`).toBe(true);
      // listen/admin take port 0 (any); the chart needs a fixed port for its Service and probes.
      if (flag !== 'listen' && flag !== 'admin')
        expect(cli(flag, asFlag(flag, s.minimum! - 1)).ok, `${path}=${s.minimum! - 1}`).toBe(false);
      expect(cli(flag, asFlag(flag, s.maximum! + 1)).ok, `${path}=${s.maximum! + 1}`).toBe(false);
    }
  });

  it('enumerations are the proxy’s: every member accepted, the proxy’s own alternatives all listed', () => {
    const enums = BOUND.filter((b) => b.schema.enum);
    expect(enums.map((b) => b.flag).sort()).toEqual([
      'discovery',
      'drain-readiness',
      'fast-path',
      'log-level',
    ]);
    for (const { path, flag, schema: s } of enums) {
      for (const v of s.enum!) expect(cli(flag, String(v)).ok, `${path}=${v}`).toBe(true);
      expect(cli(flag, 'bogus').ok).toBe(false);
      const opt = OPTIONS.find((o) => o.flag === flag)!;
      const alternatives = (/\|/.test(opt.arg) ? opt.arg : opt.help).split('|');
      // fastPath.kind names the kernel path; `off` is fastPath.enabled: false.
      const expected = flag === 'fast-path' ? alternatives.filter((a) => a !== 'off') : alternatives;
      expect([...s.enum!].sort(), path).toEqual(expected.sort());
    }
    // workers: auto or a count in the proxy's range.
    const workers = BOUND.find((b) => b.flag === 'workers')!.schema;
    for (const v of ['auto', 1, 32])
      expect(accepts(workers, v) && cli('workers', String(v)).ok, `${v}`).toBe(true);
    for (const v of [0, 33, 'all'])
      expect(accepts(workers, v) || cli('workers', String(v)).ok, `${v}`).toBe(false);
    // Booleans: true|false, as the proxy spells them.
    for (const b of BOUND.filter((x) => x.schema.type === 'boolean')) {
      for (const v of [true, false]) expect(cli(b.flag, asFlag(b.flag, v)).ok, `${b.path}=${v}`).toBe(true);
    }
  });

  it('what the schema accepts, the proxy accepts (but for the rules a string schema cannot state)', () => {
    let compared = 0;
    for (const { path, flag, inMode: s } of BOUND) {
      const samples: unknown[] =
        s.type === 'array' ? ARRAY_SAMPLES : s.type === 'string' ? STRING_SAMPLES : [];
      for (const v of samples) {
        if (!accepts(s, v)) continue;
        compared++;
        const wider = (SCHEMA_WIDER[flag] ?? []).some((w) => JSON.stringify(w) === JSON.stringify(v));
        const r = cli(flag, asFlag(flag, v));
        expect(r.ok, `${path}=${JSON.stringify(v)}: ${r.ok ? '' : r.problems}`).toBe(!wider);
      }
    }
    expect(compared).toBeGreaterThan(40);
    // The duration pattern is the proxy's syntax: what it refuses, the schema refuses.
    const duration = BOUND.find((b) => b.flag === 'drain-timeout')!.schema;
    for (const v of ['20', '3 s', '1d', '-1s', 's', '']) {
      expect(accepts(duration, v), v).toBe(false);
      expect(cli('drain-timeout', v).ok, v).toBe(false);
    }
  });

  it('values.yaml’s defaults are the proxy’s own, but for the ones the chart chooses on purpose', () => {
    const at = (path: string): unknown =>
      path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], values);
    for (const { path, flag } of BOUND) {
      const v = at(path);
      expect(v, path).toBeDefined();
      expect(accepts(BOUND.find((b) => b.path === path)!.schema, v), path).toBe(true);
      const def = OPTIONS.find((o) => o.flag === flag)!.def;
      if (flag in CHART_DEFAULTS) {
        expect(asFlag(flag, v), path).toBe(CHART_DEFAULTS[flag]);
        continue;
      }
      if (def === '') {
        expect(asFlag(flag, v), path).toBe('');
        continue;
      }
      // Same configuration with the chart's value as with the proxy's default.
      const withChart = cli(flag, asFlag(flag, v));
      const withDefault = cli(flag, def);
      expect(withChart.ok, path).toBe(true);
      expect(withChart, path).toEqual(withDefault);
    }
  });
});

describe('the deploy checks can fail', () => {
  it('schema problems: a wrong type, an unknown field, a prometheus-operator typo', async () => {
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
    const sm: Obj = {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'ServiceMonitor',
      metadata: { name: 'sm' },
      spec: { selector: { matchLabels: { a: 'b' } }, endpoints: [{ port: 'admin', intervall: '15s' }] },
    };
    expect(await schemaProblems(sm)).toEqual(['ServiceMonitor/sm: unknown field spec.endpoints.intervall']);
    const rule: Obj = {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PrometheusRule',
      metadata: { name: 'r' },
      spec: { groups: [{ name: 'g', rules: [{ alert: 'A', for: '5m' }] }] },
    };
    expect((await schemaProblems(rule)).join('\n')).toMatch(/rules\/0 must have required property expr/);
  });

  it('RBAC: a wider verb, a ClusterRole, or a Role where discovery needs none', () => {
    const deployment = (automount: boolean): Obj => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'p' },
      spec: { template: { spec: { serviceAccountName: 'p', automountServiceAccountToken: automount } } },
    });
    const role = (verbs: string[]): Obj => ({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: 'p', namespace: 'n' },
      rules: [{ apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs }],
    });
    const binding: Obj = {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'p', namespace: 'n' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'p' },
      subjects: [{ kind: 'ServiceAccount', name: 'p', namespace: 'n' }],
    };
    const k8s = { mode: 'k8s', namespace: 'n', releaseNamespace: 'n', account: 'p' };
    checkRbac([deployment(true), role(['get', 'list', 'watch']), binding], k8s);
    expect(() =>
      checkRbac([deployment(true), role(['get', 'list', 'watch', 'delete']), binding], k8s),
    ).toThrow();
    const cluster = { ...role(['get', 'list', 'watch']), kind: 'ClusterRole' };
    expect(() =>
      checkRbac([deployment(true), role(['get', 'list', 'watch']), binding, cluster], k8s),
    ).toThrow();
    checkRbac([deployment(false)], { ...k8s, mode: 'dns', peers: 'off' });
    expect(() =>
      checkRbac([deployment(false), role(['get']), binding], { ...k8s, mode: 'dns', peers: 'dns' }),
    ).toThrow();
    expect(() => checkRbac([deployment(true)], { ...k8s, mode: 'static', peers: 'off' })).toThrow();
    // Peers k8s (docs/peers.md) with discovery dns: the peers' Role in the release's namespace.
    const peersRole = { ...role(['get', 'list', 'watch']), metadata: { name: 'p-peers', namespace: 'n' } };
    const peersBinding = {
      ...binding,
      metadata: { name: 'p-peers', namespace: 'n' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'p-peers' },
    };
    checkRbac([deployment(true), peersRole, peersBinding], { ...k8s, mode: 'dns', peers: 'k8s' });
    expect(() => checkRbac([deployment(false)], { ...k8s, mode: 'dns', peers: 'k8s' })).toThrow();
  });

  it('--workers and CPU', () => {
    checkWorkersAgreeWithCpu('auto', { requests: { cpu: '2' }, limits: { cpu: '2' } });
    checkWorkersAgreeWithCpu('2', { requests: { cpu: '2000m' } });
    expect(() => checkWorkersAgreeWithCpu('auto', { requests: { cpu: '2' } })).toThrow(/CPU limit/);
    expect(() =>
      checkWorkersAgreeWithCpu('auto', { requests: { cpu: '1500m' }, limits: { cpu: '1500m' } }),
    ).toThrow(/whole CPUs/);
    expect(() =>
      checkWorkersAgreeWithCpu('auto', { requests: { cpu: '1' }, limits: { cpu: '2' } }),
    ).toThrow();
    expect(() => checkWorkersAgreeWithCpu('4', { requests: { cpu: '2' } })).toThrow();
  });

  it('the schema/CLI comparison sees a range the proxy does not share', () => {
    const probeRounds = BOUND.find((b) => b.flag === 'probe-rounds')!;
    expect(cli('probe-rounds', String(probeRounds.schema.maximum! + 1)).ok).toBe(false);
    expect(accepts({ ...probeRounds.schema, maximum: 1000 }, 500)).toBe(true);
    expect(cli('probe-rounds', '500').ok).toBe(false);
  });
});
