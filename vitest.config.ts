import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real WebRTC stacks and the kernel fast path in network namespaces need root and apt packages:
    // `npm run test:interop`, `npm run test:fastpath`.
    exclude: ['test/interop/**', 'test/fastpath-ns/**', 'node_modules/**'],
    // Network tests bind real sockets; keep the 2-core CI machine calm.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
