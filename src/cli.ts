#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { helpText, parseConfig } from './config.ts';
import { ExitStatus, IngressError } from './defs/errors.ts';
import { runJvbConfigCommand, runTokenCommand } from './jvb-config.ts';
import { startIngress } from './pod/pod.ts';

/**
 * `ice-ingress` entry point: sub-commands, flags, signals and exit codes.
 * Exit codes (src/defs/errors.ts): 0 clean exit (including after a drain); 2 bad input (a flag, a
 * variable, a file one names); 1 the environment (a port in use, no nft, a worker thread crashed).
 * Every start-up failure is one line on stderr that names the flag or file and the reason.
 */

function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      return JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')).version as string;
    } catch {
      // Try the next layout (source tree vs. dist/).
    }
  }
  return 'unknown';
}

/** A start-up failure: one line that names the flag or file and the reason; its exit status. */
function fail(err: IngressError): number {
  const prefix = err.exitStatus === ExitStatus.Environment ? 'cannot start: ' : '';
  process.stderr.write(`ice-ingress: ${prefix}${oneLine(err.message)}\n`);
  return err.exitStatus;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

async function main(argv: string[]): Promise<number> {
  // Sub-commands that print and exit: used by init containers and operators, no sockets.
  if (argv[0] === 'token' || argv[0] === 'jvb-config') {
    const r = argv[0] === 'token' ? runTokenCommand(argv.slice(1)) : runJvbConfigCommand(argv.slice(1));
    if (r.stdout) process.stdout.write(r.stdout);
    if (r.stderr) process.stderr.write(r.stderr);
    return r.exitCode;
  }
  // --check-config: flags and environment are parsed exactly as for start-up and the same error
  // printed, exit 2; else one OK line, exit 0. Nothing is bound, read or contacted (a file that
  // --kubeconfig names is read at start-up only). The Helm chart's tests run each rendered
  // container's command line through it.
  const checkOnly = argv.includes('--check-config');
  let parsed: ReturnType<typeof parseConfig>;
  try {
    parsed = parseConfig(checkOnly ? argv.filter((a) => a !== '--check-config') : argv, process.env);
  } catch (err) {
    if (err instanceof IngressError) return fail(err);
    throw err;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(helpText(version()));
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (checkOnly) {
    process.stdout.write('ice-ingress: configuration OK\n');
    return 0;
  }
  const config = parsed.config;
  let proxy: Awaited<ReturnType<typeof startIngress>>;
  try {
    proxy = await startIngress(config);
  } catch (err) {
    if (err instanceof IngressError) return fail(err);
    // Not one of ours: the environment refused something we did not foresee.
    process.stderr.write(`ice-ingress: cannot start: ${oneLine((err as Error).message)}\n`);
    return ExitStatus.Environment;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        // A second signal: stop now.
        proxy.log.warn({ signal }, 'second signal, closing now');
        void proxy.close().then(() => resolve(0));
        return;
      }
      stopping = true;
      proxy.log.info({ signal, drainMs: config.drainTimeoutMs }, 'shutting down');
      void proxy.drain(config.drainTimeoutMs).then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // A data-path worker died (already logged): stop the rest and exit 1 so the pod restarts.
    void proxy.failed.then(() => proxy.close().then(() => resolve(1)));
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`ice-ingress: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
