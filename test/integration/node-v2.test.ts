// The node library on both SDK lines, through the examples docs/node-library.md shows (imported,
// not copied): a v1 node and a v2 node on one Redis. On the v2 node, 2025-era sessions (v1 client,
// and v2 client without negotiation) get the same affinity as on v1; a v2 client negotiating
// 2026-07-28 is served statelessly and leaves no session record.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inputRequired, McpServer } from "@modelcontextprotocol/server";
// @ts-expect-error -- express comes with the SDK, without type declarations in this tree
import express from "express";
import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from "@modelcontextprotocol/client";
import { PROTOCOL_VERSION, rawInitialize } from "../../dev/mcp-client.ts";
import { sessionKey, SESSION_KEY_PREFIX } from "../../lib/registry/schema.ts";
import { parseSessionToken } from "../../lib/token/index.ts";
import { createAffinity, SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
import { clusterRequestStateCodec, mountMcpV2 } from "../../node/src/v2.ts";
import { startV1Node } from "../../node/examples/v1-node.ts";
import { startV2Node } from "../../node/examples/v2-node.ts";
import { captureLogger, connectClient, rawMcp, startRedis, type TestRedis } from "./node-redis-helper.ts";

let redis: TestRedis;
let v1: Awaited<ReturnType<typeof startV1Node>>;
let v2: Awaited<ReturnType<typeof startV2Node>>;

beforeAll(async () => {
  redis = await startRedis();
  v1 = await startV1Node({ redisUrl: redis.url });
  v2 = await startV2Node({ redisUrl: redis.url });
});
afterAll(async () => {
  await v1?.stop();
  await v2?.stop();
  await redis?.stop();
});

const textOf = (r: unknown): string => (r as { content: Array<{ type: string; text: string }> }).content[0]!.text;

async function sessionKeys(): Promise<string[]> {
  return (await redis.client.keys(`${SESSION_KEY_PREFIX}*`)).sort();
}

/** A v2 client; `auto` negotiates 2026-07-28 with a server that speaks it. */
async function v2Client(url: string, mode: "auto" | "legacy") {
  const seen: Array<{ method: string; sid: string | null }> = [];
  const recording: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    seen.push({ method: init?.method ?? "GET", sid: res.headers.get("mcp-session-id") });
    return res;
  };
  const client = new V2Client({ name: "node-v2-test", version: "1.0.0" }, { versionNegotiation: { mode } });
  const transport = new V2Transport(new URL(`${url}/mcp`), { fetch: recording });
  await client.connect(transport);
  return { client, transport, seen };
}

