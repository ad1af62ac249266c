import { describe, expect, it } from 'vitest';
import { SourceAddresses } from '../../src/fastpath/source-address.ts';

// Real UDP sockets: connect() on a datagram socket only asks the kernel for a route; nothing is sent.
describe('SourceAddresses', () => {
  it("gives the kernel's source for a connected socket, once per backend", async () => {
    const s = new SourceAddresses('0.0.0.0');
    expect(s.get('127.0.0.1')).toBeUndefined();
    expect(await s.resolve('127.0.0.1')).toBe('127.0.0.1');
    expect(s.get('127.0.0.1')).toBe('127.0.0.1');
  });

  it('a specific --upstream-bind is the source for every backend', () => {
    expect(new SourceAddresses('10.1.2.3').get('127.0.0.1')).toBe('10.1.2.3');
  });

  it('a failed lookup rejects, reads as null until the retry time, then may be asked again', async () => {
    let now = 1000;
    const s = new SourceAddresses('0.0.0.0', () => now);
    // An IPv6 backend from an IPv4 socket: connect fails (dgram hands the error to the callback).
    await expect(s.resolve('fd00::11')).rejects.toThrow();
    expect(s.get('fd00::11')).toBeNull();
    now += SourceAddresses.RETRY_MS - 1;
    expect(s.get('fd00::11')).toBeNull();
    now += 1;
    expect(s.get('fd00::11')).toBeUndefined();
  });
});
