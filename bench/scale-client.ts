/**
 * The client side of `npm run bench:scale` (bench/scale.ts), inside the client namespace: holds
 * established sessions open (one socket each, nothing sent after the check, so each stays in the
 * proxy until its idle timeout) and, on request, opens 100 more that stream media through their
 * hand-over (handover-client.ts). JSON lines: requests on stdin, one answer per request on stdout.
 *
 *   {"cmd":"open","n":N,"rate":R}  → {"opened":K,"ms":T}   N more sessions, R per second at most
 *   {"cmd":"handover","first":I}   → handover-client's result for 100 sessions within 1 s
 *   {"cmd":"close"}                → closes every socket and exits
 *
 * argv: TARGET_IP PORT. Bounded: each check is retried 10 times 200 ms apart, then given up.
 */
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { bindingRequest, handOver } from './handover-client.ts';

const [ip = '', portText = ''] = process.argv.slice(2);
const port = Number(portText);
const held: dgram.Socket[] = [];
let next = 0;

/** One session: a socket whose Binding Request was answered with a success (false: given up). */
function open(i: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const req = bindingRequest(i);
    let done = false;
    let tries = 0;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      if (ok) held.push(sock);
      else sock.close();
      resolve(ok);
    };
    sock.on('error', () => finish(false));
    sock.on('message', (m) => {
      if (m.length >= 20 && m[0] === 0x01 && m[1] === 0x01) finish(true);
    });
    sock.bind(0, () => {
      const again = (): void => {
        if (done) return;
        if (tries++ >= 10) {
          finish(false);
          return;
        }
        sock.send(req, port, ip);
        setTimeout(again, 200);
      };
      again();
    });
  });
}

async function openMany(n: number, rate: number): Promise<{ opened: number; ms: number }> {
  const t0 = performance.now();
  const all: Promise<boolean>[] = [];
  // In ticks of 10 ms, rate/100 sessions each.
  const perTick = Math.max(1, Math.round(rate / 100));
  for (let i = 0; i < n; i += perTick) {
    for (let j = i; j < Math.min(n, i + perTick); j++) all.push(open(next++));
    await new Promise((r) => setTimeout(r, 10));
  }
  const ok = (await Promise.all(all)).filter(Boolean).length;
  return { opened: ok, ms: performance.now() - t0 };
}

const reply = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line) as { cmd: string; n?: number; rate?: number; first?: number };
  void (async () => {
    if (req.cmd === 'open') reply(await openMany(req.n ?? 0, req.rate ?? 1000));
    else if (req.cmd === 'handover') {
      const first = next;
      next += 100;
      reply(await handOver({ ip, port, sessions: 100, spreadMs: 1000, intervalMs: 5, mediaMs: 1500, first }));
    } else if (req.cmd === 'close') {
      for (const s of held) s.close();
      reply({ closed: held.length });
      process.exit(0);
    }
  })();
});
reply({ ready: true });
