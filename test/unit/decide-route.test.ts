// The decision core alone (plugin/assembly/core.ts, built to plugin/build/core.wasm without any
// host): every input combination against the table in docs/plugin.md, written out independently.
import { describe, it, expect, beforeAll } from "vitest";
import { readFileSync } from "node:fs";
import { DECISION_REASONS } from "../../lib/view/index.ts";

const ID = { none: 0, valid: 1, invalid: 2 } as const;
const VIEW = { fresh: 0, stale: 1, absent: 2 } as const;
const S = { unusable: 0, owner: 1, closed: 2, learned: 3, unknown: 4 } as const;
const OWNER = { up: 0, draining: 1, down: 2, gone: 3 } as const;
const COOKIE = { none: 0, owner: 1, other: 2 } as const;
const TOKEN = { none: 0, unverified: 1, live: 2, down: 3, dead: 4, newBoot: 5, unknownNode: 6 } as const;
const ACTIONS = ["pass", "pin", "pin+repair", "400", "404", "503"];
// The reasons in the order the core numbers them: the event format's list (the same order on the wire).
const REASONS = DECISION_REASONS;
const TARGETS = ["owner", "token"];

type Case = {
  id: number;
  view: number;
  session: number;
  owner: number;
  cookie: number;
  reject: boolean;
  passDown: boolean;
  token: number;
  tokenCookie: number;
};
type Outcome = [action: string, reason: string, target: string];

/** The table, as an operator reads it. */
function expected(c: Case): Outcome {
  if (c.id === ID.none) return ["pass", "sessionless", "owner"];
  if (c.id === ID.invalid) return ["400", "invalid", "owner"];
  const usable = c.view !== VIEW.absent && c.session !== S.unusable;
  const recorded = usable && (c.session === S.owner || c.session === S.closed);
  const toward = (cookie: number, reason?: string): [string, string] => {
    const [a, r]: [string, string] =
      cookie === COOKIE.owner ? ["pass", "pass"] : cookie === COOKIE.none ? ["pin", "pin"] : ["pin+repair", "repair"];
    return [a, reason ?? r];
  };
  const byState = (state: number, cookie: number): [string, string] => {
    if (state === OWNER.gone) return ["404", "lost"];
    if (state === OWNER.down)
      return c.passDown ? [cookie === COOKIE.owner ? "pass" : "pin", "pin"] : ["503", "unavailable"];
    if (cookie === COOKIE.other && c.reject) return ["404", "reject"];
    return toward(cookie);
  };
  // Session ids with a routing token: the view's own record of the session outranks the token.
  if (c.token !== TOKEN.none && !recorded) {
    const t = (o: [string, string]): Outcome => [o[0], o[1], "token"];
    if (c.view !== VIEW.fresh || c.token === TOKEN.unverified) return t(toward(c.tokenCookie, "fail-open"));
    // A node the view does not list yet: pinned by the token, the client's cookie never repaired.
    if (c.token === TOKEN.unknownNode) return t([c.tokenCookie === COOKIE.owner ? "pass" : "pin", "unknown"]);
    if (c.token === TOKEN.newBoot) return t(toward(c.tokenCookie));
    if (c.token === TOKEN.dead) return t(["404", "lost"]);
    if (c.token === TOKEN.down) return t(byState(OWNER.down, c.tokenCookie));
    return t(byState(OWNER.up, c.tokenCookie));
  }
  const o = (r: [string, string]): Outcome => [r[0], r[1], "owner"];
  if (!usable) return o(["pass", "fail-open"]);
  if (c.view === VIEW.stale) {
    if (c.session === S.owner || c.session === S.learned) return o(toward(c.cookie, "fail-open"));
    return o(["pass", "fail-open"]);
  }
  if (c.session === S.unknown) return o(["pass", "unknown"]);
  if (c.session === S.closed) return o(["404", "lost"]);
  if (c.session === S.learned) return o(toward(c.cookie));
  return o(byState(c.owner, c.cookie));
}

let decide: (...a: number[]) => number;
beforeAll(async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync("plugin/build/core.wasm"), {});
  (instance.exports._start as () => void)();
  decide = instance.exports.decide as (...a: number[]) => number;
});

const run = (c: Case): Outcome => {
  const r = decide(
    c.id,
    c.view,
    c.session,
    c.owner,
    c.cookie,
    c.reject ? 1 : 0,
    c.passDown ? 1 : 0,
    c.token,
    c.tokenCookie,
  );
  return [ACTIONS[(r >> 4) & 15], REASONS[r & 15], TARGETS[r >> 8]];
};

function* allCases(): Generator<Case> {
  for (const id of Object.values(ID))
    for (const view of Object.values(VIEW))
      for (const session of Object.values(S))
        for (const owner of Object.values(OWNER))
          for (const cookie of Object.values(COOKIE))
            for (const reject of [false, true])
              for (const passDown of [false, true])
                for (const token of Object.values(TOKEN))
                  for (const tokenCookie of Object.values(COOKIE))
                    yield { id, view, session, owner, cookie, reject, passDown, token, tokenCookie };
}

describe("decideRoute (pure core)", () => {
  it("matches the decision table for every input combination", () => {
    let checked = 0;
    for (const c of allCases()) {
      expect(run(c), JSON.stringify(c)).toEqual(expected(c));
      checked++;
    }
    expect(checked).toBe(3 * 3 * 5 * 4 * 3 * 2 * 2 * 7 * 3);
  });

  it("never answers 404 or 503 from a stale or absent view, token or not (invariant 1)", () => {
    for (const c of allCases()) {
      if (c.view === VIEW.fresh) continue;
      expect(["404", "503"], JSON.stringify(c)).not.toContain(run(c)[0]);
    }
  });

  it("a token pins even when the view is stale or missing (fail open still routes)", () => {
    for (const view of [VIEW.stale, VIEW.absent])
      for (const token of [TOKEN.unverified, TOKEN.live, TOKEN.dead, TOKEN.unknownNode]) {
        const c = {
          id: ID.valid,
          view,
          session: S.unknown,
          owner: OWNER.up,
          cookie: COOKIE.none,
          reject: false,
          passDown: false,
          token,
          tokenCookie: COOKIE.none,
        };
        expect(run(c)).toEqual(["pin", "fail-open", "token"]);
      }
  });

  it("never refuses a request without a session id", () => {
    for (const c of allCases()) if (c.id === ID.none) expect(run(c)[0]).toBe("pass");
  });
});
