import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeIceClient } from '../fixtures/ice-client.ts';
import { FakeMediaServer } from '../fixtures/media-server.ts';
import { track } from '../fixtures/track.ts';
import { parseMetrics } from './pool-harness.ts';

/** The real CLI with `--workers 2` as a child process: logs, metrics, SIGTERM, a worker's crash. */

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const CRASH = fileURLToPath(new URL('./fixtures/crash-in-worker.ts', import.meta.url));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

interface Run {
  child: ChildProcess;
  logs: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
  started: Promise<{ listen: number; admin: number }>;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Run {
  const child = spawn(process.execPath, [...nodeArgs, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, ...env },
  });
  children.push(child);
  const logs: Array<Record<string, unknown>> = [];
  let resolveStarted!: (v: { listen: number; admin: number }) => void;
  let rejectStarted!: (e: Error) => void;
  const started = new Promise<{ listen: number; admin: number }>((resolve, reject) => {
    resolveStarted = resolve;
    rejectStarted = reject;
  });
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const rec = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      logs.push(rec);
      if (rec.msg === 'ice-ingress started') {
        resolveStarted({
          listen: (rec.listen as { port: number }).port,
          admin: Number(String(rec.admin).split(':').at(-1)),
        });
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => logs.push({ stderr: d.toString() }));
  const exited = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      rejectStarted(new Error(`exited ${code} before starting: ${JSON.stringify(logs)}`));
      r(code);
    }),
  );
  return { child, logs, exited, started };
}

const base = ['--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream-ports', '0', '--workers', '2'];

describe('ice-ingress --workers 2', () => {
  it('starts two workers that log their id, serves one /metrics for the pod, and exits 0 on SIGTERM', async () => {
    const server = track(await FakeMediaServer.start({ name: 'jvb-a' }));
    const p = run([...base, '--backends', `jvb-a=${server.address}:${server.port}`, '--drain-timeout', '2s']);
    const { listen, admin } = await p.started;
    expect(p.logs.filter((l) => l.msg === 'worker started').map((l) => l.worker)).toEqual(
      expect.arrayContaining([0, 1]),
    );
    const c = track(await FakeIceClient.open());
    await c.check({ address: '127.0.0.1', port: listen }, server.addSession());
    let m = parseMetrics(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text());
    const deadline = performance.now() + 2000;
    while (m('ice_ingress_sessions') !== 1 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      m = parseMetrics(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text());
    }
    expect(m('ice_ingress_sessions')).toBe(1);
    expect(m('ice_ingress_workers')).toBe(2);
    expect(m('ice_ingress_packets_total', { direction: 'client_in' })).toBe(1);
    const perWorker = [0, 1].map((w) => m('ice_ingress_worker_sessions', { worker: String(w) }));
    expect(perWorker.sort()).toEqual([0, 1]);
    expect(m('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    const opened = p.logs.find((l) => l.msg === 'session opened');
    expect(opened?.worker === 0 || opened?.worker === 1).toBe(true);

    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.logs.some((l) => l.msg === 'session closed' && l.reason === 'shutdown')).toBe(true);
  });

  it("reports a worker's crash and exits non-zero instead of running with a hole", async () => {
    const server = track(await FakeMediaServer.start({ name: 'jvb-a' }));
    const p = run(
      [...base, '--backends', `jvb-a=${server.address}:${server.port}`],
      { ICE_INGRESS_TEST_CRASH_WORKER: '1', ICE_INGRESS_TEST_CRASH_AFTER_MS: '200' },
      ['--import', CRASH],
    );
    await p.started;
    expect(await p.exited).toBe(1);
    const crash = p.logs.find((l) => l.msg === 'worker crashed; the pod must restart');
    expect(crash).toMatchObject({ level: 50, worker: 1, err: 'injected crash in a data-path worker' });
  });
});
