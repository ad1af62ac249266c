import { LRUCache } from 'lru-cache';

/**
 * Learned server ufrag → backend name, filled when a probe is won (DESIGN.md, "Data path" 3c).
 * Lets the other candidates of the same ICE agent (host, srflx, relay; more users on one NAT) go
 * straight to the owner. Bounded by count; a stale entry costs one fall-back probe, never a wrong
 * route, because a learned route is only a first guess confirmed by the backend's success.
 */
export function createLearnedUfrags(max: number): LRUCache<string, string> {
  return new LRUCache<string, string>({ max });
}

/**
 * Server ufrags that no backend claimed recently (DESIGN.md, "Data path" 3d: the negative cache).
 * A client keeps retransmitting checks for tens of seconds; without this, each one would cost a
 * fan-out to every backend. Cleared whenever the backend set changes (a new pod may own them).
 */
export function createNegativeUfrags(max: number, ttlMs: number): LRUCache<string, true> {
  return new LRUCache<string, true>({ max, ttl: ttlMs, ttlAutopurge: false });
}
