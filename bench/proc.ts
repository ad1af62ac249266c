/**
 * What the benchmarks read of the host, free of side effects (bench/harness.ts adds exit handlers;
 * the tier suite in test/tier-ns uses these without them): /proc figures of a process and of the
 * machine, and the C flooder compiled on demand. Linux only.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Compiles bench/flooder.c into .bench/ (as bench/run.ts does for udpbench.c); returns its path. */
export function compileFlooder(): string {
  const binary = `${root}.bench/flooder`;
  mkdirSync(`${root}.bench`, { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-o', binary, `${root}bench/flooder.c`], { stdio: 'inherit' });
  return binary;
}

export function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? Number.NaN : Number(m[1]) / 1024;
  } catch {
    return Number.NaN;
  }
}

/** utime + stime of the process in seconds (/proc/PID/stat fields 14, 15; 100 ticks/s on Linux). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Busy and total CPU seconds of the whole machine so far (/proc/stat, all cores; idle + iowait = not busy). */
export function machineCpu(): { busy: number; total: number; cores: number } {
  const lines = readFileSync('/proc/stat', 'utf8').split('\n');
  const f = lines[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3]! + f[4]!;
  const cores = lines.filter((l) => /^cpu\d+ /.test(l)).length;
  return { busy: (total - idle) / 100, total: total / 100, cores };
}

/** Open file descriptors of the process that are sockets (UDP, TCP, unix). */
export function socketFds(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

/** Udp RcvbufErrors from /proc/net/snmp: datagrams the kernel dropped for a full socket buffer. */
export function udpRcvbufErrors(): number {
  const lines = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) return Number.NaN;
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('RcvbufErrors')]);
}
