import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MIN_NODE_VERSION, NODE_FLAGS, unsupportedRuntime } from '../src/runtime.ts';

/** The runtime guard of the entry point; the real Node 20 run is test/runtime/runtime-guard.test.ts. */

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  engines: { node: string };
  bin: Record<string, string>;
};

describe('unsupportedRuntime', () => {
  it('accepts the minimum and anything newer', () => {
    for (const v of ['22.19.0', '22.19.1', '22.20.0', '23.0.0', '24.21.0', '25.1.0', 'v24.0.0']) {
      expect(unsupportedRuntime(v), v).toBeUndefined();
    }
  });

  it('rejects older versions in one line that names the version needed and the one found', () => {
    for (const v of ['20.20.2', '22.18.9', '22.0.0', '18.19.1', '21.99.99', 'garbage']) {
      const msg = unsupportedRuntime(v);
      expect(msg, v).toBe(`needs Node.js >= 22.19.0, this is Node.js ${v}`);
      expect(msg).not.toContain('\n');
    }
  });

  it('is the same minimum as package.json engines', () => {
    expect(pkg.engines.node).toBe(`>=${MIN_NODE_VERSION.replace(/\.0$/, '')}`);
    // undici (through @kubernetes/client-node) is why: its own engines must not be newer.
    const undici = JSON.parse(
      readFileSync(new URL('../node_modules/undici/package.json', import.meta.url), 'utf8'),
    ) as { engines: { node: string } };
    const need = /^>=\s*(\d+\.\d+\.\d+)$/.exec(undici.engines.node)?.[1];
    expect(need, undici.engines.node).toBeDefined();
    expect(unsupportedRuntime(need!), `undici needs ${need}`).toBeUndefined();
  });

  it('the bin entry loads the CLI on a supported Node', () => {
    expect(pkg.bin['ice-ingress']).toBe('dist/src/bin.js');
    const bin = fileURLToPath(new URL('../src/bin.ts', import.meta.url));
    const r = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8', timeout: 15_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(
      JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version,
    );
    expect(r.status).toBe(0);
  });
});

describe('NODE_FLAGS', () => {
  it('are the flags the image starts Node with', () => {
    const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');
    const entry = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
    expect(entry).not.toBeNull();
    const argv = JSON.parse(entry![1]!) as string[];
    expect(argv[0]).toBe('node');
    expect(argv.slice(1, -1)).toEqual(NODE_FLAGS);
    expect(argv.at(-1)).toBe('dist/src/bin.js');
  });

  it('are flags this Node accepts', () => {
    const r = spawnSync(process.execPath, [...NODE_FLAGS, '-e', ''], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
