// Test entry: exposes the pure parts of the plugin alone (no ABI, no WASI imports) so they can be
// checked exhaustively without a host: the decision core and the session-token parser.
// Built to plugin/build/core.wasm.
import "../assembly/abort";
import { RouteInput, Decision, decideRoute } from "../assembly/core";
import { Bytes } from "../assembly/bytes";
import { SessionToken, parseToken } from "../assembly/token";

const input = new RouteInput();
const out = new Decision();

/** Returns target * 256 + action * 16 + reason. */
export function decide(
  id: i32,
  cookieUnreadable: i32,
  view: i32,
  session: i32,
  ownerState: i32,
  cookie: i32,
  rejectMisroute: i32,
  passWhenDown: i32,
  token: i32,
  tokenCookie: i32,
): i32 {
  input.id = id;
  input.cookieUnreadable = cookieUnreadable != 0;
  input.view = view;
  input.session = session;
  input.ownerState = <u8>ownerState;
  input.cookie = cookie;
  input.rejectMisroute = rejectMisroute != 0;
  input.passWhenDown = passWhenDown != 0;
  input.token = token;
  input.tokenCookie = tokenCookie;
  const d = decideRoute(input, out);
  return d.target * 256 + d.action * 16 + d.reason;
}

const idBuf = new Bytes(64);
const token = new SessionToken();
const result = new Bytes(64);

/** Scratch input for parseSessionToken: the host writes the id's bytes here. */
export function idBuffer(len: i32): usize {
  idBuf.clear();
  idBuf.ensure(len);
  idBuf.len = len;
  return idBuf.ptr;
}

/**
 * Parses the id in idBuffer; returns the kind and leaves "<cookie> <bootTag> <innerStart>" (or
 * nothing) at resultPtr()/resultLen().
 */
export function parseSessionToken(): i32 {
  const kind = parseToken(idBuf, token);
  result.clear();
  if (kind != 0) {
    result.pushAscii(token.cookie);
    result.pushByte(32);
    result.pushAscii(token.bootTag);
    result.pushByte(32);
    result.pushU64(<u64>token.innerStart);
  }
  return kind;
}
export function resultPtr(): usize {
  return result.ptr;
}
export function resultLen(): i32 {
  return result.len;
}
