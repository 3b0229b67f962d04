// The node library on the TypeScript SDK v2 (@modelcontextprotocol/server, @modelcontextprotocol/node):
// one endpoint serving both protocol eras. A 2025-era request (initialize, or one carrying a session
// id) is served by a sessionful WebStandardStreamableHTTPServerTransport with the same affinity as
// on v1: the session table, transports wiring and routing decisions are the ones the v1 entry uses
// (sessions.ts, transports.ts, routing.ts). A 2026-07-28 request (the per-request envelope: no
// session, no handshake) goes to the SDK's own stateless createMcpHandler, untouched. The era is
// the SDK's own classification (isLegacyRequest), so the two can never disagree.
import { toNodeHandler } from "@modelcontextprotocol/node";
import {
  createMcpHandler as createStatelessHandler,
  createRequestStateCodec,
  DEFAULT_MAX_REQUEST_BODY_SIZE,
  isLegacyRequest,
  WebStandardStreamableHTTPServerTransport,
  type CreateMcpHandlerOptions,
  type McpHandlerRequestOptions,
  type McpHttpHandler,
  type McpServer,
  type McpServerFactory,
  type RequestStateCodec,
  type RequestStateCodecOptions,
  type Server,
  type WebStandardStreamableHTTPServerTransportOptions,
} from "@modelcontextprotocol/server";
import type { Server as HttpServer } from "node:http";
import { errFields } from "../../lib/errors.ts";
import type { Affinity } from "./affinity.ts";
import { mountHandler, type AppLike, type McpRequestHandler, type Mounted, type MountPlace } from "./http.ts";
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
import type { SessionHooks, UserSessionHooks } from "./transports.ts";

/** Options of v2's sessionful transport, the session hooks excepted (the application's own run after the library's). */
export type TransportExtrasV2 = Omit<WebStandardStreamableHTTPServerTransportOptions, keyof SessionHooks> &
  UserSessionHooks;

export interface McpHandlerOptionsV2 {
  /**
   * Builds an MCP server: once per 2025-era session (`ctx.era === "legacy"`) and once per
   * 2026-07-28 request (`ctx.era === "modern"`), as v2's createMcpHandler does. One factory, both eras.
   */
  createServer: McpServerFactory;
  /** Passed to every sessionful transport (e.g. enableJsonResponse, eventStore, allowedHosts). */
  transportOptions?: TransportExtrasV2;
  /**
   * Options of v2's stateless handler for 2026-07-28 requests (responseMode, bus, keepAliveMs,
   * maxRequestBodySize, onerror). `legacy` is the library's: 2025-era requests never reach it.
   */
  stateless?: Omit<CreateMcpHandlerOptions, "legacy">;
}

/** The web-standard face of the endpoint, as v2's createMcpHandler returns it. */
export interface AffinityMcpHandler {
  fetch(request: Request, options?: McpHandlerRequestOptions): Promise<Response>;
  /** v2's stateless handler serving the 2026-07-28 requests (its `notify` and `bus` publish change events). */
  readonly stateless: McpHttpHandler;
  /**
   * Tears down the stateless handler (in-flight 2026 exchanges and subscription streams end).
   * Sessions are the affinity's: stop() closes them. Requests after close get a 503.
   */
  close(): Promise<void>;
}

function jsonResponse(status: number, body: string, retryAfterSeconds = 0): Response {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (retryAfterSeconds > 0) headers["retry-after"] = String(retryAfterSeconds);
  return new Response(body, { status, headers });
}

/** 503 + Retry-After, naming the request when it is a single JSON-RPC request. */
async function unavailable(request: Request, parsedBody: unknown, message: string): Promise<Response> {
  let id: string | number | null = null;
  if (parsedBody !== undefined) id = requestIdOf(parsedBody);
  else if (request.method === "POST" && Number(request.headers.get("content-length") ?? 0) <= ID_BODY_MAX) {
    try {
      const text = await request.text();
      if (text.length <= ID_BODY_MAX) id = requestIdOf(JSON.parse(text));
    } catch {
      id = null;
    }
  }
  return jsonResponse(503, jsonRpcErrorBody(-32000, message, id), NODE_RETRY_AFTER_SECONDS);
}

