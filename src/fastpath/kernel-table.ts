import type { Logger } from 'pino';
import type { Nft } from './nft-runner.ts';
import { deleteTableScript, FAMILY, TABLE, type TableParams, tableScript } from './nft-script.ts';

/**
 * The one `netdev ice_ingress` table of the pod's network namespace (docs/fast-path.md): its one
 * owner creates it (replacing a stale one, and an earlier version's `ip` table) once the
 * listening socket is bound, before the first backends (so before any session), and deletes it
 * at shutdown. The pod makes one (src/pod/pod.ts), for one process and for the worker pool alike;
 * a data-path thread's fast path only writes its sessions' objects into it.
 */
export class KernelTable {
  readonly #nft: Nft;
  readonly #log: Logger;
  #created = false;

  constructor(nft: Nft, log: Logger) {
    this.#nft = nft;
    this.#log = log;
  }

  get created(): boolean {
    return this.#created;
  }

  async create(p: TableParams): Promise<void> {
    await this.#nft.apply(tableScript(p));
    this.#created = true;
    this.#log.info(
      { table: `${FAMILY} ${TABLE}`, listen: `${p.listenAddress}:${p.listenPort}`, devices: p.devices },
      'fast path: nftables table created',
    );
  }

  /** Deletes the table if it was created and is still there; idempotent, never throws. */
  async delete(): Promise<void> {
    if (!this.#created) return;
    this.#created = false;
    try {
      await this.#nft.apply(deleteTableScript());
      this.#log.info({ table: `${FAMILY} ${TABLE}` }, 'fast path: nftables table removed');
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'fast path: could not remove the nftables table');
    }
  }
}
