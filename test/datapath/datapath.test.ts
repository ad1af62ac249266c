import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ACTIVATION_ROUNDS, ACTIVE_WINDOW_MS } from '../../src/admission/source-shares.ts';
import { probeOf } from '../../src/datapath/probe.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from '../../src/defs/reasons.ts';
import { JOIN_HOLD, JOIN_WAIT_MS } from '../../src/session/join-waits.ts';
import { SessionState } from '../../src/session/session.ts';
import {
  check,
  type DatapathRig,
  type DatapathRigOptions,
  type FakeBackend,
  type FakeUpstream,
  type IceCreds,
  makeDatapathRig,
  media,
} from '../fixtures/fake-transport.ts';
import {
  buildBindingError,
  buildBindingRequest,
  buildBindingSuccess,
  encodeStun,
  randomBase32,
  randomIceChars,
} from '../fixtures/stun-bytes.ts';

/**
 * The data path without sockets: a fake transport, an injected clock, real STUN bytes. Each test
 * drives one behaviour and checks what was sent where, the counters and the flow events. The
 * last test checks that every drop reason and every close reason was produced by some test here.
 */

const rigs: DatapathRig[] = [];
function rig(o: DatapathRigOptions = {}): DatapathRig {
  const r = makeDatapathRig(o);
  rigs.push(r);
  return r;
}

const drops = (r: DatapathRig, label: string): number => {
  const i = DROP_REASON_LABELS.indexOf(label);
  if (i < 0) throw new Error(`no drop reason ${label}`);
  return r.datapath.counters.drops[i]!;
};
const closedBy = (r: DatapathRig, reason: (typeof CLOSE_REASONS)[number]): number =>
  r.datapath.counters.closed[CLOSE_REASONS.indexOf(reason)]!;
const routes = (r: DatapathRig, label: string): number =>
  r.datapath.counters.routes[ROUTE_LABELS.indexOf(label)]!;
const totalDrops = (r: DatapathRig): number => r.datapath.counters.drops.reduce((a, b) => a + b, 0);

const A = { address: '192.0.2.1', port: 5000 };
const A2 = { address: '192.0.2.1', port: 5001 };
const B = { address: '198.51.100.7', port: 6000 };
const C = { address: '2001:db8::7', port: 7000 };

type Tuple = { address: string; port: number };
const send = (r: DatapathRig, buf: Buffer, t: Tuple): void => r.fromClient(buf, t.address, t.port);

/** Opens and establishes a session on `owner` from `t` (fan-out unless `prefix`). */
function established(
  r: DatapathRig,
  owner: FakeBackend,
  t: Tuple,
  opts: { prefix?: boolean; creds?: IceCreds } = {},
): { creds: IceCreds; up: FakeUpstream; id: number } {
  const creds = opts.creds ?? owner.addSession({ prefix: opts.prefix ?? false });
  send(r, check(creds), t);
  const s = r.sessionOf(creds.serverUfrag);
  const up = r.transport.of(s);
  r.answerAll(up);
  expect(s.state).toBe(SessionState.Established);
  expect(s.backend?.name).toBe(owner.name);
  return { creds, up, id: s.id };
}

const unknownCreds = (): IceCreds => ({
  serverUfrag: randomBase32(14),
  clientUfrag: randomIceChars(4),
  password: randomIceChars(24),
});

const isStunResponse = (buf: Buffer, kind: 'success' | 'error'): boolean =>
  buf[0] === 0x01 && buf[1] === (kind === 'success' ? 0x01 : 0x11);

/** A check whose MESSAGE-INTEGRITY value is `length` bytes (a real one has 20). */
function signedWith(username: string, length: number): Buffer {
  return encodeStun({
    type: 0x0001,
    transactionId: randomBytes(12),
    attributes: [
      [0x0006, Buffer.from(username)],
      [0x0008, randomBytes(length)],
    ],
  });
}

describe('first datagrams of unknown flows that are not usable checks', () => {
  it('drops each by its own reason, sends nothing and opens no socket', () => {
    const r = rig();
    const creds = r.backends[0]!.addSession();
    const good = check(creds);
    const cases: [string, Buffer][] = [
      ['unknown_flow_dtls', Buffer.from([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1])],
      ['unknown_flow_rtp', media('x')],
      ['unknown_flow_other', Buffer.alloc(0)],
      ['unknown_flow_other', Buffer.from([0xff, 1, 2, 3])],
      ['stun_truncated', Buffer.from([0, 1, 0, 0, 0x21, 0x12])],
      ['stun_malformed', Buffer.concat([good, Buffer.alloc(4)])], // length field ≠ datagram
      ['stun_malformed', Buffer.from(good).fill(0xee, 4, 5)], // magic cookie
      [
        'stun_bad_attribute',
        (() => {
          const b = encodeStun({ type: 0x0001, transactionId: randomBytes(12), fingerprint: false });
          const attr = Buffer.from([0, 6, 0, 100, 0x61, 0x3a, 0x62, 0]); // USERNAME of 100 bytes, 4 present
          const out = Buffer.concat([b, attr]);
          out.writeUInt16BE(attr.length, 2);
          return out;
        })(),
      ],
      [
        'not_binding_request',
        buildBindingSuccess({ transactionId: randomBytes(12), mapped: A, password: 'x' }),
      ],
      ['no_username', encodeStun({ type: 0x0001, transactionId: randomBytes(12), password: 'x'.repeat(22) })],
      ['bad_username', buildBindingRequest({ username: 'nocolon', password: 'x'.repeat(22) })],
      ['bad_username', buildBindingRequest({ username: ':emptyserver', password: 'x'.repeat(22) })],
      // Fuzz findings: checks of a live backend's ufrag that no backend could verify; dropped, never
      // fanned out (RFC 8489 §14.5, RFC 8445 §5.3, RFC 8489 §14.3).
      ['stun_bad_attribute', signedWith(`${creds.serverUfrag}:abcd`, 16)],
      ['stun_bad_attribute', signedWith(`${creds.serverUfrag}:abcd`, 21)],
      ['bad_username', buildBindingRequest({ username: `${creds.serverUfrag}:`, password: 'x'.repeat(22) })],
      [
        'bad_username',
        encodeStun({
          type: 0x0001,
          transactionId: randomBytes(12),
          attributes: [
            [0x0006, Buffer.concat([Buffer.from(`${creds.serverUfrag}:`), Buffer.from([0xc3, 0x28])])],
          ],
          password: creds.password,
        }),
      ],
      ['no_integrity', buildBindingRequest({ username: `${creds.serverUfrag}:abcd` })],
      ['bad_fingerprint', Buffer.from(good).fill(good.at(-1)! ^ 1, good.length - 1)],
    ];
    const expected = new Map<string, number>();
    for (const [reason, buf] of cases) {
      send(r, buf, A);
      expected.set(reason, (expected.get(reason) ?? 0) + 1);
    }
    for (const [reason, n] of expected) expect(drops(r, reason), reason).toBe(n);
    expect(totalDrops(r)).toBe(cases.length);
    expect(r.transport.upstreams).toHaveLength(0);
    expect(r.transport.toClients).toHaveLength(0);
    expect(r.datapath.counters.probesSent).toBe(0);
    expect(r.datapath.size).toBe(0);
    // The good check from the same 5-tuple is still routed: nothing above left state behind.
    send(r, good, A);
    expect(r.datapath.size).toBe(1);
  });
});

