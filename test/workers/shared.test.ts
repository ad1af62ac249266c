import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/admission/token-bucket.ts';
import { parseConfig } from '../../src/config.ts';
import { Counters } from '../../src/defs/counters.ts';
import { SharedDirectory } from '../../src/workers/directory.ts';
import { usernameKey } from '../../src/workers/hash.ts';
import { perWorkerLimits, SharedSessionSlots, SharedTokenBucket } from '../../src/workers/limits.ts';
import { Doorbell, HandoffRing } from '../../src/workers/ring.ts';
import { createStatsBuffer, type Gauges, publish, Stat, WorkerStats } from '../../src/workers/stats.ts';

const key = usernameKey;

describe('SharedDirectory', () => {
  it('maps a ufrag pair to its owner; the first owner keeps it; only the owner deletes it', () => {
    const d = SharedDirectory.create(1024);
    const other = new SharedDirectory(d.buffer); // another thread's view
    const [hi, lo] = key('srvufrag:cli1');
    expect(other.lookup(hi, lo)).toBe(-1);
    expect(d.insert(hi, lo, 3)).toBe(true);
    expect(other.lookup(hi, lo)).toBe(3);
    expect(other.insert(hi, lo, 1)).toBe(false);
    expect(other.remove(hi, lo, 1)).toBe(false);
    expect(d.lookup(hi, lo)).toBe(3);
    expect(d.remove(hi, lo, 3)).toBe(true);
    expect(other.lookup(hi, lo)).toBe(-1);
    expect(other.insert(hi, lo, 1)).toBe(true);
    expect(d.lookup(hi, lo)).toBe(1);
  });

  it('stays bounded: a full probe window refuses inserts, tombstones are reused', () => {
    const d = SharedDirectory.create(1024);
    // Fill far beyond capacity: every insert either lands or is refused, none loops.
    let stored = 0;
    for (let i = 0; i < 5000; i++) if (d.insert(...key(`u${i}:c`), i % 4)) stored++;
    expect(stored).toBeLessThanOrEqual(d.capacity);
    expect(d.size).toBe(stored);
    // Every stored key is found with its owner.
    let found = 0;
    for (let i = 0; i < 5000; i++) if (d.lookup(...key(`u${i}:c`)) === i % 4) found++;
    expect(found).toBe(stored);
    // Delete all, then the table takes new keys again (tombstones reused).
    for (let i = 0; i < 5000; i++) d.remove(...key(`u${i}:c`), i % 4);
    expect(d.size).toBe(0);
    let again = 0;
    for (let i = 0; i < 500; i++) if (d.insert(...key(`v${i}:c`), 0)) again++;
    expect(again).toBe(500);
  });

  it('is consistent under concurrent writers in real threads', async () => {
    const d = SharedDirectory.create(1 << 16);
    // Four threads each insert and delete their own 2000 keys repeatedly, then leave 2000 in.
    // The worker body imports the real module (Node 24 runs .ts in worker threads).
    const url = new URL('./fixtures/directory-writer.ts', import.meta.url);
    const workers = [0, 1, 2, 3].map(
      (id) => new Worker(url, { workerData: { buffer: d.buffer, id, keys: 2000, rounds: 5 } }),
    );
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', () => resolve());
            w.once('error', reject);
          }),
      ),
    );
    await Promise.all(workers.map((w) => w.terminate()));
    for (let id = 0; id < 4; id++) {
      for (let i = 0; i < 2000; i++) expect(d.lookup(...key(`w${id}-${i}:c`))).toBe(id);
    }
    expect(d.size).toBe(8000);
  });
});

