import type { Logger } from 'pino';
import { Admission, type AdmissionOptions } from '../admission/admission.ts';
import { TokenBucket } from '../admission/token-bucket.ts';
import type { BackendTable } from '../backends/backend-table.ts';
import { Counters } from '../defs/counters.ts';
import type {
  BackendRef,
  BackendSpec,
  Budget,
  Clock,
  FastPathHost,
  FlowHandoff,
  FlowListener,
  FlowSession,
  OwnerHost,
  PeerRoute,
  PeerRouting,
  ReceiverHost,
  SessionSlots,
  Shares,
  Transport,
} from '../defs/interfaces.ts';
import type { KernelCounts } from '../defs/kernel-counts.ts';
import type { CloseReason } from '../defs/reasons.ts';
import type { PortPool } from '../session/port-pool.ts';
import { LocalSessionSlots, SessionRegistry } from '../session/registry.ts';
import { type ClientEndpoint, type Session, SessionState } from '../session/session.ts';
import { hashBytes } from '../stun/hash.ts';
import { Forwarder } from './forwarder.ts';
import { Router } from './router.ts';

/**
 * The I/O-free data path's front door (docs/architecture.md, "Data path"): the operations its
 * callers need — datagrams in, the periodic sweep, backend snapshots, draining, flow listeners,
 * what the kernel fast path and a pod's other workers tell it, and read-only views for metrics
 * and tests. Its parts are private: one session registry (the only owner of session state,
 * announcing flow events), admission (what a first check may cost), the router (who owns a ufrag)
 * and the forwarder (the two hot paths). A transport adapter (src/io/udp.ts) owns the sockets and
 * calls {@link Datapath.onClientDatagram}; each upstream socket's datagrams go to the forwarder
 * directly. The clock is injected so tests can drive time; nothing here sleeps, spawns or binds.
 */

export interface DatapathOptions extends AdmissionOptions {
  /** A session with no client packet for this long ends (JVB expires endpoints after 60 s). */
  readonly idleTimeoutMs: number;
  /** A flow whose owner is not found within this time fails; its ufrag goes to the negative cache. */
  readonly probeTimeoutMs: number;
  /** Probe rounds per flow at most; a round is only ever triggered by a client (re)transmission. */
  readonly probeRounds: number;
}

export interface DatapathDeps {
  readonly transport: Transport;
  readonly backends: BackendTable;
  /** Upstream ports with quarantine; undefined = let the kernel pick (no quarantine guarantee). */
  readonly ports: PortPool | undefined;
  readonly clock: Clock;
  readonly log: Logger;
  readonly options: DatapathOptions;
  /** Called once per session whose owner was found: routing time and outcome (a metrics hook). */
  readonly onRouted?: (ms: number, outcome: string) => void;
  /**
   * A pod's workers (docs/workers.md): the shared [fan-out, directed] budgets and session cap, this
   * worker's fair-share table, and the hand-off to the other workers. By default (one process):
   * this process's own limits and no hand-off.
   */
  readonly budgets?: readonly [Budget, Budget];
  readonly slots?: SessionSlots;
  readonly shares?: Shares;
  readonly handoff?: FlowHandoff;
  /** The other replicas of the tier (docs/peers.md); none without `--peers`. */
  readonly peers?: PeerRouting;
}

export class Datapath implements FastPathHost, OwnerHost<FlowSession>, ReceiverHost {
  /** The counter table (read by /metrics and tests; written only by the data path). */
  readonly counters = new Counters();
  readonly #registry: SessionRegistry;
  readonly #admission: Admission;
  readonly #router: Router;
  readonly #forwarder: Forwarder;
  readonly #backends: BackendTable;
  readonly #transport: Transport;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #opt: DatapathOptions;

