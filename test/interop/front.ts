// What sits on the public port in the proxy namespace: the real ice-ingress (src/cli.ts) or the
// source-IP-affinity control relay (affinity-relay.ts). Same flags for both.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Agent, NODE, ROOT } from './agent.ts';
import type { Topology } from './netns.ts';

/** The proxy under test: the source tree by default; INTEROP_PROXY_CLI=dist/src/cli.js tests the build. */
export const PROXY_CLI = resolve(ROOT, process.env['INTEROP_PROXY_CLI'] ?? 'src/cli.ts');
export const ADMIN = '127.0.0.1:9090';

export interface Front {
  readonly kind: 'proxy' | 'affinity';
  /** Control relay only: its JSON events (`assign`). */
  readonly agent?: Agent;
  /** False once the process exited (a crash: nothing stops it but `stop()`). */
  alive(): boolean;
  /** Where its output goes. */
  readonly log: string;
  stop(): void;
}

/** GET http://ADMIN/path from inside the proxy namespace (the admin port lives there). */
export async function adminGet(topo: Topology, path: string): Promise<{ status: number; body: string }> {
  const script = `fetch('http://${ADMIN}${path}',{signal:AbortSignal.timeout(2000)}).then(async r=>{process.stdout.write(r.status+'\\n'+await r.text())},e=>{process.stdout.write('0\\n'+String(e))})`;
  const out = await topo.exec('prx', NODE, ['-e', script], 5000);
  const nl = out.indexOf('\n');
  return { status: Number(out.slice(0, nl)), body: out.slice(nl + 1) };
}

export async function startProxy(
  topo: Topology,
  listen: string,
  backends: string,
  label = 'proxy',
): Promise<Front> {
  if (!existsSync(PROXY_CLI)) throw new Error(`proxy entry point ${PROXY_CLI} does not exist`);
  const child: ChildProcess = topo.spawn(
    'prx',
    NODE,
    [PROXY_CLI, '--listen', listen, '--backends', backends, '--admin', ADMIN],
    { label, stdoutToLog: true, cwd: ROOT },
  );
  let exited = '';
  child.on('exit', (code, sig) => {
    exited = `code=${code} signal=${sig}`;
  });
  const end = Date.now() + 15_000;
  for (let i = 0; i < 100; i++) {
    if (exited) throw new Error(`proxy exited (${exited}) before ready; log: ${topo.logPath(label)}`);
    const r = await adminGet(topo, '/readyz');
    if (r.status === 200) {
      return { kind: 'proxy', alive: () => !exited, log: topo.logPath(label), stop: () => topo.kill(child) };
    }
    if (Date.now() > end) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  topo.kill(child);
  throw new Error(`proxy /readyz not 200 within 15 s; log: ${topo.logPath(label)}`);
}

export async function startAffinityRelay(topo: Topology, listen: string, backends: string): Promise<Front> {
  const agent = new Agent(topo, 'prx', 'affinity-relay', 'affinity-relay.ts', [
    '--listen',
    listen,
    '--backends',
    backends,
  ]);
  await agent.ready();
  return {
    kind: 'affinity',
    agent,
    alive: () => agent.child.exitCode === null && agent.child.signalCode === null,
    log: topo.logPath(agent.label),
    stop: () => agent.kill(),
  };
}