describe('admission', () => {
  it('strict prefix: no token → dropped before any socket; a token → one directed datagram', () => {
    const r = rig({ options: { strictPrefix: true } });
    const [b0, b1] = r.backends as [FakeBackend, FakeBackend];
    send(r, check(b0.addSession()), A);
    expect(drops(r, 'strict_prefix')).toBe(1);
    expect(r.transport.upstreams).toHaveLength(0);

    const creds = b1.addSession({ prefix: true });
    send(r, check(creds), A);
    const up = r.transport.of(r.sessionOf(creds.serverUfrag));
    expect(up.sent.map((s) => [s.via, s.address])).toEqual([['sendTo', b1.address]]);
    expect(r.datapath.counters.directedProbesSent).toBe(1);

    // The token owner stays silent: the retransmit goes to it again, never fanned out.
    send(r, check(creds), A);
    expect(up.sent.map((s) => s.address)).toEqual([b1.address, b1.address]);
    expect(up.sentTo(b0)).toHaveLength(0);
    expect(r.answerAll(up)).toBe(2);
    expect(r.sessionOf(creds.serverUfrag).state).toBe(SessionState.Established);
    expect(routes(r, 'prefix')).toBe(1);
    expect(
      r.transport.sentToClient(A.address, A.port).filter((b) => isStunResponse(b, 'success')),
    ).toHaveLength(2);
  });

  it('negative cache: a ufrag nobody claimed is refused for --negative-ttl, then probed again', () => {
    const r = rig({ options: { negativeTtlMs: 10_000 } });
    const creds = unknownCreds();
    send(r, check(creds), A);
    const up = r.transport.of(r.sessionOf(creds.serverUfrag));
    expect(up.sent).toHaveLength(2);
    r.answerAll(up); // both 401
    expect(drops(r, 'probe_not_mine')).toBe(2);
    expect(closedBy(r, 'probe_failed')).toBe(1);
    expect(routes(r, 'probe_failed')).toBe(1);
    expect(up.closed).toBe(true);

    send(r, check(creds), A);
    send(r, check(creds, { clientUfrag: 'othr' }), B); // the same server ufrag from elsewhere
    expect(drops(r, 'unknown_ufrag')).toBe(2);
    r.tick(9_999);
    send(r, check(creds), A);
    expect(drops(r, 'unknown_ufrag')).toBe(3);
    expect(r.transport.upstreams).toHaveLength(1);
    r.tick(1);
    send(r, check(creds), A);
    expect(r.transport.upstreams).toHaveLength(2);
    expect(r.transport.upstreams[1]!.sent).toHaveLength(2);
  });

  it('negative cache: cleared when the backend set changes (a new pod may own the ufrag)', () => {
    const r = rig();
    const creds = unknownCreds();
    send(r, check(creds), A);
    r.answerAll(r.transport.of(r.sessionOf(creds.serverUfrag)));
    send(r, check(creds), A);
    expect(drops(r, 'unknown_ufrag')).toBe(1);
    r.datapath.updateBackends([
      ...r.backends.map((b) => b.spec),
      { name: 'jvb-9', address: '10.0.0.9', port: 10_000, state: 'ready' },
    ]);
    send(r, check(creds), A);
    expect(drops(r, 'unknown_ufrag')).toBe(1);
    const up = r.transport.of(r.sessionOf(creds.serverUfrag));
    expect(up.sent.map((s) => s.address).sort()).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.9']);
  });

  it('no backends: dropped (none known, or none ready)', () => {
    const r = rig();
    r.datapath.updateBackends(r.backends.map((b) => ({ ...b.spec, state: 'unready' as const })));
    send(r, check(unknownCreds()), A);
    r.datapath.updateBackends([]);
    send(r, check(unknownCreds()), B);
    expect(drops(r, 'no_backends')).toBe(2);
    expect(r.transport.upstreams).toHaveLength(0);
  });

  it('session cap, flows per source, port pool: refused before anything is bound', () => {
    const r = rig({ options: { maxSessions: 2, maxPendingPerSource: 1 } });
    send(r, check(unknownCreds()), A);
    send(r, check(unknownCreds()), A2); // same address, another port: a second pending fan-out
    expect(drops(r, 'source_limit')).toBe(1);
    // The directed class counts separately: a prefix-routed flow from the same address passes.
    send(r, check(r.backends[0]!.addSession({ prefix: true })), A2);
    expect(r.datapath.size).toBe(2);
    send(r, check(unknownCreds()), B);
    expect(drops(r, 'session_limit')).toBe(1);
    expect(r.transport.upstreams).toHaveLength(2);

    const p = rig({ ports: { first: 40_000, last: 40_000, quarantineMs: 60_000 } });
    send(p, check(unknownCreds()), A);
    send(p, check(unknownCreds()), B);
    expect(drops(p, 'ports_exhausted')).toBe(1);
    expect(p.transport.upstreams.map((u) => u.localPort)).toEqual([40_000]);
    expect(p.pool!.available).toBe(0);
  });

  it('budgets: source share, then the global fan-out budget, then the global directed budget', () => {
    // 2 backends: a fan-out costs 2. A source that activates may make ACTIVATION_ROUNDS (8)
    // rounds at once per class; the global buckets hold one second of their rate.
    const r = rig({ options: { probeRate: 40, directedProbeRate: 2, maxPendingPerSource: 20 } });
    let port = 5000;
    for (let i = 0; i < ACTIVATION_ROUNDS; i++) send(r, check(unknownCreds()), { ...A, port: port++ });
    expect(r.datapath.counters.probesSent).toBe(16);
    send(r, check(unknownCreds()), { ...A, port: port++ });
    expect(drops(r, 'source_share')).toBe(1); // A's share is spent, the global bucket is not
    for (let i = 0; i < ACTIVATION_ROUNDS; i++) send(r, check(unknownCreds()), { ...B, port: port++ });
    for (let i = 0; i < 4; i++) send(r, check(unknownCreds()), { ...C, port: port++ });
    expect(r.datapath.counters.probesSent).toBe(40);
    send(r, check(unknownCreds()), { ...C, port: port++ });
    expect(drops(r, 'fanout_budget')).toBe(1); // C still has share, the global bucket is empty
    expect(r.datapath.counters.probesSent).toBe(40);

    // Directed: rate 2 (one backend per probe).
    const b0 = r.backends[0]!;
    send(r, check(b0.addSession({ prefix: true })), { ...A, port: port++ });
    send(r, check(b0.addSession({ prefix: true })), { ...A, port: port++ });
    expect(r.datapath.counters.directedProbesSent).toBe(2);
    send(r, check(b0.addSession({ prefix: true })), { ...A, port: port++ });
    expect(drops(r, 'directed_budget')).toBe(1);

    // Both global buckets refill over time: a second later they are full again.
    r.tick(1000);
    const D = { address: '203.0.113.77', port: 1 };
    send(r, check(unknownCreds()), D);
    send(r, check(b0.addSession({ prefix: true })), { ...D, port: 2 });
    expect(r.datapath.counters.probesSent).toBe(40 + 2 + 2 + 1);
    expect(r.datapath.counters.directedProbesSent).toBe(3);
  });

  it('source shares: with K active sources each gets rate / K per second', () => {
    // One backend (a fan-out costs 1), rate 40, four sources that each try 100 checks a second.
    // The global bucket is taken out of the picture (unlimited) so only the shares decide.
    const unlimited = { take: () => true };
    const r = rig({
      backends: 1,
      options: { probeRate: 40, maxPendingPerSource: 100_000, maxSessions: 100_000, probeTimeoutMs: 100 },
      budgets: [unlimited, unlimited],
    });
    const sources = ['192.0.2.10', '192.0.2.11', '192.0.2.12', '2001:db8:1::1'];
    const admitted = new Map<string, number>(sources.map((a) => [a, 0]));
    let port = 10_000;
    let lastSecond = false;
    for (let t = 0; t < 3000; t += 10) {
      lastSecond = t >= 2000;
      for (const a of sources) {
        const before = r.datapath.counters.probesSent;
        send(r, check(unknownCreds()), { address: a, port: port++ });
        if (lastSecond && r.datapath.counters.probesSent > before) admitted.set(a, admitted.get(a)! + 1);
      }
      if (t % 100 === 0) r.tick(10);
      else r.clock.now += 10;
    }
    // 40 / 4 = 10 per second each (the activation credit was spent in the first second).
    for (const [a, n] of admitted) expect(n, a).toBeGreaterThanOrEqual(9);
    for (const [a, n] of admitted) expect(n, a).toBeLessThanOrEqual(11);
    expect(drops(r, 'fanout_budget')).toBe(0);
  });

  it('source shares: a new source among flooders still gets its share', () => {
    // Three flooders send 1500 fan-out checks/s each against a budget of 30/s (2 backends: 15
    // flows/s). A client starts at 3 s and retransmits every 100 ms, each time right after the
    // flooders' datagrams of that millisecond: with one first-come budget it would never be
    // admitted; with shares, its own share refills (30 / 4 per second) and the flooders' do not
    // cover the whole global rate any more once it is active.
    const r = rig({
      options: { probeRate: 30, maxPendingPerSource: 100_000, maxSessions: 100_000, probeTimeoutMs: 500 },
    });
    const flooders = ['203.0.113.1', '203.0.113.2', '203.0.113.3'];
    const victim = r.backends[1]!.addSession();
    const victimSession = () => [...r.datapath.sessions].find((s) => s.serverUfrag === victim.serverUfrag);
    let port = 1;
    let tries = 0;
    let routedAt = -1;
    for (let t = 0; t < 5000 && routedAt < 0; t += 10) {
      for (const a of flooders)
        for (let i = 0; i < 5; i++) send(r, check(unknownCreds()), { address: a, port: port++ });
      if (t >= 3000 && t % 100 === 0) {
        tries++;
        send(r, check(victim), B);
        if (victimSession() !== undefined) routedAt = t;
      }
      if (t % 100 === 0) r.tick(10);
      else r.clock.now += 10;
    }
    expect(drops(r, 'source_share') + drops(r, 'fanout_budget')).toBeGreaterThan(4000);
    expect(routedAt, 'the client was admitted during the flood').toBeGreaterThanOrEqual(3000);
    // Observed: admitted on the 11th attempt (1.0 s after the first); the issue asks for 5 s.
    expect(tries).toBeLessThanOrEqual(20);
    const s = victimSession()!;
    r.answerAll(r.transport.of(s));
    expect(s.state).toBe(SessionState.Established);
  });

  it('budget classes: a random-ufrag flood does not consume the directed budget', () => {
    const r = rig({ options: { probeRate: 10, directedProbeRate: 10, maxPendingPerSource: 1000 } });
    const live = established(r, r.backends[0]!, { address: A.address, port: 4000 });
    r.tick(1000);
    const before = r.datapath.counters.probesSent;
    let port = 1;
    // The flood comes from the victim's own address (an attacker behind the same NAT) and elsewhere.
    for (let i = 0; i < 200; i++) {
      send(r, check(unknownCreds()), { address: A.address, port: port++ });
      send(r, check(unknownCreds()), { address: B.address, port: port++ });
    }
    expect(r.datapath.counters.probesSent - before).toBeLessThanOrEqual(10);
    const creds = r.backends[1]!.addSession({ prefix: true });
    send(r, check(creds), A);
    const s = r.sessionOf(creds.serverUfrag);
    expect(r.transport.of(s).sent).toHaveLength(1);
    r.answerAll(r.transport.of(s));
    expect(s.state).toBe(SessionState.Established);
    // A rebinding check of a live session is directed too (one datagram to its owner).
    send(r, check(live.creds), { address: A.address, port: 4001 });
    r.answerAll(live.up);
    expect(r.datapath.lookup(A.address, 4001)?.session.id).toBe(live.id);
  });

  it('draining: new flows are dropped, established and probing flows continue', () => {
    const r = rig();
    const [b0, b1] = r.backends as [FakeBackend, FakeBackend];
    const e = established(r, b0, A);
    const probing = unknownCreds();
    send(r, check(probing), C);
    r.datapath.stopAccepting();
    expect(r.datapath.accepting).toBe(false);
    send(r, check(b1.addSession()), B);
    expect(drops(r, 'draining')).toBe(1);
    expect(r.transport.upstreams).toHaveLength(2);
    // The established flow keeps flowing both ways, and may still rebind (same ufrag pair).
    send(r, media('up'), A);
    expect(e.up.sent.at(-1)!.buf.toString()).toContain('up');
    e.up.inject(media('down'), b0);
    expect(r.transport.sentToClient(A.address, A.port).at(-1)!.toString()).toContain('down');
    send(r, check(e.creds), B);
    r.answerAll(e.up);
    expect(r.datapath.lookup(B.address, B.port)?.session.id).toBe(e.id);
    // The probing flow still gets its retransmit rounds.
    const before = r.transport.of(r.sessionOf(probing.serverUfrag)).sent.length;
    send(r, check(probing), C);
    expect(r.transport.of(r.sessionOf(probing.serverUfrag)).sent.length).toBe(before + 2);
    // Sessions end as they idle; at the drain deadline the rest end as `shutdown`.
    r.tick(3000); // probe timeout
    expect(r.datapath.size).toBe(1);
    r.datapath.closeAll();
    expect(closedBy(r, 'shutdown')).toBe(1);
    expect(r.datapath.size).toBe(0);
    expect(r.transport.open()).toHaveLength(0);
    expect(
      r.events.filter((ev) => ev.type === 'closed').map((ev) => ev.type === 'closed' && ev.reason),
    ).toEqual(['probe_failed', 'shutdown']);
  });
});

