// Fails loudly (never skips) when the tier suite cannot run here: root, the Debian packages
// test/tier-ns/prereqs.sh installs, and for replicas with the eBPF fast path the object
// `npm run build:bpf` makes.
import { existsSync } from 'node:fs';
import { defaultObjectPath } from '../../src/fastpath/ebpf/preflight.ts';
import { requirePrereqs } from '../interop/prereqs.ts';

export function checkPrereqs(opts: { ebpf: boolean }): void {
  requirePrereqs(
    'tier suite',
    [
      ['nft', 'nftables'],
      ['ip', 'iproute2'],
      ['conntrack', 'conntrack'],
      ['sysctl', 'procps'],
      ['cc', 'gcc'],
      ['/usr/bin/chromium', 'chromium'],
    ],
    'test/tier-ns/prereqs.sh',
  );
  if (opts.ebpf && !existsSync(defaultObjectPath()))
    throw new Error(`tier suite: no eBPF object at ${defaultObjectPath()}: run npm run build:bpf`);
}
