import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { tokenFor } from '../../src/backends/token.ts';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { RawPeer } from '../fixtures/raw-peer.ts';
import { buildBindingRequest } from '../fixtures/stun-bytes.ts';
import { track } from '../fixtures/track.ts';
import { type Rig, sleep, startRig, until } from './harness.ts';

/** Budgets, caps, port quarantine and floods, over real UDP on 127.0.0.1. */

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const open = async <T extends { close(): Promise<void> }>(p: Promise<T>): Promise<T> => track(await p);

const rtp = (tag: string): Buffer => Buffer.concat([Buffer.from([0x80, 0x60]), Buffer.from(tag)]);
const unknownCheck = (): Buffer =>
  buildBindingRequest({ username: `${randomBytes(7).toString('hex')}:abcd`, password: 'x'.repeat(22) });

describe('limits', () => {
  it('spends no more probe datagrams than the global budget', async () => {
    rig = await startRig([{}, {}], ['--probe-rate', '10']);
    const peer = await open(RawPeer.open());
    for (let i = 0; i < 40; i++) await peer.send(rig.target, unknownCheck());
    await until(() => rig!.proxy.datapath.counters.packetsFromClients === 40, 2000, 'all received');
    // Burst = 1 s worth = 10 datagrams; a fan-out to 2 backends costs 2. One source alone has the
    // whole budget as its share, so its own share runs out first.
    expect(rig.proxy.datapath.counters.probesSent).toBeLessThanOrEqual(12);
    expect(rig.drops('source_share') + rig.drops('fanout_budget')).toBeGreaterThanOrEqual(34);
  });

  it('limits flows being routed per client IP and sessions in total', async () => {
    rig = await startRig([{}, {}], ['--max-pending-per-source', '3', '--max-sessions', '5']);
    const peers = await Promise.all(Array.from({ length: 8 }, () => open(RawPeer.open())));
    for (const p of peers) await p.send(rig.target, unknownCheck());
    await until(() => rig!.proxy.datapath.counters.packetsFromClients === 8, 2000, 'all received');
    expect(rig.proxy.datapath.size).toBe(3);
    expect(rig.drops('source_limit')).toBe(5);

    // Once those fail, established sessions count against --max-sessions.
    await until(() => rig!.proxy.datapath.size === 0, 3000, 'probes time out');
    const clients = await Promise.all(Array.from({ length: 6 }, () => open(FakeIceClient.open())));
    let ok = 0;
    for (const c of clients) {
      const creds = rig.servers[0]!.addSession();
      if (
        await c.check(rig.target, creds, { timeoutMs: 400 }).then(
          () => true,
          () => false,
        )
      )
        ok++;
    }
    expect(ok).toBe(5);
    expect(rig.drops('session_limit')).toBeGreaterThan(0);
  });

  it('takes upstream ports from the range and rests a released port before reuse', async () => {
    const first = 21000 + Math.floor(Math.random() * 8000);
    rig = await startRig(
      [{}, {}],
      ['--upstream-ports', `${first}-${first + 1}`, '--port-quarantine', '1500ms', '--idle-timeout', '200ms'],
    );
    const a = rig.servers[0]!;
    const c1 = await open(FakeIceClient.open());
    const s1 = a.addSession();
    const r1 = await c1.check(rig.target, s1);
    expect([first, first + 1]).toContain(r1.mappedAddress.port);
    await until(() => rig!.proxy.datapath.size === 0, 2000, 'idle expiry');

    // The other port is still fresh: the next session gets it, not the one just released.
    const c2 = await open(FakeIceClient.open());
    const r2 = await c2.check(rig.target, a.addSession());
    expect(r2.mappedAddress.port).not.toBe(r1.mappedAddress.port);
    await until(() => rig!.proxy.datapath.size === 0, 2000, 'idle expiry');

    // Both ports resting: a new flow is refused until the first port's quarantine is over.
    const c3 = await open(FakeIceClient.open());
    const s3 = a.addSession();
    await expect(c3.check(rig.target, s3, { timeoutMs: 300 })).rejects.toThrow();
    expect(rig.drops('ports_exhausted')).toBeGreaterThan(0);
    await sleep(1300);
    // Quarantine over. The backend has expired the first session by now (JVB: 60 s without
    // traffic, hence the 60 s default quarantine); the fake server never forgets on its own, and
    // would answer the reused address with 401 like ice4j does while it still knows it.
    a.removeSession(s1.ufrag);
    const r3 = await c3.check(rig.target, s3, { timeoutMs: 1000 });
    expect(r3.mappedAddress.port).toBe(r1.mappedAddress.port);
  });

  it('keeps a live session flowing through a flood of garbage and unknown ufrags', async () => {
    rig = await startRig([{}, {}], ['--probe-rate', '200', '--negative-ttl', '30s']);
    const c1 = await open(FakeIceClient.open());
    await c1.check(rig.target, rig.servers[0]!.addSession());
    const flooders = await Promise.all(Array.from({ length: 4 }, () => open(RawPeer.open())));
    const FLOOD = 4000;
    let echoed = 0;
    for (let i = 0; i < FLOOD; i++) {
      const f = flooders[i % flooders.length]!;
      void f.send(rig.target, i % 2 === 0 ? unknownCheck() : randomBytes(1 + (i % 300))).catch(() => {});
      if (i % 200 === 0) {
        await c1.sendMedia(rig.target, rtp(`m${i}`));
        if ((await c1.nextMedia(1000)).data.subarray(2).toString() === `m${i}`) echoed++;
      }
    }
    expect(echoed).toBe(FLOOD / 200);
    await until(() => rig!.proxy.datapath.counters.packetsFromClients >= FLOOD * 0.9, 5000, 'flood received');
    // Amplification stays bounded by the budget (burst 200 + refill over the run).
    const c = rig.proxy.datapath.counters;
    expect(c.probesSent).toBeLessThan(200 + 200 * 5);
    expect(rig.proxy.datapath.size).toBeLessThanOrEqual(1 + 4 * 256);
  });

  it('lets new fan-out and prefix-routed calls in through a flood of forged first checks from 50 sources', async () => {
    // A small fan-out budget, so that the flood below asks for many times what it may spend.
    rig = await startRig([{ ufragPrefix: tokenFor('jvb-0') }, {}], ['--probe-rate', '200']);
    const flooders = await Promise.all(
      Array.from({ length: 50 }, (_, i) => open(RawPeer.open(`127.3.0.${i + 1}`))),
    );
    const FLOOD = 6000;
    const joined: Promise<unknown>[] = [];
    for (let i = 0; i < FLOOD; i++) {
      void flooders[i % flooders.length]!.send(rig.target, unknownCheck()).catch(() => {});
      if (i === FLOOD / 3) {
        // Mid-flood, from the victims' own address (127.0.0.1): one call by fan-out (no token)
        // and one prefix-routed, both retransmitting like a browser.
        const fanout = await open(FakeIceClient.open());
        joined.push(fanout.check(rig.target, rig.servers[1]!.addSession(), { timeoutMs: 3000 }));
        const prefixed = await open(FakeIceClient.open());
        joined.push(prefixed.check(rig.target, rig.servers[0]!.addSession(), { timeoutMs: 3000 }));
      }
      if (i % 500 === 0) await sleep(1);
    }
    await Promise.all(joined);
    expect(rig.routes('probe_won')).toBe(1);
    expect(rig.routes('prefix')).toBe(1);
    // The flood was refused by its fair share and the budget, not by a cap that hits everyone.
    expect(rig.drops('source_share') + rig.drops('fanout_budget')).toBeGreaterThan(FLOOD / 2);
    expect(rig.drops('session_limit') + rig.drops('ports_exhausted')).toBe(0);
  });

  it('drops first checks without a prefix token before any probe in strict mode', async () => {
    rig = await startRig(
      [{ ufragPrefix: tokenFor('jvb-0') }, { ufragPrefix: tokenFor('jvb-1') }],
      ['--strict-prefix', 'true'],
    );
    const peer = await open(RawPeer.open());
    for (let i = 0; i < 100; i++) await peer.send(rig.target, unknownCheck());
    await until(() => rig!.proxy.datapath.counters.packetsFromClients === 100, 2000, 'all received');
    expect(rig.drops('strict_prefix')).toBe(100);
    expect(rig.proxy.datapath.counters.probesSent).toBe(0);
    expect(rig.proxy.transport.openUpstreams).toBe(0);
    // A prefix-routed call still connects, with one directed datagram.
    const c = await open(FakeIceClient.open());
    await c.check(rig.target, rig.servers[1]!.addSession());
    expect(rig.routes('prefix')).toBe(1);
    expect(rig.proxy.datapath.counters.directedProbesSent).toBe(1);
  });
});