describe.each([
  ["v1", () => v1],
  ["v2", () => v2],
])("a %s node", (line, node) => {
  it("gives a v1 client a 2025 session with a routing-token id, registered, and cleans it on DELETE", async () => {
    const c = await connectClient(node().url);
    try {
      const token = parseSessionToken(c.sid);
      expect(token?.cookie).toBe(node().affinity.cookie);
      const record = JSON.parse((await redis.client.get(sessionKey(c.sid)))!);
      expect(record).toMatchObject({ node: node().url, boot: node().affinity.bootId, source: "node" });
      expect(node().affinity.hasSession(c.sid)).toBe(true);
      const hello = textOf(await c.client.callTool({ name: "hello" }));
      expect(hello).toBe(line === "v1" ? "hello from v1" : "hello from v2 (legacy)");
      await c.transport.terminateSession();
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
      expect(node().affinity.hasSession(c.sid)).toBe(false);
    } finally {
      await c.close();
    }
  });

  it("sends the head of a session's GET stream before it has an event (clients wait for it)", async () => {
    const { sessionId } = await rawInitialize(node().url);
    const stream = new AbortController();
    try {
      // No event is ever sent on this stream: only the head can answer the fetch.
      const res = await fetch(`${node().url}/mcp`, {
        headers: { accept: "text/event-stream", "mcp-session-id": sessionId, "mcp-protocol-version": PROTOCOL_VERSION },
        signal: stream.signal,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/event-stream");
    } finally {
      stream.abort();
      await rawMcp(node().url, "DELETE", sessionId);
    }
  });

  it("lets a session's GET stream go when its client goes away: the client's reconnect is served, not refused 409", async () => {
    const { sessionId } = await rawInitialize(node().url);
    const open = async () => {
      const stream = new AbortController();
      const res = await fetch(`${node().url}/mcp`, {
        headers: { accept: "text/event-stream", "mcp-session-id": sessionId, "mcp-protocol-version": PROTOCOL_VERSION },
        signal: stream.signal,
      });
      return { status: res.status, close: () => stream.abort() };
    };
    try {
      const first = await open();
      expect(first.status).toBe(200);
      first.close();
      // The server sees the connection close within milliseconds; no event ever goes on the stream.
      let again = await open();
      for (let i = 0; i < 20 && again.status === 409; i++) {
        await new Promise((r) => setTimeout(r, 50));
        again = await open();
      }
      expect(again.status).toBe(200);
      again.close();
    } finally {
      await rawMcp(node().url, "DELETE", sessionId);
    }
  });

  it("answers the SDK's 404 for a session it does not hold", async () => {
    const res = await rawMcp(node().url, "POST", "no-such-session", { jsonrpc: "2.0", id: 1, method: "tools/list" });
    expect(res.status).toBe(404);
    expect(res.body).toBe(SESSION_NOT_FOUND_BODY);
  });
});

describe("a v2 node, v2 clients", () => {
  it("a client negotiating (auto) speaks 2026-07-28: no session id, no registry record", async () => {
    const before = await sessionKeys();
    const { client, seen } = await v2Client(v2.url, "auto");
    try {
      expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28");
      expect(textOf(await client.callTool({ name: "hello" }))).toBe("hello from v2 (modern)");
      expect(textOf(await client.callTool({ name: "hello" }))).toBe("hello from v2 (modern)");
      expect(seen.length).toBeGreaterThanOrEqual(3);
      expect(seen.every((r) => r.sid === null)).toBe(true);
      expect(await sessionKeys()).toEqual(before);
      expect(v2.affinity.sessionCount).toBe(0);
    } finally {
      await client.close();
    }
  });

  it("a client without negotiation gets a 2025 session with the node's affinity", async () => {
    const { client, transport } = await v2Client(v2.url, "legacy");
    try {
      expect(client.getNegotiatedProtocolVersion()).toBe("2025-11-25");
      const sid = transport.sessionId!;
      expect(parseSessionToken(sid)?.cookie).toBe(v2.affinity.cookie);
      expect(await redis.client.exists(sessionKey(sid))).toBe(1);
      expect(textOf(await client.callTool({ name: "hello" }))).toBe("hello from v2 (legacy)");
      await transport.terminateSession();
      expect(await redis.client.exists(sessionKey(sid))).toBe(0);
    } finally {
      await client.close();
    }
  });
});

describe("a v2 node, the same affinity decisions as a v1 node", () => {
  it("a session of another live node (a v1 node here) gets 503 + Retry-After naming the request; a DELETE cleans it", async () => {
    const c = await connectClient(v1.url);
    try {
      const res = await rawMcp(v2.url, "POST", c.sid, { jsonrpc: "2.0", id: 41, method: "tools/list" });
      expect(res.status).toBe(503);
      expect(res.retryAfter).toBe("1");
      expect(JSON.parse(res.body)).toEqual({
        jsonrpc: "2.0",
        error: { code: -32000, message: "This session is held by another node; retry later" },
        id: 41,
      });
      const del = await rawMcp(v2.url, "DELETE", c.sid);
      expect(del.status).toBe(404);
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    } finally {
      // Its owner still holds it: end it there, or that node's drain waits out its grace.
      await c.transport.terminateSession();
      await c.close();
    }
  });

  it("draining: an initialize gets 503, a 2026-07-28 request is still served, and the drain waits for it", async () => {
    const node = await startV2Node({ redisUrl: redis.url });
    const { client } = await v2Client(node.url, "auto");
    try {
      const events: string[] = [];
      // The drain ends at once without sessions and requests; with a 2026 call in flight it waits for its end.
      const leave = node.affinity.enterSessionless();
      const drained = node.affinity.drain().then(() => events.push("drained"));
      expect(node.affinity.state).toBe("draining");
      const init = await rawMcp(node.url, "POST", undefined, {
        jsonrpc: "2.0",
        id: 7,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
      });
      expect(init.status).toBe(503);
      expect(JSON.parse(init.body)).toMatchObject({
        error: { message: "This node is shutting down; retry later" },
        id: 7,
      });
      expect(textOf(await client.callTool({ name: "hello" }))).toBe("hello from v2 (modern)");
      events.push("served");
      leave();
      await drained;
      expect(events).toEqual(["served", "drained"]);
    } finally {
      await client.close();
      await node.stop();
    }
  });
});

describe("mountMcpV2 on an Express app with express.json()", () => {
  it("serves both eras from the parsed body", async () => {
    const app = express();
    app.use(express.json());
    const http = createServer(app);
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const affinity = createAffinity({ nodeUrl: base, registry: { redisUrl: redis.url }, logger: captureLogger() });
    await affinity.ready();
    const mounted = mountMcpV2(app, affinity, {
      createServer: (ctx) => {
        const server = new McpServer({ name: "express-v2", version: "1" });
        server.registerTool("era", { description: "the era" }, async () => ({
          content: [{ type: "text", text: ctx.era }],
        }));
        return server;
      },
    });
    try {
      const legacy = await connectClient(base);
      expect(await redis.client.exists(sessionKey(legacy.sid))).toBe(1);
      expect(textOf(await legacy.client.callTool({ name: "era" }))).toBe("legacy");
      await legacy.transport.terminateSession();
      await legacy.close();
      const { client } = await v2Client(base, "auto");
      expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28");
      expect(textOf(await client.callTool({ name: "era" }))).toBe("modern");
      await client.close();
    } finally {
      await mounted.shutdown();
      http.closeAllConnections();
      http.close();
    }
  });
});

// A 2026-07-28 multi-round call whose retry reaches another node: the round's requestState is
// accepted there when both nodes seal with the same keys (clusterRequestStateCodec), and refused
// with the SDK's -32602 when each node has a key of its own. The client's fetch sends the first
// round to one node and the retry to the other, as a load balancer may.
describe("requestState across two v2 nodes", () => {
  const KEY_A = "a".repeat(32);
  const KEY_B = "b".repeat(32);

  async function twoNodes(keysOf: (i: number) => string[]) {
    const nodes = await Promise.all(
      [0, 1].map(async (i) => {
        const http = createServer();
        await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
        const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
        const affinity = createAffinity({ nodeUrl: url, registry: { redisUrl: redis.url }, logger: captureLogger() });
        const codec = clusterRequestStateCodec<{ round: number; node: number }>({ keys: keysOf(i) });
        const mounted = mountMcpV2(http, affinity, {
          createServer: () => {
            const server = new McpServer({ name: `rs-${i}`, version: "1" }, { requestState: { verify: codec.verify } });
            server.registerTool("confirm", { description: "two rounds" }, async (ctx) => {
              const state = ctx.mcpReq.requestState<{ round: number; node: number }>();
              if (state)
                return { content: [{ type: "text" as const, text: `minted on ${state.node}, finished on ${i}` }] };
              return inputRequired({
                inputRequests: {
                  ok: inputRequired.elicit({
                    message: "ok?",
                    requestedSchema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] },
                  }),
                },
                requestState: await codec.mint({ round: 1, node: i }),
              });
            });
            return server;
          },
        });
        return { url, mounted, http };
      }),
    );
    return {
      nodes,
      async stop() {
        for (const n of nodes) {
          await n.mounted.shutdown();
          n.http.closeAllConnections();
          n.http.close();
        }
      },
    };
  }

  /** A v2 client at 2026-07-28 on node 0 whose tools/call retries go to node 1. */
  async function crossingClient(urls: string[]) {
    const crossing: typeof fetch = async (input, init) => {
      const body =
        typeof init?.body === "string" ? (JSON.parse(init.body) as { params?: Record<string, unknown> }) : {};
      const retry = body.params?.requestState !== undefined;
      return fetch(retry ? `${urls[1]}/mcp` : input, init);
    };
    const client = new V2Client(
      { name: "rs", version: "1" },
      { capabilities: { elicitation: {} }, versionNegotiation: { mode: "auto" } },
    );
    client.setRequestHandler("elicitation/create", async () => ({ action: "accept", content: { ok: true } }));
    await client.connect(new V2Transport(new URL(`${urls[0]}/mcp`), { fetch: crossing }));
    return client;
  }

  it("shared keys: the retry on the other node finishes the call", async () => {
    const pair = await twoNodes(() => [KEY_A]);
    try {
      const client = await crossingClient(pair.nodes.map((n) => n.url));
      expect(textOf(await client.callTool({ name: "confirm" }))).toBe("minted on 0, finished on 1");
      await client.close();
    } finally {
      await pair.stop();
    }
  });

  it("a key per node: the other node refuses the state (-32602)", async () => {
    const pair = await twoNodes((i) => [i === 0 ? KEY_A : KEY_B]);
    try {
      const client = await crossingClient(pair.nodes.map((n) => n.url));
      await expect(client.callTool({ name: "confirm" })).rejects.toMatchObject({ code: -32602 });
      await client.close();
    } finally {
      await pair.stop();
    }
  });
});
