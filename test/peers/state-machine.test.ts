import { describe, expect, it } from 'vitest';
import { PeerDrop, QueryOutcome, QuerySkip, TunnelClose, TunnelDir } from '../../src/peers/counters.ts';
import { HOLD_PER_FLOW } from '../../src/peers/node.ts';
import { PeerState, SILENT_MS } from '../../src/peers/peer-set.ts';
import {
  dataHeader,
  encodeAnswer,
  encodeHeartbeat,
  encodeQuery,
  encodeRelease,
  MsgType,
  Owned,
  ReleaseOf,
} from '../../src/peers/wire.ts';
import { SimNet, type SimNode } from './sim.ts';

// The query/tunnel state machine of three replicas on one injected clock (docs/peers.md). A is the
// owner of the client's session unless a test says otherwise; the client's flow lands on B (and
// then C) as a load balancer that lost its conntrack entry would send it.

const CLIENT = '203.0.113.9';
const rtp = (n: number): Buffer => Buffer.from([0x80, 0x60, 0, n, 1, 2, 3, 4]);

function tier(): { net: SimNet; a: SimNode; b: SimNode; c: SimNode } {
  const net = new SimNet();
  const a = net.add('a', '10.0.0.1', 10001);
  const b = net.add('b', '10.0.0.2', 10001);
  const c = net.add('c', '10.0.0.3', 10001);
  net.meshAll();
  net.flush(); // first pings and pongs: everyone ready (and each learned it is not its own peer)
  return { net, a, b, c };
}

