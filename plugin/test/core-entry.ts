// Test entry: exposes the pure parts of the plugin alone (no ABI, no WASI imports) so they can be
// checked exhaustively without a host: the decision core and the session-token parser.
// Built to plugin/build/core.wasm.
import "../assembly/abort";
import { RouteInput, Decision, decideRoute } from "../assembly/core";
import { Bytes } from "../assembly/bytes";
import {
  TaskHeadRemover,
  TaskIdWrapper,
  WRAP_ECHO,
  TASK_HEAD_LENGTH,
  TASK_ID_KEY,
  REQUEST_STATE_KEY,
} from "../assembly/tasks";
import {
  SessionToken,
  parseSessionToken as parseSessionTokenBytes,
  parseTaskHandle as parseTaskHandleBytes,
} from "../assembly/token";

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
  handleBody: i32,
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
  input.handleBody = handleBody;
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
  return tokenResult(parseSessionTokenBytes(idBuf, token));
}

/** parseSessionToken's twin for a task handle (Mcp-Name of tasks/get, tasks/update, tasks/cancel). */
export function parseTaskHandle(): i32 {
  return tokenResult(parseTaskHandleBytes(idBuf, token));
}

function tokenResult(kind: i32): i32 {
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

// The task-handle rewriters (plugin/assembly/tasks.ts), fed a body in pieces of `piece` bytes as
// the plugin feeds them, with the output collected whole.
const rewriteIn = new Bytes(1 << 16);
const rewriteArg = new Bytes(512);
const rewriteOut = new Bytes(1 << 17);
const slice = new Bytes(1 << 16);
const remover = new TaskHeadRemover();
const wrapper = new TaskIdWrapper();
const hold = new Bytes(4096);

/** Where the host writes the body to rewrite. */
export function rewriteInput(len: i32): usize {
  rewriteIn.len = len;
  return rewriteIn.ptr;
}
/** Where the host writes the handle (remover: the handle; wrapper: the 29-byte head, then the echoed task id). */
export function rewriteArgument(len: i32): usize {
  rewriteArg.len = len;
  return rewriteArg.ptr;
}
export function rewriteResultPtr(): usize {
  return rewriteOut.ptr;
}
export function rewriteResultLen(): i32 {
  return rewriteOut.len;
}

function pieces(piece: i32, run: (b: Bytes) => void): void {
  rewriteOut.clear();
  for (let s = 0; s < rewriteIn.len; s += piece) {
    const e = min(s + piece, rewriteIn.len);
    slice.clear();
    slice.pushBytes(rewriteIn, s, e);
    run(slice);
  }
}

/**
 * Removes the handle's head from taskId values (or, with `state`, the head the first requestState
 * value has); returns removed + 1000 when a foreign handle was seen. With `state`, the learned head
 * is at rewriteResultPtr() after the body.
 */
export function removeTaskHead(piece: i32, state: i32): i32 {
  remover.begin(state != 0 ? REQUEST_STATE_KEY : TASK_ID_KEY, state != 0 ? null : rewriteArg);
  pieces(piece, (b: Bytes): void => {
    remover.feed(b, 0, b.len, rewriteOut);
  });
  remover.end(rewriteOut);
  if (state != 0 && remover.removed > 0) rewriteOut.pushBytes(remover.head, 0, TASK_HEAD_LENGTH);
  return remover.removed + (remover.foreign ? 1000 : 0);
}

/** Wraps a task id (mode: 0 created, 1 echo; 2: a requestState); returns wrapped + 1000 * overflowed. */
export function wrapTaskIds(mode: i32, sse: i32, piece: i32): i32 {
  if (mode == 2) wrapper.begin(0, rewriteArg, sse != 0, hold, true, true);
  else wrapper.begin(mode, rewriteArg, sse != 0, hold, true, false);
  if (mode == WRAP_ECHO) wrapper.setEcho(rewriteArg, TASK_HEAD_LENGTH);
  pieces(piece, (b: Bytes): void => {
    wrapper.feed(b, 0, b.len, rewriteOut);
  });
  wrapper.end(rewriteOut);
  return wrapper.wrapped + 1000 * wrapper.overflowed;
}
