import { afterEach, describe, expect, it } from 'vitest';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { track } from '../fixtures/track.ts';
import { type PoolRig, startPool } from './pool-harness.ts';

/**
 * `--workers 2` end to end over real UDP on 127.0.0.1: two worker threads bound to one address
 * with SO_REUSEPORT, the kernel's own hash deciding which one hears each client 4-tuple. The tests
 * pick client source ports the kernel sends to the worker they need (pool-harness.ts), so a
 * session's second 5-tuple really arrives on the other worker's socket, and the reply really
 * leaves from the shared address.
 */

let rig: PoolRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const rtp = (tag: string): Buffer => Buffer.concat([Buffer.from([0x80, 0x60]), Buffer.from(tag)]);
const client = async (opts?: { ufrag: string; password: string }): Promise<FakeIceClient> =>
  track(await FakeIceClient.open(opts));

async function eventually(cond: () => Promise<boolean>, what: string, ms = 2000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > deadline) {
      const text = await (await fetch(`http://127.0.0.1:${rig!.proxy.adminPort}/metrics`)).text();
      const lines = text
        .split('\n')
        .filter((l) => /^ice_ingress_(worker|packets|routes|drops)/.test(l) && !/ 0$/.test(l));
      throw new Error(`timed out waiting for ${what}:\n${lines.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('workers: a session belongs to one worker wherever its datagrams land', () => {
  it('NAT rebinding onto the other worker: handed to the owner, the backend keeps one address', async () => {
    rig = await startPool([{ lockAfterMs: 0 }, { lockAfterMs: 0 }]);
    const a = rig.servers[0]!;
    const c1 = await client();
    await rig.steer(c1, 0);
    const s1 = a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    const first = await c1.check(rig.target, s1);
    const before = a.remotesOf(s1.ufrag);
    expect(before).toHaveLength(1);

    await c1.rebind();
    await rig.steer(c1, 1);
    // lockAfterMs 0: a check from a second upstream address would get 403 (ice4j #287).
    const second = await c1.check(rig.target, s1);
    expect(second.from).toEqual(rig.target); // the reply left from the shared public address
    expect(second.mappedAddress).toEqual(first.mappedAddress); // the backend saw the same upstream
    expect(a.remotesOf(s1.ufrag)).toEqual(before);
    expect(a.stats.errors403 ?? 0).toBe(0);

    for (const tag of ['m1', 'm2', 'm3']) {
      await c1.sendMedia(rig.target, rtp(tag));
      const echo = await c1.nextMedia(1000);
      expect(echo.data.subarray(2).toString()).toBe(tag);
      expect(echo.from).toEqual(rig.target);
    }
    expect(a.stats.mediaEchoed).toBe(3);
    await eventually(async () => {
      const m = await rig!.metrics();
      return (
        m('ice_ingress_worker_handoffs_total', { worker: '1', direction: 'out' }) >= 4 &&
        m('ice_ingress_worker_handoffs_total', { worker: '0', direction: 'in' }) >= 4 &&
        m('ice_ingress_packets_total', { direction: 'client_out' }) >= 5
      );
    }, 'hand-off counters of both workers');
    const m = await rig.metrics();
    // The check and the three media datagrams went 1 → 0; nothing went the other way.
    expect(m('ice_ingress_worker_handoffs_total', { worker: '1', direction: 'out' })).toBe(4);
    expect(m('ice_ingress_worker_handoffs_total', { worker: '0', direction: 'in' })).toBe(4);
    expect(m('ice_ingress_worker_handoffs_total', { worker: '0', direction: 'out' })).toBe(0);
    expect(m('ice_ingress_worker_sessions', { worker: '0' })).toBe(1);
    expect(m('ice_ingress_worker_sessions', { worker: '1' })).toBe(0);
    expect(m('ice_ingress_sessions')).toBe(1);
    expect(m('ice_ingress_routes_total', { outcome: 'rebind' })).toBe(1);
    expect(m('ice_ingress_routes_total', { outcome: 'probe_won' })).toBe(1);
    // Replies leave from the owner's socket: worker 0 sent every client_out datagram.
    expect(m('ice_ingress_worker_packets_total', { worker: '1', direction: 'client_out' })).toBe(0);
    expect(m('ice_ingress_packets_total', { direction: 'client_out' })).toBe(5);
  });

  it('a second candidate of the same agent on the other worker shares the upstream address', async () => {
    rig = await startPool([{ lockAfterMs: 0 }, { lockAfterMs: 0 }]);
    const a = rig.servers[0]!;
    const wifi = await client();
    await rig.steer(wifi, 0);
    const eth = await client({ ufrag: wifi.ufrag, password: wifi.password });
    await rig.steer(eth, 1);
    const creds = a.addSession({ remote: { ufrag: wifi.ufrag, password: wifi.password } });
    const r1 = await wifi.check(rig.target, creds);
    const r2 = await eth.check(rig.target, creds);
    expect(r2.mappedAddress).toEqual(r1.mappedAddress);
    expect(a.remotesOf(creds.ufrag)).toHaveLength(1);
    expect(a.stats.errors403 ?? 0).toBe(0);
    // Media both ways on each 5-tuple; downstream latches to the one that sent last.
    await eth.sendMedia(rig.target, rtp('e'));
    const e = await eth.nextMedia(1000);
    expect(e.data.subarray(2).toString()).toBe('e');
    expect(e.from).toEqual(rig.target);
    await wifi.sendMedia(rig.target, rtp('w'));
    expect((await wifi.nextMedia(1000)).data.subarray(2).toString()).toBe('w');
    await eth.sendMedia(rig.target, rtp('e2'));
    expect((await eth.nextMedia(1000)).data.subarray(2).toString()).toBe('e2');
    expect(wifi.pendingMedia).toBe(0);
    // The server's consent check reaches the current (last media) 5-tuple through worker 0.
    await a.sendCheck(creds.ufrag, { timeoutMs: 1000 });
    expect(eth.receivedChecks.at(-1)!.from).toEqual(rig.target);
    await eventually(async () => (await rig!.metrics())('ice_ingress_client_endpoints') === 2, 'endpoints');
    const m = await rig.metrics();
    expect(m('ice_ingress_worker_sessions', { worker: '0' })).toBe(1);
    expect(m('ice_ingress_worker_sessions', { worker: '1' })).toBe(0);
  });

  it('ICE restart: the new session stays with its worker, and a 5-tuple on the other worker joins it', async () => {
    rig = await startPool([{ lockAfterMs: 0 }, { lockAfterMs: 0 }]);
    const [a, b] = rig.servers as [(typeof rig.servers)[0], (typeof rig.servers)[0]];
    const c1 = await client();
    await rig.steer(c1, 0);
    const first = a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    await c1.check(rig.target, first);
    await c1.sendMedia(rig.target, rtp('x'));
    await c1.nextMedia(1000);
    // The restart (new server ufrag on another backend) on the same 5-tuple: worker 0 routes it.
    const second = b.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    const r1 = await c1.check(rig.target, second);
    // Another candidate of the restarted agent lands on worker 1: handed to worker 0's new session.
    const relay = await client({ ufrag: c1.ufrag, password: c1.password });
    await rig.steer(relay, 1);
    const r2 = await relay.check(rig.target, second);
    expect(r2.mappedAddress).toEqual(r1.mappedAddress);
    expect(b.remotesOf(second.ufrag)).toHaveLength(1);
    expect(b.stats.errors403 ?? 0).toBe(0);
    await relay.sendMedia(rig.target, rtp('y'));
    const y = await relay.nextMedia(1000);
    expect(y.data.subarray(2).toString()).toBe('y');
    expect(y.from).toEqual(rig.target);
    expect(b.stats.mediaEchoed).toBe(1);
    await eventually(async () => {
      const m = await rig!.metrics();
      return (
        m('ice_ingress_sessions') === 1 &&
        m('ice_ingress_worker_handoffs_total', { worker: '1', direction: 'out' }) === 2
      );
    }, 'old session closed, check and media handed off');
    const m = await rig.metrics();
    expect(m('ice_ingress_routes_total', { outcome: 'restart' })).toBe(1);
    expect(m('ice_ingress_worker_sessions', { worker: '0' })).toBe(1);
    expect(m('ice_ingress_worker_sessions', { worker: '1' })).toBe(0);
  });

  it('an ICE restart whose first check lands on the other worker is a new session there', async () => {
    rig = await startPool([{ lockAfterMs: 0 }, { lockAfterMs: 0 }]);
    const [a, b] = rig.servers as [(typeof rig.servers)[0], (typeof rig.servers)[0]];
    const c1 = await client();
    await rig.steer(c1, 0);
    await c1.check(rig.target, a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } }));
    // New credentials from a new 5-tuple (the agent gathered again): nothing to hand off.
    const c2 = await client({ ufrag: c1.ufrag, password: c1.password });
    await rig.steer(c2, 1);
    const second = b.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    await c2.check(rig.target, second);
    await c2.sendMedia(rig.target, rtp('z'));
    expect((await c2.nextMedia(1000)).data.subarray(2).toString()).toBe('z');
    expect(b.remotesOf(second.ufrag)).toHaveLength(1);
    await eventually(async () => (await rig!.metrics())('ice_ingress_sessions') === 2, 'sessions');
    const m = await rig.metrics();
    expect(m('ice_ingress_worker_sessions', { worker: '1' })).toBe(1);
    expect(m('ice_ingress_worker_handoffs_total', { worker: '1', direction: 'out' })).toBe(0);
  });
});

describe('workers over IPv6', () => {
  it('hands a rebinding on ::1 to the owner; the ring carries the IPv6 source', async () => {
    rig = await startPool([{ lockAfterMs: 0, host: '::1' }], [], 2, '::1');
    const a = rig.servers[0]!;
    const c1 = track(await FakeIceClient.open({ host: '::1' }));
    await rig.steer(c1, 0);
    const s1 = a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    const first = await c1.check(rig.target, s1);
    expect(first.mappedAddress.family).toBe('IPv6');
    await c1.rebind();
    await rig.steer(c1, 1);
    const second = await c1.check(rig.target, s1);
    expect(second.from).toEqual(rig.target);
    expect(second.mappedAddress).toEqual(first.mappedAddress);
    expect(a.stats.errors403 ?? 0).toBe(0);
    await c1.sendMedia(rig.target, rtp('v6'));
    const echo = await c1.nextMedia(1000);
    expect(echo.data.subarray(2).toString()).toBe('v6');
    expect(echo.from).toEqual(rig.target);
    await eventually(
      async () =>
        (await rig!.metrics())('ice_ingress_worker_handoffs_total', { worker: '0', direction: 'in' }) === 2,
      'check and media handed in',
    );
  });
});

describe('workers: shared state and limits', () => {
  it('a ufrag learned by one worker routes directly in the other', async () => {
    rig = await startPool([{}, {}, {}]);
    const owner = rig.servers[1]!;
    const s1 = owner.addSession();
    const c1 = await client();
    await rig.steer(c1, 0);
    await c1.check(rig.target, s1);
    const others = [rig.servers[0]!.stats.datagrams, rig.servers[2]!.stats.datagrams];
    const c2 = await client();
    await rig.steer(c2, 1);
    // The learned ufrag travels via the main thread (two postMessage hops); nothing shows when it
    // has arrived, so allow a loaded machine time for it.
    await new Promise((r) => setTimeout(r, 250));
    // Another client ufrag, same server ufrag: not a rebinding. A long first RTO: a retransmit
    // before the owner's answer (a loaded machine) would rightly fan out (router.ts, round()).
    await c2.check(rig.target, s1, { rtoMs: 1000 });
    expect([rig.servers[0]!.stats.datagrams, rig.servers[2]!.stats.datagrams]).toEqual(others);
    await eventually(async () => (await rig!.metrics())('ice_ingress_sessions') === 2, 'sessions');
    const m = await rig.metrics();
    expect(m('ice_ingress_routes_total', { outcome: 'learned' })).toBe(1);
    expect(m('ice_ingress_worker_sessions', { worker: '1' })).toBe(1);
  });

  it('a ufrag no backend claimed in one worker is refused in the other without probing', async () => {
    rig = await startPool([{ unknownUfrag: '401' }, { unknownUfrag: '401' }]);
    const nobody = { ufrag: 'nobodysufrag7q', password: 'p'.repeat(24) };
    const c1 = await client();
    await rig.steer(c1, 0);
    await expect(c1.check(rig.target, nobody, { timeoutMs: 300 })).rejects.toThrow();
    await eventually(
      async () => (await rig!.metrics())('ice_ingress_routes_total', { outcome: 'probe_failed' }) === 1,
      'probe failed in worker 0',
    );
    const seen = rig.servers.map((s) => s.stats.datagrams);
    const c2 = await client();
    await rig.steer(c2, 1);
    await new Promise((r) => setTimeout(r, 250)); // the negative entry travels via the main thread
    await expect(c2.check(rig.target, nobody, { timeoutMs: 300 })).rejects.toThrow();
    expect(rig.servers.map((s) => s.stats.datagrams)).toEqual(seen);
    await eventually(
      async () => (await rig!.metrics())('ice_ingress_drops_total', { reason: 'unknown_ufrag' }) > 0,
      'unknown_ufrag drop in worker 1',
    );
  });

  it('the session cap is one for the pod, not one per worker', async () => {
    rig = await startPool([{}], ['--max-sessions', '1']);
    const s = rig.servers[0]!;
    const c1 = await client();
    await rig.steer(c1, 0);
    await c1.check(rig.target, s.addSession());
    const c2 = await client();
    await rig.steer(c2, 1);
    await expect(c2.check(rig.target, s.addSession(), { timeoutMs: 300 })).rejects.toThrow();
    await eventually(
      async () => (await rig!.metrics())('ice_ingress_drops_total', { reason: 'session_limit' }) > 0,
      'session_limit drop',
    );
    expect((await rig.metrics())('ice_ingress_sessions')).toBe(1);
  });

  it('gives each worker its own upstream port slice', async () => {
    // Below the kernel's ephemeral range (32768+), where no other socket can hold one of them.
    const base = 20000 + Math.floor(Math.random() * 1000) * 10;
    rig = await startPool([{}], ['--upstream-ports', `${base}-${base + 9}`, '--port-quarantine', '0s']);
    const s = rig.servers[0]!;
    const c0 = await client();
    await rig.steer(c0, 0);
    const c1 = await client();
    await rig.steer(c1, 1);
    const r0 = await c0.check(rig.target, s.addSession());
    const r1 = await c1.check(rig.target, s.addSession());
    expect(r0.mappedAddress.port).toBeGreaterThanOrEqual(base);
    expect(r0.mappedAddress.port).toBeLessThanOrEqual(base + 4);
    expect(r1.mappedAddress.port).toBeGreaterThanOrEqual(base + 5);
    expect(r1.mappedAddress.port).toBeLessThanOrEqual(base + 9);
  });

  it('drains: not ready, existing sessions keep flowing, then every worker stops', async () => {
    rig = await startPool();
    const c1 = await client();
    await rig.steer(c1, 1);
    await c1.check(rig.target, rig.servers[0]!.addSession());
    const admin = `http://127.0.0.1:${rig.proxy.adminPort}`;
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);
    const drained = rig.proxy.drain(500);
    expect((await fetch(`${admin}/readyz`)).status).toBe(503);
    await c1.sendMedia(rig.target, rtp('still'));
    expect((await c1.nextMedia(500)).data.subarray(2).toString()).toBe('still');
    await drained;
    // The listening sockets are gone with the workers: nothing answers any more.
    await c1.sendMedia(rig.target, rtp('late'));
    await expect(c1.nextMedia(200)).rejects.toThrow(/no media/);
  });
});
