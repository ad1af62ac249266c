import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { exited, startCli } from '../fixtures/cli-process.ts';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';
import type { Endpoint } from '../fixtures/stun-bytes.ts';
import { track } from '../fixtures/track.ts';
import { sleep, waitUntil } from '../fixtures/wait.ts';

/**
 * Three replicas of the real CLI on loopback, told of each other with `--peers` (docs/peers.md),
 * in front of one fake JVB that answers 403 to a second remote address once a session is
 * established (ice4j #287). "The balancer moves a flow" = the client sends from the same socket to
 * another replica's public port: that replica has never seen the 5-tuple. Real UDP, real STUN with
 * MESSAGE-INTEGRITY and FINGERPRINT.
 */

interface Replica {
  readonly name: string;
  readonly child: ChildProcess;
  readonly listen: Endpoint;
  readonly admin: number;
  readonly peerPort: number;
  readonly logs: string[];
}

/** Peer ports below Linux's ephemeral range, 100 apart (each replica may use 32 for workers). */
const BASE = 20_000 + Math.floor(Math.random() * 90) * 100;

const peerPort = (i: number): number => BASE + i * 100 + (process.pid % 50);

/** Replica `i` of `n`, every replica listed in `--peers` (itself included, as DNS would). */
function startReplica(
  jvb: FakeMediaServer,
  name: string,
  i: number,
  n: number,
  extra: string[],
): Promise<Replica> {
  const peers = Array.from({ length: n }, (_, k) => `127.0.0.1:${peerPort(k)}`).join(',');
  return start(name, [
    '--listen=127.0.0.1:0',
    '--admin=127.0.0.1:0',
    `--backends=jvb=${jvb.address}:${jvb.port}`,
    '--upstream-ports=0',
    `--peer-port=${peerPort(i)}`,
    `--peers=${peers}`,
    ...extra,
  ]);
}

function tier(jvb: FakeMediaServer, extra: string[] = [], n = 3): Promise<Replica[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => startReplica(jvb, String.fromCharCode(97 + i), i, n, extra)),
  );
}

async function start(name: string, args: string[]): Promise<Replica> {
  const p = await startCli(args);
  const peerPort = Number(args.find((a) => a.startsWith('--peer-port='))!.split('=')[1]);
  return { name, ...p, peerPort };
}

async function metrics(r: Replica): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${r.admin}/metrics`)).text();
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

const ready = async (r: Replica): Promise<number> =>
  (await fetch(`http://127.0.0.1:${r.admin}/readyz`)).status;

async function readyAll(rs: Replica[]): Promise<void> {
  const deadline = performance.now() + 5000;
  for (const r of rs) {
    while ((await ready(r)) !== 200) {
      if (performance.now() > deadline) throw new Error(`${r.name} not ready`);
      await sleep(20);
    }
  }
}

/** Sends media from the client to `to` and waits for the JVB's echo; returns where it came from. */
async function echo(client: FakeIceClient, to: Endpoint, tag: string): Promise<Endpoint> {
  for (let attempt = 0; attempt < 20; attempt++) {
    await client.sendMedia(to, Buffer.from(`\x80${tag}`, 'latin1'));
    try {
      for (;;) {
        const p = await client.nextMedia(200);
        if (p.data.toString('latin1').slice(1) === tag) return p.from;
      }
    } catch {
      // No echo within 200 ms: send again (a held datagram waits at most for the round).
    }
  }
  throw new Error(`no echo of ${tag} through ${to.port}`);
}

