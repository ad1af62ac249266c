import { defineConfig } from 'vitest/config';

/**
 * `npm test`: needs only Node.js and npm. Suites that need another program have their own config
 * and script, run by .ci/run:
 * - test/interop (root, Chromium, Janus, nftables): `npm run test:interop`
 * - test/deploy/render.test.ts (helm): `npm run test:deploy`
 * - test/monitoring/prometheus.test.ts (prometheus, promtool): `npm run test:monitoring`
 * - test/runtime (a Node.js older than 22.19): `npm run test:runtime-guard`
 * - test/fastpath-ns (root, nftables, network namespaces): `npm run test:fastpath-ns`
 * - test/tier-ns (root, nftables, conntrack, Chromium, network namespaces): `npm run test:tier`
 */
const EXTERNAL = [
  'test/interop/**',
  'test/fastpath-ns/**',
  'test/tier-ns/**',
  'test/deploy/render.test.ts',
  'test/monitoring/prometheus.test.ts',
  'test/runtime/**',
];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [...EXTERNAL, 'node_modules/**'],
    // Network tests bind real sockets; keep the 2-core CI machine calm.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
