import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unsupportedRuntime } from '../../src/runtime.ts';

// `npm run test:runtime-guard`: the built CLI under a real old Node.js (Debian bookworm's `nodejs` is 20,
// the Node that CI and a newcomer's machine have before `npm ci`). Not part of `npm test`: it needs
// a Node.js older than 22.19 on PATH, and fails (never skips) when there is none.

const ROOT = join(import.meta.dirname, '..', '..');

function oldNode(): { path: string; version: string } {
  const found: string[] = [];
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir === '' || dir.includes('node_modules')) continue;
    const path = join(dir, 'node');
    try {
      const version = execFileSync(path, ['-p', 'process.versions.node'], {
        encoding: 'utf8',
        timeout: 10_000,
      }).trim();
      found.push(`${path} ${version}`);
      if (unsupportedRuntime(version) !== undefined) return { path, version };
    } catch {
      // Not there, or not runnable: try the next PATH entry.
    }
  }
  throw new Error(
    `no Node.js older than 22.19 on PATH (found: ${found.join(', ') || 'none'}); install Debian's nodejs`,
  );
}

let out: string;
beforeAll(() => {
  // The build, as `npm run build` makes it, inside the repo so that node_modules resolves.
  out = mkdtempSync(join(ROOT, '.tmp-node20-'));
  execFileSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out],
    { timeout: 120_000 },
  );
}, 150_000);
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('the built CLI on an old Node.js', () => {
  it('exits 1 with one line naming the version needed, no stack trace', () => {
    const node = oldNode();
    const r = spawnSync(
      node.path,
      [join(out, 'src/bin.js'), '--discovery', 'k8s', '--service', 'jvb', '--admin', 'off'],
      {
        encoding: 'utf8',
        timeout: 15_000,
      },
    );
    expect(r.stderr).toBe(`ice-ingress: needs Node.js >= 22.19.0, this is Node.js ${node.version}\n`);
    expect(r.stdout).toBe('');
    expect(r.status).toBe(1);
  });

  it('without the guard (src/cli.js directly) the same command dies inside undici: the guard is what helps', () => {
    const node = oldNode();
    const r = spawnSync(
      node.path,
      [
        join(out, 'src/cli.js'),
        '--discovery',
        'k8s',
        '--service',
        'jvb',
        '--admin',
        'off',
        '--listen',
        '127.0.0.1:0',
      ],
      {
        encoding: 'utf8',
        timeout: 15_000,
      },
    );
    expect(r.stderr).toMatch(/undici/);
    expect(r.status).not.toBe(0);
  });

  it('the same build runs on this Node.js', () => {
    const r = spawnSync(process.execPath, [join(out, 'src/bin.js'), '--version'], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
