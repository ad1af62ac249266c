import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_LIMITS, startAdminServer } from '../../src/admin/server.ts';

/**
 * The admin server with real sockets on loopback: a connection that sends nothing, its headers a
 * byte at a time, or its body a byte at a time is closed by the server within a few seconds,
 * while a normal request is still answered.
 */

let admin: Awaited<ReturnType<typeof startAdminServer>>;
beforeAll(async () => {
  admin = await startAdminServer('127.0.0.1', 0, new Registry(), {
    started: () => true,
    draining: () => false,
    servingWhileDraining: false,
  });
});
afterAll(async () => {
  admin.server.closeAllConnections();
  await new Promise<void>((r) => admin.server.close(() => r()));
});

/**
 * Connects, writes `first`, then one byte of `trickle` every 400 ms (ending with the connection).
 * Resolves with ms from connect to the server closing the connection, and what it answered.
 */
function slowClient(first: string, trickle: string): Promise<{ ms: number; reply: string }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(admin.port, '127.0.0.1');
    let reply = '';
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => {
      sock.destroy();
      reject(new Error('the server kept the connection open for 15 s'));
    }, 15_000);
    sock.on('data', (d) => {
      reply += d.toString();
    });
    sock.on('error', () => {}); // A reset is a close too.
    sock.once('connect', () => {
      const t0 = performance.now();
      if (first !== '') sock.write(first);
      let i = 0;
      timer = setInterval(() => {
        if (i < trickle.length && !sock.destroyed) sock.write(trickle[i++]!);
      }, 400);
      sock.once('close', () => {
        clearInterval(timer);
        clearTimeout(guard);
        resolve({ ms: performance.now() - t0, reply });
      });
    });
  });
}

describe('admin server: slow and idle clients', () => {
  it('closes an idle connection, slow headers and a slow body within a few seconds', async () => {
    const endless = 'x'.repeat(100);
    const [idle, headers, body, ok] = await Promise.all([
      slowClient('', ''),
      slowClient('GET /metrics HTTP/1.1\r\nHost: a\r\nX-Slow: ', endless),
      slowClient('GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n', endless),
      fetch(`http://127.0.0.1:${admin.port}/healthz`).then((r) => r.status),
    ]);
    expect(ok).toBe(200);
    const slack = ADMIN_LIMITS.checkEveryMs + 1500;
    expect(idle.ms).toBeLessThan(ADMIN_LIMITS.idleMs + slack);
    expect(idle.ms).toBeGreaterThanOrEqual(ADMIN_LIMITS.idleMs - 100);
    expect(headers.ms).toBeLessThan(ADMIN_LIMITS.headersMs + slack);
    expect(headers.reply).not.toContain('200 OK');
    expect(body.ms).toBeLessThan(ADMIN_LIMITS.requestMs + slack);
  });
});