/**
 * The same response, whose end (the body read to its end, or cancelled) calls `done`: a session's
 * SSE stream counts as a request in flight for as long as it is open, as on v1.
 */
function untilBodyEnds(response: Response, done: () => void): Response {
  if (!response.body) {
    done();
    return response;
  }
  const reader = response.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = await reader.read();
        if (chunk.done) {
          done();
          controller.close();
        } else controller.enqueue(chunk.value);
      } catch (err) {
        done();
        controller.error(err);
      }
    },
    cancel(reason) {
      done();
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
}

/** The MCP endpoint on SDK v2 for this node, web-standard (`fetch`); mountMcpV2 mounts it on Node. */
export function createMcpHandlerV2(affinity: Affinity, opts: McpHandlerOptionsV2): AffinityMcpHandler {
  const stateless = createStatelessHandler(opts.createServer, { ...opts.stateless, legacy: "reject" });
  const maxRequestBodySize = opts.stateless?.maxRequestBodySize ?? DEFAULT_MAX_REQUEST_BODY_SIZE;
  const transports = affinity.sessionTransports<
    WebStandardStreamableHTTPServerTransport,
    WebStandardStreamableHTTPServerTransportOptions
  >((options, hooks) => new WebStandardStreamableHTTPServerTransport({ ...options, ...hooks }));
  const transportOptions = opts.transportOptions ?? {};
  let closed = false;

  async function serve(request: Request, options: McpHandlerRequestOptions): Promise<Response> {
    const { parsedBody, authInfo } = options;
    const sid = sessionIdOf(request.headers.get("mcp-session-id"));
    if (sid !== undefined) {
      const route = await routeSession(affinity, (id) => transports.transportFor(id), sid, request.method);
      if (route.kind === "misrouted") return unavailable(request, parsedBody, MISROUTED_MESSAGE);
      if (route.kind === "not-found") return jsonResponse(404, SESSION_NOT_FOUND_BODY);
      try {
        return untilBodyEnds(await route.transport.handleRequest(request, options), route.leave);
      } catch (err) {
        route.leave();
        throw err;
      }
    }
    if (request.method === "POST" && !(await isLegacyRequest(request, parsedBody, { maxRequestBodySize }))) {
      // 2026-07-28: stateless, served by the SDK as it is; a drain waits for it like for a session.
      const leave = affinity.enterSessionless();
      try {
        return untilBodyEnds(await stateless.fetch(request, options), leave);
      } catch (err) {
        leave();
        throw err;
      }
    }
    if (request.method !== "POST") {
      // No session: let a bare sessionful transport give its own 400/405 answer.
      const bare = transports.create(transportOptions);
      try {
        return await bare.handleRequest(request, options);
      } finally {
        await bare.close();
      }
    }
    // A 2025-era POST without a session id: an initialize creates a session (registered before
    // the answer). A draining node takes no new sessions: they would be cut when it stops.
    if (affinity.state !== "up") return unavailable(request, parsedBody, DRAINING_MESSAGE);
    const product: McpServer | Server = await opts.createServer({
      era: "legacy",
      requestInfo: request,
      ...(authInfo !== undefined && { authInfo }),
    });
    const transport = transports.create(transportOptions, product);
    await product.connect(transport);
    try {
      return await transport.handleRequest(request, options);
    } finally {
      // Not an initialize (the SDK answered 400): nothing to keep.
      if (transport.sessionId === undefined) await product.close().catch(() => {});
    }
  }

  return {
    stateless,
    fetch: async (request, options = {}) => {
      if (closed) return unavailable(request, options.parsedBody, DRAINING_MESSAGE);
      try {
        return await serve(request, options);
      } catch (err) {
        affinity.log.error({ err: errFields(err) }, "mcp request failed");
        return jsonResponse(500, jsonRpcErrorBody(-32603, "Internal error"));
      }
    },
    close: async () => {
      closed = true;
      await stateless.close();
    },
  };
}

/**
 * The answer's body, cancelled when its client goes away. v2's Node adapter (2.1.2) notices a
 * closed connection only when the next chunk of the answer comes: a session's GET stream that
 * carries no event stays registered on its session, and the client's reconnect gets 409 ("Conflict:
 * Only one SSE stream is allowed per session") until the session ends. Piped through a stream
 * tied to the request's signal (which the adapter aborts on close), the body is cancelled at once,
 * and the transport lets the stream go.
 */
