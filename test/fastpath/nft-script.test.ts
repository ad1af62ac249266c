import { describe, expect, it } from 'vitest';
import { FlowPlan } from '../../src/fastpath/flow-plan.ts';
import { parseElementCounters } from '../../src/fastpath/kernel-counters.ts';
import { addFlowLines, deleteTableScript, tableScript } from '../../src/fastpath/nft-script.ts';
import { checkFastPath } from '../../src/fastpath/preflight.ts';
import { ClientEndpoint, Session, SessionState } from '../../src/session/session.ts';

const PARAMS = { listenAddress: '198.18.0.1', listenPort: 10000, upstreamPorts: [16384, 32767] as const };

let nextId = 1;
function session(client: [string, number], backend: [string, number], upstreamPort: number): Session {
  const upstream = { localPort: upstreamPort, sendTo() {}, send() {}, connect() {}, close() {} };
  const s = new Session(
    nextId++,
    'srv:cli',
    3,
    { username: 1, serverUfrag: 2 },
    upstream,
    { address: client[0], port: client[1] },
    0,
  );
  s.state = SessionState.Established;
  s.backend = { name: 'b', address: backend[0], port: backend[1] } as Session['backend'];
  s.endpoints.push(s.current);
  return s;
}
const source = (): string => '10.77.2.1';

describe('nftables script text', () => {
  it('creates only the ip ice_ingress table, replacing a stale one in the same transaction', () => {
    const t = tableScript(PARAMS);
    expect(t.split('\n').slice(0, 3)).toEqual([
      'add table ip ice_ingress',
      'delete table ip ice_ingress',
      'table ip ice_ingress {',
    ]);
    // Every table statement names ours; nothing else is addressed.
    for (const m of t.matchAll(/table (\S+) (\S+)/g)) expect(`${m[1]} ${m[2]}`).toBe('ip ice_ingress');
    // Upstream: only datagrams to the listening address and port, STUN (first byte 0-3) excluded,
    // lookups before the rewrites of their own key fields, notrack in a raw-priority chain.
    expect(t).toContain('type filter hook prerouting priority raw; policy accept;');
    expect(t).toContain(
      'ip daddr 198.18.0.1 udp dport 10000 @th,64,8 > 3 ip daddr set ip saddr . udp sport map @c2b_addr udp dport set ip saddr . udp sport map @c2b_port udp sport set ip saddr . udp sport map @c2b_sport meta mark set 0x1ce10001 notrack accept',
    );
    expect(t).toContain(
      'meta l4proto udp udp dport 16384-32767 @th,64,8 > 3 ip daddr set ip saddr . udp sport . udp dport map @b2c_addr udp dport set ip saddr . udp sport . udp dport map @b2c_port udp sport set 10000 meta mark set 0x1ce10002 notrack accept',
    );
    // Source rewrites in postrouting only (in prerouting they make martians).
    expect(t).toContain('meta mark 0x1ce10001 ip saddr set ip daddr map @bsrc');
    expect(t).toContain('meta mark 0x1ce10002 ip saddr set 198.18.0.1');
    expect(t.indexOf('ip saddr set')).toBeGreaterThan(t.indexOf('chain post'));
  });

  it('without an upstream port range the reply rule looks at every port', () => {
    expect(tableScript({ ...PARAMS, upstreamPorts: undefined })).toContain(
      'meta l4proto udp @th,64,8 > 3 ip daddr set ip saddr . udp sport . udp dport map @b2c_addr',
    );
  });

  it('deletes the table without failing when it is gone', () => {
    expect(deleteTableScript()).toBe('add table ip ice_ingress\ndelete table ip ice_ingress\n');
  });

  it('one flow is five elements keyed by the client and by backend . upstream port', () => {
    expect(
      addFlowLines({
        client: { address: '198.18.0.2', port: 40000 },
        backend: { address: '10.77.2.11', port: 10000 },
        upstreamPort: 16384,
      }),
    ).toEqual([
      'add element ip ice_ingress c2b_addr { 198.18.0.2 . 40000 : 10.77.2.11 }',
      'add element ip ice_ingress c2b_port { 198.18.0.2 . 40000 : 10000 }',
      'add element ip ice_ingress c2b_sport { 198.18.0.2 . 40000 : 16384 }',
      'add element ip ice_ingress b2c_addr { 10.77.2.11 . 10000 . 16384 : 198.18.0.2 }',
      'add element ip ice_ingress b2c_port { 10.77.2.11 . 10000 . 16384 : 40000 }',
    ]);
  });
});

