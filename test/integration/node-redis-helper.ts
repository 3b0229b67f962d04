// Private helpers for the node-library tests: a throwaway redis-server, free ports, polling.
import { spawn, type ChildProcess } from "node:child_process";
import { Redis } from "ioredis";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { header, MCP_HEADERS, PROTOCOL_VERSION, raw } from "../../dev/mcp-client.ts";
import { freePort } from "../../dev/net.ts";
import { waitUntil } from "../../dev/poll.ts";
import type { NodeConfig } from "../../node/reference/config.ts";
import { startReferenceNode, type RunningNode, type StartOptions } from "../../node/reference/server.ts";

export interface TestRedis {
  port: number;
  url: string;
  /** A client for assertions (separate from the library's). */
  client: Redis;
  /** Kills the server (SIGKILL: like a crash); start() brings a fresh, empty one back on the same port. */
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(port?: number): Promise<TestRedis> {
  const p = port ?? (await freePort());
  let proc: ChildProcess | undefined;
  const launch = async () => {
    proc = spawn(
      "/usr/bin/redis-server",
      ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      {
        stdio: "ignore",
      },
    );
    const probe = new Redis({
      port: p,
      host: "127.0.0.1",
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on("error", () => {});
    try {
      await waitUntil(
        `redis-server on port ${p}`,
        async () => {
          if (probe.status !== "ready") {
            probe.disconnect();
            await probe.connect();
          }
          return (await probe.ping()) === "PONG";
        },
        5000,
      );
    } finally {
      probe.disconnect();
    }
  };
  const kill = async () => {
    const c = proc;
    proc = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once("exit", () => resolve());
      c.kill("SIGKILL");
    });
  };
  await launch();
  const client = new Redis({
    port: p,
    host: "127.0.0.1",
    maxRetriesPerRequest: 1,
    retryStrategy: (n) => Math.min(n * 50, 500),
  });
  client.on("error", () => {});
  return {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    client,
    kill,
    start: launch,
    async stop() {
      client.disconnect();
      await kill();
    },
  };
}

export interface LogEntry {
  level: "debug" | "info" | "warn" | "error";
  msg?: string;
  [k: string]: unknown;
}

/** A pino-compatible logger that keeps every entry, for assertions on what was logged. */
export function captureLogger(bindings: Record<string, unknown> = {}, sink: LogEntry[] = []) {
  const at =
    (level: LogEntry["level"]) =>
    (obj: object, msg?: string): void => {
      sink.push({ ...bindings, ...obj, level, msg });
    };
  return {
    entries: sink,
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child(more: object) {
      return captureLogger({ ...bindings, ...more }, sink);
    },
  };
}

// ---- reference node and MCP client ---------------------------------------------------------

export function nodeConfig(over: Partial<NodeConfig>): NodeConfig {
  return {
    port: 0,
    host: "127.0.0.1",
    name: "node-test",
    nodeUrl: "http://127.0.0.1:0",
    drainGraceMs: 300,
    heartbeatMs: 200,
    failClose: false,
    logLevel: "silent",
    ...over,
  };
}

/** Starts the reference node in this process; its log entries land in the returned `logs`. */
export async function startNode(
  over: Partial<NodeConfig>,
  opts: StartOptions = {},
): Promise<RunningNode & { logs: LogEntry[] }> {
  const logger = captureLogger();
  const node = await startReferenceNode(nodeConfig(over), { logger, ...opts });
  return Object.assign(node, { logs: logger.entries });
}

export interface McpTestClient {
  client: Client;
  transport: StreamableHTTPClientTransport;
  sid: string;
  counter(): Promise<number>;
  whoami(): Promise<{ node: string; boot: string }>;
  close(): Promise<void>;
}

const textOf = (r: unknown): string => (r as { content: Array<{ type: string; text: string }> }).content[0]!.text;

export async function connectClient(baseUrl: string, fetchImpl?: typeof fetch): Promise<McpTestClient> {
  const client = new Client({ name: "node-lib-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(
    new URL(`${baseUrl}/mcp`),
    fetchImpl ? { fetch: fetchImpl } : undefined,
  );
  await client.connect(transport);
  return {
    client,
    transport,
    sid: transport.sessionId!,
    counter: async () => Number(textOf(await client.callTool({ name: "counter" }))),
    whoami: async () => JSON.parse(textOf(await client.callTool({ name: "whoami" }))),
    close: async () => {
      await client.close().catch(() => {});
    },
  };
}

/** A raw request to the MCP endpoint, as a client would send it for an existing session. */
export async function rawMcp(
  baseUrl: string,
  method: "POST" | "GET" | "DELETE",
  sid: string | undefined,
  body?: unknown,
) {
  const headers: Record<string, string> = { accept: MCP_HEADERS.accept, "mcp-protocol-version": PROTOCOL_VERSION };
  if (sid !== undefined) headers["mcp-session-id"] = sid;
  if (body !== undefined) headers["content-type"] = MCP_HEADERS["content-type"];
  const r = await raw(`${baseUrl}/mcp`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return {
    status: r.status,
    contentType: header(r, "content-type") ?? null,
    retryAfter: header(r, "retry-after") ?? null,
    body: r.body,
  };
}
