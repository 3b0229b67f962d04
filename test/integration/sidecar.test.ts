// The sidecar against a real redis-server: mirror, view, events, liveness, metrics and the API.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import { mkdtemp, readdir, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { Redis } from "ioredis";
import {
  RedisRegistry,
  cookieValueFor,
  sessionHash,
  sessionHashHex,
  type NodeRecord,
  type SessionRecord,
} from "../../lib/registry/index.ts";
import { readMeta, type EventBatch } from "../../lib/view/index.ts";
import { formatEventBatch, lookupSession, writeLearned } from "../support/view-writers.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";
import { sidecarTestHooks } from "../../sidecar/src/sidecar.ts";
import type { SidecarConfig } from "../../sidecar/src/config.ts";
import { startRedis, type TestRedis } from "../../dev/redis.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startPythonServer } from "../support/test-server.ts";
import { connectClient } from "./node-redis-helper.ts";
import { metricValues, scrapeMetric, scrapeMetrics } from "../../dev/metrics.ts";
import { UNKNOWN_BOOT_TAG, wrapSessionId } from "../../lib/token/index.ts";

const URL_A = "http://10.1.0.1:3000";
const URL_B = "http://10.1.0.2:3000";
const COOKIE_A = cookieValueFor(URL_A);
const COOKIE_B = cookieValueFor(URL_B);

let redis: TestRedis;
let raw: Redis;
let writer: RedisRegistry; // plays the node library
beforeAll(async () => {
  redis = await startRedis();
  raw = new Redis(redis.url);
  raw.on("error", () => undefined); // Redis is stopped on purpose in one test
  writer = new RedisRegistry({ url: redis.url });
});
afterAll(async () => {
  raw?.disconnect();
  await writer?.close();
  await redis?.close();
});

let dir: string;
let sc: Sidecar | null = null;
let logLines: string[] = [];
const running: Sidecar[] = [];
async function start(over: Partial<SidecarConfig> = {}): Promise<Sidecar> {
  const stream = new Writable({
    write(chunk, _enc, cb) {
      logLines.push(chunk.toString());
      cb();
    },
  });
  const s = await startSidecar(
    {
      dir,
      port: 0,
      redisUrl: redis.url,
      metaIntervalMs: 200,
      eventIntervalMs: 10,
      nodeTtlMs: 400,
      downLimitMs: 1200,
      nodePollIntervalMs: 100,
      // The node URLs here are made up: heartbeats and Traefik's API decide (probes: sidecar-probe).
      probePath: "off",
      ...over,
    },
    { logger: pino({ level: "debug" }, stream) },
  );
  running.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.close()));
  sc = null;
  await raw.flushall();
  await rm(dir, { recursive: true, force: true });
});
const newDir = async () => {
  dir = await mkdtemp(join(tmpdir(), "mcpa-sc-"));
  logLines = [];
};

const rec = (over: Partial<SessionRecord> = {}): SessionRecord => ({
  node: URL_A,
  cookie: COOKIE_A,
  boot: "A1",
  created: Date.now(),
  source: "node",
  ...over,
});
const hb = (over: Partial<NodeRecord> = {}): NodeRecord => ({
  url: URL_A,
  cookie: COOKIE_A,
  boot: "A1",
  name: "a",
  state: "up",
  seen: Date.now(),
  ...over,
});

/** The owner state the view gives a session, as the plugin would resolve it. */
async function viewOf(id: string): Promise<{ state: string; cookie: string; closed: boolean } | null> {
  const meta = await readMeta(dir);
  const hit = await lookupSession(dir, sessionHash(id));
  if (!meta || !hit) return null;
  const node = meta.nodes.find((n) => n.id === hit.node);
  return node ? { state: node.state, cookie: node.cookie, closed: hit.closed } : null;
}
const metric = (s: Sidecar, name: string, labels = ""): Promise<number> =>
  scrapeMetric(`${s.url}/metrics`, name, labels);
