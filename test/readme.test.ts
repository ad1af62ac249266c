import { existsSync, readdirSync, readFileSync } from 'node:fs';
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

  it('lists every folder and file of src/ in the layout section, and nothing that is gone', () => {
    const src = new URL('../src/', import.meta.url);
    const section = readme.slice(readme.indexOf('Layout ('), readme.indexOf('`test/` mirrors it'));
    const rows = section.split('\n').filter((l) => l.startsWith('| `'));
    for (const entry of readdirSync(src, { withFileTypes: true })) {
      if (entry.isDirectory()) {
        const row = rows.find((l) => l.startsWith(`| \`${entry.name}/\``));
        expect(row, entry.name).toBeDefined();
        for (const f of readdirSync(new URL(`${entry.name}/`, src)))
          expect(row, `${entry.name}/${f}`).toContain(`\`${f}\``);
      } else {
        expect(
          rows.some((l) => l.split('|')[1]!.includes(`\`${entry.name}\``)),
          entry.name,
        ).toBe(true);
      }
    }
    const named = [...section.matchAll(/`([a-z0-9-]+(?:\/|\.ts))`/g)].map((m) => m[1]!);
    const listed = (name: string): boolean =>
      name.endsWith('/')
        ? existsSync(new URL(name, src))
        : existsSync(new URL(name, src)) ||
          readdirSync(src, { withFileTypes: true }).some(
            (d) => d.isDirectory() && existsSync(new URL(`${d.name}/${name}`, src)),
          );
    for (const name of named) if (name !== 'src/') expect(listed(name), name).toBe(true);
  });

  it('names every drop reason, routing outcome and close reason', () => {
    for (const label of [...DROP_REASON_LABELS, ...ROUTE_LABELS, ...CLOSE_REASONS]) {
      expect(readme, label).toContain(`\`${label}\``);
    }
  });
});
