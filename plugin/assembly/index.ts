// mcp-affinity: http-wasm handler for Traefik. Glue between the ABI, the view, the decision core
// and the event log. One instance serves one request at a time; state here is per instance.
import "./abort";
import {
  Bytes, KIND_REQUEST, KIND_RESPONSE, FEATURE_BUFFER_RESPONSE, LOG_ERROR, LOG_WARN, LOG_DEBUG,
  log, setLogLevel, getConfig, getMethod, headerValues, setHeader, addHeader, enableFeatures,
  readRequestBody, writeRequestBody, statusCode, respond,
} from "./abi";
import { Config, parseConfig, MISROUTE_REJECT, DOWN_PASS } from "./config";
import { findPreopen, nowMs, openWrite, writeAll, close, mkdir, ERRNO_NOENT } from "./wasi";
import { sha256, DIGEST } from "./sha256";
import { findCookie, foundStart, foundEnd, rangeEquals, buildPinnedCookie } from "./cookie";
import { RegistryView, pushHex, FOUND, CLOSED, LEARNED, NOT_FOUND, INCONSISTENT } from "./view";
import { EventLog } from "./events";
import {
  RouteInput, Decision, decideRoute, ID_NONE, ID_VALID, ID_INVALID, VIEW_FRESH, VIEW_STALE,
  VIEW_ABSENT, S_UNUSABLE, S_OWNER, S_CLOSED, S_LEARNED, S_UNKNOWN, COOKIE_NONE, COOKIE_OWNER,
  COOKIE_OTHER, PIN, PIN_REPAIR, ANSWER_404, ANSWER_503, REASONS, R_SESSIONLESS, R_INVALID, R_REJECT,
  T_NONE, T_UNVERIFIED, TARGET_TOKEN,
} from "./core";
import { SessionToken, parseToken, wrapInto, TOKEN_NONE, TOKEN_MINTED, TOKEN_WRAPPED, TOKEN_HEAD_LENGTH, UNKNOWN_BOOT_TAG } from "./token";

const BODY_404 = '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}';
const BODY_503 = '{"jsonrpc":"2.0","error":{"code":-32000,"message":"The node holding this session is temporarily unavailable; retry later"},"id":null}';
const BODY_400 = '{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Mcp-Session-Id header"},"id":null}';
const BODY_REJECT = '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found on this route"},"id":null}';

// handle_response's job for a request (the upper word of handle_request's result).
const REQCTX_LEARN: u64 = 1; // an initialize: learn (and wrap) the session it creates
const REQCTX_REWRAP: u64 = 2; // a POST of a wrapped session: show the client its wrapped id again

let ready = false;
let cfg: Config = new Config();
const view = new RegistryView(100);
const events = new EventLog(-1, 1000, 4096);
let dirfd: i32 = -1;

const idVals = new Bytes(512);
const cookieVals = new Bytes(1024);
const scratch = new Bytes(1024);
const body = new Bytes(1024);
const hashHex = new Bytes(32);
// The client-facing id of a wrapped session (idVals is reused by the response phase).
const clientId = new Bytes(320);
const token = new SessionToken();
const input = new RouteInput();
const decision = new Decision();
// Per request: the client's own sticky cookie value, for learning on the response.
let clientCookie: string = "";

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
  // Start the flush clock now: a fresh instance batches its counts like any other.
  events.lastFlush = nowMs();
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

function readClientCookie(): void {
  headerValues(KIND_REQUEST, "Cookie", cookieVals);
  clientCookie = findCookie(cookieVals, cfg.cookieName) ? cookieVals.toAscii(foundStart, foundEnd) : "";
}

