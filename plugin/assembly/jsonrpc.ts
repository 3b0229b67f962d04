// The plugin's own JSON-RPC answers (docs/plugin.md, "Request phase"): the error bodies it sends,
// and the `id` of a single request, read from a small POST body, that a 503 carries: a client
// matches an error to its request only by id (rmcp drops an error whose id is null and waits
// forever). Batches, notifications, responses and anything unreadable give none. Pure: no ABI.
import { Bytes } from "./bytes";

/** Owner gone or rebooted, session closed (`lost`): byte for byte the official TypeScript server's 404. */
export const BODY_404 = '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}';
/** onMisroute=reject (`reject`): worded apart from `lost` so an operator can tell the two 404s apart. */
export const BODY_REJECT = '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found on this route"},"id":null}';
/** An Mcp-Session-Id that is not one (`invalid`, 400). */
export const BODY_400 = '{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Mcp-Session-Id header"},"id":null}';
/** Cookie lines too large to read (`invalid`, 431). */
export const BODY_431 = '{"jsonrpc":"2.0","error":{"code":-32600,"message":"Cookie header too large"},"id":null}';
const BODY_503_HEAD = '{"jsonrpc":"2.0","error":{"code":-32000,"message":"The node holding this session is temporarily unavailable; retry later"},"id":';
/** The owner is down for now (`unavailable`, 503) and the request has no id to echo. */
export const BODY_503 = BODY_503_HEAD + "null}";

/** The 503's body for a request whose whole body is `request`: with the request's own id when it has one. */
export function unavailableBody(request: Bytes): string {
  if (!findRequestId(request)) return BODY_503;
  return BODY_503_HEAD + request.toAscii(idStart, idEnd) + "}";
}

/** The request's id as a JSON token ("null" when `request` is not one request with an id). */
export function requestIdToken(request: Bytes): string {
  return findRequestId(request) ? request.toAscii(idStart, idEnd) : "null";
}

// Requests routed by a handle (a task id, a requestState): the same answers in the 2026 dialect,
// each with the request's id when its body came in one piece. Short: every string of the plugin
// sits in an instance's one page of memory.
function errorBody(code: string, message: string, id: string): string {
  return '{"jsonrpc":"2.0","error":{"code":' + code + ',"message":"' + message + '},"id":' + id + "}";
}
/** The task's server instance is gone or rebooted (`handle-lost`): what a server says of a task it does not hold. */
export function taskNotFoundBody(id: string): string {
  return errorBody("-32602", 'Task not found: its server instance is gone"', id);
}
/** The handle's server instance is down for now (`handle-unavailable`, 503 + Retry-After). */
export function handleUnavailableBody(id: string): string {
  return errorBody("-32000", 'Server instance unavailable; retry later"', id);
}
/** Mcp-Name and the body disagree, or the request is not of a version that validates them (`handle-mismatch`, 400). */
export function taskMismatchBody(id: string): string {
  return errorBody("-32020", 'Header mismatch: Mcp-Name is not the task handle of params.taskId, or MCP-Protocol-Version is before 2026-07-28"', id);
}
/**
 * A requestState whose server instance is gone or rebooted, or that names two instances
 * (`handle-lost`, `handle-mismatch`, 400): what the Python SDK's server says of one it cannot open.
 */
export function stateInvalidBody(id: string): string {
  return errorBody("-32602", 'Invalid or expired requestState","data":{"reason":"invalid_request_state"}', id);
}
/** A handle's request whose body the edge cannot rewrite (`invalid`, 413). */
export const HANDLE_BODY_TOO_LARGE = '{"jsonrpc":"2.0","error":{"code":-32600,"message":"Body too large to rewrite (maxBufferedBodyBytes)"},"id":null}';

/** Longest id token copied into an answer (a longer one is left out: "id": null). */
export const MAX_ID_TOKEN: i32 = 128;

// Start/end of the id token found by findRequestId: module globals rather than a returned object,
// so a request allocates nothing (the instance stays in its one page of memory).
let idStart: i32 = 0;
let idEnd: i32 = 0;

@inline function isWs(c: u8): bool {
  return c == 32 || c == 9 || c == 10 || c == 13;
}

function skipWs(b: Bytes, i: i32): i32 {
  while (i < b.len && isWs(b.at(i))) i++;
  return i;
}

