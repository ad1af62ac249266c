import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { EnvironmentError } from '../defs/errors.ts';

/**
 * What `--fast-path nftables` needs from the process and its network namespace, checked before
 * anything is created, so start-up can say everything that is missing at once (exit 1).
 */

/** CAP_NET_ADMIN is bit 12 of the capability sets (linux/capability.h). */
const CAP_NET_ADMIN = 12n;

/** What is missing for --fast-path nftables, every item in one line (exit 1: the environment). */
export class FastPathUnavailable extends EnvironmentError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('ICE_INGRESS_FAST_PATH', `--fast-path nftables is not possible here: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

export interface PreflightProbes {
  /** Contents of /proc/self/status. */
  status(): Promise<string>;
  /** Resolves with `nft --version`'s output; rejects (ENOENT) if there is no such binary. */
  nftVersion(): Promise<string>;
  /** Runs `nft list tables`: rejects with nft's message when it may not talk to the kernel. */
  nftList(): Promise<string>;
}

export const systemProbes = (nft = 'nft'): PreflightProbes => ({
  status: () => readFile('/proc/self/status', 'utf8'),
  nftVersion: () => run(nft, ['--version']),
  nftList: () => run(nft, ['list', 'tables']),
});

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: 5000 }, (err, stdout, stderr) =>
      err ? reject(Object.assign(err, { message: stderr.trim() || err.message })) : resolve(stdout),
    ),
  );
}

/**
 * Lists what is missing; empty when the fast path can start. The capability is judged by what
 * counts: whether `nft` may change the ruleset (NET_ADMIN may come with root, with the process's
 * capabilities, or with file capabilities on the nft binary); only without an `nft` to ask does
 * the process's own CapEff decide.
 */
export async function checkFastPath(p: PreflightProbes): Promise<string[]> {
  const problems: string[] = [];
  let nft = true;
  try {
    await p.nftVersion();
  } catch (err) {
    nft = false;
    const e = err as NodeJS.ErrnoException;
    problems.push(
      e.code === 'ENOENT'
        ? 'no `nft` binary on PATH (Debian/Ubuntu: apt-get install nftables)'
        : `\`nft --version\` failed: ${e.message}`,
    );
  }
  const noCap = 'no CAP_NET_ADMIN: run as root in the pod, or grant the NET_ADMIN capability';
  if (nft) {
    try {
      await p.nftList();
    } catch (err) {
      problems.push(`${noCap} (\`nft list tables\`: ${(err as Error).message})`);
    }
  } else {
    const status = await p.status().catch(() => '');
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    if (m === null || ((BigInt(`0x${m[1]}`) >> CAP_NET_ADMIN) & 1n) === 0n) problems.push(noCap);
  }
  return problems;
}
