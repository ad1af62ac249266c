import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * `--workers auto`: how many CPUs this pod may really use. In a container `os.cpus()` and even
 * `os.availableParallelism()` (the affinity mask) report the node's cores, while a Kubernetes CPU
 * limit is a CFS quota on the container's cgroup: `cpu.max` ("QUOTA PERIOD" or "max PERIOD") on
 * cgroup v2, `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 = none) on v1
 * (https://docs.kernel.org/admin-guide/cgroup-v2.html#cpu-interface-files).
 *
 * Workers = floor(quota / period), at least 1, at most the affinity count. Rounded down because a
 * throttled cgroup stops every thread for the rest of the period, which media feels as jitter:
 * 1.5 CPUs run one worker unthrottled rather than two that are paused every period.
 *
 * Pure: file reads are injected (tests use fixture directories).
 */

export type ReadFile = (path: string) => string | undefined;

/** The CPU limit in CPUs (e.g. 1.5), or undefined when the cgroup sets none or is unreadable. */
export interface CgroupPaths {
  /** Where the cgroup filesystem is mounted. */
  readonly root: string;
  /** This process's cgroup membership (cgroup v2 line: `0::/PATH`). */
  readonly self: string;
}

export const CGROUP_PATHS: CgroupPaths = { root: '/sys/fs/cgroup', self: '/proc/self/cgroup' };

export function cgroupCpuLimit(read: ReadFile, paths: CgroupPaths = CGROUP_PATHS): number | undefined {
  const limits: number[] = [];
  const root = paths.root;
  // cgroup v2: the container's own cgroup is the mount root with a private cgroup namespace (the
  // default on Kubernetes with cgroup v2); without one, /proc/self/cgroup names its path.
  const self = read(paths.self);
  const v2path = /^0::(\/.*)$/m.exec(self ?? '')?.[1];
  const v2files = [`${root}/cpu.max`];
  if (v2path !== undefined && v2path !== '/') v2files.push(`${root}${v2path}/cpu.max`);
  for (const f of v2files) {
    const m = /^(max|\d+)\s+(\d+)\s*$/.exec(read(f) ?? '');
    if (m && m[1] !== 'max' && Number(m[2]) > 0) limits.push(Number(m[1]) / Number(m[2]));
  }
  for (const dir of [`${root}/cpu`, `${root}/cpu,cpuacct`, `${root}/cpuacct,cpu`]) {
    const quota = Number((read(`${dir}/cpu.cfs_quota_us`) ?? '').trim());
    const period = Number((read(`${dir}/cpu.cfs_period_us`) ?? '').trim());
    if (Number.isFinite(quota) && quota > 0 && Number.isFinite(period) && period > 0) {
      limits.push(quota / period);
    }
  }
  return limits.length === 0 ? undefined : Math.min(...limits);
}

/** Worker count for `--workers auto`. */
export function autoWorkers(read: ReadFile, availableParallelism: number, paths?: CgroupPaths): number {
  const limit = cgroupCpuLimit(read, paths);
  const cpus = limit === undefined ? availableParallelism : Math.min(availableParallelism, Math.floor(limit));
  return Math.max(1, Math.min(cpus, MAX_WORKERS));
}

/**
 * Upper bound of `--workers`: keeps the `worker` label bounded and the hand-off rings, one per
 * ordered pair of workers, within ~64 MiB (pool.ts sizes them by N).
 */
export const MAX_WORKERS = 32;

/** `--workers` as configured → a count (`auto` reads this machine's cgroup files). */
export function resolveWorkers(workers: number | 'auto'): number {
  if (workers !== 'auto') return workers;
  const read: ReadFile = (path) => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
  };
  return autoWorkers(read, availableParallelism());
}
