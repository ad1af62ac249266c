#!/usr/bin/env node
import { unsupportedRuntime } from './runtime.ts';

/**
 * The `ice-ingress` executable (package.json `bin`, the Docker ENTRYPOINT). It checks the Node.js
 * version first and loads the CLI (src/cli.ts) only on a runtime it can run on: a static import
 * would be evaluated before this check, and on Node 20 the Kubernetes client's undici dies while
 * loading. Exit code 1, as for any start failure.
 */
const problem = unsupportedRuntime(process.versions.node);
if (problem !== undefined) {
  process.stderr.write(`ice-ingress: ${problem}\n`);
  process.exitCode = 1;
} else {
  await import('./cli.ts');
}
