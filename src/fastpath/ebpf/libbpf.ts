import { createRequire } from 'node:module';
import { constants } from 'node:os';

/**
 * The eBPF kernel path's only door to the kernel: libbpf (Debian: libbpf1, `libbpf.so.1`) and
 * three libc calls, called through koffi (a C FFI for Node; no native code of ours to build).
 * Every call is synchronous and cheap (a map update is one bpf(2) system call, ≈ 6 µs from Node
 * with koffi), which is what lets a flow event change the kernel before the event returns
 * (docs/fast-path.md, "eBPF"). libbpf ≥ 1.0 returns a negative errno from every call used here.
 *
 * Loading koffi or libbpf can fail (no library: the preflight names it); nothing here is loaded
 * until {@link openLibbpf} is called, so `--fast-path off` and `nftables` never touch either.
 */

/** enum bpf_tc_attach_point (libbpf.h). */
const BPF_TC_INGRESS = 1;
/** BPF_ANY (linux/bpf.h): create or replace. */
const BPF_ANY = 0;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
/** bpf_prog_info.name (linux/bpf.h): after 64 bytes of fixed fields; BPF_OBJ_NAME_LEN = 16. */
const PROG_INFO_NAME_OFFSET = 64;
const PROG_INFO_LEN = PROG_INFO_NAME_OFFSET + 16;

/** A loaded object: its program's and maps' file descriptors (owned: closed by `close`). */
export interface LoadedObject {
  readonly progFd: number;
  /** Map name → fd. */
  readonly maps: ReadonlyMap<string, number>;
  close(): void;
}

/** Our filter on one interface's ingress: the hook, and its handle and priority. */
export interface TcFilter {
  readonly ifindex: number;
  readonly handle: number;
  readonly priority: number;
}

/** What the kernel path calls; {@link openLibbpf} binds it to the real libraries. */
export interface Libbpf {
  /** libbpf's version, e.g. "1.1". */
  readonly version: string;
  /**
   * Opens and loads a BPF object file, with `maxEntries` (map name → max_entries) set before the
   * load. Throws with the errno's text (and the verifier's log when it refused the program).
   */
  load(path: string, program: string, maxEntries: ReadonlyMap<string, number>): LoadedObject;
  /** Creates the interface's clsact qdisc. True if it made one, false if it was there. */
  ensureClsact(ifindex: number): boolean;
  /** Attaches `progFd` at the filter's place on the interface's ingress, replacing what was there. */
  attach(f: TcFilter, progFd: number): void;
  /** The program id at the filter's place, or 0 if there is none. */
  query(f: TcFilter): number;
  /** Removes the filter; false if it was not there. */
  detach(f: TcFilter): boolean;
  /** The name of a loaded program by id (as the kernel keeps it: 15 characters at most). */
  programName(id: number): string | undefined;
  /** Map updates: 0, or a negative errno. */
  update(mapFd: number, key: Uint8Array, value: Uint8Array): number;
  remove(mapFd: number, key: Uint8Array): number;
  lookup(mapFd: number, key: Uint8Array, value: Uint8Array): number;
  /** Maps the values of a BPF_F_MMAPABLE array (read and write; shared with the kernel). */
  mmap(mapFd: number, bytes: number): MappedRegion;
  ifindex(name: string): number;
}

export interface MappedRegion {
  readonly buffer: ArrayBuffer;
  unmap(): void;
}

/** `-errno` as text, e.g. "EPERM (Operation not permitted)". */
export function errnoText(rc: number): string {
  const n = -rc;
  const name = Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
  return name;
}

type Fn = (...args: unknown[]) => unknown;

let bound: Libbpf | undefined;

/**
 * Binds libbpf and libc through koffi, once per thread (koffi's type names are per thread).
 * Throws (with the loader's message) when either is missing.
 */
export function openLibbpf(): Libbpf {
  bound ??= bind();
  return bound;
}

