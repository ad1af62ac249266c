import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BackendSpec, SessionSlots } from '../../src/defs/interfaces.ts';
import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from '../../src/defs/reasons.ts';
import { type Session, SessionState } from '../../src/session/session.ts';
import { newUsernameView, ParseResult, parseBindingRequest } from '../../src/stun/parse.ts';
import {
  check,
  type DatapathRig,
  FakeBackend,
  type FakeUpstream,
  type IceCreds,
  makeDatapathRig,
  media,
} from '../fixtures/fake-transport.ts';
import {
  buildBindingSuccess,
  getUsername,
  looksLikeStun,
  parseStun,
  randomBase32,
  randomIceChars,
} from '../fixtures/stun-bytes.ts';

/**
 * A stateful property test of the whole data path (fast-check model-based commands): any bytes
 * from any of a dozen 5-tuples (IPv4 and IPv6), real checks for sessions that backends hold or
 * not, replays, backend answers (success, error, silence, stale, media, strangers), clock steps
 * with sweeps, backend updates, socket errors, draining. After every step the invariants below
 * hold; the model records which 5-tuples a backend answered with a success, and for which USERNAME.
 */

const ADDRESSES = ['192.0.2.1', '192.0.2.2', '2001:db8::1', '2001:db8:0:1::2'];
const PORTS = [1000, 1001, 1002];
const TUPLES = ADDRESSES.flatMap((address) => PORTS.map((port) => ({ address, port })));
const key = (t: { address: string; port: number }): string => `${t.address}|${t.port}`;
/** The fixture's flow-event endpoint form. */
const evKey = (t: { address: string; port: number }): string => `${t.address}:${t.port}`;
const txOf = (buf: Buffer): string => buf.subarray(8, 20).toString('hex');

/** A session cap that can be read back: slots in use must equal the registry's size. */
class CountingSlots implements SessionSlots {
  used = 0;
  readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  tryAcquire(): boolean {
    if (this.used >= this.max) return false;
    this.used++;
    return true;
  }
  release(): void {
    this.used--;
  }
}

interface World {
  readonly rig: DatapathRig;
  readonly slots: CountingSlots;
  /** Every fake backend a datagram can come from: jvb-i, and jvb-0 after it moved (same ICE state). */
  readonly fakes: FakeBackend[];
  readonly specs: Record<string, BackendSpec[]>;
  readonly creds: IceCreds[];
  // The model:
  /** Transaction id → 5-tuples that sent a well-formed check with it. */
  readonly txFrom: Map<string, Set<string>>;
  /** `tuple|username` pairs whose check a backend answered with a success. */
  readonly succeeded: Set<string>;
  /** 5-tuples that sent the proxy anything. */
  readonly clients: Set<string>;
  /** Client datagrams held for a join now, oldest first (src/session/join-waits.ts). */
  readonly held: { buf: Buffer; tuple: { address: string; port: number } }[];
  /** Client datagrams so far (for replays). */
  readonly history: { buf: Buffer; tuple: { address: string; port: number } }[];
  /** Upstream sends already answered by a backend. */
  readonly answered: WeakSet<object>;
  /** What a flow listener knows from the events alone: session id → endpoints and current. */
  /** `currentLeft`: the current endpoint left the session (its 5-tuple went to another session). */
  readonly mirror: Map<number, { eps: Set<string>; current: string; currentLeft: boolean }>;
  readonly closedIds: Set<number>;
  eventsSeen: number;
  upstreamsSeen: number;
  readonly startedAt: number;
}

interface Config {
  readonly backends: 2 | 3;
  readonly pool: boolean;
  readonly strictPrefix: boolean;
}

