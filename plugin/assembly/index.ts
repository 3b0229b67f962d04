// mcp-affinity: http-wasm handler for Traefik. Glue between the ABI, the view, the decision core
// and the event log. One instance serves one request at a time; state here is per instance.
import "./abort";
import { Bytes } from "./bytes";
import {
  KIND_REQUEST, KIND_RESPONSE, FEATURE_BUFFER_RESPONSE, LOG_ERROR, LOG_WARN, LOG_DEBUG,
  log, setLogLevel, getConfig, getMethod, headerValues, setHeader, addHeader, enableFeatures,
  statusCode, respond, readRequestBodyUpTo, readRequestChunk, writeRequestBody, readResponseChunk,
  writeResponseBody,
} from "./abi";
import {
  BODY_400, BODY_404, BODY_431, BODY_503, BODY_REJECT, unavailableBody, requestIdToken, taskNotFoundBody,
  handleUnavailableBody, taskMismatchBody, stateInvalidBody, HANDLE_BODY_TOO_LARGE,
} from "./jsonrpc";
import { Config, parseConfig, MISROUTE_REJECT, DOWN_PASS, MAX_COOKIE_READ_BYTES } from "./config";
import { findPreopen, nowMs, openWrite, writeAll, close, mkdir, ERRNO_NOENT } from "./wasi";
import { sha256, DIGEST } from "./sha256";
import { findCookie, foundStart, foundEnd, buildPinnedCookie, pinnedCookieFits, rangeEquals } from "./cookie";
import { RegistryView, OwnerFacts } from "./view";
import { pushHex } from "./hex";
import { EventLog, BODY_BUFFERED, BODY_STREAMED } from "./events";
import { CHUNK_BYTES, InitializeMatcher, contentLength, copyRequestBody } from "./body";
import {
  BodyRewriter, LiteralMatcher, TaskHeadRemover, TaskIdWrapper, TASK_HEAD_LENGTH, MAX_TASK_ID, WRAP_CREATED,
  WRAP_ECHO, TASK_ID_KEY, REQUEST_STATE_KEY,
} from "./tasks";
import { seedSteering, steerNewSession } from "./steer";
import {
  RouteInput, Decision, decideRoute, ID_NONE, ID_VALID, ID_INVALID, VIEW_FRESH, VIEW_STALE,
  VIEW_ABSENT, S_UNUSABLE, S_OWNER, S_LEARNED, COOKIE_NONE, COOKIE_OWNER,
  COOKIE_OTHER, PASS, PIN, PIN_REPAIR, ANSWER_400, ANSWER_404, ANSWER_431, ANSWER_413, ANSWER_503, REASONS,
  R_SESSIONLESS, R_REJECT, T_UNVERIFIED, S_UNKNOWN, TARGET_TOKEN, NODE_UP, ID_HANDLE, tokenDecidesAlone,
  HANDLE_BODY_MATCH, HANDLE_BODY_MISMATCH,
  HANDLE_BODY_UNREADABLE,
} from "./core";
import {
  SessionToken, parseSessionToken, parseTaskHandle, wrapInto, pushHead, TOKEN_NONE, TOKEN_MINTED, TOKEN_WRAPPED,
  TOKEN_TASK, TOKEN_HEAD_LENGTH, UNKNOWN_BOOT_TAG,
} from "./token";

// handle_response's job for a request (the upper word of handle_request's result): bit flags.
const REQCTX_LEARN: u64 = 1; // an initialize: learn (and wrap) the session it creates
/** A request pinned to (or passed to) the owner the edge holds: its response may report a death. */
const REQCTX_OWNER: u64 = 2;
/**
 * A request of a wrapped session: its answer flows as the server writes it (never held: a server may
 * send the client a request mid-call), so the plugin only checks that the answer does not show the
 * client the server's own id (the router that strips it is missing).
 */
const REQCTX_WRAPPED: u64 = 4;
/** A tools/call whose request declared the tasks extension: a CreateTaskResult's task id is wrapped. */
const REQCTX_TASK_CREATE: u64 = 8;
/** A tasks/get routed by its handle: the result's task id (the node's own) is wrapped back. */
const REQCTX_TASK_ECHO: u64 = 16;
/** A 2026 request whose client can be asked for input: an InputRequiredResult's requestState is wrapped. */
const REQCTX_STATE: u64 = 32;
/** Cookie lines read on an initialize (with its body in memory). */
const INITIALIZE_COOKIE_BYTES: i32 = 2048;

let ready = false;
let cfg: Config = new Config();
const view = new RegistryView(100);
const events = new EventLog(-1, 1000, 4096);
let dirfd: i32 = -1;

// Buffers: allocated once at start at their largest size and never grown (a grown buffer leaves its
// old block behind and pushes the instance past its first 64 KiB page; every open SSE stream holds
// an instance). Each use has its own name; names that share one block (the aliases below) are uses
// one request never needs at the same time.

/** The Mcp-Session-Id value: the request's; in handle_response the response's (then the wrapped id). */
const idVals = new Bytes(512);
/** The client-facing id of a wrapped session, kept from the request to its response (idVals is reused there). */
const clientId = new Bytes(320);
/** SHA-256 of the session id, 16 bytes in hex: learned/ names and event lines. */
const hashHex = new Bytes(32);
/** The request's Cookie lines, read once, up to the largest bound a setting allows. */
const cookieLines = new Bytes(MAX_COOKIE_READ_BYTES + 1);
/** handle_response: the response's Set-Cookie lines (the request's Cookie lines are done with). */
const setCookieLines = cookieLines;
/** The Set-Cookie value a repair or a steered initialize sends the client; the host copies it at once. */
const setCookieValue = new Bytes(1024);
/** handle_response: the name of the learned/ file an initialize's session is written to, and its line. */
const learnedPath = new Bytes(16);
const learnedLine = new Bytes(64);

