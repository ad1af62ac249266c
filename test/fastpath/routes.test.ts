import { endianness, type NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ingressDevices, NextHops, nextHopIn, parseRoutes } from '../../src/fastpath/routes.ts';

/**
 * /proc/net/route as a little-endian machine prints it: the header, then one line per route of the
 * main table, each address the hex of its network-order u32 read as a host integer, padded with
 * spaces to 127 characters.
 */
const HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';
const pad = (line: string): string => line.padEnd(127, ' ');
const proc = (lines: string[]): string => `${[HEADER, ...lines].map(pad).join('\n')}\n`;

const MAIN = proc([
  // default via 192.0.2.1 dev eth0
  'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
  // 192.0.2.0/24 dev eth0 (on-link)
  'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  // 10.77.0.0/16 dev eth1 metric 100, and the same prefix via 10.88.0.1 dev eth2 metric 50
  'eth1\t00004D0A\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0',
  'eth2\t00004D0A\t0100580A\t0003\t0\t0\t50\t0000FFFF\t0\t0\t0',
  // 10.88.0.0/16 dev eth2 (on-link)
  'eth2\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
  // 10.77.9.9/32 via 192.0.2.254 dev eth0 (UP|GATEWAY|HOST)
  'eth0\t09094D0A\tFE0200C0\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0',
  // Malformed lines for 203.0.113.0/24 on eth3: truncated, flags not hex, no usable name.
  'eth3\t007100CB\t00000000\t0001\t0\t0\t0',
  'eth3\t007100CB\t00000000\tzz\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  'eth3:x!\t007100CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  '',
]);

