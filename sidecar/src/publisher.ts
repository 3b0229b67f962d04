// Publishes the mirror as the registry view (lib/view formats): changed shards only, then the
// meta; the meta alone at least every metaInterval so the view stays fresh while we are healthy.
import { randomInt } from "node:crypto";
import type { Logger } from "pino";
import {
  encodeShardEntries,
  listShards,
  readMeta,
  removeShard,
  writeMeta,
  writeShardBuffer,
  defaultViewFs,
  viewPaths,
  type ViewFs,
  type ViewMeta,
  type ViewNode,
} from "../../lib/view/index.ts";
import type { Mirror } from "./mirror.ts";
import type { SidecarMetrics } from "./metrics.ts";
import { errFields } from "../../lib/errors.ts";

export interface PublisherOptions {
  dir: string;
  epoch: number;
  fs?: ViewFs;
  log: Logger;
  metrics: SidecarMetrics;
  /** Parallel file writes during a publish. */
  concurrency?: number;
}

export interface PublishResult {
  kind: "full" | "incremental" | "meta";
  shards: number;
  ms: number;
  ok: boolean;
}

/**
 * The epoch to publish under, and the view to take over. A view a previous process left in `dir`
 * with the same shard width is taken over (its epoch, then its owner ids: Publisher.adopt) rather
 * than replaced: a new epoch would make every shard disagree with the meta until all were
 * rewritten. Otherwise a random epoch; `fixed` (tests) wins over both.
 */
export async function chooseEpoch(
  dir: string,
  shardBits: number,
  o: { fs?: ViewFs; fixed?: number } = {},
): Promise<{ epoch: number; previous: ViewMeta | null }> {
  if (o.fixed !== undefined) return { epoch: o.fixed, previous: null };
  const meta = await readMeta(dir, { fs: o.fs }).catch(() => null);
  const previous = meta && meta.shardBits === shardBits ? meta : null;
  return { epoch: previous?.epoch ?? randomInt(1, 0xffff_ffff), previous };
}

export class Publisher {
  generation = 0;
  lastPublished: number | null = null;
  /** Shards being written right now (not yet in the published view). */
  readonly inflight = new Set<number>();
  private cold = true;
  private running: Promise<PublishResult> | null = null;
  private again = false;
  private lastErrorLog = 0;
  private readonly fs: ViewFs;
  /** The node table of the meta on disk: every owner id a shard on disk may name. */
  private onDisk = new Map<number, ViewNode>();

  constructor(
    private readonly mirror: Mirror,
    private readonly opts: PublisherOptions,
  ) {
    this.fs = opts.fs ?? defaultViewFs;
  }

  /**
   * Takes over the view a previous process left (same epoch, see chooseEpoch): the mirror's owner
   * ids continue above its ids, and its owners stay listed until the shards naming them are
   * rewritten. A carried-over `down` is listed as `up`: that process's liveness is old news, and a
   * pin is harmless where a 503 would not be.
   */
  adopt(meta: ViewMeta): void {
    this.mirror.reserveOwnerIds(meta.nodes.reduce((max, n) => Math.max(max, n.id), 0));
    this.onDisk = new Map(
      meta.nodes.map((n) => [n.id, n.state === "down" ? { ...n, state: "up" as const, retryAfterSeconds: 0 } : n]),
    );
  }

  /** Writes the meta, listing `nodes` plus, when `keepOnDisk`, every owner the meta on disk lists. */
  private async writeNodeTable(nodes: ViewNode[], keepOnDisk: boolean): Promise<void> {
    const table = new Map(nodes.map((n) => [n.id, n]));
    if (keepOnDisk) for (const [id, n] of this.onDisk) if (!table.has(id)) table.set(id, n);
    const list = [...table.values()].sort((a, b) => a.id - b.id);
    const published = Date.now();
    this.generation++;
    const m = this.mirror;
    await writeMeta(
      this.opts.dir,
      {
        epoch: this.opts.epoch,
        generation: this.generation,
        published,
        shardBits: m.shardBits as 4 | 8 | 12 | 16,
        nodes: list,
        boots: m.viewBoots(),
      },
      { fs: this.fs },
    );
    this.onDisk = table;
    this.lastPublished = published;
  }

  get published(): boolean {
    return this.lastPublished !== null;
  }

  /** Shards with changes not yet on disk: dirty, or being written right now. */
  pendingShards(): ReadonlySet<number> {
    const dirty = this.mirror.dirtyShards();
    if (!this.inflight.size) return dirty;
    return new Set([...dirty, ...this.inflight]);
  }

