// Worker body for bench/handoff.ts's ring figures: a HandoffNode-style consumer (src/workers/
// handoff.ts's loop: arm, drain, wait) that counts datagrams, or in ping-pong mode hands each one
// straight back through the reverse ring.
import { parentPort, workerData } from 'node:worker_threads';
import { Doorbell, HandoffRing } from '../src/workers/ring.ts';

const w = workerData as {
  ring: SharedArrayBuffer;
  bell: SharedArrayBuffer;
  back: SharedArrayBuffer;
  backBell: SharedArrayBuffer;
  count: number;
  pingPong: boolean;
};
const ring = new HandoffRing(w.ring);
const bell = new Doorbell(w.bell);
const back = new HandoffRing(w.back);
const backBell = new Doorbell(w.backBell);
let n = 0;
// A pending Atomics.waitAsync does not keep a thread alive; this timer does until the end.
const alive = setInterval(() => {}, 1000);
const deliver = (buf: Buffer, address: string, port: number): void => {
  n++;
  if (w.pingPong) {
    back.push(buf, address, port);
    backBell.ring();
  }
};
while (n < w.count) {
  const seen = bell.arm();
  if (ring.drain(deliver, 256) === 256) {
    await new Promise<void>((r) => setImmediate(r));
    continue;
  }
  if (n >= w.count) break;
  const wait = bell.wait(seen);
  if (wait !== undefined) await wait;
}
clearInterval(alive);
parentPort!.postMessage(n);
