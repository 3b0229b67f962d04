// View publishing at scale: fill the sidecar's mirror with N sessions (default 1,000,000), then
// measure a cold publish, a one-change publish, a meta-only refresh, and the process memory.
// With --redis, also the whole sidecar against a real redis-server: load N keys, start, time to ready.
//
//   npx tsx bench/view-publish.ts [--sessions 1000000] [--shard-bits 12] [--nodes 3] [--redis]
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { bool, int } from "../lib/settings/index.ts";
import { readFlags } from "./lib/flags.ts";
import {
  cookieValueFor,
  encodeSession,
  RedisRegistry,
  sessionHash,
  type SessionRecord,
} from "../lib/registry/index.ts";
import { readMeta } from "../lib/view/index.ts";
import { lookupSession } from "../test/support/view-writers.ts";
import { makeConfig, SIDECAR_SETTINGS } from "../sidecar/src/config.ts";
import { createMetrics } from "../sidecar/src/metrics.ts";
import { Mirror } from "../sidecar/src/mirror.ts";
import { Publisher } from "../sidecar/src/publisher.ts";

const flags = readFlags("view-publish", "npx tsx bench/view-publish.ts [--flag value ...]", {
  sessions: { name: "sessions", type: int(1, 20_000_000), def: 1_000_000, help: "sessions in the mirror" },
  shardBits: SIDECAR_SETTINGS.shardBits,
  nodes: { name: "nodes", type: int(1, 250), def: 3, help: "nodes the sessions are spread over" },
  redis: { name: "redis", type: bool, def: false, help: "also the whole sidecar against a real redis-server" },
});
const N = flags.sessions;
const SHARD_BITS = flags.shardBits;
const NODES = flags.nodes;
const WITH_REDIS = flags.redis;

const mb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const ms = (x: number) => `${x.toFixed(1)} ms`;
const mem = () => {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed };
};
const urls = Array.from({ length: NODES }, (_, i) => `http://10.9.0.${i + 1}:3000`);
const record = (i: number): SessionRecord => ({
  node: urls[i % NODES],
  cookie: cookieValueFor(urls[i % NODES]),
  boot: `boot-${i % NODES}`,
  created: Date.now(),
  source: "node",
});
const idOf = (i: number) => `bench-session-${i.toString(36)}-${(i * 2654435761) >>> 0}`;

async function inProcess(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "mcpa-bench-view-"));
  const log = pino({ level: "silent" });
  const mirror = new Mirror(makeConfig({ shardBits: SHARD_BITS, downLimitMs: 300_000 }));
  const metrics = createMetrics();
  const publisher = new Publisher(mirror, { dir, epoch: 42, log, metrics });
  const m0 = mem();

  const t = performance.now();
  for (let i = 0; i < N; i++) mirror.applySession(idOf(i), record(i));
  const fillMs = performance.now() - t;
  const m1 = mem();

  const cold = await publisher.publish();
  const files = (await readdir(join(dir, "view", "shards"))).length;

  const one: number[] = [];
  for (let k = 0; k < 20; k++) {
    mirror.applySession(`bench-new-${k}`, record(k));
    one.push((await publisher.publish()).ms);
  }
  one.sort((a, b) => a - b);
  const metaOnly: number[] = [];
  for (let k = 0; k < 20; k++) metaOnly.push((await publisher.publish()).ms);
  metaOnly.sort((a, b) => a - b);
  const m2 = mem();

  // Spot check through the reader the tests use.
  const meta = await readMeta(dir);
  const hit = await lookupSession(dir, sessionHash(idOf(12345 % N)));
  if (!meta || !hit || hit.closed) throw new Error("published view does not hold a known session");

  console.log(`view publish, in process: ${N.toLocaleString("en")} sessions, ${NODES} nodes, shardBits ${SHARD_BITS}`);
  console.log(`  mirror fill (hash + insert)  ${ms(fillMs)}  (${((fillMs * 1000) / N).toFixed(2)} us/session)`);
  console.log(`  cold publish                 ${ms(cold.ms)}  (${files} shard files, ok=${cold.ok})`);
  console.log(`  one-change publish           median ${ms(one[10])}, max ${ms(one[19])}  (1 shard + meta)`);
  console.log(`  meta-only refresh            median ${ms(metaOnly[10])}, max ${ms(metaOnly[19])}`);
  console.log(`  memory before fill           rss ${mb(m0.rss)}, heap ${mb(m0.heap)}`);
  console.log(
    `  memory after fill            rss ${mb(m1.rss)}, heap ${mb(m1.heap)}  (+${((m1.heap - m0.heap) / N).toFixed(0)} B heap/session)`,
  );
  console.log(`  memory after publishing      rss ${mb(m2.rss)}, heap ${mb(m2.heap)}`);
  await rm(dir, { recursive: true, force: true });
}

async function withRedis(): Promise<void> {
  const { startRedis } = await import("../dev/redis.ts");
  const { Redis } = await import("ioredis");
  const { startSidecar, sidecarTestHooks } = await import("../sidecar/src/sidecar.ts");
  const redis = await startRedis();
  const dir = await mkdtemp(join(tmpdir(), "mcpa-bench-sc-"));
  const client = new Redis(redis.url);
  try {
    let t = performance.now();
    for (let i = 0; i < N; i += 10_000) {
      const p = client.pipeline();
      for (let j = i; j < Math.min(N, i + 10_000); j++)
        p.set(`mcp:session:${idOf(j)}`, encodeSession(record(j)), "PX", 86_400_000);
      await p.exec();
    }
    const loadMs = performance.now() - t;
    t = performance.now();
    const sc = await startSidecar({ dir, port: 0, redisUrl: redis.url, logLevel: "warn", shardBits: SHARD_BITS });
    while (!sc.ready()) await new Promise((r) => setTimeout(r, 20));
    const readyMs = performance.now() - t;
    const rss = process.memoryUsage().rss;
    const writer = new RedisRegistry({ url: redis.url }); // plays a node
    await writer.lookupSession("warm-up"); // connected before the clock starts
    t = performance.now();
    await client.set(`mcp:session:one-more`, encodeSession(record(1)));
    await writer.registerSession("one-more-published", record(1));
    while (!(await lookupSession(dir, sessionHash("one-more-published")))) await new Promise((r) => setImmediate(r));
    const changeMs = performance.now() - t;
    t = performance.now();
    await sidecarTestHooks(sc).reconcile();
    const reconcileMs = performance.now() - t;
    console.log(`whole sidecar with redis-server: ${N.toLocaleString("en")} sessions`);
    console.log(`  load keys into Redis         ${ms(loadMs)}`);
    console.log(`  start -> ready (SCAN + publish) ${ms(readyMs)}`);
    console.log(`  registration -> in view      ${ms(changeMs)}`);
    console.log(`  full reconcile (SCAN)        ${ms(reconcileMs)}`);
    console.log(`  process rss (bench + sidecar) ${mb(rss)}`);
    await writer.close();
    await sc.close();
  } finally {
    client.disconnect();
    await redis.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await inProcess();
if (WITH_REDIS) await withRedis();
