// Registration before the initialize answer, the SDK's own 404, and TTL refresh without a write per request.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { CHANGE_CHANNEL, decodeChange, cookieValueFor, decodeSession, sessionKey } from "../../lib/registry/schema.ts";
import { SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
import { waitUntil } from "../../dev/poll.ts";
import { connectClient, rawMcp, startNode, startRedis, type TestRedis } from "./node-redis-helper.ts";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe("registration before the initialize response", () => {
  it("the session record is in Redis when the initialize response headers reach the client", async () => {
    const node = await startNode({ name: "reg-a", redisUrl: redis.url });
    const sub = new Redis(redis.url);
    const changes: any[] = [];
    await sub.subscribe(CHANGE_CHANNEL);
    sub.on("message", (_c, m) => changes.push(decodeChange(m)));
    try {
      // Writes stall for 400 ms: if the node answered before its registration completed, the record
      // could not be there yet when the headers arrive (reads are not paused).
      await redis.client.call("CLIENT", "PAUSE", "400", "WRITE");
      let atHeaders: string | null | undefined;
      let headersAt = 0;
      const started = Date.now();
      const spy: typeof fetch = async (input, init) => {
        const res = await fetch(input, init);
        const sid = res.headers.get("mcp-session-id");
        if (sid && atHeaders === undefined) {
          headersAt = Date.now();
          atHeaders = await redis.client.get(sessionKey(sid));
        }
        return res;
      };
      const c = await connectClient(node.url, spy);
      expect(atHeaders).toBeTypeOf("string");
      expect(headersAt - started).toBeGreaterThanOrEqual(300);
      const rec = decodeSession(atHeaders!);
      expect(rec).toMatchObject({
        node: node.affinity.nodeUrl,
        cookie: cookieValueFor(node.affinity.nodeUrl),
        boot: node.affinity.bootId,
        source: "node",
      });
      const pttl = await redis.client.pttl(sessionKey(c.sid));
      expect(pttl).toBeGreaterThan(29 * 24 * 3600 * 1000);
      const change = await waitUntil(
        "session change on the channel",
        () => changes.find((m) => m.op === "session" && m.id === c.sid),
        5000,
      );
      expect(change.record).toMatchObject({ cookie: node.affinity.cookie, boot: node.affinity.bootId, source: "node" });
      expect(await c.counter()).toBe(1);
      expect(node.affinity.stats().registrations).toEqual({ ok: 1, failed: 0 });
      await c.close();
    } finally {
      sub.disconnect();
      await node.shutdown();
    }
  });

  it("the SDK awaits onsessioninitialized before it builds the response (the mechanism relied on)", async () => {
    // Straight SDK, no library: a slow callback delays the initialize answer by its full duration.
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: randomUUID,
      onsessioninitialized: () => new Promise((r) => setTimeout(r, 300)),
    });
    const { McpServer } = await import("@modelcontextprotocol/sdk/server/mcp.js");
    const server = new McpServer({ name: "probe", version: "1" });
    await server.connect(transport);
    const http = createServer((req, res) => void transport.handleRequest(req, res));
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    try {
      const t0 = Date.now();
      const res = await fetch(`${url}/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } },
        }),
      });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      expect(res.headers.get("mcp-session-id")).toBeTruthy();
      await res.body?.cancel();
    } finally {
      await server.close();
      http.closeAllConnections();
      http.close();
    }
  });
});

describe("unknown sessions get the SDK's own 404", () => {
  it("matches what the SDK transport answers, for POST, GET and DELETE", async () => {
    // The SDK's answer for a session it does not hold (closed transport: same code path as a wrong id).
    const sdk = new StreamableHTTPServerTransport({ sessionIdGenerator: randomUUID });
    await sdk.close();
    const http = createServer((req, res) => void sdk.handleRequest(req, res));
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const sdkUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const node = await startNode({ name: "reg-404", redisUrl: redis.url });
    try {
      const expected = await rawMcp(sdkUrl, "POST", "whatever", { jsonrpc: "2.0", id: 1, method: "tools/list" });
      expect(expected.status).toBe(404);
      expect(expected.body).toBe(SESSION_NOT_FOUND_BODY);
      const ping = { jsonrpc: "2.0", id: 1, method: "tools/list" };
      for (const [method, body] of [
        ["POST", ping],
        ["GET", undefined],
        ["DELETE", undefined],
      ] as const) {
        const got = await rawMcp(node.url, method, randomUUID(), body);
        expect({ method, status: got.status, body: got.body, type: got.contentType }).toEqual({
          method,
          status: expected.status,
          body: expected.body,
          type: expected.contentType,
        });
      }
      // A live session next to it is untouched.
      const c = await connectClient(node.url);
      expect(await c.counter()).toBe(1);
      await c.close();
      await waitUntil("3 unknown mismatches counted", () => node.affinity.stats().mismatches.unknown === 3, 5000);
    } finally {
      http.close();
      await node.shutdown();
    }
  });

  it("requests without a session id get the SDK's own 400, and create no session", async () => {
    const node = await startNode({ name: "reg-400", redisUrl: redis.url });
    try {
      const get = await rawMcp(node.url, "GET", undefined);
      expect(get.status).toBe(400);
      expect(JSON.parse(get.body)).toMatchObject({ jsonrpc: "2.0", error: { code: -32000 }, id: null });
      const post = await rawMcp(node.url, "POST", undefined, { jsonrpc: "2.0", id: 7, method: "tools/list" });
      expect(post.status).toBe(400);
      expect(node.affinity.sessionCount).toBe(0);
      expect(await redis.client.keys("mcp:session:*")).toEqual([]);
    } finally {
      await node.shutdown();
    }
  });
});

describe("TTL refresh", () => {
  it("refreshes at most once per interval, and puts a vanished record back", async () => {
    const node = await startNode(
      { name: "reg-ttl", redisUrl: redis.url, sessionTtlMs: 600_000 },
      { affinity: { refreshIntervalMs: 2500 } },
    );
    try {
      const c = await connectClient(node.url);
      const key = sessionKey(c.sid);
      await redis.client.pexpire(key, 20_000);
      for (let i = 1; i <= 5; i++) expect(await c.counter()).toBe(i);
      // Inside the interval: no write, the lowered TTL stays.
      expect(await redis.client.pttl(key)).toBeLessThanOrEqual(20_000);
      expect(node.affinity.stats().refreshes.ok).toBe(0);
      await new Promise((r) => setTimeout(r, 2600));
      await c.counter();
      await waitUntil("TTL refreshed to the session TTL", async () => (await redis.client.pttl(key)) > 500_000, 5000);
      await Promise.all([c.counter(), c.counter(), c.counter()]);
      expect(node.affinity.stats().refreshes.ok).toBe(1);
      // Record gone (e.g. Redis restarted empty): the next due refresh registers it again.
      await redis.client.del(key);
      await new Promise((r) => setTimeout(r, 2600));
      await c.counter();
      const raw = await waitUntil("record written again", () => redis.client.get(key), 5000);
      expect(decodeSession(raw).boot).toBe(node.affinity.bootId);
      expect(node.affinity.stats().refreshes.missing).toBe(1);
      await c.close();
    } finally {
      await node.shutdown();
    }
  });
});