describe('probing', () => {
  it('drops media, extra rounds and answers that match no request while the owner is unknown', () => {
    const r = rig({ options: { probeRounds: 2 } });
    const b1 = r.backends[1]!;
    const creds = b1.addSession();
    const first = check(creds);
    send(r, first, A);
    const s = r.sessionOf(creds.serverUfrag);
    const up = r.transport.of(s);
    send(r, media('early'), A);
    expect(drops(r, 'probing_not_stun')).toBe(1);
    send(r, check(creds), A); // round 2
    send(r, check(creds), A); // over the limit
    expect(drops(r, 'probe_rounds')).toBe(1);
    expect(up.sent).toHaveLength(4);
    // A malformed retransmit is dropped by its parse reason.
    send(r, Buffer.from(first).fill(first.at(-1)! ^ 1, first.length - 1), A);
    expect(drops(r, 'bad_fingerprint')).toBe(1);
    // Someone who is not a candidate; a candidate's answer to no outstanding transaction.
    up.inject(buildBindingSuccess({ transactionId: first.subarray(8, 20), mapped: A, password: 'x' }), {
      address: '10.9.9.9',
      port: 10_000,
    });
    expect(drops(r, 'upstream_unexpected_source')).toBe(1);
    up.inject(buildBindingSuccess({ transactionId: randomBytes(12), mapped: A, password: 'x' }), b1);
    up.inject(media('not a response'), b1);
    expect(drops(r, 'probe_stale')).toBe(2);
    expect(s.state).toBe(SessionState.Probing);
    // Nothing of that reached the client; the real answer does.
    expect(r.transport.toClients).toHaveLength(0);
    r.answerAll(up, { only: [b1] });
    expect(s.state).toBe(SessionState.Established);
    expect(s.backend?.name).toBe(b1.name);
    // The loser's late 401s (before connect() took effect), and a stranger, on the established socket.
    expect(r.answerAll(up)).toBe(2);
    expect(drops(r, 'probe_stale')).toBe(4);
    up.inject(media('stranger'), { address: '10.9.9.9', port: 1 });
    expect(drops(r, 'upstream_unexpected_source')).toBe(2);
    expect(r.transport.sentToClient(A.address, A.port).every((b) => isStunResponse(b, 'success'))).toBe(true);
  });

  it('a retransmit after every candidate left is dropped and counted (no_backends)', () => {
    const r = rig({ options: { strictPrefix: true } });
    const [b0, b1] = r.backends as [FakeBackend, FakeBackend];
    const creds = b1.addSession({ prefix: true });
    send(r, check(creds), A);
    const up = r.transport.of(r.sessionOf(creds.serverUfrag));
    r.datapath.updateBackends([b0.spec]); // the token owner's pod is gone
    send(r, check(creds), A);
    expect(drops(r, 'no_backends')).toBe(1);
    expect(up.sent).toHaveLength(1);
    r.tick(3000);
    expect(closedBy(r, 'probe_failed')).toBe(1);
  });

  it('all candidates refusing → probe_failed at once; silence → probe_failed at the probe timeout', () => {
    const r = rig();
    const creds = unknownCreds();
    send(r, check(creds), A);
    const s = r.sessionOf(creds.serverUfrag);
    r.answerAll(r.transport.of(s), { only: [r.backends[0]!] });
    expect(s.state).toBe(SessionState.Probing); // one refused, one still to answer
    r.answerAll(r.transport.of(s));
    expect(s.state).toBe(SessionState.Closed);
    expect(r.events).toEqual([{ type: 'closed', session: s.id, reason: 'probe_failed', established: false }]);

    const silent = unknownCreds();
    send(r, check(silent), B);
    const t = r.sessionOf(silent.serverUfrag);
    r.tick(2999);
    expect(t.state).toBe(SessionState.Probing);
    r.tick(1);
    expect(t.state).toBe(SessionState.Closed);
    expect(closedBy(r, 'probe_failed')).toBe(2);
    expect(routes(r, 'probe_failed')).toBe(2);
    // A late answer on the closed session's socket goes nowhere.
    r.transport
      .of(t)
      .inject(buildBindingError({ transactionId: randomBytes(12), code: 401 }), r.backends[0]!);
    expect(drops(r, 'upstream_no_session')).toBe(1);
    expect(r.transport.open()).toHaveLength(0);
    expect(r.datapath.endpointCount).toBe(0);
  });

  it('stale learned entry: the learned backend says 401 → fan-out to the others at once', () => {
    const r = rig({ backends: 3 });
    const [b0, b1, b2] = r.backends as [FakeBackend, FakeBackend, FakeBackend];
    const e = established(r, b0, A); // learns serverUfrag → jvb-0
    r.datapath.closeAll();
    // The ufrag now lives on jvb-2 (the learned entry is stale).
    b0.ufrags.delete(e.creds.serverUfrag);
    b2.ufrags.set(e.creds.serverUfrag, e.creds.password);
    send(r, check(e.creds, { clientUfrag: 'nw01' }), B);
    const s = r.sessionOf(e.creds.serverUfrag);
    const up = r.transport.of(s);
    expect(up.sent.map((x) => x.address)).toEqual([b0.address]);
    r.answerAll(up); // 401 from jvb-0: fan out to jvb-1 and jvb-2 now, no retransmit needed
    expect(
      up.sent
        .map((x) => x.address)
        .slice(1)
        .sort(),
    ).toEqual([b1.address, b2.address]);
    r.answerAll(up);
    expect(s.state).toBe(SessionState.Established);
    expect(s.backend?.name).toBe(b2.name);
    expect(routes(r, 'probe_won')).toBe(2);
    expect(routes(r, 'learned')).toBe(0);
  });

  it('stale learned entry: a silent learned backend → fan-out on the retransmit', () => {
    const r = rig({ backends: 3 });
    const [b0, b1, b2] = r.backends as [FakeBackend, FakeBackend, FakeBackend];
    const e = established(r, b0, A);
    r.datapath.closeAll();
    b0.ufrags.delete(e.creds.serverUfrag);
    b1.ufrags.set(e.creds.serverUfrag, e.creds.password);
    send(r, check(e.creds, { clientUfrag: 'nw02' }), B);
    const s = r.sessionOf(e.creds.serverUfrag);
    const up = r.transport.of(s);
    expect(up.sent.map((x) => x.address)).toEqual([b0.address]);
    r.tick(500); // jvb-0 silent
    expect(up.sent).toHaveLength(1);
    send(r, check(e.creds, { clientUfrag: 'nw02' }), B);
    expect(
      up.sent
        .map((x) => x.address)
        .slice(1)
        .sort(),
    ).toEqual([b0.address, b1.address, b2.address]);
    r.answerAll(up, { only: [b1] });
    expect(s.backend?.name).toBe(b1.name);
    // A correct learned entry: one directed datagram, route `learned`.
    r.datapath.closeAll();
    send(r, check(e.creds, { clientUfrag: 'nw03' }), C);
    const t = r.sessionOf(e.creds.serverUfrag);
    expect(r.transport.of(t).sent.map((x) => x.address)).toEqual([b1.address]);
    r.answerAll(r.transport.of(t));
    expect(routes(r, 'learned')).toBe(1);
  });
});

