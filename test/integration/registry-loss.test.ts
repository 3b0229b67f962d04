// Redis loses its data (restarted empty, flushed): every live session's record comes back, idle
// ones included, whoever wrote it: the node library puts back its own sessions, the sidecar the
// ones it keeps (registered through its sessions API, learned at the edge). Real redis-server,
// real sidecar, reference nodes on Redis directly and on the sessions API, the real SDK client.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { Redis } from "ioredis";
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_MAX_BACKOFF_MS,
  cookieValueFor,
  decodeSession,
  sessionHashHex,
  sessionKey,
  MARKER_KEY,
} from "../../lib/registry/index.ts";
import { nodeRedisOptions } from "../../node/src/index.ts";
import { RETRY_MS } from "../../node/src/sessions.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";
import { startRedis, type TestRedis } from "../../dev/redis.ts";
import { waitUntil } from "../../dev/poll.ts";
import { scrapeMetric } from "../../dev/metrics.ts";
import { formatEventBatch } from "../support/view-writers.ts";
import { connectClient, startNode, type McpTestClient } from "./node-redis-helper.ts";

const HEARTBEAT_MS = 200; // the node checks for a loss at each heartbeat
const LOSS_CHECK_MS = 200; // the sidecar's --loss-check-interval
const REGISTRY_TIMEOUT_MS = 300;
const NODE_MAX_BACKOFF_MS = nodeRedisOptions("redis://127.0.0.1:1", {
  sessionTtlMs: 60_000,
  nodeTtlMs: 600,
  timeoutMs: REGISTRY_TIMEOUT_MS,
  onError: () => {},
}).maxBackoffMs!;
const EDGE_URL = "http://127.0.0.1:9"; // a server without the library: only its edge-learned record exists

let redis: TestRedis;
let raw: Redis;
let dir: string;
let sc: Sidecar;
let direct: Awaited<ReturnType<typeof startNode>>;
let viaApi: Awaited<ReturnType<typeof startNode>>;

