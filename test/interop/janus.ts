// Janus (Debian package) as a second real server stack: a minimal config folder with only the
// HTTP transport (on 127.0.0.1 inside the pod namespace) and the echotest plugin, libnice pinned
// to one UDP port (one session per Janus, as the issue allows for stacks without a UDP mux).

import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PodName, Topology } from './netns.ts';

export const JANUS = '/usr/bin/janus';
export const JANUS_HTTP_PORT = 8088;

function libDir(): string {
  for (const d of ['/usr/lib/x86_64-linux-gnu/janus', '/usr/lib/aarch64-linux-gnu/janus', '/usr/lib/janus']) {
    if (existsSync(join(d, 'plugins', 'libjanus_echotest.so'))) return d;
  }
  throw new Error('Janus plugins not found (apt-get install janus; see test/interop/prereqs.sh)');
}

/** Everything in `dir/sub` except `keep`, as Janus's comma-separated `disable` list. */
function disableAllBut(dir: string, sub: string, keep: string[]): string {
  let names: string[] = [];
  try {
    names = readdirSync(join(dir, sub)).filter((f) => f.endsWith('.so'));
  } catch {
    // folder missing: nothing to disable
  }
  return names.filter((f) => !keep.includes(f)).join(',');
}

export function writeJanusConfig(folder: string, iface: string, port: number): void {
  const lib = libDir();
  mkdirSync(folder, { recursive: true });
  writeFileSync(
    join(folder, 'janus.jcfg'),
    `general: {
  configs_folder = "${folder}"
  plugins_folder = "${lib}/plugins"
  transports_folder = "${lib}/transports"
  events_folder = "${lib}/events"
  loggers_folder = "${lib}/loggers"
  debug_level = 4
  session_timeout = 0
}
certificates: {
}
media: {
  rtp_port_range = "${port}-${port}"
}
nat: {
  ice_enforce_list = "${iface}"
}
plugins: {
  disable = "${disableAllBut(lib, 'plugins', ['libjanus_echotest.so'])}"
}
transports: {
  disable = "${disableAllBut(lib, 'transports', ['libjanus_http.so'])}"
}
loggers: {
  disable = "${disableAllBut(lib, 'loggers', [])}"
}
events: {
  broadcast = false
  disable = "${disableAllBut(lib, 'events', [])}"
}
`,
  );
  writeFileSync(
    join(folder, 'janus.transport.http.jcfg'),
    `general: {
  json = "plain"
  base_path = "/janus"
  http = true
  port = ${JANUS_HTTP_PORT}
  ip = "127.0.0.1"
  https = false
}
admin: {
  admin_http = false
  admin_https = false
}
`,
  );
  writeFileSync(join(folder, 'janus.plugin.echotest.jcfg'), 'general: {\n}\n');
}

/** Starts Janus inside `role`'s namespace, listening for media on `ip:port` only. */
export function startJanus(topo: Topology, role: PodName, ip: string, port: number): ChildProcess {
  const folder = join(topo.logDir, `janus-conf-${role}`);
  writeJanusConfig(folder, 'eth0', port);
  return topo.spawn(
    role,
    JANUS,
    ['-F', folder, '-C', join(folder, 'janus.jcfg'), '-i', ip, '-r', `${port}-${port}`, '-o', '-s', '0'],
    { label: `janus-server-${role}`, stdoutToLog: true },
  );
}
