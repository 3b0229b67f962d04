// The learned/ janitor: the plugin writes a file per session it learned (so every instance can
// route it before the registry round trip ends); once the view holds the session (its shard is on
// disk) the file is deleted, as is one too old or one that stays unreadable. Expired tombstones
// leave the mirror on the same tick.
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { deleteLearned, listLearned, viewPaths } from "../../lib/view/index.ts";
import { hexToKey } from "../../lib/registry/index.ts";
import type { Periodic, SidecarContext } from "./context.ts";
import type { Publisher } from "./publisher.ts";
import { errFields } from "../../lib/errors.ts";

/** An unreadable file younger than this may be mid-write by the plugin: it is left alone. */
const UNREADABLE_GRACE_MS = 5000;

export class LearnedJanitor {
  constructor(
    private readonly ctx: SidecarContext,
    private readonly publisher: Publisher,
  ) {}

  /** Starts the sweeps: once a second. */
  start(ticks: Periodic): void {
    ticks.every(1000, () => this.sweep());
  }

  private async sweep(): Promise<void> {
    const { cfg, fs, mirror, metrics, log, throttled } = this.ctx;
    if (mirror.expireTombstones()) this.ctx.changed();
    if (!this.publisher.published) return;
    const pending = this.publisher.pendingShards();
    const now = Date.now();
    const invalid: string[] = [];
    try {
      const entries = await listLearned(cfg.dir, { fs, withMtime: true, onInvalid: (n) => invalid.push(n) });
      metrics.learnedFiles.set(entries.length + invalid.length);
      for (const f of entries) {
        let reason: "published" | "expired" | null = null;
        if (mirror.isPublished(hexToKey(f.hashHex), pending)) reason = "published";
        else if (now - (f.mtimeMs ?? now) > cfg.learnedMaxAgeMs) reason = "expired";
        if (reason) {
          await deleteLearned(cfg.dir, f.name, { fs, hashHex: f.hashHex });
          metrics.learnedDeleted.inc({ reason });
        }
      }
      for (const name of invalid) {
        const st = await stat(join(viewPaths(cfg.dir).learned, name)).catch(() => null);
        if (st && now - st.mtimeMs > UNREADABLE_GRACE_MS) {
          await deleteLearned(cfg.dir, name, { fs });
          metrics.learnedDeleted.inc({ reason: "invalid" });
          throttled("learned-invalid", () => log.warn({ file: name }, "unreadable learned/ file deleted"));
        }
      }
    } catch (err) {
      metrics.dirErrors.inc({ operation: "learned" });
      throttled("learned", () => log.warn({ err: errFields(err) }, "cannot clean learned/"));
    }
  }
}
