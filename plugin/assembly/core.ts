// decideRoute: the edge decision table (docs/plugin.md), every row of it, pure: no I/O, no ABI.
// index.ts reads the request and the view into a RouteInput and carries out the Decision.

// Session id header.
export const ID_NONE: i32 = 0;
export const ID_VALID: i32 = 1;
export const ID_INVALID: i32 = 2;
/**
 * No session id, but a handle a server minted and the edge wrapped (token.ts, TOKEN_TASK): a
 * tasks/get|update|cancel whose Mcp-Name is a task handle, or a retry whose requestState is one.
 */
export const ID_HANDLE: i32 = 3;

// What the body of a handle's request says (index.ts reads it while copying it).
export const HANDLE_BODY_MATCH: i32 = 0; // it names this handle (the head was removed)
export const HANDLE_BODY_MISMATCH: i32 = 1; // not the Mcp-Name's handle, two nodes' handles, or no 2026 MCP-Protocol-Version
export const HANDLE_BODY_UNREADABLE: i32 = 2; // chunked or larger than maxBufferedBodyBytes: it cannot be rewritten

// View freshness.
export const VIEW_FRESH: i32 = 0;
export const VIEW_STALE: i32 = 1;
export const VIEW_ABSENT: i32 = 2;

// What the view says about the session (RegistryView.lookup in view.ts returns these).
export const S_UNUSABLE: i32 = 0; // view missing, or inconsistent (a shard of another epoch, an owner id the meta lacks)
export const S_OWNER: i32 = 1;
export const S_CLOSED: i32 = 2;
export const S_LEARNED: i32 = 3;
export const S_UNKNOWN: i32 = 4;

// What the view says about the session id's routing token (see token.ts, view.ts lookupToken).
export const T_NONE: i32 = 0; // the id carries no token
export const T_UNVERIFIED: i32 = 1; // token present, no usable meta to check it against
export const T_LIVE: i32 = 2; // its incarnation is up or draining
export const T_DOWN: i32 = 3; // its incarnation is down for now (same boot)
export const T_DEAD: i32 = 4; // its incarnation is gone (removed, rebooted, down too long)
export const T_NEW_BOOT: i32 = 5; // the node is known, this boot is not (yet)
export const T_UNKNOWN_NODE: i32 = 6; // no node of the view has its cookie

// The client's sticky cookie relative to a node (the owner, or the token's node).
export const COOKIE_NONE: i32 = 0;
export const COOKIE_OWNER: i32 = 1; // names that node
export const COOKIE_OTHER: i32 = 2; // names another node

// A node's state (the state field of the meta's `node` and `boot` lines, docs/registry-view.md).
export const NODE_UP: u8 = 0;
export const NODE_DRAINING: u8 = 1;
export const NODE_DOWN: u8 = 2;
export const NODE_GONE: u8 = 3;

// Actions.
export const PASS: i32 = 0;
export const PIN: i32 = 1; // rewrite Cookie to the owner
export const PIN_REPAIR: i32 = 2; // and Set-Cookie on the response
export const ANSWER_400: i32 = 3; // the session id is not one
export const ANSWER_404: i32 = 4; // the session is gone (or onMisroute=reject)
export const ANSWER_503: i32 = 5; // its owner is down for now
export const ANSWER_431: i32 = 6; // the Cookie lines are too large to read
export const ANSWER_413: i32 = 7; // a handle request's body the edge cannot rewrite

// Reasons (index into REASONS; also the decision metric label).
export const R_SESSIONLESS: i32 = 0;
export const R_PASS: i32 = 1;
export const R_PIN: i32 = 2;
export const R_REPAIR: i32 = 3;
export const R_REJECT: i32 = 4;
export const R_LOST: i32 = 5;
export const R_UNAVAILABLE: i32 = 6;
export const R_UNKNOWN: i32 = 7;
export const R_INVALID: i32 = 8;
export const R_FAIL_OPEN: i32 = 9;
export const R_HANDLE: i32 = 10; // a request routed by its handle (a task id, a requestState)
export const R_HANDLE_LOST: i32 = 11; // its node is gone or rebooted: -32602 at the edge
export const R_HANDLE_UNAVAILABLE: i32 = 12; // its node is down for now: 503
export const R_HANDLE_MISMATCH: i32 = 13; // Mcp-Name and body disagree: 400
export const REASONS: StaticArray<string> = [
  "sessionless", "pass", "pin", "repair", "reject", "lost", "unavailable", "unknown", "invalid", "fail-open",
  "handle", "handle-lost", "handle-unavailable", "handle-mismatch",
];
/** Size of the per-reason counters (events.ts): derived, so a reason appended to REASONS is counted. */
export const REASON_COUNT: i32 = REASONS.length;