describe('ICE restarts and credential changes', () => {
  /** An established session on jvb-0 from A, and new credentials for the restart on `to`. */
  function restartRig(opts: DatapathRigOptions = {}) {
    const r = rig(opts);
    const [b0, b1] = r.backends as [FakeBackend, FakeBackend];
    const e = established(r, b0, A);
    r.events.length = 0;
    return { r, b0, b1, e, old: r.sessionOf(e.creds.serverUfrag) };
  }

  it('a restart retransmitted while probing is another round of the same probing session; then it wins', () => {
    const { r, b1, e, old } = restartRig();
    const next = b1.addSession();
    send(r, check(next), A);
    const p = r.sessionOf(next.serverUfrag);
    expect(p.state).toBe(SessionState.Probing);
    expect(old.restartOf).toBe(p);
    const pu = r.transport.of(p);
    expect(pu.sent).toHaveLength(2);
    send(r, check(next), A);
    expect(r.sessionOf(next.serverUfrag)).toBe(p);
    expect(pu.sent).toHaveLength(4);
    expect(probeOf(p).rounds).toBe(2);
    // Media keeps flowing on the old session meanwhile.
    send(r, media('still'), A);
    expect(e.up.sent.at(-1)!.buf.toString()).toContain('still');
    r.answerAll(pu);
    expect(p.state).toBe(SessionState.Established);
    expect(old.state).toBe(SessionState.Closed);
    expect(r.datapath.lookup(A.address, A.port)?.session).toBe(p);
    expect(routes(r, 'restart')).toBe(1);
    expect(closedBy(r, 'restart')).toBe(1);
    expect(e.up.closed).toBe(true);
    expect(r.events).toEqual([
      { type: 'endpointLeft', session: old.id, endpoint: '192.0.2.1:5000' },
      { type: 'closed', session: old.id, reason: 'restart', established: true },
      { type: 'established', session: p.id, endpoint: '192.0.2.1:5000' },
    ]);
    send(r, media('new'), A);
    expect(pu.sent.at(-1)!.buf.toString()).toContain('new');
    expect(pu.sent.at(-1)!.via).toBe('send');
  });

  it('a restart superseded by another: the first probing session ends, the second wins', () => {
    const { r, b0, b1, old } = restartRig();
    const first = b1.addSession();
    const second = b0.addSession();
    send(r, check(first), A);
    const p1 = r.sessionOf(first.serverUfrag);
    send(r, check(second), A);
    expect(p1.state).toBe(SessionState.Closed);
    expect(closedBy(r, 'superseded')).toBe(1);
    const p2 = r.sessionOf(second.serverUfrag);
    expect(old.restartOf).toBe(p2);
    // A late answer for the superseded restart changes nothing.
    r.answerAll(r.transport.of(p1));
    expect(drops(r, 'upstream_no_session')).toBe(2);
    expect(old.state).toBe(SessionState.Established);
    r.answerAll(r.transport.of(p2));
    expect(p2.state).toBe(SessionState.Established);
    expect(p2.backend?.name).toBe(b0.name);
    expect(old.state).toBe(SessionState.Closed);
    expect(r.datapath.size).toBe(1);
    expect(r.transport.open().map((u) => u.localPort)).toEqual([r.transport.of(p2).localPort]);
  });

  it('a failed restart: the old session keeps flowing', () => {
    const { r, b0, e, old } = restartRig();
    const bogus = unknownCreds();
    send(r, check(bogus), A);
    const p = r.sessionOf(bogus.serverUfrag);
    r.answerAll(r.transport.of(p)); // both 401
    expect(p.state).toBe(SessionState.Closed);
    expect(old.state).toBe(SessionState.Established);
    expect(r.datapath.lookup(A.address, A.port)?.session).toBe(old);
    send(r, media('after'), A);
    expect(e.up.sent.at(-1)!.buf.toString()).toContain('after');
    e.up.inject(media('down'), b0);
    expect(r.transport.sentToClient(A.address, A.port).at(-1)!.toString()).toContain('down');
    expect(r.events).toEqual([{ type: 'closed', session: p.id, reason: 'probe_failed', established: false }]);
    // Another restart later still works.
    const next = b0.addSession();
    send(r, check(next), A);
    r.answerAll(r.transport.of(r.sessionOf(next.serverUfrag)));
    expect(r.sessionOf(next.serverUfrag).state).toBe(SessionState.Established);
    expect(old.state).toBe(SessionState.Closed);
  });

  it('an ICE restart checked from two endpoints of one session: answers reach who asked, both move', () => {
    // A browser restarting ICE sends the new credentials' checks from each of its candidates;
    // here A (host) and B (server-reflexive) are both endpoints of the session.
    const { r, b1, e, old } = restartRig();
    send(r, check(e.creds), B);
    r.answerAll(e.up);
    expect(old.endpoints).toHaveLength(2);
    const next = b1.addSession();
    const fromB = check(next);
    const fromA = check(next);
    send(r, fromB, B);
    const p = r.sessionOf(next.serverUfrag);
    send(r, fromA, A); // the same new pair from the session's other endpoint: the same probing flow
    expect(r.sessionOf(next.serverUfrag)).toBe(p);
    const pu = r.transport.of(p);
    // jvb-1 answers A's check first: A's 5-tuple gets the success and moves to the new session.
    const aToB1 = pu.sent.find((x) => x.address === b1.address && x.buf.equals(fromA))!;
    pu.inject(b1.answer(aToB1.buf, A)!, b1);
    expect(p.state).toBe(SessionState.Established);
    const lastToA = r.transport.sentToClient(A.address, A.port).at(-1)!;
    expect(lastToA.subarray(8, 20)).toEqual(fromA.subarray(8, 20));
    expect(
      r.transport
        .sentToClient(B.address, B.port)
        .some((x) => x.subarray(8, 20).equals(fromA.subarray(8, 20))),
    ).toBe(false);
    expect(r.datapath.lookup(A.address, A.port)?.session).toBe(p);
    expect(r.datapath.lookup(B.address, B.port)?.session).toBe(old); // no success for B yet
    // B checks the new pair again: it is a rebinding of the new session (through its socket), not
    // another restart with a second upstream port for the same ICE session.
    const again = check(next);
    send(r, again, B);
    expect(r.datapath.size).toBe(2);
    expect(pu.sent.at(-1)).toMatchObject({ via: 'send', address: b1.address });
    r.answerAll(pu);
    expect(r.datapath.lookup(B.address, B.port)?.session).toBe(p);
    expect(old.state).toBe(SessionState.Closed);
    expect(r.datapath.size).toBe(1);
    expect(p.endpoints).toHaveLength(2);
  });

  it('only the client ufrag changes: the same backend decides, no restart', () => {
    const { r, e, old } = restartRig();
    const req = check(e.creds, { clientUfrag: 'chg1' });
    send(r, req, A);
    expect(r.transport.upstreams).toHaveLength(1);
    expect(old.restartOf).toBeUndefined();
    expect(e.up.sent.at(-1)).toMatchObject({ via: 'send', address: '10.0.0.1' });
    r.answerAll(e.up);
    const last = r.transport.sentToClient(A.address, A.port).at(-1)!;
    expect(isStunResponse(last, 'success')).toBe(true);
    expect(last.subarray(8, 20)).toEqual(req.subarray(8, 20));
    expect(r.events).toEqual([]);
  });

  it('credentials changing while probing: the probing flow ends and routing starts over', () => {
    const r = rig();
    const b1 = r.backends[1]!;
    const wrong = unknownCreds();
    send(r, check(wrong), A);
    const p = r.sessionOf(wrong.serverUfrag);
    const right = b1.addSession();
    send(r, check(right), A);
    expect(p.state).toBe(SessionState.Closed);
    expect(closedBy(r, 'superseded')).toBe(1);
    expect(closedBy(r, 'restart')).toBe(0);
    const s = r.sessionOf(right.serverUfrag);
    expect(r.datapath.lookup(A.address, A.port)?.session).toBe(s);
    r.answerAll(r.transport.of(s));
    expect(s.state).toBe(SessionState.Established);
    expect(r.events.map((ev) => ev.type)).toEqual(['closed', 'established']);
    expect(r.datapath.pending(A.address, 0)).toBe(0);
  });
});

