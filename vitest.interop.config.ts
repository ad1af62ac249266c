import { defineConfig } from 'vitest/config';

// Interop suite (test/interop): real WebRTC stacks in network namespaces. Needs root and the
// packages test/interop/prereqs.sh installs. One file at a time: the namespaces, ports and
// browsers are shared machine state.
export default defineConfig({
  test: {
    include: ['test/interop/**/*.test.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // A retry would hide a flaky interop path; fail instead.
    retry: 0,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
