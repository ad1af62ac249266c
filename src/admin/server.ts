import http from 'node:http';
import type { Registry } from 'prom-client';

/**
 * Admin HTTP: `/healthz` (the process is alive and its event loop turns), `/readyz` (200 once the
 * listening socket is bound and the first discovery sync is done; while draining 503, or 200 with
 * `--drain-readiness serving`; an API server blip does not flip it: the last good snapshot still
 * routes), `/metrics` (Prometheus).
 */
export interface AdminState {
  /** Bound, the first discovery sync done, the peers heard: ready unless draining. */
  started(): boolean;
  draining(): boolean;
  /** While draining: 200 (still relaying its flows, serving) instead of 503 (config.ts, DrainReadiness). */
  readonly servingWhileDraining: boolean;
}

/**
 * How long the admin server waits for a client (docs/architecture.md, "Control plane"). Its
 * clients are probes and scrapers on the pod network, which send a whole request at once; a
 * connection that sends nothing, or its headers or body a byte at a time, would otherwise hold a
 * socket and its buffers for as long as the peer likes (Node's defaults: headers 60 s, request
 * 300 s, idle sockets never).
 */
export const ADMIN_LIMITS = {
  /** No byte for this long (before, between or after requests): closed. */
  idleMs: 3000,
  /** The request's headers not complete this long after it began: 408, closed. */
  headersMs: 3000,
  /** The whole request not received this long after it began: 408, closed. */
  requestMs: 5000,
  /** How often Node checks the two above (its default is 30 s). */
  checkEveryMs: 500,
} as const;

export function startAdminServer(
  host: string,
  port: number,
  registry: Registry,
  state: AdminState,
): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(
    {
      headersTimeout: ADMIN_LIMITS.headersMs,
      requestTimeout: ADMIN_LIMITS.requestMs,
      keepAliveTimeout: ADMIN_LIMITS.idleMs,
      connectionsCheckingInterval: ADMIN_LIMITS.checkEveryMs,
    },
    (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const draining = state.draining();
        const ok = state.started() && (!draining || state.servingWhileDraining);
        res
          .writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' })
          .end(draining ? (ok ? 'draining, serving\n' : 'draining\n') : ok ? 'ready\n' : 'not ready\n');
      } else if (path === '/metrics') {
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
          (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    },
  );
  // Inactivity: with no 'timeout' listener, Node destroys the socket (an idle connection that never
  // sent a byte is not a request yet, so the two request limits do not see it).
  server.setTimeout(ADMIN_LIMITS.idleMs);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a !== null ? a.port : port });
    });
  });
}