describe('sessions over time', () => {
  it('idle extra endpoints leave while the session lives; the session idles out last', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    send(r, check(e.creds), B); // a second candidate of the same agent (or a NAT rebinding)
    expect(r.datapath.lookup(B.address, B.port)).toBeUndefined(); // not before the success
    r.answerAll(e.up);
    expect(r.datapath.lookup(B.address, B.port)?.session.id).toBe(e.id);
    expect(r.datapath.endpointCount).toBe(2);
    for (let t = 0; t < 70; t++) {
      r.tick(1000);
      send(r, media(`a${t}`), A);
    }
    expect(r.datapath.lookup(B.address, B.port)).toBeUndefined();
    expect(r.datapath.lookup(A.address, A.port)?.session.id).toBe(e.id);
    expect(r.datapath.endpointCount).toBe(1);
    r.tick(60_000);
    expect(r.datapath.size).toBe(0);
    expect(closedBy(r, 'idle')).toBe(1);
    expect(r.datapath.endpointCount).toBe(0);
    // After the session is gone, media from its old 5-tuple is unknown traffic.
    send(r, media('late'), A);
    expect(drops(r, 'unknown_flow_rtp')).toBe(1);
  });

  it('flow events: each exactly once, in order', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    send(r, check(e.creds), B);
    r.answerAll(e.up); // B joins and becomes current
    send(r, media('1'), B); // already current: no event
    send(r, media('2'), A); // latch back to A
    send(r, media('3'), A); // no change: no event
    e.up.inject(media('down'), b0);
    expect(r.transport.sentToClient(A.address, A.port).at(-1)!.toString()).toContain('down');
    for (let t = 0; t < 61; t++) {
      r.tick(1000);
      send(r, media('keep'), A);
    }
    r.tick(60_000);
    const id = e.id;
    expect(r.events).toEqual([
      { type: 'established', session: id, endpoint: '192.0.2.1:5000' },
      { type: 'endpointJoined', session: id, endpoint: '198.51.100.7:6000' },
      { type: 'currentChanged', session: id, endpoint: '198.51.100.7:6000' },
      { type: 'currentChanged', session: id, endpoint: '192.0.2.1:5000' },
      { type: 'endpointLeft', session: id, endpoint: '198.51.100.7:6000' },
      { type: 'closed', session: id, reason: 'idle', established: true },
    ]);
  });

  it('a retransmitted rebinding check: the 5-tuple joins once, whichever answer comes first', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    const rebind = check(e.creds);
    send(r, rebind, B);
    send(r, rebind, B); // the browser retransmits (same transaction) before the answer arrives
    expect(r.answerAll(e.up)).toBe(2);
    expect(
      r.transport.sentToClient(B.address, B.port).filter((b) => isStunResponse(b, 'success')),
    ).toHaveLength(2);
    expect(routes(r, 'rebind')).toBe(1);
    expect(r.events).toEqual([
      { type: 'established', session: e.id, endpoint: '192.0.2.1:5000' },
      { type: 'endpointJoined', session: e.id, endpoint: '198.51.100.7:6000' },
      { type: 'currentChanged', session: e.id, endpoint: '198.51.100.7:6000' },
    ]);
    expect(r.datapath.endpointCount).toBe(2);
  });

  it("a NAT hands one client's old port to another client: the session that lost it stays, sends nothing there, and joins its client's new 5-tuple", () => {
    // A NAT that lost its mappings gives every client a new port; one client's new port may be
    // another client's old one. Here Y's client now sends from A, which was X's 5-tuple.
    const r = rig();
    const [b0, b1] = [r.backends[0]!, r.backends[1]!];
    const x = established(r, b0, A);
    const y = established(r, b1, B);
    send(r, check(y.creds), A);
    r.answerAll(y.up); // Y's backend confirms: A joins Y
    expect(r.datapath.lookup(A.address, A.port)?.session.id).toBe(y.id);
    // X is not ended: its client lives on behind a new port and rebinds with its next check.
    expect(closedBy(r, 'restart')).toBe(0);
    expect(r.datapath.size).toBe(2);
    // X's backend's media has nowhere to go until then; A is Y's client's now.
    const toA = r.transport.sentToClient(A.address, A.port).length;
    x.up.inject(media('x-down'), b0);
    expect(r.transport.sentToClient(A.address, A.port)).toHaveLength(toA);
    expect(drops(r, 'no_client_endpoint')).toBe(1);
    // X's client checks from its new port: a rebinding of X, which joins and gets X's media.
    send(r, check(x.creds), A2);
    r.answerAll(x.up);
    expect(r.datapath.lookup(A2.address, A2.port)?.session.id).toBe(x.id);
    expect(routes(r, 'rebind')).toBe(2);
    x.up.inject(media('x-down2'), b0);
    expect(r.transport.sentToClient(A2.address, A2.port).at(-1)!.toString()).toContain('x-down2');
    y.up.inject(media('y-down'), b1);
    expect(r.transport.sentToClient(A.address, A.port).at(-1)!.toString()).toContain('y-down');
    expect(r.transport.sentToClient(A.address, A.port).some((b) => b.toString().includes('x-down'))).toBe(
      false,
    );
  });

  it('a late answer to a rebinding check of a 5-tuple that already joined does not end the session', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    send(r, check(e.creds), B);
    const second = check(e.creds);
    send(r, second, B);
    const s = r.sessionOf(e.creds.serverUfrag);
    // The first answer: B joins. A goes idle and leaves; B is now the only endpoint.
    const [firstSend] = e.up.sent.slice(-2);
    e.up.inject(b0.answer(firstSend!.buf, B)!, b0);
    for (let t = 0; t < 61; t++) {
      r.tick(1000);
      send(r, media('b'), B);
    }
    expect(s.endpoints.map((x) => x.address)).toEqual([B.address]);
    // The retransmit's answer arrives only now.
    e.up.inject(b0.answer(second, B)!, b0);
    expect(s.state).toBe(SessionState.Established);
    expect(r.datapath.lookup(B.address, B.port)?.session).toBe(s);
    expect(r.datapath.size).toBe(1);
    expect(r.datapath.endpointCount).toBe(1);
    expect(closedBy(r, 'restart')).toBe(0);
  });

  it('a refused rebinding moves nothing', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    // A replay of the pair with a wrong password from elsewhere: the backend refuses it.
    send(r, check({ ...e.creds, password: 'wrong'.repeat(5) }), B);
    r.answerAll(e.up);
    expect(r.datapath.lookup(B.address, B.port)).toBeUndefined();
    expect(routes(r, 'rebind_refused')).toBe(1);
    expect(r.events.map((ev) => ev.type)).toEqual(['established']);
    // The 401 went to the endpoint that asked, and media still goes to A.
    expect(isStunResponse(r.transport.sentToClient(B.address, B.port)[0]!, 'error')).toBe(true);
    e.up.inject(media('down'), b0);
    expect(r.transport.sentToClient(A.address, A.port).at(-1)!.toString()).toContain('down');
  });

  it('a NAT that rebinds all its flows at once: every one joins (a new port of a known address spends no source share)', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const calls = Array.from({ length: 30 }, (_, i) => {
      r.tick(200); // calls that joined over a while (opening 30 at once is admission's business)
      return established(r, b0, { address: A.address, port: 7000 + i });
    });
    r.tick(ACTIVE_WINDOW_MS + 1); // the NAT's address is a new active source again
    for (const [i, e] of calls.entries()) send(r, check(e.creds), { address: A.address, port: 8000 + i });
    for (const e of calls) r.answerAll(e.up);
    expect(drops(r, 'source_share')).toBe(0);
    expect(routes(r, 'rebind')).toBe(30);
    for (const [i, e] of calls.entries())
      expect(r.datapath.lookup(A.address, 8000 + i)?.session).toBe(r.sessionOf(e.creds.serverUfrag));
    // From another address the source's share applies: an activation credit, then its rate.
    r.tick(ACTIVE_WINDOW_MS + 1);
    for (const [i, e] of calls.entries()) send(r, check(e.creds), { address: B.address, port: 9000 + i });
    expect(drops(r, 'source_share')).toBe(30 - ACTIVATION_ROUNDS);
  });

  it("a rebinding's media that follows its check is held until the backend's success, then sent on in order", () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    const s = r.sessionOf(e.creds.serverUfrag);
    const before = s.packetsUp;
    const n0 = e.up.sent.length;
    send(r, check(e.creds), B);
    send(r, media('m1'), B);
    send(r, media('m2'), B);
    // Nothing of the new 5-tuple but its check (a Binding Request) reached the backend before it
    // confirmed it.
    expect(e.up.sent.slice(n0).map((x) => x.buf.readUInt16BE(0))).toEqual([0x0001]);
    expect(drops(r, 'unknown_flow_rtp')).toBe(0);
    const n = e.up.sent.length;
    r.answerAll(e.up);
    expect(r.datapath.lookup(B.address, B.port)?.session).toBe(s);
    expect(e.up.sent.slice(n).map((x) => x.buf.subarray(4).toString())).toEqual(['m1', 'm2']);
    expect(s.packetsUp - before).toBe(2); // both held datagrams count for the session once sent
    expect(drops(r, 'join_unconfirmed')).toBe(0);
    // Later media goes straight through, as for any joined 5-tuple.
    send(r, media('m3'), B);
    expect(e.up.sent.at(-1)!.buf.subarray(4).toString()).toBe('m3');
  });

  it('a refused rebinding drops what it held (join_unconfirmed); an unanswered one, after its time', () => {
    const r = rig();
    const b0 = r.backends[0]!;
    const e = established(r, b0, A);
    const n0 = e.up.sent.length;
    // Forged: the right pair with a wrong key, then media from the same spoofed 5-tuple.
    send(r, check({ ...e.creds, password: 'wrong'.repeat(5) }), B);
    send(r, media('x1'), B);
    send(r, media('x2'), B);
    r.answerAll(e.up);
    expect(drops(r, 'join_unconfirmed')).toBe(2);
    expect(e.up.sent.slice(n0).filter((x) => x.buf[0] === 0x80)).toEqual([]); // no media, only the check
    expect(r.datapath.lookup(B.address, B.port)).toBeUndefined();
    // No wait left: the next media of that 5-tuple is an unknown flow again.
    send(r, media('x3'), B);
    expect(drops(r, 'unknown_flow_rtp')).toBe(1);
    // A check the backend never answers: at most JOIN_HOLD held, the rest dropped at once, all of
    // them counted once its time is up; then the 5-tuple is unknown again.
    const C = { address: '203.0.113.9', port: 7000 };
    const lost = e.up.sent.length;
    send(r, check(e.creds), C);
    expect(e.up.sent.length).toBe(lost + 1);
    e.up.sent.pop(); // the backend never sees it
    for (let i = 0; i < JOIN_HOLD + 2; i++) send(r, media(`c${i}`), C);
    expect(drops(r, 'join_unconfirmed')).toBe(2 + 2);
    r.tick(JOIN_WAIT_MS + 1);
    expect(drops(r, 'join_unconfirmed')).toBe(2 + 2 + JOIN_HOLD);
    send(r, media('late'), C);
    expect(drops(r, 'unknown_flow_rtp')).toBe(2);
    expect(e.up.sent.slice(lost).filter((x) => x.buf[0] === 0x80)).toEqual([]);
  });

  it('backend gone, upstream error, shutdown: each closes with its reason; ECONNREFUSED does not', () => {
    const r = rig({ backends: 3 });
    const [b0, b1, b2] = r.backends as [FakeBackend, FakeBackend, FakeBackend];
    const e0 = established(r, b0, A);
    const e1 = established(r, b1, B);
    const e2 = established(r, b2, C);
    const err = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });
    e1.up.handler.onError(err('ECONNREFUSED'));
    expect(r.datapath.size).toBe(3);
    e1.up.handler.onError(err('EIO'));
    expect(closedBy(r, 'upstream_error')).toBe(1);
    r.datapath.updateBackends([b1.spec, b2.spec]);
    expect(closedBy(r, 'backend_gone')).toBe(1);
    expect(e0.up.closed).toBe(true);
    // Same name, new address: a new pod; the old one's sessions end.
    r.datapath.updateBackends([b1.spec, { ...b2.spec, address: '10.0.0.33' }]);
    expect(closedBy(r, 'backend_gone')).toBe(2);
    expect(e2.up.closed).toBe(true);
    const e3 = established(r, b1, A2);
    r.datapath.closeAll();
    expect(closedBy(r, 'shutdown')).toBe(1);
    expect(e3.up.closed).toBe(true);
    expect(r.transport.open()).toHaveLength(0);
    expect(r.transport.violations).toEqual([]);
  });

  it('the kernel fast path keeps a session from idling (touch), and an older kernel time never moves its idle clock back', () => {
    const r = rig();
    const e = established(r, r.backends[0]!, A);
    const s = [...r.datapath.sessions].find((x) => x.id === e.id)!;
    r.tick(50_000);
    // Kernel-forwarded media at t=50 s (Node saw nothing since the check).
    r.datapath.touch(s, r.clock.now);
    r.tick(50_000); // 50 s after the kernel's last datagram: within the 60 s idle timeout
    expect(r.datapath.size).toBe(1);
    // A later read reporting an earlier kernel time changes nothing.
    r.datapath.touch(s, r.clock.now - 90_000);
    r.tick(9_000);
    expect(r.datapath.size).toBe(1);
    r.tick(2_000); // 61 s after the last datagram
    expect(r.datapath.size).toBe(0);
    expect(closedBy(r, 'idle')).toBe(1);
  });

  it("a listener with counts still to add (the kernel fast path) holds the session's close log until they are in", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (m: string) => lines.push(JSON.parse(m)) });
    const r = rig({ log });
    let release = (): void => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    r.datapath.addListener({ closed: (_s, _reason, wasEstablished) => (wasEstablished ? held : undefined) });
    const e = established(r, r.backends[0]!, A);
    const s = [...r.datapath.sessions].find((x) => x.id === e.id)!;
    const up = s.packetsUp;
    const down = s.packetsDown;
    r.datapath.closeAll('idle');
    const closedLogs = () => lines.filter((l) => l['msg'] === 'session closed');
    expect(closedLogs()).toEqual([]);
    // What the kernel forwarded since the last read arrives after the close: the log has it.
    r.datapath.addKernelCounts(s, { packetsUp: 7, bytesUp: 700, packetsDown: 3, bytesDown: 300 });
    release();
    await held;
    await new Promise((resolve) => setImmediate(resolve));
    expect(closedLogs()).toHaveLength(1);
    expect(closedLogs()[0]).toMatchObject({
      session: s.id,
      reason: 'idle',
      packetsUp: up + 7,
      packetsDown: down + 3,
    });
  });
});

