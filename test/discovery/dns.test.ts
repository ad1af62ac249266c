import { createSocket, type Socket } from 'node:dgram';
import { promises as dnsPromises } from 'node:dns';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { BackendSpec } from '../../src/defs/interfaces.ts';
import { DnsDiscovery, type DnsResolver } from '../../src/discovery/dns.ts';

const log = pino({ level: 'silent' });
const brief = (s: readonly BackendSpec[] | undefined) =>
  (s ?? []).map((b) => `${b.address}:${b.port}/${b.state}`);

function err(code: string): Error {
  return Object.assign(new Error(code), { code });
}

/** A resolver whose answers the test sets: address lists, or an error code per family. */
class StubResolver implements DnsResolver {
  v4: string[] | string = [];
  v6: string[] | string = [];
  async resolve4(): Promise<string[]> {
    if (typeof this.v4 === 'string') throw err(this.v4);
    return this.v4;
  }
  async resolve6(): Promise<string[]> {
    if (typeof this.v6 === 'string') throw err(this.v6);
    return this.v6;
  }
}

describe('DnsDiscovery with a stub resolver', () => {
  let clock = 1_000_000;
  const make = (resolver: DnsResolver, vanishedGraceMs = 0) =>
    new DnsDiscovery({
      name: 'jvb.jitsi.svc.cluster.local',
      port: 10000,
      intervalMs: 60_000,
      vanishedGraceMs,
      log,
      resolver,
      now: () => clock,
    });

  it('names backends by address, merges A and AAAA, keeps the last set on errors', async () => {
    const r = new StubResolver();
    r.v4 = ['10.0.0.11', '10.0.0.10'];
    r.v6 = 'ENODATA';
    const d = make(r);
    const seen: (readonly BackendSpec[])[] = [];
    d.start((s) => seen.push(s));
    await d.resolveOnce(); // also the one start() began; both settle
    expect(seen.length).toBe(1);
    expect(seen[0]?.[0]).toEqual({ name: '10.0.0.10', address: '10.0.0.10', port: 10000, state: 'ready' });
    expect(brief(seen[0])).toEqual(['10.0.0.10:10000/ready', '10.0.0.11:10000/ready']);
    expect(d.state.connected).toBe(true);

    r.v4 = 'ETIMEOUT';
    await d.resolveOnce();
    r.v4 = 'ESERVFAIL';
    await d.resolveOnce();
    expect(seen.length).toBe(1);
    expect(d.state).toMatchObject({ connected: false, failures: 2 });

    r.v4 = ['10.0.0.10'];
    r.v6 = ['fd00::12'];
    await d.resolveOnce();
    expect(brief(seen.at(-1))).toEqual(['10.0.0.10:10000/ready', 'fd00::12:10000/ready']);
    expect(d.state).toMatchObject({ connected: true, failures: 0 });

    // NXDOMAIN is an answer (a headless Service with no ready pods), not a failure.
    r.v4 = 'ENOTFOUND';
    r.v6 = 'ENOTFOUND';
    await d.resolveOnce();
    expect(seen.at(-1)).toEqual([]);
    await d.stop();
  });

  it('reports a vanished address as terminating for the grace period', async () => {
    const r = new StubResolver();
    r.v4 = ['10.0.0.10', '10.0.0.11'];
    const d = make(r, 30_000);
    const seen: (readonly BackendSpec[])[] = [];
    d.start((s) => seen.push(s));
    await d.resolveOnce();
    r.v4 = ['10.0.0.10'];
    clock += 1000;
    await d.resolveOnce();
    expect(brief(seen.at(-1))).toEqual(['10.0.0.10:10000/ready', '10.0.0.11:10000/terminating']);
    clock += 30_000;
    await d.resolveOnce();
    expect(brief(seen.at(-1))).toEqual(['10.0.0.10:10000/ready']);
    // Back before the grace ends: ready again.
    r.v4 = ['10.0.0.10', '10.0.0.11'];
    await d.resolveOnce();
    r.v4 = ['10.0.0.10'];
    clock += 1000;
    await d.resolveOnce();
    r.v4 = ['10.0.0.10', '10.0.0.11'];
    await d.resolveOnce();
    expect(brief(seen.at(-1))).toEqual(['10.0.0.10:10000/ready', '10.0.0.11:10000/ready']);
    await d.stop();
  });
});

