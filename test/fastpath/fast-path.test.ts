import { describe, expect, it } from 'vitest';
import { type FastPathHost, type KernelCounts, NftFastPath } from '../../src/fastpath/fast-path.ts';
import type { Nft } from '../../src/fastpath/nft-runner.ts';
import { createLogger } from '../../src/log.ts';
import { ClientEndpoint, Session, SessionState } from '../../src/session/session.ts';

/**
 * The orchestration around the pure plan, with `nft` replaced by a recorder that keeps the map
 * elements' counters the way the kernel would report them (nft -j). No timers are relied on:
 * flushNow()/pollNow() run what the batch window and the poll interval would.
 */

class FakeNft implements Nft {
  readonly scripts: string[] = [];
  /** `map:key` → counts, as the kernel's element counters. */
  readonly counters = new Map<string, { packets: number; bytes: number }>();
  failNext = 0;
  async apply(script: string): Promise<void> {
    this.scripts.push(script);
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('nft -f -: Error: Could not process rule: No such file or directory');
    }
    for (const line of script.split('\n')) {
      const m = /^(add|delete) element ip ice_ingress (c2b_addr|b2c_addr) \{ ([^:}]+?)(?: : .*)? \}$/.exec(
        line,
      );
      if (m === null) continue;
      const key = `${m[2]}:${m[3]!.split(' . ').join('|')}`;
      if (m[1] === 'add') this.counters.set(key, { packets: 0, bytes: 0 });
      else this.counters.delete(key);
    }
  }
  async listJson(): Promise<string> {
    const maps = new Map<string, unknown[]>();
    for (const [k, c] of this.counters) {
      const [map, key] = k.split(':') as [string, string];
      const parts = key.split('|').map((p) => (/^\d+$/.test(p) ? Number(p) : p));
      maps.set(map, [...(maps.get(map) ?? []), [{ elem: { val: { concat: parts }, counter: c } }, 'x']]);
    }
    return JSON.stringify({ nftables: [...maps].map(([name, elem]) => ({ map: { name, elem } })) });
  }
  /** The kernel forwarded `n` datagrams of `payload` bytes for an element. */
  forward(key: string, n: number, payload: number): void {
    const c = this.counters.get(key)!;
    c.packets += n;
    c.bytes += n * (payload + 28);
  }
}

class Host implements FastPathHost {
  readonly touched: Array<[number, number]> = [];
  readonly counts = new Map<number, KernelCounts>();
  touch(s: Session, now: number): void {
    this.touched.push([s.id, now]);
  }
  addKernelCounts(s: Session, c: KernelCounts): void {
    const t = this.counts.get(s.id) ?? { packetsUp: 0, bytesUp: 0, packetsDown: 0, bytesDown: 0 };
    t.packetsUp += c.packetsUp;
    t.bytesUp += c.bytesUp;
    t.packetsDown += c.packetsDown;
    t.bytesDown += c.bytesDown;
    this.counts.set(s.id, t);
  }
}

let id = 1;
function session(clientPort: number, upstreamPort: number): Session {
  const up = { localPort: upstreamPort, sendTo() {}, send() {}, connect() {}, close() {} };
  const s = new Session(
    id++,
    's:c',
    1,
    { username: 1, serverUfrag: 2 },
    up,
    { address: '198.18.0.2', port: clientPort },
    0,
  );
  s.state = SessionState.Established;
  s.backend = { name: 'b', address: '10.77.2.11', port: 10000 } as Session['backend'];
  s.endpoints.push(s.current);
  return s;
}

async function setup() {
  const nft = new FakeNft();
  const host = new Host();
  let now = 1000;
  const handovers: number[] = [];
  const fp = await NftFastPath.start(
    {
      listenAddress: '198.18.0.1',
      listenPort: 10000,
      upstreamPorts: [16384, 32767],
      batchWindowMs: 60_000,
      pollIntervalMs: 60_000,
    },
    {
      nft,
      host,
      sources: { get: () => '10.77.2.1', resolve: async () => '10.77.2.1' },
      clock: () => now,
      log: createLogger('silent'),
      onHandover: (ms) => handovers.push(ms),
    },
  );
  return { nft, host, fp, handovers, advance: (ms: number) => (now += ms) };
}

