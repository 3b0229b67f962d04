// Failure behaviour of the sidecar, each with the real Redis: Redis down at start, Redis down
// later and back, corrupt and foreign files, unreadable event lines, a full disk; and the CLI.
import { afterEach, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile, mkdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import {
  RedisRegistry,
  cookieValueFor,
  sessionHash,
  sessionHashHex,
  type SessionRecord,
} from "../../lib/registry/index.ts";
import { defaultViewFs, readMeta, type EventBatch, type ViewFs } from "../../lib/view/index.ts";
import { formatEventBatch, lookupSession } from "../support/view-writers.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";
import { sidecarTestHooks } from "../../sidecar/src/sidecar.ts";
import type { SidecarConfig } from "../../sidecar/src/config.ts";
import { freePort } from "../../dev/net.ts";
import { startRedis, type TestRedis } from "../../dev/redis.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { scrapeMetric } from "../../dev/metrics.ts";

const URL_A = "http://10.2.0.1:3000";
const COOKIE_A = cookieValueFor(URL_A);
const rec = (over: Partial<SessionRecord> = {}): SessionRecord => ({
  node: URL_A,
  cookie: COOKIE_A,
  boot: "A1",
  created: Date.now(),
  source: "node",
  ...over,
});
const ev = (over: Partial<EventBatch>): string =>
  formatEventBatch({ t: Date.now(), learned: [], closed: [], decisions: {}, dropped: 0, ...over });

let dir: string;
let logLines: string[];
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function start(over: Partial<SidecarConfig>, fs?: ViewFs): Promise<Sidecar> {
  dir ??= await mkdtemp(join(tmpdir(), "mcpa-scf-"));
  const stream = new Writable({
    write(chunk, _e, cb) {
      logLines.push(chunk.toString());
      cb();
    },
  });
  const s = await startSidecar(
    {
      dir,
      port: 0,
      metaIntervalMs: 100,
      eventIntervalMs: 10,
      nodeTtlMs: 300,
      downLimitMs: 600,
      nodePollIntervalMs: 50,
      probePath: "off",
      ...over,
    }, // made-up node URLs: no probing
    { logger: pino({ level: "debug" }, stream), fs },
  );
  cleanup.push(() => s.close());
  return s;
}
/** The sidecar's /healthz answer (registry status, synced, counts). */
async function health(sc: Sidecar): Promise<{ registryStatus: string; synced: boolean }> {
  return (await fetch(`${sc.url}/healthz`)).json();
}
async function fresh(): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), "mcpa-scf-"));
  logLines = [];
}
async function redisFor(): Promise<{ redis: TestRedis; writer: RedisRegistry }> {
  const redis = await startRedis();
  const writer = new RedisRegistry({ url: redis.url, maxBackoffMs: 100, connectTimeoutMs: 500 });
  cleanup.push(() => redis.close());
  cleanup.push(() => writer.close());
  return { redis, writer };
}
const metric = (s: Sidecar, name: string, labels = ""): Promise<number> =>
  scrapeMetric(`${s.url}/metrics`, name, labels);
let slot = 100;
async function putEvent(text: string, name = `e-${slot++}.evt`): Promise<string> {
  await mkdir(join(dir, "events"), { recursive: true });
  await writeFile(join(dir, "events", name), text);
  return name;
}
const events = () => readdir(join(dir, "events"));

