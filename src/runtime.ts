/**
 * The oldest Node.js ice-ingress runs on. @kubernetes/client-node 2 depends on undici 8, whose
 * package.json declares `engines.node >=22.19.0`; on older Node (20 is still the default on Debian
 * bookworm) loading it dies with a stack trace from inside undici. Kept equal to `engines` in
 * package.json (test/runtime.test.ts checks both).
 *
 * This module imports nothing, so the entry point (src/bin.ts) can run it before anything that
 * would crash on an old runtime is loaded.
 */
export const MIN_NODE_VERSION = '22.19.0';

/** A one-line reason the running Node.js is too old, or undefined when it will do. */
export function unsupportedRuntime(nodeVersion: string): string | undefined {
  const have = parse(nodeVersion);
  const need = parse(MIN_NODE_VERSION)!;
  if (have !== undefined) {
    for (let i = 0; i < 3; i++) {
      if (have[i]! > need[i]!) return undefined;
      if (have[i]! < need[i]!) break;
      if (i === 2) return undefined;
    }
  }
  return `needs Node.js >= ${MIN_NODE_VERSION}, this is Node.js ${nodeVersion}`;
}

function parse(v: string): [number, number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/**
 * V8 flags the proxy runs with (the image's ENTRYPOINT; the benches start the CLI, and the plain
 * relay they compare it with, the same way).
 *
 * A proxy under a flood of first packets allocates fast (a Buffer and an rinfo per received
 * datagram, a session per admitted flow), and by default V8 answers that by growing the young
 * generation to 64 MiB and the old generation's next-GC limit, and gives the pages back late.
 * Measured here with the flooder (30,000 forged first checks/s for 8 s, 250 sources): RSS grew
 * ~95 MB with V8's defaults, ~57 MB with `--max-semi-space-size=8` alone, ~3 MB with both flags.
 * - `--max-semi-space-size=8` (MiB): caps the young generation.
 * - `--optimize-for-size`: V8's memory-over-speed mode (smaller heap growth steps, earlier GCs).
 * - `--single-threaded-gc`: V8 does its collection work on the isolate's own thread, in steps
 *   between events, instead of on its helper threads (concurrent marking, parallel scavenge and
 *   sweeping). `--workers auto` gives the data path every CPU the pod may use, so a helper thread
 *   finds no idle core: it takes the CPU from a data-path thread, in the middle of whatever that
 *   thread is doing. Measured in `bench:scale` (docs/fast-path.md, "Hand-over and the collector's
 *   threads"): with 10,000–19,000 sessions a marking cycle keeps V8's four helpers runnable for
 *   100–200 ms, and a scheduler trace of the proxy's core showed them holding 65–70 % of it in
 *   the windows where a hand-over took 8–123 ms instead of 0.2 ms; with this flag the hand-over
 *   p99 was 0.8–2.1 ms and the routing p99 5–7 ms (27–260 ms without).
 * The hot path allocates nothing of its own, so relaying is not slowed (bench/README.md).
 */
export const NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=8',
  '--optimize-for-size',
  '--single-threaded-gc',
];
