#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { ConfigError, helpText, parseConfig } from './config.ts';
import { runJvbConfigCommand, runTokenCommand } from './jvb-config.ts';
import { startIngress } from './main.ts';

/**
 * `ice-ingress` entry point: sub-commands, flags, signals and exit codes.
 * Exit codes: 0 clean exit (including after a drain), 1 failed at run time (e.g. port in use, a
 * worker thread crashed),
 * 2 bad command line or configuration.
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

async function main(argv: string[]): Promise<number> {
  // Sub-commands that print and exit: used by init containers and operators, no sockets.
  if (argv[0] === 'token' || argv[0] === 'jvb-config') {
    const r = argv[0] === 'token' ? runTokenCommand(argv.slice(1)) : runJvbConfigCommand(argv.slice(1));
    if (r.stdout) process.stdout.write(r.stdout);
    if (r.stderr) process.stderr.write(r.stderr);
    return r.exitCode;
  }
  let parsed: ReturnType<typeof parseConfig>;
  try {
    parsed = parseConfig(argv, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`ice-ingress: ${err.message}\n`);
      return 2;
    }
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
  const config = parsed.config;
  let proxy: Awaited<ReturnType<typeof startIngress>>;
  try {
    proxy = await startIngress(config);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ICE_INGRESS_DISCOVERY_CONFIG') {
      process.stderr.write(`ice-ingress: invalid configuration: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`ice-ingress: cannot start: ${e.message}\n`);
    return 1;
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
