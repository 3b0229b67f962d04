// The routing token carried inside a session id (docs/registry-view.md, "Session tokens"): which
// node holds the session, as Traefik knows it (its sticky cookie value), and which incarnation of
// that node (a boot tag). Every Traefik replica can route such an id without having heard of the
// session. The plugin (plugin/assembly/token.ts) parses the same bytes; test/vectors/tokens.json
// pins both implementations to one set of cases.
import { createHash, randomBytes } from "node:crypto";
import { McpAffinityError } from "../errors.ts";
import { isCookieValue } from "../registry/schema.ts";

/** An id minted by the node library: `ma1.<cookie 16 hex><boot tag 8 hex>.<22 base64url>`. */
export const MINTED_PREFIX = "ma1.";
/** A server's own id wrapped by the plugin: `mw1.<cookie 16 hex><boot tag 8 hex>.<server's id>`. */
export const WRAPPED_PREFIX = "mw1.";
/**
 * A server's own task id (MCP tasks extension) wrapped by the plugin into a task handle:
 * `mt1.<cookie 16 hex><boot tag 8 hex>.<server's task id>`. Never a session id.
 */
export const TASK_PREFIX = "mt1.";
/** Prefix plus the 24 hex digits of the token plus the dot. */
export const TOKEN_HEAD_LENGTH = 29;
export const MINTED_RANDOM_LENGTH = 22; // 132 random bits
export const MINTED_LENGTH = TOKEN_HEAD_LENGTH + MINTED_RANDOM_LENGTH;
/** Boot tag of a node whose boot the edge does not know (servers without the node library). */
export const UNKNOWN_BOOT_TAG = "00000000";

const HEX24 = /^[0-9a-f]{24}$/;
const TAG = /^[0-9a-f]{8}$/;
const B64URL22 = /^[A-Za-z0-9_-]{22}$/;
const VISIBLE = /^[\x21-\x7e]+$/;

export type TokenKind = "minted" | "wrapped" | "task";
export interface SessionToken {
  kind: TokenKind;
  /** Traefik's sticky cookie value of the owner. */
  cookie: string;
  /** Boot tag of the owner's incarnation; UNKNOWN_BOOT_TAG when the edge did not know it. */
  bootTag: string;
  /** wrapped and task: the id the server itself chose (what the node sees); minted: the whole id. */
  inner: string;
}

export class SessionTokenError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_SESSION_TOKEN", message);
  }
}

/**
 * The boot tag of a node incarnation: the first 8 hex digits of SHA-256(boot id). Never 00000000
 * (that value means "unknown"): the one boot id in 2^32 that would hash to it takes 00000001.
 */
export function bootTag(boot: string): string {
  const tag = createHash("sha256").update(boot, "utf8").digest("hex").slice(0, 8);
  return tag === UNKNOWN_BOOT_TAG ? "00000001" : tag;
}

/** A new session id for a node library node: its token plus 132 random bits. */
export function mintSessionId(cookie: string, tag: string): string {
  if (!isCookieValue(cookie))
    throw new SessionTokenError(`cookie ${JSON.stringify(cookie)} is not 16 lowercase hex digits`);
  if (!TAG.test(tag)) throw new SessionTokenError(`boot tag ${JSON.stringify(tag)} is not 8 lowercase hex digits`);
  return MINTED_PREFIX + cookie + tag + "." + randomBytes(17).toString("base64url").slice(0, MINTED_RANDOM_LENGTH);
}

/** The id the client sees for a server-chosen id (what the plugin writes into the initialize answer). */
export function wrapSessionId(inner: string, cookie: string, tag: string): string {
  if (!isCookieValue(cookie) || !TAG.test(tag)) throw new SessionTokenError("cookie or boot tag is malformed");
  if (!VISIBLE.test(inner)) throw new SessionTokenError("a session id is visible ASCII");
  return WRAPPED_PREFIX + cookie + tag + "." + inner;
}

/** The task handle a client sees for a task id a server chose (what the plugin writes into the answer). */
export function wrapTaskId(inner: string, cookie: string, tag: string): string {
  if (!isCookieValue(cookie) || !TAG.test(tag)) throw new SessionTokenError("cookie or boot tag is malformed");
  if (!VISIBLE.test(inner)) throw new SessionTokenError("a task id to wrap is visible ASCII");
  return TASK_PREFIX + cookie + tag + "." + inner;
}

/** The token of a session id, or null when the id carries none (any other id routes the old way). */
export function parseSessionToken(id: string): SessionToken | null {
  const t = parseToken(id);
  return t?.kind === "task" ? null : t;
}

/** The token of a task handle (a tasks/* request's Mcp-Name), or null when it is none. */
export function parseTaskHandle(id: string): SessionToken | null {
  const t = parseToken(id);
  return t?.kind === "task" ? t : null;
}

function parseToken(id: string): SessionToken | null {
  if (id.length <= TOKEN_HEAD_LENGTH || id.charCodeAt(TOKEN_HEAD_LENGTH - 1) !== 0x2e /* . */) return null;
  const prefix = id.slice(0, 4);
  if (prefix !== MINTED_PREFIX && prefix !== WRAPPED_PREFIX && prefix !== TASK_PREFIX) return null;
  const hex = id.slice(4, 28);
  if (!HEX24.test(hex)) return null;
  const rest = id.slice(TOKEN_HEAD_LENGTH);
  if (prefix === MINTED_PREFIX) {
    if (!B64URL22.test(rest)) return null;
    return { kind: "minted", cookie: hex.slice(0, 16), bootTag: hex.slice(16), inner: id };
  }
  if (!VISIBLE.test(rest)) return null;
  return {
    kind: prefix === TASK_PREFIX ? "task" : "wrapped",
    cookie: hex.slice(0, 16),
    bootTag: hex.slice(16),
    inner: rest,
  };
}

/**
 * The id the node itself knows the session by: the server's own id inside a wrapped id (the plugin
 * unwraps every request before a node sees it), any other id as it is. Whoever talks to a node
 * directly, not through the plugin, sends this one.
 */
export function serverSessionId(id: string): string {
  const t = parseSessionToken(id);
  return t?.kind === "wrapped" ? t.inner : id;
}