describe('three replicas with --peers (real CLI, loopback)', () => {
  it('a flow that moves to another replica, and then to a third, keeps flowing; the JVB sees one address; drain on SIGTERM', async () => {
    const jvb = track(await FakeMediaServer.start({ name: 'jvb', lockAfterMs: 0 }));
    const [a, b, c] = await tier(jvb, ['--idle-timeout=3s']);
    await readyAll([a!, b!, c!]);
    for (const r of [a!, b!, c!]) expect((await metrics(r)).get('ice_ingress_peers{state="ready"}')).toBe(2);

    const client = track(await FakeIceClient.open());
    const creds = jvb.addSession();
    await client.check(a!.listen, creds);
    expect((await echo(client, a!.listen, 'via-a')).port).toBe(a!.listen.port);

    // The balancer moves the flow to B: B asks, A answers, the media comes back from B's port.
    expect((await echo(client, b!.listen, 'via-b')).port).toBe(b!.listen.port);
    // A consent check through B: the JVB answers it (its remote is still A's upstream socket).
    const viaB = await client.check(b!.listen, creds);
    expect(viaB.from.port).toBe(b!.listen.port);
    // And again, to C.
    expect((await echo(client, c!.listen, 'via-c')).port).toBe(c!.listen.port);
    await client.check(c!.listen, creds);
    expect(jvb.remotesOf(creds.ufrag)).toHaveLength(1);
    expect(jvb.stats.errors403).toBe(0);

    const [ma, mb, mc] = await Promise.all([metrics(a!), metrics(b!), metrics(c!)]);
    expect(ma.get('ice_ingress_peer_handoffs_total{direction="in"}')).toBe(2);
    expect(ma.get('ice_ingress_peer_answers_total{answer="flow"}')).toBe(2);
    expect(ma.get('ice_ingress_peer_tunnels_closed_total{reason="replaced"}')).toBe(1);
    expect(ma.get('ice_ingress_sessions')).toBe(1);
    expect(mb.get('ice_ingress_peer_handoffs_total{direction="out"}')).toBe(1);
    // B said "not mine" twice: to A's round for the session's first check (asked before it was
    // routed), and to C's (B only tunneled the flow).
    expect(mb.get('ice_ingress_peer_answers_total{answer="none"}')).toBe(2);
    expect(mb.get('ice_ingress_peer_tunnels{side="receiver"}')).toBe(0); // released by A when C took over
    expect(mc.get('ice_ingress_peer_queries_total{outcome="owned"}')).toBe(1);
    expect(mc.get('ice_ingress_peer_tunnel_packets_total{direction="to_owner"}')).toBeGreaterThanOrEqual(2);
    expect(mb.get('ice_ingress_sessions')).toBe(0);
    expect(mc.get('ice_ingress_sessions')).toBe(0);
    expect(a!.logs.some((l) => l.includes('"flow taken from peer"'))).toBe(true);
    expect(c!.logs.some((l) => l.includes('"flow handed to peer"') && l.includes('"by":"flow"'))).toBe(true);

    // SIGTERM to the owner: not ready, but it keeps relaying through C while the call goes on,
    // and leaves when its session idles out after the call.
    a!.child.kill('SIGTERM');
    await waitUntil(() => a!.logs.some((l) => l.includes('"msg":"draining"')), 'A draining');
    expect(await ready(a!)).toBe(503);
    for (let i = 0; i < 5; i++) {
      expect((await echo(client, c!.listen, `drain-${i}`)).port).toBe(c!.listen.port);
      await sleep(200);
    }
    expect((await metrics(c!)).get('ice_ingress_peers{state="draining"}')).toBe(1);
    expect(a!.child.exitCode).toBeNull();
    expect(await exited(a!.child)).toBe(0); // the session idles out 3 s after the last datagram
    expect(jvb.remotesOf(creds.ufrag)).toHaveLength(1);
  }, 30_000);

  it('with --workers 2 the worker that owns the session answers and takes the tunnel on its own peer port', async () => {
    const jvb = track(await FakeMediaServer.start({ name: 'jvb', lockAfterMs: 0 }));
    const [a, b] = await Promise.all([
      startReplica(jvb, 'a', 0, 2, ['--workers=2']),
      startReplica(jvb, 'b', 1, 2, []),
    ]);
    await readyAll([a, b]);
    const client = track(await FakeIceClient.open());
    const creds = jvb.addSession();
    await client.check(a.listen, creds);
    expect((await echo(client, b.listen, 'moved')).port).toBe(b.listen.port);
    await client.check(b.listen, creds);
    expect(jvb.remotesOf(creds.ufrag)).toHaveLength(1);
    // The workers publish their rows every 100 ms.
    let ma = await metrics(a);
    const settled = (): boolean =>
      ma.get('ice_ingress_peer_handoffs_total{direction="in"}') === 1 &&
      ma.get('ice_ingress_peer_answers_total{answer="none"}') === 1;
    for (let i = 0; i < 20 && !settled(); i++) {
      await sleep(50);
      ma = await metrics(a);
    }
    // B asked both of A's workers: the owner said "mine", the other "not mine".
    expect(ma.get('ice_ingress_peer_answers_total{answer="flow"}')).toBe(1);
    expect(ma.get('ice_ingress_peer_answers_total{answer="none"}')).toBe(1);
    expect(ma.get('ice_ingress_peer_handoffs_total{direction="in"}')).toBe(1);
    // No datagram crossed A's worker rings: the tunnel goes to the owning worker's socket.
    expect(ma.get('ice_ingress_handoff_drops_total')).toBe(0);
    expect(
      (ma.get('ice_ingress_worker_handoffs_total{worker="0",direction="in"}') ?? 0) +
        (ma.get('ice_ingress_worker_handoffs_total{worker="1",direction="in"}') ?? 0),
    ).toBe(0);
    expect((await metrics(b)).get('ice_ingress_peers{state="ready"}')).toBe(1);
  }, 20_000);

  it('a NAT rebinding that lands on another replica joins the session from its next check', async () => {
    const jvb = track(await FakeMediaServer.start({ name: 'jvb', lockAfterMs: 0 }));
    const [a, b] = await tier(jvb, [], 2);
    await readyAll([a!, b!]);
    const client = track(await FakeIceClient.open());
    const creds = jvb.addSession();
    await client.check(a!.listen, creds);
    await echo(client, a!.listen, 'before');
    await client.rebind(); // a new source port, and the balancer sends it to B
    await client.check(b!.listen, creds);
    expect((await echo(client, b!.listen, 'after')).port).toBe(b!.listen.port);
    expect(jvb.remotesOf(creds.ufrag)).toHaveLength(1);
    const mb = await metrics(b!);
    expect(mb.get('ice_ingress_peer_queries_total{outcome="owned"}')).toBe(1);
    expect((await metrics(a!)).get('ice_ingress_peer_answers_total{answer="ufrag"}')).toBe(1);
    expect((await metrics(a!)).get('ice_ingress_routes_total{outcome="rebind"}')).toBe(1);
  }, 20_000);

  it('an owner killed with SIGKILL: its tunneled flow is routed anew (the JVB refuses it, counted), the others and new sessions are fine', async () => {
    const jvb = track(await FakeMediaServer.start({ name: 'jvb', lockAfterMs: 0 }));
    const [a, b, c] = await tier(jvb);
    await readyAll([a!, b!, c!]);
    const moved = track(await FakeIceClient.open());
    const movedCreds = jvb.addSession();
    await moved.check(a!.listen, movedCreds);
    await echo(moved, b!.listen, 'tunneled');
    // A session that C owns, untouched by A's death.
    const other = track(await FakeIceClient.open());
    const otherCreds = jvb.addSession();
    await other.check(c!.listen, otherCreds);

    a!.child.kill('SIGKILL');
    await exited(a!.child);
    // B notices within 3 s of silence; the tunnel ends.
    await waitUntil(() => b!.logs.some((l) => l.includes('"peer silent"')), 'B to find A silent', {
      timeoutMs: 6000,
    });
    const mb = await metrics(b!);
    expect(mb.get('ice_ingress_peer_tunnels_closed_total{reason="peer_gone"}')).toBe(1);
    expect(mb.get('ice_ingress_peers{state="silent"}')).toBe(1);
    // The client's next check goes to the JVB anew from B's own socket: refused (403), nothing opens.
    await expect(moved.check(b!.listen, movedCreds, { timeoutMs: 1000 })).rejects.toThrow();
    expect(jvb.stats.errors403).toBeGreaterThanOrEqual(1);
    const mb2 = await metrics(b!);
    expect(mb2.get('ice_ingress_peer_queries_total{outcome="none"}')).toBeGreaterThanOrEqual(1);
    expect(mb2.get('ice_ingress_drops_total{reason="probe_not_mine"}')).toBeGreaterThanOrEqual(1);
    // The untouched session keeps flowing; the moved client opens a new session at once (ICE restart).
    expect((await echo(other, c!.listen, 'still')).port).toBe(c!.listen.port);
    const fresh = jvb.addSession();
    await moved.check(b!.listen, fresh);
    expect((await echo(moved, b!.listen, 'new-session')).port).toBe(b!.listen.port);
  }, 30_000);
});
