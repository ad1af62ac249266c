import { defineConfig } from 'vitest/config';

/**
 * The suites that need a program besides Node.js and npm (see vitest.config.ts), one at a time:
 * `vitest run -c vitest.external.config.ts test/deploy/render.test.ts` and so on, through the
 * npm scripts test:deploy, test:monitoring, test:runtime-guard. A missing program fails the suite with a
 * message that says what to install; nothing is skipped.
 */
export default defineConfig({
  test: {
    include: [
      'test/deploy/render.test.ts',
      'test/monitoring/prometheus.test.ts',
      'test/runtime/**/*.test.ts',
    ],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    retry: 0,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
