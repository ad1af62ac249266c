import type { V1EndpointSlice } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { endpointSlicesToBackends, endpointState } from '../../src/discovery/k8s.ts';
import { slice } from './fake-apiserver.ts';

describe('endpointState (EndpointConditions → BackendState)', () => {
  it.each([
    [{ ready: true, serving: true, terminating: false }, 'ready'],
    [{}, 'ready'], // nil ready/serving mean true, nil terminating means false
    [undefined, 'ready'],
    [{ ready: false, serving: false, terminating: false }, 'unready'],
    [{ ready: false, serving: true, terminating: true }, 'terminating'],
    [{ ready: false, terminating: true }, 'unready'], // serving nil defers to ready
    [{ ready: false, serving: false, terminating: true }, 'unready'],
    // publishNotReadyAddresses reports a terminating pod as ready: it must still drain.
    [{ ready: true, serving: true, terminating: true }, 'terminating'],
  ] as const)('%j → %s', (conditions, state) => {
    expect(endpointState(conditions)).toBe(state);
  });
});

describe('endpointSlicesToBackends', () => {
  it('merges slices, names backends by pod, sorts by name', () => {
    const out = endpointSlicesToBackends([
      slice('b', 'jvb', [{ pod: 'jvb-2', ip: '10.0.0.12' }]),
      slice('a', 'jvb', [
        { pod: 'jvb-1', ip: '10.0.0.11', ready: false, serving: true, terminating: true },
        { pod: 'jvb-0', ip: '10.0.0.10', ready: false },
      ]),
    ]);
    expect(out).toEqual([
      { name: 'jvb-0', address: '10.0.0.10', port: 10000, state: 'unready' },
      { name: 'jvb-1', address: '10.0.0.11', port: 10000, state: 'terminating' },
      { name: 'jvb-2', address: '10.0.0.12', port: 10000, state: 'ready' },
    ]);
  });

  it('picks the port by name, else the first UDP port; TCP and null ports never', () => {
    const s: V1EndpointSlice = {
      ...slice('a', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]),
      ports: [
        { name: 'colibri', port: 8080, protocol: 'TCP' },
        { name: 'media', port: 10000, protocol: 'UDP' },
        { name: 'alt', port: 10001, protocol: 'UDP' },
        { name: 'any', protocol: 'UDP' },
      ],
    };
    expect(endpointSlicesToBackends([s])[0]?.port).toBe(10000);
    expect(endpointSlicesToBackends([s], 'alt')[0]?.port).toBe(10001);
    expect(endpointSlicesToBackends([s], 'colibri')).toEqual([]);
    expect(endpointSlicesToBackends([s], 'any')).toEqual([]);
    expect(endpointSlicesToBackends([s], 'nope')).toEqual([]);
    // protocol omitted means TCP in the API
    expect(endpointSlicesToBackends([{ ...s, ports: [{ port: 10000 }] }])).toEqual([]);
    // an unnamed single port has name "" and is found without --port-name
    expect(endpointSlicesToBackends([{ ...s, ports: [{ port: 9, protocol: 'UDP' }] }])[0]?.port).toBe(9);
  });

  it('falls back to the address as name; skips FQDN slices, non-IP and empty addresses', () => {
    const noRef = slice('a', 'jvb', [{ pod: 'x', ip: '10.0.0.10' }]);
    delete noRef.endpoints![0]!.targetRef;
    const fqdn = { ...slice('f', 'jvb', [{ pod: 'jvb-f', ip: 'jvb.example.org' }]), addressType: 'FQDN' };
    const bad = slice('g', 'jvb', [{ pod: 'jvb-g', ip: 'not-an-ip' }]);
    const empty = slice('h', 'jvb', [{ pod: 'jvb-h', ip: '10.0.0.99' }]);
    empty.endpoints![0]!.addresses = [];
    expect(endpointSlicesToBackends([noRef, fqdn, bad, empty])).toEqual([
      { name: '10.0.0.10', address: '10.0.0.10', port: 10000, state: 'ready' },
    ]);
  });

  it('dedupes a pod seen twice: best state, then IPv4, whatever the order', () => {
    const v6 = slice('a-v6', 'jvb', [{ pod: 'jvb-0', ip: 'fd00::10' }], { addressType: 'IPv6' });
    const v4 = slice('b-v4', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]);
    const stale = slice('c-old', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10', ready: false }]);
    const want = [{ name: 'jvb-0', address: '10.0.0.10', port: 10000, state: 'ready' }];
    expect(endpointSlicesToBackends([v6, v4, stale])).toEqual(want);
    expect(endpointSlicesToBackends([stale, v4, v6])).toEqual(want);
    // An IPv6-only Service works too.
    expect(endpointSlicesToBackends([v6])).toEqual([
      { name: 'jvb-0', address: 'fd00::10', port: 10000, state: 'ready' },
    ]);
  });
});
