// Request routing for a stateful MCP endpoint: one SDK transport + server per session, the SDK's own
// answers for everything it validates, and its exact 404 body for sessions this process does not hold.
import type { IncomingMessage, Server as HttpServer, ServerResponse } from "node:http";
import { Server as NetServer } from "node:net";
import type { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { errFields } from "../../lib/errors.ts";
import { sessionTag } from "../../lib/registry/session-hash.ts";
import type { Affinity } from "./affinity.ts";
import type { AffinityOptions } from "./options.ts";
import type { ConnectableServer } from "./affinity.ts";
import {
  DRAINING_MESSAGE,
  ID_BODY_MAX,
  jsonRpcErrorBody,
  MISROUTED_MESSAGE,
  NODE_RETRY_AFTER_SECONDS,
  requestIdOf,
  routeSession,
  SESSION_NOT_FOUND_BODY,
  sessionIdOf,
} from "./routing.ts";

export function writeSessionNotFound(res: ServerResponse): void {
  res.writeHead(404, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(SESSION_NOT_FOUND_BODY),
  });
  res.end(SESSION_NOT_FOUND_BODY);
}

function writeJsonRpcError(
  res: ServerResponse,
  status: number,
  code: number,
  message: string,
  id: string | number | null = null,
  retryAfterSeconds = 0,
): void {
  const body = jsonRpcErrorBody(code, message, id);
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
  };
  if (retryAfterSeconds > 0) headers["retry-after"] = retryAfterSeconds;
  res.writeHead(status, headers);
  res.end(body);
}

async function readRequestId(req: IncomingMessage, parsedBody: unknown): Promise<string | number | null> {
  if (parsedBody !== undefined) return requestIdOf(parsedBody);
  if (req.method !== "POST") return null;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > ID_BODY_MAX) return null;
    chunks.push(c);
  }
  try {
    return requestIdOf(JSON.parse(Buffer.concat(chunks).toString("utf8")));
  } catch {
    return null;
  }
}

/** 503 + Retry-After, naming the request when it is a single JSON-RPC request. */
async function writeUnavailable(
  req: IncomingMessage,
  res: ServerResponse,
  parsedBody: unknown,
  message: string,
): Promise<void> {
  const id = await readRequestId(req, parsedBody).catch(() => null);
  writeJsonRpcError(res, 503, -32000, message, id, NODE_RETRY_AFTER_SECONDS);
}

export type TransportOptions = Parameters<Affinity["createTransport"]>[0];

export interface McpHandlerOptions {
  /** Builds the MCP server for one new session (McpServer or the SDK's low-level Server). */
  createServer: () => ConnectableServer | Promise<ConnectableServer>;
  /** Passed to every StreamableHTTPServerTransport (e.g. enableJsonResponse, eventStore, allowedHosts). */
  transportOptions?: TransportOptions;
}

export type McpRequestHandler = (req: IncomingMessage, res: ServerResponse, parsedBody?: unknown) => Promise<void>;

/** The Node http handler for the MCP endpoint (POST, GET and DELETE of Streamable HTTP). */
export function createMcpHandler(affinity: Affinity, opts: McpHandlerOptions): McpRequestHandler {
  return async (req, res, parsedBody) => {
    try {
      await route(affinity, opts, req, res, parsedBody);
    } catch (err) {
      affinity.log.error({ err: errFields(err) }, "mcp request failed");
      if (!res.headersSent) writeJsonRpcError(res, 500, -32603, "Internal error");
      else res.destroy();
    }
  };
}

async function route(
  affinity: Affinity,
  opts: McpHandlerOptions,
  req: IncomingMessage,
  res: ServerResponse,
  parsedBody: unknown,
) {
  const sid = sessionIdOf(req.headers["mcp-session-id"]);
  if (sid !== undefined) {
    const route = await routeSession(affinity, (id) => affinity.transportFor(id), sid, req.method ?? "");
    if (route.kind === "misrouted") return writeUnavailable(req, res, parsedBody, MISROUTED_MESSAGE);
    if (route.kind === "not-found") return writeSessionNotFound(res);
    try {
      await route.transport.handleRequest(req, res, parsedBody);
    } finally {
      route.leave();
    }
    return;
  }
  if (req.method !== "POST") {
    // No session: let a bare SDK transport give its own 400/405 answer.
    const bare = affinity.createTransport(opts.transportOptions);
    await bare.handleRequest(req, res, parsedBody);
    await bare.close();
    return;
  }
  // A POST without a session id: an initialize creates a session (registered before the answer).
  // A draining node takes no new sessions: they would be cut when it stops.
  if (affinity.state !== "up") {
    await writeUnavailable(req, res, parsedBody, DRAINING_MESSAGE);
    return;
  }
  const server = await opts.createServer();
  const transport: StreamableHTTPServerTransport = affinity.createTransport(opts.transportOptions, server);
  await server.connect(transport);
  try {
    await transport.handleRequest(req, res, parsedBody);
  } finally {
    if (transport.sessionId === undefined) {
      // Not an initialize (the SDK answered 400): nothing to keep.
      await server.close().catch(() => {});
    } else if (!affinity.transportFor(transport.sessionId)) {
      affinity.log.debug({ session: sessionTag(transport.sessionId) }, "session ended during its initialize");
    }
  }
}

/** Express-like app: anything with `all(path, handler)`. */
export interface AppLike {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Express's request and response types are not a dependency
  all(path: string, handler: (req: any, res: any) => unknown): unknown;
}

