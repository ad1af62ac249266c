// Fails loudly (never skips) when the fast-path suite cannot run here: root, the Debian packages
// test/fastpath-ns/prereqs.sh installs, and for the eBPF path the object npm run build:bpf makes.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { defaultObjectPath } from '../../src/fastpath/ebpf/preflight.ts';

const COMMANDS: [cmd: string, pkg: string][] = [
  ['nft', 'nftables'],
  ['ip', 'iproute2'],
  ['ethtool', 'ethtool'],
  ['sysctl', 'procps'],
  ['tc', 'iproute2'],
  ['clang', 'clang'],
  ['bpftool', 'bpftool'],
];

export function checkPrereqs(): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('not root: network namespaces and nftables need root');
  const missing = COMMANDS.filter(([cmd]) => {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  }).map(([, pkg]) => pkg);
  if (missing.length) problems.push(`missing Debian packages: ${missing.join(' ')}`);
  if (!existsSync(defaultObjectPath()))
    problems.push(`no eBPF object at ${defaultObjectPath()}: run npm run build:bpf`);
  if (problems.length) {
    throw new Error(
      `fast-path suite prerequisites not met:\n  - ${problems.join('\n  - ')}\nrun: sudo sh test/fastpath-ns/prereqs.sh && npm run build:bpf`,
    );
  }
}
