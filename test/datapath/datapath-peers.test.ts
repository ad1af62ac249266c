import { describe, expect, it } from 'vitest';
import type { PeerRoute, PeerRouting } from '../../src/defs/interfaces.ts';
import { DROP_REASON_LABELS, ROUTE_LABELS } from '../../src/defs/reasons.ts';
import type { UsernameView } from '../../src/stun/parse.ts';
import { check, type DatapathRig, makeDatapathRig, media } from '../fixtures/fake-transport.ts';

/**
 * Where the peer layer plugs into the I/O-free data path (docs/peers.md): as the receiver, it is
 * asked only about unknown 5-tuples (divert before anything, ask where the data path would drop or
 * route), and what it hands back is handled as without peers, counted once; as the owner, the data
 * path takes tunneled datagrams as the client's own with their route, keeps the integrity gate,
 * never asks about or hands on a tunneled datagram, and sends downstream back through the route.
 * Fake transport, injected clock, real STUN bytes.
 */

const drops = (r: DatapathRig, label: string): number =>
  r.datapath.counters.drops[DROP_REASON_LABELS.indexOf(label)]!;
const routes = (r: DatapathRig, label: string): number =>
  r.datapath.counters.routes[ROUTE_LABELS.indexOf(label)]!;

/** A PeerRouting that records every call; `claim` decides what ask() takes. */
class RecordingPeers implements PeerRouting {
  readonly calls: string[] = [];
  claim = false;
  readonly diverted = new Set<string>();
  divert(_buf: Buffer, address: string, port: number): boolean {
    this.calls.push(`divert ${address}:${port}`);
    return this.diverted.has(`${address}:${port}`);
  }
  ask(buf: Buffer, address: string, port: number, view: UsernameView | undefined): boolean {
    this.calls.push(
      `ask ${address}:${port}${view === undefined ? '' : ` ${buf.toString('latin1', view.start, view.end)}`}`,
    );
    return this.claim;
  }
}

/** The owner's end of a tunnel, recording what the data path sends back through it. */
class RecordingRoute implements PeerRoute {
  readonly peer: string;
  readonly sent: Buffer[] = [];
  constructor(peer: string) {
    this.peer = peer;
  }
  send(buf: Uint8Array): void {
    this.sent.push(Buffer.from(buf));
  }
}

/** One established session of backend 0 from 192.0.2.1:5000, its credentials and upstream. */
function established(r: DatapathRig) {
  const creds = r.backends[0]!.addSession();
  r.fromClient(check(creds), '192.0.2.1', 5000);
  const up = r.transport.open()[0]!;
  r.answerAll(up);
  const s = r.sessionOf(creds.serverUfrag);
  expect(s.backend?.name).toBe('jvb-0');
  return { creds, up, s };
}

