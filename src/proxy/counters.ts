/**
 * Plain numeric counters that the data path bumps per packet (a field increment, no label hashing);
 * the admin layer turns them into Prometheus metrics only when scraped. Every label set is fixed
 * here, so no client address can ever become a label.
 */

/** Why a datagram was dropped. Fixed set; each is one value of the `reason` label. */
export const DropReason = {
  /** First datagram of an unknown flow was not STUN; by RFC 7983 class. */
  UnknownFlowDtls: 0,
  UnknownFlowRtp: 1,
  UnknownFlowOther: 2,
  /** STUN-looking first datagram that fails the checks in stun/parse.ts. */
  StunTruncated: 3,
  StunMalformed: 4,
  StunBadAttribute: 5,
  NotBindingRequest: 6,
  NoUsername: 7,
  BadUsername: 8,
  NoIntegrity: 9,
  BadFingerprint: 10,
  /** Server ufrag in the negative cache: no backend claimed it recently. */
  UnknownUfrag: 11,
  NoBackends: 12,
  ProbeBudget: 13,
  SourceLimit: 14,
  SessionLimit: 15,
  PortsExhausted: 16,
  Draining: 17,
  /** Non-STUN from a client whose flow is still being routed. */
  ProbingNotStun: 18,
  /** Probe round limit reached for a flow still being routed. */
  ProbeRounds: 19,
  /** Upstream datagram from an address that is not the session's backend or candidate. */
  UpstreamUnexpectedSource: 20,
  /** Reply to a probe that matched no outstanding request, or came after the owner was found. */
  ProbeStale: 21,
  /** Upstream datagram for a session that is gone or not established. */
  UpstreamNoSession: 22,
  /** A candidate answered a probe with an error response: "not mine" (libwebrtc sends 401). */
  ProbeNotMine: 23,
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

export const DROP_REASON_LABELS: readonly string[] = [
  'unknown_flow_dtls',
  'unknown_flow_rtp',
  'unknown_flow_other',
  'stun_truncated',
  'stun_malformed',
  'stun_bad_attribute',
  'not_binding_request',
  'no_username',
  'bad_username',
  'no_integrity',
  'bad_fingerprint',
  'unknown_ufrag',
  'no_backends',
  'probe_budget',
  'source_limit',
  'session_limit',
  'ports_exhausted',
  'draining',
  'probing_not_stun',
  'probe_rounds',
  'upstream_unexpected_source',
  'probe_stale',
  'upstream_no_session',
  'probe_not_mine',
];

/** How a new client flow was routed (the `outcome` label). */
export const RouteCounter = {
  /** Joined a live session with the same ufrag pair (NAT rebinding / another candidate). */
  Rebind: 0,
  /** Owner found by prefix token, confirmed by its success. */
  Prefix: 1,
  /** Owner found in the learned-ufrag cache, confirmed by its success. */
  Learned: 2,
  /** Owner found by fan-out probing. */
  ProbeWon: 3,
  /** No backend claimed the ufrag in time, or all said "not mine". */
  ProbeFailed: 4,
  /** An ICE restart on a known 5-tuple moved it to a new session. */
  Restart: 5,
  /** A rebinding attempt that the backend refused (error response): nothing moved. */
  RebindRefused: 6,
} as const;
export const ROUTE_LABELS: readonly string[] = [
  'rebind',
  'prefix',
  'learned',
  'probe_won',
  'probe_failed',
  'restart',
  'rebind_refused',
];

/** Why a session ended (the `reason` label of sessions closed). */
export const CLOSE_REASONS = [
  'idle',
  'probe_failed',
  'backend_gone',
  'restart',
  'shutdown',
  'upstream_error',
] as const;
export type CloseReason = (typeof CLOSE_REASONS)[number];

export class Counters {
  packetsFromClients = 0;
  bytesFromClients = 0;
  packetsToBackends = 0;
  bytesToBackends = 0;
  packetsFromBackends = 0;
  bytesFromBackends = 0;
  packetsToClients = 0;
  bytesToClients = 0;
  probesSent = 0;
  sessionsOpened = 0;
  readonly drops = new Float64Array(DROP_REASON_LABELS.length);
  readonly routes = new Float64Array(ROUTE_LABELS.length);
  readonly closed = new Float64Array(CLOSE_REASONS.length);
}
