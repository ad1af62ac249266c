/**
 * The rebinding run of `npm run bench:fastpath` (bench/fastpath.ts), inside the client namespace:
 * ROUNDS sessions, one after the other. Each is checked from one socket and streams media every
 * INTERVAL_MS for 300 ms (it is in the kernel by then); then the "NAT rebinds": a new socket sends
 * the same Binding Request (the bench echo answers it, so the proxy joins the new 5-tuple to the
 * session), the old socket closes, and as soon as the success arrives the new socket streams COUNT
 * datagrams INTERVAL_MS apart. Counted: those COUNT datagrams' echoes that reach the new socket —
 * an echo the kernel still sends to the old 5-tuple is lost. Prints one JSON line.
 *
 * argv: TARGET_IP PORT ROUNDS COUNT INTERVAL_MS. Bounded in time and count.
 */
import dgram from 'node:dgram';
import { bindingRequest } from './handover-client.ts';

const [ip = '', portText = '', roundsText = '10', countText = '50', intervalText = '2'] =
  process.argv.slice(2);
const port = Number(portText);
const ROUNDS = Number(roundsText);
const COUNT = Number(countText);
const INTERVAL = Number(intervalText);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function socket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => {});
  return new Promise((r) => s.bind(0, () => r(s)));
}

/** Sends the check until its success arrives (10 tries, 200 ms apart); false if none did. */
function check(s: dgram.Socket, req: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const onMessage = (m: Buffer): void => {
      if (m.length >= 20 && m[0] === 0x01 && m[1] === 0x01 && !done) {
        done = true;
        s.off('message', onMessage);
        resolve(true);
      }
    };
    s.on('message', onMessage);
    let tries = 0;
    const again = (): void => {
      if (done) return;
      if (tries++ >= 10) {
        done = true;
        s.off('message', onMessage);
        resolve(false);
        return;
      }
      s.send(req, port, ip);
      setTimeout(again, 200);
    };
    again();
  });
}

/** Streams `count` datagrams from `s`; resolves with how many distinct ones were echoed back to it. */
async function stream(s: dgram.Socket, count: number, base: number): Promise<number> {
  const seen = new Set<number>();
  const onMessage = (m: Buffer): void => {
    if (m[0] === 0x80 && m.length >= 8) seen.add(m.readUInt32BE(4));
  };
  s.on('message', onMessage);
  for (let i = 0; i < count; i++) {
    const b = Buffer.alloc(200, 0x80);
    b.writeUInt32BE(base + i, 4);
    s.send(b, port, ip);
    await sleep(INTERVAL);
  }
  await sleep(300);
  s.off('message', onMessage);
  return seen.size;
}

let sent = 0;
let echoed = 0;
let rounds = 0;
for (let r = 0; r < ROUNDS; r++) {
  const req = bindingRequest(9_000_000 + r);
  const a = await socket();
  if (!(await check(a, req))) {
    a.close();
    continue;
  }
  await stream(a, Math.round(300 / INTERVAL), 0);
  const b = await socket();
  const joined = check(b, req);
  a.close();
  if (!(await joined)) {
    b.close();
    continue;
  }
  sent += COUNT;
  echoed += await stream(b, COUNT, 1_000_000);
  b.close();
  rounds++;
}
console.log(JSON.stringify({ rounds, sent, echoed, lost: sent - echoed }));