describe("sidecar failure behaviour", () => {
  it("Redis down at start: publishes an empty view, is not ready, keeps retrying, syncs once Redis is up", async () => {
    await fresh();
    const { redis, writer } = await redisFor();
    await writer.registerSession("before", rec());
    await redis.stop(true); // data is gone; what matters is the sidecar's behaviour
    const sc = await start({ redisUrl: redis.url });
    const meta = await waitUntil("empty view published", () => readMeta(dir), 3000);
    expect(meta.epoch).toBe(sc.epoch);
    expect((await fetch(`${sc.url}/readyz`)).status).toBe(503);
    expect((await fetch(`${sc.url}/healthz`)).status).toBe(200);
    expect(sc.ready()).toBe(false);
    await redis.start();
    await waitUntil(
      "writer reconnected",
      () =>
        writer.registerSession("after", rec()).then(
          () => true,
          () => false,
        ),
      5000,
    );
    await waitUntil("ready after Redis came up", () => sc.ready(), 8000);
    await waitUntil("synced session in view", () => lookupSession(dir, sessionHash("after")), 3000);
    expect((await fetch(`${sc.url}/readyz`)).status).toBe(200);
  });

  it("Redis down later: keeps the view fresh and nodes up, counts errors, keeps events, resyncs on reconnect", async () => {
    await fresh();
    const { redis, writer } = await redisFor();
    const sc = await start({ redisUrl: redis.url });
    await waitUntil("ready", () => sc.ready(), 3000);
    await writer.heartbeat(
      { url: URL_A, cookie: COOKIE_A, boot: "A1", name: "a", state: "up", seen: Date.now() },
      60_000,
    );
    await writer.registerSession("kept", rec());
    await waitUntil("kept in view", () => lookupSession(dir, sessionHash("kept")));

    await redis.stop(true);
    await waitUntil("registry down", async () => (await health(sc)).registryStatus === "down", 3000);
    // An event that needs Redis arrives during the outage.
    const learned = { id: "learned-in-outage", hash: sessionHashHex("learned-in-outage"), cookie: COOKIE_A };
    await putEvent(ev({ learned: [learned], decisions: { pin: 4 } }));
    const m1 = (await readMeta(dir))!;
    await sleep(800); // longer than nodeTtl + downLimit: heartbeats must not age while Redis is away
    const m2 = (await readMeta(dir))!;
    expect(m2.published).toBeGreaterThan(m1.published);
    // Still rewritten (every metaIntervalMs) while Redis stays away: the plugin keeps a fresh view.
    await waitUntil(
      "meta rewritten again during the outage",
      async () => (await readMeta(dir))!.published > m2.published,
      3000,
    );
    expect(m2.nodes.find((n) => n.cookie === COOKIE_A)?.state).toBe("up");
    expect(await lookupSession(dir, sessionHash("kept"))).not.toBeNull();
    expect(await events()).toHaveLength(1); // kept, not lost
    expect(await metric(sc, "mcp_affinity_redis_errors_total", '{operation="register"}')).toBeGreaterThan(0);
    expect(await metric(sc, "mcp_affinity_edge_decisions_total", '{reason="pin"}')).toBe(0); // not counted until applied
    expect(sc.ready()).toBe(true);

    const resyncs = await metric(sc, "mcp_affinity_reconciles_total", '{result="ok"}');
    await redis.start(); // empty: everything the sidecar knows must be rebuilt from what is written now
    await waitUntil("reconnected", async () => (await health(sc)).registryStatus === "ready", 8000);
    await waitUntil("pending event applied", async () => (await events()).length === 0, 5000);
    expect(await metric(sc, "mcp_affinity_edge_decisions_total", '{reason="pin"}')).toBe(4);
    expect(await writer.lookupSession("learned-in-outage")).toMatchObject({ source: "edge", cookie: COOKIE_A });
    // The first resync after the outage spares what the (restarted, empty) Redis does not have
    // yet: nodes re-register their sessions on reconnect, and dropping them first misroutes.
    await waitUntil(
      "resync after the outage",
      async () => (await metric(sc, "mcp_affinity_reconciles_total", '{result="ok"}')) > resyncs,
      5000,
    );
    await sleep(300); // a publish, had the resync dropped anything
    expect(await lookupSession(dir, sessionHash("kept"))).not.toBeNull();
    // Redis came back empty: the sidecar notices the loss (at reconnection, or by its next loss check),
    // and the scan after it spares too. "kept" is a node library node's session (it heartbeated):
    // that node puts it back itself, the sidecar does not.
    await waitUntil("loss noticed", async () => (await metric(sc, "mcp_affinity_registry_losses_total")) > 0, 5000);
    await sidecarTestHooks(sc).reconcile();
    expect(await metric(sc, "mcp_affinity_sessions_restored_total", `{result="put"}`)).toBe(0);
    // A scan after that drops what is still missing, without a restart.
    await sidecarTestHooks(sc).reconcile();
    await waitUntil("resynced", async () => (await lookupSession(dir, sessionHash("kept"))) === null, 5000);
    await writer.registerSession("new-after", rec());
    await waitUntil("live changes again", () => lookupSession(dir, sessionHash("new-after")), 3000);
  });

  it("counts, logs and deletes corrupt event files; ignores foreign files; applies the good ones", async () => {
    await fresh();
    const { redis, writer } = await redisFor();
    const sc = await start({ redisUrl: redis.url });
    await waitUntil("ready", () => sc.ready());
    await putEvent("this is not an event batch\nend\n", "e-1.evt");
    await putEvent(Buffer.from([0xff, 0x00, 0x13, 0x37]).toString("latin1") + "\nend\n", "e-2.evt");
    await writeFile(join(dir, "events", "notes.txt"), "someone else's file");
    await putEvent(
      ev({ learned: [{ id: "good", hash: sessionHashHex("good"), cookie: COOKIE_A }], decisions: { pass: 1 } }),
      "e-3.evt",
    );
    await waitUntil("one event file", async () => (await events()).length === 1, 3000);
    expect(await events()).toEqual(["notes.txt"]);
    expect(await metric(sc, "mcp_affinity_event_files_total", '{result="corrupt"}')).toBe(2);
    expect(await metric(sc, "mcp_affinity_event_files_total", '{result="applied"}')).toBe(1);
    expect(await writer.lookupSession("good")).not.toBeNull();
    expect(logLines.some((l) => l.includes("corrupt event file deleted"))).toBe(true);
    // Foreign files in view/ and learned/ do not disturb publishing either.
    await writeFile(join(dir, "view", "shards", "README"), "x");
    await writeFile(join(dir, "learned", "zzzz"), "x");
    const g = (await readMeta(dir))!.generation;
    await waitUntil("two more generations", async () => (await readMeta(dir))!.generation > g + 1);
    expect(await lookupSession(dir, sessionHash("good"))).not.toBeNull();
  });

  it("skips and counts an unreadable event line, applying the rest of its batch", async () => {
    await fresh();
    const { redis, writer } = await redisFor();
    const sc = await start({ redisUrl: redis.url });
    await waitUntil("ready", () => sc.ready());
    const good = ev({
      learned: [{ id: "line-ok", hash: sessionHashHex("line-ok"), cookie: COOKIE_A }],
      decisions: { pin: 2, unknown: 1 },
    });
    await putEvent(good.replace("d unknown 1\n", "d unknown 1\nl broken-line-without-fields\n"));
    await waitUntil("no event files", async () => (await events()).length === 0);
    expect(await metric(sc, "mcp_affinity_event_bad_lines_total")).toBe(1);
    expect(await metric(sc, "mcp_affinity_edge_decisions_total", '{reason="pin"}')).toBe(2);
    expect(await writer.lookupSession("line-ok")).not.toBeNull();
  });

  it("a full disk: publish errors are logged and counted, the previous view stays, recovery is automatic", async () => {
    await fresh();
    const { redis, writer } = await redisFor();
    let full = false;
    const enospc = () => Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    const fs: ViewFs = {
      ...defaultViewFs,
      writeFile: async (p, d) => {
        if (full) throw enospc();
        return defaultViewFs.writeFile(p, d);
      },
    };
    const sc = await start({ redisUrl: redis.url }, fs);
    await waitUntil("ready", () => sc.ready());
    await writer.registerSession("before-full", rec());
    await waitUntil("before-full in view", () => lookupSession(dir, sessionHash("before-full")));
    full = true;
    await sidecarTestHooks(sc).publishIdle(); // a write already past the seam may still land: read after it
    const before = (await readMeta(dir))!;
    await writer.registerSession("during-full", rec());
    await sleep(400);
    expect(await metric(sc, "mcp_affinity_view_publish_errors_total")).toBeGreaterThan(0);
    expect(await metric(sc, "mcp_affinity_shared_dir_errors_total", '{operation="write_meta"}')).toBeGreaterThan(0);
    expect(logLines.some((l) => l.includes("ENOSPC"))).toBe(true);
    expect(await readMeta(dir)).toEqual(before); // intact, going stale: the plugin fails open
    expect(await lookupSession(dir, sessionHash("before-full"))).not.toBeNull();
    expect((await readdir(join(dir, "view", "shards"))).filter((f) => f.startsWith("."))).toEqual([]);
    full = false;
    await waitUntil("shard retried after recovery", () => lookupSession(dir, sessionHash("during-full")), 3000);
    // shards are written before the meta that announces them: wait for the meta too
    await waitUntil(
      "meta republished after recovery",
      async () => (await readMeta(dir))!.published > before.published,
      3000,
    );
  });
});