const ev = (over: Partial<EventBatch>): string =>
  formatEventBatch({ t: Date.now(), learned: [], closed: [], decisions: {}, dropped: 0, ...over });
let slot = 0;
async function putEvent(text: string): Promise<string> {
  const name = `s-${slot++}.evt`;
  await mkdir(join(dir, "events"), { recursive: true });
  await writeFile(join(dir, "events", name), text);
  return name;
}

describe("sidecar with Redis", () => {
  it("publishes a fresh view, gets ready, and mirrors registrations, heartbeats and closes within ms", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready(), 3000);
    const ready = await fetch(`${sc.url}/readyz`);
    expect(ready.status).toBe(200);
    expect((await fetch(`${sc.url}/healthz`)).status).toBe(200);
    const m1 = (await readMeta(dir))!;
    expect(m1.epoch).toBe(sc.epoch);
    expect(m1.shardBits).toBe(12);
    // The freshness stamp keeps moving while nothing changes.
    await waitUntil("meta refresh", async () => (await readMeta(dir))!.published > m1.published, 1000);

    await writer.heartbeat(hb());
    // Through the change channel: the next full scan (--reconcile-interval, 5 min by default) is
    // far beyond the wait, so nothing else can bring it.
    await writer.registerSession("sess-1", rec());
    const v = await waitUntil("session in view", () => viewOf("sess-1"), 2000);
    expect(v).toEqual({ state: "up", cookie: COOKIE_A, closed: false });

    await writer.heartbeat(hb({ state: "draining", seen: Date.now() }));
    await waitUntil("draining", async () => (await viewOf("sess-1"))?.state === "draining", 2000);

    await writer.closeSession("sess-1");
    await waitUntil("tombstone", async () => (await viewOf("sess-1"))?.closed === true, 2000);
    expect(await metric(sc, "mcp_affinity_registrations_total", '{source="node"}')).toBe(1);
    expect(await metric(sc, "mcp_affinity_closes_total", '{origin="registry"}')).toBe(1);
  });

  it("tells down from gone: stale heartbeat = down, then gone after the limit; a new boot retires the old one", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    await writer.heartbeat(hb({ boot: "A1" }));
    await writer.registerSession("old-boot", rec({ boot: "A1" }));
    await writer.registerSession("edge-learned", rec({ boot: null, source: "edge" }));
    await waitUntil("old-boot up in view", async () => (await viewOf("old-boot"))?.state === "up");
    // Heartbeats stop (the node hangs): down after the node TTL, gone after the down limit.
    await waitUntil("down", async () => (await viewOf("old-boot"))?.state === "down", 2000);
    expect((await viewOf("edge-learned"))?.state).toBe("down");
    await waitUntil("gone", async () => (await viewOf("old-boot"))?.state === "gone", 3000);
    // The node comes back with a new boot: the old incarnation stays gone, boot-less sessions follow the node.
    await writer.heartbeat(hb({ boot: "A2", seen: Date.now() }));
    await writer.registerSession("new-boot", rec({ boot: "A2" }));
    await waitUntil("new boot up", async () => (await viewOf("new-boot"))?.state === "up", 2000);
    expect((await viewOf("old-boot"))?.state).toBe("gone");
    expect((await viewOf("edge-learned"))?.state).toBe("up");
    // A clean shutdown removes the record: gone at once.
    await writer.removeNode(COOKIE_A, "A2");
    await waitUntil("removed", async () => (await viewOf("new-boot"))?.state === "gone", 1000);
  });

  it("retires a boot whose sessions predate the node's current heartbeat, even when learned by a scan", async () => {
    await newDir();
    await writer.heartbeat(hb({ boot: "A2", seen: Date.now() }), 60_000);
    await writer.registerSession("from-a1", rec({ boot: "A1", created: Date.now() - 60_000 }));
    await writer.registerSession("from-a2", rec({ boot: "A2" }));
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    await waitUntil("from-a1 in view", () => viewOf("from-a1"));
    expect((await viewOf("from-a1"))?.state).toBe("gone");
    expect((await viewOf("from-a2"))?.state).toBe("up");
  });

  it("ingests plugin events: learned -> edge record, close -> record deleted, decisions -> metrics", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    await writer.heartbeat(hb(), 60_000);
    // The plugin writes learned/<hash> and an l event while holding the initialize response.
    await writeLearned(dir, sessionHashHex("edge-1"), COOKIE_B);
    await putEvent(
      ev({
        learned: [{ id: "edge-1", hash: sessionHashHex("edge-1"), cookie: COOKIE_B }],
        decisions: { pin: 3, pass: 5, "fail-open": 1 },
        bodies: { buffered: 7, streamed: 1 },
        dropped: 2,
      }),
    );
    const r = await waitUntil("edge record", () => writer.lookupSession("edge-1"), 2000);
    expect(r).toMatchObject({ cookie: COOKIE_B, source: "edge", boot: null });
    await waitUntil("edge session in view", async () => (await viewOf("edge-1"))?.cookie === COOKIE_B, 2000);
    // The learned file goes once the session is in the published view.
    await waitUntil("learned file deleted", async () => (await readdir(join(dir, "learned"))).length === 0, 3000);
    expect(await readdir(join(dir, "events"))).toEqual([]);
    expect(await metric(sc, "mcp_affinity_edge_decisions_total", '{reason="pin"}')).toBe(3);
    expect(await metric(sc, "mcp_affinity_edge_decisions_total", '{reason="fail-open"}')).toBe(1);
    expect(await metric(sc, "mcp_affinity_edge_session_events_lost_total")).toBe(2);
    expect(await metric(sc, "mcp_affinity_edge_post_bodies_total", '{body="buffered"}')).toBe(7);
    expect(await metric(sc, "mcp_affinity_edge_post_bodies_total", '{body="streamed"}')).toBe(1);
    expect(await metric(sc, "mcp_affinity_registrations_total", '{source="edge"}')).toBe(1);

    // A learn never overwrites the node's own record.
    await writer.registerSession("node-owned", rec());
    await waitUntil("node-owned in view", () => viewOf("node-owned"));
    await putEvent(ev({ learned: [{ id: "node-owned", hash: sessionHashHex("node-owned"), cookie: COOKIE_B }] }));
    await waitUntil("events consumed", async () => (await readdir(join(dir, "events"))).length === 0);
    expect((await writer.lookupSession("node-owned"))?.cookie).toBe(COOKIE_A);

    // A DELETE seen at the edge: the record goes whatever the node did, and the view says closed.
    const closesTotal = async () =>
      (
        await Promise.all(
          ["edge", "registry", "api"].map((o) => metric(sc!, "mcp_affinity_closes_total", `{origin="${o}"}`)),
        )
      ).reduce((a, b) => a + (b || 0), 0);
    const closesBefore = await closesTotal();
    await putEvent(ev({ closed: [{ id: "node-owned", hash: sessionHashHex("node-owned"), cookie: COOKIE_A }] }));
    await waitUntil("record deleted", async () => (await writer.lookupSession("node-owned")) === null, 2000);
    await waitUntil("closed in view", async () => (await viewOf("node-owned"))?.closed === true, 2000);
    // Counted once: the sidecar's own registry write comes back through the change feed too, and
    // whichever path reaches the mirror first names the origin.
    await new Promise((r) => setTimeout(r, 200));
    expect((await closesTotal()) - closesBefore).toBe(1);
    // A late learn of a closed session does not bring it back.
    await putEvent(ev({ learned: [{ id: "node-owned", hash: sessionHashHex("node-owned"), cookie: COOKIE_A }] }));
    await waitUntil("events consumed", async () => (await readdir(join(dir, "events"))).length === 0);
    expect(await writer.lookupSession("node-owned")).toBeNull();
  });

  it("moves a batch Redis refuses for good to events-quarantine/ and goes on; Redis down keeps the batch", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    await writer.heartbeat(hb(), 60_000);
    // A key of the wrong type: every read of it fails with a Redis error reply (permanent).
    await raw.rpush("mcp:session:poisoned", "x");
    await putEvent(
      ev({ t: Date.now() - 10, learned: [{ id: "poisoned", hash: sessionHashHex("poisoned"), cookie: COOKIE_A }] }),
    );
    await putEvent(ev({ learned: [{ id: "after-poison", hash: sessionHashHex("after-poison"), cookie: COOKIE_A }] }));
    await waitUntil("the batch after the poisoned one applied", () => writer.lookupSession("after-poison"), 3000);
    await waitUntil("quarantined", async () => (await readdir(join(dir, "events-quarantine"))).length === 1, 3000);
    expect(await readdir(join(dir, "events"))).toEqual([]);
    await waitUntil(
      "counted",
      async () => (await metric(sc!, "mcp_affinity_event_files_total", '{result="quarantined"}')) === 1,
      3000,
    );
    await waitUntil("gauge", async () => (await metric(sc!, "mcp_affinity_event_quarantine_files")) === 1, 3000);

    // Transient: Redis down. The batch waits (counted pending) and is applied once Redis is back.
    await redis.stop();
    await putEvent(ev({ learned: [{ id: "while-down", hash: sessionHashHex("while-down"), cookie: COOKIE_A }] }));
    await waitUntil(
      "pending while Redis is down",
      async () => (await metric(sc!, "mcp_affinity_event_files_pending")) >= 1,
      5000,
    );
    expect((await readdir(join(dir, "events"))).length).toBe(1);
    await redis.start();
    await waitUntil(
      "applied after Redis came back",
      () => writer.lookupSession("while-down").catch(() => null),
      10_000,
    );
    expect(await metric(sc, "mcp_affinity_event_files_total", '{result="quarantined"}')).toBe(1);
  });

  it("confirms a death the edge suspected with the owner itself (a real Python MCP server, ids wrapped as the edge wraps them): 404 -> record deleted, tombstone; a live session stays", async () => {
    await newDir();
    const py = await startPythonServer({ name: "py-death" });
    try {
      sc = await start();
      await waitUntil("ready", () => sc!.ready());
      const cookie = cookieValueFor(py.url);
      // The sidecar learns the node's URL from a heartbeat or Traefik's API; a heartbeat here.
      await writer.heartbeat(hb({ url: py.url, cookie, boot: "py" }), 60_000);
      // The edge knows these sessions by the ids it wrapped; the server knows its own (the sidecar
      // asks it directly, past the plugin, so it must ask with the server's id).
      const wrap = (c: { sid: string }) => ({ ...c, sid: wrapSessionId(c.sid, cookie, UNKNOWN_BOOT_TAG) });
      const liveClient = await connectClient(py.url);
      const deadClient = await connectClient(py.url);
      const [live, dead] = [wrap(liveClient), wrap(deadClient)];
      for (const c of [live, dead])
        await putEvent(ev({ learned: [{ id: c.sid, hash: sessionHashHex(c.sid), cookie }] }));
      await waitUntil("learned", () => writer.lookupSession(dead.sid), 3000);
      await waitUntil("learned", () => writer.lookupSession(live.sid), 3000);
      await deadClient.transport.terminateSession(); // DELETE at the node: the node no longer holds it
      await putEvent(ev({ suspects: [live, dead].map((c) => ({ id: c.sid, hash: sessionHashHex(c.sid), cookie })) }));
      await waitUntil(
        "dead session's record deleted",
        async () => (await writer.lookupSession(dead.sid)) === null,
        5000,
      );
      await waitUntil("tombstone in the view", async () => (await viewOf(dead.sid))?.closed === true, 3000);
      await waitUntil(
        "live one checked",
        async () => (await metric(sc!, "mcp_affinity_death_checks_total", '{result="alive"}')) === 1,
        3000,
      );
      expect(await writer.lookupSession(live.sid)).not.toBeNull();
      expect(await liveClient.counter()).toBe(1); // the check (a ping) did not disturb the live session
      expect(await metric(sc, "mcp_affinity_death_checks_total", '{result="dead"}')).toBe(1);
      expect(await metric(sc, "mcp_affinity_closes_total", '{origin="owner-404"}')).toBe(1);
      // Reported again within the recheck period: not checked twice.
      await putEvent(ev({ suspects: [{ id: live.sid, hash: sessionHashHex(live.sid), cookie }] }));
      await waitUntil("events consumed", async () => (await readdir(join(dir, "events"))).length === 0);
      await sleep(200);
      expect(await metric(sc, "mcp_affinity_death_checks_total", '{result="alive"}')).toBe(1);
      await liveClient.close();
    } finally {
      await py.stop();
    }
  });

  it("edge-learned records live by activity: a short TTL renewed by a events (one command per session and interval), node records untouched", async () => {
    await newDir();
    sc = await start({ edgeSessionTtlMs: 60_000, edgeTouchIntervalMs: 200 });
    await waitUntil("ready", () => sc!.ready());
    await writer.heartbeat(hb(), 60_000);
    await putEvent(ev({ learned: [{ id: "edge-active", hash: sessionHashHex("edge-active"), cookie: COOKIE_A }] }));
    await waitUntil("edge record", () => writer.lookupSession("edge-active"), 3000);
    const ttl0 = await raw.pttl("mcp:session:edge-active");
    expect(ttl0).toBeGreaterThan(50_000);
    expect(ttl0).toBeLessThanOrEqual(60_000);
    await writer.registerSession("node-own", rec());
    await waitUntil("node-own in view", () => viewOf("node-own"));
    const nodeTtl0 = await raw.pttl("mcp:session:node-own");
    await sleep(1500);
    const before = await raw.pttl("mcp:session:edge-active");
    const hash = (id: string) => sessionHashHex(id);
    await putEvent(
      ev({
        active: [
          { id: "edge-active", hash: hash("edge-active") },
          { id: "node-own", hash: hash("node-own") },
          { id: "edge-active", hash: hash("edge-active") },
        ],
      }),
    );
    await waitUntil(
      "renewed",
      async () => (await metric(sc!, "mcp_affinity_edge_session_touches_total", '{result="renewed"}')) === 1,
      3000,
    );
    expect(await raw.pttl("mcp:session:edge-active")).toBeGreaterThan(before + 1000);
    expect(await metric(sc, "mcp_affinity_edge_session_touches_total", '{result="skipped"}')).toBe(1); // the node's record
    expect(await raw.pttl("mcp:session:node-own")).toBeLessThanOrEqual(nodeTtl0);
    expect(await raw.pttl("mcp:session:node-own")).toBeGreaterThan(60_000);
  });

  it("loses no event and counts none twice across a restart", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    await putEvent(ev({ decisions: { pin: 2 } }));
    await waitUntil(
      "2 pin decisions counted",
      async () => (await metric(sc!, "mcp_affinity_edge_decisions_total", '{reason="pin"}')) === 2,
    );
    await sc.close();
    // Written while no sidecar runs.
    await putEvent(
      ev({
        decisions: { pin: 7 },
        learned: [{ id: "while-down", hash: sessionHashHex("while-down"), cookie: COOKIE_A }],
      }),
    );
    const again = await start();
    await waitUntil("ready again", () => again.ready());
    await waitUntil("drained", async () => (await readdir(join(dir, "events"))).length === 0, 3000);
    expect(await metric(again, "mcp_affinity_edge_decisions_total", '{reason="pin"}')).toBe(7);
    expect(await writer.lookupSession("while-down")).not.toBeNull();
  });

  it("repairs what pub/sub missed with a reconcile", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    // Written behind the sidecar's back (no PUBLISH).
    await raw.set("mcp:session:silent", JSON.stringify(rec()), "PX", 60_000);
    await sleep(100);
    expect(await viewOf("silent")).toBeNull();
    await sidecarTestHooks(sc).reconcile();
    await waitUntil("silent session in view", () => viewOf("silent"), 2000);
    await raw.del("mcp:session:silent");
    await sidecarTestHooks(sc).reconcile();
    await waitUntil("dropped", async () => (await lookupSession(dir, sessionHash("silent"))) === null, 2000);
  });

  it("serves the sessions API behind a bearer token", async () => {
    await newDir();
    sc = await start({ apiToken: "0123456789abcdef-token" });
    await waitUntil("ready", () => sc!.ready());
    const base = `${sc.url}/v1/sessions/${encodeURIComponent("api-1")}`;
    const auth = { authorization: "Bearer 0123456789abcdef-token", "content-type": "application/json" };
    expect((await fetch(base)).status).toBe(401);
    expect((await fetch(base, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    const put = await fetch(base, { method: "PUT", headers: auth, body: JSON.stringify({ node: URL_B, boot: "B1" }) });
    expect(put.status).toBe(200);
    expect(await put.json()).toEqual({ cookie: COOKIE_B });
    const stored = await writer.lookupSession("api-1");
    expect(stored).toMatchObject({ node: URL_B, cookie: COOKIE_B, boot: "B1", source: "node" });
    await waitUntil("api-1 owned by B in view", async () => (await viewOf("api-1"))?.cookie === COOKIE_B);
    const got = await fetch(base, { headers: auth });
    expect(got.status).toBe(200);
    expect(await got.json()).toMatchObject({ node: URL_B, cookie: COOKIE_B, boot: "B1", source: "node" });
    expect((await fetch(base, { method: "PUT", headers: auth, body: "{}" })).status).toBe(400);
    expect((await fetch(`${sc.url}/v1/sessions/${encodeURIComponent("bad id")}`, { headers: auth })).status).toBe(400);
    const del = await fetch(base, { method: "DELETE", headers: auth });
    expect(await del.json()).toEqual({ closed: true });
    expect((await fetch(base, { headers: auth })).status).toBe(404);
    expect(await writer.lookupSession("api-1")).toBeNull();
    // Metrics and health are open (they carry no session data).
    expect((await fetch(`${sc.url}/metrics`)).status).toBe(200);
  });

  it("takes node health from Traefik's API for nodes without the library", async () => {
    await newDir();
    let status: Record<string, string> = { [URL_A]: "UP", [URL_B]: "UP" };
    let servers = [URL_A, URL_B];
    const traefik: Server = createServer((req, res) => {
      if (req.headers.authorization !== "Basic " + Buffer.from("admin:s3cret").toString("base64")) {
        res.writeHead(401).end();
        return;
      }
      if (req.url !== "/api/http/services/mcp%40file") {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          name: "mcp@file",
          loadBalancer: { servers: servers.map((url) => ({ url })) },
          serverStatus: status,
        }),
      );
    });
    await new Promise<void>((r) => traefik.listen(0, "127.0.0.1", () => r()));
    try {
      const api = `http://admin:s3cret@127.0.0.1:${(traefik.address() as { port: number }).port}`; // basic auth on the API
      sc = await start({ traefikApi: api, traefikServices: ["mcp@file"], traefikPollIntervalMs: 50 });
      await waitUntil("ready", () => sc!.ready());
      await writer.registerSession("t-a", rec({ boot: null }));
      await writer.registerSession("t-b", rec({ node: URL_B, cookie: COOKIE_B, boot: null }));
      await waitUntil(
        "t-a and t-b up in view",
        async () => (await viewOf("t-a"))?.state === "up" && (await viewOf("t-b"))?.state === "up",
      );
      status = { [URL_A]: "DOWN", [URL_B]: "UP" };
      await waitUntil("down from Traefik", async () => (await viewOf("t-a"))?.state === "down", 2000);
      servers = [URL_A];
      await waitUntil("removed from Traefik", async () => (await viewOf("t-b"))?.state === "gone", 2000);
      const nodes = await (await fetch(`${sc.url}/v1/nodes`)).json();
      // A node without a heartbeat is named by Traefik's server URL; a gone node's sessions are not live.
      expect(nodes.nodes.find((n: any) => n.cookie === COOKIE_A)).toMatchObject({
        url: URL_A,
        name: URL_A,
        state: "down",
        traefik: "down",
        sessions: 1,
      });
      expect(nodes.nodes.find((n: any) => n.cookie === COOKIE_B)).toMatchObject({
        name: URL_B,
        state: "gone",
        sessions: 0,
      });
      expect(
        metricValues(
          await scrapeMetrics(`${sc.url}/metrics`),
          "mcp_affinity_sessions",
          `{node="${URL_B}",state="gone"}`,
        ),
      ).toEqual([]);
      expect(await metric(sc, "mcp_affinity_nodes", '{state="down"}')).toBe(1);
      expect(await metric(sc, "mcp_affinity_traefik_api_errors_total")).toBe(0);
    } finally {
      await new Promise((r) => traefik.close(r));
    }
  });

  it("exports the documented metrics and never a session id in metrics, logs or shared files", async () => {
    await newDir();
    sc = await start();
    await waitUntil("ready", () => sc!.ready());
    const secret = "Secret-Session-Id-1234567890";
    await writer.heartbeat(hb(), 60_000);
    await writer.registerSession(secret, rec());
    await putEvent(
      ev({ closed: [{ id: secret, hash: sessionHashHex(secret), cookie: COOKIE_A }], decisions: { lost: 1 } }),
    );
    await waitUntil("closed in view", async () => (await viewOf(secret))?.closed === true);
    const text = await scrapeMetrics(`${sc.url}/metrics`);
    for (const name of [
      "mcp_affinity_edge_decisions_total",
      "mcp_affinity_sessions",
      "mcp_affinity_registrations_total",
      "mcp_affinity_closes_total",
      "mcp_affinity_nodes",
      "mcp_affinity_view_age_seconds",
      "mcp_affinity_view_publish_duration_seconds",
      "mcp_affinity_redis_errors_total",
      "mcp_affinity_event_lag_seconds",
    ]) {
      expect(text, name).toContain(`# TYPE ${name} `);
    }
    // The age of the stamp on disk or of a newer one: once no publish is in progress the sidecar
    // knows of every stamp written before, so the gauge is never older than the one read here.
    const stamp = (await readMeta(dir))!.published;
    await sidecarTestHooks(sc).publishIdle();
    const viewAge = await metric(sc, "mcp_affinity_view_age_seconds");
    expect(viewAge).toBeGreaterThanOrEqual(0);
    expect(viewAge).toBeLessThanOrEqual((Date.now() - stamp) / 1000);
    expect(text).not.toContain(secret);
    await sc.close();
    expect(logLines.length).toBeGreaterThan(3);
    expect(logLines.join("")).not.toContain(secret);
    expect(logLines.join("")).toContain(sessionHashHex(secret).slice(0, 12)); // the log-safe tag
    const files = await readdir(dir, { recursive: true });
    for (const f of files) {
      const content = await import("node:fs/promises").then((fs) =>
        fs.readFile(join(dir, f)).catch(() => Buffer.alloc(0)),
      );
      expect(content.includes(secret), f).toBe(false);
    }
  });
});