beforeAll(async () => {
  redis = await startRedis();
  raw = new Redis(redis.url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  raw.on("error", () => undefined); // Redis is restarted on purpose
  dir = await mkdtemp(join(tmpdir(), "mcpa-loss-"));
  sc = await startSidecar(
    {
      dir,
      port: 0,
      redisUrl: redis.url,
      lossCheckIntervalMs: LOSS_CHECK_MS,
      eventIntervalMs: 10,
      metaIntervalMs: 200,
      probePath: "off",
    },
    { logger: pino({ level: process.env.LOSS_LOG ?? "silent" }) },
  );
  await waitUntil("sidecar ready", () => sc.ready(), 5000);
  const affinity = { registryTimeoutMs: REGISTRY_TIMEOUT_MS };
  direct = await startNode({ name: "direct", redisUrl: redis.url, heartbeatMs: HEARTBEAT_MS }, { affinity });
  viaApi = await startNode({ name: "via-api", sidecarUrl: sc.url, heartbeatMs: HEARTBEAT_MS }, { affinity });
});
afterAll(async () => {
  await direct?.shutdown();
  await viaApi?.shutdown();
  await sc?.close();
  raw?.disconnect();
  await redis?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The plugin's learn of a session on a server without the library, as an event batch. */
let slot = 0;
async function learnAtEdge(id: string): Promise<void> {
  await mkdir(join(dir, "events"), { recursive: true });
  const batch = formatEventBatch({
    t: Date.now(),
    learned: [{ id, hash: sessionHashHex(id), cookie: cookieValueFor(EDGE_URL) }],
    closed: [],
    decisions: {},
    dropped: 0,
  });
  await writeFile(join(dir, "events", `s-${slot++}.evt`), batch);
}

async function missing(ids: string[]): Promise<string[]> {
  const present = await Promise.all(ids.map((id) => raw.exists(sessionKey(id)).catch(() => 0)));
  return ids.filter((_, i) => present[i] !== 1);
}

/** Waits until every record is back, within `boundMs`; returns how long it took. */
async function allBack(ids: string[], boundMs: number): Promise<number> {
  const t0 = Date.now();
  let left: string[] = [];
  try {
    await waitUntil(
      `all ${ids.length} session records back`,
      async () => (left = await missing(ids)).length === 0,
      boundMs,
      25,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; still missing: ${left.map((id) => roles.get(id)).join(", ")}`, {
      cause: err,
    });
  }
  return Date.now() - t0;
}
/** What each session is, for failure messages (ids are secrets, even in a test's output). */
const roles = new Map<string, string>();

describe("Redis loses its data", () => {
  const clients: McpTestClient[] = [];
  const ids: string[] = [];
  const owners = new Map<string, string>(); // id -> boot of the node that holds it

  it("restarted empty: every live session's record comes back, idle ones included, within the writers' timings", async () => {
    for (const node of [direct, viaApi])
      for (let i = 0; i < 3; i++) {
        const c = await connectClient(node.url);
        expect(await c.counter()).toBe(1);
        clients.push(c);
        ids.push(c.sid);
        owners.set(c.sid, node.affinity.bootId);
        roles.set(c.sid, `${node === direct ? "direct" : "api"}-${i}`);
      }
    ids.push("edge-learned-1");
    roles.set("edge-learned-1", "edge");
    await learnAtEdge("edge-learned-1");
    await waitUntil("every record written", async () => (await missing(ids)).length === 0, 5000);
    // Every writer has read the marker once (a loss is a change from what it saw).
    await waitUntil("marker written", () => raw.get(MARKER_KEY), 2000);
    await new Promise((r) => setTimeout(r, 2 * Math.max(HEARTBEAT_MS, LOSS_CHECK_MS)));

    await redis.stop(true);
    await redis.start();
    // Only the first session of each node is used after the restart; the others stay idle.
    expect(await clients[0].counter()).toBe(2);
    expect(await clients[3].counter()).toBe(2);
    // Bound: each writer reconnects within its backoff cap (the sidecar's is the longer), checks
    // at once and at every check interval, then writes in batches of one command each.
    const bound =
      Math.max(DEFAULT_MAX_BACKOFF_MS, NODE_MAX_BACKOFF_MS) +
      2 * Math.max(HEARTBEAT_MS, LOSS_CHECK_MS) +
      DEFAULT_COMMAND_TIMEOUT_MS;
    const took = await allBack(ids, bound);
    expect(took).toBeLessThanOrEqual(bound);
    for (const id of ids.slice(0, 6)) expect(decodeSession((await raw.get(sessionKey(id)))!).boot).toBe(owners.get(id));
    expect(decodeSession((await raw.get(sessionKey("edge-learned-1")))!).source).toBe("edge");
    expect(await scrapeMetric(`${sc.url}/metrics`, "mcp_affinity_registry_losses_total")).toBeGreaterThanOrEqual(1);
    // The sessions still work on their nodes.
    for (const c of clients) expect(await c.counter()).toBeGreaterThan(1);
  });

  it("flushed without a reconnect: the marker check notices, within one check interval plus the writes", async () => {
    const before = await scrapeMetric(`${sc.url}/metrics`, "mcp_affinity_registry_losses_total", 'reason="marker"');
    await raw.flushall();
    const bound = 2 * Math.max(HEARTBEAT_MS, LOSS_CHECK_MS) + DEFAULT_COMMAND_TIMEOUT_MS;
    const took = await allBack(ids, bound);
    expect(took).toBeLessThanOrEqual(bound);
    expect(
      await scrapeMetric(`${sc.url}/metrics`, "mcp_affinity_registry_losses_total", 'reason="marker"'),
    ).toBeGreaterThan(before);
  });

  it("a session whose registration failed while Redis was down is registered once it is back, without a request", async () => {
    await redis.stop(true);
    const lateDirect = await connectClient(direct.url);
    const lateApi = await connectClient(viaApi.url);
    const late = [lateDirect.sid, lateApi.sid];
    roles.set(lateDirect.sid, "late-direct").set(lateApi.sid, "late-api");
    const failedAt = Date.now();
    await redis.start();
    // Nothing is sent on these sessions. The direct node retries at its reconnect; the API node's
    // retry runs every RETRY_MS once the sidecar's registry is back (within its backoff cap).
    const bound = DEFAULT_MAX_BACKOFF_MS + 2 * RETRY_MS + DEFAULT_COMMAND_TIMEOUT_MS;
    await allBack([...ids, ...late], bound - (Date.now() - failedAt));
    expect(viaApi.affinity.stats().registrations.failed).toBeGreaterThanOrEqual(1);
    for (const c of [lateDirect, lateApi]) expect(await c.counter()).toBe(1);
    for (const c of [...clients, lateDirect, lateApi]) await c.close();
  });
});