// One block, 64 bytes above the largest Cookie lines, for the large values a request passes on
// one after another. Each is handed on (to the host, which copies it, or to a parser) before the
// next is written, so none of them outlives the next one's use:
const sharedBlock = new Bytes(MAX_COOKIE_READ_BYTES + 64);
/** The one Cookie line a pin or a steered initialize writes from cookieLines (buildPinnedCookie). */
const pinnedCookieLine = sharedBlock;
/** The server's own id a wrapped session's request goes on with. */
const innerIdValue = sharedBlock;
/** The Content-Length value, then the pieces the request body is copied through (passBody). */
const contentLengthValue = sharedBlock;
const bodyPiece = sharedBlock;
/** The small POST body a 503 reads the request's JSON-RPC id from (the 503 answers itself: no body is copied). */
const rpcRequestBody = sharedBlock;
/** handle_response: the response header values read to suspect an owner's death. */
const responseHeaderValue = sharedBlock;
const token = new SessionToken();

// Task handles (tasks.ts): the request's MCP-Protocol-Version, Mcp-Method and Mcp-Name (the handle,
// kept until the response: a tasks/get answer's task id is wrapped back with its head), the body
// and answer rewriters and the pieces they write.
const protocolVersion = new Bytes(32);
const mcpMethod = new Bytes(32);
/** A task request has no session id: the wrapped session's client id buffer holds the handle. */
const taskHandle = clientId;
/** The head (`mt1.<token>.`) a new task id of the answering node gets. */
const taskHead = new Bytes(TASK_HEAD_LENGTH);
/** Removes a handle's head from a body: a task id's (its head given), or a requestState's (learned). */
const headRemover = new TaskHeadRemover();
const idWrapper = new TaskIdWrapper();
// What a 2026 client declared in its per-request capabilities (found while its body is copied):
// the tasks extension, and what a server may ask it for (elicitation, sampling, roots).
const tasksDeclared = new LiteralMatcher('"io.modelcontextprotocol/tasks"');
const elicitationDeclared = new LiteralMatcher('"elicitation"');
const samplingDeclared = new LiteralMatcher('"sampling"');
const rootsDeclared = new LiteralMatcher('"roots"');
const declared: StaticArray<LiteralMatcher> = [tasksDeclared, elicitationDeclared, samplingDeclared, rootsDeclared];
/** Pieces of a body fed to a rewriter at a time, and what the rewriter writes for one (flushed after each). */
const REWRITE_SLICE: i32 = 256;
/** A 2026 request repairs no cookie and is steered without a Set-Cookie: the Set-Cookie value's buffer takes the rewritten pieces. */
const rewritten = setCookieValue;
/**
 * handle_response: the Set-Cookie lines are read (answeringNode) before an answer is rewritten into
 * their buffer, and the Set-Cookie value's buffer holds a value until it is known whether to wrap it.
 */
const answerRewritten = cookieLines;
const heldValue = setCookieValue;
/** The JSON-RPC id of a task request whose body came in one piece, for the edge's own answers. */
let taskRequestId: string = "null";
/** The owner the session's own record names (the view's shard, or learned/): filled by classify. */
const recordOwner = new OwnerFacts();
/** The incarnation the session id's routing token names, as the meta tells it: filled by checkToken. */
const tokenIncarnation = new OwnerFacts();
const initMatcher = new InitializeMatcher();
const input = new RouteInput();
const decision = new Decision();
// Per request: the client's own sticky cookie value, for learning on the response.
let clientCookie: string = "";
// Per request: the owner's cookie when the edge holds the session (for reading the response).
let heldOwner: string = "";

function init(): void {
  ready = true;
  cfg = parseConfig(getConfig());
  setLogLevel(cfg.error.length > 0 ? LOG_ERROR : cfg.logLevel);
  if (cfg.error.length > 0) {
    log(LOG_ERROR, cfg.error);
    return;
  }
  dirfd = findPreopen(cfg.viewDir);
  if (dirfd < 0) {
    log(LOG_ERROR, "mcp-affinity: viewDir " + cfg.viewDir + " is not mounted into the plugin (add it to the plugin's settings.mounts); failing open");
  }
  // Configure the module-level objects in place: a second allocation would grow memory past its
  // first page, and every open SSE stream holds one instance.
  view.refreshMs = cfg.viewRefreshMs;
  view.dirfd = dirfd;
  events.dirfd = dirfd;
  events.flushMs = cfg.eventFlushMs;
  events.slots = cfg.maxEventFiles;
  events.sessionSlots = cfg.maxSessionEventFiles;
  view.learnedDigits = cfg.learnedDigits;
  // Start the flush clock now: a fresh instance batches its counts like any other.
  events.lastFlush = nowMs();
  seedSteering(events.lastFlush);
  __collect(); // what parsing the configuration left behind
}

/** Reads Mcp-Session-Id (request or response): ID_NONE, ID_INVALID, or ID_VALID with the id in idVals[0, len). */
function readSessionId(kind: u32): i32 {
  // Bounded read: an oversized id is refused without growing this instance's buffers.
  const n = headerValues(kind, "Mcp-Session-Id", idVals, cfg.maxSessionIdLength + 1);
  if (n < 0) return ID_INVALID;
  if (n == 0) return ID_NONE;
  if (n > 1) return ID_INVALID; // duplicate headers: ambiguous, never guess
  const len = idVals.len - 1; // NUL-terminated
  if (len <= 0) return ID_NONE;
  if (len > cfg.maxSessionIdLength) return ID_INVALID;
  for (let i = 0; i < len; i++) {
    const c = idVals.at(i);
    if (c < 0x21 || c > 0x7e) return ID_INVALID;
  }
  idVals.len = len;
  return ID_VALID;
}

function hashSessionId(): void {
  sha256(idVals.ptr, idVals.len);
  hashHex.clear();
  pushHex(hashHex, DIGEST, 16);
}

