// The reference node's tools and plain endpoints, through the real SDK client.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoggingMessageNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { waitUntil } from "../../dev/poll.ts";
import { connectClient, startNode, startRedis, type TestRedis } from "./node-redis-helper.ts";

let redis: TestRedis;
let node: Awaited<ReturnType<typeof startNode>>;
beforeAll(async () => {
  redis = await startRedis();
  node = await startNode({ name: "tools", redisUrl: redis.url });
});
afterAll(async () => {
  await node?.shutdown();
  await redis?.stop();
});

const text = (r: unknown) => (r as { content: Array<{ text: string }> }).content[0]!.text;

describe("reference node", () => {
  it("whoami names the node and its boot; counter is per session", async () => {
    const a = await connectClient(node.url);
    const b = await connectClient(node.url);
    expect(await a.whoami()).toEqual({ node: "tools", boot: node.affinity.bootId });
    expect([await a.counter(), await a.counter(), await b.counter(), await a.counter()]).toEqual([1, 2, 1, 3]);
    await a.close();
    await b.close();
  });

  it("notify sends progress and log notifications on the call's SSE stream", async () => {
    const c = await connectClient(node.url);
    const logs: unknown[] = [];
    const progress: Array<{ progress: number; total?: number }> = [];
    c.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params.data));
    const r = await c.client.callTool({ name: "notify", arguments: { count: 5, intervalMs: 5 } }, undefined, {
      onprogress: (p) => void progress.push(p),
    });
    expect(JSON.parse(text(r))).toEqual({ sent: 5, node: "tools" });
    expect(progress.map((p) => p.progress)).toEqual([1, 2, 3, 4, 5]);
    expect(logs).toEqual([1, 2, 3, 4, 5].map((i) => ({ i, count: 5, node: "tools" })));
    await c.close();
  });

  it("notify target=standalone delivers on the session's GET stream", async () => {
    const c = await connectClient(node.url);
    const logs: any[] = [];
    c.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params.data));
    // The SDK client opens the GET stream after initialize; wait until the node holds it.
    await waitUntil(
      "GET stream delivering",
      async () => {
        logs.length = 0;
        await c.client.callTool({ name: "notify", arguments: { count: 1, intervalMs: 0, target: "standalone" } });
        await new Promise((r) => setTimeout(r, 50));
        return logs.length === 1;
      },
      5000,
    );
    logs.length = 0;
    await c.client.callTool({ name: "notify", arguments: { count: 4, intervalMs: 5, target: "standalone" } });
    await waitUntil("4 standalone notifications", () => logs.length === 4, 5000);
    expect(logs.map((l) => l.i)).toEqual([1, 2, 3, 4]);
    await c.close();
  });

  it("/graphql answers the node name for GET and POST; /healthz reports state and boot", async () => {
    expect(await (await fetch(`${node.url}/graphql`)).json()).toEqual({ node: "tools" });
    const post = await fetch(`${node.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"query":"{ x }"}',
    });
    expect(post.status).toBe(200);
    expect(await post.json()).toEqual({ node: "tools" });
    expect(post.headers.get("set-cookie")).toBeNull();
    const h = await fetch(`${node.url}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.json()).toMatchObject({ status: "up", node: "tools", boot: node.affinity.bootId });
  });
});