export function handle_request(): u64 {
  if (!ready) init();
  if (cfg.error.length > 0) {
    // Failing open still unwraps: a node must never see an id it did not choose.
    if (readSessionId(KIND_REQUEST) == ID_VALID && parseToken(idVals, token) == TOKEN_WRAPPED) unwrapRequestId();
    return 1;
  }
  const now = nowMs();
  const id = readSessionId(KIND_REQUEST);
  input.id = id;
  if (id == ID_NONE) {
    const ctx = cfg.learnSessions && dirfd >= 0 ? maybeInitialize() : 0;
    finish(R_SESSIONLESS, now);
    return (ctx << 32) | 1;
  }
  if (id == ID_INVALID) {
    respond(400, "invalid", BODY_400, 0);
    finish(R_INVALID, now);
    return 0;
  }

  hashSessionId();
  readClientCookie();
  classify(now);
  const ownerCookie = view.ownerCookie;
  classifyToken(now);
  input.rejectMisroute = cfg.onMisroute == MISROUTE_REJECT;
  input.passWhenDown = cfg.onOwnerDown == DOWN_PASS;
  const d = decideRoute(input, decision);
  const target = d.target == TARGET_TOKEN ? token.cookie : ownerCookie;
  const method = getMethod();

  if (method == "DELETE") {
    const known = input.session == S_OWNER || input.session == S_LEARNED;
    events.addLine("c", idVals, 0, idVals.len, hashHex, known ? target : "");
  }
  let next: u64 = 1;
  if (d.action == PIN || d.action == PIN_REPAIR) {
    buildPinnedCookie(cookieVals, cfg.cookieName, target, scratch);
    setHeader(KIND_REQUEST, "Cookie", scratch);
    if (d.action == PIN_REPAIR) addHeader(KIND_RESPONSE, "Set-Cookie", repairCookie(target));
  } else if (d.action == ANSWER_404) {
    respond(404, REASONS[d.reason], d.reason == R_REJECT ? BODY_REJECT : BODY_404, 0);
    next = 0;
  } else if (d.action == ANSWER_503) {
    respond(503, "unavailable", BODY_503, view.ownerRetry > 0 ? view.ownerRetry : cfg.retryAfterSeconds);
    next = 0;
  }
  if (next != 0 && token.kind == TOKEN_WRAPPED) {
    unwrapRequestId();
    // Servers repeat the session id on their answers, and the TypeScript client adopts whatever a
    // POST answer says: hold POST answers of wrapped sessions to show the wrapped id again. GET
    // streams are never held (clients do not take ids from them).
    if (method == "POST") {
      enableFeatures(FEATURE_BUFFER_RESPONSE);
      next |= REQCTX_REWRAP << 32;
    }
  }
  finish(d.reason, now);
  return next;
}

/** Fills input.token / input.tokenCookie from the session id's routing token and the meta. */
function classifyToken(now: u64): void {
  input.token = T_NONE;
  input.tokenCookie = COOKIE_NONE;
  if (parseToken(idVals, token) == TOKEN_NONE) return;
  // A meta that loaded is enough to check a token; whether it is fresh is input.view's business.
  input.token = dirfd >= 0 && view.refresh(now, false) ? view.lookupToken(token.cookie, token.bootTag) : T_UNVERIFIED;
  input.tokenCookie = clientCookie.length == 0 ? COOKIE_NONE : clientCookie == token.cookie ? COOKIE_OWNER : COOKIE_OTHER;
  // lookupToken overwrote the view's owner fields; classify's own result was saved by the caller.
}

/** Replaces the wrapped Mcp-Session-Id (in idVals) by the server's own id, keeping the wrapped one. */
function unwrapRequestId(): void {
  clientId.clear();
  clientId.pushBytes(idVals, 0, idVals.len);
  scratch.clear();
  scratch.pushBytes(idVals, token.innerStart, idVals.len);
  setHeader(KIND_REQUEST, "Mcp-Session-Id", scratch);
}


/** Fills input.view / input.session / input.ownerState / input.cookie from the view. */
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
    if (view.lookupLearned(DIGEST) == LEARNED) {
      input.view = VIEW_STALE;
      input.session = S_LEARNED;
      setCookieRelation();
    }
    return;
  }
  let r = view.lookup(DIGEST);
  if (r == INCONSISTENT && view.refresh(now, true)) r = view.lookup(DIGEST);
  // Still inconsistent (a shard mid-rewrite): what this Traefik learned itself still pins.
  if (r == INCONSISTENT && view.lookupLearned(DIGEST) == LEARNED) r = LEARNED;
  input.view = view.isStale(now, cfg.staleAfterMs) ? VIEW_STALE : VIEW_FRESH;
  if (r == FOUND) {
    input.session = S_OWNER;
    input.ownerState = view.ownerState;
  } else if (r == CLOSED) input.session = S_CLOSED;
  else if (r == LEARNED) input.session = S_LEARNED;
  else if (r == NOT_FOUND) input.session = S_UNKNOWN;
  else input.session = S_UNUSABLE;
  setCookieRelation();
}

function setCookieRelation(): void {
  if (input.session == S_OWNER || input.session == S_LEARNED) {
    input.cookie = clientCookie.length == 0 ? COOKIE_NONE : clientCookie == view.ownerCookie ? COOKIE_OWNER : COOKIE_OTHER;
  } else input.cookie = COOKIE_NONE;
}

function repairCookie(owner: string): Bytes {
  body.clear();
  body.pushAscii(cfg.cookieName);
  body.pushByte(61);
  body.pushAscii(owner);
  body.pushAscii("; Path=");
  body.pushAscii(cfg.cookiePath);
  if (cfg.cookieHttpOnly) body.pushAscii("; HttpOnly");
  if (cfg.cookieSecure) body.pushAscii("; Secure");
  if (cfg.cookieSameSite.length > 0) {
    body.pushAscii("; SameSite=");
    body.pushAscii(cfg.cookieSameSite);
  }
  return body;
}

/**
 * A POST without a session id may be an initialize. Its body is small: read it, put it back
 * unchanged, and hold this one response until the session it creates is learned.
 */
