// Runner side of the JSON-lines protocol (see jsonl.ts): requests with ids, a log of events,
// bounded waits. Every wait names what it waited for and points at the agent's stderr log.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { NsRole, Topology } from './netns.ts';

export type Msg = Record<string, unknown>;

export const ROOT = resolve(import.meta.dirname, '../..');
export const NODE = resolve(ROOT, 'node_modules/.bin/node');

/** `R`: the topology's role names (the interop layout by default). */
export class Agent<R extends string = NsRole> {
  readonly label: string;
  readonly child: ChildProcess;
  readonly events: Msg[] = [];
  private readonly topo: Topology<R>;
  private nextId = 1;
  private readonly pending = new Map<number, (m: Msg) => void>();
  private readonly waiters = new Set<() => void>();
  private exited: string | undefined;

  constructor(topo: Topology<R>, role: R, label: string, script: string, args: string[] = []) {
    this.topo = topo;
    this.label = label;
    this.child = topo.spawn(role, NODE, [resolve(import.meta.dirname, script), ...args], {
      label,
      cwd: ROOT,
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let m: Msg;
      try {
        m = JSON.parse(line) as Msg;
      } catch {
        return;
      }
      const id = m['id'];
      if (typeof id === 'number' && this.pending.has(id)) {
        this.pending.get(id)!(m);
        this.pending.delete(id);
        return;
      }
      m['at'] = Date.now();
      this.events.push(m);
      for (const w of this.waiters) w();
    });
    this.child.on('exit', (code, signal) => {
      this.exited = `exited code=${code} signal=${signal}`;
      for (const w of this.waiters) w();
    });
  }

  request(msg: Msg, timeoutMs = 10_000): Promise<Msg> {
    const id = this.nextId++;
    return new Promise((resolveP, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new Error(
            `${this.label}: no reply to ${JSON.stringify(msg).slice(0, 80)} in ${timeoutMs} ms${this.tail()}`,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, (m) => {
        clearTimeout(timer);
        if (typeof m['error'] === 'string') reject(new Error(`${this.label}: ${m['error']}`));
        else resolveP(m);
      });
      this.child.stdin!.write(`${JSON.stringify({ ...msg, id })}\n`);
    });
  }

  find(pred: (m: Msg) => boolean): Msg | undefined {
    return this.events.find(pred);
  }

  /** Resolves with the first event (past or future) matching `pred`; rejects after `timeoutMs`. */
  waitFor(pred: (m: Msg) => boolean, timeoutMs: number, what: string): Promise<Msg> {
    const found = this.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolveP, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = (): void => {
        const m = this.find(pred);
        if (m) {
          done();
          resolveP(m);
        } else if (this.exited) {
          done();
          reject(new Error(`${this.label} ${this.exited} while waiting for ${what}${this.tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label}: timeout after ${timeoutMs} ms waiting for ${what}${this.tail()}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  ready(timeoutMs = 10_000): Promise<Msg> {
    return this.waitFor((m) => m['event'] === 'ready', timeoutMs, 'ready');
  }

  /** Last lines of the agent's stderr log, for error messages. */
  tail(lines = 15): string {
    try {
      const text = readFileSync(this.topo.logPath(this.label), 'utf8').trimEnd().split('\n');
      return `\n--- ${this.label} stderr (last ${lines}) ---\n${text.slice(-lines).join('\n')}`;
    } catch {
      return '';
    }
  }

  kill(): void {
    this.topo.kill(this.child);
  }
}
