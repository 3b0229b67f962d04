// hasSession: local first; a session only in Redis is false, logged and counted as misroute, stale or unknown.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Registry } from "prom-client";
import { cookieValueFor, encodeSession, sessionKey } from "../../lib/registry/schema.ts";
import { sessionTag } from "../../lib/registry/session-hash.ts";
import { waitUntil } from "../../dev/poll.ts";
import {
  connectClient,
  rawMcp,
  startNode,
  startRedis,
  type McpTestClient,
  type TestRedis,
} from "./node-redis-helper.ts";

let redis: TestRedis;
let a: Awaited<ReturnType<typeof startNode>>;
let b: Awaited<ReturnType<typeof startNode>>;
let onA: McpTestClient;
const promB = new Registry();

beforeAll(async () => {
  redis = await startRedis();
  a = await startNode({ name: "mis-a", redisUrl: redis.url, heartbeatMs: 5000 });
  b = await startNode({ name: "mis-b", redisUrl: redis.url, heartbeatMs: 5000 }, { affinity: { metrics: promB } });
  onA = await connectClient(a.url);
});
afterAll(async () => {
  await onA?.close();
  await a?.shutdown();
  await b?.shutdown();
  await redis?.stop();
});

const mismatchLogs = (logs: Array<Record<string, unknown>>, tag: string) =>
  logs.filter((e) => e.msg === "session not served by this node" && e.session === tag);

describe("hasSession", () => {
  it("is true for a local session without touching the registry or counting anything", async () => {
    expect(a.affinity.hasSession(onA.sid)).toBe(true);
    expect(await a.affinity.checkSession(onA.sid)).toEqual({ local: true });
    expect(a.affinity.stats().mismatches).toEqual({ misroute: 0, stale: 0, unknown: 0, unchecked: 0 });
  });

  it("misroute: the record names another live node (heartbeat with the record's boot)", async () => {
    expect(b.affinity.hasSession(onA.sid)).toBe(false);
    await waitUntil("misroute counted", () => b.affinity.stats().mismatches.misroute === 1, 5000);
    expect(await b.affinity.checkSession(onA.sid)).toEqual({
      local: false,
      reason: "misroute",
      owner: a.affinity.nodeUrl,
      ownerLive: true,
    });
    // Through HTTP: not the SDK's 404 (the session is alive on its owner) but 503 + Retry-After
    // naming the request, so the client retries and the proxy gets it to the owner; same explanation.
    const res = await rawMcp(b.url, "POST", onA.sid, { jsonrpc: "2.0", id: 41, method: "tools/list" });
    expect(res.status).toBe(503);
    expect(res.retryAfter).toBe("1");
    expect(JSON.parse(res.body)).toEqual({
      jsonrpc: "2.0",
      error: { code: -32000, message: "This session is held by another node; retry later" },
      id: 41,
    });
    await waitUntil("3 misroutes counted", () => b.affinity.stats().mismatches.misroute === 3, 5000);
    const logged = mismatchLogs(b.logs, sessionTag(onA.sid));
    expect(logged.length).toBe(3);
    expect(logged[0]).toMatchObject({ level: "warn", reason: "misroute", owner: a.affinity.nodeUrl, node: "mis-b" });
    // The session still works on its owner.
    expect(await onA.counter()).toBe(1);
  });

  it("stale: the owner has no heartbeat (gone)", async () => {
    const id = randomUUID();
    const gone = "http://127.0.0.1:1";
    await redis.client.set(
      sessionKey(id),
      encodeSession({
        node: gone,
        cookie: cookieValueFor(gone),
        boot: "0011223344556677",
        created: Date.now(),
        source: "node",
      }),
    );
    expect(await b.affinity.checkSession(id)).toEqual({ local: false, reason: "stale", owner: gone });
    expect(mismatchLogs(b.logs, sessionTag(id))[0]).toMatchObject({
      reason: "stale",
      detail: "owner has no heartbeat",
    });
  });

  it("stale: the owner's heartbeat carries another boot (rebooted)", async () => {
    const id = randomUUID();
    const url = a.affinity.nodeUrl;
    await redis.client.set(
      sessionKey(id),
      encodeSession({
        node: url,
        cookie: cookieValueFor(url),
        boot: "feedfacefeedface",
        created: Date.now(),
        source: "node",
      }),
    );
    expect(await b.affinity.checkSession(id)).toEqual({ local: false, reason: "stale", owner: url });
    expect(mismatchLogs(b.logs, sessionTag(id))[0]).toMatchObject({ reason: "stale", detail: "owner rebooted" });
  });

  it("stale: the record names this node's URL from a previous boot", async () => {
    const id = randomUUID();
    const url = b.affinity.nodeUrl;
    await redis.client.set(
      sessionKey(id),
      encodeSession({
        node: url,
        cookie: cookieValueFor(url),
        boot: "0123456789abcdef",
        created: Date.now(),
        source: "node",
      }),
    );
    expect(await b.affinity.checkSession(id)).toMatchObject({ local: false, reason: "stale" });
    expect(mismatchLogs(b.logs, sessionTag(id))[0]).toMatchObject({ reason: "stale", detail: "previous boot" });
  });

  it("unknown: no record at all, and malformed ids are not even looked up", async () => {
    const id = randomUUID();
    expect(await b.affinity.checkSession(id)).toEqual({ local: false, reason: "unknown" });
    expect(mismatchLogs(b.logs, sessionTag(id))[0]).toMatchObject({ reason: "unknown" });
    expect(await b.affinity.checkSession("bad id with spaces")).toEqual({ local: false, reason: "unknown" });
  });

  it("counts land in stats and in the prom-client registry, and no session id appears in logs or metrics", async () => {
    const s = b.affinity.stats().mismatches;
    expect(s).toEqual({ misroute: 3, stale: 3, unknown: 2, unchecked: 0 });
    const text = await promB.metrics();
    expect(text).toContain('mcp_affinity_node_session_mismatches_total{reason="misroute"} 3');
    expect(text).toContain('mcp_affinity_node_session_mismatches_total{reason="stale"} 3');
    expect(text).toContain('mcp_affinity_node_session_mismatches_total{reason="unknown"} 2');
    expect(text).toMatch(/mcp_affinity_node_sessions 0/);
    const everything = JSON.stringify(b.logs) + JSON.stringify(a.logs) + text;
    expect(everything).not.toContain(onA.sid);
  });
});
