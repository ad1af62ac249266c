/**
 * Reads the per-element counters of the fast path's maps from `nft -j list map …` output (JSON
 * schema of libnftables-json(5): `{"nftables":[…,{"map":{…,"elem":[[{"elem":{"val":…,"counter":…}},
 * data],…]}}]}`). Pure: the text in, a map from element key to counts out.
 *
 * Keys are the key's parts joined by `|` ("10.0.0.1|5000", "10.0.0.2|10000|16384"), the same form
 * as `upKey` / `downKey` in nft-script.ts.
 */

export interface ElementCount {
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

/** Every counted element of every map in `text`, keyed by `<map name>:<key>`. Malformed → empty. */
export function parseElementCounters(text: string): Map<string, ElementCount> {
  const out = new Map<string, ElementCount>();
  let doc: Json;
  try {
    doc = JSON.parse(text);
  } catch {
    return out;
  }
  const items = (doc as { nftables?: Json[] })?.nftables;
  if (!Array.isArray(items)) return out;
  for (const item of items) {
    const map = (item as { map?: { name?: string; elem?: Json[] } })?.map;
    if (map === undefined || typeof map.name !== 'string' || !Array.isArray(map.elem)) continue;
    for (const pair of map.elem) {
      // A map element is [key, data]; the key carries the counter when the map has `counter`.
      const k = Array.isArray(pair) ? pair[0] : pair;
      const elem = (k as { elem?: { val?: Json; counter?: ElementCount } })?.elem;
      if (elem === undefined || elem.counter === undefined) continue;
      const key = keyText(elem.val);
      if (key === undefined) continue;
      out.set(`${map.name}:${key}`, { packets: elem.counter.packets, bytes: elem.counter.bytes });
    }
  }
  return out;
}