describe('HandoffRing', () => {
  it('carries datagrams with their source in order, across the wrap, and refuses when full', () => {
    const r = HandoffRing.create(65536);
    const consumer = new HandoffRing(r.buffer);
    const got: Array<[string, string, number]> = [];
    const deliver = (b: Buffer, a: string, p: number): void => {
      got.push([b.toString(), a, p]);
    };
    // 1200-byte records: push until full, drain, repeat: exercises the wrap marker many times.
    let pushed = 0;
    let refused = 0;
    for (let round = 0; round < 20; round++) {
      for (;;) {
        const body = `${pushed}:`.padEnd(1200, 'x');
        if (!r.push(Buffer.from(body), round % 2 ? '2001:db8::1' : '192.0.2.7', 1000 + pushed)) {
          refused++;
          break;
        }
        pushed++;
      }
      consumer.drain(deliver, 1_000_000);
    }
    expect(refused).toBe(20);
    expect(got).toHaveLength(pushed);
    got.forEach(([body, , port], i) => {
      expect(body.startsWith(`${i}:`)).toBe(true);
      expect(body).toHaveLength(1200);
      expect(port).toBe(1000 + i);
    });
    expect(new Set(got.map((g) => g[1]))).toEqual(new Set(['192.0.2.7', '2001:db8::1']));
    expect(r.dropped).toBe(20);
  });

  it('hands delivered datagrams out as copies (the ring space is reused at once)', () => {
    const r = HandoffRing.create();
    r.push(Buffer.from('first'), '127.0.0.1', 1);
    let kept: Buffer | undefined;
    r.drain((b) => {
      kept = b;
    }, 10);
    r.push(Buffer.from('XXXXX'), '127.0.0.1', 2);
    expect(kept!.toString()).toBe('first');
  });

  it('wakes a consumer waiting on its doorbell in another thread', async () => {
    const ring = HandoffRing.create();
    const bell = Doorbell.create();
    const w = new Worker(new URL('./fixtures/ring-consumer.ts', import.meta.url), {
      workerData: { ring: ring.buffer, bell: bell.buffer, expect: 500 },
    });
    const done = new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    // Bursts with pauses, so the consumer goes to sleep between them and must be woken.
    for (let i = 0; i < 500; i++) {
      while (!ring.push(Buffer.from(`d${i}`), '127.0.0.1', i)) await new Promise((r) => setImmediate(r));
      bell.ring();
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    expect(await done).toBe(500);
    await w.terminate();
  });
});

describe('shared limits', () => {
  it('SharedTokenBucket spends and refills exactly like TokenBucket', () => {
    const a = new TokenBucket(100, 100, 0);
    const b = SharedTokenBucket.create(100, 100, 0);
    const view = new SharedTokenBucket(b.buffer);
    const steps: Array<[number, number]> = [
      [0, 60],
      [0, 50],
      [100, 10],
      [100, 10],
      [500, 60],
      [2000, 100],
      [2000, 1],
      [1990, 1],
    ];
    for (const [t, n] of steps) expect(view.take(t, n), `t=${t} n=${n}`).toBe(a.take(t, n));
  });

  it('one budget for all threads: N takers together get the burst, not N times it', async () => {
    const b = SharedTokenBucket.create(1, 1000, 0);
    const workers = [0, 1, 2, 3].map(
      (id) =>
        new Worker(new URL('./fixtures/bucket-taker.ts', import.meta.url), {
          workerData: { buffer: b.buffer, id, tries: 1000 },
        }),
    );
    const taken = await Promise.all(
      workers.map(
        (w) =>
          new Promise<number>((resolve, reject) => {
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    expect(taken.reduce((x, y) => x + y, 0)).toBe(1000);
  });

  it('SharedSessionSlots caps the total', () => {
    const s = SharedSessionSlots.create(2);
    const t = new SharedSessionSlots(s.buffer);
    expect([s.tryAcquire(), t.tryAcquire(), s.tryAcquire()]).toEqual([true, true, false]);
    t.release();
    expect(s.tryAcquire()).toBe(true);
    expect(s.used).toBe(2);
  });

  it('per-source limits: 1/N per worker, so their sum is what one process allows', () => {
    const cfg = { probeRate: 500, directedProbeRate: 2000, maxPendingPerSource: 256 };
    expect(perWorkerLimits(cfg, 1)).toEqual({ maxPendingPerSource: 256, shareRates: [500, 2000] });
    expect(perWorkerLimits(cfg, 2)).toEqual({ maxPendingPerSource: 128, shareRates: [250, 1000] });
    // Rounded up, never below one flow: a source is never locked out of a worker.
    expect(perWorkerLimits({ ...cfg, maxPendingPerSource: 5 }, 4).maxPendingPerSource).toBe(2);
    expect(perWorkerLimits({ ...cfg, maxPendingPerSource: 1 }, 4).maxPendingPerSource).toBe(1);
  });
});

describe('stats rows', () => {
  const gauges: Gauges = {
    sessions: 2,
    endpoints: 2,
    upstreams: 2,
    handoffsOut: 0,
    handoffsIn: 0,
    handoffDrops: 0,
    handoffRoutes: 0,
    activeSources: 1,
    freePorts: -1,
  };
  it("carry each worker's kernel fast path; the main thread sums them as one process's", () => {
    const buf = createStatsBuffer(3);
    const c = new Counters();
    c.packetsFromClients = 5;
    publish(buf, 0, c, {
      ...gauges,
      kernel: {
        totals: { packetsUp: 10, bytesUp: 1000, packetsDown: 20, bytesDown: 4000 },
        stats: { transactions: 3, failures: 1 },
        kernelSessions: 2,
      },
    });
    publish(buf, 1, c, {
      ...gauges,
      kernel: {
        totals: { packetsUp: 1, bytesUp: 100, packetsDown: 2, bytesDown: 200 },
        stats: { transactions: 4, failures: 0 },
        kernelSessions: 1,
      },
    });
    // Without the fast path the row's kernel fields are zero.
    publish(buf, 2, c, gauges);
    const stats = new WorkerStats(buf);
    expect(stats.kernel()).toEqual({
      totals: { packetsUp: 11, bytesUp: 1100, packetsDown: 22, bytesDown: 4200 },
      stats: { transactions: 7, failures: 1 },
      kernelSessions: 3,
    });
    expect(stats.get(1, Stat.fastPathSessions)).toBe(1);
    expect(stats.get(2, Stat.kernelPacketsUp)).toBe(0);
    // The userspace counters beside them are untouched.
    expect(stats.counters().packetsFromClients).toBe(15);
    expect(stats.sum(Stat.sessions)).toBe(6);
  });
});

describe('--workers', () => {
  const args = ['--backends', 'a=127.0.0.1:9'];
  it('takes N or auto; 1 is the default; bad values stop start-up naming the flag', () => {
    const cfg = (extra: string[], env = {}) => {
      const r = parseConfig([...args, ...extra], env);
      if (r.kind !== 'run') throw new Error('unexpected');
      return r.config;
    };
    expect(cfg([]).workers).toBe(1);
    expect(cfg(['--workers', 'auto']).workers).toBe('auto');
    expect(cfg([], { ICE_INGRESS_WORKERS: '3' }).workers).toBe(3);
    expect(() => cfg(['--workers', '0'])).toThrow(/--workers: expected a whole number from 1 to 32/);
    expect(() => cfg(['--workers', 'many'])).toThrow(/--workers/);
    expect(() => cfg(['--workers', '4', '--upstream-ports', '20000-20002'])).toThrow(
      /--upstream-ports: needs at least one port per worker \(4\)/,
    );
  });
});
