import http from 'node:http';
import type { Registry } from 'prom-client';

/**
 * Admin HTTP: `/healthz` (the process is alive and its event loop turns), `/readyz` (200 once the
 * listening socket is bound and the first discovery sync is done, 503 while draining; an API
 * server blip does not flip it: the last good snapshot still routes), `/metrics` (Prometheus).
 */
export interface AdminState {
  ready(): boolean;
  draining(): boolean;
}

export function startAdminServer(
  host: string,
  port: number,
  registry: Registry,
  state: AdminState,
): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const draining = state.draining();
      const ok = !draining && state.ready();
      res
        .writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' })
        .end(ok ? 'ready\n' : draining ? 'draining\n' : 'not ready\n');
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a !== null ? a.port : port });
    });
  });
}
