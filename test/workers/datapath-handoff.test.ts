import { describe, expect, it } from 'vitest';
import { SourceShares } from '../../src/admission/source-shares.ts';
import type { FlowHandoff, Shares } from '../../src/defs/interfaces.ts';
import { DROP_REASON_LABELS } from '../../src/defs/reasons.ts';
import { SessionState } from '../../src/session/session.ts';
import type { UsernameView } from '../../src/stun/parse.ts';
import { check, type DatapathRig, makeDatapathRig, media } from '../fixtures/fake-transport.ts';

/**
 * Where the worker layer plugs into the I/O-free data path (docs/workers.md): the hand-off is asked
 * only about unknown 5-tuples (divert for every datagram before the not-STUN drop, ownerOf for a
 * parsed first check before routing), never on an established flow or for an ICE restart; the
 * injected fair-share table is the one admission spends from. Fake transport, injected clock, real
 * STUN bytes.
 */

const drops = (r: DatapathRig, label: string): number =>
  r.datapath.counters.drops[DROP_REASON_LABELS.indexOf(label)]!;

/** A FlowHandoff that records every call; `owners` says which USERNAME another worker owns. */
class RecordingHandoff implements FlowHandoff {
  readonly owners = new Map<string, number>();
  /** 5-tuples (address:port) already handed to another worker. */
  readonly handed = new Map<string, number>();
  readonly calls: string[] = [];
  readonly sent: { owner: number; tuple: string; bytes: number }[] = [];

  divert(buf: Buffer, address: string, port: number): boolean {
    this.calls.push(`divert ${address}:${port}`);
    const owner = this.handed.get(`${address}:${port}`);
    if (owner === undefined) return false;
    this.sent.push({ owner, tuple: `${address}:${port}`, bytes: buf.length });
    return true;
  }

  ownerOf(buf: Buffer, view: UsernameView): number {
    const username = buf.toString('latin1', view.start, view.end);
    this.calls.push(`ownerOf ${username}`);
    return this.owners.get(username) ?? -1;
  }

  handoff(buf: Buffer, address: string, port: number, owner: number): void {
    this.calls.push(`handoff ${address}:${port} -> ${owner}`);
    this.handed.set(`${address}:${port}`, owner);
    this.sent.push({ owner, tuple: `${address}:${port}`, bytes: buf.length });
  }
}

describe('data path with a hand-off (a worker of a pod)', () => {
  it("hands a first check of another worker's ufrag pair over, and the 5-tuple's media follows it", () => {
    const h = new RecordingHandoff();
    const r = makeDatapathRig({ handoff: h });
    const creds = r.backends[0]!.addSession();
    h.owners.set(`${creds.serverUfrag}:${creds.clientUfrag}`, 1);
    const first = check(creds);
    r.fromClient(first, '192.0.2.1', 5000);
    expect(h.calls).toEqual([
      'divert 192.0.2.1:5000',
      `ownerOf ${creds.serverUfrag}:${creds.clientUfrag}`,
      'handoff 192.0.2.1:5000 -> 1',
    ]);
    // Nothing routed, opened or sent here, nothing counted as dropped.
    expect(r.transport.upstreams).toHaveLength(0);
    expect(r.datapath.size).toBe(0);
    expect(r.datapath.counters.drops.reduce((a, b) => a + b, 0)).toBe(0);
    // Media on that 5-tuple (not STUN: it would be dropped as unknown_flow_rtp) goes the same way.
    r.fromClient(media('rtp'), '192.0.2.1', 5000);
    expect(h.sent).toEqual([
      { owner: 1, tuple: '192.0.2.1:5000', bytes: first.length },
      { owner: 1, tuple: '192.0.2.1:5000', bytes: media('rtp').length },
    ]);
    expect(drops(r, 'unknown_flow_rtp')).toBe(0);
    // Media on a 5-tuple never handed over is still dropped by reason.
    r.fromClient(media('rtp'), '192.0.2.1', 5001);
    expect(drops(r, 'unknown_flow_rtp')).toBe(1);
  });

  it('routes a first check itself when no other worker owns the pair; an established flow never asks', () => {
    const h = new RecordingHandoff();
    const r = makeDatapathRig({ handoff: h });
    const creds = r.backends[1]!.addSession();
    r.fromClient(check(creds), '192.0.2.1', 5000);
    expect(h.calls).toEqual(['divert 192.0.2.1:5000', `ownerOf ${creds.serverUfrag}:${creds.clientUfrag}`]);
    const s = r.sessionOf(creds.serverUfrag);
    r.answerAll(r.transport.of(s));
    expect(s.state).toBe(SessionState.Established);
    const asked = h.calls.length;
    // Media, a consent check, and an ICE restart (another server ufrag) on the established 5-tuple:
    // the forwarder's known-flow path and the router's restart, never the hand-off.
    r.fromClient(media('a'), '192.0.2.1', 5000);
    r.fromClient(check(creds), '192.0.2.1', 5000);
    const restart = r.backends[0]!.addSession();
    r.fromClient(check(restart), '192.0.2.1', 5000);
    expect(s.restartOf).toBeDefined();
    expect(h.calls.length).toBe(asked);
  });

  it('admission spends from the injected fair-share table', () => {
    let takes = 0;
    const inner = new SourceShares(64, [0, 0]);
    // Rates 0: only the activation credit; refusing once it is spent shows the table is the one used.
    const shares: Shares = {
      get active() {
        return inner.active;
      },
      slotOf: (a, now) => inner.slotOf(a, now),
      take: (slot, cls, n, now) => {
        takes++;
        return inner.take(slot, cls, n, now);
      },
      refund: (slot, cls, n) => inner.refund(slot, cls, n),
      sweep: (now) => inner.sweep(now),
    };
    const r = makeDatapathRig({ shares, options: { maxPendingPerSource: 1000 } });
    for (let i = 0; i < 20; i++) r.fromClient(check(r.backends[0]!.addSession()), '192.0.2.1', 6000 + i);
    expect(takes).toBeGreaterThan(0);
    expect(drops(r, 'source_share')).toBeGreaterThan(0);
    expect(r.datapath.activeSources).toBe(inner.active);
    expect(inner.active).toBeGreaterThan(0);
  });
});