describe('FlowPlan batches', () => {
  it('many established sessions become one transaction with one source element per backend', () => {
    const plan = new FlowPlan();
    const a = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    const b = session(['198.18.0.2', 40001], ['10.77.2.11', 10000], 16385);
    plan.established(a, 10);
    plan.established(b, 12);
    const batch = plan.take(source)!;
    expect(batch.lines).toEqual([
      'add element ip ice_ingress bsrc { 10.77.2.11 : 10.77.2.1 }',
      ...addFlowLines({
        client: a.current,
        backend: { address: '10.77.2.11', port: 10000 },
        upstreamPort: 16384,
      }),
      ...addFlowLines({
        client: b.current,
        backend: { address: '10.77.2.11', port: 10000 },
        upstreamPort: 16385,
      }),
    ]);
    expect(plan.commit(batch, 20).map((h) => h.ms)).toEqual([10, 8]);
    expect(plan.installed).toBe(2);
    expect(plan.take(source)).toBeUndefined();
  });

  it('latching moves the entries: deletes of the old endpoint first, then adds', () => {
    const plan = new FlowPlan();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(source)!, 1);
    const ep = new ClientEndpoint(s, '198.18.0.2', 40999, 2);
    s.endpoints.push(ep);
    s.current = ep;
    plan.changed(s);
    const batch = plan.take(source)!;
    expect(batch.lines).toEqual([
      'delete element ip ice_ingress c2b_addr { 198.18.0.2 . 40000 }',
      'delete element ip ice_ingress c2b_port { 198.18.0.2 . 40000 }',
      'delete element ip ice_ingress c2b_sport { 198.18.0.2 . 40000 }',
      'delete element ip ice_ingress b2c_addr { 10.77.2.11 . 10000 . 16384 }',
      'delete element ip ice_ingress b2c_port { 10.77.2.11 . 10000 . 16384 }',
      'add element ip ice_ingress c2b_addr { 198.18.0.2 . 40999 : 10.77.2.11 }',
      'add element ip ice_ingress c2b_port { 198.18.0.2 . 40999 : 10000 }',
      'add element ip ice_ingress c2b_sport { 198.18.0.2 . 40999 : 16384 }',
      'add element ip ice_ingress b2c_addr { 10.77.2.11 . 10000 . 16384 : 198.18.0.2 }',
      'add element ip ice_ingress b2c_port { 10.77.2.11 . 10000 . 16384 : 40999 }',
    ]);
    // Not a first install: no hand-over time again.
    expect(plan.commit(batch, 3)).toEqual([]);
  });

  it('a session that closes within the window costs nothing; a closed one is deleted with its source', () => {
    const plan = new FlowPlan();
    const quick = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(quick, 0);
    plan.closed(quick);
    expect(plan.take(source)).toBeUndefined();
    const s = session(['198.18.0.2', 40001], ['10.77.2.12', 10000], 16385);
    plan.established(s, 0);
    plan.commit(plan.take(source)!, 1);
    plan.closed(s);
    const batch = plan.take(source)!;
    expect(batch.lines.at(-1)).toBe('delete element ip ice_ingress bsrc { 10.77.2.12 }');
    expect(batch.lines.filter((l) => l.startsWith('delete element'))).toHaveLength(6);
    plan.commit(batch, 2);
    expect(plan.installed).toBe(0);
  });

  it('an ICE restart taking over a 5-tuple deletes the old session before adding the new one', () => {
    const plan = new FlowPlan();
    const old = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(old, 0);
    plan.commit(plan.take(source)!, 1);
    const next = session(['198.18.0.2', 40000], ['10.77.2.12', 10000], 16390);
    plan.closed(old);
    plan.established(next, 5);
    const lines = plan.take(source)!.lines;
    const del = lines.indexOf('delete element ip ice_ingress c2b_addr { 198.18.0.2 . 40000 }');
    const add = lines.indexOf('add element ip ice_ingress c2b_addr { 198.18.0.2 . 40000 : 10.77.2.12 }');
    expect(del).toBeGreaterThanOrEqual(0);
    expect(add).toBeGreaterThan(del);
  });

  it('IPv6 sessions and sessions without a resolved source stay in userspace', () => {
    const plan = new FlowPlan();
    const v6 = session(['2001:db8::1', 40000], ['fd00::11', 10000], 16384);
    plan.established(v6, 0);
    expect(plan.take(source)).toBeUndefined();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16385);
    plan.established(s, 0);
    expect(plan.missingSources(() => undefined)).toEqual(['10.77.2.11']);
    expect(plan.take(() => undefined)).toBeUndefined();
    expect(plan.dirty).toBe(1);
    expect(plan.take(source)!.changes).toHaveLength(1);
  });

  it('resync rewrites every live flow after flushing the maps', () => {
    const plan = new FlowPlan();
    const s = session(['198.18.0.2', 40000], ['10.77.2.11', 10000], 16384);
    plan.established(s, 0);
    plan.commit(plan.take(source)!, 1);
    const r = plan.resync(source);
    expect(r.lines.slice(0, 6).every((l) => l.startsWith('flush map ip ice_ingress '))).toBe(true);
    expect(r.lines).toContain('add element ip ice_ingress bsrc { 10.77.2.11 : 10.77.2.1 }');
    expect(r.lines).toContain('add element ip ice_ingress c2b_addr { 198.18.0.2 . 40000 : 10.77.2.11 }');
    plan.commit(r, 2);
    expect(plan.installed).toBe(1);
  });
});