describe('peers: a moved flow', () => {
  it('is asked about once, held meanwhile, then tunneled both ways in order', () => {
    const { net, a, b } = tier();
    expect(b.node.set.peers.map((p) => [p.name, p.state])).toEqual([
      ['10.0.0.1:10001', PeerState.Ready],
      ['10.0.0.3:10001', PeerState.Ready],
    ]);
    a.own(`${CLIENT}:5000`);
    expect(b.client(rtp(1), CLIENT, 5000)).toBe('asked');
    expect(b.client(rtp(2), CLIENT, 5000)).toBe('diverted'); // held, no second round
    expect(net.sent(MsgType.Query, b)).toBe(2); // one query to each peer
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.Owned]).toBe(1);
    expect(b.node.counters.handoffsOut).toBe(1);
    // Both held datagrams reached the owner's data path, in order, for the client's 5-tuple.
    expect(a.tunneled.map((t) => [t.buf[3], t.address, t.port])).toEqual([
      [1, CLIENT, 5000],
      [2, CLIENT, 5000],
    ]);
    expect(a.node.counters.handoffsIn).toBe(1);
    // Later datagrams: straight through the tunnel, no round.
    expect(b.client(rtp(3), CLIENT, 5000)).toBe('diverted');
    net.flush();
    expect(a.tunneled.length).toBe(3);
    expect(net.sent(MsgType.Query)).toBe(2);
    // Downstream: through the route the owner's data path holds, out of B's public socket.
    a.tunneled[2]!.route.send(Buffer.from([0x80, 0x61, 9, 9]));
    net.flush();
    expect(b.toClients).toEqual([{ buf: Buffer.from([0x80, 0x61, 9, 9]), address: CLIENT, port: 5000 }]);
    expect(b.node.counters.tunnelPackets[TunnelDir.ToOwner]).toBe(3);
    expect(a.node.counters.tunnelPackets[TunnelDir.FromReceiver]).toBe(3);
    expect(a.node.counters.tunnelPackets[TunnelDir.ToReceiver]).toBe(1);
    expect(b.node.counters.tunnelPackets[TunnelDir.FromOwner]).toBe(1);
    expect(b.node.counters.tunnelBytes[TunnelDir.ToOwner]).toBe(3 * 8);
    expect(b.local).toEqual([]);
  });

  it('by ufrag pair: a check from a new 5-tuple (a rebinding onto another replica) finds its session', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`, 'srvA:cli1');
    const check = Buffer.from('....srvA:cli1....', 'latin1');
    expect(b.node.ask(check, CLIENT, 6000, { start: 4, end: 13, colon: 8 })).toBe(true);
    net.flush();
    expect(a.node.counters.answers[Owned.Ufrag]).toBe(1);
    expect(a.tunneled.map((t) => [t.address, t.port])).toEqual([[CLIENT, 6000]]);
    // The owner's fake data path joins nothing on its own (the integrity gate is the data path's).
    expect(a.routes.has(`${CLIENT}:6000`)).toBe(false);
  });

  it('a check on a 5-tuple the owner knows from another session (a NAT reused the port) goes to the session its ufrag pair names', () => {
    const { net, a, b } = tier();
    const stale = a.own(`${CLIENT}:5000`, 'srvX:cliX'); // the port's previous client
    const named = a.own(`${CLIENT}:7000`, 'srvA:cli1'); // the check's session, rebinding
    const check = Buffer.from('....srvA:cli1....', 'latin1');
    expect(b.node.ask(check, CLIENT, 5000, { start: 4, end: 13, colon: 8 })).toBe(true);
    net.flush();
    expect(a.node.counters.answers[Owned.Ufrag]).toBe(1);
    expect(a.node.counters.answers[Owned.Flow]).toBe(0);
    expect(named).not.toBe(stale);
    // A pair no session has (an ICE restart on that 5-tuple): the 5-tuple's session, as before.
    const restart = Buffer.from('....srvR:cliX....', 'latin1');
    expect(b.node.ask(restart, CLIENT, 5000, { start: 4, end: 13, colon: 8 })).toBe(true);
    net.flush();
    expect(a.node.counters.answers[Owned.Flow]).toBe(1);
  });

  it('no owner: one round, then the held datagrams go to the local data path, and the 5-tuple is not asked again until the TTL ends', () => {
    const { net, b } = tier();
    expect(b.client(rtp(1), CLIENT, 5000)).toBe('asked');
    b.client(rtp(2), CLIENT, 5000);
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.None]).toBe(1);
    expect(b.local.map((l) => l.buf[3])).toEqual([1, 2]);
    expect(b.client(rtp(3), CLIENT, 5000)).toBe('local');
    expect(b.node.counters.skipped[QuerySkip.Negative]).toBe(1);
    // A check with a ufrag pair on the same 5-tuple is a new question (the rebinding case: media
    // first, which nobody can place, then the check that names the session).
    const check = Buffer.from('....srvA:cli1....', 'latin1');
    expect(b.node.ask(check, CLIENT, 5000, { start: 4, end: 13, colon: 8 })).toBe(true);
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.None]).toBe(2);
    expect(b.node.ask(check, CLIENT, 5000, { start: 4, end: 13, colon: 8 })).toBe(false);
    net.advance(2000);
    expect(b.client(rtp(4), CLIENT, 5000)).toBe('asked');
    expect(net.sent(MsgType.Query, b)).toBe(6);
  });

  it('a round ends when every answering peer said no; a silent peer is neither asked nor waited for', () => {
    const { net, a, b } = tier();
    net.down.add(a);
    net.advance(SILENT_MS + 1000);
    expect(b.node.set.peers.find((p) => p.name.startsWith('10.0.0.1'))!.state).toBe(PeerState.Silent);
    expect(b.client(rtp(1), CLIENT, 5000)).toBe('asked');
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.None]).toBe(1); // C's "no" was enough
    expect(net.log.filter((d) => d.buf[3] === MsgType.Query && d.to.address === '10.0.0.1').length).toBe(0);
    expect(net.log.filter((d) => d.buf[3] === MsgType.Query && d.to.address === '10.0.0.3').length).toBe(1);
    // Nobody answering at all: not asked (handled as without peers).
    net.down.add(a);
    const lone = new SimNet();
    const x = lone.add('x', '10.0.1.1', 10001);
    const y = lone.add('y', '10.0.1.2', 10001);
    lone.meshAll();
    lone.down.add(y);
    lone.advance(SILENT_MS + 1000);
    expect(x.client(rtp(1), CLIENT, 1)).toBe('local');
    expect(x.node.counters.skipped[QuerySkip.NoPeers]).toBe(1);
  });
});

describe('peers: lost and doubled answers', () => {
  it('a lost query or answer is covered by one repeat at half time', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`);
    let lost = 0;
    net.lose = (d) => d.buf[3] === MsgType.Answer && d.from.address === a.address && lost++ === 0;
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    expect(b.node.receiver.inflight).toBe(1);
    net.advance(100);
    expect(b.node.receiver.inflight).toBe(1);
    net.advance(50); // past 125 ms: repeated to A only (C answered)
    expect(net.log.filter((d) => d.buf[3] === MsgType.Query && d.to.address === a.address).length).toBe(2);
    expect(net.log.filter((d) => d.buf[3] === MsgType.Query && d.to.address === '10.0.0.3').length).toBe(1);
    expect(b.node.counters.queries[QueryOutcome.Owned]).toBe(1);
    expect(a.tunneled.length).toBe(1);
    // The owner minted twice (two queries): the unused pending tunnel expires, the used one stays.
    expect(a.node.owner.tunnels).toBe(2);
    net.advance(11_000);
    expect(a.node.owner.tunnels).toBe(1);
    expect(a.node.counters.tunnelsClosed[TunnelClose.Idle]).toBe(1);
  });

  it('all answers lost: the round times out, the flow is handled locally, a late "mine" is released', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`);
    const late: Array<(typeof net.queue)[number]> = [];
    net.lose = (d) => {
      if (d.buf[3] !== MsgType.Answer) return false;
      late.push(d);
      return true;
    };
    b.client(rtp(1), CLIENT, 5000);
    net.advance(260);
    expect(b.node.counters.queries[QueryOutcome.Timeout]).toBe(1);
    expect(b.local.length).toBe(1);
    expect(a.node.owner.tunnels).toBe(2); // original + repeat, both pending
    net.lose = () => false;
    for (const d of late) net.queue.push(d);
    net.flush();
    // A's two "mine" (query and repeat) count as stale; C's late "not mine"s do not.
    expect(late.length).toBe(4);
    expect(b.node.counters.drops[PeerDrop.StaleAnswer]).toBe(2);
    expect(a.node.owner.tunnels).toBe(0); // every "mine" that came late was released
    expect(a.node.counters.tunnelsClosed[TunnelClose.Released]).toBe(2);
  });

  it('two owners answering: the first wins, the second is released', () => {
    const { net, a, b, c } = tier();
    a.own(`${CLIENT}:5000`);
    c.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.Owned]).toBe(1);
    expect(b.node.counters.drops[PeerDrop.StaleAnswer]).toBe(1);
    expect(a.tunneled.length + c.tunneled.length).toBe(1);
    expect(a.node.owner.tunnels + c.node.owner.tunnels).toBe(1);
  });
});

describe('peers: owners that go away', () => {
  it('an owner that stops answering pings: its tunnels end, the flow is asked about again and handled locally', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    expect(b.node.receiver.tunnels).toBe(1);
    net.down.add(a); // SIGKILL
    b.client(rtp(2), CLIENT, 5000); // into the void until the silence is noticed
    net.advance(SILENT_MS + 1000);
    expect(b.node.receiver.tunnels).toBe(0);
    expect(b.node.counters.tunnelsClosed[TunnelClose.PeerGone]).toBe(1);
    expect(b.client(rtp(3), CLIENT, 5000)).toBe('asked');
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.None]).toBe(1);
    expect(b.local.map((l) => l.buf[3])).toEqual([3]);
  });

  it('an owner that leaves the peer set: tunnels end at once', () => {
    const { net, a, b, c } = tier();
    a.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    b.node.updatePeers([b.spec(), c.spec()]);
    expect(b.node.receiver.tunnels).toBe(0);
    expect(b.node.counters.tunnelsClosed[TunnelClose.PeerGone]).toBe(1);
    // Its datagrams still in flight are from an unknown peer now.
    a.tunneled[0]!.route.send(Buffer.from([1]));
    net.flush();
    expect(b.node.counters.drops[PeerDrop.UnknownPeer]).toBe(1);
    expect(b.toClients).toEqual([]);
  });

  it('an owner that restarted (same address, new instance): tunnels to it end', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    const pong = encodeHeartbeat(MsgType.Pong, { hi: 1, lo: 2 }, 1, 1, 0);
    b.node.onDatagram(pong, a.address, a.port);
    expect(b.node.receiver.tunnels).toBe(0);
    expect(b.node.counters.tunnelsClosed[TunnelClose.PeerGone]).toBe(1);
  });

  it('the owner ends the session: the receiver forgets the tunnel and asks again next time', () => {
    const { net, a, b } = tier();
    const s = a.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    a.close(s);
    net.flush();
    expect(a.node.counters.tunnelsClosed[TunnelClose.SessionClosed]).toBe(1);
    expect(b.node.counters.tunnelsClosed[TunnelClose.Released]).toBe(1);
    expect(b.client(rtp(2), CLIENT, 5000)).toBe('asked');
  });

  it('a draining owner is still an owner (its pongs say draining)', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`);
    a.node.setDraining();
    net.advance(1000);
    expect(b.node.set.peers.find((p) => p.name.startsWith('10.0.0.1'))!.state).toBe(PeerState.Draining);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    expect(b.node.counters.queries[QueryOutcome.Owned]).toBe(1);
  });
});

