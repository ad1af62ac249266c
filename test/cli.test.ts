import { type ChildProcess, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, exited, startCli } from './fixtures/cli-process.ts';
import { FakeIceClient } from './fixtures/ice-client.ts';
import { FakeMediaServer } from './fixtures/media-server.ts';
import { track } from './fixtures/track.ts';

/** The real CLI as a child process: flags, exit codes, admin HTTP, signals. */

function runSync(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
    timeout: 15_000,
  });
}

/** Starts the proxy and resolves with its listen and admin ports, read from its JSON start-up log. */
async function start(
  args: string[],
): Promise<{ child: ChildProcess; listen: number; admin: number; logs: string[] }> {
  const p = await startCli(args);
  return { ...p, listen: p.listen.port };
}

describe('ice-ingress CLI', () => {
  it('prints help and version', () => {
    const help = runSync(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--idle-timeout');
    expect(help.stdout).toContain('ICE_INGRESS_LISTEN');
    const version = runSync(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('refuses bad flags and environment values with exit code 2, naming each', () => {
    const r = runSync(['--listen', 'localhost', '--probe-timeout', 'soon'], {
      ICE_INGRESS_BACKENDS: 'a=1.2.3.4:0',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--listen');
    expect(r.stderr).toContain('--probe-timeout');
    expect(r.stderr).toContain('ICE_INGRESS_BACKENDS');
    expect(r.stdout).toBe('');
  });

  it('a --kubeconfig that is a directory, or not YAML, stops start-up with exit 2 and one line naming the flag and the file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ice-kubeconfig-'));
    try {
      const notYaml = path.join(dir, 'config');
      writeFileSync(notYaml, 'apiVersion: v1\nclusters: [\n  - name: "broken\n\t: {\n');
      for (const file of [dir, notYaml]) {
        const r = runSync([
          '--discovery',
          'k8s',
          '--service',
          'jvb',
          '--namespace',
          'jitsi',
          '--kubeconfig',
          file,
        ]);
        expect(r.status, r.stderr).toBe(2);
        const lines = r.stderr.trimEnd().split('\n');
        expect(lines, r.stderr).toHaveLength(1);
        expect(lines[0]).toContain(`--kubeconfig ${file}`);
        expect(lines[0]).toMatch(file === dir ? /is a directory/ : /not a kubeconfig file/);
        expect(r.stdout).toBe('');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 1 with a clear message when the listening port is taken', async () => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const port = sock.address().port;
    try {
      const r = runSync([
        '--listen',
        `127.0.0.1:${port}`,
        '--admin',
        'off',
        '--upstream-ports',
        '0',
        '--backends',
        'a=127.0.0.1:9',
      ]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/cannot start: .*EADDRINUSE/);
      expect(r.stderr).toContain(`--listen 127.0.0.1:${port}`);
    } finally {
      sock.close();
    }
  });

  it('--check-config parses flags and environment as start-up does, and binds nothing', async () => {
    // Both ports are taken: start-up would exit 1 (EADDRINUSE); the check does not bind them.
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    const tcp = createServer();
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
    const listen = `127.0.0.1:${udp.address().port}`;
    const admin = `127.0.0.1:${(tcp.address() as { port: number }).port}`;
    try {
      const ok = runSync(['--check-config', '--listen', listen, '--admin', admin, '--discovery=k8s'], {
        ICE_INGRESS_SERVICE: 'jvb',
        ICE_INGRESS_WORKERS: 'auto',
      });
      expect(ok.stderr).toBe('');
      expect(ok.stdout).toBe('ice-ingress: configuration OK\n');
      expect(ok.status).toBe(0);
      expect(runSync(['--listen', listen, '--admin', 'off', '--backends', 'a=127.0.0.1:9']).status).toBe(1);

      // A bad value: exactly what start-up prints, exit 2, whichever place the flag has.
      const startup = runSync(['--listen', listen, '--discovery=k8s'], { ICE_INGRESS_PROBE_ROUNDS: '0' });
      const check = runSync(['--listen', listen, '--discovery=k8s', '--check-config'], {
        ICE_INGRESS_PROBE_ROUNDS: '0',
      });
      expect(startup.status).toBe(2);
      expect(check.status).toBe(2);
      expect(check.stderr).toBe(startup.stderr);
      expect(check.stderr).toContain('ICE_INGRESS_PROBE_ROUNDS');
      expect(check.stderr).toContain('--service: required with --discovery k8s');
      expect(check.stdout).toBe('');
    } finally {
      udp.close();
      tcp.close();
    }
  });

  it('serves health, readiness and metrics, relays a session, and drains on SIGTERM', async () => {
    const server = await FakeMediaServer.start({ name: 'jvb-a' });
    track(server);
    const p = await start([
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
      '--upstream-ports',
      '0',
      '--backends',
      `jvb-a=${server.address}:${server.port}`,
      '--drain-timeout',
      '5s',
    ]);
    const base = `http://127.0.0.1:${p.admin}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);

    const client = await FakeIceClient.open();
    track(client);
    const creds = server.addSession();
    await client.check({ address: '127.0.0.1', port: p.listen }, creds);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^ice_ingress_sessions 1$/m);
    expect(metrics).toMatch(/^ice_ingress_routes_total\{outcome="probe_won"\} 1$/m);
    expect(metrics).toMatch(/^ice_ingress_packets_total\{direction="client_in",path="userspace"\} 1$/m);
    expect(metrics).toMatch(/^ice_ingress_drops_total\{reason="unknown_flow_rtp"\} 0$/m);
    expect(metrics).toMatch(/^ice_ingress_discovery_backends\{state="ready"\} 1$/m);
    expect(metrics).toMatch(/^ice_ingress_routing_seconds_count\{outcome="probe_won"\} 1$/m);
    expect(metrics).toContain('process_cpu_user_seconds_total');
    // No client address may appear in any label.
    expect(metrics).not.toContain(`${client.port}`);

    p.child.kill('SIGTERM');
    // The session is still open, so the drain keeps the process for its timeout; readiness is off.
    await new Promise((r) => setTimeout(r, 200));
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    p.child.kill('SIGTERM'); // a second signal ends the drain at once
    expect(await exited(p.child)).toBe(0);
    expect(p.logs.some((l) => l.includes('"session closed"') && l.includes('"reason":"shutdown"'))).toBe(
      true,
    );
  });
});
