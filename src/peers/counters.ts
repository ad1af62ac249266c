/**
 * The peer protocol's counters (docs/peers.md, "Metrics"): plain numbers bumped by the receiver,
 * owner and peer set, read by /metrics at scrape time. Every label set is fixed here; no address
 * ever becomes a label. Each index table and its label list come from one object, so a label
 * cannot be missing for an index.
 */

function labels<const T extends Record<string, string>>(
  table: T,
): readonly [{ readonly [K in keyof T]: number }, readonly string[]] {
  const index: Record<string, number> = {};
  for (const [i, k] of Object.keys(table).entries()) index[k] = i;
  return [Object.freeze(index) as { readonly [K in keyof T]: number }, Object.freeze(Object.values(table))];
}

/** How a query round ended (`ice_ingress_peer_queries_total{outcome}`). */
export const [QueryOutcome, QUERY_OUTCOME_LABELS] = labels({
  Owned: 'owned',
  None: 'none',
  Timeout: 'timeout',
});

/** Why an unknown 5-tuple was not asked (`ice_ingress_peer_queries_skipped_total{reason}`). */
export const [QuerySkip, QUERY_SKIP_LABELS] = labels({
  /** A round found no owner for this 5-tuple (this check's ufrag pair) within --peer-negative-ttl. */
  Negative: 'negative',
  /** The source used up its fair share of --peer-query-rate. */
  SourceShare: 'source_share',
  /** --peer-query-rate is spent. */
  Budget: 'budget',
  /** Too many rounds in flight, or the tunnel table is full. */
  TableFull: 'table_full',
  /** No peer answers pings: nobody to ask. */
  NoPeers: 'no_peers',
});

/** Answers this replica gave (`ice_ingress_peer_answers_total{answer}`), indexed by wire `Owned`. */
export const ANSWER_LABELS: readonly string[] = Object.freeze(['none', 'flow', 'ufrag']);

/** `ice_ingress_peer_tunnel_packets_total{direction}` / `…_bytes_total`. */
export const [TunnelDir, TUNNEL_DIR_LABELS] = labels({
  /** Receiver: a client datagram sent to its owner. */
  ToOwner: 'to_owner',
  /** Owner: a client datagram from the receiving replica. */
  FromReceiver: 'from_receiver',
  /** Owner: a backend datagram sent to the receiving replica. */
  ToReceiver: 'to_receiver',
  /** Receiver: a backend datagram from the owner, sent on to the client. */
  FromOwner: 'from_owner',
});

/** Why a tunnel ended (`ice_ingress_peer_tunnels_closed_total{reason}`). */
export const [TunnelClose, TUNNEL_CLOSE_LABELS] = labels({
  /** No client datagram for --idle-timeout (or never one after the answer). */
  Idle: 'idle',
  /** The other end released it. */
  Released: 'released',
  /** The peer left the peer set, stopped answering pings, or restarted. */
  PeerGone: 'peer_gone',
  /** Owner: the client's flow now reaches it another way (another replica, or directly). */
  Replaced: 'replaced',
  /** Owner: the session ended. */
  SessionClosed: 'session_closed',
  /**
   * Owner: a check through it named no session here (its session ended meanwhile, or an ICE
   * restart that a draining owner does not take): the receiver asks again and routes it itself.
   */
  NoSession: 'no_session',
  /** This replica stops. */
  Shutdown: 'shutdown',
});

/** Datagrams dropped by the peer layer (`ice_ingress_peer_drops_total{reason}`). */
export const [PeerDrop, PEER_DROP_LABELS] = labels({
  /** Not a peer datagram, or a field out of bounds. */
  Malformed: 'malformed',
  /** A peer datagram of another protocol version. */
  Version: 'version',
  /** From an address that is not a known peer's. */
  UnknownPeer: 'unknown_peer',
  /** Up / down / release with a token this replica did not mint for that peer (or minted and freed). */
  UnknownTunnel: 'unknown_tunnel',
  /** An answer to a round that is over (a late answer, or a second owner). */
  StaleAnswer: 'stale_answer',
  /** This replica's own datagram (it is in its own peer list). */
  Self: 'self',
  /** A client datagram that could not be held while its round was in flight. */
  HoldFull: 'hold_full',
});

export class PeerCounters {
  readonly queries = new Float64Array(QUERY_OUTCOME_LABELS.length);
  readonly skipped = new Float64Array(QUERY_SKIP_LABELS.length);
  readonly answers = new Float64Array(ANSWER_LABELS.length);
  handoffsOut = 0;
  handoffsIn = 0;
  readonly tunnelPackets = new Float64Array(TUNNEL_DIR_LABELS.length);
  readonly tunnelBytes = new Float64Array(TUNNEL_DIR_LABELS.length);
  readonly tunnelsClosed = new Float64Array(TUNNEL_CLOSE_LABELS.length);
  readonly drops = new Float64Array(PEER_DROP_LABELS.length);
}
