/**
 * Client datagrams of a 5-tuple that is about to join an established session: held while its
 * check is on its way to the backend, sent on when the backend's success joins the 5-tuple, and
 * dropped when the backend refuses it or does not answer in time (docs/architecture.md, "NAT
 * rebinding: held until the join").
 *
 * Why: after a NAT rebinding the client's next check names the session from a new 5-tuple, and
 * its media follows at once — RFC 8445 §7.3.1.4 lets an agent send media as soon as it has a
 * nominated pair, and libwebrtc keeps sending on the connection it already selected while the new
 * one is checked. Nothing of a new 5-tuple may reach the backend before the backend confirms it
 * (the integrity gate: a forged check moves nothing), so until then that media used to be dropped
 * as an unknown flow. On one replica the answer takes about one backend round trip; when the
 * 5-tuple landed on another replica (docs/peers.md) the check travels a query round and a tunnel
 * first, and at 50 datagrams/s that dropped one to three datagrams per rebinding.
 *
 * Bounded in every dimension: {@link JOIN_WAITS} 5-tuples, {@link JOIN_HOLD} datagrams each,
 * {@link JOIN_WAIT_MS} from the check. A held datagram is a reference to the buffer the socket
 * layer allocated anyway. A forged check from a spoofed 5-tuple costs what it did before plus at
 * most {@link JOIN_HOLD} references for {@link JOIN_WAIT_MS}: whatever it held is dropped when the
 * backend refuses the check (or ignores it), and counted (`join_unconfirmed`).
 *
 * Owned by the session registry (the one owner of session state); I/O-free.
 */

/** 5-tuples that can wait at once; a rebinding beyond it is handled as before (its media dropped). */
export const JOIN_WAITS = 1024;
/** Datagrams held per 5-tuple: 160 ms of media at 50/s. */
export const JOIN_HOLD = 8;
/**
 * How long a check may take to be answered: well over one round trip to a backend (and a tunnel
 * to this replica), well under the client's consent interval; media older than this is stale.
 */
export const JOIN_WAIT_MS = 500;

export const Hold = { NotWaiting: 0, Held: 1, Full: 2 } as const;
export type Hold = (typeof Hold)[keyof typeof Hold];

export interface JoinWait<S> {
  readonly session: S;
  readonly address: string;
  readonly port: number;
  until: number;
  readonly held: Buffer[];
}

export class JoinWaits<S> {
  readonly #byAddress = new Map<string, Map<number, JoinWait<S>>>();
  #size = 0;
  #heldCount = 0;

  get size(): number {
    return this.#size;
  }

  /** Datagrams held now, across all waits. */
  get held(): number {
    return this.#heldCount;
  }

  /**
   * A check of `session` from this new 5-tuple went to the backend: hold its datagrams until the
   * answer. A retransmit keeps the wait (and its datagrams) and extends it. False when full.
   */
  open(session: S, address: string, port: number, now: number): boolean {
    let ports = this.#byAddress.get(address);
    const old = ports?.get(port);
    if (old !== undefined && old.session === session) {
      old.until = now + JOIN_WAIT_MS;
      return true;
    }
    if (old !== undefined) return false; // Another session's wait: its own answer or the sweep ends it.
    if (this.#size >= JOIN_WAITS) return false;
    if (ports === undefined) {
      ports = new Map();
      this.#byAddress.set(address, ports);
    }
    ports.set(port, { session, address, port, until: now + JOIN_WAIT_MS, held: [] });
    this.#size++;
    return true;
  }

  /**
   * A datagram from an unknown 5-tuple: {@link Hold.Held} if the 5-tuple waits to join,
   * {@link Hold.Full} if its wait holds {@link JOIN_HOLD} datagrams already (the caller drops it),
   * {@link Hold.NotWaiting} otherwise — also for a wait past its time or whose session is gone
   * (`live`), which the sweep ends and counts: the caller handles the datagram as an unknown flow.
   */
  hold(address: string, port: number, buf: Buffer, now: number, live: (s: S) => boolean): Hold {
    if (this.#size === 0) return Hold.NotWaiting;
    const w = this.#byAddress.get(address)?.get(port);
    if (w === undefined || now > w.until || !live(w.session)) return Hold.NotWaiting;
    if (w.held.length >= JOIN_HOLD) return Hold.Full;
    w.held.push(buf);
    this.#heldCount++;
    return Hold.Held;
  }

  /**
   * The 5-tuple's wait ends (joined, refused, or gone): its held datagrams, oldest first, for the
   * caller to send on (joined) or to count as dropped. Undefined if it was not waiting.
   */
  close(address: string, port: number): JoinWait<S> | undefined {
    const ports = this.#byAddress.get(address);
    const w = ports?.get(port);
    if (w === undefined) return undefined;
    this.#remove(ports!, w);
    return w;
  }

  /** Ends every wait past its time, or whose session is gone; calls `expired` for each. */
  sweep(now: number, live: (s: S) => boolean, expired: (w: JoinWait<S>) => void): void {
    if (this.#size === 0) return;
    for (const ports of this.#byAddress.values()) {
      for (const w of ports.values()) {
        if (now <= w.until && live(w.session)) continue;
        this.#remove(ports, w);
        expired(w);
      }
    }
  }

  #remove(ports: Map<number, JoinWait<S>>, w: JoinWait<S>): void {
    ports.delete(w.port);
    if (ports.size === 0) this.#byAddress.delete(w.address);
    this.#size--;
    this.#heldCount -= w.held.length;
  }
}
