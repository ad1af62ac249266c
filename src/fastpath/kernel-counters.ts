import { tableObjects } from './listing.ts';

/**
 * Reads the fast path's named counters from `nft -j list counters table netdev ice_ingress`
 * (JSON schema of libnftables-json(5), as nftables 1.0.6 prints it:
 * `{"nftables":[{"metainfo":…},{"counter":{"family":"netdev","name":"cu1","table":"ice_ingress",
 * "handle":4,"packets":0,"bytes":0}},…]}`). Pure: the text in, a map from counter name to counts
 * out (docs/fast-path.md, "Counters").
 */

export interface CounterValue {
  packets: number;
  bytes: number;
}

/** Every named counter of our table in `text`, by name. Malformed → empty. */
export function parseCounters(text: string): Map<string, CounterValue> {
  const out = new Map<string, CounterValue>();
  for (const c of tableObjects(text, 'counter')) {
    if (typeof c.packets !== 'number' || typeof c.bytes !== 'number') continue;
    out.set(c.name, { packets: c.packets, bytes: c.bytes });
  }
  return out;
}
