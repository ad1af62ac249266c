// The clients of the tier harness, in the cli namespace: one process, one FakeIceClient (one UDP
// socket, real STUN with MESSAGE-INTEGRITY and FINGERPRINT) per session, all talking to the
// public address through the NAT and the balancer.
//
// Each session sends media at `pps` (media.ts: session id, sequence, send time), and the fake JVB
// echoes what reaches it, so the client sees both directions at once: an echo is missing if either
// leg lost the datagram, and the longest time between two echoes is the session's longest gap in
// either direction. (The JVB side counts the upstream leg on its own: jvb-agent.ts.) Every session
// also sends a consent check (RFC 7675) every `checkIntervalMs` on its one path, as libwebrtc pings
// its selected pair (every 2.5 s once stable), each a new transaction; a 403 is what ice4j
// answers a check from a remote address it does not know once the session is established.
//
// Media is paced per session from its own start time (5 ms timer, sessions spread over the
// interval); a late timer sends the datagrams that are due (at most 4 per session per tick), never
// skipping a sequence number, so a stall of this process shows as delay, not as loss.
//
// requests: {cmd:'open', sessions:[{sid,ufrag,password}], timeoutMs} -> {connected, failed, connectMs}
//           {cmd:'media', pps, size, checkIntervalMs}  start media and consent checks
//           {cmd:'mark'}                               start of the measured window
//           {cmd:'checkNow', sids?}                    a consent check now (all sessions by default)
//           {cmd:'rebindNat', netns} -> {deleted, pauseMs}  the NAT forgets every mapping; each
//                                                      session's check is its first datagram after
//           {cmd:'rebindEach', spreadMs} -> {rebound, spanMs, lateMsMax}  each session's NAT
//                                                      mapping changes once, at its own moment
//           {cmd:'report'} -> {sessions}               the window so far
//           {cmd:'stop', drainMs} -> {sessions, rttHistogram, windowMs}  stop sending, wait, report
//           {cmd:'restart', sessions:[{sid,ufrag,password}], timeoutMs} -> {connectMs:{sid: ms|null}}
//           {cmd:'ports'} -> {ports:{sid: local port}}
//           {cmd:'close'}                              close every session
import type dgram from 'node:dgram';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { CheckError } from '../fixtures/stun-agent.ts';
import type { Endpoint } from '../fixtures/stun-bytes.ts';
import { argValue, emit, type Json, serve } from '../interop/jsonl.ts';
import { isMedia, mediaSentAt, mediaSeq, mediaSid, SeqSet, writeMedia } from './media.ts';
import { conntrackDelete } from './topology.ts';

const host = argValue('--host') ?? '0.0.0.0';
const [targetAddress, targetPortText] = (argValue('--target') ?? '').split(':');
const target: Endpoint = { address: targetAddress!, port: Number(targetPortText) };
if (!target.address || !Number.isInteger(target.port)) throw new Error('--target IP:PORT');

interface Creds {
  ufrag: string;
  password: string;
}
interface Checks {
  sent: number;
  ok: number;
  e403: number;
  otherError: number;
  timeout: number;
}
const noChecks = (): Checks => ({ sent: 0, ok: 0, e403: 0, otherError: 0, timeout: 0 });

interface Session {
  sid: number;
  client: FakeIceClient;
  creds: Creds;
  bufs: Buffer[];
  nextBuf: number;
  /** Sequence numbers sent so far (= the next one). */
  sent: number;
  phaseMs: number;
  /** Window: sequence numbers [winFrom, winTo) count. */
  winFrom: number;
  winTo: number;
  echoed: SeqSet;
  lastEcho: number;
  maxGap: number;
  /** When the longest gap ended, ms after the mark. */
  maxGapAt: number;
  /** The longest gap's two echoes: sequence numbers and round trips (what was lost, what was late). */
  maxGapEdges: [number, number, number, number];
  lastEchoSeq: number;
  lastEchoRtt: number;
  maxRtt: number;
  foreign: number;
  duplicates: number;
  checks: Checks;
  checking: boolean;
  nextCheckAt: number;
}