/** High-volume reasons, batched per instance; every other decision is written to events/ at once
 *  (rare, alert-worthy, and lost with the instance if it waited: the host drops idle instances). */
export function isFrequentReason(r: i32): bool {
  return r == R_SESSIONLESS || r == R_PASS || r == R_PIN || r == R_UNKNOWN || r == R_FAIL_OPEN || r == R_HANDLE;
}

/** What index.ts read from the request and the view. */
export class RouteInput {
  id: i32;
  /** The Cookie lines exceed maxCookieBytes and were not read (nothing below was looked up). */
  cookieUnreadable: bool;
  view: i32;
  session: i32;
  ownerState: u8;
  /** Client's cookie relative to the owner (COOKIE_*). */
  cookie: i32;
  token: i32;
  /** Client's cookie relative to the token's node (COOKIE_*). */
  tokenCookie: i32;
  rejectMisroute: bool;
  passWhenDown: bool;
  /** ID_HANDLE only: what the body says about the handle (HANDLE_BODY_*). */
  handleBody: i32;

  constructor() {
    this.reset();
  }

  /** "Nothing known": no session id, no view, no token, default policies. */
  reset(): void {
    this.id = ID_NONE;
    this.cookieUnreadable = false;
    this.view = VIEW_ABSENT;
    this.session = S_UNUSABLE;
    this.ownerState = NODE_UP;
    this.cookie = COOKIE_NONE;
    this.token = T_NONE;
    this.tokenCookie = COOKIE_NONE;
    this.rejectMisroute = false;
    this.passWhenDown = false;
    this.handleBody = HANDLE_BODY_MATCH;
  }
}

// Which node a PIN / PIN_REPAIR goes to.
export const TARGET_OWNER: i32 = 0; // the owner the view's record or learned/ names
export const TARGET_TOKEN: i32 = 1; // the node the session id's token names

export class Decision {
  action: i32 = PASS;
  reason: i32 = R_SESSIONLESS;
  target: i32 = TARGET_OWNER;
}

function set(d: Decision, action: i32, reason: i32): Decision {
  d.action = action;
  d.reason = reason;
  return d;
}

/** Pins toward a known owner, given what the client's cookie says. */
function pinTo(d: Decision, cookie: i32, repairAllowed: bool): Decision {
  if (cookie == COOKIE_OWNER) return set(d, PASS, R_PASS);
  if (cookie == COOKIE_NONE) return set(d, PIN, R_PIN);
  return set(d, repairAllowed ? PIN_REPAIR : PIN, R_REPAIR);
}

/** Owner incarnation known and in the given state: the rows shared by records and tokens. */
function byOwnerState(d: Decision, state: u8, cookie: i32, i: RouteInput): Decision {
  if (state == NODE_GONE) return set(d, ANSWER_404, R_LOST);
  if (state == NODE_DOWN) {
    if (!i.passWhenDown) return set(d, ANSWER_503, R_UNAVAILABLE);
    // Policy pass: keep it pinned so it lands on the owner as soon as Traefik sees it back.
    if (cookie == COOKIE_OWNER) return set(d, PASS, R_PIN);
    return set(d, PIN, R_PIN);
  }
  if (cookie == COOKIE_OTHER && i.rejectMisroute) return set(d, ANSWER_404, R_REJECT);
  return pinTo(d, cookie, true);
}

/**
 * The session id names its node itself. Without a fresh view it is still pinned (fail open):
 * Traefik's balancer ignores a cookie naming no server of the service, so a pin never leaves it.
 */
