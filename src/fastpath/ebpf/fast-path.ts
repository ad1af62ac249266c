import type { FlowEndpoint, FlowSession, KernelFlowListener, KernelMaps } from '../../defs/interfaces.ts';
import type { KernelCounts } from '../../defs/kernel-counts.ts';
import type { CloseReason } from '../../defs/reasons.ts';
import type { FastPathDeps } from '../fast-path.ts';
import { desiredFlow, type FlowLookup } from '../flow-plan.ts';
import type { Endpoint, KernelFlow, NextHop } from '../nft-script.ts';
import type { Libbpf } from './libbpf.ts';
import {
  type CounterRead,
  clearCounter,
  encodeKey,
  encodeValue,
  keyText,
  readCounter,
  rewrites,
  VALUE_BYTES,
} from './map-layout.ts';

/**
 * The eBPF kernel path's flow listener (docs/fast-path.md, "eBPF"): it follows the same flow
 * events as the nftables path (NftFastPath) and keeps the `ice_flows` map in step with them —
 * but synchronously, inside the event: a session's entries are in the kernel before
 * `established` returns, and a rebinding or a latching switch moves them before the event that
 * announced it returns. No batch window, no transaction to wait for: a map update is one system
 * call (libbpf.ts).
 *
 * Per session, two map entries (one per direction, map-layout.ts) and two counter slots in the
 * mapped `ice_counts` array. The slots belong to the session, not to its entries: a move keeps
 * them, so nothing counted is lost to it. They are read every `pollIntervalMs` from the mapping
 * (no system call): the deltas go to the registry (FastPathHost: the session's packet and byte
 * counts) and the time of the last client datagram refreshes its idle clock. At close the entries
 * go first, then the slots are read one last time, so the close log has every datagram the kernel
 * forwarded (bar one racing the deletion by nanoseconds).
 *
 * One owner, many writers: the pod loads and owns the program and its maps (program.ts), in one
 * process and with worker threads alike; each data-path thread's EbpfFastPath writes only its own
 * sessions' entries, with its own range of counter slots, and removes only those at stop.
 */

/** The maps as a session owner writes them. */
export interface FlowMaps {
  /** Creates or replaces an entry: 0, or a negative errno. */
  put(key: Uint8Array, value: Uint8Array): number;
  /** Deletes an entry: 0, or a negative errno (-ENOENT when there is none). */
  drop(key: Uint8Array): number;
  /** The counters array's values, mapped (32-bit words). */
  readonly counters: Uint32Array;
  /** Unmaps the counters. */
  close(): void;
}

/** The real maps, through libbpf (the descriptors from the owner, EbpfProgram.handles). */
export function openFlowMaps(lib: Libbpf, h: KernelMaps): FlowMaps {
  const region = lib.mmap(h.countsFd, h.countsBytes);
  return {
    put: (k, v) => lib.update(h.flowsFd, k, v),
    drop: (k) => lib.remove(h.flowsFd, k),
    counters: new Uint32Array(region.buffer),
    close: () => region.unmap(),
  };
}

export interface EbpfFastPathOptions {
  /** The address and port clients send to. */
  readonly listenAddress: string;
  readonly listenPort: number;
  /** Counters are read this often (ms). */
  readonly pollIntervalMs: number;
  /** This owner's counter slots (two per session). */
  readonly slots: { readonly first: number; readonly count: number };
  /** Set in a worker thread (attached mode): its id, for the logs. */
  readonly worker?: number;
}

/** As the nftables path's (fast-path.ts), with the maps instead of `nft`. */
export interface EbpfFastPathDeps
  extends Pick<FastPathDeps, 'host' | 'sources' | 'nextHops' | 'clock' | 'log' | 'onHandover'> {
  readonly maps: FlowMaps;
  /** if_nametoindex(3): 0 when there is no such interface. */
  readonly ifindex: (dev: string) => number;
  /**
   * CLOCK_MONOTONIC in ns (process.hrtime.bigint() on Linux). The program stamps with
   * bpf_ktime_get_coarse_ns(), the same clock as of the last tick: a stamp is behind by under a
   * tick, so a session looks idle that much longer (and is never dated in the future: pollNow).
   */
  readonly monotonicNs: () => number;
}

