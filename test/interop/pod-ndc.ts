// A single-port WebRTC server pod (libdatachannel via node-datachannel), the closest stand-in for
// JVB's SinglePortUdpHarvester: every session shares one UDP port (`enableIceUdpMux`, begin = end).
// By default, like JVB, it makes the offer and is the controlling ICE agent ('offer'); for the
// timing scenario it can answer a client's offer instead ('answerOffer'). It echoes data-channel messages,
// prefixed with its name so the runner can tell which pod served a session.
//
// argv: --name NAME --bind IP --port N
// requests: {cmd:'offer', session, advertise?: 'IP:PORT'} -> {sdp, ufrag}
//           {cmd:'answer', session, sdp} -> {}
//           {cmd:'answerOffer', session, sdp, advertise?} -> {sdp, ufrag}  (client offered; timing)
//           {cmd:'close', session} -> {}
// events:   {event:'state'|'ice', session, state, t}  (t: ms since the answer was applied)
import nodeDataChannel, { type DataChannel, type PeerConnection } from 'node-datachannel';
import { argValue, emit, type Json, log, serve, until } from './jsonl.ts';
import { advertiseOnly, iceUfrag } from './sdp.ts';

const name = argValue('--name') ?? 'pod';
const bindAddress = argValue('--bind');
const port = Number(argValue('--port'));
if (!bindAddress || !Number.isInteger(port)) throw new Error('usage: --name N --bind IP --port N');

nodeDataChannel.initLogger('Warning', (level, msg) => log(level, msg));

interface Session {
  pc: PeerConnection;
  t0: number;
}
const sessions = new Map<string, Session>();

function sessionOf(req: Json): Session {
  const s = sessions.get(String(req['session']));
  if (!s) throw new Error(`unknown session ${String(req['session'])}`);
  return s;
}

/** A peer on the pod's one mux port; `dc` when the pod makes the offer (and the channel). */
function newPeer(session: string, makeChannel: boolean): Session {
  const pc = new nodeDataChannel.PeerConnection(`${name}/${session}`, {
    iceServers: [],
    bindAddress,
    enableIceUdpMux: true,
    portRangeBegin: port,
    portRangeEnd: port,
  });
  const s: Session = { pc, t0: 0 };
  sessions.set(session, s);
  const t = (): number => (s.t0 ? Date.now() - s.t0 : -1);
  pc.onStateChange((state) => emit({ event: 'state', session, state, t: t() }));
  pc.onIceStateChange((state) => emit({ event: 'ice', session, state, t: t() }));
  const echo = (dc: DataChannel): void =>
    dc.onMessage((msg) => dc.sendMessage(`echo:${name}:${String(msg)}`));
  if (makeChannel) echo(pc.createDataChannel('test'));
  else pc.onDataChannel(echo);
  return s;
}

/** The gathered local description, with the proxy as the only candidate when `advertise` is set. */
async function localSdp(pc: PeerConnection, advertise: unknown): Promise<Json> {
  await until(
    () => pc.localDescription() !== null && pc.gatheringState() === 'complete',
    3000,
    'pod gathered',
  );
  let sdp = pc.localDescription()!.sdp;
  if (typeof advertise === 'string') {
    const [ip, p] = advertise.split(':');
    sdp = advertiseOnly(sdp, ip!, Number(p));
  }
  return { sdp, ufrag: iceUfrag(sdp) };
}

serve(
  async (req) => {
    switch (req['cmd']) {
      case 'offer':
        return localSdp(newPeer(String(req['session']), true).pc, req['advertise']);
      case 'answerOffer': {
        const s = newPeer(String(req['session']), false);
        s.t0 = Date.now();
        s.pc.setRemoteDescription(String(req['sdp']), 'offer');
        return localSdp(s.pc, req['advertise']);
      }
      case 'answer': {
        const s = sessionOf(req);
        s.t0 = Date.now();
        s.pc.setRemoteDescription(String(req['sdp']), 'answer');
        return {};
      }
      case 'close': {
        const s = sessionOf(req);
        s.pc.close();
        sessions.delete(String(req['session']));
        return {};
      }
      case 'version':
        return { libdatachannel: nodeDataChannel.getLibraryVersion() };
      default:
        throw new Error(`unknown cmd ${String(req['cmd'])}`);
    }
  },
  () => {
    for (const s of sessions.values()) s.pc.close();
    nodeDataChannel.cleanup();
  },
);
emit({ event: 'ready', name });