/**
 * A minimal authoritative DNS server on 127.0.0.1 (RFC 1035 §4): answers A/AAAA for one name from
 * `records`, NXDOMAIN for other names, SERVFAIL when `servfail` is set.
 */
class TinyDns {
  records: { a: string[]; aaaa: string[] } = { a: [], aaaa: [] };
  servfail = false;
  queries = 0;
  readonly #sock: Socket = createSocket('udp4');
  readonly #name: string;

  constructor(name: string) {
    this.#name = name.toLowerCase();
    this.#sock.on('message', (msg, rinfo) => {
      const reply = this.#answer(msg);
      if (reply) this.#sock.send(reply, rinfo.port, rinfo.address);
    });
  }

  async start(): Promise<number> {
    this.#sock.bind(0, '127.0.0.1');
    await once(this.#sock, 'listening');
    return this.#sock.address().port;
  }

  close(): void {
    this.#sock.close();
  }

  #answer(q: Buffer): Buffer | undefined {
    if (q.length < 17) return undefined;
    this.queries++;
    // Question: labels, then QTYPE and QCLASS.
    let off = 12;
    const labels: string[] = [];
    while (off < q.length && q[off] !== 0) {
      const len = q[off]!;
      labels.push(q.subarray(off + 1, off + 1 + len).toString('ascii'));
      off += 1 + len;
    }
    const qEnd = off + 5;
    const qtype = q.readUInt16BE(off + 1);
    const question = q.subarray(12, qEnd);
    const known = labels.join('.').toLowerCase() === this.#name;
    const rrs: Buffer[] = [];
    let rcode = this.servfail ? 2 : known ? 0 : 3;
    if (rcode === 0) {
      const list = qtype === 1 ? this.records.a : qtype === 28 ? this.records.aaaa : [];
      for (const ip of list) {
        const rdata = qtype === 1 ? Buffer.from(ip.split('.').map(Number)) : ipv6Bytes(ip);
        const rr = Buffer.alloc(12);
        rr.writeUInt16BE(0xc00c, 0); // pointer to the name in the question
        rr.writeUInt16BE(qtype, 2);
        rr.writeUInt16BE(1, 4); // IN
        rr.writeUInt32BE(5, 6); // TTL
        rr.writeUInt16BE(rdata.length, 10);
        rrs.push(rr, rdata);
      }
      rcode = 0;
    }
    const header = Buffer.alloc(12);
    q.copy(header, 0, 0, 2); // ID
    header.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100) | rcode, 2); // QR, AA, RD copied
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(rrs.length / 2, 6);
    return Buffer.concat([header, question, ...rrs]);
  }
}

function ipv6Bytes(ip: string): Buffer {
  const [head = '', tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return b;
}

describe('DnsDiscovery with the real resolver against a local DNS server', () => {
  let server: TinyDns | undefined;
  let disco: DnsDiscovery | undefined;
  afterEach(async () => {
    await disco?.stop();
    server?.close();
  });

  it('follows A/AAAA changes and keeps the set through SERVFAIL', async () => {
    const name = 'jvb.jitsi.svc.cluster.local';
    server = new TinyDns(name);
    server.records = { a: ['10.0.0.10'], aaaa: ['fd00::10'] };
    const port = await server.start();
    const resolver = new dnsPromises.Resolver({ timeout: 500, tries: 1 });
    resolver.setServers([`127.0.0.1:${port}`]);
    const seen: (readonly BackendSpec[])[] = [];
    disco = new DnsDiscovery({ name, port: 10000, intervalMs: 30, log, resolver });
    disco.start((s) => seen.push(s));
    const waitFor = async (what: string, cond: () => boolean) => {
      const end = Date.now() + 5000;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await waitFor('first set', () => seen.length === 1);
    expect(brief(seen[0])).toEqual(['10.0.0.10:10000/ready', 'fd00::10:10000/ready']);

    server.servfail = true;
    const q = server.queries;
    await waitFor('failures', () => (disco?.state.failures ?? 0) >= 2 && server!.queries > q + 2);
    expect(seen.length).toBe(1);

    server.servfail = false;
    server.records = { a: ['10.0.0.10', '10.0.0.11'], aaaa: [] };
    await waitFor('changed set', () => seen.length === 2);
    expect(brief(seen[1])).toEqual(['10.0.0.10:10000/ready', '10.0.0.11:10000/ready']);
  });
});
