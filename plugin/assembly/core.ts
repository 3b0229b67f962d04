// decideRoute: the edge decision table (docs/plugin.md), pure: no I/O, no ABI.

// Session id header.
export const ID_NONE: i32 = 0;
export const ID_VALID: i32 = 1;
export const ID_INVALID: i32 = 2;

// View freshness.
export const VIEW_FRESH: i32 = 0;
export const VIEW_STALE: i32 = 1;
export const VIEW_ABSENT: i32 = 2;

// What the view says about the session (see view.ts).
export const S_UNUSABLE: i32 = 0; // view missing or inconsistent
export const S_OWNER: i32 = 1;
export const S_CLOSED: i32 = 2;
export const S_LEARNED: i32 = 3;
export const S_UNKNOWN: i32 = 4;

// Owner state (view.ts NODE_*).
export const OWNER_UP: u8 = 0;
export const OWNER_DRAINING: u8 = 1;
export const OWNER_DOWN: u8 = 2;
export const OWNER_GONE: u8 = 3;

// Actions.
export const PASS: i32 = 0;
export const PIN: i32 = 1; // rewrite Cookie to the owner
export const PIN_REPAIR: i32 = 2; // and Set-Cookie on the response
export const ANSWER_400: i32 = 3;
export const ANSWER_404: i32 = 4;
export const ANSWER_503: i32 = 5;

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
export const REASONS: StaticArray<string> = [
  "sessionless", "pass", "pin", "repair", "reject", "lost", "unavailable", "unknown", "invalid", "fail-open",
];
export const REASON_COUNT: i32 = 10;

/** High-volume reasons, batched per instance; every other decision is written to events/ at once
 *  (rare, alert-worthy, and lost with the instance if it waited: the host drops idle instances). */
export function isFrequentReason(r: i32): bool {
  return r == R_SESSIONLESS || r == R_PASS || r == R_PIN || r == R_UNKNOWN || r == R_FAIL_OPEN;
}

export class RouteInput {
  id: i32 = ID_NONE;
  view: i32 = VIEW_ABSENT;
  session: i32 = S_UNUSABLE;
  ownerState: u8 = OWNER_UP;
  /** Client's cookie relative to the owner: 0 none, 1 names the owner, 2 names another node. */
  cookie: i32 = 0;
  rejectMisroute: bool = false;
  passWhenDown: bool = false;
}

export class Decision {
  action: i32 = PASS;
  reason: i32 = R_SESSIONLESS;
}

export const COOKIE_NONE: i32 = 0;
export const COOKIE_OWNER: i32 = 1;
export const COOKIE_OTHER: i32 = 2;

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

export function decideRoute(i: RouteInput, d: Decision): Decision {
  if (i.id == ID_NONE) return set(d, PASS, R_SESSIONLESS);
  if (i.id == ID_INVALID) return set(d, ANSWER_400, R_INVALID);
  if (i.view == VIEW_ABSENT || i.session == S_UNUSABLE) return set(d, PASS, R_FAIL_OPEN);

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

  if (i.ownerState == OWNER_GONE) return set(d, ANSWER_404, R_LOST);
  if (i.ownerState == OWNER_DOWN) {
    if (!i.passWhenDown) return set(d, ANSWER_503, R_UNAVAILABLE);
    // Policy pass: keep it pinned so it lands on the owner as soon as Traefik sees it back.
    if (i.cookie == COOKIE_OWNER) return set(d, PASS, R_PIN);
    return set(d, PIN, R_PIN);
  }
  if (i.cookie == COOKIE_OTHER && i.rejectMisroute) return set(d, ANSWER_404, R_REJECT);
  return pinTo(d, i.cookie, true);
}
