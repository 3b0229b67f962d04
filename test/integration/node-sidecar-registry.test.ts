// The sidecar registry mode, against a small in-test server speaking the sidecar's sessions API
// contract (PUT/GET/DELETE /v1/sessions/:id, bearer token). The MCP side is the real SDK.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cookieValueFor, encodeSession, type SessionRecord } from "../../lib/registry/schema.ts";
import { SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
import { waitUntil } from "../../dev/poll.ts";
import { connectClient, rawMcp, startNode } from "./node-redis-helper.ts";

const TOKEN = "s3cret-token";
const store = new Map<string, SessionRecord>();
const calls: Array<{ method: string; id: string; auth?: string; body?: any }> = [];
let failWith = 0;
let api: Server;
let apiUrl: string;

beforeAll(async () => {
  api = createServer((req, res) => {
    const m = /^\/v1\/sessions\/([^/?]+)$/.exec(req.url ?? "");
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      if (!m) return void res.writeHead(404).end();
      const id = decodeURIComponent(m[1]!);
      const body = raw ? JSON.parse(raw) : undefined;
      calls.push({ method: req.method!, id, auth: req.headers.authorization, body });
      if (req.headers.authorization !== `Bearer ${TOKEN}`) return void res.writeHead(401).end();
      if (failWith) return void res.writeHead(failWith).end();
      if (req.method === "PUT") {
        store.set(id, {
          node: body.node,
          cookie: cookieValueFor(body.node),
          boot: body.boot,
          created: Date.now(),
          source: "node",
        });
        return void res.writeHead(204).end();
      }
      if (req.method === "GET") {
        const r = store.get(id);
        if (!r) return void res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
        return void res.writeHead(200, { "content-type": "application/json" }).end(encodeSession(r));
      }
      if (req.method === "DELETE") {
        store.delete(id);
        return void res.writeHead(204).end();
      }
      res.writeHead(405).end();
    });
  });
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
  apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
});
afterAll(() => {
  api?.close();
});

describe("sidecar registry", () => {
  it("registers through the API before the initialize answer, closes through it, and explains misses", async () => {
    const node = await startNode({ name: "side-a", sidecarUrl: apiUrl, sidecarToken: TOKEN });
    try {
      let atHeaders: SessionRecord | undefined | null = null;
      const spy: typeof fetch = async (input, init) => {
        const res = await fetch(input, init);
        const sid = res.headers.get("mcp-session-id");
        if (sid && atHeaders === null) atHeaders = store.get(sid);
        return res;
      };
      const c = await connectClient(node.url, spy);
      expect(atHeaders).toMatchObject({ node: node.affinity.nodeUrl, boot: node.affinity.bootId });
      const put = calls.find((x) => x.method === "PUT" && x.id === c.sid)!;
      expect(put.body).toEqual({ node: node.affinity.nodeUrl, boot: node.affinity.bootId });
      expect(put.auth).toBe(`Bearer ${TOKEN}`);
      expect(await c.counter()).toBe(1);

      // Another node's session: misroute (the sidecar API has no node liveness to tell stale apart).
      const other = "http://127.0.0.1:9";
      store.set("other-session", { node: other, cookie: cookieValueFor(other), boot: "b", created: 1, source: "edge" });
      expect(await node.affinity.checkSession("other-session")).toEqual({
        local: false,
        reason: "misroute",
        owner: other,
      });
      expect(await node.affinity.checkSession("nobody-has-this")).toEqual({ local: false, reason: "unknown" });

      await c.transport.terminateSession();
      expect(store.has(c.sid)).toBe(false);
      expect(calls.some((x) => x.method === "DELETE" && x.id === c.sid)).toBe(true);
      // No heartbeat calls in this mode, and no registry errors.
      expect(node.affinity.stats().heartbeats).toEqual({ ok: 0, failed: 0 });
      expect(node.affinity.stats().registrations).toEqual({ ok: 1, failed: 0 });
    } finally {
      await node.shutdown();
    }
  });

  it("sidecar errors never break a session; the registration is retried on a later request", async () => {
    const node = await startNode(
      { name: "side-b", sidecarUrl: apiUrl, sidecarToken: TOKEN },
      { affinity: { refreshIntervalMs: 200 } },
    );
    try {
      failWith = 503;
      const c = await connectClient(node.url);
      expect(await c.counter()).toBe(1);
      // At least the initialize's registration failed and was counted; on a slow machine a request
      // more than refreshIntervalMs later retries it (and fails again) before the counter answers.
      expect(node.affinity.stats().registrations.failed).toBeGreaterThanOrEqual(1);
      expect(store.has(c.sid)).toBe(false);
      failWith = 0;
      await new Promise((r) => setTimeout(r, 250));
      expect(await c.counter()).toBe(2);
      await waitUntil("registered on retry", () => store.has(c.sid), 5000);
      // A wrong token is an error too, counted, the session untouched.
      const bad = await startNode({ name: "side-c", sidecarUrl: apiUrl, sidecarToken: "wrong" });
      const c2 = await connectClient(bad.url);
      expect(await c2.counter()).toBe(1);
      expect(bad.affinity.stats().registrations.failed).toBe(1);
      expect(await rawMcp(bad.url, "GET", "unknown-id")).toMatchObject({ status: 404, body: SESSION_NOT_FOUND_BODY });
      await waitUntil("lookup error counted as unchecked", () => bad.affinity.stats().mismatches.unchecked === 1, 5000);
      await bad.shutdown();
    } finally {
      failWith = 0;
      await node.shutdown();
    }
  });
});
