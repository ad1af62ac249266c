// A Node WebRTC client (libdatachannel via node-datachannel). Answers a pod's offer, opens the
// pod's data channel, sends one message per session and reports the echo.
//
// requests: {cmd:'answer', session, sdp} -> {sdp}          (the pod offered, as JVB does)
//           {cmd:'offer', session} -> {sdp}                 (the client offers; used for timing)
//           {cmd:'setAnswer', session, sdp} -> {}
//           {cmd:'send', session, msg} -> {}                 (another message; its echo is an event)
//           {cmd:'close', session} -> {}
//           {cmd:'pingLoop', session, intervalMs} -> {}    (a message every interval, echoes counted, no events)
//           {cmd:'pingStats', session, stop?} -> {sent, echoed, maxGapMs, sinceLastEchoMs}
// events:   {event:'ice'|'state', session, state, t}, {event:'dc-open', session, t},
//           {event:'echo', session, msg, t, rttMs}, {event:'pair', session, local, remote}
// t: ms since the remote description was applied (the client starts its checks right then).
import nodeDataChannel, { type DataChannel, type PeerConnection } from 'node-datachannel';
import { emit, type Json, log, serve, until } from './jsonl.ts';

nodeDataChannel.initLogger('Warning', (level, msg) => log(level, msg));

interface Session {
  pc: PeerConnection;
  dc?: DataChannel;
  t0: number;
  loop?: PingLoop;
}

/** A steady message stream and its echoes: does the channel keep echoing, and what was the longest silence? */
interface PingLoop {
  timer?: NodeJS.Timeout;
  sent: number;
  echoed: number;
  lastEcho: number;
  maxGap: number;
}
const sessions = new Map<string, Session>();

function sessionOf(session: string): Session {
  const s = sessions.get(session);
  if (!s) throw new Error(`unknown session ${session}`);
  return s;
}

/** Sends one message when the channel is open and reports the echo. */
function pingOnOpen(session: string, s: Session, dc: DataChannel, alreadyOpen: boolean): void {
  const t = (): number => Date.now() - s.t0;
  const go = (): void => {
    s.dc = dc;
    emit({ event: 'dc-open', session, t: t() });
    const sent = Date.now();
    dc.onMessage((msg) => {
      const loop = s.loop;
      if (loop !== undefined && String(msg).includes(':loop:')) {
        const now = performance.now();
        loop.echoed++;
        loop.maxGap = Math.max(loop.maxGap, now - loop.lastEcho);
        loop.lastEcho = now;
        return;
      }
      emit({ event: 'echo', session, msg: String(msg), t: t(), rttMs: Date.now() - sent });
    });
    dc.sendMessage(`ping:${session}`);
  };
  if (alreadyOpen) go();
  else dc.onOpen(go);
}

function newPeer(session: string): Session {
  const pc = new nodeDataChannel.PeerConnection(`client/${session}`, { iceServers: [] });
  const s: Session = { pc, t0: Date.now() };
  sessions.set(session, s);
  const t = (): number => Date.now() - s.t0;
  pc.onIceStateChange((state) => emit({ event: 'ice', session, state, t: t() }));
  pc.onStateChange((state) => {
    emit({ event: 'state', session, state, t: t() });
    if (state === 'connected') {
      const pair = pc.getSelectedCandidatePair();
      if (pair) {
        emit({
          event: 'pair',
          session,
          local: `${pair.local.address}:${pair.local.port}`,
          remote: `${pair.remote.address}:${pair.remote.port}`,
        });
      }
    }
  });
  return s;
}

async function gathered(pc: PeerConnection): Promise<string> {
  await until(
    () => pc.localDescription() !== null && pc.gatheringState() === 'complete',
    3000,
    'client gathered',
  );
  return pc.localDescription()!.sdp;
}

serve(
  async (req: Json) => {
    const session = String(req['session']);
    switch (req['cmd']) {
      case 'answer': {
        const s = newPeer(session);
        s.pc.onDataChannel((dc) => pingOnOpen(session, s, dc, true));
        s.t0 = Date.now();
        s.pc.setRemoteDescription(String(req['sdp']), 'offer');
        return { sdp: await gathered(s.pc) };
      }
      case 'offer': {
        const s = newPeer(session);
        pingOnOpen(session, s, s.pc.createDataChannel('test'), false);
        return { sdp: await gathered(s.pc) };
      }
      case 'setAnswer': {
        const s = sessionOf(session);
        s.t0 = Date.now();
        s.pc.setRemoteDescription(String(req['sdp']), 'answer');
        return {};
      }
      case 'send': {
        const dc = sessionOf(session).dc;
        if (!dc?.isOpen()) throw new Error(`data channel of ${session} is not open`);
        dc.sendMessage(String(req['msg']));
        return {};
      }
      case 'pingLoop': {
        const s = sessionOf(session);
        const dc = s.dc;
        if (!dc?.isOpen()) throw new Error(`data channel of ${session} is not open`);
        const loop: PingLoop = { sent: 0, echoed: 0, lastEcho: performance.now(), maxGap: 0 };
        loop.timer = setInterval(
          () => {
            if (dc.isOpen()) dc.sendMessage(`:loop:${loop.sent++}`);
          },
          Number(req['intervalMs'] ?? 100),
        );
        s.loop = loop;
        return {};
      }
      case 'pingStats': {
        const loop = sessionOf(session).loop;
        if (loop === undefined) throw new Error(`no ping loop on ${session}`);
        if (req['stop'] === true) clearInterval(loop.timer);
        const now = performance.now();
        return {
          sent: loop.sent,
          echoed: loop.echoed,
          maxGapMs: Math.max(loop.maxGap, now - loop.lastEcho),
          sinceLastEchoMs: now - loop.lastEcho,
        };
      }
      case 'close': {
        const loop = sessions.get(session)?.loop;
        if (loop !== undefined) clearInterval(loop.timer);
        sessions.get(session)?.pc.close();
        sessions.delete(session);
        return {};
      }
      default:
        throw new Error(`unknown cmd ${String(req['cmd'])}`);
    }
  },
  () => {
    for (const s of sessions.values()) s.pc.close();
    nodeDataChannel.cleanup();
  },
);
emit({ event: 'ready' });
