import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Json, Manifest, Obj } from './k8s.ts';

// The chart as Helm renders it, and the proxy's own parser run on what it renders
// (`npm run test:deploy`; .ci/run installs helm). Helm runs offline: its cache, config and data
// directories are a fresh temporary directory, no repository is ever added, and nothing needs a
// cluster (`helm template`, `helm lint`, `helm package`).

export const REPO = join(import.meta.dirname, '..', '..');
export const CHART = join(REPO, 'deploy', 'helm', 'ice-ingress');
export const JITSI_VALUES = join(REPO, 'deploy', 'jitsi-helm', 'ice-ingress-values.yaml');
export const ciValues = (name: string): string => join(CHART, 'ci', `${name}-values.yaml`);

let home: string | undefined;

/** Helm's own directories: one temporary directory per test file, removed by {@link cleanupHelm}. */
function helmEnv(): NodeJS.ProcessEnv {
  home ??= mkdtempSync(join(tmpdir(), 'ice-ingress-helm-'));
  return {
    PATH: process.env.PATH,
    HOME: home,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
}

export function cleanupHelm(): void {
  if (home !== undefined) rmSync(home, { recursive: true, force: true });
  home = undefined;
}

export interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function helm(args: string[], cwd = REPO): Run {
  const r = spawnSync(process.env.HELM ?? 'helm', args, {
    cwd,
    env: helmEnv(),
    encoding: 'utf8',
    timeout: 60_000,
    maxBuffer: 64 << 20,
  });
  // No silent skip: without helm these tests fail and say what to install.
  if (r.error) throw new Error(`helm not runnable (${r.error.message}): install helm 3.8+ (.ci/run does)`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function helmVersion(): string {
  return helm(['version', '--short']).stdout.trim();
}

export interface RenderOptions {
  readonly values?: readonly string[];
  readonly set?: readonly string[];
  readonly release?: string;
  readonly namespace?: string;
}

export function templateArgs(o: RenderOptions = {}): string[] {
  return [
    'template',
    o.release ?? 'ice-ingress',
    CHART,
    '--namespace',
    o.namespace ?? 'jitsi',
    ...(o.values ?? []).flatMap((f) => ['--values', f]),
    ...(o.set ?? []).flatMap((s) => ['--set', s]),
  ];
}

/** `helm template` output; throws with Helm's message when it refuses. */
export function renderText(o: RenderOptions = {}): string {
  const r = helm(templateArgs(o));
  if (r.status !== 0) throw new Error(`helm template failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

export const parseObjects = (text: string): Manifest[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((x): x is Obj => x !== null) as Manifest[];

export const render = (o: RenderOptions = {}): Manifest[] => parseObjects(renderText(o));

/** A container's environment as the kubelet resolves it (downward API, literal values). */
export function containerEnv(container: Json, fields: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of (container.env ?? []) as {
    name: string;
    value?: string;
    valueFrom?: { fieldRef?: { fieldPath: string } };
  }[]) {
    const v = e.value ?? (e.valueFrom?.fieldRef ? fields[e.valueFrom.fieldRef.fieldPath] : undefined);
    if (v === undefined) throw new Error(`env ${e.name}: no value the test can resolve`);
    env[e.name] = v;
  }
  return env;
}

/** `$(VAR)` in args, expanded from the container's environment as the kubelet does. */
export const expandArgs = (args: readonly string[], env: Record<string, string>): string[] =>
  args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m));

const BIN = join(REPO, 'src', 'bin.ts');

/**
 * The proxy's own configuration parser (`ice-ingress --check-config`), run on a rendered
 * container's arguments and environment: the image's entry point is the CLI, so `args` are its
 * flags. Nothing is bound.
 */
export function checkConfig(container: Json, env: Record<string, string>): Run {
  const r = spawnSync(process.execPath, [BIN, '--check-config', ...expandArgs(container.args, env)], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
    timeout: 20_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
