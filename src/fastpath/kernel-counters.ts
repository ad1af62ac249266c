import { FAMILY, TABLE } from './nft-script.ts';

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

type Json = unknown;

/** A key from `nft -j` as text: a concatenation's parts joined by `sep` (listing.ts: ` . `). */
export function keyText(v: Json, sep = '|'): string | undefined {
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  if (v !== null && typeof v === 'object' && 'concat' in v) {
    const parts = (v as { concat: Json[] }).concat;
    if (!Array.isArray(parts)) return undefined;
    const texts = parts.map((p) => keyText(p, sep));
    return texts.includes(undefined) ? undefined : texts.join(sep);
  }
  return undefined;
}

/** Every named counter of our table in `text`, by name. Malformed → empty. */
export function parseCounters(text: string): Map<string, CounterValue> {
  const out = new Map<string, CounterValue>();
  let doc: Json;
  try {
    doc = JSON.parse(text);
  } catch {
    return out;
  }
  const items = (doc as { nftables?: Json[] } | null)?.nftables;
  if (!Array.isArray(items)) return out;
  for (const item of items) {
    const c = (
      item as { counter?: { family?: string; table?: string; name?: string } & Partial<CounterValue> }
    )?.counter;
    if (c === undefined || c.family !== FAMILY || c.table !== TABLE || typeof c.name !== 'string') continue;
    if (typeof c.packets !== 'number' || typeof c.bytes !== 'number') continue;
    out.set(c.name, { packets: c.packets, bytes: c.bytes });
  }
  return out;
}