const RING = 8;
const sessions: Session[] = [];
let pps = 50;
let size = 200;
let intervalMs = 20;
let checkIntervalMs = 2500;
let mediaStart = 0;
let timer: NodeJS.Timeout | undefined;
let checkTimer: NodeJS.Timeout | undefined;
let windowOpen = false;
/** No media while the NAT is being rebound (rebindNat); the schedule then moves by the pause. */
let paused = false;
let scheduleShift = 0;
let markAt = 0;
const rttHistogram = new Uint32Array(2001); // 1 ms bins, the last one "2 s or more"

function onMedia(data: Buffer, from: dgram.RemoteInfo): void {
  if (!isMedia(data)) return;
  const s = sessions[mediaSid(data)];
  if (s === undefined) return;
  const now = performance.now();
  const seq = mediaSeq(data);
  const rtt = now - mediaSentAt(data);
  if (!s.echoed.add(seq)) s.duplicates++;
  if (from.port !== target.port || from.address !== target.address) s.foreign++;
  if (!windowOpen) {
    s.lastEcho = now;
    s.lastEchoSeq = seq;
    s.lastEchoRtt = rtt;
    return;
  }
  const gap = now - s.lastEcho;
  if (gap > s.maxGap) {
    s.maxGap = gap;
    s.maxGapAt = now - markAt;
    s.maxGapEdges = [s.lastEchoSeq, s.lastEchoRtt, seq, rtt];
  }
  s.lastEcho = now;
  s.lastEchoSeq = seq;
  s.lastEchoRtt = rtt;
  if (rtt > s.maxRtt) s.maxRtt = rtt;
  rttHistogram[Math.min(2000, Math.max(0, Math.floor(rtt)))]!++;
}

/**
 * A socket for session `sid`: what it receives counts only while it is the session's current one
 * (after a rebinding the old mapping is gone, and so is what still arrives on it).
 */
async function openClient(sid: number, ufrag?: string): Promise<FakeIceClient> {
  const client: FakeIceClient = await FakeIceClient.open({
    host,
    ufrag,
    onMedia: (data, from) => {
      if (sessions[sid]?.client === client) onMedia(data, from);
    },
  });
  return client;
}

async function openSession(sid: number, creds: Creds, timeoutMs: number): Promise<number> {
  const client = await openClient(sid);
  const s: Session = {
    sid,
    client,
    creds,
    bufs: Array.from({ length: RING }, () => Buffer.alloc(size, 0x55)),
    nextBuf: 0,
    sent: 0,
    phaseMs: 0,
    winFrom: 0,
    winTo: 0,
    echoed: new SeqSet(),
    lastEcho: 0,
    maxGap: 0,
    maxGapAt: 0,
    maxGapEdges: [0, 0, 0, 0],
    lastEchoSeq: -1,
    lastEchoRtt: 0,
    maxRtt: 0,
    foreign: 0,
    duplicates: 0,
    checks: noChecks(),
    checking: false,
    nextCheckAt: Number.POSITIVE_INFINITY,
  };
  sessions[sid] = s;
  const r = await client.check(target, creds, { timeoutMs, useCandidate: true });
  return r.rtt;
}

/** This process's own stalls (a late 5 ms tick) during the window: the harness's share of a gap. */
let lastTick = 0;
let stallMax = 0;
let stallAt = 0;

function tick(): void {
  const now = performance.now();
  if (windowOpen && now - lastTick > stallMax) {
    stallMax = now - lastTick;
    stallAt = now - markAt;
  }
  lastTick = now;
  if (paused) return;
  for (const s of sessions) {
    if (s === undefined) continue;
    const due = Math.floor((now - mediaStart - scheduleShift - s.phaseMs) / intervalMs) + 1;
    for (let k = 0; k < 4 && s.sent < due; k++) {
      const buf = s.bufs[s.nextBuf]!;
      s.nextBuf = (s.nextBuf + 1) % RING;
      writeMedia(buf, s.sid, s.sent, now);
      s.sent++;
      s.client.sendRaw(target, buf).catch(() => {});
    }
  }
}

function consent(s: Session): void {
  s.checking = true;
  s.checks.sent++;
  s.client
    .check(target, s.creds, { timeoutMs: 2000, rtoMs: 250, maxTransmissions: 3 })
    .then(
      () => {
        s.checks.ok++;
      },
      (err: unknown) => {
        if (err instanceof CheckError && err.stunCode === 403) s.checks.e403++;
        else if (err instanceof CheckError && err.code === 'ICE_CHECK_TIMEOUT') s.checks.timeout++;
        else s.checks.otherError++;
      },
    )
    .finally(() => {
      s.checking = false;
    });
}