function world(cfg: Config): World {
  const slots = new CountingSlots(6);
  const rig = makeDatapathRig({
    backends: cfg.backends,
    options: {
      idleTimeoutMs: 20_000,
      probeTimeoutMs: 2000,
      probeRounds: 4,
      probeRate: 8,
      directedProbeRate: 4,
      strictPrefix: cfg.strictPrefix,
      maxPendingPerSource: 2,
      maxSessions: 6,
      negativeTtlMs: 5000,
      learnedMax: 16,
    },
    ...(cfg.pool ? { ports: { first: 40_000, last: 40_005, quarantineMs: 5000 } } : {}),
    slots,
  });
  const [b0] = rig.backends as [FakeBackend];
  const moved = new FakeBackend(b0.name, '10.0.0.11', b0.port);
  // The moved pod answers for the same ICE sessions (the map is shared).
  (moved as { ufrags: Map<string, string> }).ufrags = b0.ufrags;
  const fakes = [...rig.backends, moved];
  const all = rig.backends.map((b) => b.spec);
  const specs: Record<string, BackendSpec[]> = {
    all,
    dropLast: all.slice(0, -1),
    unready1: all.map((s, i) => (i === 1 ? { ...s, state: 'unready' as const } : s)),
    terminating0: all.map((s, i) => (i === 0 ? { ...s, state: 'terminating' as const } : s)),
    move0: [moved.spec, ...all.slice(1)],
    none: [],
  };
  const creds: IceCreds[] = [];
  for (const b of rig.backends) creds.push(b.addSession({ prefix: true }), b.addSession());
  creds.push(
    { serverUfrag: randomBase32(14), clientUfrag: 'nobo', password: randomIceChars(24) },
    // A random ufrag that happens to start with jvb-0's token but is not its session.
    { serverUfrag: b0.token + randomBase32(8), clientUfrag: 'tokn', password: randomIceChars(24) },
  );
  return {
    rig,
    slots,
    fakes,
    specs,
    creds,
    txFrom: new Map(),
    succeeded: new Set(),
    clients: new Set(),
    history: [],
    answered: new WeakSet(),
    held: [],
    mirror: new Map(),
    closedIds: new Set(),
    eventsSeen: 0,
    upstreamsSeen: 0,
    startedAt: rig.clock.now,
  };
}

// ---------------------------------------------------------------------------------------------
// Invariants

const view = newUsernameView();
const isCheck = (buf: Buffer): boolean => parseBindingRequest(buf, view) === ParseResult.Ok;
const usernameOf = (buf: Buffer): string | undefined => {
  const m = parseStun(buf);
  return m === undefined ? undefined : getUsername(m);
};

function sessionOfUpstream(w: World, u: FakeUpstream): Session | undefined {
  for (const s of w.rig.datapath.sessions) if (s.upstream === u) return s;
  return undefined;
}

interface Before {
  readonly drops: number;
  /** Datagrams held for joins (src/session/join-waits.ts), and those dropped unconfirmed so far. */
  readonly held: number;
  readonly unconfirmed: number;
  readonly upstreamSends: number;
  readonly clientSends: number;
  /** For a client datagram: the session that held its 5-tuple, and whether it was established. */
  readonly holder: Session | undefined;
  readonly holderEstablished: boolean;
  /** For a backend datagram: the session of the upstream, established with that backend. */
  readonly downSession: Session | undefined;
}

function snapshot(w: World, from?: { address: string; port: number }, into?: FakeUpstream): Before {
  const ep = from === undefined ? undefined : w.rig.datapath.lookup(from.address, from.port);
  const down = into === undefined ? undefined : sessionOfUpstream(w, into);
  return {
    drops: w.rig.datapath.counters.drops.reduce((a, b) => a + b, 0),
    held: w.rig.datapath.joinHeld,
    unconfirmed: w.rig.datapath.counters.drops[DROP_REASON_LABELS.indexOf('join_unconfirmed')]!,
    upstreamSends: w.rig.transport.upstreamSends.length,
    clientSends: w.rig.transport.toClients.length,
    holder: ep?.session,
    holderEstablished: ep?.session.state === SessionState.Established,
    downSession: down?.state === SessionState.Established ? down : undefined,
  };
}

/** Cheap assertions for the per-step checks (thousands per run; vitest's expect is slower). */
function ok(cond: boolean, what: string): void {
  if (!cond) throw new Error(`invariant: ${what}`);
}
function eq<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) throw new Error(`invariant: ${what}: ${String(actual)} !== ${String(expected)}`);
}