describe('parseRoutes / nextHopIn', () => {
  const routes = parseRoutes(MAIN, true);

  it('takes the default route for anything without a more specific one', () => {
    expect(nextHopIn(routes, '8.8.8.8')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
    expect(nextHopIn(routes, '198.18.0.2')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
  });

  it('hands an on-link address to itself', () => {
    expect(nextHopIn(routes, '192.0.2.77')).toEqual({ via: '192.0.2.77', dev: 'eth0' });
    expect(nextHopIn(routes, '10.88.0.5')).toEqual({ via: '10.88.0.5', dev: 'eth2' });
  });

  it('prefers the longest prefix: a /32 via a gateway over the /16 and the default', () => {
    expect(nextHopIn(routes, '10.77.9.9')).toEqual({ via: '192.0.2.254', dev: 'eth0' });
    expect(nextHopIn(routes, '10.77.9.10')).not.toEqual({ via: '192.0.2.254', dev: 'eth0' });
  });

  it('between equal prefixes the lowest metric wins, whatever the order of the lines', () => {
    expect(nextHopIn(routes, '10.77.3.4')).toEqual({ via: '10.88.0.1', dev: 'eth2' });
    const lines = MAIN.split('\n');
    const swapped = [...lines];
    swapped[3] = lines[4]!;
    swapped[4] = lines[3]!;
    expect(swapped.join('\n')).not.toBe(MAIN);
    expect(nextHopIn(parseRoutes(swapped.join('\n'), true), '10.77.3.4')).toEqual({
      via: '10.88.0.1',
      dev: 'eth2',
    });
    // Without the cheaper one, the other.
    const only100 = lines.filter((_, i) => i !== 4).join('\n');
    expect(nextHopIn(parseRoutes(only100, true), '10.77.3.4')).toEqual({ via: '10.77.3.4', dev: 'eth1' });
  });

  it('skips malformed lines and the header', () => {
    expect(nextHopIn(routes, '203.0.113.5')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
    expect(routes.map((r) => r.dev)).toEqual(['eth0', 'eth0', 'eth1', 'eth2', 'eth2', 'eth0']);
    expect(parseRoutes(HEADER, true)).toEqual([]);
    expect(parseRoutes('', true)).toEqual([]);
  });

  it('uses no reject route and no route that is not up', () => {
    const text = proc([
      // unreachable 10.99.0.0/16 as the kernel prints it (no device), and with one
      '*\t0000630A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0',
      'eth0\t0000640A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0',
      // 10.101.0.0/16 dev eth0 without RTF_UP
      'eth0\t0000650A\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0',
      // 10.102.0.0/16 dev eth0: usable
      'eth0\t0000660A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
    ]);
    const r = parseRoutes(text, true);
    expect(nextHopIn(r, '10.99.1.1')).toBeUndefined();
    expect(nextHopIn(r, '10.100.1.1')).toBeUndefined();
    expect(nextHopIn(r, '10.101.1.1')).toBeUndefined();
    expect(nextHopIn(r, '10.102.1.1')).toEqual({ via: '10.102.1.1', dev: 'eth0' });
  });

  it('a more specific reject route hides a broader one, as in the kernel', () => {
    const text = proc([
      // default via 192.0.2.1 dev eth0, and unreachable 10.99.0.0/16 (device `*`)
      'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
      '*\t0000630A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0',
    ]);
    const r = parseRoutes(text, true);
    expect(nextHopIn(r, '10.99.1.1')).toBeUndefined();
    expect(nextHopIn(r, '10.98.1.1')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
  });

  it('a line whose addresses are not 8 hex digits is skipped, not read as a default route', () => {
    const r = parseRoutes(proc(['eth0\tnothex!!\t00000000\t0001\t0\t0\t0\tzzzzzzzz\t0\t0\t0']), true);
    expect(r).toEqual([]);
    expect(nextHopIn(r, '10.1.1.1')).toBeUndefined();
  });

  it('answers nothing without a matching route or for what is not an IPv4 address', () => {
    const noDefault = parseRoutes(proc(['eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0']), true);
    expect(nextHopIn(noDefault, '192.0.3.1')).toBeUndefined();
    expect(nextHopIn(noDefault, '192.0.2.1')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
    for (const a of ['2001:db8::1', '192.0.2', '192.0.2.1.1', '192.0.2.256', '192.0.2.x', ''])
      expect(nextHopIn(routes, a)).toBeUndefined();
  });

  it('reads big-endian text when told the machine is big-endian', () => {
    const be = proc([
      'eth0\t00000000\tC0000201\t0003\t0\t0\t0\t00000000\t0\t0\t0',
      'eth1\t0A4D0000\t00000000\t0001\t0\t0\t0\tFFFF0000\t0\t0\t0',
    ]);
    const r = parseRoutes(be, false);
    expect(nextHopIn(r, '8.8.8.8')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
    expect(nextHopIn(r, '10.77.3.4')).toEqual({ via: '10.77.3.4', dev: 'eth1' });
    // The same text read the other way round means other routes.
    expect(nextHopIn(parseRoutes(be, true), '10.77.3.4')).toEqual({ via: '1.2.0.192', dev: 'eth0' });
  });
});

/** An address as this machine's /proc/net/route prints it. */
function hostHex(ip: string): string {
  const b = ip.split('.').map(Number);
  const order = endianness() === 'LE' ? [...b].reverse() : b;
  return order.map((x) => x.toString(16).padStart(2, '0').toUpperCase()).join('');
}
const route = (dev: string, dest: string, gw: string, flags: string, mask: string): string =>
  `${dev}\t${hostHex(dest)}\t${hostHex(gw)}\t${flags}\t0\t0\t0\t${hostHex(mask)}\t0\t0\t0`;

describe('NextHops', () => {
  it('answers from the routes read at the last refresh', async () => {
    let text = proc([
      route('eth0', '0.0.0.0', '192.0.2.1', '0003', '0.0.0.0'),
      route('eth1', '10.77.0.0', '0.0.0.0', '0001', '255.255.0.0'),
    ]);
    let reads = 0;
    const hops = new NextHops(async () => {
      reads++;
      return text;
    });
    expect(hops.get('10.77.2.11')).toBeUndefined(); // nothing read yet
    await hops.refresh();
    expect(reads).toBe(1);
    expect(hops.get('10.77.2.11')).toEqual({ via: '10.77.2.11', dev: 'eth1' });
    expect(hops.get('198.18.0.2')).toEqual({ via: '192.0.2.1', dev: 'eth0' });

    // The backends move behind a router; seen only once re-read.
    text = proc([
      route('eth0', '0.0.0.0', '192.0.2.1', '0003', '0.0.0.0'),
      route('eth2', '10.77.0.0', '10.88.0.1', '0003', '255.255.0.0'),
    ]);
    expect(hops.get('10.77.2.11')).toEqual({ via: '10.77.2.11', dev: 'eth1' });
    await hops.refresh();
    expect(reads).toBe(2);
    expect(hops.get('10.77.2.11')).toEqual({ via: '10.88.0.1', dev: 'eth2' });
  });

  it('a failed read rejects and keeps the routes it had', async () => {
    let fail = false;
    const hops = new NextHops(async () => {
      if (fail) throw new Error('EACCES');
      return proc([route('eth0', '0.0.0.0', '192.0.2.1', '0003', '0.0.0.0')]);
    });
    await hops.refresh();
    fail = true;
    await expect(hops.refresh()).rejects.toThrow('EACCES');
    expect(hops.get('8.8.8.8')).toEqual({ via: '192.0.2.1', dev: 'eth0' });
  });
});

const v4 = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: '255.255.255.0',
  family: 'IPv4',
  mac: '02:00:00:00:00:01',
  internal,
  cidr: `${address}/24`,
});
const v6 = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: 'ffff:ffff:ffff:ffff::',
  family: 'IPv6',
  mac: '02:00:00:00:00:01',
  internal,
  cidr: `${address}/64`,
  scopeid: 0,
});

describe('ingressDevices', () => {
  it('lists the interfaces with an external IPv4 address, sorted, with names nft can take', () => {
    expect(
      ingressDevices({
        lo: [v4('127.0.0.1', true), v6('::1', true)],
        eth1: [v4('10.77.2.1')],
        eth0: [v6('fe80::1'), v4('198.18.0.1')],
        wg6: [v6('fd00::1')],
        'br-1.100': [v4('192.0.2.10')],
        'eth0:1': [v4('198.18.0.9')],
        'bad"dev': [v4('192.0.2.11')],
        'bad dev': [v4('192.0.2.12')],
        abcdefghijklmnop: [v4('192.0.2.13')], // 16 characters: longer than IFNAMSIZ allows
        gone: undefined,
        none: [],
      }),
    ).toEqual(['br-1.100', 'eth0', 'eth1']);
    expect(ingressDevices({ lo: [v4('127.0.0.1', true)] })).toEqual([]);
    expect(ingressDevices({ abcdefghijklmno: [v4('192.0.2.13')] })).toEqual(['abcdefghijklmno']);
  });
});
