// mountMcp on the two targets the docs show: an Express app (with a JSON body parser in front) and a
// plain node:http Server whose other routes must keep working.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-ignore -- express comes with the SDK, without type declarations in this tree
import express from "express";
import { sessionKey } from "../../lib/registry/schema.ts";
import { createAffinity, mountMcp, SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
import { captureLogger, connectClient, rawMcp, startRedis, type TestRedis } from "./node-redis-helper.ts";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

function echoServer(): McpServer {
  const s = new McpServer({ name: "mount-test", version: "1" });
  let n = 0;
  s.registerTool("counter", { description: "per-session counter" }, async () => ({ content: [{ type: "text", text: String(++n) }] }));
  return s;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("mountMcp", () => {
  it("on an Express app with express.json(): sessions work and are registered", async () => {
    const app = express();
    app.use(express.json());
    app.get("/graphql", (_req: unknown, res: { json(v: unknown): void }) => res.json({ ok: true }));
    const http = createServer(app);
    const base = await listen(http);
    const affinity = createAffinity({ nodeUrl: base, nodeName: "express", registry: { redisUrl: redis.url }, logger: captureLogger() });
    await affinity.ready();
    const mounted = mountMcp(app, affinity, { createServer: echoServer });
    try {
      const c = await connectClient(base);
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(1);
      expect(await c.counter()).toBe(1);
      expect(await c.counter()).toBe(2);
      expect(await rawMcp(base, "POST", "no-such-session", { jsonrpc: "2.0", id: 1, method: "tools/list" })).toMatchObject({
        status: 404,
        body: SESSION_NOT_FOUND_BODY,
      });
      expect(await (await fetch(`${base}/graphql`)).json()).toEqual({ ok: true });
      await c.transport.terminateSession();
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    } finally {
      await mounted.shutdown();
      http.closeAllConnections();
      http.close();
    }
  });

  it("on a node:http Server: other routes keep their handler, /mcp goes to the library", async () => {
    const http = createServer((_req, res) => res.writeHead(200, { "content-type": "text/plain" }).end("app"));
    const base = await listen(http);
    const affinity = createAffinity({ nodeUrl: base, registry: { redisUrl: redis.url }, logger: captureLogger(), drainGraceMs: 0 });
    await affinity.ready();
    const mounted = mountMcp(http, affinity, { createServer: echoServer });
    try {
      expect(await (await fetch(`${base}/other`)).text()).toBe("app");
      const c = await connectClient(base);
      expect(await c.counter()).toBe(1);
      expect(affinity.sessionCount).toBe(1);
      await mounted.shutdown();
      // Stopping closed the session and removed its record and the heartbeat.
      expect(affinity.sessionCount).toBe(0);
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
      expect(await redis.client.keys("mcp:node:*")).toEqual([]);
    } finally {
      http.closeAllConnections();
      http.close();
    }
  });
});
