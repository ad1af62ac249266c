import { describe, expect, it } from 'vitest';
import { ConfigError, envName, helpText, OPTIONS, parseConfig, parseDuration } from '../src/config.ts';

const run = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  const r = parseConfig(argv, env);
  if (r.kind !== 'run') throw new Error(`expected run, got ${r.kind}`);
  return r.config;
};

const problems = (argv: string[], env: NodeJS.ProcessEnv = {}): readonly string[] => {
  try {
    parseConfig(argv, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
};

describe('parseConfig', () => {
  it('has working defaults given backends', () => {
    const c = run(['--backends', 'jvb-0=10.0.0.5:10000']);
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 10000 });
    expect(c.admin).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(c.idleTimeoutMs).toBe(60_000);
    expect(c.portQuarantineMs).toBe(60_000);
    expect(c.upstreamPorts).toEqual([16384, 32767]);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads every flag from its environment variable, and the flag wins', () => {
    const env = {
      ICE_INGRESS_BACKENDS: 'a=127.0.0.1:1',
      ICE_INGRESS_IDLE_TIMEOUT: '2m',
      ICE_INGRESS_LISTEN: '127.0.0.1:5',
    };
    const c = run(['--listen', '127.0.0.1:6'], env);
    expect(c.idleTimeoutMs).toBe(120_000);
    expect(c.listen.port).toBe(6);
    expect(envName('max-pending-per-source')).toBe('ICE_INGRESS_MAX_PENDING_PER_SOURCE');
  });

  it('accepts --flag=value and IPv6 listen addresses', () => {
    const c = run([
      '--listen=[::1]:7000',
      '--backends=a=[::1]:8000',
      '--admin',
      'off',
      '--upstream-ports',
      '0',
    ]);
    expect(c.listen).toEqual({ host: '::1', port: 7000 });
    expect(c.admin).toBeUndefined();
    expect(c.upstreamPorts).toBeUndefined();
  });

  it('reports every bad value at once, each naming its flag or variable', () => {
    const p = problems(
      ['--listen', 'nowhere', '--idle-timeout', '60', '--probe-rounds', '0', '--frobnicate', '1'],
      {
        ICE_INGRESS_BACKENDS: 'x=1.2.3.4',
        ICE_INGRESS_LOG_LEVEL: 'loud',
      },
    );
    expect(p.some((m) => m.startsWith('--listen:'))).toBe(true);
    expect(p.some((m) => m.startsWith('--idle-timeout:'))).toBe(true);
    expect(p.some((m) => m.startsWith('--probe-rounds:'))).toBe(true);
    expect(p.some((m) => m.startsWith('--frobnicate:'))).toBe(true);
    expect(p.some((m) => m.startsWith('ICE_INGRESS_BACKENDS:'))).toBe(true);
    expect(p.some((m) => m.startsWith('ICE_INGRESS_LOG_LEVEL:'))).toBe(true);
    expect(p).toHaveLength(6);
  });

  it('requires the inputs of the chosen discovery', () => {
    expect(problems([])).toEqual(['--backends: required with --discovery static']);
    expect(problems(['--discovery', 'k8s'])).toEqual(['--service: required with --discovery k8s']);
    expect(problems(['--discovery', 'dns'])).toEqual(['--dns-name: required with --discovery dns']);
  });

  it('refuses an upstream range that contains the listening port', () => {
    const p = problems(['--backends', 'a=127.0.0.1:1', '--upstream-ports', '9000-11000']);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^--upstream-ports: .*10000/);
  });

  it('takes --fast-path off|nftables|ebpf; both kernel paths need a specific IPv4 listening address', () => {
    const b = ['--backends', 'a=10.0.0.5:10000'];
    expect(run(b).fastPath).toBe('off');
    expect(run([...b, '--listen', '10.0.0.1:10000'], { ICE_INGRESS_FAST_PATH: 'nftables' }).fastPath).toBe(
      'nftables',
    );
    expect(run([...b, '--listen', '10.0.0.1:10000', '--fast-path', 'ebpf']).fastPath).toBe('ebpf');
    expect(problems([...b, '--fast-path', 'xdp'])).toEqual([
      '--fast-path: expected off, nftables or ebpf (got "xdp")',
    ]);
    for (const kind of ['nftables', 'ebpf']) {
      expect(problems([...b, '--fast-path', kind])[0]).toMatch(
        new RegExp(`^--fast-path ${kind}: .*not 0\\.0\\.0\\.0`),
      );
      expect(problems([...b, '--fast-path', kind, '--listen', '[::1]:10000'])[0]).toMatch(/IPv4 only/);
    }
  });

  it('takes --drain-readiness unready|serving (default unready)', () => {
    const b = ['--backends', 'a=10.0.0.5:10000'];
    expect(run(b).drainReadiness).toBe('unready');
    expect(run([...b, '--drain-readiness', 'serving']).drainReadiness).toBe('serving');
    expect(problems([...b, '--drain-readiness', 'ready'])).toEqual([
      '--drain-readiness: expected unready or serving (got "ready")',
    ]);
  });

  it('answers --help and --version', () => {
    expect(parseConfig(['--help'], {}).kind).toBe('help');
    expect(parseConfig(['--version'], {}).kind).toBe('version');
    const help = helpText('9.9.9');
    for (const o of OPTIONS) {
      expect(help).toContain(`--${o.flag}`);
      expect(help).toContain(envName(o.flag));
    }
  });
});

describe('parseDuration', () => {
  it('needs a unit', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('3s')).toBe(3000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('60')).toBeUndefined();
    expect(parseDuration('-1s')).toBeUndefined();
    expect(parseDuration('1d')).toBeUndefined();
  });
});

describe('--fast-path with --workers', () => {
  it('takes any number of workers with the nftables fast path (the main thread owns the table)', () => {
    const flags = (workers: string): string[] => [
      '--backends',
      'a=10.0.0.1:10000',
      '--listen',
      '10.0.0.9:10000',
      '--fast-path',
      'nftables',
      '--workers',
      workers,
    ];
    for (const w of ['1', '2', '32']) {
      const r = parseConfig(flags(w), {});
      expect(r.kind === 'run' && r.config.workers).toBe(Number(w));
      expect(r.kind === 'run' && r.config.fastPath).toBe('nftables');
    }
    const auto = parseConfig(flags('auto'), {});
    expect(auto.kind === 'run' && auto.config.workers).toBe('auto');
    // The other limits of --workers still hold with the fast path.
    expect(() => parseConfig([...flags('33')], {})).toThrow(/--workers/);
    expect(() => parseConfig([...flags('4'), '--upstream-ports', '20000-20002'], {})).toThrow(
      /--upstream-ports: needs at least one port per worker \(4\)/,
    );
  });
});
