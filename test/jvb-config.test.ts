import { describe, expect, it } from 'vitest';
import { TOKEN_LENGTH, tokenFor } from '../src/backends/token.ts';
import {
  parsePublicAddress,
  renderJvbConfig,
  runJvbConfigCommand,
  runTokenCommand,
} from '../src/jvb-config.ts';

// The parser ships no type declarations; a computed specifier keeps it `any` without a .d.ts.
const HOCON_PARSER = '@pushcorn/hocon-parser';
const parseHocon = async (text: string): Promise<Record<string, unknown>> => {
  const { default: parser } = await import(HOCON_PARSER);
  return parser.parse({ text, strict: true });
};

describe('tokenFor', () => {
  it('is 6 characters of lower-case base32, deterministic', () => {
    expect(TOKEN_LENGTH).toBe(6);
    for (const name of ['jvb-0', 'jvb-7c9f5d8b4-x2k9p', 'a', '10.0.0.10', 'fd00::1']) {
      expect(tokenFor(name)).toMatch(/^[a-z2-7]{6}$/);
      expect(tokenFor(name)).toBe(tokenFor(name));
    }
    // Pinned: a change here changes every deployed JVB's prefix (init containers and proxies of
    // different versions would disagree, and routing falls back to probing).
    // SHA-256("jvb-0") starts f191d964; its top 30 bits in 5-bit groups are 30 6 8 29 18 25,
    // which RFC 4648 base32 (lower case) writes "6gi5sz".
    expect(tokenFor('jvb-0')).toBe('6gi5sz');
    expect(tokenFor('jvb-1')).toBe('s7lpw6');
  });

  it('gives distinct tokens to jvb-0 … jvb-999', () => {
    const tokens = new Map<string, string>();
    const collisions: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const t = tokenFor(`jvb-${i}`);
      const other = tokens.get(t);
      if (other !== undefined) collisions.push(`${other}/jvb-${i}`);
      tokens.set(t, `jvb-${i}`);
    }
    expect(collisions).toEqual([]);
  });
});

