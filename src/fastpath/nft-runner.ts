import { spawn } from 'node:child_process';

/**
 * Runs the `nft` binary: one process per transaction (`nft -f -`, the script on stdin) or per
 * listing (`nft -j …`). A transaction is atomic in the kernel: all of it applies or none does.
 * Measured here: a spawn costs ~4 ms, a transaction of 100 sessions ~10 ms (docs/fast-path.md,
 * "Batching"), so a long-lived `nft -i` would save little and add a protocol to parse.
 */
export interface Nft {
  /** Applies a script as one transaction; rejects with nft's own message on failure. */
  apply(script: string): Promise<void>;
  /** Runs `nft -j ARGS…` and resolves with its stdout. */
  listJson(args: readonly string[]): Promise<string>;
}

export class NftCommand implements Nft {
  readonly #bin: string;
  readonly #timeoutMs: number;

  constructor(bin = 'nft', timeoutMs = 10_000) {
    this.#bin = bin;
    this.#timeoutMs = timeoutMs;
  }

  apply(script: string): Promise<void> {
    return this.#run(['-f', '-'], script).then(() => undefined);
  }

  listJson(args: readonly string[]): Promise<string> {
    return this.#run(['-j', ...args], '');
  }

  #run(args: string[], stdin: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.#bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const timer = setTimeout(() => child.kill('SIGKILL'), this.#timeoutMs);
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      child.stdin.on('error', () => {}); // nft exited early: its exit code tells.
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
        else {
          const msg = Buffer.concat(err).toString('utf8').trim() || `exit ${code ?? signal}`;
          reject(new Error(`nft ${args.join(' ')}: ${msg}`));
        }
      });
      child.stdin.end(stdin);
    });
  }
}
