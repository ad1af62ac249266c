import { defineConfig } from 'vitest/config';

// Fast-path suite (test/fastpath-ns): the nftables kernel path in network namespaces the test
// creates. Needs root and the packages test/fastpath-ns/prereqs.sh installs. One file at a time:
// namespaces and nftables tables are machine state.
export default defineConfig({
  test: {
    include: ['test/fastpath-ns/**/*.test.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    retry: 0,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
