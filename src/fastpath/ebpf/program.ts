import type { Logger } from 'pino';
import type { KernelMaps } from '../../defs/interfaces.ts';
import type { Libbpf, LoadedObject, TcFilter } from './libbpf.ts';
import { COUNTER_BYTES, COUNTS_MAP, FLOWS_MAP, PROGRAM } from './map-layout.ts';

/**
 * The owner of the eBPF kernel path's kernel objects (docs/fast-path.md, "eBPF"): it loads the
 * program and its two maps, puts the program on the ingress of every interface that carries media
 * (now and as interfaces come up later), and takes it off again at stop. One owner per pod, made
 * by src/pod/pod.ts in the main thread; the entries in the maps are written by whoever holds the
 * sessions (each data-path thread's EbpfFastPath: the one thread of one process, or each worker
 * thread), through the map file descriptors this owner hands out — threads share them, nothing is
 * pinned.
 *
 * Only our own filter is ever touched: one tc filter per interface at a fixed handle and
 * priority, and only if the program there is ours (by name) or there is none. A foreign filter
 * elsewhere on the same hook is left alone, and so is the clsact qdisc: deleting it would delete
 * every other filter on the interface, so an empty one may stay behind after stop. A process that
 * dies without stopping (SIGKILL) leaves its filter attached, forwarding its last sessions, until
 * the next start replaces it (the same handle and priority, BPF_TC_F_REPLACE).
 */

/** Our filter's place on an interface's ingress hook ("ice" in hex; any fixed pair would do). */
export const TC_HANDLE = 0x1ce;
export const TC_PRIORITY = 0x1ce;

export interface ProgramOptions {
  /** The object file built by `npm run build:bpf`. */
  readonly objectPath: string;
  /** Sessions at most in the whole process (--max-sessions). */
  readonly maxSessions: number;
  /** How many session owners write into the maps (1, or the worker threads). */
  readonly owners: number;
  /** Interfaces are looked at this often for new ones (ms). */
  readonly linkPollMs: number;
}

export interface ProgramDeps {
  readonly libbpf: Libbpf;
  /** The interfaces to hook right now: those with an IPv4 address, but loopback (routes.ts). */
  readonly devices: () => readonly string[];
  readonly log: Logger;
}

const PAGE = 4096;

export class EbpfProgram {
  readonly #obj: LoadedObject;
  readonly #d: ProgramDeps;
  readonly #opt: ProgramOptions;
  /** Interface name → the ifindex our filter is on. */
  readonly #hooked = new Map<string, number>();
  #poller: NodeJS.Timeout | undefined;
  #stopped = false;

  private constructor(obj: LoadedObject, opt: ProgramOptions, deps: ProgramDeps) {
    this.#obj = obj;
    this.#opt = opt;
    this.#d = deps;
  }

  /** Per owner: two counter slots per session, for as many sessions as the process may hold. */
  static slotsPerOwner(maxSessions: number): number {
    return 2 * maxSessions;
  }

  /**
   * Loads the object (sizing the maps from --max-sessions), then hooks every interface. A failure
   * to load throws (start-up stops); an interface that cannot be hooked is logged and skipped.
   */
  static load(opt: ProgramOptions, deps: ProgramDeps): EbpfProgram {
    const perOwner = EbpfProgram.slotsPerOwner(opt.maxSessions);
    // Two entries per session, plus room for the moves that insert a session's new entry before
    // deleting its old one.
    const flows = 2 * opt.maxSessions + 1024;
    // Whole pages of counters, so the mapping covers exactly the array's values.
    const counters = Math.ceil((perOwner * opt.owners * COUNTER_BYTES) / PAGE) * (PAGE / COUNTER_BYTES);
    const obj = deps.libbpf.load(
      opt.objectPath,
      PROGRAM,
      new Map([
        [FLOWS_MAP, flows],
        [COUNTS_MAP, counters],
      ]),
    );
    const p = new EbpfProgram(obj, { ...opt }, deps);
    p.#countsEntries = counters;
    p.hookNew();
    p.#poller = setInterval(() => p.hookNew(), opt.linkPollMs);
    p.#poller.unref();
    deps.log.info(
      {
        program: PROGRAM,
        devices: [...p.#hooked.keys()],
        libbpf: deps.libbpf.version,
        maxSessions: opt.maxSessions,
      },
      'fast path: eBPF program attached',
    );
    return p;
  }

  #countsEntries = 0;

  /** The interfaces the program is on now. */
  get devices(): string[] {
    return [...this.#hooked.keys()].sort();
  }

  /** The maps and the counter slots of session owner `i` (0 ≤ i < owners). */
  handles(i: number): KernelMaps {
    const perOwner = EbpfProgram.slotsPerOwner(this.#opt.maxSessions);
    return {
      flowsFd: this.#obj.maps.get(FLOWS_MAP)!,
      countsFd: this.#obj.maps.get(COUNTS_MAP)!,
      countsBytes: this.#countsEntries * COUNTER_BYTES,
      slots: { first: i * perOwner, count: perOwner },
    };
  }

  /**
   * Hooks the interfaces that are not yet: new ones, and ones that came back with a new index.
   * Runs at load and then every `linkPollMs`.
   */
  hookNew(): void {
    if (this.#stopped) return;
    const lib = this.#d.libbpf;
    const now = new Set(this.#d.devices());
    for (const [name, ifindex] of this.#hooked)
      if (!now.has(name) || lib.ifindex(name) !== ifindex) this.#hooked.delete(name);
    for (const name of now) {
      if (this.#hooked.has(name)) continue;
      const ifindex = lib.ifindex(name);
      if (ifindex === 0) continue;
      try {
        this.#hook(name, ifindex);
      } catch (err) {
        this.#d.log.warn({ device: name, err: (err as Error).message }, 'fast path: cannot hook interface');
      }
    }
  }

  #hook(name: string, ifindex: number): void {
    const lib = this.#d.libbpf;
    const f = filterOn(ifindex);
    const created = lib.ensureClsact(ifindex);
    const there = lib.query(f);
    if (there !== 0) {
      const owner = lib.programName(there);
      // Only ever replace our own: a crashed run's program (same name), never a foreign one.
      if (owner !== PROGRAM)
        throw new Error(
          `a foreign tc filter (program ${owner ?? `id ${there}`}) holds handle ${TC_HANDLE} priority ${TC_PRIORITY}`,
        );
    }
    lib.attach(f, this.#obj.progFd);
    this.#hooked.set(name, ifindex);
    if (this.#stopped === false && there !== 0)
      this.#d.log.info({ device: name, staleProgram: there }, 'fast path: replaced a stale eBPF program');
    this.#d.log.debug({ device: name, ifindex, clsactCreated: created }, 'fast path: interface hooked');
  }

  /** Takes the program off every interface and closes the object (the maps go with it). Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#poller);
    for (const [name, ifindex] of this.#hooked) {
      try {
        this.#d.libbpf.detach(filterOn(ifindex));
      } catch (err) {
        this.#d.log.warn({ device: name, err: (err as Error).message }, 'fast path: cannot unhook interface');
      }
    }
    this.#hooked.clear();
    this.#obj.close();
    this.#d.log.info({ program: PROGRAM }, 'fast path: eBPF program removed');
  }
}

const filterOn = (ifindex: number): TcFilter => ({ ifindex, handle: TC_HANDLE, priority: TC_PRIORITY });