/** False when the Cookie lines exceed `limit` (maxCookieBytes): they are not read (bounded read). */
function readClientCookie(limit: i32): bool {
  clientCookie = "";
  if (headerValues(KIND_REQUEST, "Cookie", cookieLines, limit) < 0) return false;
  // Lines the pin could not rewrite within its buffer count as too large too: growing the buffer
  // would take the instance past its first page for good.
  if (!pinnedCookieFits(cookieLines, cfg.cookieName, pinnedCookieLine.buf.length)) return false;
  if (findCookie(cookieLines, cfg.cookieName)) clientCookie = cookieLines.toAscii(foundStart, foundEnd);
  return true;
}

export function handle_request(): u64 {
  if (!ready) init();
  if (cfg.error.length > 0) {
    // Failing open still unwraps: a node must never see an id it did not choose.
    if (readSessionId(KIND_REQUEST) == ID_VALID && parseSessionToken(idVals, token) == TOKEN_WRAPPED) unwrapRequestId();
    return 1;
  }
  const now = nowMs();
  // Read once per request: every host call copies the method into a new string.
  const method = getMethod();
  readInput(now, method);
  const d = decideRoute(input, decision);
  let next: u64;
  if (d.reason == R_SESSIONLESS) next = passSessionless(method, now);
  else if (input.id == ID_HANDLE) next = carryOutHandle(d);
  else next = carryOut(d, method, now);
  finish(d.reason, now);
  return next;
}

/**
 * Fills `input` from the request and the view. What cannot be read is an input too: an id that is
 * not one, or Cookie lines larger than maxCookieBytes, and then nothing is looked up (the inputs
 * that would need it say "nothing known"). A 2026 POST's body is read here (a handle in it routes).
 */
function readInput(now: u64, method: string): void {
  input.reset();
  token.kind = TOKEN_NONE;
  recordOwner.clear();
  handleKind = HANDLE_NONE;
  bodyCopied = false;
  taskRequestId = "null";
  for (let i = 0; i < declared.length; i++) unchecked(declared[i]).reset();
  input.rejectMisroute = cfg.onMisroute == MISROUTE_REJECT;
  input.passWhenDown = cfg.onOwnerDown == DOWN_PASS;
  input.id = readSessionId(KIND_REQUEST);
  // Mcp-Method is a 2026 request's (2025 clients never send it).
  mcpMethod.len = 0;
  if (input.id == ID_NONE && method == "POST" && cfg.wrapTaskIds && readHeaderValue("Mcp-Method", mcpMethod) && isModern()) {
    readHandle(now);
    return;
  }
  if (input.id != ID_VALID) return;
  if (!readCookiesOf(input)) return;
  const tokenKind = parseSessionToken(idVals, token);
  if (tokenKind == TOKEN_MINTED && leanPath(now, method)) return;
  hashSessionId();
  classify(now);
  if (tokenKind != TOKEN_NONE) checkToken(now);
}

/**
 * A minted id that its token alone routes (core.ts tokenDecidesAlone): the session is neither
 * hashed nor looked up, which halves the plugin's own cost of the request. The record could only
 * add the edge's 404 for a closed session of a live node, which its node answers alike.
 */
function leanPath(now: u64, method: string): bool {
  const fresh = dirfd >= 0 && view.refresh(now, false) && !view.isStale(now, cfg.staleAfterMs);
  if (fresh) checkToken(now);
  if (!tokenDecidesAlone(input.token, fresh, method == "DELETE")) return false;
  input.view = VIEW_FRESH;
  input.session = S_UNKNOWN;
  return true;
}

// What routes a 2026 request (handleKind), and whether its body was already copied (bodyCopied).
const HANDLE_NONE: i32 = 0;
/** tasks/get, tasks/update, tasks/cancel: Mcp-Name is a task handle (in `taskHandle`). */
const HANDLE_TASK: i32 = 1;
/** A retry whose requestState is a handle (its head learned by `headRemover`). */
const HANDLE_STATE: i32 = 2;
let handleKind: i32 = HANDLE_NONE;
/** The request's body was dealt with in readInput (copied, or left to stream and counted). */
let bodyCopied = false;

/**
 * A 2026 POST without a session id: a task request routes by the handle in Mcp-Name; any other is
 * read now, and routes by a requestState handle in its body if it has one. Either body reaches the
 * node with the handle's head turned into whitespace.
 */
function readHandle(now: u64): void {
  if (isTaskMethod() && readHeaderValue("Mcp-Name", taskHandle) && parseTaskHandle(taskHandle, token) == TOKEN_TASK) {
    handleKind = HANDLE_TASK;
    input.handleBody = copyTaskBody();
  } else {
    if (!copyModernBody()) return;
    // The head learned from the body is the token: `mt1.<cookie><boot tag>.`
    const head = headRemover.head;
    token.kind = TOKEN_TASK;
    token.cookie = head.toAscii(4, 20);
    token.bootTag = head.toAscii(20, 28);
    handleKind = HANDLE_STATE;
    input.handleBody = headRemover.foreign ? HANDLE_BODY_MISMATCH : HANDLE_BODY_MATCH;
  }
  input.id = ID_HANDLE;
  if (!readCookiesOf(input)) return;
  // A handle has no record in the view: its token and the view's freshness decide.
  if (dirfd >= 0 && view.refresh(now, false)) input.view = view.isStale(now, cfg.staleAfterMs) ? VIEW_STALE : VIEW_FRESH;
  checkToken(now);
}

/** Reads the request's Cookie lines for a routed request; false (and `cookieUnreadable`) when they exceed maxCookieBytes. */
function readCookiesOf(i: RouteInput): bool {
  if (readClientCookie(cfg.maxCookieBytes)) return true;
  i.cookieUnreadable = true;
  return false;
}

function isTaskMethod(): bool {
  return mcpMethodIs("tasks/get") || mcpMethodIs("tasks/update") || mcpMethodIs("tasks/cancel");
}

/**
 * No session id: the request passes on. A POST is no session's, so it goes to an up node (as a
 * new session does: a killed, down or draining node gets none); an initialize is also learned;
 * the answer of a 2026 request may carry a new handle (a task id, a requestState), wrapped then.
 */
