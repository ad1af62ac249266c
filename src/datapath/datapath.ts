import type { Logger } from 'pino';
import { Admission, type AdmissionOptions } from '../admission/admission.ts';
import type { Shares } from '../admission/source-shares.ts';
import { type Budget, TokenBucket } from '../admission/token-bucket.ts';
import type { BackendTable } from '../backends/backend-table.ts';
import { Counters } from '../defs/counters.ts';
import type { FlowHandoff, Transport } from '../defs/interfaces.ts';
import type { CloseReason } from '../defs/reasons.ts';
import type { BackendSpec } from '../discovery/types.ts';
import type { FlowListener } from '../session/events.ts';
import type { PortPool } from '../session/port-pool.ts';
import { LocalSessionSlots, SessionRegistry, type SessionSlots } from '../session/registry.ts';
import { type Session, SessionState } from '../session/session.ts';
import { Forwarder } from './forwarder.ts';
import { Router } from './router.ts';

/**
 * The I/O-free data path (docs/architecture.md): one session registry (the only owner of session
 * state, announcing flow events), admission (what a first check may cost), the router (who owns
 * a ufrag) and the forwarder (the two hot paths), wired together here. A transport adapter
 * (udp.ts) owns the sockets and calls {@link Datapath.onClientDatagram}; each upstream socket's
 * datagrams reach the forwarder through the registry. The clock is injected so tests can drive
 * time; nothing here sleeps, spawns or binds on its own.
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
  readonly clock: () => number;
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
}

export class Datapath {
  readonly counters = new Counters();
  readonly registry: SessionRegistry;
  readonly admission: Admission;
  readonly router: Router;
  readonly forwarder: Forwarder;
  readonly #backends: BackendTable;
  readonly #clock: () => number;
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
    this.registry = new SessionRegistry(
      {
        transport,
        ports: deps.ports,
        slots: deps.slots ?? new LocalSessionSlots(options.maxSessions),
        clock,
        log,
        counters,
      },
      {
        upstreamDatagram: (s, buf, address, port) => forwarder.onUpstreamDatagram(s, buf, address, port),
        upstreamError: (s, err) => this.#onUpstreamError(s, err),
      },
    );
    const registry = this.registry;
    const now = clock();
    this.admission = new Admission({
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
    this.router = new Router({
      registry,
      backends,
      admission: this.admission,
      transport,
      counters,
      clock,
      log,
      probeRounds: options.probeRounds,
      strictPrefix: options.strictPrefix,
      onRouted: deps.onRouted,
    });
    forwarder = new Forwarder({
      registry,
      router: this.router,
      backends,
      transport,
      counters,
      clock,
      handoff: deps.handoff,
    });
    this.forwarder = forwarder;
  }

  /** The registry, under the name the metrics and tests know (sessions, endpoints). */
  get table(): SessionRegistry {
    return this.registry;
  }

  get accepting(): boolean {
    return this.router.accepting;
  }

  addListener(l: FlowListener): void {
    this.registry.addListener(l);
  }

  /** Draining: existing sessions keep flowing, new flows are dropped (reason `draining`). */
  stopAccepting(): void {
    this.router.stopAccepting();
  }

  onClientDatagram(buf: Buffer, address: string, port: number): void {
    this.forwarder.onClientDatagram(buf, address, port);
  }

  /**
   * Periodic housekeeping (call every few hundred ms): probe timeouts, idle sessions, idle extra
   * endpoints, the count of active sources. O(sessions) per call.
   */
  sweep(): void {
    const now = this.#clock();
    const idle = this.#opt.idleTimeoutMs;
    this.admission.sweep(now);
    for (const s of this.registry.sessions) {
      if (s.state === SessionState.Probing) {
        if (now - s.createdAt >= this.#opt.probeTimeoutMs) this.router.fail(s);
        continue;
      }
      if (now - s.lastClientAt >= idle) {
        this.registry.close(s, 'idle');
        continue;
      }
      if (s.endpoints.length > 1) {
        for (let i = s.endpoints.length - 1; i >= 0; i--) {
          const ep = s.endpoints[i]!;
          if (now - ep.lastSeen >= idle) this.registry.dropEndpoint(ep);
        }
      }
    }
  }

  /** Applies a discovery snapshot. Sessions of backends that left end; the negative cache clears. */
  updateBackends(specs: readonly BackendSpec[]): void {
    const changes = this.#backends.update(specs);
    for (const b of changes.removed) {
      for (const s of [...this.registry.sessionsOf(b)]) this.registry.close(s, 'backend_gone');
    }
    if (changes.added.length > 0 || changes.changed.length > 0) this.admission.negative.clear();
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

  /** Ends every session (shutdown). */
  closeAll(reason: CloseReason = 'shutdown'): void {
    for (const s of [...this.registry.sessions]) this.registry.close(s, reason);
  }

  #onUpstreamError(s: Session, err: NodeJS.ErrnoException): void {
    // A connected UDP socket reports ICMP port unreachable as ECONNREFUSED: the backend may be
    // restarting. Keep the session; idle expiry or discovery will end it.
    if (err.code === 'ECONNREFUSED') return;
    this.#log.warn({ session: s.id, err: err.message, code: err.code }, 'upstream socket error');
    this.registry.close(s, 'upstream_error');
  }
}