function maybeInitialize(): u64 {
  if (getMethod() != "POST") return 0;
  const n = headerValues(KIND_REQUEST, "Content-Length", scratch);
  if (n != 1) return 0;
  let len: i64 = 0;
  for (let i = 0; i < scratch.len - 1; i++) {
    const c = scratch.at(i);
    if (c < 48 || c > 57 || len > <i64>cfg.maxInitializeBodyBytes) return 0;
    len = len * 10 + <i64>(c - 48);
  }
  if (len <= 0 || len > <i64>cfg.maxInitializeBodyBytes) return 0;
  readRequestBody(body);
  writeRequestBody(body);
  if (!isInitialize(body)) return 0;
  readClientCookie();
  enableFeatures(FEATURE_BUFFER_RESPONSE);
  return REQCTX_LEARN;
}

/** True when the JSON body has "method" : "initialize" (whitespace allowed around the colon). */
function isInitialize(b: Bytes): bool {
  const key = '"method"';
  const val = '"initialize"';
  for (let i = 0; i + key.length <= b.len; i++) {
    if (!rangeEquals(b, i, i + key.length, key)) continue;
    let j = i + key.length;
    while (j < b.len && (b.at(j) == 32 || b.at(j) == 9 || b.at(j) == 10 || b.at(j) == 13)) j++;
    if (j >= b.len || b.at(j) != 58) continue;
    j++;
    while (j < b.len && (b.at(j) == 32 || b.at(j) == 9 || b.at(j) == 10 || b.at(j) == 13)) j++;
    if (j + val.length <= b.len && rangeEquals(b, j, j + val.length, val)) return true;
  }
  return false;
}

// Every open SSE stream holds an instance, so an instance must stay within its first 64 KiB page.
// The incremental GC only starts a cycle once allocations reach a threshold relative to the heap,
// and the allocator grows memory when free space runs out first: collect the little garbage a
// request leaves (a few short strings) before it can add up.
const COLLECT_EVERY: i32 = 16;
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
  if (<u64>reqCtx == REQCTX_REWRAP) {
    if (isError == 0) rewrapResponseId();
    return;
  }
  if (<u64>reqCtx != REQCTX_LEARN || isError != 0 || dirfd < 0) return;
  const status = statusCode();
  if (status < 200 || status > 299) return;
  if (readSessionId(KIND_RESPONSE) != ID_VALID) return;
  // The balancer's Set-Cookie names the node it picked; without one it kept the client's cookie.
  let owner = clientCookie;
  const n = headerValues(KIND_RESPONSE, "Set-Cookie", cookieVals);
  if (n > 0 && findCookie(cookieVals, cfg.cookieName)) {
    // Set-Cookie lines carry attributes after ';': findCookie stops the value at ';' already.
    owner = cookieVals.toAscii(foundStart, foundEnd);
  }
  if (!isCookieValue(owner)) {
    log(LOG_DEBUG, "mcp-affinity: initialize response without a usable sticky cookie; not learned");
    return;
  }
  if (parseToken(idVals, token) == TOKEN_MINTED) {
    if (token.cookie != owner) log(LOG_WARN, "mcp-affinity: a node mints session ids for another server URL than Traefik's (check the node library's url setting)");
  } else if (cfg.wrapSessionIds) {
    wrapResponseId(owner);
  }
  hashSessionId();
  writeLearned(owner);
  events.addLine("l", idVals, 0, idVals.len, hashHex, owner);
  events.flush(nowMs());
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

/** A held POST answer of a wrapped session: if it repeats the server's id, repeat the wrapped one. */
function rewrapResponseId(): void {
  if (readSessionId(KIND_RESPONSE) != ID_VALID) return;
  const inner = clientId.len - TOKEN_HEAD_LENGTH;
  if (idVals.len != inner || memory.compare(idVals.ptr, clientId.ptr + <usize>TOKEN_HEAD_LENGTH, <usize>inner) != 0) return;
  setHeader(KIND_RESPONSE, "Mcp-Session-Id", clientId);
}

function isCookieValue(s: string): bool {
  if (s.length != 16) return false;
  for (let i = 0; i < 16; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function writeLearned(owner: string): void {
  scratch.clear();
  scratch.pushAscii("learned/");
  scratch.pushBytes(hashHex, 0, hashHex.len);
  let fd = openWrite(dirfd, scratch, false);
  if (fd == -<i32>ERRNO_NOENT) {
    mkdir(dirfd, "learned");
    fd = openWrite(dirfd, scratch, false);
  }
  if (fd < 0) {
    log(LOG_ERROR, "mcp-affinity: cannot write learned/ in viewDir (errno " + (-fd).toString() + ")");
    return;
  }
  body.clear();
  body.pushAscii(owner);
  body.pushByte(10);
  writeAll(fd, body);
  close(fd);
}

