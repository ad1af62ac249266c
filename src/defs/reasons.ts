/**
 * Every reason the data path counts: why a datagram was dropped, how a new flow was routed, why a
 * session ended. Each is a fixed label set, so no client address can ever become a label.
 *
 * Each enum and its label list derive from one table, so a reason cannot exist without its label
 * (an increment of a missing index would silently do nothing).
 */

/** `{ Name: 'label', … }` → `{ Name: 0, … }` in table order, plus the label list in the same order. */
function indexed<const T extends Record<string, string>>(
  table: T,
): { readonly index: { readonly [K in keyof T]: number }; readonly labels: readonly T[keyof T][] } {
  const index: Record<string, number> = {};
  for (const [i, k] of Object.keys(table).entries()) index[k] = i;
  return {
    index: Object.freeze(index) as { readonly [K in keyof T]: number },
    labels: Object.freeze(Object.values(table)) as readonly T[keyof T][],
  };
}

/** Why a datagram was dropped: one value of the `reason` label each (docs/architecture.md). */
const DROPS = indexed({
  /** First datagram of an unknown flow was not STUN; by RFC 7983 class. */
  UnknownFlowDtls: 'unknown_flow_dtls',
  UnknownFlowRtp: 'unknown_flow_rtp',
  UnknownFlowOther: 'unknown_flow_other',
  /** STUN-looking first datagram that fails the checks in stun/parse.ts. */
  StunTruncated: 'stun_truncated',
  StunMalformed: 'stun_malformed',
  StunBadAttribute: 'stun_bad_attribute',
  NotBindingRequest: 'not_binding_request',
  NoUsername: 'no_username',
  BadUsername: 'bad_username',
  NoIntegrity: 'no_integrity',
  BadFingerprint: 'bad_fingerprint',
  /** Strict prefix routing: the server ufrag carries no backend's prefix token. */
  StrictPrefix: 'strict_prefix',
  /** Server ufrag in the negative cache: no backend claimed it recently. */
  UnknownUfrag: 'unknown_ufrag',
  NoBackends: 'no_backends',
  /** The source (address, or IPv6 /64) used up its fair share of the probe budget. */
  SourceShare: 'source_share',
  /** The global fan-out probe budget (`--probe-rate`) is spent. */
  FanoutBudget: 'fanout_budget',
  /** The global directed probe budget (`--directed-probe-rate`) is spent. */
  DirectedBudget: 'directed_budget',
  /** Too many flows of this source are being routed at once (`--max-pending-per-source`). */
  SourceLimit: 'source_limit',
  SessionLimit: 'session_limit',
  PortsExhausted: 'ports_exhausted',
  Draining: 'draining',
  /** Non-STUN from a client whose flow is still being routed. */
  ProbingNotStun: 'probing_not_stun',
  /** Probe round limit reached for a flow still being routed. */
  ProbeRounds: 'probe_rounds',
  /** Upstream datagram from an address that is not the session's backend or candidate. */
  UpstreamUnexpectedSource: 'upstream_unexpected_source',
  /** Reply to a probe that matched no outstanding request, or came after the owner was found. */
  ProbeStale: 'probe_stale',
  /** Upstream datagram for a session that is gone or not established. */
  UpstreamNoSession: 'upstream_no_session',
  /** A candidate answered a probe with an error response: "not mine" (libwebrtc sends 401). */
  ProbeNotMine: 'probe_not_mine',
  /**
   * A check that reached this replica through a peer names no live session here (docs/peers.md,
   * "Owner"): a tunneled datagram never opens a session, nor is it asked about or handed on.
   */
  TunnelNoSession: 'tunnel_no_session',
  /**
   * Media of a new 5-tuple held while its check was on its way to the backend (a NAT rebinding:
   * src/session/join-waits.ts), and the backend refused the check or did not answer in time, or
   * the hold was full.
   */
  JoinUnconfirmed: 'join_unconfirmed',
  /**
   * A backend datagram for a session that has no client 5-tuple of its own now: its last one went
   * to another session's client (a NAT handed the port on) or to a peer's tunnel. Sent there, it
   * would reach another client; the session's client joins a new 5-tuple with its next check.
   */
  NoClientEndpoint: 'no_client_endpoint',
});
export const DropReason = DROPS.index;
export type DropReason = number;
export const DROP_REASON_LABELS: readonly string[] = DROPS.labels;

/** How a new client flow was routed (the `outcome` label). */
const ROUTES = indexed({
  /** Joined a live session with the same ufrag pair (NAT rebinding / another candidate). */
  Rebind: 'rebind',
  /** Owner found by prefix token, confirmed by its success. */
  Prefix: 'prefix',
  /** Owner found in the learned-ufrag cache, confirmed by its success. */
  Learned: 'learned',
  /** Owner found by fan-out probing. */
  ProbeWon: 'probe_won',
  /** No backend claimed the ufrag in time, or all said "not mine". */
  ProbeFailed: 'probe_failed',
  /** An ICE restart on a known 5-tuple moved it to a new session. */
  Restart: 'restart',
  /** A rebinding attempt that the backend refused (error response): nothing moved. */
  RebindRefused: 'rebind_refused',
});
export const RouteCounter = ROUTES.index;
export type RouteCounter = number;
export const ROUTE_LABELS: readonly string[] = ROUTES.labels;

/** Why a session ended (the `reason` label of sessions closed). */
export const CLOSE_REASONS = [
  'idle',
  'probe_failed',
  'backend_gone',
  'restart',
  /** A flow still being routed was replaced by a newer check, other credentials, same 5-tuple. */
  'superseded',
  'shutdown',
  'upstream_error',
] as const;
export type CloseReason = (typeof CLOSE_REASONS)[number];

/** How a session was (or is being) routed: its close and open logs say it (`routedBy`). */
export type RouteOutcome = 'rebind' | 'prefix' | 'learned' | 'probe' | 'restart';
