// The eBPF path's start-up check names everything that is missing, in one line.
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Libbpf } from '../../src/fastpath/ebpf/libbpf.ts';
import {
  checkEbpf,
  defaultObjectPath,
  type EbpfProbes,
  EbpfUnavailable,
} from '../../src/fastpath/ebpf/preflight.ts';

/** CapEff with the given capability bits set. */
const status = (...bits: number[]): string =>
  `Name:\tnode\nCapEff:\t${bits
    .reduce((a, b) => a | (1n << BigInt(b)), 0n)
    .toString(16)
    .padStart(16, '0')}\n`;

function probes(o: { caps: number[]; object?: boolean; libbpf?: boolean }): EbpfProbes {
  return {
    status: async () => status(...o.caps),
    exists: () => o.object ?? true,
    libbpf: () => {
      if (o.libbpf === false)
        throw new Error('Failed to load shared library: libbpf.so.1: cannot open shared object file');
      return {} as Libbpf;
    },
  };
}

describe('eBPF preflight', () => {
  it('nothing missing: CAP_BPF + CAP_NET_ADMIN, the object, libbpf (or CAP_SYS_ADMIN for CAP_BPF)', async () => {
    expect(await checkEbpf(probes({ caps: [39, 12] }), '/x.o')).toEqual([]);
    expect(await checkEbpf(probes({ caps: [21, 12] }), '/x.o')).toEqual([]);
  });

  it('everything missing: one line naming each', async () => {
    const problems = await checkEbpf(
      probes({ caps: [], object: false, libbpf: false }),
      '/app/build/bpf/ice_ingress.bpf.o',
    );
    expect(problems).toEqual([
      'no CAP_BPF (grant the BPF capability)',
      'no CAP_NET_ADMIN (grant the NET_ADMIN capability)',
      'no BPF object at /app/build/bpf/ice_ingress.bpf.o (build it: npm run build:bpf, with clang)',
      'no libbpf (libbpf.so.1, Debian: libbpf1): Failed to load shared library: libbpf.so.1: cannot open shared object file',
    ]);
    const err = new EbpfUnavailable(problems);
    expect(err.message.split('\n')).toHaveLength(1);
    expect(err.message).toMatch(/^--fast-path ebpf is not possible here: no CAP_BPF .*; no libbpf/);
    expect(err.code).toBe('ICE_INGRESS_FAST_PATH');
    expect(err.exitStatus).toBe(1);
  });

  it('NET_ADMIN alone is not enough, nor BPF alone', async () => {
    expect(await checkEbpf(probes({ caps: [12] }), '/x.o')).toEqual([
      'no CAP_BPF (grant the BPF capability)',
    ]);
    expect(await checkEbpf(probes({ caps: [39] }), '/x.o')).toEqual([
      'no CAP_NET_ADMIN (grant the NET_ADMIN capability)',
    ]);
  });

  it('the object is looked for where npm run build:bpf writes it, at the package root', () => {
    expect(defaultObjectPath()).toBe(resolve(import.meta.dirname, '../../build/bpf/ice_ingress.bpf.o'));
  });
});
