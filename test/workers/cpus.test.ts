import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { autoWorkers, cgroupCpuLimit } from '../../src/workers/cpus.ts';
import { splitPortRange } from '../../src/workers/port-split.ts';

// Fixture directories under fixtures/cgroup, one per machine shape: each holds the cgroup files
// (v2 cpu.max, v1 cpu.cfs_*) and `self` standing for /proc/self/cgroup.
const FIX = join(import.meta.dirname, 'fixtures', 'cgroup');
function machine(name: string) {
  const root = join(FIX, name);
  const read = (p: string): string | undefined => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return undefined;
    }
  };
  return { read, paths: { root, self: join(root, 'self') } };
}

describe('--workers auto', () => {
  it('follows a cgroup v2 quota, not the host core count', () => {
    const m = machine('v2-limit');
    expect(cgroupCpuLimit(m.read, m.paths)).toBe(4);
    expect(autoWorkers(m.read, 16, m.paths)).toBe(4);
    expect(autoWorkers(m.read, 2, m.paths)).toBe(2); // capped by the CPUs the affinity mask allows
  });

  it('rounds a fractional limit down (a throttled cgroup pauses every thread)', () => {
    const m = machine('v2-fraction');
    expect(cgroupCpuLimit(m.read, m.paths)).toBe(1.5);
    expect(autoWorkers(m.read, 8, m.paths)).toBe(1);
  });

  it('uses the available parallelism when v2 says max', () => {
    const m = machine('v2-unlimited');
    expect(cgroupCpuLimit(m.read, m.paths)).toBeUndefined();
    expect(autoWorkers(m.read, 6, m.paths)).toBe(6);
  });

  it('reads the own cgroup named in /proc/self/cgroup when the namespace is not private', () => {
    const m = machine('v2-nested');
    expect(cgroupCpuLimit(m.read, m.paths)).toBe(2);
    expect(autoWorkers(m.read, 8, m.paths)).toBe(2);
  });

  it('reads cgroup v1 cfs quota and period; -1 means no limit', () => {
    const v1 = machine('v1-limit');
    expect(cgroupCpuLimit(v1.read, v1.paths)).toBe(3);
    expect(autoWorkers(v1.read, 8, v1.paths)).toBe(3);
    const none = machine('v1-unlimited');
    expect(cgroupCpuLimit(none.read, none.paths)).toBeUndefined();
    expect(autoWorkers(none.read, 3, none.paths)).toBe(3);
  });

  it('falls back to the available parallelism without any cgroup files, at least 1', () => {
    const m = machine('none');
    expect(cgroupCpuLimit(m.read, m.paths)).toBeUndefined();
    expect(autoWorkers(m.read, 5, m.paths)).toBe(5);
    expect(autoWorkers(m.read, 0, m.paths)).toBe(1);
  });
});

describe('splitPortRange', () => {
  it('gives each worker a contiguous slice, without overlap or gaps', () => {
    expect(splitPortRange(16384, 32767, 2)).toEqual([
      [16384, 24575],
      [24576, 32767],
    ]);
    const s = splitPortRange(100, 109, 3);
    expect(s).toEqual([
      [100, 103],
      [104, 106],
      [107, 109],
    ]);
  });

  it('refuses a range with fewer ports than workers', () => {
    expect(() => splitPortRange(100, 101, 3)).toThrow(/fewer ports than 3 workers/);
  });
});
