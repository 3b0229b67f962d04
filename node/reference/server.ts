// The reference MCP node: one endpoint on the node library's v2 entry serving both protocol eras
// (2025-era sessions with affinity, 2026-07-28 requests statelessly), with tools that make affinity
// visible (whoami, counter, notify), tools that ask the client in the middle of a call (ask, sample,
// progress: the same as the test servers on the Python and Go SDKs), /graphql for round-robin
// traffic and /healthz.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  acceptedContent,
  inputRequired,
  inputResponse,
  McpServer,
  type CallToolResult,
  type InputRequiredResult,
} from "@modelcontextprotocol/server";
import { pino } from "pino";
import { z } from "zod";
import { createAffinity, type Affinity, type AffinityOptions, type LoggerLike } from "../src/index.ts";
import { mountMcpV2, type MountedV2 } from "../src/v2.ts";
import { DEFAULT_IDLE_TIMEOUT_MS, NODE_SETTINGS, type NodeConfig } from "./config.ts";
import { logRedaction, redactSettings } from "../../lib/settings/index.ts";
import { hasRedis, redisSettingsOf } from "../../lib/settings/redis.ts";
import { McpAffinityError } from "../../lib/errors.ts";

export interface RunningNode {
  /** Where the node listens (http://host:port). */
  url: string;
  port: number;
  affinity: Affinity;
  http: Server;
  /** The MCP endpoint (its `mcp.stateless` is v2's handler for 2026-07-28 requests). */
  mcp: MountedV2;
  /** SIGTERM path: drain for the grace period, close sessions, remove the heartbeat, stop listening. */
  shutdown(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The `progress` tool: 3 notifications 400 ms apart, 1.2 s in all. */
const PROGRESS_STEPS = 3;
const PROGRESS_EVERY_MS = 400;

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const text = (t: string): CallToolResult => ({ content: [{ type: "text", text: t }] });

/**
 * The node's MCP server: one per 2025-era session, one per 2026-07-28 request. The tools
 * are the same in both eras; `counter` counts per session, so on a 2026 request (no session) it is 1.
 */
export function buildMcpServer(affinity: Affinity, name: string): McpServer {
  const server = new McpServer(
    { name: "mcp-affinity-reference-node", version: "0.1.0" },
    { capabilities: { logging: {} } },
  );
  // Per-session state held only in this process: a misroute shows as a counter reset.
  let counter = 0;
  server.registerTool("whoami", { description: "Node name and boot id of the node serving this session" }, async () =>
    text(JSON.stringify({ node: name, boot: affinity.bootId })),
  );
  server.registerTool(
    "counter",
    { description: "Increments this session's in-memory counter and returns it" },
    async () => text(String(++counter)),
  );
  server.registerTool(
    "notify",
    {
      description:
        "Sends `count` notifications, `intervalMs` apart, then returns. target=request: on this call's SSE stream (progress when a progress token is given, plus a log message); target=standalone: log messages on the session's GET stream",
      inputSchema: z.object({
        count: z.number().int().min(0).max(10_000).default(3),
        intervalMs: z.number().int().min(0).max(60_000).default(10),
        target: z.enum(["request", "standalone"]).default("request"),
      }),
    },
    async ({ count, intervalMs, target }, call) => {
      const token = call.mcpReq._meta?.progressToken;
      for (let i = 1; i <= count; i++) {
        if (i > 1 && intervalMs > 0) await sleep(intervalMs);
        const message = {
          method: "notifications/message" as const,
          params: { level: "info" as const, logger: "notify", data: { i, count, node: name } },
        };
        if (target === "standalone") {
          await server.server.notification(message);
          continue;
        }
        if (token !== undefined) {
          await call.mcpReq.notify({
            method: "notifications/progress",
            params: { progressToken: token, progress: i, total: count, message: `${i}/${count}` },
          });
        }
        await call.mcpReq.notify(message);
      }
      return text(JSON.stringify({ sent: count, node: name }));
    },
  );
  // Input from the client in the middle of a call, written once for both eras: the call answers
  // input_required and runs again with the client's answer. On a 2025-era session the SDK sends the
  // request to the client on the call's own SSE stream and waits for its answer (the answer must
  // come back to this node while the call is open); on 2026-07-28 the client retries the call with
  // the answer, and any node can take the retry (nothing is kept between the rounds).
  server.registerTool(
    "ask",
    { description: "Asks the client for a name (elicitation) and greets it" },
    async (call): Promise<CallToolResult | InputRequiredResult> => {
      const view = inputResponse(call.mcpReq.inputResponses, "name");
      if (view.kind === "elicit" && view.action !== "accept") return text("declined");
      const answer = acceptedContent(call.mcpReq.inputResponses, "name", z.object({ name: z.string() }));
      if (answer) return text(`hello ${answer.name}`);
      return inputRequired({
        inputRequests: {
          name: inputRequired.elicit({
            message: "What is your name?",
            requestedSchema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
          }),
        },
      });
    },
  );
  server.registerTool(
    "sample",
    { description: 'Asks the client\'s model to answer "ping" (sampling)' },
    async (call): Promise<CallToolResult | InputRequiredResult> => {
      const view = inputResponse(call.mcpReq.inputResponses, "ping");
      if (view.kind === "sampling") {
        const content = view.result.content;
        if (Array.isArray(content) || content.type !== "text")
          throw new Error(`sampling answered ${Array.isArray(content) ? "several blocks" : content.type}, not text`);
        return text(`sampled: ${content.text}`);
      }
      return inputRequired({
        inputRequests: {
          ping: inputRequired.createMessage({
            messages: [{ role: "user", content: { type: "text", text: "ping" } }],
            maxTokens: 16,
          }),
        },
      });
    },
  );
  server.registerTool(
    "progress",
    { description: "Sends 3 progress notifications 400 ms apart (when given a progress token), then returns" },
    async (call) => {
      const token = call.mcpReq._meta?.progressToken;
      for (let i = 1; i <= PROGRESS_STEPS; i++) {
        // mcpReq.notify relates the notification to this call: it goes on the call's stream.
        if (token !== undefined) {
          await call.mcpReq.notify({
            method: "notifications/progress",
            params: { progressToken: token, progress: i, total: PROGRESS_STEPS },
          });
        }
        await sleep(PROGRESS_EVERY_MS);
      }
      return text("done");
    },
  );
  return server;
}

export interface StartOptions {
  logger?: LoggerLike;
  /** Library options beyond the node's flags (tests: refreshIntervalMs, metrics, ...). */
  affinity?: Partial<AffinityOptions>;
}

/**
 * A stopping node keeps answering after its sessions are closed (see shutdown) until no request
 * has reached it for SHUTDOWN_QUIET_MS, at least SHUTDOWN_QUIET_MS and at most SHUTDOWN_LINGER_MAX_MS.
 */
const SHUTDOWN_QUIET_MS = 500;
const SHUTDOWN_LINGER_MAX_MS = 5000;

export async function startReferenceNode(cfg: NodeConfig, opts: StartOptions = {}): Promise<RunningNode> {
  const log =
    opts.logger ??
    (pino({
      level: cfg.logLevel,
      base: { component: "reference-node" },
      redact: logRedaction(NODE_SETTINGS, ["password", "token"]),
    }) as unknown as LoggerLike);
  let affinity: Affinity | undefined;

  const http = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") {
      // Healthy through the drain grace: Traefik must keep routing the sessions still served here.
      if (!affinity) return json(res, 503, { status: "starting" });
      const ok = affinity.healthy;
      return json(res, ok ? 200 : 503, {
        status: affinity.state,
        node: cfg.name,
        boot: affinity.bootId,
        sessions: affinity.sessionCount,
      });
    }
    if (path === "/graphql") {
      if (req.method !== "GET" && req.method !== "POST") {
        res.setHeader("allow", "GET, POST");
        return json(res, 405, { errors: [{ message: "method not allowed" }] });
      }
      req.resume();
      req.on("end", () => json(res, 200, { node: cfg.name }));
      return;
    }
    json(res, 404, { error: "not found" });
  });
  http.on("clientError", (_err, socket) => socket.destroy());
  let lastRequestAt = 0;

  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(cfg.port, cfg.host, () => {
      http.off("error", reject);
      resolve();
    });
  });
  const port = (http.address() as AddressInfo).port;
  const nodeUrl = cfg.port === 0 && cfg.nodeUrl.endsWith(":0") ? `http://127.0.0.1:${port}` : cfg.nodeUrl;

  const a = createAffinity({
    nodeUrl,
    nodeName: cfg.name,
    registry: hasRedis(cfg) ? redisSettingsOf(cfg) : { sidecarUrl: cfg.sidecarUrl!, token: cfg.sidecarToken },
    heartbeatMs: cfg.heartbeatMs,
    drainGraceMs: cfg.drainGraceMs,
    sessionTtlMs: cfg.sessionTtlMs,
    idleTimeoutMs: cfg.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    logger: log,
    onSessionClosed: cfg.failClose
      ? () => {
          throw new McpAffinityError("ERR_NODE_FAIL_CLOSE", "local close failed (--fail-close)");
        }
      : undefined,
    ...opts.affinity,
  });
  const mcp = mountMcpV2(http, a, { createServer: () => buildMcpServer(a, cfg.name) });
  // MCP requests only: health probes keep coming until the listener closes.
  http.on("request", (req: IncomingMessage) => void (req.url?.startsWith("/mcp") && (lastRequestAt = Date.now())));
  if (!(await a.ready()))
    a.log.warn({ registry: hasRedis(cfg) ? "redis" : "sidecar" }, "registry not reachable at start; serving anyway");
  // Healthy only from here: Traefik sends nothing before the endpoint is mounted and the heartbeat written.
  affinity = a;
  a.log.info(
    {
      url: `http://${cfg.host}:${port}`,
      nodeUrl,
      cookie: a.cookie,
      failClose: cfg.failClose,
      settings: redactSettings(NODE_SETTINGS, cfg),
    },
    "reference node listening",
  );

  let stopping: Promise<void> | undefined;
  return {
    url: `http://${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`,
    port,
    affinity: a,
    http,
    mcp,
    shutdown() {
      stopping ??= (async () => {
        await a.drain();
        await a.stop();
        // Keep listening after the sessions are closed and the heartbeat is removed until requests
        // stop coming: the edge answers for a gone node itself once its view says so, which on a
        // loaded host took longer than a fixed 500 ms. Until then a late request gets this node's
        // own 404 (or 503 for an initialize) instead of a refused connection (a 502 at the proxy).
        const lingerUntil = Date.now() + SHUTDOWN_LINGER_MAX_MS;
        do await sleep(SHUTDOWN_QUIET_MS);
        while (Date.now() - lastRequestAt < SHUTDOWN_QUIET_MS && Date.now() < lingerUntil);
        await mcp.mcp.close();
        await new Promise<void>((resolve) => {
          http.close(() => resolve());
          http.closeAllConnections();
        });
        a.log.info({}, "reference node stopped");
      })();
      return stopping;
    },
  };
}