describe('peers: a flow that moves twice, and loops', () => {
  it('A owns, B receives, then C receives: A follows to C and releases B; B never claims the flow', () => {
    const { net, a, b, c } = tier();
    a.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    expect(a.routes.get(`${CLIENT}:5000`)?.peer).toBe('10.0.0.2:10001');
    // The balancer moves the flow again: C asks; B, which only tunnels it, says "not mine".
    expect(c.client(rtp(2), CLIENT, 5000)).toBe('asked');
    net.flush();
    expect(b.node.counters.answers[Owned.None]).toBe(1);
    expect(a.node.counters.answers[Owned.Flow]).toBe(2);
    expect(a.routes.get(`${CLIENT}:5000`)?.peer).toBe('10.0.0.3:10001');
    expect(a.node.counters.tunnelsClosed[TunnelClose.Replaced]).toBe(1);
    expect(b.node.receiver.tunnels).toBe(0); // released by the owner
    a.tunneled.at(-1)!.route.send(Buffer.from([7]));
    net.flush();
    expect(c.toClients.length).toBe(1);
    expect(b.toClients.length).toBe(0);
    // The flow comes back to A directly: the tunnel from C ends too.
    expect(a.client(rtp(3), CLIENT, 5000)).toBe('local');
    net.flush();
    expect(c.node.receiver.tunnels).toBe(0);
    expect(a.node.owner.tunnels).toBe(0);
    // Every query came from a receiver's own unknown flow: none from a tunneled datagram.
    expect(net.sent(MsgType.Query, a)).toBe(0);
  });
});

