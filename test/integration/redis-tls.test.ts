// Managed Redis as operators run it: TLS only (a throwaway CA), an ACL user with the registry's
// rights, the default user off. The contract suite (registry-contract.test.ts) runs every Redis mode
// this way; this file covers the ends: the sidecar's command line and environment, the reference
// node's, what is refused (another CA, a wrong password, no credentials, no TLS), and that no
// secret reaches a log line.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { RedisRegistry, type RegistryStatus } from "../../lib/registry/index.ts";
import { checkedRedisConnection, type RedisSettings } from "../../lib/settings/redis.ts";
import { parseNodeConfig } from "../../node/reference/config.ts";
import { freePort } from "../../dev/net.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import {
  MANAGED,
  startManagedRedis,
  startManagedSentinel,
  type TestRedis,
  type TestSentinel,
} from "../../dev/redis.ts";
import { makeTestCa, type TestCa } from "../../dev/tls.ts";
import { connectClient, startNode } from "./node-redis-helper.ts";

const { app: APP, sentinelPassword: SENTINEL_PASSWORD } = MANAGED;

let dir: string;
let ca: TestCa;
let otherCa: TestCa;
let redis: TestRedis;
let sentinel: TestSentinel;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mcpa-redis-tls-"));
  ca = makeTestCa(dir);
  otherCa = makeTestCa(dir, "other");
  redis = await startManagedRedis(ca);
  sentinel = await startManagedSentinel(redis.port, ca);
});
afterAll(async () => {
  await sentinel?.close();
  await redis?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A registry from typed settings; resolves with its status after `ms` and the errors it reported. */
async function tryConnect(settings: RedisSettings, ms = 1500): Promise<{ status: RegistryStatus; errors: string[] }> {
  const errors: string[] = [];
  const reg = new RedisRegistry({
    ...checkedRedisConnection(settings, (_s, m) => new Error(m)),
    connectTimeoutMs: 500,
    maxBackoffMs: 200,
    onError: (_op, err) => errors.push(err.message),
  });
  try {
    await reg.lookupSession("probe").catch((err: Error) => errors.push(err.message));
    await waitUntil("the registry to decide", () => reg.status() === "ready" || errors.length > 0, ms).catch(
      () => undefined,
    );
    return { status: reg.status(), errors };
  } finally {
    await reg.close();
  }
}

describe("Redis with TLS and an ACL user", () => {
  const good = (): RedisSettings => ({
    redisUrl: redis.url,
    redisUsername: APP.user,
    redisPassword: APP.password,
    redisTlsCaFile: ca.caFile,
  });

  it("connects with the CA, the user and its password", async () => {
    expect(await tryConnect(good())).toEqual({ status: "ready", errors: [] });
  });

  it("refuses a server certificate from another CA, a wrong password, no credentials, and no TLS", async () => {
    const [otherAuthority, wrongPassword, anonymous, plain] = await Promise.all([
      tryConnect({ ...good(), redisTlsCaFile: otherCa.caFile }),
      tryConnect({ ...good(), redisPassword: "not-the-password" }),
      tryConnect({ redisUrl: redis.url, redisTlsCaFile: ca.caFile }),
      tryConnect({ ...good(), redisUrl: redis.url.replace("rediss:", "redis:"), redisTlsCaFile: null }),
    ]);
    expect(otherAuthority.status).not.toBe("ready");
    expect(otherAuthority.errors.join("\n")).toMatch(/certificate/i);
    expect(wrongPassword.status).not.toBe("ready");
    expect(wrongPassword.errors.join("\n")).toMatch(/WRONGPASS/);
    // The default user is off: without credentials nothing is allowed.
    expect(anonymous.status).not.toBe("ready");
    expect(anonymous.errors.join("\n")).toMatch(/NOAUTH|WRONGPASS|disabled/i);
    expect(plain.status).not.toBe("ready");
  });

  it("the user has the registry's rights only: other keys are refused", async () => {
    const r = new Redis({ ...redis.clientOptions, username: APP.user, password: APP.password });
    try {
      await r.set("mcp:session:acl-probe", "x");
      await expect(r.set("someone-else:key", "x")).rejects.toThrow(/NOPERM/);
      await expect(r.flushall()).rejects.toThrow(/NOPERM/);
    } finally {
      r.disconnect();
    }
  });
});

describe("the sidecar's command line and environment", () => {
  it("gets ready on TLS + ACL Redis through Sentinel, and logs its settings without a secret", async () => {
    const port = await freePort();
    const env = {
      ...process.env,
      MCP_AFFINITY_DIR: join(dir, "sidecar"),
      MCP_AFFINITY_REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`,
      MCP_AFFINITY_REDIS_SENTINEL_NAME: sentinel.masterName,
      MCP_AFFINITY_REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
      MCP_AFFINITY_REDIS_USERNAME: APP.user,
      MCP_AFFINITY_REDIS_PASSWORD: APP.password,
      MCP_AFFINITY_REDIS_TLS: "true",
    };
    const child = spawn(
      process.execPath,
      ["bin/mcp-affinity-sidecar.js", "--port", String(port), "--redis-tls-ca-file", ca.caFile, "--probe-path", "off"],
      { cwd: join(import.meta.dirname, "../.."), env, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    try {
      await waitUntil(
        "the sidecar ready",
        async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200,
        15_000,
      );
      const started = out.split("\n").find((l) => l.includes("mcp-affinity sidecar started"));
      expect(started, out).toBeDefined();
      const settings = JSON.parse(started!).settings;
      expect(settings).toMatchObject({
        redisUsername: APP.user,
        redisPassword: "***",
        redisSentinelPassword: "***",
        redisTls: true,
        redisTlsCaFile: ca.caFile,
      });
      expect(out).not.toContain(APP.password);
      expect(out).not.toContain(SENTINEL_PASSWORD);
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });

  it("a URL's password is masked in the log, the rest of the URL kept", async () => {
    const port = await freePort();
    const url = `rediss://${APP.user}:${APP.password}@127.0.0.1:${redis.port}`;
    const child = spawn(
      process.execPath,
      ["bin/mcp-affinity-sidecar.js", "--port", String(port), "--dir", join(dir, "sidecar-url")],
      {
        cwd: join(import.meta.dirname, "../.."),
        env: { ...process.env, MCP_AFFINITY_REDIS_URL: url, MCP_AFFINITY_REDIS_TLS_CA_FILE: ca.caFile },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    try {
      await waitUntil("the start line", () => out.includes("mcp-affinity sidecar started"), 15_000);
      await sleep(100);
      expect(out).not.toContain(APP.password);
      expect(out).toContain(`rediss://${APP.user}:***@127.0.0.1:${redis.port}`);
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });
});

describe("the reference node's settings", () => {
  it("registers its sessions in TLS + ACL Redis through Sentinel (MCP_NODE_REDIS_*)", async () => {
    const cfg = parseNodeConfig(
      ["--port", "0", "--node-url", "http://127.0.0.1:0", "--drain-grace-ms", "100", "--log-level", "silent"],
      {
        MCP_NODE_REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`,
        MCP_NODE_REDIS_SENTINEL_NAME: sentinel.masterName,
        MCP_NODE_REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
        MCP_NODE_REDIS_USERNAME: APP.user,
        MCP_NODE_REDIS_PASSWORD: APP.password,
        MCP_NODE_REDIS_TLS: "1",
        MCP_NODE_REDIS_TLS_CA_FILE: ca.caFile,
      },
    )!;
    const node = await startNode(cfg);
    const admin = new Redis(redis.clientOptions);
    try {
      expect(await node.affinity.ready()).toBe(true);
      const c = await connectClient(node.url);
      expect(await admin.exists(`mcp:session:${c.sid}`)).toBe(1);
      expect(await admin.exists(`mcp:node:${node.affinity.cookie}`)).toBe(1);
      await c.close();
      const listening = node.logs.find((l) => l.msg === "reference node listening");
      expect(listening?.settings).toMatchObject({ redisPassword: "***", redisSentinelPassword: "***" });
      expect(JSON.stringify(node.logs)).not.toContain(APP.password);
    } finally {
      admin.disconnect();
      await node.shutdown();
    }
  });
});
