// EbpfProgram (src/fastpath/ebpf/program.ts), the owner of the program and its maps, over a model
// of the kernel's tc hooks: which program sits at which (interface, handle, priority), which
// programs exist by id and name. It must only ever replace a program of ours, hook interfaces as
// they appear, and leave nothing of ours at stop. The namespace suite does the same with the real
// kernel.
import { describe, expect, it } from 'vitest';
import type { Libbpf, LoadedObject, TcFilter } from '../../src/fastpath/ebpf/libbpf.ts';
import { COUNTER_BYTES, COUNTS_MAP, FLOWS_MAP, PROGRAM } from '../../src/fastpath/ebpf/map-layout.ts';
import { EbpfProgram, TC_HANDLE, TC_PRIORITY } from '../../src/fastpath/ebpf/program.ts';
import { createLogger } from '../../src/log.ts';

class FakeKernel implements Libbpf {
  readonly version = '1.1';
  /** "ifindex/handle/priority" → program id. */
  readonly filters = new Map<string, number>();
  readonly programs = new Map<number, string>();
  readonly clsact = new Set<number>();
  readonly interfaces = new Map<string, number>();
  loads: Array<{ path: string; program: string; maxEntries: Map<string, number> }> = [];
  closed = 0;
  #nextId = 100;

  load(path: string, program: string, maxEntries: ReadonlyMap<string, number>): LoadedObject {
    this.loads.push({ path, program, maxEntries: new Map(maxEntries) });
    const id = this.#nextId++;
    this.programs.set(id, PROGRAM);
    return {
      progFd: id, // the model uses the id as the descriptor
      maps: new Map([
        [FLOWS_MAP, 11],
        [COUNTS_MAP, 12],
      ]),
      close: () => {
        this.closed++;
        // A program still attached somewhere lives on; otherwise it goes with its descriptor.
        if (![...this.filters.values()].includes(id)) this.programs.delete(id);
      },
    };
  }
  ensureClsact(ifindex: number): boolean {
    if (this.clsact.has(ifindex)) return false;
    this.clsact.add(ifindex);
    return true;
  }
  attach(f: TcFilter, progFd: number): void {
    this.filters.set(place(f), progFd);
  }
  query(f: TcFilter): number {
    return this.filters.get(place(f)) ?? 0;
  }
  detach(f: TcFilter): boolean {
    return this.filters.delete(place(f));
  }
  programName(id: number): string | undefined {
    return this.programs.get(id);
  }
  update(): number {
    return 0;
  }
  remove(): number {
    return 0;
  }
  lookup(): number {
    return 0;
  }
  mmap(): never {
    throw new Error('not in this model');
  }
  ifindex(name: string): number {
    return this.interfaces.get(name) ?? 0;
  }
  /** Programs on interfaces, as "ifindex:id". */
  attached(): string[] {
    return [...this.filters].map(([k, id]) => `${k.split('/')[0]}:${id}`).sort();
  }
}

const place = (f: TcFilter): string => `${f.ifindex}/${f.handle}/${f.priority}`;
const ours = (ifindex: number): TcFilter => ({ ifindex, handle: TC_HANDLE, priority: TC_PRIORITY });

function setup(devices: string[] = ['eth0', 'eth1']) {
  const k = new FakeKernel();
  k.interfaces.set('eth0', 2);
  k.interfaces.set('eth1', 3);
  const list = { devices };
  const load = () =>
    EbpfProgram.load(
      { objectPath: '/app/build/bpf/ice_ingress.bpf.o', maxSessions: 1000, owners: 2, linkPollMs: 60_000 },
      { libbpf: k, devices: () => list.devices, log: createLogger('silent') },
    );
  return { k, list, load };
}

describe('EbpfProgram', () => {
  it('loads the object with maps sized from --max-sessions and the owners, and hooks every interface', () => {
    const { k, load } = setup();
    const p = load();
    expect(k.loads).toHaveLength(1);
    expect(k.loads[0]!.program).toBe(PROGRAM);
    // Two entries per session, and room for moves.
    expect(k.loads[0]!.maxEntries.get(FLOWS_MAP)).toBe(2 * 1000 + 1024);
    // Two slots per session per owner, rounded up to whole pages of 64-byte counters.
    const counts = k.loads[0]!.maxEntries.get(COUNTS_MAP)!;
    expect(counts).toBeGreaterThanOrEqual(2 * 1000 * 2);
    expect((counts * COUNTER_BYTES) % 4096).toBe(0);
    expect(k.attached()).toEqual(['2:100', '3:100']);
    expect(p.devices).toEqual(['eth0', 'eth1']);
    // Each owner its own range of slots, one after the other.
    expect(p.handles(0).slots).toEqual({ first: 0, count: 2000 });
    expect(p.handles(1).slots).toEqual({ first: 2000, count: 2000 });
    expect(p.handles(1).countsBytes).toBe(counts * COUNTER_BYTES);
    p.stop();
  });

  it("replaces a crashed run's program at our place, never a foreign one", () => {
    const { k, load } = setup();
    k.programs.set(7, PROGRAM); // a SIGKILLed run's, still attached
    k.attach(ours(2), 7);
    k.programs.set(8, 'cilium_foo'); // someone else's, at exactly our place
    k.attach(ours(3), 8);
    const p = load();
    expect(k.query(ours(2))).toBe(100);
    expect(k.query(ours(3))).toBe(8);
    expect(p.devices).toEqual(['eth0']);
    p.stop();
    expect(k.query(ours(3))).toBe(8);
  });

  it('hooks interfaces that come up later, and one that came back with a new index; forgets one that went away', () => {
    const { k, list, load } = setup(['eth0']);
    const p = load();
    expect(p.devices).toEqual(['eth0']);
    list.devices = ['eth0', 'eth1'];
    p.hookNew();
    expect(p.devices).toEqual(['eth0', 'eth1']);
    expect(k.attached()).toEqual(['2:100', '3:100']);
    // eth1 is deleted and made again: a new index, and no filter on it.
    k.filters.delete(place(ours(3)));
    k.interfaces.set('eth1', 9);
    p.hookNew();
    expect(k.attached()).toEqual(['2:100', '9:100']);
    list.devices = ['eth1'];
    k.interfaces.delete('eth0');
    k.filters.delete(place(ours(2)));
    p.hookNew();
    expect(p.devices).toEqual(['eth1']);
    p.stop();
  });

  it('stop: every filter of ours taken off, the object closed (the program goes with it); idempotent; foreign filters stay', () => {
    const { k, load } = setup();
    k.programs.set(50, 'foreign');
    k.attach({ ifindex: 2, handle: 7, priority: 10 }, 50);
    const p = load();
    p.stop();
    p.stop();
    expect(k.attached()).toEqual(['2:50']);
    expect(k.closed).toBe(1);
    expect(k.programs.has(100)).toBe(false);
    // The clsact qdiscs stay (deleting one would delete every other filter on it).
    expect([...k.clsact].sort()).toEqual([2, 3]);
    p.hookNew(); // after stop: nothing
    expect(k.attached()).toEqual(['2:50']);
  });
});
