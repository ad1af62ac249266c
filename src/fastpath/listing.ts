import { FAMILY, FLOWS, ownsChain, ownsCounter, TABLE } from './nft-script.ts';

/**
 * Reading our table's objects from `nft -j` listings (`tableObjects`, also behind
 * kernel-counters.ts), and what one worker owns in the shared table, read from three of them (JSON schema of
 * libnftables-json(5)): the verdict map (`list map netdev ice_ingress flows`), the family's
 * chains (`list chains netdev`, headers only, no rules) and the table's counters (`list counters
 * table netdev ice_ingress`). A worker's objects are the chains and counters named for it
 * (nft-script.ts, `chainNames`, `counterNames`) and the elements that jump to its chains. Pure:
 * text in, names out; malformed input yields nothing (the resynchronisation then deletes nothing
 * it cannot name).
 *
 * Only a worker's resynchronisation needs this (docs/fast-path.md, "Hand-over, batching"): its
 * plan's view of the kernel is in doubt after a failed transaction, so it asks the kernel.
 */

type Json = unknown;

function items(text: string): Json[] {
  try {
    const doc = JSON.parse(text) as { nftables?: Json[] } | null;
    return Array.isArray(doc?.nftables) ? doc.nftables : [];
  } catch {
    return [];
  }
}

/** A key from `nft -j` as text: a concatenation's parts joined by `sep`. */
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

/**
 * The named objects of one kind (`chain`, `counter`) of our table in a listing, with their
 * fields (a counter's `packets`, `bytes`). Malformed → none.
 */
export function tableObjects(
  text: string,
  kind: 'chain' | 'counter',
): Array<Record<string, Json> & { name: string }> {
  const out: Array<Record<string, Json> & { name: string }> = [];
  for (const item of items(text)) {
    const o = (item as Record<string, { family?: string; table?: string; name?: Json } | undefined> | null)?.[
      kind
    ];
    if (o === undefined || o.family !== FAMILY || o.table !== TABLE || typeof o.name !== 'string') continue;
    out.push(o as Record<string, Json> & { name: string });
  }
  return out;
}

/** Keys of the elements of `flows` whose verdict jumps to one of `worker`'s chains. */
export function ownedElements(mapText: string, worker: number): string[] {
  const out: string[] = [];
  for (const item of items(mapText)) {
    const map = (item as { map?: { family?: string; name?: string; table?: string; elem?: Json[] } })?.map;
    if (map === undefined || map.family !== FAMILY || map.table !== TABLE || map.name !== FLOWS) continue;
    if (!Array.isArray(map.elem)) continue;
    for (const pair of map.elem) {
      if (!Array.isArray(pair)) continue;
      const verdict = pair[1] as { goto?: { target?: string }; jump?: { target?: string } } | undefined;
      const target = verdict?.goto?.target ?? verdict?.jump?.target;
      if (typeof target !== 'string' || !ownsChain(target, worker)) continue;
      // A key with element options (`counter`, `timeout`) is wrapped: {"elem": {"val": KEY, …}}.
      const k: Json = pair[0];
      const val =
        k !== null && typeof k === 'object' && 'elem' in k ? (k as { elem: { val?: Json } }).elem.val : k;
      // As an element statement names the key: `ADDR . PORT . ADDR . PORT`.
      const key = keyText(val, ' . ');
      if (key !== undefined) out.push(key);
    }
  }
  return out;
}

/** Names of `worker`'s chains in our table. */
export function ownedChains(chainsText: string, worker: number): string[] {
  return tableObjects(chainsText, 'chain')
    .map((c) => c.name)
    .filter((n) => ownsChain(n, worker));
}

/** Names of `worker`'s named counters in our table. */
export function ownedCounters(countersText: string, worker: number): string[] {
  return tableObjects(countersText, 'counter')
    .map((c) => c.name)
    .filter((n) => ownsCounter(n, worker));
}