@inline function isHexDigit(c: u8): bool {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

/** At a '"': returns the index after the closing quote, or -1 when the string is not valid JSON. */
function skipString(b: Bytes, i: i32): i32 {
  i++;
  while (i < b.len) {
    const c = b.at(i);
    if (c == 34) return i + 1;
    if (c < 32) return -1;
    if (c == 92) {
      if (i + 1 >= b.len) return -1;
      const e = b.at(i + 1);
      if (e == 117) {
        if (i + 5 >= b.len) return -1;
        for (let k = 2; k <= 5; k++) if (!isHexDigit(b.at(i + k))) return -1;
        i += 6;
        continue;
      }
      if (e != 34 && e != 92 && e != 47 && e != 98 && e != 102 && e != 110 && e != 114 && e != 116) return -1;
      i += 2;
      continue;
    }
    i++;
  }
  return -1;
}

/** Skips one JSON value (nested containers included); -1 when malformed. */
function skipValue(b: Bytes, i: i32): i32 {
  if (i >= b.len) return -1;
  const c = b.at(i);
  if (c == 34) return skipString(b, i);
  if (c == 123 || c == 91) {
    let depth = 0;
    while (i < b.len) {
      const d = b.at(i);
      if (d == 34) {
        i = skipString(b, i);
        if (i < 0) return -1;
        continue;
      }
      if (d == 123 || d == 91) depth++;
      else if (d == 125 || d == 93) {
        depth--;
        if (depth == 0) return i + 1;
      }
      i++;
    }
    return -1;
  }
  // number or literal: up to the next delimiter
  const s = i;
  while (i < b.len) {
    const d = b.at(i);
    if (d == 44 || d == 125 || d == 93 || isWs(d)) break;
    if (d == 34 || d == 123 || d == 91 || d == 58) return -1;
    i++;
  }
  return i > s ? i : -1;
}

/** A JSON number: -?digits(.digits)?([eE][+-]?digits)? */
function isNumber(b: Bytes, s: i32, e: i32): bool {
  let i = s;
  if (i < e && b.at(i) == 45) i++;
  const d0 = i;
  while (i < e && b.at(i) >= 48 && b.at(i) <= 57) i++;
  if (i == d0) return false;
  if (i < e && b.at(i) == 46) {
    i++;
    const f0 = i;
    while (i < e && b.at(i) >= 48 && b.at(i) <= 57) i++;
    if (i == f0) return false;
  }
  if (i < e && (b.at(i) == 101 || b.at(i) == 69)) {
    i++;
    if (i < e && (b.at(i) == 43 || b.at(i) == 45)) i++;
    const x0 = i;
    while (i < e && b.at(i) >= 48 && b.at(i) <= 57) i++;
    if (i == x0) return false;
  }
  return i == e;
}

function keyIs(b: Bytes, s: i32, e: i32, key: string): bool {
  // [s, e) is the quoted key; keys compared without escapes (an escaped "id" is no id here)
  if (e - s != key.length + 2) return false;
  for (let k = 0; k < key.length; k++) if (<i32>b.at(s + 1 + k) != key.charCodeAt(k)) return false;
  return true;
}

/**
 * Finds the id of a single JSON-RPC request in `b` (one object with a "method" and a string or
 * number "id", each key once): true with the raw token at [idStart, idEnd), ready to be written
 * into a JSON answer as is.
 */
export function findRequestId(b: Bytes): bool {
  let i = skipWs(b, 0);
  if (i >= b.len || b.at(i) != 123) return false;
  i = skipWs(b, i + 1);
  if (i < b.len && b.at(i) == 125) return false;
  let ids = 0;
  let methods = 0;
  let s: i32 = 0, e: i32 = 0;
  while (true) {
    if (i >= b.len || b.at(i) != 34) return false;
    const ks = i;
    i = skipString(b, i);
    if (i < 0) return false;
    const ke = i;
    i = skipWs(b, i);
    if (i >= b.len || b.at(i) != 58) return false;
    i = skipWs(b, i + 1);
    const vs = i;
    i = skipValue(b, i);
    if (i < 0) return false;
    if (keyIs(b, ks, ke, "id")) {
      ids++;
      s = vs;
      e = i;
    } else if (keyIs(b, ks, ke, "method")) methods++;
    i = skipWs(b, i);
    if (i >= b.len) return false;
    const c = b.at(i);
    if (c == 125) break;
    if (c != 44) return false;
    i = skipWs(b, i + 1);
  }
  if (skipWs(b, i + 1) != b.len) return false; // trailing bytes: not one JSON value
  if (ids != 1 || methods != 1 || e - s > MAX_ID_TOKEN) return false;
  if (b.at(s) != 34 && !isNumber(b, s, e)) return false; // null, true, objects: not a request id
  idStart = s;
  idEnd = e;
  return true;
}
