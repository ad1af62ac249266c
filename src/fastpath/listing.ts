import { keyText } from './kernel-counters.ts';
import { FAMILY, FLOWS, ownsChain, ownsCounter, TABLE } from './nft-script.ts';

/**
 * What one worker owns in the shared table, read from three `nft -j` listings (JSON schema of
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
  const out: string[] = [];
  for (const item of items(chainsText)) {
    const c = (item as { chain?: { family?: string; table?: string; name?: string } })?.chain;
    if (c === undefined || c.family !== FAMILY || c.table !== TABLE || typeof c.name !== 'string') continue;
    if (ownsChain(c.name, worker)) out.push(c.name);
  }
  return out;
}

/** Names of `worker`'s named counters in our table. */
export function ownedCounters(countersText: string, worker: number): string[] {
  const out: string[] = [];
  for (const item of items(countersText)) {
    const c = (item as { counter?: { family?: string; table?: string; name?: string } })?.counter;
    if (c === undefined || c.family !== FAMILY || c.table !== TABLE || typeof c.name !== 'string') continue;
    if (ownsCounter(c.name, worker)) out.push(c.name);
  }
  return out;
}
