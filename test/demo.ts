/**
 * `npm run demo`: the NAT problem, solved on one machine, no cluster.
 *
 * Two ice4j-like media servers ("JVB pods") sit behind one ice-ingress port. Four ICE clients share
 * one IP address (127.0.0.1, as if behind one NAT) but belong to conferences on different servers.
 * With clientIP affinity they would all land on one server and half of them would fail; here each
 * client's first STUN check is routed by the server ufrag in its USERNAME, the owner is found by
 * probing, and media flows both ways. The proxy is the real one (same code as `ice-ingress`), over
 * real UDP on loopback.
 */
import { parseConfig } from '../src/config.ts';
import { DROP_REASON_LABELS, ROUTE_LABELS } from '../src/defs/reasons.ts';
import { createLogger } from '../src/log.ts';
import { startProxy } from '../src/pod/pod.ts';
import { FakeIceClient } from './fixtures/ice-client.ts';
import { FakeMediaServer } from './fixtures/media-server.ts';

const CLIENTS = 4;
const MEDIA_PER_CLIENT = 50;

const servers = await Promise.all([
  FakeMediaServer.start({ name: 'jvb-0' }),
  FakeMediaServer.start({ name: 'jvb-1' }),
]);
const backends = servers.map((s) => `${s.name}=${s.address}:${s.port}`).join(',');
const parsed = parseConfig(
  ['--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream-ports', '0', '--backends', backends],
  {},
);
if (parsed.kind !== 'run') throw new Error('unreachable');
const proxy = await startProxy(parsed.config, { log: createLogger(process.env.LOG_LEVEL ?? 'warn') });
const target = { address: '127.0.0.1', port: proxy.listen.port };

console.log(
  `ice-ingress demo: proxy on udp ${target.address}:${target.port}, admin http://127.0.0.1:${proxy.adminPort}`,
);
console.log(`backends: ${servers.map((s) => `${s.name} (udp ${s.address}:${s.port})`).join(', ')}`);
console.log(`${CLIENTS} clients behind one IP (127.0.0.1); conferences alternate between the two servers\n`);

const rows: string[][] = [['client', 'owner (from SDP)', 'reached', 'verified by', 'media sent/echoed']];
let ok = 0;
for (let i = 0; i < CLIENTS; i++) {
  const owner = servers[i % servers.length]!;
  const client = await FakeIceClient.open();
  // What signalling would give the client: the server's ICE ufrag and password.
  const creds = owner.addSession({ remote: { ufrag: client.ufrag, password: client.password } });
  const before = servers.map((s) => s.stats.successes);
  let reached = '-';
  let verified = 'no answer';
  let echoed = 0;
  try {
    const r = await client.check(target, creds, { timeoutMs: 2000 });
    const hit = servers.find((s, k) => s.stats.successes > before[k]!);
    reached = hit?.name ?? '?';
    verified = `MESSAGE-INTEGRITY with ${owner.name}'s password (${Math.round(r.rtt * 10) / 10} ms)`;
    for (let m = 0; m < MEDIA_PER_CLIENT; m++) {
      await client.sendMedia(target, Buffer.from([0x80, 0x60, m & 0xff, i]));
      await client.nextMedia(1000);
      echoed++;
    }
    if (reached === owner.name && echoed === MEDIA_PER_CLIENT) ok++;
  } catch (err) {
    verified = `FAILED: ${(err as Error).message}`;
  }
  rows.push([`127.0.0.1:${client.port}`, owner.name, reached, verified, `${MEDIA_PER_CLIENT}/${echoed}`]);
  await client.close();
}

const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));

const c = proxy.datapath.counters;
const routes = ROUTE_LABELS.map((l, i) => `${l}=${c.routes[i]}`).filter((s) => !s.endsWith('=0'));
const drops = DROP_REASON_LABELS.map((l, i) => `${l}=${c.drops[i]}`).filter((s) => !s.endsWith('=0'));
console.log(`
packets: client→proxy ${c.packetsFromClients}, proxy→backends ${c.packetsToBackends} (probes ${c.probesSent}), backends→proxy ${c.packetsFromBackends}, proxy→clients ${c.packetsToClients}
routing: ${routes.join(', ') || 'none'}; drops: ${drops.join(', ') || 'none'}
per server: ${servers.map((s) => `${s.name} answered ${s.stats.successes} checks, echoed ${s.stats.mediaEchoed} media, ignored ${s.stats.unknownUfragDrops} probes for ufrags it does not own`).join('; ')}
result: ${ok}/${CLIENTS} clients reached their own server through one UDP port`);

const metrics = await (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text();
console.log(
  `\n/metrics excerpt:\n${metrics
    .split('\n')
    .filter((l) => /^ice_ingress_(sessions|routes_total|probes_total)/.test(l))
    .join('\n')}`,
);

await proxy.close();
await Promise.all(servers.map((s) => s.close()));
process.exitCode = ok === CLIENTS ? 0 : 1;
