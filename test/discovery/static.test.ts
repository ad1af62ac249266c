import { describe, expect, it } from 'vitest';
import type { BackendSpec } from '../../src/defs/interfaces.ts';
import { parseBackends, StaticDiscovery } from '../../src/discovery/static.ts';

describe('parseBackends', () => {
  it('parses IPv4 and bracketed IPv6, trimming spaces', () => {
    expect(parseBackends('jvb-0=10.0.0.10:10000, jvb.1=[fd00::5]:10001')).toEqual({
      backends: [
        { name: 'jvb-0', address: '10.0.0.10', port: 10000, state: 'ready' },
        { name: 'jvb.1', address: 'fd00::5', port: 10001, state: 'ready' },
      ],
      errors: [],
    });
  });

  it('reports every problem at once', () => {
    const { errors } = parseBackends(
      'a=10.0.0.1:1,a=10.0.0.2:2,b=10.0.0.1:1,c_d=10.0.0.3:3,e=fd00::1:4,f=host.example:5,g=10.0.0.4:0,h,,i=[::1]x,j=10.0.0.5:70000',
    );
    expect(errors).toEqual([
      'backend #2 "a=10.0.0.2:2": duplicate name "a"',
      'backend #3 "b=10.0.0.1:1": same address and port as "a"',
      `backend #4 "c_d=10.0.0.3:3": invalid name "c_d" (letters, digits, '-' and '.' only)`,
      'backend #5 "e=fd00::1:4": IPv6 address must be in brackets: "[fd00::1]:4"',
      'backend #6 "f=host.example:5": "host.example" is not an IP address (host names are not resolved)',
      'backend #7 "g=10.0.0.4:0": invalid port "0" (1-65535)',
      'backend #8 "h": expected NAME=HOST:PORT',
      'backend #9: empty entry',
      'backend #10 "i=[::1]x": expected [IPV6]:PORT, got "[::1]x"',
      'backend #11 "j=10.0.0.5:70000": invalid port "70000" (1-65535)',
    ]);
  });

  it('rejects an empty list', () => {
    expect(parseBackends(' ').errors).toEqual(['no backends given (expected NAME=HOST:PORT[,...])']);
  });
});

describe('StaticDiscovery', () => {
  it('emits its one snapshot after start(), not during it, and nothing after stop()', async () => {
    const { backends } = parseBackends('jvb-0=127.0.0.1:10000');
    const seen: (readonly BackendSpec[])[] = [];
    const d = new StaticDiscovery(backends);
    d.start((s) => seen.push(s));
    expect(seen).toEqual([]);
    await Promise.resolve();
    expect(seen).toEqual([backends]);

    const stopped: unknown[] = [];
    const d2 = new StaticDiscovery(backends);
    d2.start((s) => stopped.push(s));
    await d2.stop();
    await Promise.resolve();
    expect(stopped).toEqual([]);
  });
});
