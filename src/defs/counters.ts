import { CLOSE_REASONS, DROP_REASON_LABELS, ROUTE_LABELS } from './reasons.ts';

/**
 * Plain numeric counters that the data path bumps per packet (a field increment, no label hashing);
 * the admin layer turns them into Prometheus metrics only when scraped. Every label set is fixed
 * in reasons.ts.
 */
export class Counters {
  packetsFromClients = 0;
  bytesFromClients = 0;
  packetsToBackends = 0;
  bytesToBackends = 0;
  packetsFromBackends = 0;
  bytesFromBackends = 0;
  packetsToClients = 0;
  bytesToClients = 0;
  /** Probe datagrams sent, fan-out and directed (each is also counted in packetsToBackends). */
  probesSent = 0;
  directedProbesSent = 0;
  sessionsOpened = 0;
  readonly drops = new Float64Array(DROP_REASON_LABELS.length);
  readonly routes = new Float64Array(ROUTE_LABELS.length);
  readonly closed = new Float64Array(CLOSE_REASONS.length);
}
