// Fails loudly (never skips) when the suite cannot run here: it needs root (ip netns, nft) and
// the Debian packages that test/interop/prereqs.sh installs.
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

const COMMANDS: [cmd: string, pkg: string][] = [
  ['/usr/bin/chromium', 'chromium'],
  ['/usr/bin/janus', 'janus'],
  ['nft', 'nftables'],
  ['ip', 'iproute2'],
  ['sysctl', 'procps'],
];

function onPath(cmd: string): boolean {
  if (cmd.startsWith('/')) {
    try {
      accessSync(cmd, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  }
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function checkPrereqs(): void {
  requirePrereqs('interop', COMMANDS, 'test/interop/prereqs.sh');
}

/**
 * Throws one message naming every missing prerequisite of a root-only suite (root, and each
 * command's Debian package), and the script that installs them.
 */
export function requirePrereqs(
  suite: string,
  commands: ReadonlyArray<[cmd: string, pkg: string]>,
  script: string,
): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('not root: network namespaces and nftables need root');
  const missing = commands.filter(([cmd]) => !onPath(cmd)).map(([, pkg]) => pkg);
  if (missing.length) problems.push(`missing Debian packages: ${missing.join(' ')}`);
  if (problems.length) {
    throw new Error(
      `${suite} prerequisites not met:\n  - ${problems.join('\n  - ')}\nrun: sudo sh ${script}`,
    );
  }
}

/** dpkg-query's output format; `${Version}` is dpkg's field syntax, not a template. */
const DPKG_VERSION = ['-W', '-f', '$' + '{Version}'];

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000 }).trim().split('\n')[0] ?? '';
  } catch (err) {
    return `unknown (${String(err).slice(0, 60)})`;
  }
}

/** Versions of the system stacks, for the README's "tested with" list. */
export function systemVersions(): Record<string, string> {
  return {
    chromiumPackage: firstLine('dpkg-query', [...DPKG_VERSION, 'chromium']),
    janusPackage: firstLine('dpkg-query', [...DPKG_VERSION, 'janus']),
    libnicePackage: firstLine('dpkg-query', [...DPKG_VERSION, 'libnice10']),
    nftables: firstLine('nft', ['--version']),
    iproute2: firstLine('ip', ['-V']),
    kernel: firstLine('uname', ['-r']),
    debian: firstLine('cat', ['/etc/debian_version']),
  };
}