function passSessionless(method: string, now: u64): u64 {
  clientCookie = "";
  if (method != "POST") return 1;
  if (!bodyCopied && passBody(method, dirfd >= 0 && !isModern())) return (learnInitialize(now) << 32) | 1;
  if (dirfd >= 0 && readClientCookie(min<i32>(cfg.maxCookieBytes, INITIALIZE_COOKIE_BYTES))) steer(now, false);
  return answerContext(0);
}

/**
 * handle_request's result for a 2026 request that goes on: its answer is held and its new handles
 * wrapped when it may carry one (the client declared the tasks extension on a tools/call, or a
 * capability a server may ask input for on a tools/call, prompts/get or resources/read: the
 * requests that may answer InputRequiredResult), plus `ctx`.
 */
function answerContext(ctx: u64): u64 {
  if (isModern() && cfg.wrapTaskIds) {
    if (tasksDeclared.found && mcpMethodIs("tools/call")) ctx |= REQCTX_TASK_CREATE;
    // Only the requests that may answer InputRequiredResult: never a subscriptions/listen, whose
    // answer is a stream that does not end.
    const inputs = elicitationDeclared.found || samplingDeclared.found || rootsDeclared.found;
    if (inputs && (mcpMethodIs("tools/call") || mcpMethodIs("prompts/get") || mcpMethodIs("resources/read"))) ctx |= REQCTX_STATE;
  }
  if (ctx == 0) return 1;
  enableFeatures(FEATURE_BUFFER_RESPONSE);
  return (ctx << 32) | 1;
}

/** Reads a header sent once, of visible ASCII, into `out` (at most its capacity); false otherwise. */
function readHeaderValue(name: string, out: Bytes): bool {
  const n = headerValues(KIND_REQUEST, name, out, out.buf.length);
  if (n != 1 || out.len < 2) {
    out.len = 0;
    return false;
  }
  out.len -= 1; // NUL-terminated
  for (let i = 0; i < out.len; i++) {
    const c = out.at(i);
    if (c < 0x21 || c > 0x7e) {
      out.len = 0;
      return false;
    }
  }
  return true;
}

/**
 * A 2026 request: it sent Mcp-Method (2025 clients never do), and is no initialize (a client that
 * speaks both eras may send the header on the initialize it falls back to: that one is learned).
 */
function isModern(): bool {
  return mcpMethod.len > 0 && !mcpMethodIs("initialize");
}

function mcpMethodIs(m: string): bool {
  return mcpMethod.len == m.length && rangeEquals(mcpMethod, 0, mcpMethod.len, m);
}

/** True when `v` names 2026-07-28 or a later version (dates compare as text). */
function validatesHeaders(v: Bytes): bool {
  const since = "2026-07-28";
  if (v.len < since.length) return false;
  for (let i = 0; i < since.length; i++) {
    const c = <i32>v.at(i);
    const w = since.charCodeAt(i);
    if (c != w) return c > w;
  }
  return true;
}

/**
 * Copies a task request's body into the host's memory with the handle's head removed from its
 * taskId (TaskHeadRemover), and says whether the body names the handle its Mcp-Name does. The
 * spec asks an intermediary that routes on mirrored headers to trust them only from versions
 * whose servers validate them against the body: an older or missing MCP-Protocol-Version is a
 * mismatch. Only a body of known length up to maxBufferedBodyBytes can be rewritten.
 */
function copyTaskBody(): i32 {
  const validated = readHeaderValue("MCP-Protocol-Version", protocolVersion) && validatesHeaders(protocolVersion);
  const len = contentLength(contentLengthValue, <i64>cfg.maxBufferedBodyBytes);
  if (len < 0) return HANDLE_BODY_UNREADABLE;
  headRemover.begin(TASK_ID_KEY, taskHandle);
  rewriteBody(KIND_REQUEST, headRemover);
  events.countBody(BODY_BUFFERED);
  bodyCopied = true;
  return validated && headRemover.removed > 0 && !headRemover.foreign ? HANDLE_BODY_MATCH : HANDLE_BODY_MISMATCH;
}

/**
 * Copies a 2026 request's body (of known length up to maxBufferedBodyBytes; others stream as they
 * come and are counted) with a requestState handle's head removed, and notes the capabilities its
 * client declared; true when it carried a requestState handle.
 */
function copyModernBody(): bool {
  const len = contentLength(contentLengthValue, <i64>cfg.maxBufferedBodyBytes);
  bodyCopied = true; // dealt with: copied below, or streaming (and counted) as it comes
  if (len <= 0) {
    if (len < 0) events.countBody(BODY_STREAMED);
    return false;
  }
  headRemover.begin(REQUEST_STATE_KEY, null);
  rewriteBody(KIND_REQUEST, headRemover);
  events.countBody(BODY_BUFFERED);
  bodyCopied = true;
  return headRemover.removed > 0;
}

/**
 * Sets a buffered response's Content-Length to `n` (the server writes the header as it stands).
 * A request's cannot be changed this way: the proxy sends the length Go read from the client.
 */
function setLength(n: i64): void {
  lengthText.clear();
  lengthText.pushU64(<u64>n);
  setHeader(KIND_RESPONSE, "Content-Length", lengthText);
}
const lengthText = new Bytes(24);

/**
 * Reads a request body, or a buffered response's, to its end through `rewriter` in pieces of
 * REWRITE_SLICE bytes and writes what it gives back; returns the bytes read. A request body that
 * came in one piece gives the edge's answers the request's id (taskRequestId); a request body's
 * pieces also go to the capability matchers.
 */