describe('data path, receiving side: the peers are asked about unknown 5-tuples only', () => {
  it('a known flow pays nothing: the peer layer is never called for its media and checks', () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p });
    const { creds, up } = established(r);
    p.calls.length = 0;
    r.fromClient(media('m1'), '192.0.2.1', 5000);
    r.fromClient(check(creds), '192.0.2.1', 5000); // a consent check
    expect(p.calls).toEqual([]);
    expect(up.sent.at(-2)?.buf.subarray(4).toString()).toBe('m1');
    // Only a check with a ufrag pair no session here has (an ICE restart, or another replica's
    // session on a port a NAT handed out again: below) is asked about, once, before the restart.
    const restart = r.backends[0]!.addSession();
    r.fromClient(check(restart), '192.0.2.1', 5000);
    expect(p.calls).toEqual([`ask 192.0.2.1:5000 ${restart.serverUfrag}:${restart.clientUfrag}`]);
  });

  it('media, DTLS and a STUN response of an unknown 5-tuple are asked about; other bytes are not', () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p });
    r.fromClient(media('x'), '192.0.2.9', 1);
    r.fromClient(Buffer.from([22, 254, 253, 0]), '192.0.2.9', 2); // DTLS
    r.fromClient(Buffer.from([0x40, 1, 2, 3]), '192.0.2.9', 3); // TURN channel data: not WebRTC media here
    const response = r.backends[0]!.answer(check(r.backends[0]!.addSession()), {
      address: '192.0.2.9',
      port: 4,
    })!;
    r.fromClient(response, '192.0.2.9', 4); // a client answering its backend's consent check
    expect(p.calls).toEqual([
      'divert 192.0.2.9:1',
      'ask 192.0.2.9:1',
      'divert 192.0.2.9:2',
      'ask 192.0.2.9:2',
      'divert 192.0.2.9:3',
      'divert 192.0.2.9:4',
      'ask 192.0.2.9:4',
    ]);
    // Declined: dropped by reason as without peers.
    expect([
      drops(r, 'unknown_flow_rtp'),
      drops(r, 'unknown_flow_dtls'),
      drops(r, 'unknown_flow_other'),
    ]).toEqual([1, 1, 1]);
    expect(drops(r, 'not_binding_request')).toBe(1);
  });

  it('a first check is asked about with its ufrag pair before it is routed; held, it opens nothing', () => {
    const p = new RecordingPeers();
    p.claim = true;
    const r = makeDatapathRig({ peers: p });
    const creds = r.backends[0]!.addSession();
    const first = check(creds);
    r.fromClient(first, '192.0.2.1', 5000);
    expect(p.calls).toEqual([
      'divert 192.0.2.1:5000',
      `ask 192.0.2.1:5000 ${creds.serverUfrag}:${creds.clientUfrag}`,
    ]);
    expect(r.transport.open()).toEqual([]);
    expect(r.datapath.size).toBe(0);
    // No peer owns it: handed back, it is routed — and counted once, when it arrived. (The real
    // peer layer declines it then: the round put it in its negative cache.)
    p.claim = false;
    r.datapath.local(first, '192.0.2.1', 5000);
    expect(r.transport.open()).toHaveLength(1);
    expect(r.datapath.counters.packetsFromClients).toBe(1);
    // A datagram diverted by the peer layer (its tunnel) goes nowhere else.
    p.diverted.add('192.0.2.1:6000');
    r.fromClient(media('t'), '192.0.2.1', 6000);
    expect(p.calls.at(-1)).toBe('divert 192.0.2.1:6000');
    expect(drops(r, 'unknown_flow_rtp')).toBe(0);
  });

  it('a check from a new 5-tuple for a live session of ours is routed here at once, not asked about', () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p });
    const { creds, up } = established(r);
    p.claim = true; // were it asked now, the peer layer would hold it
    p.calls.length = 0;
    const before = up.sent.length;
    r.fromClient(check(creds), '192.0.2.1', 6000); // the client's NAT rebound; the flow stayed here
    expect(p.calls).toEqual(['divert 192.0.2.1:6000']);
    // Forwarded through the session's own upstream socket, to join on the backend's success.
    expect(up.sent.length).toBe(before + 1);
    expect(r.transport.open()).toHaveLength(1);
  });

  it("a check of another replica's session on a 5-tuple a session here holds (a NAT gave its port to another client): asked first", () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p, backends: 2 });
    const { creds, up, s } = established(r);
    // Another client's session, owned by another replica, whose NAT mapping now has this port.
    const other = r.backends[1]!.addSession();
    p.claim = true;
    r.fromClient(check(other), '192.0.2.1', 5000);
    expect(p.calls.at(-1)).toBe(`ask 192.0.2.1:5000 ${other.serverUfrag}:${other.clientUfrag}`);
    expect(r.datapath.size).toBe(1); // no restart routed meanwhile
    // While the round is in flight, what follows on that 5-tuple waits in it: not into this session.
    p.diverted.add('192.0.2.1:5000');
    const sentBefore = up.sent.length;
    r.fromClient(media('theirs'), '192.0.2.1', 5000);
    expect(p.calls.at(-1)).toBe('divert 192.0.2.1:5000');
    expect(up.sent.length).toBe(sentBefore);
    p.diverted.delete('192.0.2.1:5000');
    // The owner answers "mine": the 5-tuple leaves the session here and follows the tunnel.
    r.datapath.claimed('192.0.2.1', 5000);
    expect(r.datapath.lookup('192.0.2.1', 5000)).toBeUndefined();
    expect(s.endpoints).toHaveLength(0);
    const n = p.calls.length;
    r.fromClient(media('m'), '192.0.2.1', 5000);
    expect(p.calls[n]).toBe('divert 192.0.2.1:5000'); // an unknown 5-tuple here now: its tunnel's
    // The session's own client comes back from its new 5-tuple (its rebinding) and joins.
    r.fromClient(check(creds), '192.0.2.1', 6000);
    r.answerAll(up);
    expect(r.datapath.lookup('192.0.2.1', 6000)?.session).toBe(s);
  });

  it('with no owner among the peers, such a check is the ICE restart of the session here, as without peers', () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p, backends: 2 });
    const { s } = established(r);
    const other = r.backends[1]!.addSession();
    p.claim = false; // the peers declined (or the round ended "none" and the check came back)
    r.fromClient(check(other), '192.0.2.1', 5000);
    expect(r.datapath.size).toBe(2);
    expect(s.restartOf).toBeDefined();
    expect(r.datapath.lookup('192.0.2.1', 5000)?.session).toBe(s);
  });

  it('a round about such a check that ends with no owner: what waited in it goes into the session here, in order', () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p, backends: 2 });
    const { up } = established(r);
    const other = r.backends[1]!.addSession();
    p.claim = true;
    r.fromClient(check(other), '192.0.2.1', 5000); // asked; the round holds it
    // The round ends with no owner: the peer layer hands back what it held (the data path's
    // `local`), and the 5-tuple's media flows into its session again.
    p.claim = false;
    const n = up.sent.length;
    r.datapath.local(media('m1'), '192.0.2.1', 5000);
    r.fromClient(media('m2'), '192.0.2.1', 5000);
    expect(up.sent.slice(n).map((x) => x.buf.subarray(4).toString())).toEqual(['m1', 'm2']);
  });

  it("an owner's datagram for a tunneled client leaves from the public socket and counts as client_out", () => {
    const r = makeDatapathRig({ peers: new RecordingPeers() });
    r.datapath.sendToClient(Buffer.from([0x80, 1]), 5000, '192.0.2.1');
    expect(r.transport.sentToClient('192.0.2.1', 5000)).toEqual([Buffer.from([0x80, 1])]);
    expect(r.datapath.counters.packetsToClients).toBe(1);
  });
});

