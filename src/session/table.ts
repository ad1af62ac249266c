import type { ClientEndpoint, Session } from './session.ts';

/**
 * Client 5-tuple → endpoint (→ session), plus the ufrag-pair index used to recognise a NAT
 * rebinding. The 5-tuple lookup is two Map lookups keyed by the address string and the port
 * number that `dgram` already hands us, so the per-packet path builds no key string.
 *
 * Why not lru-cache here: at the cap a new flow must be refused, not a live call evicted (a flood of
 * first packets would otherwise push real sessions out). Idle expiry is a periodic sweep.
 */
export class SessionTable {
  readonly #byAddress = new Map<string, Map<number, ClientEndpoint>>();
  readonly #byUsername = new Map<string, Session>();
  readonly sessions = new Set<Session>();
  #endpointCount = 0;

  get size(): number {
    return this.sessions.size;
  }

  get endpointCount(): number {
    return this.#endpointCount;
  }

  lookup(address: string, port: number): ClientEndpoint | undefined {
    const ports = this.#byAddress.get(address);
    return ports === undefined ? undefined : ports.get(port);
  }

  addEndpoint(ep: ClientEndpoint): void {
    let ports = this.#byAddress.get(ep.address);
    if (ports === undefined) {
      ports = new Map();
      this.#byAddress.set(ep.address, ports);
    }
    if (!ports.has(ep.port)) this.#endpointCount++;
    ports.set(ep.port, ep);
    ep.joined = true;
  }

  removeEndpoint(ep: ClientEndpoint): void {
    const ports = this.#byAddress.get(ep.address);
    if (ports === undefined || ports.get(ep.port) !== ep) return;
    ports.delete(ep.port);
    this.#endpointCount--;
    if (ports.size === 0) this.#byAddress.delete(ep.address);
    ep.joined = false;
  }

  bySessionUsername(username: string): Session | undefined {
    return this.#byUsername.get(username);
  }

  /** Index an established session by its ufrag pair; the first one to establish keeps the slot. */
  indexUsername(session: Session): void {
    if (!this.#byUsername.has(session.username)) this.#byUsername.set(session.username, session);
  }

  unindexUsername(session: Session): void {
    if (this.#byUsername.get(session.username) === session) this.#byUsername.delete(session.username);
  }
}