function endsWithClient(request: Request, response: Response): Response {
  if (!response.body) return response;
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  response.body.pipeTo(writable, { signal: request.signal }).catch(() => undefined);
  return new Response(readable, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/** The Node http handler of createMcpHandlerV2 (POST, GET and DELETE), through v2's own adapter. */
export function nodeHandlerV2(handler: AffinityMcpHandler, maxRequestBodySize?: number): McpRequestHandler {
  const adapted = toNodeHandler(
    { fetch: async (request, ctx) => endsWithClient(request, await handler.fetch(request, ctx)) },
    { maxRequestBodySize },
  );
  return (req, res, parsedBody) =>
    adapted(
      req as unknown as Parameters<typeof adapted>[0],
      {
        // toNodeHandler writes the head, then waits for the body's first chunk, and Node sends the
        // head with it: a session's GET stream, which has no event yet, would leave its client
        // without an answer (the Go SDK waits for it before it sends notifications/initialized).
        // The head goes out at once, as the v1 transport sends it.
        writeHead(status: number, headers?: Record<string, string>) {
          res.writeHead(status, headers);
          res.flushHeaders();
          return res;
        },
        write: (chunk: string | Uint8Array) => res.write(chunk),
        end: (chunk?: string | Uint8Array) => (chunk === undefined ? res.end() : res.end(chunk)),
        on: (event: string, listener: (...args: unknown[]) => void) => res.on(event, listener),
        get destroyed() {
          return res.destroyed;
        },
      },
      parsedBody,
    );
}

export interface MountOptionsV2 extends McpHandlerOptionsV2, MountPlace {}

export interface MountedV2 extends Mounted {
  /** The web-standard endpoint (its `stateless.notify` publishes change events to 2026 subscribers). */
  mcp: AffinityMcpHandler;
}

/**
 * Mounts the both-eras MCP endpoint on a node:http Server (other requests keep going to the
 * server's existing 'request' listeners, or get 404) or on an Express-like app. shutdown() drains,
 * stops the affinity, then closes the stateless handler.
 */
export function mountMcpV2(target: HttpServer | AppLike, affinity: Affinity, opts: MountOptionsV2): MountedV2 {
  const mcp = createMcpHandlerV2(affinity, opts);
  const mounted = mountHandler(target, affinity, nodeHandlerV2(mcp, opts.stateless?.maxRequestBodySize), opts, () =>
    mcp.close(),
  );
  return { ...mounted, mcp };
}

export interface ClusterRequestStateCodecOptions extends Omit<RequestStateCodecOptions, "key"> {
  /** The signing keys (at least 32 bytes each), the one that mints first. The same list on every node. */
  keys: ReadonlyArray<Uint8Array | string>;
}

/**
 * A requestState codec for several nodes: it mints with `keys[0]` and accepts a state sealed with
 * any of `keys`. A 2026-07-28 retry carries no session and may reach any node, so every node must
 * hold the same keys (the deployment's secret, like any other). To rotate without refusing a state
 * in flight: add the new key last on every node, then move it first everywhere, then remove the
 * old one once ttlSeconds have passed. Pass `verify` as the server's `requestState.verify`.
 */
export function clusterRequestStateCodec<T = unknown>(options: ClusterRequestStateCodecOptions): RequestStateCodec<T> {
  const { keys, ...rest } = options;
  if (keys.length === 0) throw new RangeError("clusterRequestStateCodec: keys must name at least one key");
  const codecs = keys.map((key) => createRequestStateCodec<T>({ ...rest, key }));
  return {
    mint: (payload, ctx) => codecs[0]!.mint(payload, ctx),
    async verify(state, ctx) {
      // The MAC is checked before expiry and binding: only a MAC failure means "another key".
      let last: unknown;
      for (const codec of codecs) {
        try {
          return await codec.verify(state, ctx);
        } catch (err) {
          if ((err as Error).message !== "mac") throw err;
          last = err;
        }
      }
      throw last;
    },
  };
}