function byToken(i: RouteInput, d: Decision, fresh: bool): Decision {
  d.target = TARGET_TOKEN;
  if (!fresh || i.token == T_UNVERIFIED) {
    pinTo(d, i.tokenCookie, true);
    d.reason = R_FAIL_OPEN;
    return d;
  }
  // A node the view does not list (yet: a server just added, a view published before the sidecar
  // learned the servers): still pinned, since the balancer ignores a cookie naming no server of the
  // service, a pin is never worse than a pass. The client's cookie is left alone (nothing to repair).
  if (i.token == T_UNKNOWN_NODE) {
    pinTo(d, i.tokenCookie, false);
    d.reason = R_UNKNOWN;
    return d;
  }
  // A boot the view has not heard of yet (or no longer lists): the node itself decides.
  if (i.token == T_NEW_BOOT) return pinTo(d, i.tokenCookie, true);
  const state = i.token == T_DEAD ? NODE_GONE : i.token == T_DOWN ? NODE_DOWN : NODE_UP;
  return byOwnerState(d, state, i.tokenCookie, i);
}

/**
 * A handle's request: the handle's token decides as a session token does, with reasons of their
 * own, never a cookie repair or a reject (a handle has no cookie of its own).
 */
function byHandle(i: RouteInput, d: Decision): Decision {
  d.target = TARGET_TOKEN;
  if (i.handleBody == HANDLE_BODY_UNREADABLE) return set(d, ANSWER_413, R_INVALID);
  if (i.handleBody == HANDLE_BODY_MISMATCH) return set(d, ANSWER_400, R_HANDLE_MISMATCH);
  const fresh = i.view == VIEW_FRESH && i.token != T_UNVERIFIED;
  if (i.token == T_DEAD && fresh) return set(d, ANSWER_404, R_HANDLE_LOST);
  if (i.token == T_DOWN && fresh && !i.passWhenDown) return set(d, ANSWER_503, R_HANDLE_UNAVAILABLE);
  set(d, i.tokenCookie == COOKIE_OWNER ? PASS : PIN, fresh ? R_HANDLE : R_FAIL_OPEN);
  return d;
}

/**
 * The lean path, for a minted id (node library): when a fresh view lists its incarnation, no record
 * of the session is read, on any request but a DELETE (the edge reports the close of a session it
 * holds): its token decides, as the fast path's routers decide without the plugin.
 */
export function tokenDecidesAlone(token: i32, fresh: bool, isDelete: bool): bool {
  return fresh && !isDelete && (token == T_LIVE || token == T_DOWN || token == T_DEAD);
}

export function decideRoute(i: RouteInput, d: Decision): Decision {
  d.target = TARGET_OWNER;
  if (i.id == ID_NONE) return set(d, PASS, R_SESSIONLESS);
  if (i.id == ID_INVALID) return set(d, ANSWER_400, R_INVALID);
  // Unread Cookie lines: a pin would drop the client's other cookies, a pass could misroute.
  if (i.cookieUnreadable) return set(d, ANSWER_431, R_INVALID);
  if (i.id == ID_HANDLE) {
    // index.ts sets ID_HANDLE only for a handle; without one it is a sessionless request.
    if (i.token == T_NONE) return set(d, PASS, R_SESSIONLESS);
    return byHandle(i, d);
  }
  const usable = i.view != VIEW_ABSENT && i.session != S_UNUSABLE;
  // The view's record of this very session outranks the token; otherwise the token decides.
  if (i.token != T_NONE && !(usable && (i.session == S_OWNER || i.session == S_CLOSED))) {
    return byToken(i, d, i.view == VIEW_FRESH);
  }
  if (!usable) return set(d, PASS, R_FAIL_OPEN);

  if (i.view == VIEW_STALE) {
    // Invariant 1: a stale view never yields 404/503; known owners are still pinned.
    if (i.session == S_OWNER || i.session == S_LEARNED) {
      pinTo(d, i.cookie, true);
      d.reason = R_FAIL_OPEN;
      return d;
    }
    return set(d, PASS, R_FAIL_OPEN);
  }

  if (i.session == S_UNKNOWN) return set(d, PASS, R_UNKNOWN);
  if (i.session == S_CLOSED) return set(d, ANSWER_404, R_LOST);
  // Learned at this edge: owner known, liveness not; never refuse on it.
  if (i.session == S_LEARNED) return pinTo(d, i.cookie, true);
  return byOwnerState(d, i.ownerState, i.cookie, i);
}
