import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cruise, type IViolation } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The layer rules of .dependency-cruiser.cjs (docs/architecture.md, "Layers"), which `npm run lint`
 * runs: the real src/ has no violation, and a copy of it with one import that points up a layer,
 * or closes a cycle, fails with the rule that names it.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const temps: string[] = [];
afterAll(() => {
  for (const t of temps) rmSync(t, { recursive: true, force: true });
});

async function violations(baseDir: string): Promise<IViolation[]> {
  const options = await extractDepcruiseOptions(path.join(root, '.dependency-cruiser.cjs'));
  const result = await cruise(['src'], { ...options, baseDir, validate: true });
  if (typeof result.output === 'string') throw new Error('expected a JSON result');
  return result.output.summary.violations;
}

/** A copy of src/ in a temporary directory, with `edit` applied to one file. */
function srcWith(file: string, edit: (text: string) => string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'ice-layers-'));
  temps.push(dir);
  cpSync(path.join(root, 'src'), path.join(dir, 'src'), { recursive: true });
  const p = path.join(dir, 'src', file);
  writeFileSync(p, edit(readFileSync(p, 'utf8')));
  return dir;
}

describe('layers', () => {
  it('the real src/ keeps them: no upward import, no cycle', async () => {
    expect(await violations(root)).toEqual([]);
  });

  it('an upward import (session/ naming a datapath/ type) fails the lint', async () => {
    const dir = srcWith(
      'session/registry.ts',
      (t) => `import type { Datapath } from '../datapath/datapath.ts';\nexport type Up = Datapath;\n${t}`,
    );
    const v = await violations(dir);
    expect(v.map((x) => [x.rule.name, x.from, x.to])).toContainEqual([
      'layer-2-up',
      'src/session/registry.ts',
      'src/datapath/datapath.ts',
    ]);
  });

  it('an import that closes a cycle (session/events.ts <-> session/registry.ts) fails the lint', async () => {
    const dir = srcWith(
      'session/events.ts',
      (t) =>
        `import type { SessionRegistry } from './registry.ts';\nexport type Cycle = SessionRegistry;\n${t}`,
    );
    const v = await violations(dir);
    expect(v.filter((x) => x.rule.name === 'no-circular').map((x) => x.from)).toContain(
      'src/session/events.ts',
    );
  });

  it('siblings import each other only where the rule file allows (backends/ -> admission/ fails)', async () => {
    const dir = srcWith(
      'backends/token.ts',
      (t) =>
        `import type { Admission } from '../admission/admission.ts';\nexport type Side = Admission;\n${t}`,
    );
    const v = await violations(dir);
    expect(v.map((x) => x.rule.name)).toContain('sibling-backends-admission');
  });
});
