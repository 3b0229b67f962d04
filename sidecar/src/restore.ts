// Putting the registry back after Redis lost its data (restarted empty, flushed, or a failover that
// lost the writes it had not replicated). A node on the node library puts its own sessions back
// (node/src/affinity.ts); nothing else would write the others again: sessions registered through
// the sessions API (their nodes keep no Redis connection to notice with) and sessions learned at the
// edge (servers without the library). So the sidecar keeps those records, clear id included, in
// memory only, while the mirror holds them live, and puts every one back (only where absent) when
// the registry reports a loss. Every sidecar keeps and puts back the same records: any one that
// notices restores them, and the others' writes find them present.
import { sessionHashKey, type SessionRecord } from "../../lib/registry/index.ts";
import { errFields } from "../../lib/errors.ts";
import type { SidecarContext } from "./context.ts";

/** Records written per round trip batch while restoring. */
const RESTORE_BATCH = 100;
/** A restore that could not write everything (Redis still failing over) tries again this soon. */
const RETRY_MS = 1000;

interface Kept {
  record: SessionRecord;
  /** The mirror's key (session hash), computed once. */
  key: string;
}

export class RegistryRestore {
  readonly #kept = new Map<string, Kept>();
  #running: Promise<void> | null = null;
  #again = false;
  #stopped = false;
  #retry: NodeJS.Timeout | null = null;

  constructor(private readonly ctx: Pick<SidecarContext, "cfg" | "registry" | "metrics" | "log" | "mirror">) {}

  get size(): number {
    return this.#kept.size;
  }

  /**
   * A session record seen (the sessions API, an edge learn, the change channel, a scan): kept when
   * no node library will put it back, i.e. learned at the edge, or owned by a node without heartbeats.
   */
  note(id: string, record: SessionRecord, key?: string): void {
    if (this.#stopped) return;
    if (this.putsBackNoOne(record)) this.#kept.set(id, { record, key: key ?? sessionHashKey(id) });
    else this.#kept.delete(id);
  }

  /** A session closed: nothing to put back. */
  forget(id: string): void {
    this.#kept.delete(id);
  }

  /** Drops what the mirror no longer holds live (after a completed scan: expired, closed or gone). */
  prune(): void {
    for (const [id, k] of this.#kept) if (!this.restorable(k)) this.#kept.delete(id);
  }

  private restorable(k: Kept): boolean {
    const m = this.ctx.mirror.lookup(k.key);
    if (!m || m.closed || this.ctx.mirror.ownerState(m.owner) === "gone") return false;
    // Asked again when restoring: a record noted before its node's first heartbeat reached this
    // sidecar belongs to a node that puts its own sessions back.
    return this.putsBackNoOne(k.record);
  }

  /**
   * Learned at the edge, or owned by a node that never heartbeated to this sidecar (the sessions
   * API): no node library puts it back. A node that ever heartbeated is on the library, even while
   * its heartbeat is missing (Redis lost it too: the node writes it again, and its sessions).
   */
  private putsBackNoOne(record: SessionRecord): boolean {
    if (record.source === "edge") return true;
    const node = this.ctx.mirror.node(record.cookie);
    return !node?.hb && !(node && node.hbBootsSeen.size > 0);
  }

  /** Puts every kept live record back where it is absent (joined when one runs; run again after it). */
  restore(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.run().finally(() => {
      this.#running = null;
      if (this.#again && !this.#stopped) {
        this.#again = false;
        void this.restore();
      }
    });
    return this.#running;
  }

  private async run(): Promise<void> {
    const { cfg, registry, metrics, log, mirror } = this.ctx;
    const t0 = performance.now();
    const counts = { put: 0, present: 0, failed: 0 };
    const entries = [...this.#kept];
    for (let i = 0; i < entries.length && !this.#stopped; i += RESTORE_BATCH) {
      await Promise.all(
        entries.slice(i, i + RESTORE_BATCH).map(async ([id, k]) => {
          if (!this.#kept.has(id) || !this.restorable(k)) return;
          // A node with heartbeats puts its own sessions back (it may have started them after we kept them).
          if (k.record.source === "node" && mirror.node(k.record.cookie)?.hb) return;
          const ttlMs =
            k.record.source === "edge" ? Math.min(cfg.edgeSessionTtlMs, cfg.sessionTtlMs) : cfg.sessionTtlMs;
          try {
            const put = await registry.registerSession(id, k.record, { ifAbsent: true, ttlMs });
            counts[put ? "put" : "present"]++;
          } catch {
            counts.failed++;
          }
        }),
      );
    }
    for (const [result, n] of Object.entries(counts)) if (n) metrics.restored.inc({ result }, n);
    log.info({ ...counts, ms: Math.round(performance.now() - t0) }, "registry restore: kept sessions put back");
    if (counts.failed && !this.#stopped) {
      this.#retry ??= setTimeout(() => {
        this.#retry = null;
        void this.restore().catch((err) => log.warn({ err: errFields(err) }, "registry restore failed"));
      }, RETRY_MS);
    }
  }

  stop(): void {
    this.#stopped = true;
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = null;
  }

  /** The restore in progress, if any (to wait for it at shutdown). */
  get inProgress(): Promise<void> | null {
    return this.#running;
  }
}
