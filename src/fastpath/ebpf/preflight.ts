import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { EnvironmentError } from '../../defs/errors.ts';
import { type Libbpf, openLibbpf } from './libbpf.ts';

/**
 * What `--fast-path ebpf` needs, checked before anything is bound so that start-up can name
 * everything missing in one line (exit 1). What the kernel itself must offer (bpf_redirect_neigh
 * with a next hop: Linux ≥ 5.13; clsact; an array map that can be mapped: ≥ 5.5) is proven by
 * loading the program, right after: a refusal stops start-up with the kernel's reason.
 *
 * Not required, on purpose (docs/fast-path.md, "eBPF"): a BPF filesystem (nothing is pinned: the
 * process keeps its descriptors, and its threads share them, so the pod needs no hostPath mount
 * of /sys/fs/bpf, where the node's other BPF users keep theirs) and the kernel's BTF
 * (/sys/kernel/btf/vmlinux: the program reads only packet bytes and its own maps, no kernel
 * structure, so it needs no CO-RE relocation).
 */

/** linux/capability.h */
const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

/** Where `npm run build:bpf` writes the object: build/bpf/ at the package root. */
export function defaultObjectPath(): string {
  // src/fastpath/ebpf/ from source, dist/src/fastpath/ebpf/ built: the package root is 3 or 4 up.
  const up = import.meta.url.endsWith('.ts') ? '../../../' : '../../../../';
  return fileURLToPath(new URL(`${up}build/bpf/ice_ingress.bpf.o`, import.meta.url));
}

/** What is missing, in one line (exit 1), as the nftables path's FastPathUnavailable. */
export class EbpfUnavailable extends EnvironmentError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('ICE_INGRESS_FAST_PATH', `--fast-path ebpf is not possible here: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

export interface EbpfProbes {
  /** Contents of /proc/self/status. */
  status(): Promise<string>;
  exists(path: string): boolean;
  /** Binds libbpf (libbpf.ts); throws when koffi or libbpf.so.1 cannot be loaded. */
  libbpf(): Libbpf;
}

export const systemEbpfProbes = (): EbpfProbes => ({
  status: () => readFile('/proc/self/status', 'utf8'),
  exists: existsSync,
  libbpf: openLibbpf,
});

/** Everything missing (empty: go ahead), in the order an operator would fix them. */
export async function checkEbpf(p: EbpfProbes, objectPath: string): Promise<string[]> {
  const problems: string[] = [];
  const status = await p.status().catch(() => '');
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  const caps = m === null ? 0n : BigInt(`0x${m[1]}`);
  const has = (bit: bigint): boolean => ((caps >> bit) & 1n) === 1n;
  // CAP_BPF came with Linux 5.8; before it (and still), CAP_SYS_ADMIN allows the same.
  if (!has(CAP_BPF) && !has(CAP_SYS_ADMIN)) problems.push('no CAP_BPF (grant the BPF capability)');
  if (!has(CAP_NET_ADMIN)) problems.push('no CAP_NET_ADMIN (grant the NET_ADMIN capability)');
  if (!p.exists(objectPath))
    problems.push(`no BPF object at ${objectPath} (build it: npm run build:bpf, with clang)`);
  try {
    p.libbpf();
  } catch (err) {
    const first = (err as Error).message.split('\n')[0];
    problems.push(`no libbpf (libbpf.so.1, Debian: libbpf1): ${first}`);
  }
  return problems;
}
