/**
 * dgram resolves the destination of every unconnected send through `dns.lookup`, which for an IP
 * literal still costs a closure and a `process.nextTick` per datagram. Every address the data path
 * sends to is already an IP literal (a client's `rinfo.address`, a backend from discovery), so the
 * answer is the input, given synchronously.
 */
export function ipLiteralLookup(
  address: string,
  _options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  callback(null, address, address.includes(':') ? 6 : 4);
}
