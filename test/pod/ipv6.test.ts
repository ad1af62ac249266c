import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { ROUTE_LABELS } from '../../src/defs/reasons.ts';
import { createLogger } from '../../src/log.ts';
import { type ProxyHandle, startProxy } from '../../src/pod/pod.ts';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';

/** The same data path over IPv6 loopback: listening socket, upstream sockets and backends on ::1. */

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('IPv6', () => {
  it('routes clients on ::1 to IPv6 backends and echoes media', async () => {
    const servers = await Promise.all([
      FakeMediaServer.start({ name: 'jvb-0', host: '::1' }),
      FakeMediaServer.start({ name: 'jvb-1', host: '::1' }),
    ]);
    for (const s of servers) cleanups.push(() => s.close());
    const parsed = parseConfig(
      [
        '--listen',
        '[::1]:0',
        '--admin',
        'off',
        '--upstream-ports',
        '0',
        '--backends',
        servers.map((s) => `${s.name}=[::1]:${s.port}`).join(','),
      ],
      {},
    );
    if (parsed.kind !== 'run') throw new Error('unexpected');
    const proxy: ProxyHandle = await startProxy(parsed.config, {
      log: createLogger('silent'),
      processMetrics: false,
    });
    cleanups.push(() => proxy.close());
    const target = { address: '::1', port: proxy.listen.port };
    for (const [i, server] of servers.entries()) {
      const c = await FakeIceClient.open({ host: '::1' });
      cleanups.push(() => c.close());
      const r = await c.check(target, server.addSession());
      expect(r.mappedAddress.family).toBe('IPv6');
      await c.sendMedia(target, Buffer.from([0x80, 0x60, i]));
      const m = await c.nextMedia(1000);
      expect(m.from).toEqual(target);
      expect(server.stats.mediaEchoed).toBe(1);
    }
    expect(proxy.datapath.counters.routes[ROUTE_LABELS.indexOf('probe_won')]).toBe(2);
  });
});
