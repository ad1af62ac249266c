import { describe, expect, it } from 'vitest';
import { parsePeersFlag } from '../../src/peers/peers-flag.ts';

describe('--peers', () => {
  it('empty is off; static lists take IPv4, IPv4:PORT and [IPv6](:PORT), the port defaulting to --peer-port', () => {
    expect(parsePeersFlag('', 10001)).toEqual({ source: { kind: 'off' }, problems: [] });
    expect(parsePeersFlag('10.0.0.1, 10.0.0.2:12001,[::1]:13001,[fd00::2]', 10001)).toEqual({
      source: {
        kind: 'static',
        peers: [
          { address: '10.0.0.1', port: 10001 },
          { address: '10.0.0.2', port: 12001 },
          { address: '::1', port: 13001 },
          { address: 'fd00::2', port: 10001 },
        ],
      },
      problems: [],
    });
    // A bare IPv6 address is an address, not HOST:PORT.
    expect(parsePeersFlag('fd00::2', 7).source).toEqual({
      kind: 'static',
      peers: [{ address: 'fd00::2', port: 7 }],
    });
  });

  it('names every bad item', () => {
    const r = parsePeersFlag('10.0.0.1:0,peer-1,10.0.0.2:70000,,[10.0.0.3]:1', 10001);
    expect(r.source).toEqual({ kind: 'off' });
    expect(r.problems).toEqual([
      '"10.0.0.1:0" is not IP, IP:PORT or [IPv6]:PORT',
      '"peer-1" is not IP, IP:PORT or [IPv6]:PORT',
      '"10.0.0.2:70000" is not IP, IP:PORT or [IPv6]:PORT',
      '"" is not IP, IP:PORT or [IPv6]:PORT',
      '"[10.0.0.3]:1" is not IP, IP:PORT or [IPv6]:PORT',
    ]);
  });

  it('dns:NAME and k8s:SERVICE', () => {
    expect(parsePeersFlag('dns:ice-ingress-peers.jitsi.svc.cluster.local', 1).source).toEqual({
      kind: 'dns',
      name: 'ice-ingress-peers.jitsi.svc.cluster.local',
    });
    expect(parsePeersFlag('k8s:ice-ingress', 1).source).toEqual({ kind: 'k8s', service: 'ice-ingress' });
    expect(parsePeersFlag('k8s:Ice_Ingress', 1).problems).toEqual([
      'k8s:SERVICE needs a Service name (got "Ice_Ingress")',
    ]);
    expect(parsePeersFlag('dns:', 1).problems).toEqual(['dns:NAME needs a DNS name (got "")']);
  });
});