describe('peers: what a peer trusts', () => {
  it('many flows moved at once: queries and answers share one datagram per peer, and every flow is tunneled', () => {
    const { net, a, b } = tier();
    net.coalesce = true;
    const before = net.log.length;
    const dropsOf = (n: SimNode): number => n.node.counters.drops.reduce((x, y) => x + y, 0);
    const dropsBefore = [dropsOf(a), dropsOf(b)];
    for (let i = 0; i < 20; i++) a.own(`${CLIENT}:${6000 + i}`);
    for (let i = 0; i < 20; i++) expect(b.client(rtp(i), CLIENT, 6000 + i)).toBe('asked');
    net.flush();
    // One query datagram to each peer (20 queries each), one answer datagram back from each.
    const sent = net.log.slice(before);
    const from = (n: SimNode, type: number) =>
      sent.filter((d) => d.from.address === n.address && d.buf[3] === type);
    expect(from(b, MsgType.Query)).toHaveLength(2);
    expect(from(a, MsgType.Answer)).toHaveLength(1);
    expect(b.node.counters.queries[QueryOutcome.Owned]).toBe(20);
    expect(new Set(a.tunneled.map((t) => t.port)).size).toBe(20);
    expect([dropsOf(a), dropsOf(b)]).toEqual(dropsBefore);
    // A batch whose tail is cut off: the whole messages before it count, the rest is malformed.
    const q = (port: number) => encodeQuery(b.instance, 1, 1, CLIENT, port, undefined);
    const answered = a.node.counters.answers.reduce((x, y) => x + y, 0);
    a.node.onDatagram(Buffer.concat([q(7000), q(7001).subarray(0, 20)]), b.address, b.port);
    expect(a.node.counters.answers.reduce((x, y) => x + y, 0)).toBe(answered + 1);
    expect(a.node.counters.drops[PeerDrop.Malformed]).toBe(1);
  });

  it('forged tunnel datagrams, answers and releases are dropped and counted; nothing reaches a client', () => {
    const { net, a, b, c } = tier();
    a.own(`${CLIENT}:5000`);
    b.client(rtp(1), CLIENT, 5000);
    net.flush();
    const t = a.tunneled[0]!.route as unknown as {
      slot: number;
      gen: number;
      receiverSlot: number;
      receiverGen: number;
    };
    const payload = Buffer.from([0x80, 1]);
    // Up with a wrong generation; with the right token from another peer; from a stranger.
    a.node.onDatagram(Buffer.concat([dataHeader(MsgType.Up, t.slot, t.gen ^ 1), payload]), b.address, b.port);
    a.node.onDatagram(Buffer.concat([dataHeader(MsgType.Up, t.slot, t.gen), payload]), c.address, c.port);
    a.node.onDatagram(Buffer.concat([dataHeader(MsgType.Up, t.slot, t.gen), payload]), '192.0.2.66', b.port);
    // The right token from B's address but another port than B's worker socket that asked.
    a.node.onDatagram(Buffer.concat([dataHeader(MsgType.Up, t.slot, t.gen), payload]), b.address, b.port + 1);
    expect(a.tunneled.length).toBe(1);
    expect(a.node.counters.drops[PeerDrop.UnknownTunnel]).toBe(3);
    expect(a.node.counters.drops[PeerDrop.UnknownPeer]).toBe(1);
    // Down: guessed tokens, or the right one from the wrong peer: never sent to a client.
    for (let g = 1; g < 50; g++)
      b.node.onDatagram(Buffer.concat([dataHeader(MsgType.Down, 0, g), payload]), a.address, a.port);
    b.node.onDatagram(
      Buffer.concat([dataHeader(MsgType.Down, t.receiverSlot, t.receiverGen), payload]),
      c.address,
      c.port,
    );
    expect(b.toClients).toEqual([]);
    expect(b.node.counters.drops[PeerDrop.UnknownTunnel]).toBe(50);
    // Forged answer and release.
    b.node.onDatagram(encodeAnswer({ hi: 5, lo: 5 }, 0, 12345, Owned.Flow, 1, 1), c.address, c.port);
    b.node.onDatagram(
      encodeRelease({ hi: 5, lo: 5 }, ReleaseOf.Receiving, t.receiverSlot, t.receiverGen ^ 1),
      a.address,
      a.port,
    );
    b.node.onDatagram(
      encodeRelease({ hi: 5, lo: 5 }, ReleaseOf.Receiving, t.receiverSlot, t.receiverGen),
      c.address,
      c.port,
    );
    expect(b.node.receiver.tunnels).toBe(1);
    expect(b.node.counters.drops[PeerDrop.StaleAnswer]).toBe(1);
    // Garbage and other versions.
    a.node.onDatagram(Buffer.from('hello'), b.address, b.port);
    const v2 = encodeQuery({ hi: 5, lo: 5 }, 1, 1, '1.2.3.4', 1, undefined);
    v2[2] = 2;
    a.node.onDatagram(v2, b.address, b.port);
    expect(a.node.counters.drops[PeerDrop.Malformed]).toBe(1);
    expect(a.node.counters.drops[PeerDrop.Version]).toBe(1);
    // A query from a stranger gets no answer.
    const before = net.sent(MsgType.Answer, a);
    a.node.onDatagram(encodeQuery({ hi: 5, lo: 5 }, 1, 1, CLIENT, 5000, undefined), '192.0.2.66', 10001);
    net.flush();
    expect(net.sent(MsgType.Answer, a)).toBe(before);
    // The tunnel still works.
    b.client(rtp(2), CLIENT, 5000);
    net.flush();
    expect(a.tunneled.length).toBe(2);
  });

  it('a replica in its own peer list recognises itself by its instance id and never waits for itself', () => {
    const net = new SimNet();
    const a = net.add('a', '127.0.0.1', 11001);
    const b = net.add('b', '127.0.0.1', 12001);
    net.meshAll();
    expect(a.node.set.peers.length).toBe(2);
    net.flush();
    expect(a.node.set.peers.map((p) => p.name)).toEqual(['127.0.0.1:12001']);
    expect(a.node.counters.drops[PeerDrop.Self]).toBe(1);
    // A later snapshot that still lists it does not bring it back.
    a.node.updatePeers([a.spec(), b.spec()]);
    expect(a.node.set.peers.length).toBe(1);
  });
});

