import { describe, expect, it } from 'vitest';
import { Hold, JOIN_HOLD, JOIN_WAIT_MS, JOIN_WAITS, JoinWaits } from '../../src/session/join-waits.ts';

/** The bounded wait of a new 5-tuple's media for its check's answer, on its own (no I/O, no clock). */
describe('JoinWaits', () => {
  const live = (): boolean => true;
  const dgram = (n: number): Buffer => Buffer.from([0x80, 0x60, 0, n]);

  it('holds only for a 5-tuple that waits, in order, at most JOIN_HOLD, and hands them back once', () => {
    const w = new JoinWaits<string>();
    expect(w.hold('192.0.2.1', 6000, dgram(0), 0, live)).toBe(Hold.NotWaiting);
    expect(w.open('s1', '192.0.2.1', 6000, 0)).toBe(true);
    expect(w.hold('192.0.2.1', 6001, dgram(0), 0, live)).toBe(Hold.NotWaiting);
    for (let i = 0; i < JOIN_HOLD; i++) expect(w.hold('192.0.2.1', 6000, dgram(i), 1, live)).toBe(Hold.Held);
    expect(w.hold('192.0.2.1', 6000, dgram(99), 1, live)).toBe(Hold.Full);
    expect(w.held).toBe(JOIN_HOLD);
    const got = w.close('192.0.2.1', 6000)!;
    expect(got.session).toBe('s1');
    expect(got.held.map((b) => b[3])).toEqual([...Array(JOIN_HOLD).keys()]);
    expect(w.close('192.0.2.1', 6000)).toBeUndefined();
    expect(w.size).toBe(0);
    expect(w.held).toBe(0);
  });

  it('a retransmitted check extends the wait; past its time, or once its session is gone, nothing is held and the sweep ends it', () => {
    const w = new JoinWaits<string>();
    w.open('s1', '192.0.2.1', 6000, 0);
    w.hold('192.0.2.1', 6000, dgram(1), 10, live);
    w.open('s1', '192.0.2.1', 6000, 400); // the client retransmits: same wait, same datagrams
    expect(w.hold('192.0.2.1', 6000, dgram(2), 400 + JOIN_WAIT_MS, live)).toBe(Hold.Held);
    expect(w.hold('192.0.2.1', 6000, dgram(3), 401 + JOIN_WAIT_MS, live)).toBe(Hold.NotWaiting);
    const ended: number[] = [];
    w.sweep(400 + JOIN_WAIT_MS, live, (x) => ended.push(x.held.length));
    expect(ended).toEqual([]);
    w.sweep(401 + JOIN_WAIT_MS, live, (x) => ended.push(x.held.length));
    expect(ended).toEqual([2]);
    expect(w.size).toBe(0);
    // A session that ended: its wait holds nothing more and the next sweep ends it.
    w.open('s2', '192.0.2.2', 7000, 0);
    const gone = (s: string): boolean => s !== 's2';
    expect(w.hold('192.0.2.2', 7000, dgram(1), 1, gone)).toBe(Hold.NotWaiting);
    w.sweep(2, gone, (x) => ended.push(x.held.length));
    expect(ended).toEqual([2, 0]);
    expect(w.size).toBe(0);
  });

  it('is bounded: at most JOIN_WAITS 5-tuples; another session cannot take a waiting 5-tuple over', () => {
    const w = new JoinWaits<string>();
    for (let i = 0; i < JOIN_WAITS; i++) expect(w.open('s', `10.0.${i >> 8}.${i & 255}`, 5000, 0)).toBe(true);
    expect(w.open('s', '10.9.9.9', 5000, 0)).toBe(false);
    expect(w.size).toBe(JOIN_WAITS);
    expect(w.open('other', '10.0.0.0', 5000, 0)).toBe(false);
    expect(w.close('10.0.0.0', 5000)?.session).toBe('s');
    expect(w.open('s', '10.9.9.9', 5000, 0)).toBe(true);
  });
});
