/**
 * The baseline of `npm run bench`: the smallest reasonable Node.js UDP relay, written the way one
 * would without any ICE knowledge. One upstream socket per client 5-tuple, connected to the single
 * backend (connected sockets skip dgram's per-send address lookup, as ice-ingress's do), and
 * replies sent back from the listening socket. No parsing, no counters, no timers.
 *
 *   node bench/plain-relay.ts LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
 */
import dgram from 'node:dgram';

const listenPort = Number(process.argv[2]);
const backendPort = Number(process.argv[3]);
const listen = dgram.createSocket('udp4');
const upstreams = new Map<string, { sock: dgram.Socket; connected: boolean }>();

listen.on('message', (msg, rinfo) => {
  const key = `${rinfo.address}:${rinfo.port}`;
  let up = upstreams.get(key);
  if (up === undefined) {
    const sock = dgram.createSocket('udp4');
    const entry = { sock, connected: false };
    up = entry;
    sock.on('error', () => {});
    sock.on('message', (reply) => listen.send(reply, rinfo.port, rinfo.address));
    sock.connect(backendPort, '127.0.0.1', () => {
      entry.connected = true;
    });
    upstreams.set(key, up);
  }
  if (up.connected) up.sock.send(msg);
  else up.sock.send(msg, backendPort, '127.0.0.1');
});
listen.on('error', (err) => {
  console.error(err);
  process.exit(1);
});
listen.bind(listenPort, '127.0.0.1', () => {
  listen.setRecvBufferSize(4 << 20);
  listen.setSendBufferSize(4 << 20);
  process.stdout.write('ready\n');
});