function rewriteBody(kind: u32, rewriter: BodyRewriter): i64 {
  const out = kind == KIND_REQUEST ? rewritten : answerRewritten;
  out.clear(); // its buffer had other uses before
  let read: i64 = 0;
  while (true) {
    const end = kind == KIND_REQUEST ? readRequestChunk(bodyPiece) : readResponseChunk(bodyPiece);
    if (kind == KIND_REQUEST) {
      if (end && read == 0) taskRequestId = requestIdToken(bodyPiece);
      for (let i = 0; i < declared.length; i++) unchecked(declared[i]).feed(bodyPiece);
    }
    read += <i64>bodyPiece.len;
    for (let s = 0; s < bodyPiece.len; s += REWRITE_SLICE) {
      rewriter.feed(bodyPiece, s, min<i32>(s + REWRITE_SLICE, bodyPiece.len), out);
      flushRewritten(kind, out);
    }
    if (end) break;
  }
  rewriter.end(out);
  flushRewritten(kind, out);
  return read;
}

function flushRewritten(kind: u32, out: Bytes): void {
  if (out.len == 0) return;
  if (kind == KIND_REQUEST) writeRequestBody(out);
  else writeResponseBody(out);
  out.clear();
}

/**
 * Carries out the decision for a handle's request: pinned to the handle's node (a task request
 * with the node's own task id in Mcp-Name; the body's head was removed while copying), or
 * answered at the edge.
 */
function carryOutHandle(d: Decision): u64 {
  if (d.action == PIN) {
    buildPinnedCookie(cookieLines, cfg.cookieName, tokenIncarnation.cookie, pinnedCookieLine);
    setHeader(KIND_REQUEST, "Cookie", pinnedCookieLine);
  } else if (d.action != PASS) {
    answerHandle(d);
    return 0;
  }
  // The node that answers is the handle's: a new handle in its answer names it.
  clientCookie = tokenIncarnation.cookie;
  if (handleKind == HANDLE_STATE) return answerContext(0);
  innerIdValue.clear();
  innerIdValue.pushBytes(taskHandle, TASK_HEAD_LENGTH, taskHandle.len);
  setHeader(KIND_REQUEST, "Mcp-Name", innerIdValue);
  // A tasks/get answer names the task: the client gets its handle back, not the node's own id.
  return answerContext(mcpMethodIs("tasks/get") ? REQCTX_TASK_ECHO : 0);
}

/** The edge's answers to a handle's request, in the 2026 dialect (jsonrpc.ts), with its id where known. */
function answerHandle(d: Decision): void {
  const reason = REASONS[d.reason];
  const state = handleKind == HANDLE_STATE;
  if (d.action == ANSWER_431) respond(431, reason, BODY_431, 0);
  else if (d.action == ANSWER_413) respond(413, reason, HANDLE_BODY_TOO_LARGE, 0);
  // A requestState the edge cannot route is what its server says of one it cannot open.
  else if (state && (d.action == ANSWER_400 || d.action == ANSWER_404)) respond(400, reason, stateInvalidBody(taskRequestId), 0);
  else if (d.action == ANSWER_400) respond(400, reason, taskMismatchBody(taskRequestId), 0);
  else if (d.action == ANSWER_404) respond(TASK_LOST_STATUS, reason, taskNotFoundBody(taskRequestId), 0);
  else {
    const retry = tokenIncarnation.retry > 0 ? tokenIncarnation.retry : cfg.retryAfterSeconds;
    respond(503, reason, handleUnavailableBody(taskRequestId), retry); // ANSWER_503
  }
}

/**
 * The status of the edge's "task not found": a server answers an unknown task with a JSON-RPC
 * error in a 200 response (only malformed requests, header mismatches and unknown methods get
 * their own statuses in 2026-07-28), and a 404 would read as "unknown method" to a 2026 client.
 */
const TASK_LOST_STATUS: u32 = 200;

/** Carries out the decision for a request that sent Mcp-Session-Id; returns handle_request's result. */
function carryOut(d: Decision, method: string, now: u64): u64 {
  // The node a pin goes to, or whose Retry-After hint a 503 gives.
  const target = d.target == TARGET_TOKEN ? tokenIncarnation : recordOwner;
  const held = holdsSession(recordOwner.cookie);
  const closing = held && method == "DELETE";
  if (closing) noteClose();
  else if (held) events.touch(load<u64>(DIGEST), idVals, idVals.len, hashHex, now);
  // The response of a held session may tell that the owner lost it (not a DELETE: it closes anyway).
  let next: u64 = held && !closing ? (REQCTX_OWNER << 32) | 1 : 1;
  if (d.action == PIN || d.action == PIN_REPAIR) {
    buildPinnedCookie(cookieLines, cfg.cookieName, target.cookie, pinnedCookieLine);
    setHeader(KIND_REQUEST, "Cookie", pinnedCookieLine);
    if (d.action == PIN_REPAIR) addHeader(KIND_RESPONSE, "Set-Cookie", repairCookie(target.cookie));
  } else if (d.action != PASS) {
    answer(d, target, method);
    return 0;
  }
  if (token.kind == TOKEN_WRAPPED) {
    unwrapRequestId();
    // Servers repeat the session id on their answers and the TypeScript client adopts whatever a
    // POST answer says; Traefik strips the header from these answers (the wrapped-session router,
    // docs/plugin.md). Only POST answers matter: no client takes an id from a GET stream or a DELETE.
    if (method == "POST") next |= REQCTX_WRAPPED << 32;
  }
  passBody(method, false);
  return next;
}

/** The plugin's own answer: status, JSON-RPC body (jsonrpc.ts), `Mcp-Affinity: <reason>`, Retry-After on a 503. */
function answer(d: Decision, target: OwnerFacts, method: string): void {
  const reason = REASONS[d.reason];
  if (d.action == ANSWER_400) respond(400, reason, BODY_400, 0);
  else if (d.action == ANSWER_431) respond(431, reason, BODY_431, 0);
  else if (d.action == ANSWER_404) respond(404, reason, d.reason == R_REJECT ? BODY_REJECT : BODY_404, 0);
  else respond(503, reason, unavailableAnswer(method), target.retry > 0 ? target.retry : cfg.retryAfterSeconds); // ANSWER_503
}

