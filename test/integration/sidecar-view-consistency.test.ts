// The view a reader sees is always self-consistent, the way the plugin reads it: every owner id a
// shard names is in the meta (after at most one re-read of the meta), and the shard's epoch is the
// meta's. Shown while new owners keep appearing, and across a sidecar restart on the same directory.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { decodeMeta, decodeShard, readMeta, type ViewMeta } from "../../lib/view/index.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";

const quiet = pino({ level: "silent" });
let dir = "";
const running: Sidecar[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.close().catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function meta(): Promise<ViewMeta | null> {
  try {
    return decodeMeta(await readFile(join(dir, "view", "meta"), "utf8"));
  } catch {
    return null;
  }
}

/** Reads like the plugin until stopped; returns the inconsistencies it saw and how many shard reads it made. */
function watchView(): { stop(): Promise<{ reads: number; bad: string[] }> } {
  let running = true;
  let reads = 0;
  const bad: string[] = [];
  const loop = (async () => {
    while (running) {
      const m = await meta();
      if (!m) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      const names = await readdir(join(dir, "view", "shards")).catch(() => [] as string[]);
      for (const name of names.filter((n) => /^[0-9a-f]+$/.test(n))) {
        let shard;
        try {
          shard = decodeShard(await readFile(join(dir, "view", "shards", name)));
        } catch {
          continue; // removed between readdir and read: a missing shard is "no session"
        }
        reads++;
        const fits = (mm: ViewMeta) =>
          shard.epoch === mm.epoch && shard.sessions.every((s) => mm.nodes.some((n) => n.id === s.node));
        if (fits(m)) continue;
        const again = await meta(); // the plugin re-reads the meta once
        if (again && fits(again)) continue;
        bad.push(
          `${name}: epoch ${shard.epoch} vs ${again?.epoch}; owners ${[...new Set(shard.sessions.map((s) => s.node))]} vs ${again?.nodes.map((n) => n.id)}`,
        );
      }
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { reads, bad };
    },
  };
}

async function put(sc: Sidecar, id: string, node: string, boot: string): Promise<void> {
  const r = await fetch(`${sc.url}/v1/sessions/${encodeURIComponent(id)}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ node, boot }),
  });
  expect(r.status).toBe(200);
}

describe("view consistency", () => {
  it("new owners are in the meta before any shard names them; a restarted sidecar keeps the epoch", async () => {
    dir = await mkdtemp(join(tmpdir(), "mcpa-consistency-"));
    const config = { dir, port: 0, shardBits: 4 as const, metaIntervalMs: 200 };
    const a = await startSidecar(config, { logger: quiet });
    running.push(a);
    for (let i = 0; i < 300 && !a.ready(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(a.ready()).toBe(true);
    const watch = watchView();
    // Every session on a node (or a boot) the view has not seen yet: a new owner each time.
    for (let i = 0; i < 120; i++) await put(a, `s-${i}`, `http://10.9.${i % 40}.1:3000`, `boot-${i % 3}`);
    await new Promise((r) => setTimeout(r, 300));
    const epochBefore = (await readMeta(dir))!.epoch;
    await a.close();
    running.splice(0);

    const b = await startSidecar(config, { logger: quiet });
    running.push(b);
    await new Promise((r) => setTimeout(r, 400));
    for (let i = 0; i < 40; i++) await put(b, `t-${i}`, `http://10.8.${i}.1:3000`, "boot-x");
    await new Promise((r) => setTimeout(r, 300));
    const { reads, bad } = await watch.stop();
    expect(reads).toBeGreaterThan(50);
    expect(bad).toEqual([]);
    expect((await readMeta(dir))!.epoch).toBe(epochBefore);
  });
});
