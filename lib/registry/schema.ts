// The registry schema shared by the sidecar and the node library: Redis keys, record shapes and
// their (de)serialisation. Keys stay compatible with ADR-0066: `mcp:session:{id}`, 30-day TTL.
import { createHash } from "node:crypto";
import { McpAffinityError } from "../errors.ts";

export const SESSION_KEY_PREFIX = "mcp:session:";
export const NODE_KEY_PREFIX = "mcp:node:";
/** Pub/sub channel on which every registry change is announced to all sidecars. */
export const CHANGE_CHANNEL = "mcp:affinity:changes";
/**
 * The registry's marker: a random value written once (SET NX, no TTL) by the first writer that
 * finds none. A writer that finds it gone, or holding another value than it saw, knows Redis lost
 * its data (docs/architecture.md, "When Redis loses its data").
 */
export const MARKER_KEY = "mcp:affinity:registry";
export const DEFAULT_SESSION_TTL_MS = 30 * 24 * 3600 * 1000;
export const DEFAULT_NODE_TTL_MS = 15_000;

export type SessionSource = "node" | "edge";
export type NodeState = "up" | "draining";

/** One MCP session: which node (as Traefik knows it) holds its in-process state. */
export interface SessionRecord {
  /** Server URL exactly as configured in Traefik's service (empty when only the cookie is known). */
  node: string;
  /** Traefik's sticky cookie value for that server: first 16 hex of SHA-256(node URL). */
  cookie: string;
  /** Boot id of the node process that created the session, when known. */
  boot: string | null;
  /** Creation time, ms since the Unix epoch. */
  created: number;
  source: SessionSource;
}

/** A node's heartbeat: refreshed well within its TTL while the process lives. */
export interface NodeRecord {
  url: string;
  cookie: string;
  boot: string;
  name: string;
  state: NodeState;
  /** Last heartbeat, ms since the Unix epoch. */
  seen: number;
}

export type RegistryChange =
  | { op: "session"; id: string; record: SessionRecord }
  | { op: "close"; id: string }
  | { op: "node"; cookie: string; record: NodeRecord | null };

export const sessionKey = (id: string): string => SESSION_KEY_PREFIX + id;
export const nodeKey = (cookie: string): string => NODE_KEY_PREFIX + cookie;

/** Traefik's sticky cookie value for a server URL (pkg/server/service/loadbalancer/sticky.go). */
export function cookieValueFor(serverUrl: string): string {
  return createHash("sha256").update(serverUrl).digest("hex").slice(0, 16);
}

/**
 * The one session-id rule (docs/registry-view.md): 1 to SESSION_ID_MAX_LENGTH visible ASCII
 * characters (0x21-0x7E), as the spec allows. The plugin's maxSessionIdLength cannot exceed it,
 * the event parser, the registry and the node library all check ids with isValidSessionId.
 */
export const SESSION_ID_MAX_LENGTH = 1024;
const SESSION_ID = /^[\x21-\x7e]+$/;
export function isValidSessionId(id: unknown): id is string {
  return typeof id === "string" && id.length > 0 && id.length <= SESSION_ID_MAX_LENGTH && SESSION_ID.test(id);
}

/** A sticky cookie value as cookieValueFor makes it (16 lowercase hex digits): the one check of its form. */
const COOKIE_VALUE = /^[0-9a-f]{16}$/;
export const isCookieValue = (v: unknown): v is string => typeof v === "string" && COOKIE_VALUE.test(v);

export class RegistrySchemaError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_REGISTRY_SCHEMA", message);
  }
}

// Each record has one JSON shape (`v` first, then its fields in this order), built once: a record
// is stringified exactly once, alone (its key) or inside a change message.

/** A session record as the JSON object its key holds, the sessions API answers and a change carries. */
export function sessionJson(r: SessionRecord): { v: 1 } & SessionRecord {
  return { v: 1, node: r.node, cookie: r.cookie, boot: r.boot, created: r.created, source: r.source };
}

export function encodeSession(r: SessionRecord): string {
  return JSON.stringify(sessionJson(r));
}

function parseJson(raw: string, what: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    throw new RegistrySchemaError(`${what} is not JSON`);
  }
}

export function decodeSession(raw: string): SessionRecord {
  return sessionFromJson(parseJson(raw, "session record"));
}

function sessionFromJson(json: unknown): SessionRecord {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON, checked field by field below
  const o: any = json;
  if (!o || typeof o !== "object") throw new RegistrySchemaError("session record is not an object");
  if (typeof o.node !== "string") throw new RegistrySchemaError("session record has no node");
  if (!isCookieValue(o.cookie)) throw new RegistrySchemaError("session record has no valid cookie");
  if (o.source !== "node" && o.source !== "edge") throw new RegistrySchemaError("session record has no valid source");
  return {
    node: o.node,
    cookie: o.cookie,
    boot: typeof o.boot === "string" && o.boot ? o.boot : null,
    created: Number.isFinite(o.created) ? o.created : 0,
    source: o.source,
  };
}

const nodeJson = (r: NodeRecord): { v: 1 } & NodeRecord => ({ v: 1, ...r });

export function encodeNode(r: NodeRecord): string {
  return JSON.stringify(nodeJson(r));
}

export function decodeNode(raw: string): NodeRecord {
  return nodeFromJson(parseJson(raw, "node record"));
}

function nodeFromJson(json: unknown): NodeRecord {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON, checked field by field below
  const o: any = json;
  if (!o || typeof o.url !== "string" || !isCookieValue(o.cookie) || typeof o.boot !== "string" || !o.boot) {
    throw new RegistrySchemaError("node record lacks url, cookie or boot");
  }
  return {
    url: o.url,
    cookie: o.cookie,
    boot: o.boot,
    name: typeof o.name === "string" ? o.name : "",
    state: o.state === "draining" ? "draining" : "up",
    seen: Number.isFinite(o.seen) ? o.seen : 0,
  };
}

/** Pub/sub payload of a RegistryChange (CHANGE_CHANNEL). */
export function encodeChange(c: RegistryChange): string {
  switch (c.op) {
    case "session":
      return JSON.stringify({ v: 1, op: "session", id: c.id, record: sessionJson(c.record) });
    case "close":
      return JSON.stringify({ v: 1, op: "close", id: c.id });
    case "node":
      return JSON.stringify({ v: 1, op: "node", cookie: c.cookie, record: c.record ? nodeJson(c.record) : null });
  }
}

export function decodeChange(raw: string): RegistryChange {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON, checked field by field below
  const o: any = parseJson(raw, "change");
  if (!o || typeof o !== "object") throw new RegistrySchemaError("change is not an object");
  switch (o.op) {
    case "session":
      if (!isValidSessionId(o.id)) throw new RegistrySchemaError("session change has no valid id");
      return { op: "session", id: o.id, record: sessionFromJson(o.record) };
    case "close":
      if (!isValidSessionId(o.id)) throw new RegistrySchemaError("close change has no valid id");
      return { op: "close", id: o.id };
    case "node":
      if (!isCookieValue(o.cookie)) throw new RegistrySchemaError("node change has no valid cookie");
      return { op: "node", cookie: o.cookie, record: o.record == null ? null : nodeFromJson(o.record) };
    default:
      throw new RegistrySchemaError("change has an unknown op");
  }
}
