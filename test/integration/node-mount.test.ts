// mountMcp on the two targets the docs show: an Express app (with a JSON body parser in front) and a
// plain node:http Server whose other routes must keep working.
import { createServer, type RequestListener, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-expect-error -- express comes with the SDK, without type declarations in this tree
import express from "express";
import { sessionKey } from "../../lib/registry/schema.ts";
import { createAffinity, mountMcp, PROXY_IDLE_TIMEOUT_MS, SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
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
  s.registerTool("counter", { description: "per-session counter" }, async () => ({
    content: [{ type: "text", text: String(++n) }],
  }));
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
    const affinity = createAffinity({
      nodeUrl: base,
      nodeName: "express",
      registry: { redisUrl: redis.url },
      logger: captureLogger(),
    });
    await affinity.ready();
    const mounted = mountMcp(app, affinity, { createServer: echoServer });
    try {
      const c = await connectClient(base);
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(1);
      expect(await c.counter()).toBe(1);
      expect(await c.counter()).toBe(2);
      expect(
        await rawMcp(base, "POST", "no-such-session", { jsonrpc: "2.0", id: 1, method: "tools/list" }),
      ).toMatchObject({
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
    const affinity = createAffinity({
      nodeUrl: base,
      registry: { redisUrl: redis.url },
      logger: captureLogger(),
      drainGraceMs: 0,
    });
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

/** Sends one request on a raw keep-alive connection, waits for its answer, then for `idleMs` of silence. */
async function idleAfterOneRequest(
  base: string,
  path: string,
  idleMs: number,
): Promise<{ closedAfterMs: number | null; answer: string }> {
  const u = new URL(base);
  const sock: Socket = connect(Number(u.port), u.hostname);
  let answer = "";
  let closedAt: number | null = null;
  let answeredAt = 0;
  sock.on("data", (d) => {
    answer += d.toString("latin1");
    answeredAt ||= performance.now();
  });
  sock.on("close", () => (closedAt = performance.now()));
  sock.write(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: keep-alive\r\n\r\n`);
  while (!answeredAt && closedAt === null) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, idleMs));
  sock.destroy();
  return { closedAfterMs: closedAt === null ? null : closedAt - answeredAt, answer };
}

describe("mountMcp keeps idle connections open longer than the proxy", () => {
  it("a node:http Server and an Express app's server: keepAliveTimeout beyond Traefik's 90 s idle timeout, headersTimeout above it", async () => {
    const plain = createServer();
    const http = createServer();
    const affinity = createAffinity({
      nodeUrl: "http://127.0.0.1:1",
      registry: { redisUrl: redis.url },
      logger: captureLogger(),
      drainGraceMs: 0,
    });
    await affinity.ready();
    try {
      mountMcp(http, affinity, { createServer: echoServer });
      expect(plain.keepAliveTimeout).toBe(5_000); // Node's default, which the proxy outlives
      expect(http.keepAliveTimeout).toBe(PROXY_IDLE_TIMEOUT_MS + 30_000);
      expect(http.headersTimeout).toBeGreaterThan(http.keepAliveTimeout);
      // Never lowered; a longer proxy timeout raises it.
      const long = createServer();
      long.keepAliveTimeout = 600_000;
      mountMcp(long, affinity, { createServer: echoServer, proxyIdleTimeoutMs: 1_000 });
      expect(long.keepAliveTimeout).toBe(600_000);
      const slowProxy = createServer();
      mountMcp(slowProxy, affinity, { createServer: echoServer, proxyIdleTimeoutMs: 300_000 });
      expect(slowProxy.keepAliveTimeout).toBe(330_000);
      expect(() => mountMcp(createServer(), affinity, { createServer: echoServer, proxyIdleTimeoutMs: -1 })).toThrow(
        /proxyIdleTimeoutMs/,
      );

      // An Express app: the server it runs in is found from its first MCP request.
      const app = express();
      app.use(express.json());
      mountMcp(app, affinity, { createServer: echoServer });
      const appServer = createServer(app);
      const base = await listen(appServer);
      expect(appServer.keepAliveTimeout).toBe(5_000);
      await rawMcp(base, "POST", "no-such-session", { jsonrpc: "2.0", id: 1, method: "tools/list" });
      expect(appServer.keepAliveTimeout).toBe(PROXY_IDLE_TIMEOUT_MS + 30_000);
      appServer.closeAllConnections();
      appServer.close();
    } finally {
      await affinity.stop();
    }
  });

  it("an idle keep-alive connection outlives Node's 5 s default on the mounted server (and not on a plain one)", async () => {
    const handler: RequestListener = (_req, res) => res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    const plain = createServer(handler);
    const mounted = createServer(handler);
    const affinity = createAffinity({
      nodeUrl: "http://127.0.0.1:1",
      registry: { redisUrl: redis.url },
      logger: captureLogger(),
      drainGraceMs: 0,
    });
    await affinity.ready();
    mountMcp(mounted, affinity, { createServer: echoServer });
    const [plainBase, mountedBase] = [await listen(plain), await listen(mounted)];
    try {
      const [p, m] = await Promise.all([
        idleAfterOneRequest(plainBase, "/other", 6_500),
        idleAfterOneRequest(mountedBase, "/other", 6_500),
      ]);
      expect(p.answer).toMatch(/^HTTP\/1\.1 200/);
      expect(m.answer).toMatch(/^HTTP\/1\.1 200/);
      expect(p.closedAfterMs).not.toBeNull(); // the baseline closes its idle connection at ~5 s
      expect(m.closedAfterMs).toBeNull(); // still open when the client gave up waiting
    } finally {
      await affinity.stop();
      for (const s of [plain, mounted]) {
        s.closeAllConnections();
        s.close();
      }
    }
  }, 20_000);
});