describe('peers: bounds', () => {
  it('holds at most HOLD_PER_FLOW datagrams per flow in flight', () => {
    const { net, a, b } = tier();
    a.own(`${CLIENT}:5000`);
    for (let i = 0; i < HOLD_PER_FLOW + 3; i++) b.client(rtp(i), CLIENT, 5000);
    expect(b.node.receiver.held).toBe(HOLD_PER_FLOW);
    expect(b.node.counters.drops[PeerDrop.HoldFull]).toBe(3);
    net.flush();
    expect(a.tunneled.length).toBe(HOLD_PER_FLOW);
    expect(b.node.receiver.held).toBe(0);
  });

  it('a storm of unknown 5-tuples from many sources stays within the query budget, and a victim still gets its share', () => {
    const net = new SimNet();
    const opts = { holdMax: 64, maxInflight: 256 };
    const a = net.add('a', '10.0.0.1', 10001, opts);
    const b = net.add('b', '10.0.0.2', 10001, opts);
    net.meshAll();
    net.flush();
    a.own('198.51.100.1:4000');
    const queriesBefore = net.sent(MsgType.Query, b);
    const victim: string[] = [];
    // 20 kpps for two seconds: 1000 spoofed sources, a new 5-tuple each time; one second in, the
    // victim's flow moves here and its media arrives every 20 ms, always after the flood's datagrams
    // of that millisecond (the worst order for it).
    for (let ms = 0; ms < 2000; ms++) {
      for (let k = 0; k < 20; k++) {
        const src = `192.0.${(ms * 20 + k) % 4}.${(ms * 7 + k) % 250}`;
        b.client(rtp(0), src, 1024 + ((ms * 20 + k) % 60000));
      }
      if (ms >= 1000 && ms % 20 === 0) victim.push(b.client(rtp(1), '198.51.100.1', 4000));
      net.advance(1, 1);
    }
    const rounds = net.sent(MsgType.Query, b) - queriesBefore;
    // The budget of the sim: 1000 rounds/s (two halves of 500/s, 500 burst each), one peer.
    expect(rounds).toBeLessThanOrEqual(1000 + 2 * 1000);
    expect(rounds).toBeGreaterThan(1000);
    const c = b.node.counters;
    expect(c.skipped[QuerySkip.SourceShare]! + c.skipped[QuerySkip.Budget]!).toBeGreaterThan(35_000);
    expect(b.node.receiver.inflight).toBeLessThanOrEqual(256);
    expect(b.node.receiver.held).toBeLessThanOrEqual(64);
    // The victim's first datagram was asked about (its source's share found the fair half open),
    // found the owner, and the rest followed through the tunnel.
    expect(victim[0]).toBe('asked');
    expect(victim.slice(1).every((r) => r === 'diverted')).toBe(true);
    expect(a.tunneled.filter((t) => t.address === '198.51.100.1').length).toBe(victim.length);
  });
});
