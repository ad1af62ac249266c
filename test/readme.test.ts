import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { envName, OPTIONS } from '../src/config.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from '../src/defs/reasons.ts';

/** The README is the user's reference: it must list every flag and every label value the code has. */
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

describe('README', () => {
  it('starts with exactly the two set-up commands: demo, then tests', () => {
    const block = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const commands = block.split('\n').filter((l) => l.trim() !== '');
    expect(commands).toHaveLength(2);
    expect(commands[0]).toMatch(/^npm ci && npm run demo\b/);
    expect(commands[1]).toMatch(/^npm test\b/);
    expect(readme.indexOf('```sh')).toBeLessThan(200);
  });

  it('documents every flag with its environment variable and default', () => {
    for (const o of OPTIONS) {
      const row = readme.split('\n').find((l) => l.startsWith(`| \`--${o.flag} `));
      expect(row, o.flag).toBeDefined();
      expect(row).toContain(envName(o.flag));
      if (o.def !== '') expect(row).toContain(`\`${o.def}\``);
    }
  });

  it('names every drop reason, routing outcome and close reason', () => {
    for (const label of [...DROP_REASON_LABELS, ...ROUTE_LABELS, ...CLOSE_REASONS]) {
      expect(readme, label).toContain(`\`${label}\``);
    }
  });
});
