// Fails loudly (never skips) when the fast-path suite cannot run here: root, and the Debian
// packages test/fastpath-ns/prereqs.sh installs.
import { execFileSync } from 'node:child_process';

const COMMANDS: [cmd: string, pkg: string][] = [
  ['nft', 'nftables'],
  ['ip', 'iproute2'],
  ['ethtool', 'ethtool'],
  ['sysctl', 'procps'],
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
  if (problems.length) {
    throw new Error(
      `fast-path suite prerequisites not met:\n  - ${problems.join('\n  - ')}\nrun: sudo sh test/fastpath-ns/prereqs.sh`,
    );
  }
}