/** Checks the parsed token (a session id's, or a task handle's) against the meta. */
function checkToken(now: u64): void {
  // A meta that loaded is enough to check a token; whether it is fresh is input.view's business.
  if (dirfd >= 0 && view.refresh(now, false)) {
    input.token = view.lookupToken(token.cookie, token.bootTag, tokenIncarnation);
  } else {
    input.token = T_UNVERIFIED;
    tokenIncarnation.set(token.cookie, NODE_UP, 0);
  }
  input.tokenCookie = cookieRelation(token.cookie);
}

/** Replaces the wrapped Mcp-Session-Id (in idVals) by the server's own id, keeping the wrapped one. */
function unwrapRequestId(): void {
  clientId.clear();
  clientId.pushBytes(idVals, 0, idVals.len);
  innerIdValue.clear();
  innerIdValue.pushBytes(idVals, token.innerStart, idVals.len);
  setHeader(KIND_REQUEST, "Mcp-Session-Id", innerIdValue);
}


// The 503 carries the request's JSON-RPC id, so the client can match the error to its request.
// Only a small POST body is read, into rpcRequestBody (MAX_COOKIE_READ_BYTES + 64 bytes, so never
// grown): this path is rare, the rest never reads bodies.
const ID_BODY_MAX: i32 = 4096;

function unavailableAnswer(method: string): string {
  if (method != "POST" || !readRequestBodyUpTo(rpcRequestBody, ID_BODY_MAX)) return BODY_503;
  return unavailableBody(rpcRequestBody);
}

/** Fills input.view / input.session / input.ownerState / input.cookie and recordOwner from the view. */
function classify(now: u64): void {
  if (dirfd < 0) {
    input.view = VIEW_ABSENT;
    input.session = S_UNUSABLE;
    return;
  }
  if (!view.refresh(now, false)) {
    // No usable view (sidecar never ran, or its meta is unreadable): what this Traefik learned
    // itself still pins cookie-less clients; nothing else is known, so nothing is refused.
    input.view = VIEW_ABSENT;
    input.session = S_UNUSABLE;
    if (view.lookupLearned(DIGEST, recordOwner) == S_LEARNED) {
      input.view = VIEW_STALE;
      input.session = S_LEARNED;
      setCookieRelation();
    }
    return;
  }
  // Unusable with a meta loaded (a shard of another epoch, or naming an owner the meta lacks): re-read the meta once.
  let r = view.lookup(DIGEST, recordOwner);
  if (r == S_UNUSABLE && view.refresh(now, true)) r = view.lookup(DIGEST, recordOwner);
  // Still inconsistent (a shard mid-rewrite): what this Traefik learned itself still pins.
  if (r == S_UNUSABLE && view.lookupLearned(DIGEST, recordOwner) == S_LEARNED) r = S_LEARNED;
  input.view = view.isStale(now, cfg.staleAfterMs) ? VIEW_STALE : VIEW_FRESH;
  input.session = r;
  if (r == S_OWNER) input.ownerState = recordOwner.state;
  setCookieRelation();
}

/** The edge knows this session's owner (view or learned/): closes and deaths are worth an event. */
function holdsSession(owner: string): bool {
  const held = input.session == S_OWNER || input.session == S_LEARNED;
  heldOwner = held ? owner : "";
  return held;
}

/** A DELETE for a session the edge holds; forged ids (unknown to the edge) cost no event. */
function noteClose(): void {
  events.addLine("c", idVals, 0, idVals.len, hashHex, heldOwner);
}

function setCookieRelation(): void {
  input.cookie = input.session == S_OWNER || input.session == S_LEARNED ? cookieRelation(recordOwner.cookie) : COOKIE_NONE;
}

/** What the client's own sticky cookie says relative to a node's cookie value (COOKIE_*). */
function cookieRelation(node: string): i32 {
  if (clientCookie.length == 0) return COOKIE_NONE;
  return clientCookie == node ? COOKIE_OWNER : COOKIE_OTHER;
}

function repairCookie(owner: string): Bytes {
  const v = setCookieValue;
  v.clear();
  v.pushAscii(cfg.cookieName);
  v.pushByte(61);
  v.pushAscii(owner);
  v.pushAscii("; Path=");
  v.pushAscii(cfg.cookiePath);
  if (cfg.cookieHttpOnly) v.pushAscii("; HttpOnly");
  if (cfg.cookieSecure) v.pushAscii("; Secure");
  if (cfg.cookieSameSite.length > 0) {
    v.pushAscii("; SameSite=");
    v.pushAscii(cfg.cookieSameSite);
  }
  return v;
}

/**
 * Before a POST goes on: a body of known length up to maxBufferedBodyBytes (or, for a possible
 * initialize, maxInitializeBodyBytes) is copied into the host's memory, so the proxy never reads
 * the client's connection while the answer flows (see body.ts); others stream as they come and
 * are counted. With `inspect`, the copy is also searched for an initialize; true when one is found.
 */
function passBody(method: string, inspect: bool): bool {
  if (method != "POST") return false;
  const limit = inspect && cfg.maxInitializeBodyBytes > cfg.maxBufferedBodyBytes ? cfg.maxInitializeBodyBytes : cfg.maxBufferedBodyBytes;
  const len = contentLength(contentLengthValue, <i64>limit);
  if (len == 0) return false;
  if (len < 0) {
    // Chunked, or larger than the bound: the body streams to the node as in plain Traefik.
    events.countBody(BODY_STREAMED);
    return false;
  }
  initMatcher.reset();
  const matcher = inspect && len <= <i64>cfg.maxInitializeBodyBytes ? initMatcher : null;
  copyRequestBody(bodyPiece, matcher);
  // A long copy leaves garbage in proportion to its pieces; collect it now rather than let the
  // allocator grow this instance past its first page before the periodic collection.
  if (len > <i64>(16 * CHUNK_BYTES)) __collect();
  events.countBody(BODY_BUFFERED);
  return matcher != null && matcher.found;
}

