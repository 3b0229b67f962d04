// closeSession cleans Redis whatever the local close did: it threw, or the session was never here.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { CHANGE_CHANNEL, decodeChange, cookieValueFor, encodeSession, sessionKey } from "../../lib/registry/schema.ts";
import { SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
import { waitUntil } from "../../dev/poll.ts";
import { connectClient, rawMcp, startNode, startRedis, type TestRedis } from "./node-redis-helper.ts";

let redis: TestRedis;
let sub: Redis;
const changes: any[] = [];
let failing: Awaited<ReturnType<typeof startNode>>;
let healthy: Awaited<ReturnType<typeof startNode>>;

beforeAll(async () => {
  redis = await startRedis();
  sub = new Redis(redis.url);
  await sub.subscribe(CHANGE_CHANNEL);
  sub.on("message", (_c, m) => changes.push(decodeChange(m)));
  failing = await startNode({ name: "close-failing", redisUrl: redis.url, failClose: true });
  healthy = await startNode({ name: "close-healthy", redisUrl: redis.url });
});
afterAll(async () => {
  sub?.disconnect();
  await failing?.shutdown();
  await healthy?.shutdown();
  await redis?.stop();
});

const closeAnnounced = (id: string) =>
  waitUntil("close announced on the channel", () => changes.some((m) => m.op === "close" && m.id === id), 5000);

describe("closeSession", () => {
  it("client DELETE on a node whose local close throws: Redis is cleaned, the session is gone", async () => {
    const c = await connectClient(failing.url);
    expect(await redis.client.exists(sessionKey(c.sid))).toBe(1);
    expect(await c.counter()).toBe(1);
    await c.transport.terminateSession();
    expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    await closeAnnounced(c.sid);
    expect(failing.affinity.stats().closes.failed).toBe(1);
    expect(failing.logs.find((e) => e.msg === "local session close failed; cleaning registry anyway")).toMatchObject({
      level: "warn",
      err: { code: "ERR_NODE_FAIL_CLOSE" },
    });
    // Nothing half-closed stays behind: the id is unknown here now.
    expect(failing.affinity.hasSession(c.sid)).toBe(false);
    const again = await rawMcp(failing.url, "POST", c.sid, { jsonrpc: "2.0", id: 2, method: "tools/list" });
    expect(again).toMatchObject({ status: 404, body: SESSION_NOT_FOUND_BODY });
  });

  it("closeSession() when the local close throws reports it and still deletes the record", async () => {
    const c = await connectClient(failing.url);
    const r = await failing.affinity.closeSession(c.sid);
    expect(r.local).toBe("failed");
    expect(r.registry).toBe("deleted");
    expect((r.error as { code?: string }).code).toBe("ERR_NODE_FAIL_CLOSE");
    expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    await closeAnnounced(c.sid);
    expect(failing.affinity.sessionCount).toBe(0);
  });

  it("a healthy local close also closes the SDK transport (the client's next call fails with 404)", async () => {
    const c = await connectClient(healthy.url);
    const r = await healthy.affinity.closeSession(c.sid);
    expect(r).toEqual({ local: "closed", registry: "deleted" });
    expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    await expect(c.counter()).rejects.toThrow(/404|Session not found/);
  });

  it("a session unknown locally (another node's) is cleaned from Redis too", async () => {
    const c = await connectClient(healthy.url);
    const r = await failing.affinity.closeSession(c.sid);
    expect(r).toEqual({ local: "unknown", registry: "deleted" });
    expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    await closeAnnounced(c.sid);
    await c.close();
  });

  it("a previous boot's session: DELETE reaching a node that does not hold it cleans Redis and answers the SDK 404", async () => {
    const id = randomUUID();
    const url = healthy.affinity.nodeUrl;
    await redis.client.set(
      sessionKey(id),
      encodeSession({
        node: url,
        cookie: cookieValueFor(url),
        boot: "0badc0de0badc0de",
        created: Date.now(),
        source: "node",
      }),
    );
    const res = await rawMcp(healthy.url, "DELETE", id);
    expect(res).toMatchObject({ status: 404, body: SESSION_NOT_FOUND_BODY });
    expect(await redis.client.exists(sessionKey(id))).toBe(0);
    await closeAnnounced(id);
    await waitUntil("stale mismatch counted", () => healthy.affinity.stats().mismatches.stale >= 1, 5000);
  });

  it("Redis down during a close: the local close still happens and the failure is counted", async () => {
    const c = await connectClient(healthy.url);
    const before = healthy.affinity.stats().registryErrors.close;
    await redis.client.call("CLIENT", "PAUSE", "1500", "WRITE");
    const r = await healthy.affinity.closeSession(c.sid);
    expect(r).toEqual({ local: "closed", registry: "failed" });
    expect(healthy.affinity.stats().registryErrors.close).toBe(before + 1);
    expect(healthy.affinity.hasSession(c.sid)).toBe(false);
    await redis.client.call("CLIENT", "UNPAUSE");
  });
});
