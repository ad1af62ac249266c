// A test peer inside a network namespace: the fake media server (a JVB's single port) or the fake
// ICE client, driven over JSON lines (test/interop/jsonl.ts) by fastpath.test.ts.
//
// argv: server --name N --host IP --port P     | client --host IP
// server requests: {cmd:'addSession'} -> {ufrag,password}; {cmd:'received'} -> {from:{ip:port:n}};
//                  {cmd:'stats'}; {cmd:'removeSession', ufrag}
// client requests: {cmd:'check', target, server} -> {port}; {cmd:'rebind'} -> {port};
//                  {cmd:'burst', target, count, intervalMs, size, waitMs} -> {sent, echoed, from}
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';
import type { Endpoint } from '../fixtures/stun-bytes.ts';
import { argValue, emit, type Json, log, serve } from '../interop/jsonl.ts';

const role = process.argv[2];
const host = argValue('--host') ?? '0.0.0.0';

if (role === 'server') {
  const server = await FakeMediaServer.start({
    name: argValue('--name') ?? 'pod',
    host,
    port: Number(argValue('--port') ?? 10000),
  });
  serve((req: Json) => {
    switch (req['cmd']) {
      case 'addSession':
        return { ...server.addSession() };
      case 'removeSession':
        return { removed: server.removeSession(String(req['ufrag'])) };
      case 'received':
        return { from: Object.fromEntries(server.received) };
      case 'stats':
        return { ...server.stats };
      default:
        throw new Error(`unknown cmd ${String(req['cmd'])}`);
    }
  });
  emit({ event: 'ready', port: server.port });
} else if (role === 'client') {
  const client = await FakeIceClient.open({ host, mediaQueueLimit: 100_000 });
  serve(async (req: Json) => {
    switch (req['cmd']) {
      case 'check': {
        const r = await client.check(
          req['target'] as Endpoint,
          req['server'] as { ufrag: string; password: string },
          {
            timeoutMs: Number(req['timeoutMs'] ?? 3000),
          },
        );
        return { port: client.port, rttMs: r.rtt };
      }
      case 'rebind':
        await client.rebind();
        return { port: client.port };
      case 'burst':
        return burst(client, req);
      default:
        throw new Error(`unknown cmd ${String(req['cmd'])}`);
    }
  });
  emit({ event: 'ready', port: client.port });
} else {
  log('usage: peer-agent.ts server|client ...');
  process.exit(2);
}

/**
 * Sends `count` RTP-looking datagrams (first byte 0x80, a 4-byte sequence number) every
 * `intervalMs`, and counts the distinct sequence numbers echoed back within `waitMs` after the
 * last send, and where the echoes came from.
 */
async function burst(client: FakeIceClient, req: Json): Promise<Json> {
  const target = req['target'] as Endpoint;
  const count = Number(req['count']);
  const interval = Number(req['intervalMs'] ?? 0);
  const size = Math.max(8, Number(req['size'] ?? 200));
  const waitMs = Number(req['waitMs'] ?? 1000);
  const seen = new Set<number>();
  const from = new Set<string>();
  let done = false;
  const consume = (async () => {
    while (!done || client.pendingMedia > 0) {
      try {
        const m = await client.nextMedia(100);
        if (m.data.length >= 6 && m.data[0] === 0x80) seen.add(m.data.readUInt32BE(2));
        from.add(`${m.from.address}:${m.from.port}`);
      } catch {
        // MEDIA_TIMEOUT: look at `done` again.
      }
      if (seen.size >= count) break;
    }
  })();
  for (let i = 0; i < count; i++) {
    const b = Buffer.alloc(size, 0x55);
    b[0] = 0x80;
    b[1] = 0x60;
    b.writeUInt32BE(i, 2);
    await client.sendMedia(target, b);
    if (interval > 0) await new Promise((r) => setTimeout(r, interval));
    else if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  const end = Date.now() + waitMs;
  while (seen.size < count && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  done = true;
  await consume;
  return { sent: count, echoed: seen.size, from: [...from], port: client.port };
}