describe('NftFastPath', () => {
  it('creates the table, batches events into one transaction, reports hand-over times', async () => {
    const { nft, fp, handovers, advance } = await setup();
    expect(nft.scripts[0]).toMatch(
      /^add table ip ice_ingress\ndelete table ip ice_ingress\ntable ip ice_ingress \{/,
    );
    const a = session(40000, 16384);
    const b = session(40001, 16385);
    fp.established(a);
    fp.established(b);
    advance(7);
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(2);
    expect(nft.scripts[1]!.split('\n').filter((l) => l.startsWith('add element'))).toHaveLength(11);
    expect(handovers).toEqual([7, 7]);
    expect(fp.kernelSessions).toBe(2);
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(2); // nothing dirty: no transaction
  });

  it('feeds kernel counts back as deltas; client traffic refreshes the idle clock', async () => {
    const { nft, host, fp, advance } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    nft.forward('c2b_addr:198.18.0.2|40000', 10, 100);
    nft.forward('b2c_addr:10.77.2.11|10000|16384', 4, 1200);
    advance(500);
    await fp.pollNow();
    expect(host.counts.get(s.id)).toEqual({ packetsUp: 10, bytesUp: 1000, packetsDown: 4, bytesDown: 4800 });
    expect(host.touched).toEqual([[s.id, 1500]]);
    // Only the backend sent since: counts, but no touch (idle is about the client).
    nft.forward('b2c_addr:10.77.2.11|10000|16384', 1, 50);
    await fp.pollNow();
    expect(host.counts.get(s.id)!.packetsDown).toBe(5);
    expect(host.touched).toHaveLength(1);
    expect(fp.totals).toEqual({ packetsUp: 10, bytesUp: 1000, packetsDown: 5, bytesDown: 4850 });
  });

  it('a moved element restarts its counter from zero without a negative delta', async () => {
    const { nft, host, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    nft.forward('c2b_addr:198.18.0.2|40000', 50, 100);
    await fp.pollNow();
    const ep = new ClientEndpoint(s, '198.18.0.2', 40999, 0);
    s.endpoints.push(ep);
    s.current = ep;
    fp.currentChanged(s, ep);
    await fp.flushNow();
    nft.forward('c2b_addr:198.18.0.2|40999', 3, 100);
    await fp.pollNow();
    expect(host.counts.get(s.id)!.packetsUp).toBe(53);
  });

  it('a failed transaction is followed by a rewrite of all maps; if that fails, the table goes', async () => {
    const { nft, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    nft.failNext = 1;
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toMatch(/^flush map ip ice_ingress c2b_addr\n/);
    expect(nft.scripts.at(-1)).toContain(
      'add element ip ice_ingress c2b_addr { 198.18.0.2 . 40000 : 10.77.2.11 }',
    );
    expect(fp.stats).toMatchObject({ failures: 1, handovers: 1 });
    expect(fp.kernelSessions).toBe(1);

    const t = session(40001, 16385);
    fp.established(t);
    nft.failNext = 2;
    await fp.flushNow();
    expect(nft.scripts.at(-1)).toBe('add table ip ice_ingress\ndelete table ip ice_ingress\n');
    expect(fp.kernelSessions).toBe(0);
    // Disabled: later events cost nothing.
    const n = nft.scripts.length;
    fp.established(session(40002, 16386));
    await fp.flushNow();
    expect(nft.scripts).toHaveLength(n);
  });

  it('stop reads the counters once more, then deletes the table', async () => {
    const { nft, host, fp } = await setup();
    const s = session(40000, 16384);
    fp.established(s);
    await fp.flushNow();
    nft.forward('c2b_addr:198.18.0.2|40000', 2, 10);
    await fp.stop();
    expect(host.counts.get(s.id)!.packetsUp).toBe(2);
    expect(nft.scripts.at(-1)).toBe('add table ip ice_ingress\ndelete table ip ice_ingress\n');
    await fp.stop(); // idempotent
    expect(nft.scripts.at(-1)).toBe('add table ip ice_ingress\ndelete table ip ice_ingress\n');
  });
});
