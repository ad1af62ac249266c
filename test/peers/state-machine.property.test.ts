import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { QueryOutcome } from '../../src/peers/counters.ts';
import { HOLD_MAX, MAX_INFLIGHT } from '../../src/peers/node.ts';
import { MsgType, Owned } from '../../src/peers/wire.ts';
import { SimNet, type SimNode } from './sim.ts';

// Random runs of three replicas' peer ends (docs/peers.md): clients' datagrams land on random
// replicas, sessions open and close, replicas die and come back, datagrams are lost, time passes.
// After every step the invariants that make the design safe must hold:
// - no reflection: a replica sends to a client only 5-tuples that sent to its own public port;
// - no loop: queries come only from client datagrams (at most two per peer per round: query and
//   repeat), never from a tunneled or peer datagram;
// - an answer "mine" only from a replica whose sessions hold the 5-tuple (or the ufrag pair);
// - every round ends within --peer-timeout, and the tables stay within their bounds;
// - tunnels point only at listed peers.

const CLIENTS = ['203.0.113.1:4000', '203.0.113.1:4001', '203.0.113.2:5000', '198.51.100.7:6000'];

type Action =
  | { kind: 'datagram'; node: number; client: number }
  | { kind: 'own'; node: number; client: number }
  | { kind: 'close'; node: number; client: number }
  | { kind: 'down'; node: number }
  | { kind: 'up'; node: number }
  | { kind: 'lossy'; on: boolean }
  | { kind: 'advance'; ms: number };

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ kind: fc.constant('datagram' as const), node: fc.nat(2), client: fc.nat(3) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('own' as const), node: fc.nat(2), client: fc.nat(3) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('close' as const), node: fc.nat(2), client: fc.nat(3) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('down' as const), node: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('up' as const), node: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('lossy' as const), on: fc.boolean() }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 4000 }) }),
  },
);

describe('peers: random runs keep the invariants', () => {
  it('no reflection, no loop, honest answers, bounded tables, rounds that end', () => {
    fc.assert(
      fc.property(
        fc.array(action, { minLength: 1, maxLength: 80 }),
        fc.integer(),
        fc.boolean(),
        (actions, seed, coalesce) => {
          const net = new SimNet();
          // Control messages to one peer port batched into one datagram, as the peer socket sends them.
          net.coalesce = coalesce;
          const nodes = [0, 1, 2].map((i) => net.add(`n${i}`, `10.0.0.${i + 1}`, 10001));
          net.meshAll();
          net.flush();
          let rng = seed >>> 0;
          let lossy = false;
          net.lose = () => {
            if (!lossy) return false;
            rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0;
            return rng % 4 === 0;
          };
          const sentFrom = nodes.map(() => new Set<string>());
          const rounds = nodes.map(() => 0);
          // Answers "mine" must name a flow the answering replica held when it answered.
          const owns = (n: SimNode, client: string): boolean => n.byFlow.has(client);
          const honest = nodes.map(() => true);
          for (const [i, n] of nodes.entries()) {
            const onQuery = n.node.owner.onQuery.bind(n.node.owner);
            n.node.owner.onQuery = (q, peer, port) => {
              const before = n.node.counters.answers[Owned.Flow]!;
              onQuery(q, peer, port);
              if (n.node.counters.answers[Owned.Flow]! > before && !owns(n, `${q.address}:${q.port}`))
                honest[i] = false;
            };
          }

          for (const a of actions) {
            switch (a.kind) {
              case 'datagram': {
                const n = nodes[a.node]!;
                if (net.down.has(n)) break;
                const [address, port] = CLIENTS[a.client]!.split(':') as [string, string];
                sentFrom[a.node]!.add(CLIENTS[a.client]!);
                if (n.client(Buffer.from([0x80, 0x60, 0, a.client]), address, Number(port)) === 'asked')
                  rounds[a.node]!++;
                break;
              }
              case 'own': {
                const n = nodes[a.node]!;
                if (!n.byFlow.has(CLIENTS[a.client]!)) n.own(CLIENTS[a.client]!);
                break;
              }
              case 'close': {
                const n = nodes[a.node]!;
                const s = n.byFlow.get(CLIENTS[a.client]!);
                if (s !== undefined) n.close(s);
                break;
              }
              case 'down':
                net.down.add(nodes[a.node]!);
                break;
              case 'up':
                net.down.delete(nodes[a.node]!);
                break;
              case 'lossy':
                lossy = a.on;
                break;
              case 'advance':
                net.advance(a.ms, 25);
                break;
            }
            net.flush();

            for (const [i, n] of nodes.entries()) {
              // No reflection.
              for (const t of n.toClients) expect(sentFrom[i]!.has(`${t.address}:${t.port}`)).toBe(true);
              // No loop: at most query + repeat to each of two peers per round.
              expect(net.sent(MsgType.Query, n)).toBeLessThanOrEqual(rounds[i]! * 2 * 2);
              expect(honest[i]).toBe(true);
              const r = n.node.receiver;
              expect(r.inflight).toBeLessThanOrEqual(MAX_INFLIGHT);
              expect(r.held).toBeLessThanOrEqual(HOLD_MAX);
              const c = n.node.counters.queries;
              // Every round is in flight or ended one way.
              expect(
                c[QueryOutcome.Owned]! + c[QueryOutcome.None]! + c[QueryOutcome.Timeout]! + r.inflight,
              ).toBe(rounds[i]);
            }
          }
          // Let everything settle: no round outlives the timeout.
          net.advance(300, 25);
          for (const n of nodes) {
            if (!net.down.has(n)) expect(n.node.receiver.inflight).toBe(0);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