export interface MountOptions extends McpHandlerOptions {
  /** Path of the MCP endpoint (default /mcp). */
  path?: string;
  /** How long the proxy in front keeps an idle connection to this node (default Traefik's 90 s). */
  proxyIdleTimeoutMs?: number;
}

/** Traefik's default idle timeout for its connections to servers (serversTransport idleConnTimeout). */
export const PROXY_IDLE_TIMEOUT_MS = 90_000;

interface KeepAliveSettings {
  keepAliveTimeout: number;
  headersTimeout: number;
}
const keptOpen = new WeakSet<object>();

/**
 * Behind a proxy the node must not be the first to close an idle keep-alive connection: the proxy
 * may send the next request on it at the moment the node closes it, and that request fails
 * (Node's default is 5 s, Traefik keeps idle connections to servers for 90 s). Raises, never
 * lowers, the server's keepAliveTimeout to 30 s beyond the proxy's, and headersTimeout above that.
 */
export function keepIdleConnectionsOpen(server: KeepAliveSettings, proxyIdleTimeoutMs = PROXY_IDLE_TIMEOUT_MS): void {
  checkProxyIdle(proxyIdleTimeoutMs);
  const keepAlive = proxyIdleTimeoutMs + 30_000;
  if (server.keepAliveTimeout < keepAlive) server.keepAliveTimeout = keepAlive;
  if (server.headersTimeout < server.keepAliveTimeout + 5_000) server.headersTimeout = server.keepAliveTimeout + 5_000;
  keptOpen.add(server);
}

function checkProxyIdle(ms: number): void {
  if (!Number.isSafeInteger(ms) || ms < 0)
    throw new RangeError(`proxyIdleTimeoutMs must be a whole number of milliseconds >= 0, got ${ms}`);
}

/** The server a request came through, when it has keep-alive settings (http and https servers). */
function serverOf(req: IncomingMessage): KeepAliveSettings | null {
  const server = (req.socket as { server?: unknown } | undefined)?.server as Partial<KeepAliveSettings> | undefined;
  return server && typeof server.keepAliveTimeout === "number" && typeof server.headersTimeout === "number"
    ? (server as KeepAliveSettings)
    : null;
}

export interface Mounted {
  handler: McpRequestHandler;
  /** Drains (grace period), then stops the affinity (sessions closed, heartbeat removed). Idempotent. */
  shutdown(): Promise<void>;
}

/**
 * Mounts the MCP endpoint on a node:http Server (other requests keep going to the server's
 * existing 'request' listeners, or get 404) or on an Express-like app.
 */
export function mountMcp(target: HttpServer | AppLike, affinity: Affinity, opts: MountOptions): Mounted {
  return mountHandler(target, affinity, createMcpHandler(affinity, opts), opts);
}

/** Where and how an MCP handler is mounted (mountMcp of either SDK line). */
export interface MountPlace {
  path?: string;
  proxyIdleTimeoutMs?: number;
}

/**
 * Mounts any Node MCP handler (the v1 or the v2 entry's) on a node:http Server or an Express-like
 * app; `afterStop` runs once the affinity is stopped (the v2 entry closes its stateless handler).
 */
export function mountHandler(
  target: HttpServer | AppLike,
  affinity: Affinity,
  mcpHandler: McpRequestHandler,
  opts: MountPlace,
  afterStop?: () => Promise<void>,
): Mounted {
  const path = opts.path ?? "/mcp";
  const proxyIdle = opts.proxyIdleTimeoutMs ?? PROXY_IDLE_TIMEOUT_MS;
  checkProxyIdle(proxyIdle);
  // Whatever server an app ends up behind (app.listen, http.createServer(app), https): its idle
  // connections are kept open longer than the proxy's from the first MCP request on.
  const handler: McpRequestHandler = (req, res, parsedBody) => {
    const server = serverOf(req);
    if (server && !keptOpen.has(server)) keepIdleConnectionsOpen(server, proxyIdle);
    return mcpHandler(req, res, parsedBody);
  };
  // An Express app is a function with all() and listen(); an http(s).Server is a net.Server.
  if (!(target instanceof NetServer) && typeof (target as AppLike).all === "function") {
    (target as AppLike).all(path, (req: IncomingMessage & { body?: unknown }, res: ServerResponse) =>
      handler(req, res, req.body),
    );
  } else {
    const server = target as HttpServer;
    keepIdleConnectionsOpen(server, proxyIdle);
    const others = server.listeners("request") as Array<(req: IncomingMessage, res: ServerResponse) => void>;
    server.removeAllListeners("request");
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      const q = req.url?.indexOf("?") ?? -1;
      const pathname = q >= 0 ? req.url!.slice(0, q) : req.url;
      if (pathname === path) {
        void handler(req, res);
        return;
      }
      if (others.length === 0) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      for (const l of others) l.call(server, req, res);
    });
  }
  let shuttingDown: Promise<void> | undefined;
  return {
    handler,
    // One shutdown however often it is asked for; after a stop() of its own the drain is skipped.
    shutdown() {
      shuttingDown ??= (async () => {
        if (affinity.state !== "stopping" && affinity.state !== "stopped") await affinity.drain();
        await affinity.stop();
        await afterStop?.();
      })();
      return shuttingDown;
    },
  };
}

export type { AffinityOptions };