function bind(): Libbpf {
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as typeof import('koffi');
  const bpf = koffi.load('libbpf.so.1');
  const libc = koffi.load('libc.so.6');
  const hook = koffi.struct('bpf_tc_hook', {
    sz: 'size_t',
    ifindex: 'int',
    attach_point: 'int',
    parent: 'uint32_t',
  });
  const opts = koffi.struct('bpf_tc_opts', {
    sz: 'size_t',
    prog_fd: 'int',
    flags: 'uint32_t',
    prog_id: 'uint32_t',
    handle: 'uint32_t',
    priority: 'uint32_t',
  });
  const f = (decl: string): Fn => bpf.func(decl) as Fn;
  const c = (decl: string): Fn => libc.func(decl) as Fn;
  const major = f('uint32_t libbpf_major_version()');
  const minor = f('uint32_t libbpf_minor_version()');
  const setPrint = f('void *libbpf_set_print(void *fn)');
  const openFile = f('void *bpf_object__open_file(const char *path, void *opts)');
  const objLoad = f('int bpf_object__load(void *obj)');
  const objClose = f('void bpf_object__close(void *obj)');
  const findMap = f('void *bpf_object__find_map_by_name(void *obj, const char *name)');
  const findProg = f('void *bpf_object__find_program_by_name(void *obj, const char *name)');
  const setMax = f('int bpf_map__set_max_entries(void *map, uint32_t n)');
  const mapFd = f('int bpf_map__fd(void *map)');
  const progFd = f('int bpf_program__fd(void *prog)');
  const setLogBuf = f('int bpf_program__set_log_buf(void *prog, void *buf, size_t size)');
  const setLogLevel = f('int bpf_program__set_log_level(void *prog, uint32_t level)');
  const hookCreate = f('int bpf_tc_hook_create(bpf_tc_hook *hook)');
  const tcAttach = f('int bpf_tc_attach(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)');
  const tcDetach = f('int bpf_tc_detach(bpf_tc_hook *hook, bpf_tc_opts *opts)');
  const tcQuery = f('int bpf_tc_query(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)');
  const progById = f('int bpf_prog_get_fd_by_id(uint32_t id)');
  const infoByFd = f('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)');
  const mapUpdate = f('int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)');
  const mapDelete = f('int bpf_map_delete_elem(int fd, void *key)');
  const mapLookup = f('int bpf_map_lookup_elem(int fd, void *key, void *value)');
  const close = c('int close(int fd)');
  const mmap = c('void *mmap(void *addr, size_t len, int prot, int flags, int fd, intptr_t off)');
  const munmap = c('int munmap(void *addr, size_t len)');
  const nameToIndex = c('uint32_t if_nametoindex(const char *name)');
  // libbpf prints its warnings to stderr by default; ours go through the returned errors.
  setPrint(null);

  const hookOf = (ifindex: number) => ({
    sz: koffi.sizeof(hook),
    ifindex,
    attach_point: BPF_TC_INGRESS,
    parent: 0,
  });
  const optsOf = (f: TcFilter, fd = 0) => ({
    sz: koffi.sizeof(opts),
    prog_fd: fd,
    flags: 0,
    prog_id: 0,
    handle: f.handle,
    priority: f.priority,
  });
  const check = (rc: unknown, what: string): number => {
    const n = Number(rc);
    if (n < 0) throw new Error(`${what}: ${errnoText(n)}`);
    return n;
  };
  const BPF_TC_F_REPLACE = 1;

  return {
    version: `${major()}.${minor()}`,
    load(path, program, maxEntries) {
      const obj = openFile(path, null);
      if (obj === null) throw new Error(`cannot open ${path}: ${errnoText(-koffi.errno())}`);
      let fds: LoadedObject | undefined;
      try {
        for (const [name, n] of maxEntries) {
          const m = findMap(obj, name);
          if (m === null) throw new Error(`${path}: no map ${name}`);
          check(setMax(m, n), `set max_entries of ${name}`);
        }
        const prog = findProg(obj, program);
        if (prog === null) throw new Error(`${path}: no program ${program}`);
        // The verifier's log, kept for a refusal only (level 0: filled when the load fails).
        const log = Buffer.alloc(64 * 1024);
        setLogBuf(prog, log, log.length);
        setLogLevel(prog, 0);
        const rc = Number(objLoad(obj));
        if (rc < 0) {
          const text = log.toString('utf8', 0, Math.max(0, log.indexOf(0))).trim();
          const tail = text.split('\n').slice(-3).join(' | ');
          throw new Error(
            `the kernel refused ${path}: ${errnoText(rc)}${tail ? ` (verifier: ${tail})` : ''}`,
          );
        }
        const maps = new Map<string, number>();
        for (const name of maxEntries.keys()) maps.set(name, Number(mapFd(findMap(obj, name))));
        let closed = false;
        fds = {
          progFd: Number(progFd(prog)),
          maps,
          close: () => {
            if (closed) return;
            closed = true;
            objClose(obj);
          },
        };
        return fds;
      } finally {
        if (fds === undefined) objClose(obj);
      }
    },
    ensureClsact(ifindex) {
      const rc = Number(hookCreate(hookOf(ifindex)));
      if (rc === -constants.errno.EEXIST) return false;
      check(rc, `clsact qdisc on interface ${ifindex}`);
      return true;
    },
    attach(f, fd) {
      const o = { ...optsOf(f, fd), flags: BPF_TC_F_REPLACE };
      check(tcAttach(hookOf(f.ifindex), o), `tc filter on interface ${f.ifindex}`);
    },
    query(f) {
      const o = optsOf(f);
      const rc = Number(tcQuery(hookOf(f.ifindex), o));
      if (rc === -constants.errno.ENOENT || rc === -constants.errno.EINVAL) return 0;
      check(rc, `tc filter query on interface ${f.ifindex}`);
      return o.prog_id;
    },
    detach(f) {
      const rc = Number(tcDetach(hookOf(f.ifindex), optsOf(f)));
      if (rc === -constants.errno.ENOENT || rc === -constants.errno.ENODEV) return false;
      check(rc, `tc filter removal on interface ${f.ifindex}`);
      return true;
    },
    programName(id) {
      const fd = Number(progById(id));
      if (fd < 0) return undefined;
      try {
        const info = Buffer.alloc(PROG_INFO_LEN);
        const len = [info.length];
        if (Number(infoByFd(fd, info, len)) < 0) return undefined;
        const name = info.subarray(PROG_INFO_NAME_OFFSET, PROG_INFO_LEN);
        return name.toString('latin1', 0, Math.max(0, name.indexOf(0)));
      } finally {
        close(fd);
      }
    },
    update: (fd, key, value) => Number(mapUpdate(fd, key, value, BPF_ANY)),
    remove: (fd, key) => Number(mapDelete(fd, key)),
    lookup: (fd, key, value) => Number(mapLookup(fd, key, value)),
    mmap(fd, bytes) {
      const p = mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p === null || koffi.address(p) === BigInt.asUintN(64, -1n))
        throw new Error(`mmap of map fd ${fd}: ${errnoText(-koffi.errno())}`);
      let mapped = true;
      return {
        buffer: koffi.view(p, bytes),
        unmap: () => {
          if (!mapped) return;
          mapped = false;
          munmap(p, bytes);
        },
      };
    },
    ifindex: (name) => Number(nameToIndex(name)),
  };
}
