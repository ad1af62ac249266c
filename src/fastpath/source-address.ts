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

  /** `bind`: the upstream sockets' bind address (`--upstream-bind`). */
  constructor(bind: string) {
    this.#bind = bind;
  }

  get(backendAddress: string): string | undefined {
    if (this.#bind !== '0.0.0.0') return this.#bind;
    return this.#known.get(backendAddress);
  }

  async resolve(backendAddress: string): Promise<string> {
    const known = this.get(backendAddress);
    if (known !== undefined) return known;
    const sock = dgram.createSocket('udp4');
    try {
      const source = await new Promise<string>((resolve, reject) => {
        sock.once('error', reject);
        // The port does not matter for the route; nothing is sent.
        sock.connect(9, backendAddress, () => resolve(sock.address().address));
      });
      this.#known.set(backendAddress, source);
      return source;
    } finally {
      sock.close();
    }
  }
}
