/**
 * The Internet checksum arithmetic behind the kernel path's rewrites (docs/fast-path.md,
 * "Checksums: one checksummed write per pair of fields"). Pure functions; no packet is touched here.
 *
 * nftables updates the IPv4 header checksum and the UDP checksum for a payload write of a known
 * field (`ip saddr set …`, `udp sport set …`) by RFC 1624's incremental update, HC' = ~(~HC + ~m + m')
 * over the bytes written (the kernel's nft_payload_set_eval: the one's-complement sum of the old
 * bytes out, of the new bytes in). A raw write (`@nh,96,64 set …`) updates nothing. Each checksummed
 * write is the largest cost of a forwarded datagram, so two adjacent fields that both change (the
 * source and destination addresses; with a backend on another port, the two ports) are written by
 * one raw write and one checksummed write:
 *
 *   1. raw:         (first, second) := (first', X)   — no checksum changes;
 *   2. checksummed: second := second'                — the checksums move by second' − X.
 *
 * The checksums must move by (first' + second') − (first + second) in all, so X is chosen with
 * X ≡ first + second − first' (one's-complement, RFC 1071). The old values are constants too: the
 * verdict-map key the datagram matched fixes them. So both checksums end exactly as two checksummed
 * writes would leave them, whatever else the datagram holds; and because the update is the same
 * one-delta arithmetic, that holds for a UDP checksum the kernel still has to complete
 * (CHECKSUM_PARTIAL, the pseudo-header seed), where a port write changes nothing and an address
 * write moves the seed by the same delta.
 */

/** One's-complement sum of 16-bit words, folded to 16 bits (RFC 1071 §1). */
export function onesSum(words: readonly number[]): number {
  let s = 0;
  for (const w of words) s += w & 0xffff;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The two 16-bit words of a dotted IPv4 address (caller passes a valid one). */
export function ipv4Words(address: string): [number, number] {
  const [a = 0, b = 0, c = 0, d = 0] = address.split('.').map(Number);
  return [(a << 8) | b, (c << 8) | d];
}

/**
 * The carrier X (as 16-bit words, `words` long) written by the raw write in place of the second
 * field: one's-complement sum first + second − first'. Its first word holds the sum, the rest are
 * zero; any words with that sum would do.
 */
export function carrierWords(
  first: readonly number[],
  second: readonly number[],
  firstNew: readonly number[],
): number[] {
  const negated = firstNew.map((w) => ~w & 0xffff);
  const x = [onesSum([...first, ...second, ...negated])];
  while (x.length < second.length) x.push(0);
  return x;
}

/** Words as the hexadecimal digits of one raw value, most significant first. */
export function wordsHex(words: readonly number[]): string {
  return words.map((w) => w.toString(16).padStart(4, '0')).join('');
}