function checkTick(): void {
  const now = performance.now();
  for (const s of sessions) {
    if (s === undefined || s.checking || now < s.nextCheckAt) continue;
    s.nextCheckAt = now + checkIntervalMs;
    consent(s);
  }
}

function sessionReport(s: Session, end: number): Json {
  const to = s.winTo > 0 ? s.winTo : s.sent;
  return {
    sid: s.sid,
    port: s.client.port,
    sent: to - s.winFrom,
    echoed: s.echoed.countIn(s.winFrom, to),
    winFrom: s.winFrom,
    winTo: to,
    longestHole: s.echoed.longestHole(s.winFrom, to),
    maxGapMs: Math.max(s.maxGap, end - s.lastEcho),
    maxGapAtMs: s.maxGap >= end - s.lastEcho ? s.maxGapAt : end - markAt,
    // A gap still open at the end: the last echo, and no echo after it (-1).
    maxGapEdges: (s.maxGap >= end - s.lastEcho ? s.maxGapEdges : [s.lastEchoSeq, s.lastEchoRtt, -1, -1]).map(
      (x) => Math.round(x),
    ),
    sinceLastEchoMs: end - s.lastEcho,
    maxRttMs: s.maxRtt,
    foreign: s.foreign,
    duplicates: s.duplicates,
    checks: { ...s.checks },
  };
}

const live = (): Session[] => sessions.filter((s): s is Session => s !== undefined);

