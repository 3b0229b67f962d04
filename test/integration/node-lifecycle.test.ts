// The reference node as a real process: heartbeat and its expiry, a new boot id on restart, SIGTERM
// drain, and clear configuration errors.
import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import {
  CHANGE_CHANNEL,
  decodeChange,
  cookieValueFor,
  decodeNode,
  decodeSession,
  nodeKey,
  sessionKey,
} from "../../lib/registry/schema.ts";
import { SESSION_NOT_FOUND_BODY } from "../../node/src/index.ts";
import { ConfigError, parseNodeConfig } from "../../node/reference/config.ts";
import { waitUntil } from "../../dev/poll.ts";
import { freePort } from "../../dev/net.ts";
import { connectClient, rawMcp, startNode, startRedis, type TestRedis } from "./node-redis-helper.ts";

const MAIN = "node/reference/main.ts";
let redis: TestRedis;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await redis?.stop();
});

interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function run(args: string[], env: Record<string, string> = {}): Proc {
  // node --import tsx: one process, so SIGKILL really kills the node (the tsx CLI would leave a child).
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function health(url: string): Promise<{ status: number; body: any } | null> {
  try {
    const res = await fetch(`${url}/healthz`);
    return { status: res.status, body: await res.json() };
  } catch {
    return null;
  }
}

/** The heartbeat period of the nodes startProc runs: their record lives 3 periods. */
const PROC_HEARTBEAT_MS = 200;

async function startProc(port: number, extra: string[] = []) {
  const p = run([
    "--port",
    String(port),
    "--name",
    `proc-${port}`,
    "--redis-url",
    redis.url,
    "--heartbeat-ms",
    String(PROC_HEARTBEAT_MS),
    "--drain-grace-ms",
    "300",
    ...extra,
  ]);
  const url = `http://127.0.0.1:${port}`;
  const h = await waitUntil(
    `node on ${port} healthy`,
    async () => ((await health(url))?.status === 200 ? health(url) : null),
    15_000,
    50,
  );
  return { ...p, url, boot: h.body.boot as string };
}

describe("heartbeat and boot id", () => {
  it("keeps a short-lived node record, which expires when the process dies, and a restart brings a new boot", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const cookie = cookieValueFor(url);
    const sub = new Redis(redis.url);
    const nodeChanges: any[] = [];
    await sub.subscribe(CHANGE_CHANNEL);
    sub.on("message", (_c, m) => {
      const o = decodeChange(m);
      if (o.op === "node" && o.cookie === cookie) nodeChanges.push(o);
    });
    try {
      const first = await startProc(port);
      const rec1 = decodeNode((await waitUntil("node record", () => redis.client.get(nodeKey(cookie)), 5000))!);
      expect(rec1).toMatchObject({ url, cookie, boot: first.boot, name: `proc-${port}`, state: "up" });
      const pttl = await redis.client.pttl(nodeKey(cookie));
      expect(pttl).toBeGreaterThan(0);
      expect(pttl).toBeLessThanOrEqual(600);
      // Refreshed well within its TTL, and announced each time.
      await waitUntil(
        "heartbeat refreshed",
        async () => decodeNode((await redis.client.get(nodeKey(cookie)))!).seen > rec1.seen,
        5000,
      );
      await waitUntil("node changes announced", () => nodeChanges.length >= 2, 5000);
      expect(nodeChanges[0].record).toMatchObject({ boot: first.boot, state: "up" });

      const c = await connectClient(first.url);
      expect(await c.counter()).toBe(1);
      expect(decodeSession((await redis.client.get(sessionKey(c.sid)))!).boot).toBe(first.boot);

      // A crash: the heartbeat stops and the record expires within 3 heartbeats.
      first.child.kill("SIGKILL");
      await first.exited;
      // Dead, the node writes no more: the record's remaining life, read after the kill, is at most
      // the 3 periods its last heartbeat gave it, and then it is gone.
      const left = await redis.client.pttl(nodeKey(cookie));
      expect(left).toBeLessThanOrEqual(3 * PROC_HEARTBEAT_MS);
      await waitUntil("node record expired", async () => (await redis.client.exists(nodeKey(cookie))) === 0, 3000);
      // The session record outlives its process: the registry sees it as stale from now on.
      expect(await redis.client.exists(sessionKey(c.sid))).toBe(1);

      const second = await startProc(port);
      expect(second.boot).not.toBe(first.boot);
      const rec2 = decodeNode((await waitUntil("new node record", () => redis.client.get(nodeKey(cookie)), 5000))!);
      expect(rec2.boot).toBe(second.boot);
      expect(nodeChanges.at(-1).record.boot).toBe(second.boot);

      // The old session reaching the restarted node: the SDK's 404; a new initialize works.
      const old = await rawMcp(second.url, "POST", c.sid, {
        jsonrpc: "2.0",
        id: 3,
        method: "tools/call",
        params: { name: "counter" },
      });
      expect(old).toMatchObject({ status: 404, body: SESSION_NOT_FOUND_BODY });
      const fresh = await connectClient(second.url);
      expect(await fresh.counter()).toBe(1);
      expect((await fresh.whoami()).boot).toBe(second.boot);
      await fresh.close();
      await waitUntil(
        "stale mismatch logged by the restarted node",
        () => second.stdout().includes('"reason":"stale"'),
        5000,
      );
      expect(second.stdout()).not.toContain(c.sid);
      second.child.kill("SIGTERM");
      expect(await second.exited).toBe(0);
    } finally {
      sub.disconnect();
    }
  });
});

