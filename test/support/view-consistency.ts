// Watches a shared directory the way the plugin reads it, for tests of the sidecar's publishing order.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { decodeMeta, decodeShard } from "../../lib/view/index.ts";
import { sleep } from "../../dev/poll.ts";

export interface ViewConsistency {
  checks: number;
  /** Observations where a shard named an owner id the meta did not list, or another epoch. */
  inconsistent: string[];
}

/**
 * Polls the shared directory as the plugin reads it (meta, then shards) and records every moment a
 * shard references an owner the meta does not list: the plugin treats that as an unusable view.
 */
export function watchViewConsistency(shared: string, everyMs = 2): { stop(): Promise<ViewConsistency> } {
  let stopped = false;
  const out: ViewConsistency = { checks: 0, inconsistent: [] };
  const loop = (async () => {
    while (!stopped) {
      try {
        const meta = decodeMeta(readFileSync(join(shared, "view", "meta"), "utf8"));
        const ids = new Set(meta.nodes.map((n) => n.id));
        for (const f of readdirSync(join(shared, "view", "shards"))) {
          if (f.startsWith(".")) continue;
          let shard;
          try {
            shard = decodeShard(readFileSync(join(shared, "view", "shards", f)));
          } catch {
            continue; // replaced between listing and reading
          }
          if (shard.epoch !== meta.epoch)
            out.inconsistent.push(`${new Date().toISOString()} shard ${f}: epoch ${shard.epoch} != meta ${meta.epoch}`);
          for (const r of shard.sessions) {
            if (!ids.has(r.node))
              out.inconsistent.push(
                `${new Date().toISOString()} shard ${f}: owner id ${r.node} not in meta generation ${meta.generation} (ids: ${[...ids].join(",") || "none"})`,
              );
          }
        }
        out.checks++;
      } catch {
        /* no view yet */
      }
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return out;
    },
  };
}
