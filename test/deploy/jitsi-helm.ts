import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

/**
 * What jitsi-helm v3.4.0 renders for its JVBs, for the values in deploy/jitsi-helm/values.yaml.
 * The tests never fetch that chart (no chart repository is added, CI is offline), so the few
 * template rules our chart's Jitsi values depend on are written out here, each from the chart's
 * source:
 * - templates/_helpers.tpl: `jitsi-meet.name` = nameOverride or the chart name (`jitsi-meet`,
 *   Chart.yaml), cut to 63 characters, trailing '-' trimmed; `jitsi-meet.fullname` =
 *   fullnameOverride, else the release name if it contains that name, else `<release>-<name>`;
 *   `jitsi-meet.selectorLabels` = app.kubernetes.io/name: <name>, app.kubernetes.io/instance:
 *   <release>.
 * - templates/jvb/_helpers.tpl: `jitsi-meet.jvb.selectorLabels` adds app.kubernetes.io/component:
 *   "jvb"; `jitsi-meet.jvb.fullname` = `<fullname>-jvb`.
 * - templates/jvb/deployment.yaml: one Deployment `<jvb fullname>-<i>` per i < portRangeSize, pod
 *   labels = jvb selector labels + `instance: "<i>"` + global.podLabels + jvb.podLabels; the UDP
 *   container port is named `rtp-udp-<i>` on UDPPort + i; it fails when jvb.service.enabled and
 *   replicaCount > 1 without hostPort/hostNetwork; the chart's own volumes are run, tmp,
 *   custom-scripts, custom-configs, custom-defaults (and extra-files), mounted at /run and /tmp
 *   (and, when set, files under /config, /defaults and /etc/s6-overlay).
 */

// biome-ignore lint/suspicious/noExplicitAny: Helm values are untyped; the tests check the shape
export type Values = Record<string, any>;

export const ROOT = join(import.meta.dirname, '..', '..', 'deploy');
export const VALUES_FILE = join(ROOT, 'jitsi-helm', 'values.yaml');

export function loadValues(): Values {
  // `yaml` rejects duplicate keys, which Helm would silently merge.
  return parse(readFileSync(VALUES_FILE, 'utf8'), { uniqueKeys: true }) as Values;
}

const CHART_NAME = 'jitsi-meet';

const trunc63 = (s: string): string => s.slice(0, 63).replace(/-+$/, '');

export interface ChartJvb {
  readonly deploymentName: string;
  readonly selectorLabels: Record<string, string>;
  readonly podLabels: Record<string, string>;
  readonly udpPortName: string;
  readonly udpPort: number;
  /** The chart's `fail` for replicaCount > 1 behind its own Service. */
  readonly failure: string | undefined;
  readonly chartVolumes: readonly string[];
  readonly chartMountPaths: readonly string[];
}

export function chartJvb(release: string, values: Values, index = 0): ChartJvb {
  const jvb = values.jvb ?? {};
  const name = trunc63(values.nameOverride || CHART_NAME);
  const fullname = values.fullnameOverride
    ? trunc63(values.fullnameOverride)
    : release.includes(name)
      ? trunc63(release)
      : trunc63(`${release}-${name}`);
  const selectorLabels = {
    'app.kubernetes.io/name': name,
    'app.kubernetes.io/instance': release,
    'app.kubernetes.io/component': 'jvb',
  };
  const serviceEnabled = jvb.service?.enabled ?? true;
  const replicas = jvb.replicaCount ?? 1;
  return {
    deploymentName: `${fullname}-jvb-${index}`,
    selectorLabels,
    podLabels: {
      ...selectorLabels,
      instance: String(index),
      ...(values.global?.podLabels ?? {}),
      ...(jvb.podLabels ?? {}),
    },
    udpPortName: `rtp-udp-${index}`,
    udpPort: (jvb.UDPPort ?? 10000) + index,
    failure:
      serviceEnabled && !jvb.useHostPort && !jvb.useHostNetwork && replicas > 1
        ? 'jvb.replicaCount must be 1 when the JVB service is enabled'
        : undefined,
    chartVolumes: ['run', 'tmp', 'custom-scripts', 'custom-configs', 'custom-defaults', 'extra-files'],
    chartMountPaths: ['/run', '/tmp'],
  };
}

/** The release name that the jitsi-helm `helm install` command in `file` uses. */
export function releaseIn(file: string): string {
  const m = /helm install ([a-z0-9-]+) jitsi\/jitsi-meet /.exec(readFileSync(file, 'utf8'));
  if (!m) throw new Error(`${file}: no "helm install RELEASE jitsi/jitsi-meet" command`);
  return m[1]!;
}