  /** Publishes now, or right after the publish in progress (coalesced). */
  publish(): Promise<PublishResult> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let r: PublishResult;
      do {
        this.again = false;
        r = await this.publishOnce();
      } while (this.again);
      return r;
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private logError(msg: string, err: unknown): void {
    // At most one error line per second: a full disk must not flood the log.
    const now = Date.now();
    if (now - this.lastErrorLog < 1000) return;
    this.lastErrorLog = now;
    this.opts.log.error({ err: errFields(err) }, msg);
  }

  private async publishOnce(): Promise<PublishResult> {
    const t0 = performance.now();
    const { dir, epoch, metrics } = this.opts;
    const io = { fs: this.fs };
    const m = this.mirror;
    const kind: PublishResult["kind"] = this.cold ? "full" : m.dirtyShards().size ? "incremental" : "meta";
    let ok = true;
    let existing: Set<string> | null = null;
    const work: number[] = [];
    try {
      await this.fs.mkdir(viewPaths(dir).shards, { recursive: true });
      if (this.cold) {
        // Cold: every shard of this epoch, and away with files of another shardBits.
        existing = new Set(await listShards(dir, io));
        const width = m.shardBits / 4;
        for (const name of existing) if (name.length !== width) await removeShard(dir, name, io);
        m.takeDirtyShards();
        for (let s = 0; s < m.shardCount; s++) work.push(s);
      } else {
        work.push(...m.takeDirtyShards());
      }
    } catch (err) {
      metrics.dirErrors.inc({ operation: "list" });
      this.logError("cannot prepare the view directory", err);
      // The cold publish is retried next time.
      return this.finish(kind, 0, t0, false);
    }
    // Owners go into the meta before any shard names them, and leave it only after no shard on
    // disk does: a reader never finds a shard naming an owner its meta lacks.
    // Shards are encoded now, in the same tick as the node table: changes that land while the
    // files are written mark their shard dirty again and go out with the next publish.
    const encoded = new Map<number, Buffer | null>();
    for (const s of work) {
      const entries = m.shardEntries(s);
      encoded.set(s, entries.length ? encodeShardEntries(epoch, entries) : null);
    }
    const before = m.viewNodes();
    if (before.some((n) => !this.onDisk.has(n.id))) {
      try {
        await this.writeNodeTable(before, true);
      } catch (err) {
        metrics.dirErrors.inc({ operation: "write_meta" });
        this.logError("cannot write the view meta; the view will go stale (the plugin fails open)", err);
        for (const s of work) m.markShardDirty(s);
        return this.finish(kind, 0, t0, false);
      }
    }
    for (const s of work) this.inflight.add(s);
    let written = 0;
    let next = 0;
    const worker = async () => {
      while (next < work.length) {
        const s = work[next++];
        const prefix = m.prefixOf(s);
        try {
          const buf = encoded.get(s);
          if (buf) {
            await writeShardBuffer(dir, prefix, buf, io);
            written++;
          } else if (!existing || existing.has(prefix)) {
            await removeShard(dir, prefix, io);
            written++;
          }
        } catch (err) {
          ok = false;
          m.markShardDirty(s); // retried on the next publish
          metrics.dirErrors.inc({ operation: "write_shard" });
          this.logError("cannot write a view shard; keeping the previous one", err);
        } finally {
          this.inflight.delete(s);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency ?? 16, work.length) }, worker));
    metrics.viewShardsWritten.inc(written);
    // Shards that failed are back in the dirty set: later publishes retry just those.
    this.cold = false;
    // Shards still dirty (failed, or changed meanwhile) may name owners the mirror dropped: keep those listed.
    try {
      await this.writeNodeTable(m.viewNodes(), m.dirtyShards().size > 0 || !ok);
    } catch (err) {
      ok = false;
      metrics.dirErrors.inc({ operation: "write_meta" });
      this.logError("cannot write the view meta; the view will go stale (the plugin fails open)", err);
    }
    return this.finish(kind, written, t0, ok);
  }

  private finish(kind: PublishResult["kind"], shards: number, t0: number, ok: boolean): PublishResult {
    const ms = performance.now() - t0;
    this.opts.metrics.viewPublishDuration.observe({ kind }, ms / 1000);
    if (!ok) this.opts.metrics.viewPublishErrors.inc();
    return { kind, shards, ms, ok };
  }

  /** Waits for the publish in progress, if any. */
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }
}
