import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { tokenFor } from '../../src/backends/token.ts';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { RawPeer } from '../fixtures/raw-peer.ts';
import { rejection } from '../fixtures/stun-agent.ts';
import { AttrType, encodeStun, MessageType } from '../fixtures/stun-bytes.ts';
import { track } from '../fixtures/track.ts';
import { type Rig, sleep, startRig, until } from './harness.ts';

/**
 * The data path end to end over real UDP on 127.0.0.1: fake ice4j-like servers behind the proxy,
 * ICE clients that all share one IP (the NAT case: 127.0.0.1, different ports).
 */

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

async function client(): Promise<FakeIceClient> {
  return track(await FakeIceClient.open());
}

const rtp = (tag: string): Buffer => Buffer.concat([Buffer.from([0x80, 0x60]), Buffer.from(tag)]);

describe('relay', () => {
  it('routes two clients on one IP to the servers that own their sessions, and media echoes both ways', async () => {
    rig = await startRig();
    const [a, b] = rig.servers as [(typeof rig.servers)[0], (typeof rig.servers)[0]];
    const c1 = await client();
    const c2 = await client();
    const s1 = a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    const s2 = b.addSession({ remote: { ufrag: c2.ufrag, password: c2.password } });

    // check() resolves only on a success whose MESSAGE-INTEGRITY verifies with that server's password.
    const r1 = await c1.check(rig.target, s1);
    const r2 = await c2.check(rig.target, s2);
    expect(r1.from).toEqual(rig.target);
    expect(r2.from).toEqual(rig.target);
    // The mapped address a server reports is the proxy's upstream socket, never the client.
    expect(r1.mappedAddress.port).not.toBe(c1.port);

    await c1.sendMedia(rig.target, rtp('one'));
    await c2.sendMedia(rig.target, rtp('two'));
    const m1 = await c1.nextMedia(1000);
    const m2 = await c2.nextMedia(1000);
    expect(m1.data.subarray(2).toString()).toBe('one');
    expect(m2.data.subarray(2).toString()).toBe('two');
    expect(m1.from).toEqual(rig.target);
    expect(a.stats.mediaEchoed).toBe(1);
    expect(b.stats.mediaEchoed).toBe(1);
    expect(a.remotesOf(s1.ufrag)).toHaveLength(1);
    expect(b.remotesOf(s2.ufrag)).toHaveLength(1);
    expect(rig.routes('probe_won')).toBe(2);
    expect(rig.proxy.datapath.size).toBe(2);
  });

  it('delivers a server-originated check to the client from the listening address, and its answer back', async () => {
    rig = await startRig();
    const a = rig.servers[0]!;
    const c1 = await client();
    const s1 = a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    await c1.check(rig.target, s1);
    const reply = await a.sendCheck(s1.ufrag, { timeoutMs: 1000 });
    expect(reply.transactionId).toHaveLength(12);
    const seen = c1.receivedChecks.at(-1)!;
    expect(seen.from).toEqual(rig.target);
    expect(seen.valid).toBe(true);
  });

  it('keeps the server-side address when the client NAT rebinds', async () => {
    rig = await startRig([{ lockAfterMs: 0 }, { lockAfterMs: 0 }]);
    const a = rig.servers[0]!;
    const c1 = await client();
    const s1 = a.addSession({ remote: { ufrag: c1.ufrag, password: c1.password } });
    await c1.check(rig.target, s1);
    const before = a.remotesOf(s1.ufrag);
    const oldPort = c1.port;
    await c1.rebind();
    expect(c1.port).not.toBe(oldPort);
    // lockAfterMs 0: a check from a second remote address would get 403 (JVB's rule, ice4j #287).
    await c1.check(rig.target, s1);
    expect(a.remotesOf(s1.ufrag)).toEqual(before);
    expect(a.stats.errors403 ?? 0).toBe(0);
    await c1.sendMedia(rig.target, rtp('after'));
    expect((await c1.nextMedia(1000)).data.subarray(2).toString()).toBe('after');
    expect(rig.routes('rebind')).toBe(1);
    expect(rig.routes('probe_won')).toBe(1);
  });

  it('serves two candidates of one ICE agent through one upstream address, each getting its own replies', async () => {
    rig = await startRig([{ lockAfterMs: 0 }, { lockAfterMs: 0 }]);
    const a = rig.servers[0]!;
    // Two 5-tuples of one agent (say Wi-Fi and Ethernet host candidates): same ufrag and password.
    const wifi = await client();
    const eth = track(await FakeIceClient.open({ ufrag: wifi.ufrag, password: wifi.password }));
    const creds = a.addSession({ remote: { ufrag: wifi.ufrag, password: wifi.password } });
    await wifi.check(rig.target, creds);
    await eth.check(rig.target, creds); // a new remote address would get 403 (lockAfterMs 0)
    expect(a.remotesOf(creds.ufrag)).toHaveLength(1);
    expect(rig.proxy.datapath.size).toBe(1);
    expect(rig.proxy.datapath.endpointCount).toBe(2);
    // Downstream follows the 5-tuple that sends media (latching).
    await wifi.sendMedia(rig.target, rtp('w'));
    expect((await wifi.nextMedia(1000)).data.subarray(2).toString()).toBe('w');
    await eth.sendMedia(rig.target, rtp('e'));
    expect((await eth.nextMedia(1000)).data.subarray(2).toString()).toBe('e');
    await wifi.sendMedia(rig.target, rtp('w2'));
    expect((await wifi.nextMedia(1000)).data.subarray(2).toString()).toBe('w2');
    expect(eth.pendingMedia).toBe(0);
    // The server's consent check goes to the current (last media) 5-tuple.
    await a.sendCheck(creds.ufrag, { timeoutMs: 1000 });
    expect(wifi.receivedChecks).toHaveLength(1);
    expect(eth.receivedChecks).toHaveLength(0);
  });

  it('moves nothing on a forged rebinding (right ufrags, wrong password)', async () => {
    rig = await startRig();
    const a = rig.servers[0]!;
    const victim = await client();
    const attacker = await client();
    const s1 = a.addSession({ remote: { ufrag: victim.ufrag, password: victim.password } });
    await victim.check(rig.target, s1);
    const forged = attacker.check(rig.target, s1, {
      username: `${s1.ufrag}:${victim.ufrag}`,
      sign: 'not-the-password-at-all',
      timeoutMs: 1000,
    });
    const err = await rejection(forged);
    expect(err.stunCode).toBe(401);
    expect(rig.routes('rebind_refused')).toBe(1);
    expect(rig.routes('rebind')).toBe(0);
    // Media still reaches the victim, and the attacker's 5-tuple maps to nothing.
    await victim.sendMedia(rig.target, rtp('mine'));
    expect((await victim.nextMedia(1000)).data.subarray(2).toString()).toBe('mine');
    await attacker.sendMedia(rig.target, rtp('steal'));
    await expect(attacker.nextMedia(300)).rejects.toThrow(/no media/);
    expect(rig.drops('unknown_flow_rtp')).toBe(1);
    expect(a.remotesOf(s1.ufrag)).toHaveLength(1);
  });

  it('drops garbage, truncated and non-STUN first packets by reason; no server sees them', async () => {
    rig = await startRig();
    const peer = track(await RawPeer.open());
    const req = (attrs: Array<readonly [number, Buffer]>, password?: string) =>
      encodeStun({
        type: MessageType.BINDING_REQUEST,
        transactionId: randomBytes(12),
        attributes: attrs,
        ...(password === undefined ? {} : { password }),
      });
    const badFingerprint = req([[AttrType.USERNAME, Buffer.from('abcd:efgh')]], 'pw');
    badFingerprint[badFingerprint.length - 1]! ^= 0xff;
    const packets: Array<[string, Buffer]> = [
      ['unknown_flow_dtls', Buffer.from([0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
      ['unknown_flow_rtp', rtp('hello')],
      ['unknown_flow_other', Buffer.from('GET / HTTP/1.1\r\n\r\n')],
      ['unknown_flow_other', Buffer.alloc(0)],
      ['stun_truncated', Buffer.from([0, 1, 0, 0, 0x21, 0x12])],
      [
        'stun_malformed',
        Buffer.concat([req([[AttrType.USERNAME, Buffer.from('a:b')]], 'pw'), Buffer.alloc(3)]),
      ],
      ['no_username', req([], 'pw')],
      ['bad_username', req([[AttrType.USERNAME, Buffer.from('nocolon')]], 'pw')],
      ['no_integrity', req([[AttrType.USERNAME, Buffer.from('abcd:efgh')]])],
      ['bad_fingerprint', badFingerprint],
      [
        'not_binding_request',
        encodeStun({ type: MessageType.BINDING_SUCCESS, transactionId: randomBytes(12) }),
      ],
    ];
    for (let i = 0; i < 200; i++) packets.push(['', randomBytes(1 + (i % 150))]);
    for (const [, p] of packets) await peer.send(rig.target, p);
    const expected = new Map<string, number>();
    for (const [reason] of packets) if (reason) expected.set(reason, (expected.get(reason) ?? 0) + 1);
    const total = () => Array.from(rig!.proxy.datapath.counters.drops).reduce((x, y) => x + y, 0);
    await until(
      () => rig!.proxy.datapath.counters.packetsFromClients === packets.length,
      2000,
      'all received',
    );
    for (const [reason, n] of expected) expect(rig.drops(reason), reason).toBeGreaterThanOrEqual(n);
    expect(total()).toBe(packets.length);
    for (const s of rig.servers) expect(s.stats.datagrams).toBe(0);
    expect(rig.proxy.datapath.size).toBe(0);
    // Still serving: a real session works afterwards.
    const c1 = await client();
    const s1 = rig.servers[1]!.addSession();
    await c1.check(rig.target, s1);
  });

  it('gives an unknown ufrag no answer, probes a bounded number of times, then stops probing it', async () => {
    rig = await startRig([{}, {}], ['--probe-timeout', '400ms', '--probe-rounds', '3']);
    const c1 = await client();
    const unknown = { ufrag: 'nobodyhasthisufrag', password: 'x'.repeat(22) };
    const err = await rejection(
      c1.check(rig.target, unknown, { timeoutMs: 1500, rtoMs: 50, maxRtoMs: 100, maxTransmissions: 10 }),
    );
    expect(err.code).toBe('ICE_CHECK_TIMEOUT');
    for (const s of rig.servers) {
      expect(s.stats.datagrams).toBeGreaterThan(0);
      expect(s.stats.datagrams).toBeLessThanOrEqual(3);
      expect(s.stats.unknownUfragDrops).toBe(s.stats.datagrams);
    }
    expect(rig.routes('probe_failed')).toBe(1);
    expect(rig.drops('probe_rounds') + rig.drops('unknown_ufrag')).toBeGreaterThan(0);
    // Negative cache: later checks for it are dropped without reaching any server.
    const before = rig.servers.map((s) => s.stats.datagrams);
    await c1.check(rig.target, unknown, { timeoutMs: 300, rtoMs: 50 }).catch(() => {});
    expect(rig.servers.map((s) => s.stats.datagrams)).toEqual(before);
    expect(rig.drops('unknown_ufrag')).toBeGreaterThan(0);
  });

  it('expires idle sessions and frees their upstream socket', async () => {
    rig = await startRig([{}, {}], ['--idle-timeout', '300ms']);
    const c1 = await client();
    const s1 = rig.servers[0]!.addSession();
    await c1.check(rig.target, s1);
    expect(rig.proxy.datapath.size).toBe(1);
    expect(rig.proxy.transport.openUpstreams).toBe(1);
    await until(() => rig!.proxy.datapath.size === 0, 2000, 'idle expiry');
    expect(rig.proxy.transport.openUpstreams).toBe(0);
    await c1.sendMedia(rig.target, rtp('late'));
    await until(() => rig!.drops('unknown_flow_rtp') === 1, 1000, 'late media dropped');
  });

  it('keeps a session alive while the client sends, within the idle timeout', async () => {
    rig = await startRig([{}, {}], ['--idle-timeout', '300ms']);
    const c1 = await client();
    const s1 = rig.servers[0]!.addSession();
    await c1.check(rig.target, s1);
    for (let i = 0; i < 8; i++) {
      await c1.sendMedia(rig.target, rtp(`k${i}`));
      await c1.nextMedia(500);
      await sleep(100);
    }
    expect(rig.proxy.datapath.size).toBe(1);
  });

  it('sends a second client ufrag of a learned server ufrag only to its owner', async () => {
    rig = await startRig([{}, {}, {}]);
    const [a, b, c] = rig.servers as [
      (typeof rig.servers)[0],
      (typeof rig.servers)[0],
      (typeof rig.servers)[0],
    ];
    const s1 = b.addSession();
    const c1 = await client();
    await c1.check(rig.target, s1);
    const seen = [a.stats.datagrams, c.stats.datagrams];
    const c2 = await client();
    await c2.check(rig.target, s1);
    expect([a.stats.datagrams, c.stats.datagrams]).toEqual(seen);
    expect(rig.routes('learned')).toBe(1);
  });

  it('moves a 5-tuple to the new owner on an ICE restart', async () => {
    rig = await startRig();
    const [a, b] = rig.servers as [(typeof rig.servers)[0], (typeof rig.servers)[0]];
    const c1 = await client();
    const first = a.addSession();
    await c1.check(rig.target, first);
    await c1.sendMedia(rig.target, rtp('x'));
    await c1.nextMedia(1000);
    const second = b.addSession();
    await c1.check(rig.target, second);
    await c1.sendMedia(rig.target, rtp('y'));
    expect((await c1.nextMedia(1000)).data.subarray(2).toString()).toBe('y');
    expect(b.stats.mediaEchoed).toBe(1);
    expect(a.stats.mediaEchoed).toBe(1);
    expect(rig.routes('restart')).toBe(1);
    await until(() => rig!.proxy.datapath.size === 1, 1000, 'old session closed');
  });

  // `--drain-readiness`: what /readyz answers while draining (docs/peers.md, "Drain"); relaying
  // and the refusal of new sessions are the same either way.
  it.each([
    ['unready', 503, 'draining\n'],
    ['serving', 200, 'draining, serving\n'],
  ])(
    'keeps relaying existing sessions while draining but takes no new ones (--drain-readiness %s: /readyz %i)',
    async (readiness, status, body) => {
      rig = await startRig([{}, {}], ['--drain-readiness', readiness]);
      const c1 = await client();
      const s1 = rig.servers[0]!.addSession();
      await c1.check(rig.target, s1);
      const admin = `http://127.0.0.1:${rig.proxy.adminPort}`;
      expect((await fetch(`${admin}/readyz`)).status).toBe(200);
      const drained = rig.proxy.drain(600);
      const r = await fetch(`${admin}/readyz`);
      expect(r.status).toBe(status);
      expect(await r.text()).toBe(body);
      await c1.sendMedia(rig.target, rtp('still'));
      expect((await c1.nextMedia(500)).data.subarray(2).toString()).toBe('still');
      const c2 = await client();
      await expect(c2.check(rig.target, rig.servers[1]!.addSession(), { timeoutMs: 300 })).rejects.toThrow();
      expect(rig.drops('draining')).toBeGreaterThan(0);
      await drained;
      expect(rig.proxy.datapath.size).toBe(0);
    },
  );
});

describe('prefix routing', () => {
  it('sends a ufrag that starts with a backend token to that backend only', async () => {
    rig = await startRig([{}, {}, {}]);
    const owner = rig.servers[1]!;
    const creds = owner.addSession({ prefix: tokenFor(owner.name) });
    const c1 = await client();
    await c1.check(rig.target, creds);
    await c1.sendMedia(rig.target, rtp('p'));
    await c1.nextMedia(1000);
    expect(rig.routes('prefix')).toBe(1);
    expect(rig.proxy.datapath.counters.probesSent).toBe(1);
    expect(rig.servers[0]!.stats.datagrams).toBe(0);
    expect(rig.servers[2]!.stats.datagrams).toBe(0);
  });

  it('falls back to probing when the token backend stays silent (JVB drops unknown ufrags)', async () => {
    rig = await startRig([{}, {}]);
    const [a, b] = rig.servers as [(typeof rig.servers)[0], (typeof rig.servers)[0]];
    // Lives on jvb-0 but starts with jvb-1's token, as a random ufrag can by chance.
    const creds = a.addSession({ prefix: tokenFor(b.name) });
    const c1 = await client();
    const r = await c1.check(rig.target, creds, { rtoMs: 100 });
    expect(r.transmissions).toBeGreaterThan(1); // the fan-out rode on the client's retransmit
    expect(b.stats.unknownUfragDrops).toBeGreaterThan(0);
    expect(rig.routes('probe_won')).toBe(1);
    expect(rig.routes('prefix')).toBe(0);
  });

  it('falls back at once when the token backend answers with an error (libwebrtc-style 401)', async () => {
    rig = await startRig([{}, { unknownUfrag: '401' }]);
    const [a, b] = rig.servers as [(typeof rig.servers)[0], (typeof rig.servers)[0]];
    const creds = a.addSession({ prefix: tokenFor(b.name) });
    const c1 = await client();
    const r = await c1.check(rig.target, creds, { rtoMs: 500 });
    expect(r.transmissions).toBe(1);
    expect(rig.drops('probe_not_mine')).toBe(1);
    expect(rig.routes('probe_won')).toBe(1);
  });
});
