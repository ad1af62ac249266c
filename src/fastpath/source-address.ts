import dgram from 'node:dgram';

/**
 * The source address the kernel picks for an upstream socket bound to a wildcard and connected to
 * a backend: the kernel path must rewrite to exactly that address, or the backend would see a new
 * remote address mid-session (ice4j #287: 403 for it). A connected UDP socket's getsockname()
 * gives the kernel's route-based choice without sending anything. One lookup per backend address.
 */
export class SourceAddresses {
  readonly #bind: string;
  readonly #known = new Map<string, string>();
  /** Backend address → when its lookup failed; asked again after {@link RETRY_MS}. */
  readonly #failed = new Map<string, number>();
  readonly #now: () => number;

  static readonly RETRY_MS = 10_000;

  /** `bind`: the upstream sockets' bind address (`--upstream-bind`). */
  constructor(bind: string, now: () => number = Date.now) {
    this.#bind = bind;
    this.#now = now;
  }

  /** The source address; undefined = not looked up yet; null = the lookup failed recently. */
  get(backendAddress: string): string | null | undefined {
    if (this.#bind !== '0.0.0.0') return this.#bind;
    const known = this.#known.get(backendAddress);
    if (known !== undefined) return known;
    const failedAt = this.#failed.get(backendAddress);
    if (failedAt === undefined) return undefined;
    if (this.#now() - failedAt < SourceAddresses.RETRY_MS) return null;
    this.#failed.delete(backendAddress);
    return undefined;
  }

  async resolve(backendAddress: string): Promise<string> {
    const known = this.get(backendAddress);
    if (typeof known === 'string') return known;
    const sock = dgram.createSocket('udp4');
    try {
      const source = await new Promise<string>((resolve, reject) => {
        sock.once('error', reject);
        // The port does not matter for the route; nothing is sent. dgram hands a failed connect
        // (no route, an address of the other family) to this callback, not to 'error'.
        sock.connect(9, backendAddress, (err?: Error) =>
          err ? reject(err) : resolve(sock.address().address),
        );
      });
      this.#known.set(backendAddress, source);
      return source;
    } catch (err) {
      this.#failed.set(backendAddress, this.#now());
      throw err;
    } finally {
      sock.close();
    }
  }
}
