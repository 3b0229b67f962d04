// The routing token inside a session id (docs/registry-view.md, "Session tokens"), parsed from
// the raw header bytes. Pure: no ABI, no WASI. lib/token is the Node side of the same format; both
// run test/vectors/tokens.json.
import { Bytes } from "./bytes";

export const TOKEN_NONE: i32 = 0;
/** Minted by the node library: the node sees this very id. */
export const TOKEN_MINTED: i32 = 1;
/** A server's own id wrapped by this plugin: the node must see only the part after the head. */
export const TOKEN_WRAPPED: i32 = 2;
/** A server's own task id wrapped by this plugin (a task handle, `mt1.`): never a session id. */
export const TOKEN_TASK: i32 = 3;

/** "ma1." / "mw1." / "mt1." + 24 hex + "." */
export const TOKEN_HEAD_LENGTH: i32 = 29;
export const MINTED_RANDOM_LENGTH: i32 = 22;
export const UNKNOWN_BOOT_TAG = "00000000";

/** What parseToken found. One instance per plugin instance, reused per request. */
export class SessionToken {
  kind: i32 = TOKEN_NONE;
  cookie: string = "";
  bootTag: string = "";
  /** Start of the server's own id inside the header value (wrapped ids). */
  innerStart: i32 = 0;
}

function isLowerHex(c: u8): bool {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
}

function isBase64Url(c: u8): bool {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95;
}

/**
 * Parses the token of the id in `id[0, id.len)` (already checked to be visible ASCII) into `out`;
 * returns its kind. An id that does not match the grammar exactly carries no token.
 */
export function parseToken(id: Bytes, out: SessionToken): i32 {
  out.kind = TOKEN_NONE;
  const n = id.len;
  if (n <= TOKEN_HEAD_LENGTH) return TOKEN_NONE;
  if (id.at(0) != 109 /* m */ || id.at(2) != 49 /* 1 */ || id.at(3) != 46 || id.at(28) != 46) return TOKEN_NONE;
  const k = id.at(1);
  let kind = TOKEN_NONE;
  if (k == 97 /* a */) kind = TOKEN_MINTED;
  else if (k == 119 /* w */) kind = TOKEN_WRAPPED;
  else if (k == 116 /* t */) kind = TOKEN_TASK;
  else return TOKEN_NONE;
  for (let i = 4; i < 28; i++) if (!isLowerHex(id.at(i))) return TOKEN_NONE;
  if (kind == TOKEN_MINTED) {
    if (n != TOKEN_HEAD_LENGTH + MINTED_RANDOM_LENGTH) return TOKEN_NONE;
    for (let i = TOKEN_HEAD_LENGTH; i < n; i++) if (!isBase64Url(id.at(i))) return TOKEN_NONE;
  }
  out.kind = kind;
  out.cookie = id.toAscii(4, 20);
  out.bootTag = id.toAscii(20, 28);
  out.innerStart = TOKEN_HEAD_LENGTH;
  return kind;
}

/** parseToken for a session id: a task handle is no session token (TOKEN_NONE, `out.kind` too). */
export function parseSessionToken(id: Bytes, out: SessionToken): i32 {
  if (parseToken(id, out) != TOKEN_TASK) return out.kind;
  out.kind = TOKEN_NONE;
  return TOKEN_NONE;
}

/** parseToken for a task handle: TOKEN_TASK or TOKEN_NONE (a session id is no task handle). */
export function parseTaskHandle(id: Bytes, out: SessionToken): i32 {
  if (parseToken(id, out) == TOKEN_TASK) return TOKEN_TASK;
  out.kind = TOKEN_NONE;
  return TOKEN_NONE;
}

/** Writes the wrapped form of `inner[0, inner.len)` into `out`. */
export function wrapInto(out: Bytes, cookie: string, bootTag: string, inner: Bytes): void {
  out.clear();
  pushHead(out, "mw1.", cookie, bootTag);
  out.pushBytes(inner, 0, inner.len);
}

/** Appends a token head (`prefix` + cookie + boot tag + "."): what a wrapped id or task handle starts with. */
export function pushHead(out: Bytes, prefix: string, cookie: string, bootTag: string): void {
  out.pushAscii(prefix);
  out.pushAscii(cookie);
  out.pushAscii(bootTag);
  out.pushByte(46);
}
