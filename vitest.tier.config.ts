import { defineConfig } from 'vitest/config';

// Proxy-tier suite (test/tier-ns, issue 16): replicas of the real CLI behind a kube-proxy-like
// balancer in network namespaces the test creates. Needs root and the packages
// test/tier-ns/prereqs.sh installs. One file at a time: namespaces are machine state.
export default defineConfig({
  test: {
    include: ['test/tier-ns/**/*.test.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // A retry would hide a flaky hand-off; fail instead.
    retry: 0,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
