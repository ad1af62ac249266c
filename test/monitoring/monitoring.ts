import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';

/**
 * The shipped monitoring files, read as the tests need them: the Helm chart's files/, which it
 * renders verbatim as the dashboard ConfigMap and the PrometheusRule's spec.
 */

export const DIR = join(import.meta.dirname, '..', '..', 'deploy', 'helm', 'ice-ingress', 'files');

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** files/prometheus-rules.yaml: a plain Prometheus rule file. */
export function ruleFile(): { groups: { name: string; rules: AlertRule[] }[] } {
  const file = parse(readFileSync(join(DIR, 'prometheus-rules.yaml'), 'utf8')) as {
    groups: { name: string; rules: AlertRule[] }[];
  };
  if (!Array.isArray(file.groups)) throw new Error('prometheus-rules.yaml: no groups');
  return file;
}

export const ruleFileText = (): string => stringify(ruleFile(), { lineWidth: 0 });

export const alerts = (): AlertRule[] => ruleFile().groups.flatMap((g) => g.rules);

export interface DashboardQuery {
  panel: string;
  expr: string;
}

export function dashboardQueries(): DashboardQuery[] {
  const d = JSON.parse(readFileSync(join(DIR, 'dashboard.json'), 'utf8')) as {
    panels: { title: string; type: string; targets?: { expr: string }[] }[];
  };
  return d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
}

/** Grafana's `$__rate_interval` as Prometheus needs it: at least a few scrape intervals. */
export const withInterval = (expr: string, interval: string): string =>
  expr.replaceAll('$__rate_interval', interval);

const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/**
 * Metric names a PromQL expression selects: identifiers left after removing strings, label
 * matchers, range selectors, grouping clauses and function names (an identifier before `(`).
 */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)) {
    if (m[2] !== undefined || KEYWORDS.has(m[1]!.toLowerCase())) continue;
    names.add(m[1]!);
  }
  return [...names];
}

/** `<query> <op> <number>` → its parts (every shipped alert has this shape). */
export function splitThreshold(expr: string): { query: string; op: string; threshold: string } | undefined {
  const m = /^([\s\S]*?)\s*(==|!=|>=|<=|>|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$/.exec(expr.trim());
  return m ? { query: m[1]!, op: m[2]!, threshold: m[3]! } : undefined;
}