describe('data path, owning side: tunneled datagrams', () => {
  it("a known 5-tuple's datagrams through a peer: forwarded, downstream follows the route, and back when it comes directly", () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p });
    const { up, s } = established(r);
    const viaB = new RecordingRoute('10.1.0.2:10001');
    expect(r.datapath.tunneled(media('up1'), '192.0.2.1', 5000, viaB)).toBe(true);
    expect(up.sent.at(-1)?.buf.subarray(4).toString()).toBe('up1');
    expect(r.events.at(-1)).toEqual({
      type: 'routeChanged',
      session: s.id,
      endpoint: '192.0.2.1:5000',
      via: '10.1.0.2:10001',
    });
    // Not counted as client_in here: the receiving replica counted it on its public socket.
    expect(r.datapath.counters.packetsFromClients).toBe(1);
    up.inject(media('down1'), r.backends[0]!);
    expect(viaB.sent.map((b) => b.subarray(4).toString())).toEqual(['down1']);
    expect(r.transport.sentToClient('192.0.2.1', 5000).length).toBe(1); // only the first check's success
    expect(r.datapath.routeOf('192.0.2.1', 5000)).toBe(viaB);
    // The flow moves again (another receiver), then comes back directly.
    const viaC = new RecordingRoute('10.1.0.3:10001');
    r.datapath.tunneled(media('up2'), '192.0.2.1', 5000, viaC);
    up.inject(media('down2'), r.backends[0]!);
    expect(viaC.sent.length).toBe(1);
    r.fromClient(media('up3'), '192.0.2.1', 5000);
    up.inject(media('down3'), r.backends[0]!);
    expect(r.transport.sentToClient('192.0.2.1', 5000).at(-1)?.subarray(4).toString()).toBe('down3');
    expect(
      r.events.filter((e) => e.type === 'routeChanged').map((e) => e.type === 'routeChanged' && e.via),
    ).toEqual(['10.1.0.2:10001', '10.1.0.3:10001', 'direct']);
    // The peer layer was never asked: every datagram here was of a known 5-tuple or tunneled.
    expect(p.calls).toEqual(['divert 192.0.2.1:5000', `ask 192.0.2.1:5000 ${s.username}`]);
  });

  it('a rebinding that landed on another replica joins only on the backend success, with its route; a forged one moves nothing', () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p });
    const { creds, up, s } = established(r);
    const viaB = new RecordingRoute('10.1.0.2:10001');
    // Forged: right ufrag pair, wrong MESSAGE-INTEGRITY key.
    const forged = check({ ...creds, password: 'x'.repeat(24) });
    expect(r.datapath.tunneled(forged, '198.51.100.7', 7000, viaB)).toBe(true);
    r.answerAll(up);
    expect(routes(r, 'rebind_refused')).toBe(1);
    expect(r.datapath.lookup('198.51.100.7', 7000)).toBeUndefined();
    expect(viaB.sent).toHaveLength(1); // the 401 goes back to whoever sent the check
    // The real client from its new 5-tuple.
    expect(r.datapath.tunneled(check(creds), '192.0.2.1', 6000, viaB)).toBe(true);
    expect(r.datapath.lookup('192.0.2.1', 6000)).toBeUndefined(); // not before the backend says so
    r.answerAll(up);
    const ep = r.datapath.lookup('192.0.2.1', 6000)!;
    expect(ep.session).toBe(s);
    expect(ep.via).toBe(viaB);
    expect(s.current).toBe(ep);
    expect(routes(r, 'rebind')).toBe(1);
    expect(viaB.sent).toHaveLength(2); // the success, back through the route
    up.inject(media('d'), r.backends[0]!);
    expect(viaB.sent.at(-1)?.subarray(4).toString()).toBe('d');
    expect(r.transport.open()).toHaveLength(1); // one upstream socket: the backend saw one address
    expect(p.calls.filter((c) => c.includes('198.51.100.7') || c.includes(':6000'))).toEqual([]);
  });

  it("a rebinding through a peer: the media that follows its check is held until the backend's success, then sent on", () => {
    const p = new RecordingPeers();
    const r = makeDatapathRig({ peers: p });
    const { creds, up, s } = established(r);
    const viaB = new RecordingRoute('10.1.0.2:10001');
    expect(r.datapath.tunneled(check(creds), '192.0.2.1', 6000, viaB)).toBe(true);
    expect(r.datapath.tunneled(media('m1'), '192.0.2.1', 6000, viaB)).toBe(true);
    expect(r.datapath.tunneled(media('m2'), '192.0.2.1', 6000, viaB)).toBe(true);
    expect(drops(r, 'unknown_flow_rtp')).toBe(0);
    const n = up.sent.length;
    r.answerAll(up);
    expect(r.datapath.lookup('192.0.2.1', 6000)?.via).toBe(viaB);
    expect(up.sent.slice(n).map((x) => x.buf.subarray(4).toString())).toEqual(['m1', 'm2']);
    expect(s.current.port).toBe(6000);
    expect(p.calls.filter((c) => c.includes(':6000'))).toEqual([]); // never asked about
  });

  it('a tunneled datagram never opens a session, nor is it asked about or handed on', () => {
    const p = new RecordingPeers();
    p.claim = true;
    const r = makeDatapathRig({ peers: p });
    const viaB = new RecordingRoute('10.1.0.2:10001');
    const creds = r.backends[0]!.addSession();
    // A check of no live session here: the route leads nowhere.
    expect(r.datapath.tunneled(check(creds), '192.0.2.1', 5000, viaB)).toBe(false);
    expect(drops(r, 'tunnel_no_session')).toBe(1);
    // Media of an unknown 5-tuple: dropped (it may precede a rebinding's join), not a dead end.
    expect(r.datapath.tunneled(media('m'), '192.0.2.1', 5001, viaB)).toBe(true);
    expect(drops(r, 'unknown_flow_rtp')).toBe(1);
    expect(r.transport.open()).toEqual([]);
    expect(p.calls).toEqual([]);
  });

  it('answers for its sessions by 5-tuple and by ufrag pair; draining, it leaves an ICE restart to the receiver', () => {
    const r = makeDatapathRig({ peers: new RecordingPeers() });
    const { creds, s } = established(r);
    const same = Buffer.from(`${creds.serverUfrag}:${creds.clientUfrag}`, 'latin1');
    const restart = Buffer.from(`${r.backends[0]!.addSession().serverUfrag}:${creds.clientUfrag}`, 'latin1');
    expect(r.datapath.sessionOfFlow('192.0.2.1', 5000, undefined)).toBe(s);
    expect(r.datapath.sessionOfFlow('192.0.2.1', 5000, restart)).toBe(s);
    expect(r.datapath.sessionOfFlow('192.0.2.1', 5001, undefined)).toBeUndefined();
    expect(r.datapath.sessionOfUsername(same)).toBe(s);
    expect(r.datapath.sessionOfUsername(restart)).toBeUndefined();
    r.datapath.stopAccepting();
    expect(r.datapath.sessionOfFlow('192.0.2.1', 5000, same)).toBe(s);
    expect(r.datapath.sessionOfFlow('192.0.2.1', 5000, restart)).toBeUndefined();
    // One that arrives through a tunnel anyway is a dead end (the receiver asks again and routes it).
    const viaB = new RecordingRoute('10.1.0.2:10001');
    r.datapath.tunneled(media('m'), '192.0.2.1', 5000, viaB);
    const restartCheck = check({ ...creds, serverUfrag: restart.toString('latin1').split(':')[0]! });
    expect(r.datapath.tunneled(restartCheck, '192.0.2.1', 5000, viaB)).toBe(false);
    expect(drops(r, 'draining')).toBe(1);
  });
});
