// The fake JVBs of the tier harness, in the jvb namespace: one FakeMediaServer per `--jvb
// NAME=IP:PORT` (ice4j's single port: unknown ufrags dropped, 403 to a new remote address
// `--lock-ms` after a session's first success, media echoed to addresses with a successful check).
// Sessions get the server's prefix token (`ice-ingress jvb-config`'s ufrag-prefix), so the proxy
// routes them without probing, as in the Jitsi overlays.
//
// Besides echoing, each session counts what reached it, by the session id in the payload
// (media.ts), and every source address its traffic came from (media and STUN alike): the issue's
// "each backend sees one source address per session".
//
// requests: {cmd:'add', count, firstSid} -> {sessions:[{sid, jvb, ufrag, password}]}
//           {cmd:'clear'}  every session ends (ice4j expires them; their remote addresses are free again)
//           {cmd:'renew', sids} -> {sessions:[...]}  (each sid's session ends, a new one on the same
//                                                     JVB takes its place: what a client gets for an ICE restart)
//           {cmd:'report', ranges:{sid:[from,to]}} -> {sessions:{sid:{up, sources}}, jvbs:{name: stats},
//                                                       stallMs: longest event-loop stall since the last report}
import type dgram from 'node:dgram';
import { tokenFor } from '../../src/backends/token.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';
import { AttrType, getUsername, parseStun } from '../fixtures/stun-bytes.ts';
import { argValue, emit, type Json, serve } from '../interop/jsonl.ts';
import { isMedia, mediaSeq, mediaSid, SeqSet } from './media.ts';

interface Tracked {
  sid: number;
  jvb: FakeMediaServer;
  ufrag: string;
  seqs: SeqSet;
  sources: Set<string>;
  lastAddress: string;
  lastPort: number;
}

const bySid = new Map<number, Tracked>();
const byUfrag = new Map<string, Tracked>();

function seen(t: Tracked, from: dgram.RemoteInfo): void {
  if (from.port === t.lastPort && from.address === t.lastAddress) return;
  t.lastAddress = from.address;
  t.lastPort = from.port;
  t.sources.add(`${from.address}:${from.port}`);
}

function onDatagram(msg: Buffer, from: dgram.RemoteInfo): void {
  if (isMedia(msg)) {
    const t = bySid.get(mediaSid(msg));
    if (t === undefined) return;
    t.seqs.add(mediaSeq(msg));
    seen(t, from);
    return;
  }
  if (msg[0]! >= 4 || msg.length < 24) return;
  const username = firstUsername(msg) ?? getUsernameOf(msg);
  const colon = username?.indexOf(':') ?? -1;
  const t = colon > 0 ? byUfrag.get(username!.slice(0, colon)) : undefined;
  if (t !== undefined) seen(t, from);
}

/**
 * USERNAME when it is the first attribute (RFC 8489 §15; browsers and ice4j put it first, and the
 * proxy relays checks as they came): no full parse for each of a flood's probes.
 */
function firstUsername(msg: Buffer): string | undefined {
  if (msg.readUInt16BE(20) !== AttrType.USERNAME) return undefined;
  const len = msg.readUInt16BE(22);
  return 24 + len <= msg.length ? msg.toString('utf8', 24, 24 + len) : undefined;
}

function getUsernameOf(msg: Buffer): string | undefined {
  const stun = parseStun(msg);
  return stun === undefined ? undefined : getUsername(stun);
}

const lockAfterMs = Number(argValue('--lock-ms') ?? 3000);
const servers: FakeMediaServer[] = [];
for (let i = 0; i < process.argv.length; i++) {
  if (process.argv[i] !== '--jvb') continue;
  const m = /^([\w-]+)=([\d.]+):(\d+)$/.exec(process.argv[i + 1] ?? '');
  if (m === null) throw new Error(`--jvb NAME=IP:PORT, got ${process.argv[i + 1]}`);
  servers.push(
    await FakeMediaServer.start({
      name: m[1]!,
      host: m[2]!,
      port: Number(m[3]),
      lockAfterMs,
      ufragPrefix: tokenFor(m[1]!),
      onDatagram,
      // As the proxy's default --socket-buffer: the probes of a flood must not crowd media out.
      socketBuffer: 4 * 1024 * 1024,
    }),
  );
}
if (servers.length === 0) throw new Error('no --jvb');

/** A new ICE session on `jvb` for `sid` (media already counted for the sid stays counted). */
function open(sid: number, jvb: FakeMediaServer, seqs: SeqSet): Json {
  const creds = jvb.addSession();
  const t: Tracked = { sid, jvb, ufrag: creds.ufrag, seqs, sources: new Set(), lastAddress: '', lastPort: 0 };
  bySid.set(sid, t);
  byUfrag.set(creds.ufrag, t);
  return { sid, jvb: jvb.name, ...creds };
}

/** This process's own stalls (a late 5 ms tick) since the last report: the harness's share of a gap. */
let lastTick = performance.now();
let stallMax = 0;
setInterval(() => {
  const now = performance.now();
  stallMax = Math.max(stallMax, now - lastTick);
  lastTick = now;
}, 5);

serve((req: Json) => {
  switch (req['cmd']) {
    case 'add': {
      const first = Number(req['firstSid']);
      const out: Json[] = [];
      for (let sid = first; sid < first + Number(req['count']); sid++) {
        out.push(open(sid, servers[sid % servers.length]!, new SeqSet()));
      }
      return { sessions: out };
    }
    case 'clear': {
      for (const t of bySid.values()) t.jvb.removeSession(t.ufrag);
      bySid.clear();
      byUfrag.clear();
      return {};
    }
    case 'renew': {
      const out: Json[] = [];
      for (const sid of req['sids'] as number[]) {
        const t = bySid.get(sid);
        if (t === undefined) throw new Error(`no session ${sid}`);
        t.jvb.removeSession(t.ufrag);
        byUfrag.delete(t.ufrag);
        out.push(open(sid, t.jvb, t.seqs));
      }
      return { sessions: out };
    }
    case 'report': {
      const ranges = (req['ranges'] ?? {}) as Record<string, [number, number]>;
      const sessions: Json = {};
      for (const [sid, t] of bySid) {
        const r = ranges[String(sid)];
        sessions[sid] = {
          ufrag: t.ufrag,
          jvb: t.jvb.name,
          up: r === undefined ? 0 : t.seqs.countIn(r[0], r[1]),
          sources: [...t.sources],
        };
      }
      const stallMs = stallMax;
      stallMax = 0;
      return { sessions, jvbs: Object.fromEntries(servers.map((s) => [s.name, { ...s.stats }])), stallMs };
    }
    default:
      throw new Error(`unknown cmd ${String(req['cmd'])}`);
  }
});
emit({ event: 'ready', jvbs: servers.map((s) => `${s.name}=${s.address}:${s.port}`) });
