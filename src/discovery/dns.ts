import { promises as dnsPromises } from 'node:dns';
import type { Logger } from 'pino';
import type { BackendSpec } from '../defs/interfaces.ts';
import type { DiscoverySource, SnapshotListener } from './types.ts';

/**
 * Backends from the A/AAAA records of a headless Service (`clusterIP: None`): cluster DNS answers
 * with one record per ready pod. Needs no RBAC at all, and sees less than the EndpointSlice
 * source: no pod names (backends are named by address) and no terminating state, since a pod
 * leaves DNS as soon as it stops being ready. `vanishedGraceMs` softens that: an address that
 * drops out of DNS is reported as 'terminating' (keeps its sessions, still probed) for that long
 * before it is removed, which lets a draining JVB finish its conferences.
 */

/** The part of `dns.promises.Resolver` used here: the seam for tests. */
export interface DnsResolver {
  resolve4(hostname: string): Promise<string[]>;
  resolve6(hostname: string): Promise<string[]>;
}

export interface DnsDiscoveryOptions {
  /** e.g. `jvb.jitsi.svc.cluster.local` (a fully qualified name avoids search-list lookups). */
  name: string;
  port: number;
  /** Re-resolve period, ms. Default 5000. */
  intervalMs?: number;
  /** How long an address that left DNS stays as 'terminating', ms. Default 0 (removed at once). */
  vanishedGraceMs?: number;
  log: Logger;
  resolver?: DnsResolver;
  now?: () => number;
}

export interface DnsDiscoveryState {
  /** The last resolution got an answer (possibly empty) from DNS. */
  readonly connected: boolean;
  readonly lastSyncAt: number | undefined;
  /** Failed resolutions in a row. */
  readonly failures: number;
  /** Failed resolutions in total. */
  readonly errors: number;
}

/** "The name has no records of this type": an answer, not a failure. */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);

export class DnsDiscovery implements DiscoverySource {
  readonly kind = 'dns';
  readonly #name: string;
  readonly #port: number;
  readonly #intervalMs: number;
  readonly #graceMs: number;
  readonly #log: Logger;
  readonly #resolver: DnsResolver;
  readonly #now: () => number;
  #listener: SnapshotListener | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #running: Promise<void> | undefined;
  #lastEmitted: string | undefined;
  /** Addresses that left DNS → when they left. */
  readonly #vanished = new Map<string, number>();
  #current = new Set<string>();
  #connected = false;
  #lastSyncAt: number | undefined;
  #failures = 0;
  #errors = 0;

  constructor(o: DnsDiscoveryOptions) {
    this.#name = o.name;
    this.#port = o.port;
    this.#intervalMs = o.intervalMs ?? 5000;
    this.#graceMs = o.vanishedGraceMs ?? 0;
    this.#log = o.log;
    this.#resolver = o.resolver ?? new dnsPromises.Resolver({ timeout: 2000, tries: 2 });
    this.#now = o.now ?? Date.now;
  }

  get state(): DnsDiscoveryState {
    return {
      connected: this.#connected,
      lastSyncAt: this.#lastSyncAt,
      failures: this.#failures,
      errors: this.#errors,
    };
  }

  start(onSnapshot: SnapshotListener): void {
    if (this.#listener) throw new Error('DnsDiscovery already started');
    this.#listener = onSnapshot;
    this.#log.info(
      { name: this.#name, port: this.#port, intervalMs: this.#intervalMs },
      'resolving backends',
    );
    this.#tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** One resolution now, then the next after `intervalMs` (never two at once). */
  #tick(): void {
    this.#running = this.resolveOnce().finally(() => {
      this.#running = undefined;
      if (this.#stopped) return;
      this.#timer = setTimeout(() => this.#tick(), this.#intervalMs);
      this.#timer.unref();
    });
  }

  /** Resolves once and emits if the set changed. Exposed for tests. */
  async resolveOnce(): Promise<void> {
    const [v4, v6] = await Promise.allSettled([
      this.#resolver.resolve4(this.#name),
      this.#resolver.resolve6(this.#name),
    ]);
    if (this.#stopped) return;
    const addresses: string[] = [];
    const errors: string[] = [];
    for (const r of [v4, v6]) {
      if (r.status === 'fulfilled') addresses.push(...r.value);
      else if (!NO_RECORDS.has((r.reason as { code?: string }).code ?? '')) errors.push(describe(r.reason));
    }
    if (errors.length > 0) {
      // SERVFAIL, timeout, refused...: keep the last good set (docs/architecture.md, "Control plane").
      this.#failures++;
      this.#errors++;
      if (this.#connected || this.#failures === 1) {
        this.#log.warn({ name: this.#name, errors }, 'DNS resolution failed; keeping last backends');
      }
      this.#connected = false;
      return;
    }
    if (!this.#connected && this.#failures > 0)
      this.#log.info({ name: this.#name }, 'DNS resolution works again');
    this.#connected = true;
    this.#failures = 0;
    const now = this.#now();
    this.#lastSyncAt = now;
    const next = new Set(addresses);
    for (const a of this.#current) if (!next.has(a) && this.#graceMs > 0) this.#vanished.set(a, now);
    for (const a of next) this.#vanished.delete(a);
    for (const [a, since] of this.#vanished) if (now - since >= this.#graceMs) this.#vanished.delete(a);
    this.#current = next;
    const backends: BackendSpec[] = [
      ...[...next].map((address) => ({ name: address, address, port: this.#port, state: 'ready' as const })),
      ...[...this.#vanished.keys()].map((address) => ({
        name: address,
        address,
        port: this.#port,
        state: 'terminating' as const,
      })),
    ].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const key = JSON.stringify(backends);
    if (key === this.#lastEmitted) return;
    this.#lastEmitted = key;
    this.#listener?.(backends);
  }
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? e.message ?? String(err);
}
