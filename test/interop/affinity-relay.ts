// Negative control for scenario (c): what a LoadBalancer with `sessionAffinity: ClientIP` does.
// A new client IP is assigned round-robin to a backend; every flow from that IP goes to that
// backend, whatever its STUN USERNAME says. One upstream socket per client 5-tuple, so the
// backend sees a stable address per flow (as the real proxy gives it).
//
// argv: --listen IP:PORT --backends NAME=IP:PORT[,NAME=IP:PORT]
// stdout: {"event":"ready"} once bound, then {"event":"assign", clientIp, backend} per new IP.
import dgram from 'node:dgram';
import { argValue, emit, log } from './jsonl.ts';

function hostPort(s: string, what: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535)
    throw new Error(`invalid ${what}: ${s}`);
  return { host: s.slice(0, i), port };
}

const listen = hostPort(argValue('--listen') ?? '', '--listen');
const backends = (argValue('--backends') ?? '').split(',').map((b) => {
  const [name, addr] = b.split('=');
  return { name: name ?? '', ...hostPort(addr ?? '', '--backends') };
});
if (backends.length === 0 || backends.some((b) => !b.name)) throw new Error('invalid --backends');

const MAX_FLOWS = 1000;
const IDLE_MS = 60_000;

interface Flow {
  upstream: dgram.Socket;
  backend: (typeof backends)[number];
  lastSeen: number;
}
const byIp = new Map<string, (typeof backends)[number]>();
const flows = new Map<string, Flow>();
let next = 0;

const front = dgram.createSocket('udp4');
front.on('error', (err) => log('front error', err.message));
front.on('message', (msg, rinfo) => {
  const key = `${rinfo.address}:${rinfo.port}`;
  let flow = flows.get(key);
  if (!flow) {
    if (flows.size >= MAX_FLOWS) return;
    let backend = byIp.get(rinfo.address);
    if (!backend) {
      backend = backends[next++ % backends.length]!;
      byIp.set(rinfo.address, backend);
      emit({ event: 'assign', clientIp: rinfo.address, backend: backend.name });
    }
    const upstream = dgram.createSocket('udp4');
    // Unconnected, so no ICMP errors are reported; the listener is there for anything else.
    upstream.on('error', (err) => log('upstream error', key, err.message));
    upstream.on('message', (reply) => {
      const f = flows.get(key);
      if (f) f.lastSeen = Date.now();
      front.send(reply, rinfo.port, rinfo.address);
    });
    upstream.bind(0);
    flow = { upstream, backend, lastSeen: Date.now() };
    flows.set(key, flow);
  }
  flow.lastSeen = Date.now();
  flow.upstream.send(msg, flow.backend.port, flow.backend.host);
});

setInterval(() => {
  const now = Date.now();
  for (const [k, f] of flows) {
    if (now - f.lastSeen > IDLE_MS) {
      f.upstream.close();
      flows.delete(k);
    }
  }
}, 5000).unref();

front.bind(listen.port, listen.host, () => emit({ event: 'ready', listen: `${listen.host}:${listen.port}` }));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