/** An initialize: placed on an up node, and this one response held until the session it creates is learned. */
function learnInitialize(now: u64): u64 {
  // Cookie lines too large to read: not steered (the rewrite would drop them); the balancer's
  // Set-Cookie still names the owner.
  if (readClientCookie(min<i32>(cfg.maxCookieBytes, INITIALIZE_COOKIE_BYTES))) steer(now, true);
  if (!cfg.learnSessions) return 0;
  enableFeatures(FEATURE_BUFFER_RESPONSE);
  return REQCTX_LEARN;
}

/**
 * A new session, or a request that is no session's, goes to an up server: the Cookie names one
 * (Traefik obeys it); with `tellClient` (a new session) a cookie-keeping client is told the same.
 * Only on a fresh view; otherwise Traefik picks.
 */
function steer(now: u64, tellClient: bool): void {
  if (!view.refresh(now, false) || view.isStale(now, cfg.staleAfterMs)) return;
  const pick = steerNewSession(view, clientCookie);
  if (pick.length == 0) return;
  buildPinnedCookie(cookieLines, cfg.cookieName, pick, pinnedCookieLine);
  setHeader(KIND_REQUEST, "Cookie", pinnedCookieLine);
  if (tellClient) addHeader(KIND_RESPONSE, "Set-Cookie", repairCookie(pick));
  clientCookie = pick;
}

// Every open SSE stream holds an instance, so an instance must stay within its first 64 KiB page.
// The incremental GC only starts a cycle once allocations reach a threshold relative to the heap,
// and the allocator grows memory when free space runs out first: collect the little garbage a
// request leaves (a few short strings) before it can add up. On the real host 15 requests of a
// wrapped session left enough to grow an instance (test/conformance/memory_test.go): every 8.
const COLLECT_EVERY: i32 = 8;
let sinceCollect: i32 = 0;

function finish(reason: i32, now: u64): void {
  events.count(reason);
  events.maybeFlush(now);
  if (++sinceCollect >= COLLECT_EVERY) {
    sinceCollect = 0;
    __collect();
  }
}

export function handle_response(reqCtx: u32, isError: u32): void {
  if (isError != 0) return;
  const routing = dirfd >= 0 && cfg.error.length == 0;
  const ctx = <u64>reqCtx;
  if (ctx & (REQCTX_TASK_CREATE | REQCTX_TASK_ECHO | REQCTX_STATE)) {
    wrapAnswerHandles(ctx);
    return;
  }
  if (ctx & (REQCTX_OWNER | REQCTX_WRAPPED)) {
    // First: it reports the request's own id (the exposure check rereads idVals from the response).
    if (routing && ctx & REQCTX_OWNER) suspectDeath();
    if (ctx & REQCTX_WRAPPED) noteExposedServerId();
    return;
  }
  if (ctx != REQCTX_LEARN || !routing) return;
  const status = statusCode();
  if (status < 200 || status > 299) return;
  if (readSessionId(KIND_RESPONSE) != ID_VALID) return;
  const owner = answeringNode();
  if (!isCookieValue(owner)) {
    log(LOG_DEBUG, "mcp-affinity: initialize response without a usable sticky cookie; not learned");
    return;
  }
  if (parseSessionToken(idVals, token) == TOKEN_MINTED) {
    if (token.cookie != owner) log(LOG_WARN, "mcp-affinity: a node mints session ids for another server URL than Traefik's (check the node library's url setting)");
  } else if (cfg.wrapSessionIds) {
    wrapResponseId(owner);
  }
  hashSessionId();
  writeLearned(owner);
  events.addLine("l", idVals, 0, idVals.len, hashHex, owner);
  events.flush(nowMs());
}

/** The node that answered: the balancer's Set-Cookie names the one it picked; without one it kept the request's cookie. */
function answeringNode(): string {
  const n = headerValues(KIND_RESPONSE, "Set-Cookie", setCookieLines);
  // Set-Cookie lines carry attributes after ';': findCookie stops the value at ';' already.
  if (n > 0 && findCookie(setCookieLines, cfg.cookieName)) return setCookieLines.toAscii(foundStart, foundEnd);
  return clientCookie;
}

/**
 * A task id in the answer of a tools/call (a CreateTaskResult) or a tasks/get (the node's own id)
 * becomes the handle the client keeps (TaskIdWrapper): the answer is held by the host
 * (FEATURE_BUFFER_RESPONSE), read and written back in pieces. In 2026-07-28 no answer carries a
 * request for the client (input requests travel inside results), so holding one deadlocks nothing.
 */
function wrapAnswerHandles(ctx: u64): void {
  const status = statusCode();
  if (status < 200 || status > 299) return;
  const value = responseHeaderValue;
  // A compressed answer is not read: it goes out as it came, its task id routes without a token.
  if (headerValues(KIND_RESPONSE, "Content-Encoding", value, 64) > 0 && !startsWithIgnoreCase(value, "identity")) return;
  if (headerValues(KIND_RESPONSE, "Content-Type", value, 256) <= 0) return;
  const sse = startsWithIgnoreCase(value, "text/event-stream");
  if (!sse && !startsWithIgnoreCase(value, "application/json")) return;
  if (ctx & REQCTX_TASK_ECHO) {
    idWrapper.begin(WRAP_ECHO, taskHandle, sse, heldValue, true, false);
    idWrapper.setEcho(taskHandle, TASK_HEAD_LENGTH);
  } else {
    const owner = answeringNode();
    if (!isCookieValue(owner)) {
      log(LOG_DEBUG, "mcp-affinity: a task answer without a usable sticky cookie; its task id is not wrapped");
      return;
    }
    taskHead.clear();
    pushHead(taskHead, "mt1.", owner, view.refresh(nowMs(), false) ? view.currentBootTag(owner) : UNKNOWN_BOOT_TAG);
    idWrapper.begin(WRAP_CREATED, taskHead, sse, heldValue, (ctx & REQCTX_TASK_CREATE) != 0, (ctx & REQCTX_STATE) != 0);
  }
  const read = rewriteBody(KIND_RESPONSE, idWrapper);
  if (idWrapper.overflowed > 0) log(LOG_DEBUG, "mcp-affinity: a task id too far from its result type; not wrapped");
  if (idWrapper.wrapped == 0) return;
  if (headerValues(KIND_RESPONSE, "Content-Length", value, 32) != 1) return;
  setLength(read + <i64>(idWrapper.wrapped * TASK_HEAD_LENGTH));
}

