import { isIP } from 'node:net';
import type { BackendSpec } from '../defs/interfaces.ts';
import type { DiscoverySource, SnapshotListener } from './types.ts';

export interface ParsedBackends {
  readonly backends: BackendSpec[];
  /** Every problem found, one message each; empty when the list is usable. */
  readonly errors: string[];
}

/** Pod names and the like: letters, digits, '-' and '.', starting with a letter or digit. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9.-]*$/;

/**
 * Parses `NAME=HOST:PORT[,NAME=HOST:PORT...]` (the `--backends` flag). HOST is an IP literal;
 * IPv6 goes in brackets (`jvb-1=[fd00::5]:10000`, as in a URL authority, RFC 3986 §3.2.2).
 * The whole list is checked and every problem reported together, so that one run of the CLI shows
 * them all; nothing is thrown.
 */
export function parseBackends(text: string): ParsedBackends {
  const backends: BackendSpec[] = [];
  const errors: string[] = [];
  const names = new Set<string>();
  const endpoints = new Map<string, string>();
  const entries = text.split(',').map((e) => e.trim());
  if (entries.length === 1 && entries[0] === '') {
    return { backends, errors: ['no backends given (expected NAME=HOST:PORT[,...])'] };
  }
  entries.forEach((entry, i) => {
    const where = `backend #${i + 1}`;
    if (entry === '') {
      errors.push(`${where}: empty entry`);
      return;
    }
    const eq = entry.indexOf('=');
    if (eq < 0) {
      errors.push(`${where} "${entry}": expected NAME=HOST:PORT`);
      return;
    }
    const name = entry.slice(0, eq);
    const hostPort = entry.slice(eq + 1);
    let ok = true;
    if (!NAME_RE.test(name)) {
      errors.push(`${where} "${entry}": invalid name "${name}" (letters, digits, '-' and '.' only)`);
      ok = false;
    }
    const hp = splitHostPort(hostPort);
    if (typeof hp === 'string') {
      errors.push(`${where} "${entry}": ${hp}`);
      return;
    }
    if (!ok) return;
    if (names.has(name)) {
      errors.push(`${where} "${entry}": duplicate name "${name}"`);
      return;
    }
    const key = `${hp.address}|${hp.port}`;
    const other = endpoints.get(key);
    if (other !== undefined) {
      errors.push(`${where} "${entry}": same address and port as "${other}"`);
      return;
    }
    names.add(name);
    endpoints.set(key, name);
    backends.push({ name, address: hp.address, port: hp.port, state: 'ready' });
  });
  return { backends, errors };
}

/** `1.2.3.4:10000` or `[::1]:10000` → parts, or an error message. */
export function splitHostPort(text: string): { address: string; port: number } | string {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return `expected [IPV6]:PORT, got "${text}"`;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (isIP(host) !== 6) return `"${host}" is not an IPv6 address`;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return `missing :PORT in "${text}"`;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return `IPv6 address must be in brackets: "[${host}]:${portText}"`;
    if (isIP(host) !== 4) return `"${host}" is not an IP address (host names are not resolved)`;
  }
  const port = parsePort(portText);
  if (port === undefined) return `invalid port "${portText}" (1-65535)`;
  return { address: host, port };
}

export function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** A fixed list (dev, tests, a single host). Emits its one snapshot on a microtask after start(). */
export class StaticDiscovery implements DiscoverySource {
  readonly kind = 'static';
  readonly #backends: readonly BackendSpec[];
  #stopped = false;
  #started = false;

  constructor(backends: readonly BackendSpec[]) {
    this.#backends = Object.freeze(backends.map((b) => Object.freeze({ ...b })));
  }

  start(onSnapshot: SnapshotListener): void {
    if (this.#started) throw new Error('StaticDiscovery already started');
    this.#started = true;
    // Asynchronous like the other sources, so callers see one behaviour (no re-entrancy in start()).
    queueMicrotask(() => {
      if (!this.#stopped) onSnapshot(this.#backends);
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
  }
}
