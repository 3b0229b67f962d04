// Redis stopped mid-session: sessions keep working on their node, new ones too; when Redis comes back
// (empty), the node puts its sessions and heartbeat back without a restart.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeNode, decodeSession, nodeKey, sessionKey } from "../../lib/registry/schema.ts";
import { waitUntil } from "../../dev/poll.ts";
import { connectClient, startNode, startRedis, type TestRedis } from "./node-redis-helper.ts";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe("Redis outage", () => {
  it("sessions keep counting on their node, new sessions still start, and everything is re-registered on recovery", async () => {
    const node = await startNode(
      { name: "outage", redisUrl: redis.url, heartbeatMs: 200 },
      { affinity: { registryTimeoutMs: 300 } },
    );
    try {
      const c1 = await connectClient(node.url);
      expect(await c1.counter()).toBe(1);
      expect(await c1.counter()).toBe(2);
      expect(await redis.client.exists(sessionKey(c1.sid))).toBe(1);

      await redis.kill();
      const requestOps = (st: ReturnType<typeof node.affinity.stats>) => {
        const { register, refresh, lookup, close } = st.registryErrors;
        return { register, refresh, lookup, close, registrations: st.registrations, refreshes: st.refreshes };
      };
      const beforeCalls = requestOps(node.affinity.stats());
      for (let i = 3; i <= 10; i++) expect(await c1.counter()).toBe(i);
      // No request waited on the dead Redis: serving a registered local session calls no registry
      // (its TTL refresh is due only every refreshIntervalMs, days here), and any call to the dead
      // Redis would have failed and been counted by its operation.
      expect(requestOps(node.affinity.stats())).toEqual(beforeCalls);

      // A new session while Redis is down: registration fails, is counted and logged, the session works.
      const c2 = await connectClient(node.url);
      expect(await c2.counter()).toBe(1);
      expect(await c1.counter()).toBe(11);
      const stats = node.affinity.stats();
      expect(stats.registrations.failed).toBe(1);
      expect(stats.registryErrors.register).toBe(1);
      expect(
        node.logs.find((e) => e.msg === "session registration failed; session continues on this node"),
      ).toMatchObject({ level: "warn" });
      // A lookup that cannot reach Redis is counted as unchecked, never guessed.
      expect(await node.affinity.checkSession("not-a-session-here")).toEqual({ local: false, reason: "unchecked" });
      await waitUntil("heartbeat failures counted", () => node.affinity.stats().heartbeats.failed > 0, 5000);

      // Redis back, empty: sessions and heartbeat are written again without a restart.
      await redis.start();
      await waitUntil(
        "both sessions re-registered",
        async () => (await redis.client.exists(sessionKey(c1.sid), sessionKey(c2.sid))) === 2,
        8000,
        50,
      );
      for (const sid of [c1.sid, c2.sid]) {
        expect(decodeSession((await redis.client.get(sessionKey(sid)))!).boot).toBe(node.affinity.bootId);
      }
      const rec = decodeNode(
        (await waitUntil("heartbeat back", () => redis.client.get(nodeKey(node.affinity.cookie)), 5000))!,
      );
      expect(rec.boot).toBe(node.affinity.bootId);
      expect(await c1.counter()).toBe(12);
      expect(await c2.counter()).toBe(2);
      await c1.transport.terminateSession();
      expect(await redis.client.exists(sessionKey(c1.sid))).toBe(0);
      await c2.close();
    } finally {
      await node.shutdown();
    }
  });

  it("a node started while Redis is down serves at once and registers once Redis appears", async () => {
    await redis.kill();
    const node = await startNode(
      { name: "late-redis", redisUrl: redis.url, heartbeatMs: 200 },
      { affinity: { registryTimeoutMs: 200 } },
    );
    try {
      const c = await connectClient(node.url);
      expect(await c.counter()).toBe(1);
      await redis.start();
      await waitUntil(
        "session registered after Redis came up",
        async () => (await redis.client.exists(sessionKey(c.sid))) === 1,
        8000,
        50,
      );
      expect(await c.counter()).toBe(2);
      await c.close();
    } finally {
      await node.shutdown();
    }
  });
});