interface Installed {
  readonly flow: KernelFlow;
  readonly up: string;
  readonly down: string;
  readonly upKey: Uint8Array;
  readonly downKey: Uint8Array;
}

/** A session's counts as last read (for deltas). */
interface Seen {
  packetsUp: number;
  bytesUp: number;
  packetsDown: number;
  bytesDown: number;
  lastUpNs: number;
}

interface Tracked {
  installed: Installed | undefined;
  /** Its up slot (down = slot + 1), from its first install until it closes. */
  slot: number | undefined;
  establishedAt: number | undefined;
  seen: Seen;
}

/** Free counter slots of one owner, least recently freed first (a late count lands on no one new). */
class Slots {
  readonly #free: number[] = [];
  #head = 0;
  #next: number;
  readonly #end: number;

  constructor(first: number, count: number) {
    this.#next = first;
    this.#end = first + count - (count % 2);
  }

  take(): number | undefined {
    if (this.#head < this.#free.length) {
      const s = this.#free[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#free.length) {
        this.#free.splice(0, this.#head);
        this.#head = 0;
      }
      return s;
    }
    if (this.#next + 2 > this.#end) return undefined;
    const s = this.#next;
    this.#next += 2;
    return s;
  }

  release(slot: number): void {
    this.#free.push(slot);
  }
}

const ZERO: KernelCounts = { packetsUp: 0, bytesUp: 0, packetsDown: 0, bytesDown: 0 };

const sameHop = (a: NextHop, b: NextHop): boolean => a.via === b.via && a.dev === b.dev;
const sameEndpoint = (a: Endpoint, b: Endpoint): boolean => a.address === b.address && a.port === b.port;
function sameFlow(a: KernelFlow, b: KernelFlow): boolean {
  return (
    a.upstreamPort === b.upstreamPort &&
    a.source === b.source &&
    sameEndpoint(a.client, b.client) &&
    sameEndpoint(a.backend, b.backend) &&
    sameHop(a.toBackend, b.toBackend) &&
    sameHop(a.toClient, b.toClient)
  );
}