describe('port quarantine', () => {
  const ports = { first: 40_000, last: 40_000, quarantineMs: 60_000 };

  it('a port whose probes were only refused or dropped is reused at once', () => {
    const r = rig({ ports });
    send(r, check(unknownCreds()), A);
    r.answerAll(r.transport.upstreams[0]!); // both 401
    expect(r.pool!.available).toBe(1);
    send(r, check(unknownCreds()), B);
    expect(r.transport.upstreams.map((u) => u.localPort)).toEqual([40_000, 40_000]);
    r.tick(3000); // silence: probe timeout
    expect(closedBy(r, 'probe_failed')).toBe(2);
    send(r, check(unknownCreds()), C);
    expect(r.transport.upstreams).toHaveLength(3);
    expect(drops(r, 'ports_exhausted')).toBe(0);
  });

  it('a port a backend answered with 403 (it knows the ufrag and bound the address to it) rests too', () => {
    const r = rig({ ports });
    send(r, check(unknownCreds()), B);
    const up = r.transport.upstreams[0]!;
    for (const probe of up.sent) {
      const transactionId = probe.buf.subarray(8, 20);
      up.inject(buildBindingError({ transactionId, code: 403, password: 'pw' }), probe);
    }
    expect(closedBy(r, 'probe_failed')).toBe(1); // every candidate said "not mine"
    // The backend would refuse the next session's checks from that address: not reused at once.
    send(r, check(unknownCreds()), C);
    expect(drops(r, 'ports_exhausted')).toBe(1);
    r.clock.now += 60_000;
    send(r, check(unknownCreds()), C);
    expect(r.transport.upstreams.map((u) => u.localPort)).toEqual([40_000, 40_000]);
  });

  it('a port on which a backend answered a success rests for --port-quarantine', () => {
    const r = rig({ ports });
    const e = established(r, r.backends[0]!, A);
    r.datapath.closeAll();
    expect(e.up.localPort).toBe(40_000);
    send(r, check(unknownCreds()), B);
    expect(drops(r, 'ports_exhausted')).toBe(1);
    r.clock.now += 59_999;
    send(r, check(unknownCreds()), B);
    expect(drops(r, 'ports_exhausted')).toBe(2);
    r.clock.now += 1;
    send(r, check(unknownCreds()), B);
    expect(r.transport.upstreams.map((u) => u.localPort)).toEqual([40_000, 40_000]);
    expect(r.pool!.available).toBe(0);
    r.tick(3000); // that probe fails: nobody ever answered a success on it, so it is back at once
    expect(r.pool!.available).toBe(1);
    send(r, check(unknownCreds()), C);
    expect(r.transport.upstreams).toHaveLength(3);
  });
});

