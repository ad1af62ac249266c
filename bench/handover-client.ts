/**
 * The client side of the hand-over runs of `npm run bench:fastpath` (bench/fastpath.ts) and
 * `npm run bench:scale` (bench/scale-client.ts imports {@link handOver}), inside the client
 * namespace: SESSIONS sessions arrive evenly over SPREAD_MS; each sends a Binding Request
 * (USERNAME "hNNNNNNN:cli", a zero MESSAGE-INTEGRITY: the bench echo answers any request with a
 * success, like bench/udpbench.c's `load`), and once answered sends one RTP-looking datagram every
 * INTERVAL_MS for MEDIA_MS, through the moment the proxy hands the session to the kernel. Prints
 * one JSON line: datagrams sent, echoed back (distinct sequence numbers), lost.
 *
 * argv: TARGET_IP PORT SESSIONS SPREAD_MS INTERVAL_MS MEDIA_MS. Bounded in time and count.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';

/** A Binding Request with USERNAME `hNNNNNNN:cli` (the bench echo answers any request). */
export function bindingRequest(i: number): Buffer {
  const user = Buffer.from(`h${String(i).padStart(7, '0')}:cli`);
  const upad = (user.length + 3) & ~3;
  const b = Buffer.alloc(20 + 4 + upad + 4 + 20);
  b.writeUInt16BE(0x0001, 0);
  b.writeUInt16BE(b.length - 20, 2);
  b.writeUInt32BE(0x2112a442, 4);
  randomBytes(12).copy(b, 8);
  b.writeUInt16BE(0x0006, 20);
  b.writeUInt16BE(user.length, 22);
  user.copy(b, 24);
  b.writeUInt16BE(0x0008, 24 + upad);
  b.writeUInt16BE(20, 26 + upad);
  return b;
}

interface Result {
  sent: number;
  echoed: number;
  established: boolean;
}

export interface HandOverOptions {
  readonly ip: string;
  readonly port: number;
  readonly sessions: number;
  readonly spreadMs: number;
  readonly intervalMs: number;
  readonly mediaMs: number;
  /** The first session's number in its USERNAME (distinct ufrags across runs in one proxy). */
  readonly first?: number;
}

export interface HandOverResult {
  sessions: number;
  established: number;
  sent: number;
  echoed: number;
  lost: number;
}

function session(o: HandOverOptions, i: number): Promise<Result> {
  const { ip, port } = o;
  const INTERVAL = o.intervalMs;
  const MEDIA = o.mediaMs;
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const seen = new Set<number>();
    let sent = 0;
    let established = false;
    let timer: NodeJS.Timeout | undefined;
    const req = bindingRequest(i);
    const finish = (): void => {
      clearInterval(timer);
      setTimeout(() => {
        sock.close();
        resolve({ sent, echoed: seen.size, established });
      }, 300);
    };
    sock.on('error', () => {});
    sock.on('message', (m) => {
      if (!established && m.length >= 20 && m[0] === 0x01 && m[1] === 0x01) {
        established = true;
        const end = Date.now() + MEDIA;
        timer = setInterval(() => {
          if (Date.now() >= end) {
            finish();
            return;
          }
          const b = Buffer.alloc(200, 0x80);
          b.writeUInt32BE(sent, 4);
          sent++;
          sock.send(b, port, ip);
        }, INTERVAL);
        return;
      }
      if (m[0] === 0x80 && m.length >= 8) seen.add(m.readUInt32BE(4));
    });
    sock.bind(0, () => {
      let tries = 0;
      const again = (): void => {
        if (established) return;
        if (tries++ >= 10) {
          finish();
          return;
        }
        sock.send(req, port, ip);
        setTimeout(again, 200);
      };
      again();
    });
  });
}

/** Runs the sessions; resolves once every one has finished its media. */
export async function handOver(o: HandOverOptions): Promise<HandOverResult> {
  const all: Promise<Result>[] = [];
  const first = o.first ?? 0;
  for (let i = 0; i < o.sessions; i++) {
    all.push(new Promise((r) => setTimeout(() => r(session(o, first + i)), (i * o.spreadMs) / o.sessions)));
  }
  const results = await Promise.all(all);
  const sent = results.reduce((a, r) => a + r.sent, 0);
  const echoed = results.reduce((a, r) => a + r.echoed, 0);
  return {
    sessions: o.sessions,
    established: results.filter((r) => r.established).length,
    sent,
    echoed,
    lost: sent - echoed,
  };
}

if (import.meta.main) {
  const [ip = '', port = '', n = '100', spread = '1000', interval = '5', media = '1500'] =
    process.argv.slice(2);
  const r = await handOver({
    ip,
    port: Number(port),
    sessions: Number(n),
    spreadMs: Number(spread),
    intervalMs: Number(interval),
    mediaMs: Number(media),
  });
  console.log(JSON.stringify(r));
}