function runCli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ["bin/mcp-affinity-sidecar.js", ...args], {
    cwd: join(import.meta.dirname, "../.."),
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

describe("sidecar CLI", () => {
  it("--help lists every setting with its environment variable", async () => {
    dir = await mkdtemp(join(tmpdir(), "mcpa-cli-"));
    const r = runCli(["--help"]);
    expect(await r.exited).toBe(0);
    for (const s of [
      "--dir",
      "MCP_AFFINITY_DIR",
      "--redis-url",
      "MCP_AFFINITY_REDIS_URL",
      "--api-token",
      "--shard-bits",
      "--down-limit",
      "--traefik-api",
    ]) {
      expect(r.out()).toContain(s);
    }
  });

  it("a bad setting gives one line naming it and exit code 2", async () => {
    dir = await mkdtemp(join(tmpdir(), "mcpa-cli-"));
    for (const [args, env, name] of [
      [["--shard-bits", "10"], {}, "--shard-bits"],
      [[], { MCP_AFFINITY_NODE_TTL: "soon" }, "MCP_AFFINITY_NODE_TTL"],
      [["--host", "0.0.0.0"], {}, "--api-token"],
      [["--redis-url", "http://x"], {}, "--redis-url"],
      [["--nope"], {}, "--nope"],
    ] as Array<[string[], Record<string, string>, string]>) {
      const r = runCli([...args, "--dir", dir], env);
      expect(await r.exited, name).toBe(2);
      const lines = r.err().trim().split("\n");
      expect(lines, r.err()).toHaveLength(1);
      expect(lines[0]).toContain(name);
      expect(r.err()).not.toMatch(/\n\s+at /);
    }
  });

  it("SIGTERM: flushes events, leaves the last view in place, exits 0", async () => {
    await fresh();
    const port = await freePort();
    const r = runCli(["--dir", dir, "--port", String(port), "--event-interval", "60s", "--meta-interval", "200ms"]);
    cleanup.push(async () => {
      if (r.child.exitCode === null) r.child.kill("SIGKILL");
    });
    await waitUntil(
      "CLI ready",
      async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200,
      8000,
    );
    // The drain interval is long: only the shutdown flush can apply this batch.
    await putEvent(ev({ decisions: { pin: 1 } }));
    r.child.kill("SIGTERM");
    expect(await r.exited).toBe(0);
    expect(await events()).toEqual([]);
    const meta = await readMeta(dir);
    expect(meta).not.toBeNull();
    expect(r.out()).toContain("the last view stays in place");
    expect(await readFile(join(dir, "view", "meta"), "latin1")).toContain("MCPAVIEW 1");
  });
});