  constructor(deps: DatapathDeps) {
    const { transport, backends, clock, log, options } = deps;
    this.#backends = backends;
    this.#clock = clock;
    this.#log = log;
    this.#opt = options;
    const counters = this.counters;
    let forwarder!: Forwarder;
    const registry = new SessionRegistry({
      ports: deps.ports,
      slots: deps.slots ?? new LocalSessionSlots(options.maxSessions),
      clock,
      log,
      counters,
    });
    this.#registry = registry;
    const now = clock();
    this.#admission = new Admission({
      backends,
      budgets: deps.budgets ?? [
        new TokenBucket(options.probeRate, options.probeRate, now),
        new TokenBucket(options.directedProbeRate, options.directedProbeRate, now),
      ],
      pending: (source, budget) => registry.pending(source, budget),
      sessions: () => registry.size,
      shares: deps.shares,
      options,
    });
    this.#router = new Router({
      registry,
      backends,
      admission: this.#admission,
      transport,
      counters,
      clock,
      log,
      probeRounds: options.probeRounds,
      strictPrefix: options.strictPrefix,
      onRouted: deps.onRouted,
      upstreamHandler: (s) => forwarder.upstreamHandler(s),
    });
    forwarder = new Forwarder({
      registry,
      router: this.#router,
      backends,
      transport,
      counters,
      clock,
      log,
      handoff: deps.handoff,
      peers: deps.peers,
    });
    this.#forwarder = forwarder;
    this.#transport = transport;
  }

  // ---------------------------------------------------------------------------------------------
  // Datagrams, time, backends, draining

  onClientDatagram(buf: Buffer, address: string, port: number): void {
    this.#forwarder.onClientDatagram(buf, address, port);
  }

  /**
   * Periodic housekeeping (call every few hundred ms): probe timeouts, idle sessions, idle extra
   * endpoints, the count of active sources. O(sessions) per call.
   */
  sweep(): void {
    const now = this.#clock();
    const idle = this.#opt.idleTimeoutMs;
    this.#admission.sweep(now);
    this.#registry.sweepJoinWaits(now);
    for (const s of this.#registry.sessions) {
      if (s.state === SessionState.Probing) {
        if (now - s.createdAt >= this.#opt.probeTimeoutMs) this.#router.fail(s);
        continue;
      }
      if (now - s.lastClientAt >= idle) {
        this.#registry.close(s, 'idle');
        continue;
      }
      if (s.endpoints.length > 1) {
        for (let i = s.endpoints.length - 1; i >= 0; i--) {
          const ep = s.endpoints[i]!;
          if (now - ep.lastSeen >= idle) this.#registry.dropEndpoint(ep);
        }
      }
    }
  }

  /** Applies a discovery snapshot. Sessions of backends that left end; the negative cache clears. */
  updateBackends(specs: readonly BackendSpec[]): void {
    const changes = this.#backends.update(specs);
    for (const b of changes.removed) {
      for (const s of [...this.#registry.sessionsOf(b)]) this.#registry.close(s, 'backend_gone');
    }
    if (changes.added.length > 0 || changes.changed.length > 0) this.#admission.negative.clear();
    if (changes.added.length + changes.removed.length + changes.changed.length > 0) {
      this.#log.info(
        {
          added: changes.added.map((b) => `${b.name}=${b.address}:${b.port}(${b.state})`),
          removed: changes.removed.map((b) => b.name),
          changed: changes.changed.map((b) => `${b.name}(${b.state})`),
          total: this.#backends.size,
        },
        'backends updated',
      );
    }
    if (this.#backends.tokenCollisions.length > 0) {
      this.#log.warn(
        { pairs: this.#backends.tokenCollisions },
        'backends share a prefix token; probing decides',
      );
    }
  }

  /** True after the first backend snapshot (the first discovery sync). */
  get synced(): boolean {
    return this.#backends.synced;
  }

  get accepting(): boolean {
    return this.#router.accepting;
  }

  /** Draining: existing sessions keep flowing, new flows are dropped (reason `draining`). */
  stopAccepting(): void {
    this.#router.stopAccepting();
  }

  /** Ends every session (shutdown). */
  closeAll(reason: CloseReason = 'shutdown'): void {
    for (const s of [...this.#registry.sessions]) this.#registry.close(s, reason);
  }

  addListener(l: FlowListener): void {
    this.#registry.addListener(l);
  }

  // ---------------------------------------------------------------------------------------------
  // What a pod's other workers tell this one (docs/workers.md, "Shared limits and state")

  /** Another worker's owner of a server ufrag: later flows of that ufrag go to it directly. */
  learn(serverUfragHash: number, backend: string): void {
    this.#admission.learn(serverUfragHash, backend);
  }

  /** Another worker found no owner for a server ufrag: not probed again for the negative TTL. */
  reject(serverUfragHash: number): void {
    this.#admission.reject(serverUfragHash, this.#clock());
  }

  // ---------------------------------------------------------------------------------------------
  // The kernel fast path's host (FastPathHost). It hears of sessions only as flow events, and
  // every flow event carries one of this registry's sessions: the casts below name that.

  touch(s: FlowSession, now: number): void {
    this.#registry.touch(s as Session, now);
  }

  addKernelCounts(s: FlowSession, c: KernelCounts): void {
    this.#registry.noteKernel(s as Session, c);
  }

  // ---------------------------------------------------------------------------------------------
  // The peer layer's host (docs/peers.md): the owner side asks about this replica's sessions and
  // hands in tunneled datagrams; the receiver side sends the owners' datagrams on to clients and
  // hands back what no peer owns.

  sessionOfFlow(address: string, port: number, username: Buffer | undefined): FlowSession | undefined {
    const ep = this.#registry.lookup(address, port);
    if (ep === undefined || ep.session.state !== SessionState.Established) return undefined;
    const s = ep.session;
    if (username !== undefined && !this.#router.accepting) {
      // An ICE restart (another server ufrag) needs a new session, which a draining owner does not
      // open: the receiving replica routes it (forwarder.ts drops one that arrives here anyway).
      const u = s.serverUfrag;
      if (username.indexOf(0x3a) !== u.length) return undefined;
      for (let i = 0; i < u.length; i++) if (username[i] !== u.charCodeAt(i)) return undefined;
    }
    return s;
  }

  sessionOfUsername(username: Buffer): FlowSession | undefined {
    const view = { start: 0, end: username.length, colon: username.indexOf(0x3a) };
    return this.#registry.findLive(username, view, hashBytes(username, 0, username.length));
  }

  routeOf(address: string, port: number): PeerRoute | undefined {
    return this.#registry.lookup(address, port)?.via;
  }

  tunneled(buf: Buffer, address: string, port: number, route: PeerRoute): boolean {
    return this.#forwarder.onTunneledDatagram(buf, address, port, route);
  }

  /** An owner's datagram for a client whose flow this replica tunnels: out of the public socket. */
  sendToClient(buf: Uint8Array, port: number, address: string): void {
    this.counters.packetsToClients++;
    this.counters.bytesToClients += buf.length;
    this.#transport.sendToClient(buf, port, address);
  }

  local(buf: Buffer, address: string, port: number): void {
    this.#forwarder.replay(buf, address, port);
  }

  /** A peer owns this 5-tuple's flow: an endpoint of it here is stale ({@link ReceiverHost}). */
  claimed(address: string, port: number): void {
    const ep = this.#registry.lookup(address, port);
    if (ep !== undefined) this.#registry.disown(ep);
  }

  // ---------------------------------------------------------------------------------------------
  // Read-only views (metrics, tests)

  /** Sessions, established and probing. */
  get sessions(): ReadonlySet<Session> {
    return this.#registry.sessions;
  }

  get size(): number {
    return this.#registry.size;
  }

  /** Client 5-tuples mapped to sessions. */
  get endpointCount(): number {
    return this.#registry.endpointCount;
  }

  /** Datagrams of new 5-tuples held until their check is answered (src/session/join-waits.ts). */
  get joinHeld(): number {
    return this.#registry.joinHeld;
  }

  lookup(address: string, port: number): ClientEndpoint | undefined {
    return this.#registry.lookup(address, port);
  }

  /** Flows from `source` being routed now, in one budget class (0 fan-out, 1 directed). */
  pending(source: string, budget: number): number {
    return this.#registry.pending(source, budget);
  }

  /** The sessions a backend owns. */
  sessionsOf(b: BackendRef): ReadonlySet<Session> {
    return this.#registry.sessionsOf(b);
  }

  /** Sources active in the last second (admission's fair-share table). */
  get activeSources(): number {
    return this.#admission.shares.active;
  }
}