function verify(
  w: World,
  before: Before,
  step: { client?: { buf: Buffer; address: string; port: number }; backend?: { buf: Buffer; from: string } },
): void {
  const { rig } = w;
  const reg = rig.datapath;
  const t = rig.transport;
  eq(t.violations.join('; '), '', 'what a real socket would refuse');

  // Upstream: the proxy forwards client bytes untouched; probes are only well-formed checks;
  // anything else goes upstream only from a joined endpoint of an established session (or as a
  // rebinding check of that session's own ufrag pair).
  const heldNow = reg.joinHeld;
  const unconfirmed =
    reg.counters.drops[DROP_REASON_LABELS.indexOf('join_unconfirmed')]! - before.unconfirmed;
  let released = 0;
  for (const s of t.upstreamSends.slice(before.upstreamSends)) {
    if (s.via === 'sendTo') {
      eq(isCheck(s.buf), true, 'a probe is a well-formed check');
      continue;
    }
    if (step.backend !== undefined) {
      // A backend's success joined a new 5-tuple: what it sent meanwhile was held, and goes on now,
      // through the socket of the session it joined, from an endpoint that is joined now.
      const i = w.held.findIndex((h) => h.buf.equals(s.buf));
      ok(i >= 0, 'upstream on a backend datagram: only what a joining 5-tuple held');
      const h = w.held[i]!;
      w.held.splice(i, 1);
      const ep = reg.lookup(h.tuple.address, h.tuple.port);
      ok(ep !== undefined && ep.session.upstream === s.upstream, 'held media goes on only once joined');
      released++;
      continue;
    }
    ok(step.client !== undefined, 'only a client datagram is forwarded upstream');
    eq(s.buf.equals(step.client!.buf), true, 'client bytes forwarded untouched');
    const holder = before.holder;
    const fromEstablished =
      holder !== undefined && before.holderEstablished && s.upstream === holder.upstream;
    if (!fromEstablished) {
      // A rebinding check: the same USERNAME as the established session behind this socket.
      eq(isCheck(s.buf), true, 'upstream from an unknown 5-tuple: only a check');
      const owner = [...reg.sessions].find((x) => x.upstream === s.upstream);
      eq(owner?.state, SessionState.Established, 'owner?.state');
      eq(usernameOf(s.buf), owner!.username, 'usernameOf(s.buf)');
    }
    if (!looksLikeStun(s.buf)) eq(fromEstablished, true, 'non-STUN from a joined endpoint only');
  }

  // Downstream: only to 5-tuples that sent us something; media only from an established
  // session's backend to its current endpoint.
  for (const c of t.toClients.slice(before.clientSends)) {
    eq(w.clients.has(key(c)), true, 'sends only to clients that sent first');
    if (!looksLikeStun(c.buf)) {
      const s = before.downSession;
      ok(s !== undefined, 'media downstream only on an established session');
      eq(step.backend?.from, key(s!.backend!), 'step.backend?.from');
      eq(key(c), key(s!.current), 'media goes to the current endpoint');
    } else if (c.buf[0] === 0x01) {
      // A response goes to a 5-tuple that sent its transaction (or, for one nobody sent, to the
      // session's current endpoint).
      const askers = w.txFrom.get(txOf(c.buf));
      if (askers !== undefined) eq(askers.has(key(c)), true, 'a response goes to who asked');
      else eq(key(c), key(before.downSession!.current), 'key(c)');
    }
  }

  // Every datagram is either passed on or dropped and counted by exactly one reason.
  const dropped = rig.datapath.counters.drops.reduce((a, b) => a + b, 0) - before.drops;
  // A held datagram is neither yet: it goes on when its 5-tuple joins, or is dropped
  // (join_unconfirmed) when the backend refuses the check or its time is up.
  if (step.client !== undefined) {
    const passed = t.upstreamSends.length > before.upstreamSends ? 1 : 0;
    const held = heldNow - before.held;
    if (held === 1) w.held.push({ buf: step.client.buf, tuple: step.client });
    eq(dropped + passed + held, 1, 'a client datagram is forwarded, held or counted once');
  } else if (step.backend !== undefined) {
    const passed = t.toClients.length > before.clientSends ? 1 : 0;
    eq(dropped - unconfirmed + passed, 1, 'a backend datagram is forwarded or counted once');
    eq(before.held - heldNow, released + unconfirmed, 'held datagrams end sent on or counted');
  } else {
    eq(dropped, unconfirmed, 'dropped: only held datagrams whose time is up');
    eq(before.held - heldNow, unconfirmed, 'held datagrams end counted');
  }
  // (The model keeps its copies of what ended unsent: such a buffer is never sent, so a copy left
  // over cannot make a wrong send pass.)

  // Flow events: a listener that only follows them knows each established session's endpoints
  // and current endpoint exactly; each event happens once (a join of a joined 5-tuple, a change
  // to the current target, a second close would be wrong).
  const leftNow = new Set<string>();
  for (const ev of rig.events.slice(w.eventsSeen)) {
    const m = w.mirror.get(ev.session);
    switch (ev.type) {
      case 'established':
        ok(m === undefined && !w.closedIds.has(ev.session), 'established once');
        w.mirror.set(ev.session, { eps: new Set([ev.endpoint]), current: ev.endpoint, currentLeft: false });
        break;
      case 'endpointJoined':
        ok(m !== undefined && !m.eps.has(ev.endpoint), `joined once: ${ev.endpoint}`);
        ok(!leftNow.has(`${ev.session} ${ev.endpoint}`), `no leave-and-rejoin in one step: ${ev.endpoint}`);
        m!.eps.add(ev.endpoint);
        break;
      case 'currentChanged':
        // To another member — or back to the same 5-tuple, joined anew, after the session lost it.
        ok(
          m?.eps.has(ev.endpoint) === true && (m.current !== ev.endpoint || m.currentLeft),
          'current changes to a member',
        );
        m!.current = ev.endpoint;
        m!.currentLeft = false;
        break;
      case 'endpointLeft':
        ok(m?.eps.has(ev.endpoint) === true, 'a member leaves');
        m!.eps.delete(ev.endpoint);
        if (m!.current === ev.endpoint) m!.currentLeft = true;
        leftNow.add(`${ev.session} ${ev.endpoint}`);
        break;
      case 'closed':
        ok(!w.closedIds.has(ev.session), 'closed once');
        eq(m !== undefined, ev.established, 'closed: established flag');
        w.closedIds.add(ev.session);
        w.mirror.delete(ev.session);
        break;
    }
  }
  w.eventsSeen = rig.events.length;
  let live = 0;
  for (const s of reg.sessions) {
    if (s.state !== SessionState.Established) continue;
    live++;
    const m = w.mirror.get(s.id);
    ok(m !== undefined, 'an established session was announced');
    eq([...m!.eps].sort().join(), s.endpoints.map(evKey).sort().join(), 'endpoints as announced');
    eq(m!.current, evKey(s.current), 'current endpoint as announced');
  }
  eq(w.mirror.size, live, 'announced sessions that are still open');

  // Sessions, endpoints and indexes agree; nothing closed is reachable.
  let endpoints = 0;
  const pending = new Map<string, number>();
  for (const s of reg.sessions) {
    ok(s.state !== SessionState.Closed, 'no closed session in the registry');
    endpoints += s.endpoints.length;
    for (const ep of s.endpoints) {
      eq(ep.session, s, 'ep.session');
      eq(ep.joined, true, 'ep.joined');
      eq(reg.lookup(ep.address, ep.port), ep, 'reg.lookup(ep.address, ep.port)');
      if (s.state === SessionState.Established)
        eq(w.succeeded.has(`${key(ep)}|${s.username}`), true, 'joined only after a success for it');
    }
    if (s.state === SessionState.Established) {
      if (s.endpoints.length === 0) {
        // Its last 5-tuple went to another session's client (a NAT that handed the port on): it
        // waits for its own client's next check, and sends nothing to the old 5-tuple.
        eq(s.current.joined, false, 'an established session without endpoints: current not joined');
        ok(reg.lookup(s.current.address, s.current.port)?.session !== s, 'its old 5-tuple is not its own');
      } else ok(s.endpoints.includes(s.current), 's.endpoints contains s.current');
      eq(s.backend!.removed, false, 's.backend!.removed');
      eq(reg.sessionsOf(s.backend!).has(s), true, 'reg.sessionsOf(s.backend!).has(s)');
    } else {
      ok(s.probe !== undefined, 's.probe');
      ok(s.endpoints.length <= 1, 's.endpoints.length');
      const k = `${s.source}|${s.probe!.budget}`;
      pending.set(k, (pending.get(k) ?? 0) + 1);
    }
    if (s.restartOf !== undefined && s.restartOf.state !== SessionState.Closed)
      eq(reg.sessions.has(s.restartOf), true, 'reg.sessions.has(s.restartOf)');
    // Its socket is open.
    eq(t.of(s).closed, false, 'a live session has an open socket');
  }
  eq(reg.endpointCount, endpoints, 'reg.endpointCount');
  for (const a of ADDRESSES)
    for (const cls of [0, 1]) eq(reg.pending(a, cls), pending.get(`${a}|${cls}`) ?? 0, `pending ${a} ${cls}`);
  for (const tuple of TUPLES) {
    const ep = reg.lookup(tuple.address, tuple.port);
    if (ep === undefined) continue;
    eq(reg.sessions.has(ep.session), true, 'an indexed 5-tuple belongs to a live session');
    ok(ep.session.endpoints.includes(ep), 'ep.session.endpoints contains ep');
  }
  for (const b of rig.table.all())
    for (const s of reg.sessionsOf(b)) {
      eq(reg.sessions.has(s), true, 'reg.sessions.has(s)');
      eq(s.backend, b, 's.backend');
    }

  // A port on which a backend's success was accepted (the socket got connected to it) rests for
  // the quarantine before it is bound again; probe datagrams stay within the budgets (burst: one
  // second's worth, then the rate).
  for (const u of t.upstreams.slice(w.upstreamsSeen)) {
    if (rig.pool === undefined) break;
    const prev = t.upstreams.findLast(
      (x) => x !== u && x.localPort === u.localPort && x.openedAt <= u.openedAt,
    );
    if (prev?.connectedTo !== undefined)
      ok(u.openedAt - prev.closedAt >= rig.pool.quarantineMs, `port ${u.localPort} rested its quarantine`);
  }
  w.upstreamsSeen = t.upstreams.length;
  const c = rig.datapath.counters;
  const o = rig.options;
  const seconds = (rig.clock.now - w.startedAt) / 1000;
  ok(
    c.probesSent - c.directedProbesSent <= o.probeRate * (1 + seconds) + 1e-9,
    'fan-out probes within budget',
  );
  ok(c.directedProbesSent <= o.directedProbeRate * (1 + seconds) + 1e-9, 'directed probes within budget');

  // No socket, port or slot leaks.
  eq(t.open().length, reg.size, 'open upstream sockets = sessions');
  eq(w.slots.used, reg.size, 'session slots in use = sessions');
  const pool = rig.pool;
  if (pool !== undefined) {
    const inUse = t.open().filter((u) => u.localPort >= pool.first && u.localPort <= pool.last).length;
    eq(inUse, reg.size, 'inUse');
    eq(pool.available + inUse, pool.size, 'ports available + in use = pool size');
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

type Tuple = { address: string; port: number };
type Cmd = fc.Arbitrary<Step>;

class Step implements fc.Command<World, World> {
  readonly #name: string;
  readonly #act: (w: World) => void;
  constructor(name: string, act: (w: World) => void) {
    this.#name = name;
    this.#act = act;
  }
  check(): boolean {
    return true;
  }
  run(_m: World, w: World): void {
    this.#act(w);
  }
  toString(): string {
    return this.#name;
  }
}

/** A client datagram from `tuple`, with the model's bookkeeping and the invariants. */
function fromClient(w: World, buf: Buffer, tuple: Tuple): void {
  w.clients.add(key(tuple));
  w.history.push({ buf, tuple });
  // Only a well-formed check's transaction is remembered by the proxy (forwarder.ts); a response
  // to anything else goes to the session's current endpoint.
  if (isCheck(buf)) {
    const tx = txOf(buf);
    const set = w.txFrom.get(tx) ?? new Set<string>();
    w.txFrom.set(tx, set);
    set.add(key(tuple));
  }
  const before = snapshot(w, tuple);
  w.rig.fromClient(buf, tuple.address, tuple.port);
  verify(w, before, { client: { buf, ...tuple } });
}

/** A backend datagram into upstream `u`, with the invariants. */
function fromBackend(w: World, u: FakeUpstream, buf: Buffer, from: Tuple): void {
  const before = snapshot(w, undefined, u);
  u.inject(buf, from);
  verify(w, before, { backend: { buf, from: key(from) } });
}

const tupleArb = fc.nat({ max: TUPLES.length - 1 }).map((i) => TUPLES[i]!);

/** Recipes for bytes that need the run's credentials are resolved when the step runs. */
const junkArb = fc.oneof(
  fc.uint8Array({ maxLength: 72 }).map((b) => (_w: World) => Buffer.from(b)),
  fc
    .record({ c: fc.nat(), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) })
    .map(({ c, at, xor }) => (w: World) => {
      const b = check(w.creds[c % w.creds.length]!);
      b[at % b.length]! ^= xor;
      return b;
    }),
  fc
    .record({
      type: fc.constantFrom(0x0001, 0x0101, 0x0111, 0x0011, 0x0002),
      body: fc.uint8Array({ maxLength: 40 }),
      tx: fc.uint8Array({ minLength: 12, maxLength: 12 }),
    })
    .map(({ type, body, tx }) => (_w: World) => {
      const h = Buffer.alloc(20);
      h.writeUInt16BE(type, 0);
      h.writeUInt16BE(body.length, 2);
      h.writeUInt32BE(0x2112a442, 4);
      Buffer.from(tx).copy(h, 8);
      return Buffer.concat([h, Buffer.from(body)]);
    }),
);

const clientCommands = [
  // A real call: a check for a session a backend holds, retransmitted (same transaction) 0-2
  // times before the backends answer everything they got.
  fc.record({ tuple: tupleArb, c: fc.nat(), alt: fc.boolean(), copies: fc.nat({ max: 2 }) }).map(
    ({ tuple, c, alt, copies }) =>
      new Step(`call#${c}${alt ? "'" : ''}${'+'.repeat(copies)} ${key(tuple)}`, (w) => {
        const owned = w.creds.length - 2;
        const buf = check(w.creds[c % owned]!, alt ? { clientUfrag: 'alt1' } : {});
        for (let i = 0; i <= copies; i++) fromClient(w, buf, tuple);
        for (const up of w.rig.transport.open()) answerAll(w, up, 'auto');
      }),
  ),
  fc
    .record({ tuple: tupleArb, junk: junkArb })
    .map(({ tuple, junk }) => new Step(`junk ${key(tuple)}`, (w) => fromClient(w, junk(w), tuple))),
  fc.record({ tuple: tupleArb, c: fc.nat(), alt: fc.boolean() }).map(
    ({ tuple, c, alt }) =>
      new Step(`check#${c}${alt ? "'" : ''} ${key(tuple)}`, (w) => {
        const creds = w.creds[c % w.creds.length]!;
        fromClient(w, check(creds, alt ? { clientUfrag: 'alt1' } : {}), tuple);
      }),
  ),
  // Someone who knows a live session's ufrag pair but not its password (a forged rebinding or
  // restart): the owner answers 401 on that session's socket.
  fc.record({ tuple: tupleArb, s: fc.nat(), alt: fc.boolean() }).map(
    ({ tuple, s, alt }) =>
      new Step(`forged#${s} ${key(tuple)}`, (w) => {
        const live = [...w.rig.datapath.sessions].filter((x) => x.state === SessionState.Established);
        if (live.length === 0) return;
        const target = live[s % live.length]!;
        const forged: IceCreds = {
          serverUfrag: target.serverUfrag,
          clientUfrag: alt ? 'alt1' : target.clientUfrag,
          password: randomIceChars(24),
        };
        fromClient(w, check(forged), tuple);
        if (target.state === SessionState.Established) answerAll(w, w.rig.transport.of(target), 'auto');
      }),
  ),
  fc
    .record({ tuple: tupleArb, n: fc.nat({ max: 999 }) })
    .map(({ tuple, n }) => new Step(`media ${key(tuple)}`, (w) => fromClient(w, media(`m${n}`), tuple))),
  // A browser's retransmit: the last datagram of this 5-tuple again, same transaction.
  tupleArb.map(
    (tuple) =>
      new Step(`retransmit ${key(tuple)}`, (w) => {
        const last = w.history.findLast((h) => key(h.tuple) === key(tuple));
        if (last !== undefined) fromClient(w, last.buf, tuple);
      }),
  ),
  fc.record({ i: fc.nat(), tuple: fc.option(tupleArb, { nil: undefined }) }).map(
    ({ i, tuple }) =>
      new Step(`replay#${i} ${tuple === undefined ? 'same' : key(tuple)}`, (w) => {
        if (w.history.length === 0) return;
        const h = w.history[i % w.history.length]!;
        fromClient(w, h.buf, tuple ?? h.tuple);
      }),
  ),
];

type AnswerMode = 'auto' | 'first' | 'error' | 'stale' | 'media' | 'stranger';

/** The backends answer what `up` sent them that nobody answered yet (all, or only the first). */
function answerAll(w: World, up: FakeUpstream, mode: 'auto' | 'first' | 'error'): void {
  const unanswered = up.sent.filter((s) => !w.answered.has(s));
  const todo = mode === 'first' ? unanswered.slice(0, 1) : unanswered;
  for (const s of todo) {
    w.answered.add(s);
    const b = w.fakes.find((f) => f.address === s.address && f.port === s.port);
    if (b === undefined) continue;
    let reply = b.answer(s.buf, { address: '127.0.0.1', port: up.localPort });
    if (reply === undefined) continue; // JVB ignores what is not a Binding Request
    if (mode === 'error') reply = Buffer.from(reply).fill(0x11, 1, 2); // a success turned error
    if (reply[0] === 0x01 && reply[1] === 0x01) {
      // The model: the 5-tuples that sent this transaction get a success for this USERNAME.
      const username = usernameOf(s.buf)!;
      for (const k of w.txFrom.get(txOf(s.buf)) ?? []) w.succeeded.add(`${k}|${username}`);
    }
    fromBackend(w, up, reply, b);
  }
}

const backendCommands = [
  fc
    .record({
      u: fc.nat(),
      mode: fc.constantFrom<AnswerMode>('auto', 'auto', 'first', 'error', 'stale', 'media', 'stranger'),
      closed: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
    })
    .map(
      ({ u, mode, closed }) =>
        new Step(`answer ${mode} u${u}${closed ? ' (any)' : ''}`, (w) => {
          const t = w.rig.transport;
          const pool = closed ? t.upstreams : t.open();
          if (pool.length === 0) return;
          // Mostly the newest sockets: that is where the flows being routed are.
          const up = pool[pool.length - 1 - (u % Math.min(pool.length, u % 3 === 0 ? 64 : 2))]!;
          if (mode === 'stranger') {
            fromBackend(w, up, media('who?'), { address: '10.9.9.9', port: 10_000 });
            return;
          }
          const target = up.connectedTo ?? up.sent.find((s) => !w.answered.has(s)) ?? up.sent[0];
          const fake = w.fakes.find((f) => f.address === target?.address && f.port === target?.port);
          if (fake === undefined) return;
          if (mode === 'media') fromBackend(w, up, media('down'), fake);
          else if (mode === 'stale') {
            const tx = Buffer.alloc(12, u & 0xff);
            fromBackend(w, up, buildBindingSuccess({ transactionId: tx, mapped: fake, password: 'x' }), fake);
          } else answerAll(w, up, mode);
        }),
    ),
  fc.record({ u: fc.nat(), code: fc.constantFrom('ECONNREFUSED', 'EIO', 'EPERM') }).map(
    ({ u, code }) =>
      new Step(`socket error ${code} u${u}`, (w) => {
        const open = w.rig.transport.open();
        if (open.length === 0) return;
        const before = snapshot(w);
        open[u % open.length]!.handler.onError(Object.assign(new Error(code), { code }));
        verify(w, before, {});
      }),
  ),
];

const controlCommands = [
  fc.constantFrom(10, 300, 1000, 2500, 6000, 21_000).map(
    (ms) =>
      new Step(`tick ${ms}`, (w) => {
        const before = snapshot(w);
        w.rig.tick(ms);
        verify(w, before, {});
      }),
  ),
  fc.constantFrom('all', 'all', 'dropLast', 'unready1', 'terminating0', 'move0', 'none').map(
    (v) =>
      new Step(`backends ${v}`, (w) => {
        const before = snapshot(w);
        w.rig.datapath.updateBackends(w.specs[v]!);
        verify(w, before, {});
      }),
  ),
];

const rareCommands = [
  fc.constant(
    new Step('stop accepting', (w) => {
      const before = snapshot(w);
      w.rig.datapath.stopAccepting();
      verify(w, before, {});
    }),
  ),
  fc.constant(
    new Step('close all', (w) => {
      const before = snapshot(w);
      w.rig.datapath.closeAll();
      verify(w, before, {});
      expect(w.rig.datapath.size).toBe(0);
    }),
  ),
];

const [call, junk, checkCmd, forged, mediaCmd, retransmit, replay] = clientCommands as [
  Cmd,
  Cmd,
  Cmd,
  Cmd,
  Cmd,
  Cmd,
  Cmd,
];
const [answer, socketError] = backendCommands as [Cmd, Cmd];
const [tick, backendsCmd] = controlCommands as [Cmd, Cmd];
const [stop, closeAll] = rareCommands as [Cmd, Cmd];
const commandsArb = fc.commands(
  [
    fc.oneof(
      { arbitrary: call, weight: 18 },
      { arbitrary: checkCmd, weight: 12 },
      { arbitrary: junk, weight: 10 },
      { arbitrary: forged, weight: 6 },
      { arbitrary: mediaCmd, weight: 12 },
      { arbitrary: retransmit, weight: 8 },
      { arbitrary: replay, weight: 4 },
      { arbitrary: answer, weight: 20 },
      { arbitrary: socketError, weight: 2 },
      { arbitrary: tick, weight: 10 },
      { arbitrary: backendsCmd, weight: 4 },
      { arbitrary: stop, weight: 1 },
      { arbitrary: closeAll, weight: 2 },
    ),
  ],
  { maxCommands: 60, size: 'max' },
);

const configArb = fc.record({
  backends: fc.constantFrom<2 | 3>(2, 3),
  pool: fc.boolean(),
  strictPrefix: fc.boolean(),
});

const STATS: Record<string, number> = {};
describe('data path: stateful property', () => {
  it('holds its invariants after every step, whatever arrives in whatever order', () => {
    let established = 0;
    fc.assert(
      fc.property(configArb, commandsArb, (cfg, cmds) => {
        const w = world(cfg);
        fc.modelRun(() => ({ model: w, real: w }), cmds);
        established += w.rig.datapath.counters.sessionsOpened;
        const c = w.rig.datapath.counters;
        for (const [i, v] of c.routes.entries())
          STATS[`route:${ROUTE_LABELS[i]}`] = (STATS[`route:${ROUTE_LABELS[i]}`] ?? 0) + v;
        for (const [i, v] of c.closed.entries())
          STATS[`close:${CLOSE_REASONS[i]}`] = (STATS[`close:${CLOSE_REASONS[i]}`] ?? 0) + v;
        for (const [i, v] of c.drops.entries())
          STATS[`drop:${DROP_REASON_LABELS[i]}`] = (STATS[`drop:${DROP_REASON_LABELS[i]}`] ?? 0) + v;
        STATS.commands = (STATS.commands ?? 0) + [...cmds].length;
        // Ending everything leaves nothing behind.
        const before = snapshot(w);
        w.rig.datapath.closeAll();
        verify(w, before, {});
        expect(w.rig.transport.open()).toHaveLength(0);
      }),
      { numRuns: Number(process.env.CORE_PROPERTY_RUNS ?? 200) },
    );
    if (process.env.CORE_PROPERTY_STATS) console.log(JSON.stringify(STATS));
    // The generator reaches the interesting states, not only refusals: every route outcome and
    // every close reason occurred in some run.
    expect(established).toBeGreaterThan(50);
    for (const label of ROUTE_LABELS) expect(STATS[`route:${label}`], label).toBeGreaterThan(0);
    for (const reason of CLOSE_REASONS) expect(STATS[`close:${reason}`], reason).toBeGreaterThan(0);
  });
});