describe("drain on SIGTERM", () => {
  it("announces draining, keeps serving for the grace period, then exits 0 and removes its records", async () => {
    const port = await freePort();
    const p = await startProc(port, ["--drain-grace-ms", "1200"]);
    const cookie = cookieValueFor(p.url);
    const c = await connectClient(p.url);
    expect(await c.counter()).toBe(1);
    const t0 = Date.now();
    p.child.kill("SIGTERM");
    await waitUntil(
      "draining announced",
      async () => decodeNode((await redis.client.get(nodeKey(cookie)))!).state === "draining",
      2000,
    );
    // Existing session keeps working during the grace period, and the node still reports healthy.
    expect(await c.counter()).toBe(2);
    expect(await health(p.url)).toMatchObject({ status: 200, body: { status: "draining" } });
    // No new session while draining: 503 + Retry-After naming the initialize, nothing registered.
    const init = await rawMcp(p.url, "POST", undefined, {
      jsonrpc: "2.0",
      id: 9,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } },
    });
    expect(init).toMatchObject({ status: 503, retryAfter: "1" });
    expect(JSON.parse(init.body)).toEqual({
      jsonrpc: "2.0",
      error: { code: -32000, message: "This node is shutting down; retry later" },
      id: 9,
    });
    expect(await p.exited).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1100);
    expect(await redis.client.exists(nodeKey(cookie))).toBe(0);
    expect(await redis.client.exists(sessionKey(c.sid))).toBe(0);
    await c.close();
  });

  it("in process: drain() resolves at once without sessions; healthz turns 503 after the grace", async () => {
    const drainGraceMs = 5000;
    const node = await startNode({ name: "drain-now", redisUrl: redis.url, drainGraceMs });
    const t0 = Date.now();
    await node.affinity.drain();
    // Without sessions there is nothing to wait for: it must not sit out the grace.
    expect(Date.now() - t0).toBeLessThan(drainGraceMs);
    expect(node.affinity.state).toBe("drained");
    expect(await health(node.url)).toMatchObject({ status: 503 });
    await node.shutdown();
  });
});

describe("configuration errors", () => {
  it("as a process: one message naming the setting, exit code 2, no stack trace", async () => {
    const busy = await startNode({ name: "busy", redisUrl: redis.url });
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [["--redis-url", redis.url], { MCP_NODE_PORT: "99999" }, /MCP_NODE_PORT/],
      [["--port", "7100"], {}, /--redis-url/],
      [["--port", String(busy.port), "--redis-url", redis.url], {}, /--port/],
    ];
    try {
      const results = await Promise.all(
        cases.map(async ([args, env]) => {
          const p = run(args, { MCP_NODE_PORT: "", ...env });
          return { code: await p.exited, err: p.stderr() };
        }),
      );
      results.forEach((r, i) => {
        const lines = r.err.trim().split("\n");
        expect({ i, code: r.code }).toEqual({ i, code: 2 });
        expect(lines.length).toBe(1);
        expect(lines[0]).toMatch(/^mcp-node: /);
        expect(lines[0]).toMatch(cases[i]![2]);
      });
    } finally {
      await busy.shutdown();
    }
  });

  it("each bad setting is named by the parser", () => {
    const base = ["--port", "7100", "--redis-url", redis.url];
    const cases: Array<[string[], Record<string, string>, string]> = [
      [["--port", "abc", "--redis-url", redis.url], {}, "--port"],
      [["--port", "7100", "--redis-url", "http://127.0.0.1:1"], {}, "--redis-url"],
      [[...base, "--sidecar-url", "http://127.0.0.1:1"], {}, "--redis-url"],
      [[...base, "--drain-grace-ms", "soon"], {}, "--drain-grace-ms"],
      [[...base, "--heartbeat-ms", "5"], {}, "--heartbeat-ms"],
      [[...base, "--node-url", "not a url"], {}, "--node-url"],
      [[...base, "--log-level", "loud"], {}, "--log-level"],
      [[...base, "--idle-timeout-ms", "10"], {}, "--idle-timeout-ms"],
      [[...base, "--frobnicate"], {}, "--frobnicate"],
      [["--port", "7100"], { MCP_NODE_SIDECAR_URL: "ftp://x" }, "MCP_NODE_SIDECAR_URL"],
      [base, { MCP_NODE_FAIL_CLOSE: "maybe" }, "MCP_NODE_FAIL_CLOSE"],
      [["--port", "0", "--redis-url", redis.url], {}, "--node-url"],
    ];
    for (const [args, env, setting] of cases) {
      let err: unknown;
      try {
        parseNodeConfig(args, env);
      } catch (e) {
        err = e;
      }
      expect(err, `${args.join(" ")} ${JSON.stringify(env)}`).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).setting).toBe(setting);
      expect((err as ConfigError).message).toContain(setting);
      expect((err as ConfigError).code).toBe("ERR_NODE_CONFIG");
    }
    // Flags win over the environment; defaults follow the port.
    const cfg = parseNodeConfig(["--port", "7100", "--redis-url", redis.url], {
      MCP_NODE_PORT: "7200",
      MCP_NODE_FAIL_CLOSE: "1",
    })!;
    expect(cfg).toMatchObject({
      port: 7100,
      nodeUrl: "http://127.0.0.1:7100",
      name: "node-7100",
      failClose: true,
      heartbeatMs: 5000,
    });
    // Abandoned sessions do not live for the record TTL (30 days): idle expiry defaults to 30 minutes.
    expect(cfg.idleTimeoutMs).toBe(30 * 60 * 1000);
    expect(
      parseNodeConfig(["--port", "7100", "--redis-url", redis.url, "--idle-timeout-ms", "60000"], {})!.idleTimeoutMs,
    ).toBe(60_000);
    expect(
      parseNodeConfig(["--port", "7100", "--redis-url", redis.url], { MCP_NODE_IDLE_TIMEOUT_MS: "5000" })!
        .idleTimeoutMs,
    ).toBe(5000);
  });
});
