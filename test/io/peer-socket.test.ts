import dgram from 'node:dgram';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { BATCH_BYTES, UdpPeerSocket, type UdpPeerSocketOptions } from '../../src/io/peer-socket.ts';

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

/** A peer socket on loopback (the kernel picks the port unless given), closed after the test. */
function peerSocket(o: Partial<UdpPeerSocketOptions> = {}): UdpPeerSocket {
  const s = new UdpPeerSocket({
    host: '127.0.0.1',
    port: 0,
    socketBufferBytes: 0,
    onDatagram: () => {},
    onError: () => {},
    ...o,
  });
  open.push(s);
  return s;
}

/** A plain UDP socket on loopback standing in for the other replica, bound, closed after the test. */
async function otherReplica(): Promise<dgram.Socket> {
  const peer = dgram.createSocket('udp4');
  open.push(peer);
  peer.bind(0, '127.0.0.1');
  await once(peer, 'listening');
  return peer;
}

describe('UdpPeerSocket', () => {
  it('sends a header and a body as one datagram, and hands received datagrams on with their source', async () => {
    const got: Array<{ buf: Buffer; address: string; port: number }> = [];
    const a = peerSocket({ onDatagram: (buf, address, port) => got.push({ buf, address, port }) });
    const portA = await a.start();
    const peer = await otherReplica();
    const portB = peer.address().port;
    const received = once(peer, 'message');
    a.send(Buffer.from([1, 2, 3]), Buffer.from([4, 5]), portB, '127.0.0.1');
    const [msg] = (await received) as [Buffer];
    expect([...msg]).toEqual([1, 2, 3, 4, 5]);
    const second = once(peer, 'message');
    a.send(Buffer.from([9]), undefined, portB, '127.0.0.1');
    expect([...((await second) as [Buffer])[0]]).toEqual([9]);
    peer.send(Buffer.from([7]), portA, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map((g) => [[...g.buf], g.address, g.port])).toEqual([[[7], '127.0.0.1', portB]]);
  });

  it('a port in use rejects start-up and leaves no socket behind', async () => {
    const port = await peerSocket().start();
    const b = peerSocket({ port });
    await expect(b.start()).rejects.toMatchObject({ code: 'EADDRINUSE' });
    // Sends on a socket that never bound do nothing.
    b.send(Buffer.from([1]), undefined, port, '127.0.0.1');
  });

  it('takes --socket-buffer for its receive and send buffers', async () => {
    // Smaller than any kernel default, so the test does not depend on net.core.rmem_max: the kernel
    // keeps twice the size asked (socket(7)), at least its minimum.
    const small = peerSocket({ socketBufferBytes: 4096 });
    const dflt = peerSocket();
    await small.start();
    await dflt.start();
    const s = small.bufferSizes()!;
    const d = dflt.bufferSizes()!;
    expect(s.recv).toBe(8192);
    expect(s.send).toBe(8192);
    expect(d.recv).toBeGreaterThan(s.recv);
  });

  it('sends the control messages of one event-loop turn to one peer port as one datagram; a tunnel datagram goes at once, after them', async () => {
    const a = peerSocket();
    await a.start();
    const got: Buffer[] = [];
    const peer = await otherReplica();
    peer.on('message', (m) => got.push(m));
    const port = peer.address().port;
    // Three control messages in one turn, then a tunnel datagram: the control ones first, together.
    a.send(Buffer.from([1, 1]), undefined, port, '127.0.0.1');
    a.send(Buffer.from([2, 2]), undefined, port, '127.0.0.1');
    a.send(Buffer.from([3]), Buffer.from([4]), port, '127.0.0.1');
    a.send(Buffer.from([5]), undefined, port, '127.0.0.1');
    // More than BATCH_BYTES in one turn: split, each part whole.
    const big = Buffer.alloc(500, 9);
    for (let i = 0; i < 3; i++) a.send(big, undefined, port, '127.0.0.1');
    const deadline = Date.now() + 2000;
    while (got.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(BATCH_BYTES).toBe(1200);
    expect(got.map((m) => [...m.subarray(0, 6)])).toEqual([
      [1, 1, 2, 2],
      [3, 4],
      [5, 9, 9, 9, 9, 9],
      [9, 9, 9, 9, 9, 9],
    ]);
    expect(got.map((m) => m.length)).toEqual([4, 2, 1001, 500]);
  });

  it('close sends what is queued first', async () => {
    const a = peerSocket();
    await a.start();
    const peer = await otherReplica();
    const received = once(peer, 'message');
    a.send(Buffer.from([7, 7]), undefined, peer.address().port, '127.0.0.1');
    a.close();
    expect([...((await received) as [Buffer])[0]]).toEqual([7, 7]);
  });
});