describe('renderJvbConfig', () => {
  it('renders HOCON that parses to the ice4j and JVB keys', async () => {
    const cfg = renderJvbConfig({
      podName: 'jvb-0',
      publicAddress: '203.0.113.10',
      localAddress: '10.0.0.10',
    });
    expect(cfg.token).toBe(tokenFor('jvb-0'));
    const conf = await parseHocon(cfg.hocon);
    expect(conf).toEqual({
      videobridge: {
        ice: { udp: { port: 10000 }, 'ufrag-prefix': cfg.token, 'advertise-private-candidates': false },
      },
      ice4j: {
        harvest: {
          mapping: {
            stun: { addresses: [] },
            aws: { enabled: false },
            'static-mappings': [
              {
                'local-address': '10.0.0.10',
                'public-address': '203.0.113.10',
                'local-port': 10000,
                'public-port': 10000,
                name: 'ice-ingress',
              },
            ],
          },
        },
      },
    });
    expect(cfg.env).toEqual({
      JVB_PORT: '10000',
      JVB_ADVERTISE_IPS: '203.0.113.10#10000',
      JVB_DISABLE_STUN: 'true',
      DISABLE_AWS_HARVESTER: 'true',
      JVB_ADVERTISE_PRIVATE_CANDIDATES: 'false',
    });
  });

  it('keeps private candidates on when the proxy itself has a private address', async () => {
    for (const ip of ['10.1.2.3', '172.16.0.1', '172.31.255.1', '192.168.1.1', 'fd00::1', 'fec0::1']) {
      const cfg = renderJvbConfig({ podName: 'jvb-0', publicAddress: ip, localAddress: '10.0.0.10' });
      const conf = (await parseHocon(cfg.hocon)) as { videobridge: { ice: Record<string, unknown> } };
      expect(conf.videobridge.ice['advertise-private-candidates'], ip).toBe(true);
      expect(cfg.env.JVB_ADVERTISE_PRIVATE_CANDIDATES).toBe('true');
    }
    for (const ip of ['172.32.0.1', '100.64.0.1', '8.8.8.8', '2001:db8::1', 'fe80::1']) {
      expect(
        renderJvbConfig({ podName: 'jvb-0', publicAddress: ip }).env.JVB_ADVERTISE_PRIVATE_CANDIDATES,
        ip,
      ).toBe('false');
    }
  });

  it("overrides docker-jitsi-meet's jvb.conf when included at its end", async () => {
    // The shape docker-jitsi-meet's template renders with JVB_ADVERTISE_IPS=198.51.100.1 and STUN on.
    const base = `
videobridge { ice { udp { port = 10000 } } }
ice4j { harvest { mapping {
  aws { enabled = true }
  stun { addresses = [ "meet-jit-si-turnrelay.jitsi.net:443" ] }
  static-mappings = [ { local-address = "10.0.0.10", public-address = "198.51.100.1", name = "ip-0" } ]
} } }
`;
    const cfg = renderJvbConfig({
      podName: 'jvb-1',
      publicAddress: '2001:db8::1',
      publicPort: 443,
      localAddress: 'fd00::10',
      localPort: 10001,
    });
    const conf = (await parseHocon(`${base}\n${cfg.hocon}`)) as {
      videobridge: { ice: { udp: { port: number }; 'ufrag-prefix': string } };
      ice4j: { harvest: { mapping: Record<string, unknown> } };
    };
    expect(conf.videobridge.ice.udp.port).toBe(10001);
    expect(conf.videobridge.ice['ufrag-prefix']).toBe(tokenFor('jvb-1'));
    expect(conf.ice4j.harvest.mapping).toEqual({
      aws: { enabled: false },
      stun: { addresses: [] },
      'static-mappings': [
        {
          'local-address': 'fd00::10',
          'public-address': '2001:db8::1',
          'local-port': 10001,
          'public-port': 443,
          name: 'ice-ingress',
        },
      ],
    });
    expect(cfg.env.JVB_ADVERTISE_IPS).toBe('2001:db8::1#443');
  });

  it('leaves the mapping to the environment without a local address', async () => {
    const cfg = renderJvbConfig({ podName: 'jvb-0', publicAddress: '203.0.113.10' });
    const conf = (await parseHocon(cfg.hocon)) as {
      ice4j: { harvest: { mapping: Record<string, unknown> } };
    };
    expect(conf.ice4j.harvest.mapping['static-mappings']).toBeUndefined();
    expect(cfg.env.JVB_ADVERTISE_IPS).toBe('203.0.113.10#10000');
  });

  it('rejects bad input, naming every field', () => {
    expect(() => renderJvbConfig({ podName: 'jvb 0', publicAddress: 'example.org', localPort: 0 })).toThrow(
      /podName.*publicAddress.*localPort/,
    );
  });
});

describe('parsePublicAddress', () => {
  it.each([
    ['203.0.113.10', { address: '203.0.113.10', port: undefined }],
    ['203.0.113.10:443', { address: '203.0.113.10', port: 443 }],
    ['2001:db8::1', { address: '2001:db8::1', port: undefined }],
    ['[2001:db8::1]:10000', { address: '2001:db8::1', port: 10000 }],
  ])('%s', (text, want) => {
    expect(parsePublicAddress(text)).toEqual(want);
  });
  it.each(['lb.example.org', '1.2.3.4:0', '1.2.3.4:99999', '[1.2.3.4]:5', ''])('rejects %s', (text) => {
    expect(typeof parsePublicAddress(text)).toBe('string');
  });
});