export class EbpfFastPath implements KernelFlowListener {
  /** Everything the kernel forwarded, for /metrics (`path="kernel"`). */
  readonly totals: KernelCounts = { ...ZERO };
  /**
   * Map changes applied (`transactions`: one per session change, each one or a few map updates)
   * and failed; sessions handed over; counter reads.
   */
  readonly stats = { transactions: 0, failures: 0, handovers: 0, polls: 0 };
  readonly #d: EbpfFastPathDeps;
  readonly #opt: EbpfFastPathOptions;
  readonly #listen: Endpoint;
  readonly #look: FlowLookup;
  readonly #tracked = new Map<FlowSession, Tracked>();
  /** Which session's entry each key in the map is (a 5-tuple may pass to another session). */
  readonly #owners = new Map<string, FlowSession>();
  /** Established sessions waiting for a source address or a fresh routing table. */
  readonly #waiting = new Set<FlowSession>();
  readonly #slots: Slots;
  /**
   * Interface indexes by name, as looked up since the last read of the routing table (cleared
   * with it: an interface that comes back gets its new index within a poll interval, as a changed
   * route does). Not a lookup per hand-over: if_nametoindex(3) opens and closes a socket, and a
   * new file descriptor that finds the process's descriptor table full makes the kernel grow it
   * and wait for an RCU grace period (expand_files → synchronize_rcu, 8–17 ms measured here) —
   * inside the hand-over (docs/fast-path.md, "Hand-over and the collector's threads").
   */
  readonly #ifindexes = new Map<string, number>();
  readonly #ifindexOf = (dev: string): number => {
    const known = this.#ifindexes.get(dev);
    if (known !== undefined) return known;
    const i = this.#d.ifindex(dev);
    // A missing interface is asked again next time: it may come up.
    if (i !== 0) this.#ifindexes.set(dev, i);
    return i;
  };
  #installed = 0;
  #poller: NodeJS.Timeout | undefined;
  #settling: Promise<void> | undefined;
  #stopped = false;
  // Scratch for the hot-ish paths (an event, a poll): no allocation per counter read.
  readonly #read: CounterRead = { packets: 0, bytes: 0, lastNs: 0 };

  private constructor(opt: EbpfFastPathOptions, deps: EbpfFastPathDeps) {
    this.#opt = opt;
    this.#d = deps;
    this.#listen = { address: opt.listenAddress, port: opt.listenPort };
    this.#slots = new Slots(opt.slots.first, opt.slots.count);
    this.#look = {
      sourceOf: (a) => deps.sources.get(a),
      nextHop: (a) => deps.nextHops.get(a),
    };
  }

  /**
   * A data-path thread (the one of one process, or a worker thread): writes its sessions into
   * maps the pod owns (program.ts), with its own range of counter slots.
   */
  static async attach(opt: EbpfFastPathOptions, deps: EbpfFastPathDeps): Promise<EbpfFastPath> {
    const fp = new EbpfFastPath(opt, deps);
    await fp.#begin();
    return fp;
  }

  async #begin(): Promise<void> {
    await this.#refreshRoutes();
    this.#poller = setInterval(() => void this.#tick(), this.#opt.pollIntervalMs);
    this.#poller.unref();
  }

  /** Sessions with entries in the kernel right now. */
  get kernelSessions(): number {
    return this.#installed;
  }

  // KernelFlowListener: each event brings the kernel in step with the session before it returns.
  established(s: FlowSession): void {
    if (this.#stopped) return;
    this.#tracked.set(s, {
      installed: undefined,
      slot: undefined,
      establishedAt: this.#d.clock(),
      seen: { packetsUp: 0, bytesUp: 0, packetsDown: 0, bytesDown: 0, lastUpNs: 0 },
    });
    this.#sync(s, true);
  }
  endpointJoined(s: FlowSession, _ep: FlowEndpoint): void {
    this.#sync(s, true);
  }
  currentChanged(s: FlowSession, _ep: FlowEndpoint): void {
    this.#sync(s, true);
  }
  endpointLeft(s: FlowSession, _ep: FlowEndpoint): void {
    this.#sync(s, true);
  }
  /**
   * The client's flow now reaches this replica through a peer (or directly again): a session
   * reached through a peer leaves the kernel, which would send the backend's datagrams straight
   * to the client from here, where the balancer no longer maps it (docs/peers.md, "Workers and the
   * kernel fast path").
   */
  routeChanged(s: FlowSession, _ep: FlowEndpoint): void {
    this.#sync(s, true);
  }
  closed(s: FlowSession, _reason: CloseReason, _established: boolean): Promise<void> | undefined {
    const t = this.#tracked.get(s);
    if (t === undefined) return undefined;
    this.#waiting.delete(s);
    this.#uninstall(s, t);
    this.#tracked.delete(s);
    if (t.slot === undefined) return undefined;
    // The entries are gone: what the slots hold now is final.
    const k = this.#delta(t);
    this.#slots.release(t.slot);
    if (k === undefined) return undefined;
    // The registry writes the close log once this settles: the counts go in right before it (a
    // listener does not call back into the registry from inside the event).
    return Promise.resolve().then(() => this.#d.host.addKernelCounts(s, k));
  }

  /**
   * Makes the kernel hold what the session needs now. `retry`: a session that cannot be placed
   * yet (its upstream source address is not known, or no route is in the last read table) waits
   * for one asynchronous look-up, then is tried again once.
   */
  #sync(s: FlowSession, retry: boolean): void {
    const t = this.#tracked.get(s);
    if (t === undefined || this.#stopped) return;
    const want = desiredFlow(s, this.#look);
    if (typeof want === 'string') {
      if (want === 'pending' || (retry && t.installed === undefined && this.#placeable(s))) {
        this.#waiting.add(s);
        this.#settle();
        if (want === 'pending') return;
      }
      this.#uninstall(s, t);
      return;
    }
    if (t.installed !== undefined && sameFlow(t.installed.flow, want)) return;
    this.#install(s, t, want);
  }

  /** Whether a retry could help: an IPv4 session with a backend and a bound upstream socket. */
  #placeable(s: FlowSession): boolean {
    const b = s.backend;
    return (
      b !== undefined &&
      !b.address.includes(':') &&
      !s.current.address.includes(':') &&
      s.upstream.localPort > 0
    );
  }

  /** Resolves what waiting sessions lack (source addresses, a fresh routing table), then retries them. */
  #settle(): void {
    if (this.#settling !== undefined) return;
    this.#settling = (async () => {
      // Sessions established while this runs wait for the next round.
      await Promise.resolve();
      const batch = [...this.#waiting];
      this.#waiting.clear();
      await this.#refreshRoutes();
      const backends = new Set<string>();
      for (const s of batch)
        if (s.backend !== undefined && this.#d.sources.get(s.backend.address) === undefined)
          backends.add(s.backend.address);
      for (const a of backends) {
        try {
          await this.#d.sources.resolve(a);
        } catch (err) {
          this.#d.log.warn({ backend: a, err: (err as Error).message }, 'fast path: no route to backend');
        }
      }
      for (const s of batch) this.#sync(s, false);
    })().finally(() => {
      this.#settling = undefined;
      if (this.#waiting.size > 0 && !this.#stopped) this.#settle();
    });
  }

  async #refreshRoutes(): Promise<void> {
    try {
      await this.#d.nextHops.refresh();
      this.#ifindexes.clear();
    } catch (err) {
      // The last table read stays in use (none yet: every flow stays in userspace).
      this.#d.log.warn({ err: (err as Error).message }, 'fast path: cannot read the routing table');
    }
  }

  /**
   * Writes the session's two entries: the new ones first (the downstream key is the same for
   * the whole session, so its update replaces the target in one step: a rebinding's first
   * downstream datagram already goes to the new 5-tuple), then deletes an upstream entry that is
   * no longer current. A failure takes every entry of the session out (it stays in Node).
   */
  #install(s: FlowSession, t: Tracked, flow: KernelFlow): void {
    if (t.slot === undefined) {
      const slot = this.#slots.take();
      if (slot === undefined) {
        this.stats.failures++;
        this.#d.log.warn({ session: s.id }, 'fast path: no counter slot left; the session stays in Node');
        return;
      }
      clearCounter(this.#d.maps.counters, slot);
      clearCounter(this.#d.maps.counters, slot + 1);
      t.slot = slot;
    }
    const [up, down] = rewrites(flow, this.#listen, this.#ifindexOf, { up: t.slot, down: t.slot + 1 });
    if (up.ifindex === 0 || down.ifindex === 0) {
      this.#uninstall(s, t);
      return;
    }
    const next: Installed = {
      flow,
      up: keyText(up.from, up.to),
      down: keyText(down.from, down.to),
      upKey: encodeKey(up.from, up.to),
      downKey: encodeKey(down.from, down.to),
    };
    const maps = this.#d.maps;
    const upRc = maps.put(next.upKey, encodeValue(up, new Uint8Array(VALUE_BYTES)));
    const downRc = upRc === 0 ? maps.put(next.downKey, encodeValue(down, new Uint8Array(VALUE_BYTES))) : upRc;
    if (downRc !== 0) {
      this.stats.failures++;
      this.#d.log.warn(
        { session: s.id, rc: downRc },
        'fast path: map update failed; the session stays in Node',
      );
      if (upRc === 0) this.#owners.set(next.up, s);
      this.#uninstall(s, t);
      this.#dropOwned(s, next.up, next.upKey);
      return;
    }
    const before = t.installed;
    this.#owners.set(next.up, s);
    this.#owners.set(next.down, s);
    if (before !== undefined) {
      if (before.up !== next.up) this.#dropOwned(s, before.up, before.upKey);
      if (before.down !== next.down) this.#dropOwned(s, before.down, before.downKey);
    } else {
      this.#installed++;
    }
    t.installed = next;
    this.stats.transactions++;
    if (t.establishedAt !== undefined) {
      const ms = this.#d.clock() - t.establishedAt;
      t.establishedAt = undefined;
      this.stats.handovers++;
      this.#d.onHandover?.(ms);
      this.#d.log.debug({ session: s.id, handoverMs: ms }, 'fast path: session in the kernel');
    }
  }

  /** Deletes the session's entries (those still its own); it is relayed by Node from here on. */
  #uninstall(s: FlowSession, t: Tracked): void {
    const i = t.installed;
    if (i === undefined) return;
    t.installed = undefined;
    this.#installed--;
    this.#dropOwned(s, i.up, i.upKey);
    this.#dropOwned(s, i.down, i.downKey);
    this.stats.transactions++;
  }

  /** Deletes an entry if `s` still owns it (an ICE restart may have given the 5-tuple to another). */
  #dropOwned(s: FlowSession, text: string, key: Uint8Array): void {
    if (this.#owners.get(text) !== s) return;
    this.#owners.delete(text);
    const rc = this.#d.maps.drop(key);
    if (rc !== 0 && rc !== -2 /* ENOENT */) {
      this.stats.failures++;
      this.#d.log.warn({ session: s.id, rc }, 'fast path: map delete failed');
    }
  }

  /** The session's counts since the last read (undefined: none), taken into the totals. */
  #delta(t: Tracked): KernelCounts | undefined {
    const counters = this.#d.maps.counters;
    const seen = t.seen;
    const up = readCounter(counters, t.slot!, this.#read);
    const packetsUp = up.packets - seen.packetsUp;
    const bytesUp = up.bytes - seen.bytesUp;
    seen.packetsUp = up.packets;
    seen.bytesUp = up.bytes;
    const lastUpNs = up.lastNs;
    const down = readCounter(counters, t.slot! + 1, this.#read);
    const packetsDown = down.packets - seen.packetsDown;
    const bytesDown = down.bytes - seen.bytesDown;
    seen.packetsDown = down.packets;
    seen.bytesDown = down.bytes;
    if (packetsUp === 0 && packetsDown === 0) return undefined;
    const k: KernelCounts = { packetsUp, bytesUp, packetsDown, bytesDown };
    const tot = this.totals;
    tot.packetsUp += packetsUp;
    tot.bytesUp += bytesUp;
    tot.packetsDown += packetsDown;
    tot.bytesDown += bytesDown;
    if (packetsUp > 0) seen.lastUpNs = lastUpNs;
    return k;
  }

  /** The poll: routes re-read, then every session's counters. */
  async #tick(): Promise<void> {
    await this.#refreshRoutes();
    this.pollNow();
  }

  /**
   * Reads every session's counters (from the mapping: no system call): the deltas go to the
   * registry, and a session whose client sent through the kernel gets its idle clock set to the
   * time of that last datagram.
   */
  pollNow(): void {
    if (this.#stopped) return;
    this.stats.polls++;
    const now = this.#d.clock();
    const mono = this.#d.monotonicNs();
    for (const [s, t] of this.#tracked) {
      if (t.slot === undefined) continue;
      const k = this.#delta(t);
      if (k === undefined) continue;
      this.#d.host.addKernelCounts(s, k);
      if (k.packetsUp === 0) continue;
      // The kernel's time of the client's last datagram, on our clock.
      this.#d.host.touch(s, Math.min(now, now - (mono - t.seen.lastUpNs) / 1e6));
    }
  }

  /**
   * Reads the counters a last time, deletes this thread's entries (from here on Node sees all the
   * media) and unmaps the counters; the pod takes the program off once every thread has stopped.
   * Idempotent.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    clearInterval(this.#poller);
    await this.#settling;
    this.pollNow();
    this.#stopped = true;
    for (const [s, t] of this.#tracked) this.#uninstall(s, t);
    this.#tracked.clear();
    this.#waiting.clear();
    this.#d.maps.close();
    this.#d.log.info({ worker: this.#opt.worker }, 'fast path: eBPF entries removed');
  }
}