describe('element counters from nft -j', () => {
  it('reads per-element counters of concatenated keys and ignores malformed input', () => {
    const text = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        {
          map: {
            family: 'ip',
            name: 'c2b_addr',
            table: 'ice_ingress',
            elem: [
              [
                { elem: { val: { concat: ['198.18.0.2', 40000] }, counter: { packets: 7, bytes: 1428 } } },
                '10.77.2.11',
              ],
            ],
          },
        },
        {
          map: {
            name: 'b2c_addr',
            elem: [
              [
                {
                  elem: {
                    val: { concat: ['10.77.2.11', 10000, 16384] },
                    counter: { packets: 3, bytes: 300 },
                  },
                },
                '198.18.0.2',
              ],
            ],
          },
        },
        { map: { name: 'c2b_port', elem: [[{ concat: ['198.18.0.2', 40000] }, 10000]] } },
      ],
    });
    const c = parseElementCounters(text);
    expect([...c]).toEqual([
      ['c2b_addr:198.18.0.2|40000', { packets: 7, bytes: 1428 }],
      ['b2c_addr:10.77.2.11|10000|16384', { packets: 3, bytes: 300 }],
    ]);
    expect(parseElementCounters('not json').size).toBe(0);
    expect(parseElementCounters('{"nftables":7}').size).toBe(0);
  });
});

describe('fast path preflight', () => {
  const probes = (o: { capEff?: string; fwd?: string; nft?: boolean; nftDenied?: boolean }) => ({
    status: async () => `Name:\tnode\nCapEff:\t${o.capEff ?? '000001ffffffffff'}\n`,
    ipForward: async () => `${o.fwd ?? '1'}\n`,
    nftVersion: async () => {
      if (o.nft === false) throw Object.assign(new Error('spawn nft ENOENT'), { code: 'ENOENT' });
      return 'nftables v1.0.6';
    },
    nftList: async () => {
      if (o.nftDenied) throw new Error('Error: Operation not permitted');
      return '';
    },
  });
  it('passes with nft allowed to change the ruleset and forwarding on', async () => {
    expect(await checkFastPath(probes({}))).toEqual([]);
    // nft with file capabilities: the process itself need not hold NET_ADMIN.
    expect(await checkFastPath(probes({ capEff: '0000000000000000' }))).toEqual([]);
  });
  it('names everything that is missing at once', async () => {
    const p = await checkFastPath(probes({ capEff: '0000000000000000', fwd: '0', nft: false }));
    expect(p).toHaveLength(3);
    expect(p[0]).toMatch(/no `nft` binary/);
    expect(p[1]).toMatch(/no CAP_NET_ADMIN/);
    expect(p[2]).toMatch(/net.ipv4.ip_forward is 0/);
    expect(await checkFastPath(probes({ nftDenied: true }))).toEqual([
      'no CAP_NET_ADMIN: run as root in the pod, or grant the NET_ADMIN capability (`nft list tables`: Error: Operation not permitted)',
    ]);
  });
  it('without nft, CAP_NET_ADMIN is bit 12 of CapEff exactly', async () => {
    expect(await checkFastPath(probes({ nft: false, capEff: '0000000000001000' }))).toHaveLength(1);
    expect(await checkFastPath(probes({ nft: false, capEff: '0000000000000fff' }))).toHaveLength(2);
  });
});
