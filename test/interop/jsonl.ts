// Child side of the runner <-> agent protocol: one JSON object per line on stdin (requests with
// an `id`) and stdout (replies with the same `id`, and events with an `event` field).
import { createInterface } from 'node:readline';

export type Json = Record<string, unknown>;

export function emit(obj: Json): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

export function log(...parts: unknown[]): void {
  process.stderr.write(`${new Date().toISOString()} ${parts.map(String).join(' ')}\n`);
}

/**
 * Serves requests until stdin closes (the runner is gone), then exits: an agent never outlives
 * its test even if the process-group kill is missed.
 */
export function serve(handler: (req: Json) => Promise<Json> | Json, onClose?: () => void): void {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let req: Json;
    try {
      req = JSON.parse(line) as Json;
    } catch {
      log('bad request line', line);
      return;
    }
    Promise.resolve()
      .then(() => handler(req))
      .then(
        (res) => emit({ ...res, id: req['id'] }),
        (err: unknown) => emit({ id: req['id'], error: err instanceof Error ? err.message : String(err) }),
      );
  });
  rl.on('close', () => {
    onClose?.();
    process.exit(0);
  });
}

/** Resolves when `check()` is true, polling every `stepMs`; rejects after `timeoutMs`. */
export async function until(
  check: () => boolean,
  timeoutMs: number,
  what: string,
  stepMs = 20,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timeout after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