/**
 * Wraps the server's id (in idVals) into the routing-token form and sends that to the client;
 * idVals then holds the wrapped id, which is what the registry and learned/ know the session by.
 */
function wrapResponseId(owner: string): void {
  const wrappedLen = TOKEN_HEAD_LENGTH + idVals.len;
  if (wrappedLen > cfg.maxSessionIdLength) {
    log(LOG_DEBUG, "mcp-affinity: session id too long to wrap within maxSessionIdLength; routed without a token");
    return;
  }
  const tag = view.refresh(nowMs(), false) ? view.currentBootTag(owner) : UNKNOWN_BOOT_TAG;
  wrapInto(clientId, owner, tag, idVals);
  setHeader(KIND_RESPONSE, "Mcp-Session-Id", clientId);
  idVals.clear();
  idVals.pushBytes(clientId, 0, clientId.len);
}

/**
 * A POST answer of a wrapped session that repeats the server's own id: the client (the TypeScript
 * SDK adopts it) would lose its routing token. Counted and logged once per instance; the fix is the
 * router that strips Mcp-Session-Id from these answers (docs/plugin.md).
 */
function noteExposedServerId(): void {
  if (readSessionId(KIND_RESPONSE) != ID_VALID) return;
  const inner = clientId.len - TOKEN_HEAD_LENGTH;
  if (idVals.len != inner || memory.compare(idVals.ptr, clientId.ptr + <usize>TOKEN_HEAD_LENGTH, <usize>inner) != 0) return;
  events.countExposed();
  events.maybeFlush(nowMs());
  if (exposureLogged) return;
  exposureLogged = true;
  log(LOG_WARN, "mcp-affinity: an answer of a wrapped session shows the client the server's own Mcp-Session-Id; add the wrapped-session router that strips it (docs/plugin.md), or clients lose their routing token");
}
let exposureLogged = false;

/**
 * A response for a session the edge holds that may be the owner's 404 (the spec's answer for a
 * terminated session: a restarted server, an expired session). http-wasm cannot read the status
 * of an unbuffered response, and responses of sessions are never buffered (SSE), so the plugin
 * reads headers only: a JSON response without Mcp-Session-Id (an error body; successful answers
 * repeat the session header, a notification's 202 has no body) is reported as a `v` event, and
 * the sidecar asks the owner itself (a ping in that session) before it records a death. A response from another node (Traefik re-picked: its Set-Cookie names
 * another server) says nothing about the session and is not reported.
 */
function suspectDeath(): void {
  if (heldOwner.length == 0) return;
  const value = responseHeaderValue;
  if (headerValues(KIND_RESPONSE, "Mcp-Session-Id", value, 64) != 0) return;
  // A 404 carries a JSON-RPC error body; a notification's 202 has no body and no Content-Type,
  // and an SSE stream is an answer: only a JSON answer without the session header is suspicious.
  if (headerValues(KIND_RESPONSE, "Content-Type", value, 256) <= 0 || !startsWithIgnoreCase(value, "application/json")) return;
  // An empty JSON answer is a notification's 202 (the Python SDK labels it JSON), never a 404.
  if (headerValues(KIND_RESPONSE, "Content-Length", value, 32) == 1 && value.len == 2 && value.at(0) == 48) return;
  const n = headerValues(KIND_RESPONSE, "Set-Cookie", setCookieLines, cfg.maxCookieBytes);
  if (n < 0 || (n > 0 && findCookie(setCookieLines, cfg.cookieName) && setCookieLines.toAscii(foundStart, foundEnd) != heldOwner)) return;
  // One report per session per instance and 10 s: a client repeating a failing request costs one check.
  const now = nowMs();
  if (now - lastSuspectAt < 10000 && lastSuspect == hashHex.toAscii(0, 32)) return;
  lastSuspect = hashHex.toAscii(0, 32);
  lastSuspectAt = now;
  events.addLine("v", idVals, 0, idVals.len, hashHex, heldOwner);
  events.flush(now);
}
let lastSuspect: string = "";
let lastSuspectAt: u64 = 0;

function startsWithIgnoreCase(b: Bytes, prefix: string): bool {
  if (b.len < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    let c = b.at(i);
    if (c >= 65 && c <= 90) c += 32;
    if (c != <u8>prefix.charCodeAt(i)) return false;
  }
  return true;
}

function isCookieValue(s: string): bool {
  if (s.length != 16) return false;
  for (let i = 0; i < 16; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/** learned/<first learnedDigits hex of the hash>: `<32 hex hash> <cookie>\n`; a bounded set of names. */
function writeLearned(owner: string): void {
  learnedPath.clear();
  learnedPath.pushAscii("learned/");
  learnedPath.pushBytes(hashHex, 0, cfg.learnedDigits);
  let fd = openWrite(dirfd, learnedPath, false);
  if (fd == -<i32>ERRNO_NOENT) {
    mkdir(dirfd, "learned");
    fd = openWrite(dirfd, learnedPath, false);
  }
  if (fd < 0) {
    log(LOG_ERROR, "mcp-affinity: cannot write learned/ in viewDir (errno " + (-fd).toString() + ")");
    return;
  }
  learnedLine.clear();
  learnedLine.pushBytes(hashHex, 0, hashHex.len);
  learnedLine.pushByte(32);
  learnedLine.pushAscii(owner);
  learnedLine.pushByte(10);
  writeAll(fd, learnedLine);
  close(fd);
}