describe('runJvbConfigCommand', () => {
  const noEnv = { env: {}, writeFile: () => {} };

  it('prints HOCON by default, env and both on request', async () => {
    const argv = [
      '--pod-name',
      'jvb-0',
      '--public-address',
      '203.0.113.10:10000',
      '--local-address=10.0.0.10',
    ];
    const hocon = runJvbConfigCommand(argv, noEnv);
    expect(hocon.exitCode).toBe(0);
    expect(hocon.stdout).toContain(`videobridge.ice.ufrag-prefix = "${tokenFor('jvb-0')}"`);
    expect(hocon.stdout).toContain('ice4j.harvest.mapping.static-mappings = [');
    await expect(parseHocon(hocon.stdout)).resolves.toBeTypeOf('object');

    const env = runJvbConfigCommand([...argv, '--format', 'env'], noEnv);
    expect(env.stdout.split('\n').filter((l) => !l.startsWith('#') && l !== '')).toEqual([
      'JVB_PORT=10000',
      'JVB_ADVERTISE_IPS=203.0.113.10#10000',
      'JVB_DISABLE_STUN=true',
      'DISABLE_AWS_HARVESTER=true',
      'JVB_ADVERTISE_PRIVATE_CANDIDATES=false',
    ]);
    const both = runJvbConfigCommand([...argv, '--format', 'both'], noEnv);
    expect(both.stdout).toContain('videobridge.ice.udp.port = 10000');
    expect(both.stdout).toContain('JVB_ADVERTISE_IPS=203.0.113.10#10000');
  });

  it('takes POD_NAME, PUBLIC_ADDRESS and POD_IP from the environment and writes --output', () => {
    const written: [string, string][] = [];
    const r = runJvbConfigCommand(['--output', '/config/custom-jvb.conf'], {
      env: { POD_NAME: 'jvb-5', PUBLIC_ADDRESS: '[2001:db8::1]:443', POD_IP: 'fd00::5' },
      writeFile: (p, t) => written.push([p, t]),
    });
    expect(r).toMatchObject({ exitCode: 0, stderr: '' });
    expect(r.stdout).toBe(`wrote /config/custom-jvb.conf (ufrag prefix ${tokenFor('jvb-5')} for jvb-5)\n`);
    expect(written[0]?.[0]).toBe('/config/custom-jvb.conf');
    expect(written[0]?.[1]).toContain('public-address = "2001:db8::1"');
    expect(written[0]?.[1]).toContain('public-port = 443');
  });

  it('exits 2 naming each bad flag', () => {
    const r = runJvbConfigCommand(
      ['--public-address', 'lb.example.org', '--format', 'yaml', '--bogus', 'x'],
      noEnv,
    );
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([
      'ice-ingress jvb-config: --bogus: unknown flag',
      'ice-ingress jvb-config: unexpected argument "x"',
      'ice-ingress jvb-config: --pod-name: required (or set POD_NAME)',
      'ice-ingress jvb-config: --public-address: expected IP or IP:PORT ([IPv6]:PORT), got "lb.example.org"',
      'ice-ingress jvb-config: --format: expected hocon, env or both, got "yaml"',
      'ice-ingress jvb-config: --local-address: required for --format hocon/both (or set POD_IP): ice4j maps a local address',
    ]);
    expect(
      runJvbConfigCommand(['--pod-name', 'jvb 0', '--public-address', '1.2.3.4', '--format', 'env'], noEnv),
    ).toMatchObject({
      exitCode: 2,
      stderr: expect.stringContaining('--pod-name: "jvb 0" is not a pod name'),
    });
    expect(runJvbConfigCommand(['--pod-name'], noEnv).stderr).toContain('--pod-name: needs a value');
    expect(runJvbConfigCommand(['--help'], noEnv)).toMatchObject({ exitCode: 0 });
  });
});

describe('runTokenCommand', () => {
  it('prints the token of one name', () => {
    expect(runTokenCommand(['jvb-0'])).toEqual({ stdout: `${tokenFor('jvb-0')}\n`, stderr: '', exitCode: 0 });
  });
  it.each([[[]], [['a', 'b']], [['--name']]])('exits 2 on %j', (argv) => {
    const r = runTokenCommand(argv);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('NAME');
  });
});
