// What the node decides for an MCP request before an SDK transport sees it, whichever SDK line
// serves it (http.ts for v1, v2.ts for v2): which session transport takes a request that carries a
// session id, what a request for a session this process does not hold gets, and the node's own
// JSON-RPC error answers. The two entries only carry these decisions out on their request types.
import { isValidSessionId } from "../../lib/registry/schema.ts";
import type { Affinity } from "./affinity.ts";

/** Byte for byte what the SDK's transport answers for a session it does not know (HTTP 404). */
export const SESSION_NOT_FOUND_BODY =
  '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}';

/** Retry-After of the node's own 503s: a misrouted request (the owner is live) and an initialize while draining. */
export const NODE_RETRY_AFTER_SECONDS = 1;
export const MISROUTED_MESSAGE = "This session is held by another node; retry later";
export const DRAINING_MESSAGE = "This node is shutting down; retry later";
/** Largest body read to name the request in a 503 (the request itself is not served). */
export const ID_BODY_MAX = 64 * 1024;

export function jsonRpcErrorBody(code: number, message: string, id: string | number | null = null): string {
  return JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id });
}

/** The id of a single JSON-RPC request (a batch, a notification or a response have none). */
export function requestIdOf(body: unknown): string | number | null {
  if (!body || typeof body !== "object" || Array.isArray(body)) return null;
  const m = body as { id?: unknown; method?: unknown };
  if (typeof m.method !== "string") return null;
  return typeof m.id === "string" || typeof m.id === "number" ? m.id : null;
}

/** The Mcp-Session-Id of a request, or undefined when it carries none (repeated headers are joined, as Node does). */
export function sessionIdOf(header: string | string[] | null | undefined): string | undefined {
  const sid = Array.isArray(header) ? header.join(",") : header;
  return sid === null || sid === undefined || sid === "" ? undefined : sid;
}

export type SessionRoute<T> =
  /** Served here: the request is counted in flight until `leave()`. */
  | { kind: "local"; transport: T; leave: () => void }
  /** Another live node holds the session: 503 with Retry-After, the client retries and reaches it. */
  | { kind: "misrouted" }
  /** Nobody serves it (after the registry cleanup of a DELETE): the SDK's 404. */
  | { kind: "not-found" };

/**
 * The route of a request carrying a session id. Local first (no registry latency); a miss is
 * explained by the registry (logged and counted) and the explanation decides the answer.
 */
export async function routeSession<T>(
  affinity: Affinity,
  transportFor: (id: string) => T | undefined,
  sid: string,
  method: string,
): Promise<SessionRoute<T>> {
  const transport = transportFor(sid);
  if (transport) {
    affinity.touch(sid);
    return { kind: "local", transport, leave: affinity.enter(sid) };
  }
  const check = await affinity.checkSession(sid);
  if (method === "DELETE") {
    // ADR-0066: a close cleans the registry even when this process does not hold the session
    // (another node's, or a previous boot's), unless the registry positively has no record: a
    // forged id then costs one lookup, no write.
    if (isValidSessionId(sid) && check.reason !== "unknown") await affinity.closeSession(sid);
    return { kind: "not-found" };
  }
  // A session of another live node is not lost, only sent to the wrong node (a proxy that
  // re-picked, a liveness disagreement). Anything else is the SDK's 404.
  return check.ownerLive ? { kind: "misrouted" } : { kind: "not-found" };
}