describe('datagrams through a peer (docs/peers.md; more in datapath-peers.test.ts)', () => {
  it('a check that names no session here is dropped, opens nothing, and says the route leads nowhere', () => {
    const r = rig();
    const route = { peer: '10.1.0.2:10001', send: () => {} };
    expect(r.datapath.tunneled(check(unknownCreds()), A.address, A.port, route)).toBe(false);
    expect(drops(r, 'tunnel_no_session')).toBe(1);
    expect(r.transport.upstreams).toHaveLength(0);
  });
});

describe('coverage of the counters', () => {
  it('every drop reason and every close reason is produced by some test above', () => {
    const dropsSeen = new Set<string>();
    const closesSeen = new Set<string>();
    for (const r of rigs) {
      for (const [i, label] of DROP_REASON_LABELS.entries())
        if (r.datapath.counters.drops[i]! > 0) dropsSeen.add(label);
      for (const [i, reason] of CLOSE_REASONS.entries())
        if (r.datapath.counters.closed[i]! > 0) closesSeen.add(reason);
    }
    expect([...dropsSeen].sort()).toEqual([...DROP_REASON_LABELS].sort());
    expect([...closesSeen].sort()).toEqual([...CLOSE_REASONS].sort());
    // And no test drove the fake transport into something a real socket would refuse.
    expect(rigs.flatMap((r) => r.transport.violations)).toEqual([]);
  });
});