serve(async (req: Json) => {
  switch (req['cmd']) {
    case 'open': {
      const list = req['sessions'] as Array<{ sid: number } & Creds>;
      const timeoutMs = Number(req['timeoutMs'] ?? 5000);
      const connected: number[] = [];
      const failed: Record<number, string> = {};
      const connectMs: number[] = [];
      await Promise.all(
        list.map((x) =>
          openSession(x.sid, { ufrag: x.ufrag, password: x.password }, timeoutMs).then(
            (ms) => {
              connected.push(x.sid);
              connectMs.push(ms);
            },
            (err: unknown) => {
              failed[x.sid] = err instanceof Error ? err.message : String(err);
            },
          ),
        ),
      );
      return { connected, failed, connectMs };
    }
    case 'media': {
      pps = Number(req['pps'] ?? 50);
      size = Number(req['size'] ?? 200);
      intervalMs = 1000 / pps;
      checkIntervalMs = Number(req['checkIntervalMs'] ?? 2500);
      mediaStart = performance.now();
      scheduleShift = 0;
      const all = live();
      all.forEach((s, i) => {
        if (s.bufs[0]!.length !== size) s.bufs = Array.from({ length: RING }, () => Buffer.alloc(size, 0x55));
        s.phaseMs = (i % 4) * (intervalMs / 4);
        s.lastEcho = mediaStart;
        s.nextCheckAt = mediaStart + checkIntervalMs * ((i + 1) / all.length);
      });
      timer = setInterval(tick, 5);
      checkTimer = setInterval(checkTick, 50);
      return {};
    }
    case 'mark': {
      markAt = performance.now();
      rttHistogram.fill(0);
      for (const s of live()) {
        s.winFrom = s.sent;
        s.winTo = 0;
        s.lastEcho = markAt;
        s.maxGap = 0;
        s.maxGapAt = 0;
        s.maxGapEdges = [0, 0, 0, 0];
        s.maxRtt = 0;
        s.foreign = 0;
        s.duplicates = 0;
        s.checks = noChecks();
      }
      windowOpen = true;
      stallMax = 0;
      stallAt = 0;
      return {};
    }
    case 'checkNow': {
      const sids = req['sids'] as number[] | undefined;
      const now = performance.now();
      for (const s of live()) {
        if (sids !== undefined && !sids.includes(s.sid)) continue;
        s.nextCheckAt = now + checkIntervalMs;
        consent(s);
      }
      return {};
    }
    case 'rebindNat': {
      // A NAT rebinding happens between two datagrams; here it takes a conntrack run (a few ms).
      // Media stops meanwhile and its schedule resumes after it (nothing sent in a burst, no
      // sequence number skipped), so that each session's next consent check is the first
      // datagram of its new mapping: the rebinding right before a check. The pause is in the gaps
      // measured (pauseMs says how much); what media the tier then loses is the tier's share. A
      // real client adds its check period (it cannot see the rebinding), with or without a tier.
      paused = true;
      const t0 = performance.now();
      try {
        const deleted = await conntrackDelete(String(req['netns']), ['-p', 'udp']);
        for (const s of live()) {
          s.nextCheckAt = performance.now() + checkIntervalMs;
          consent(s);
        }
        return { deleted, pauseMs: performance.now() - t0 };
      } finally {
        scheduleShift += performance.now() - t0;
        paused = false;
      }
    }
    case 'rebindEach': {
      // One NAT rebinding per session, each at its own moment over `spreadMs` (random order), as a
      // NAT's mappings change one by one: the session's flow leaves from a new public port, a new
      // 5-tuple the balancer places anew. The client's new socket makes the NAT give it one (a
      // per-flow conntrack deletion would cost a process per flow); from the NAT on it is the
      // same, and what arrives on the old socket after the switch no longer counts, as what
      // arrives on a forgotten mapping is dropped. As in rebindNat, the session's consent check
      // is the first datagram of its new mapping; its media follows on the usual schedule.
      const spreadMs = Number(req['spreadMs'] ?? 4000);
      const all = live();
      // The new sockets first: binding one is not part of a rebinding.
      // Same ICE agent (its ufrag), new socket.
      const next = await Promise.all(all.map((s) => openClient(s.sid, s.client.ufrag)));
      const order = all.map((_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const t0 = performance.now();
      const late: number[] = [];
      await new Promise<void>((done) => {
        let left = order.length;
        if (left === 0) done();
        order.forEach((idx, k) => {
          const due = (k * spreadMs) / order.length;
          setTimeout(() => {
            late.push(performance.now() - t0 - due);
            const s = all[idx]!;
            const old = s.client;
            s.client = next[idx]!;
            s.nextCheckAt = performance.now() + checkIntervalMs;
            consent(s);
            // A check of the old socket may still be on its way: it settles before the close.
            setTimeout(() => void old.close().catch(() => {}), 3000);
            if (--left === 0) done();
          }, due);
        });
      });
      late.sort((a, b) => a - b);
      return { rebound: all.length, spanMs: performance.now() - t0, lateMsMax: late.at(-1) ?? 0 };
    }
    case 'report': {
      const now = performance.now();
      return { sessions: live().map((s) => sessionReport(s, now)) };
    }
    case 'stop': {
      const end = performance.now();
      clearInterval(timer);
      clearInterval(checkTimer);
      for (const s of live()) s.winTo = s.sent;
      // Echoes of the last datagrams are still on their way.
      await new Promise((r) => setTimeout(r, Number(req['drainMs'] ?? 500)));
      windowOpen = false;
      return {
        sessions: live().map((s) => sessionReport(s, end)),
        rttHistogram: [...rttHistogram],
        windowMs: end - markAt,
        stall: { maxMs: stallMax, atMs: stallAt },
      };
    }
    case 'restart': {
      const list = req['sessions'] as Array<{ sid: number } & Creds>;
      const timeoutMs = Number(req['timeoutMs'] ?? 5000);
      const connectMs: Record<number, number | null> = {};
      await Promise.all(
        list.map(async (x) => {
          const s = sessions[x.sid];
          if (s === undefined) throw new Error(`no session ${x.sid}`);
          s.creds = { ufrag: x.ufrag, password: x.password };
          const t0 = performance.now();
          try {
            await s.client.check(target, s.creds, { timeoutMs, useCandidate: true });
            connectMs[x.sid] = performance.now() - t0;
          } catch {
            connectMs[x.sid] = null;
          }
        }),
      );
      return { connectMs };
    }
    case 'ports':
      return { ports: Object.fromEntries(live().map((s) => [s.sid, s.client.port])) };
    case 'close': {
      clearInterval(timer);
      clearInterval(checkTimer);
      windowOpen = false;
      await Promise.all(live().map((s) => s.client.close()));
      sessions.length = 0;
      return {};
    }
    default:
      throw new Error(`unknown cmd ${String(req['cmd'])}`);
  }
});
emit({ event: 'ready' });
