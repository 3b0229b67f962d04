// The decision core alone (plugin/assembly/core.ts, built to plugin/build/core.wasm without any
// host): every input combination against the table in docs/plugin.md, written out as data.
import { describe, it, expect, beforeAll } from "vitest";
import { readFileSync } from "node:fs";
import { DECISION_REASONS } from "../../lib/view/index.ts";

// The inputs of `decide` (plugin/test/core-entry.ts), in its argument order, each value by name
// with the number core.ts gives it.
const INPUTS = {
  id: { none: 0, valid: 1, invalid: 2, handle: 3 },
  cookieLines: { read: 0, unreadable: 1 },
  view: { fresh: 0, stale: 1, absent: 2 },
  session: { unusable: 0, owner: 1, closed: 2, learned: 3, unknown: 4 },
  owner: { up: 0, draining: 1, down: 2, gone: 3 },
  cookie: { none: 0, owner: 1, other: 2 },
  onMisroute: { pin: 0, reject: 1 },
  onOwnerDown: { unavailable: 0, pass: 1 },
  token: { none: 0, unverified: 1, live: 2, down: 3, dead: 4, newBoot: 5, unknownNode: 6 },
  tokenCookie: { none: 0, owner: 1, other: 2 },
  handleBody: { match: 0, mismatch: 1, unreadable: 2 },
} as const;
type Inputs = typeof INPUTS;
type Field = keyof Inputs;
type Case = { [K in Field]: keyof Inputs[K] };
/** A field left out matches any value; a list matches any of its values. */
type Pattern = { [K in Field]?: keyof Inputs[K] | readonly (keyof Inputs[K])[] };
type Outcome = readonly [action: string, reason: string, target: string];
const FIELDS = Object.keys(INPUTS) as Field[];

// The outputs, numbered as core.ts numbers them; the reasons are the event format's list (the same order on the wire).
const ACTIONS = ["pass", "pin", "pin+repair", "400", "404", "503", "431", "413"];
const REASONS = DECISION_REASONS;
const TARGETS = ["owner", "token"];

const LIVE = ["up", "draining"] as const;
const ANY_TOKEN = ["unverified", "live", "down", "dead", "newBoot", "unknownNode"] as const;
const NOT_FRESH = ["stale", "absent"] as const;

/**
 * The request-phase table of docs/plugin.md as an operator reads it, top down: the first row whose
 * pattern matches a request decides. `cookie` is the client's cookie relative to the owner the
 * record names, `tokenCookie` relative to the node the token names; the target is the node a pin
 * goes to (and whose Retry-After a 503 gives).
 */
const TABLE: readonly (readonly [Pattern, Outcome])[] = [
  // Nothing is looked up: no session id, an id that is not one, Cookie lines too large to read.
  [{ id: "none" }, ["pass", "sessionless", "owner"]],
  [{ id: "invalid" }, ["400", "invalid", "owner"]],
  [{ cookieLines: "unreadable" }, ["431", "invalid", "owner"]],

  // A handle's request (tasks/get, tasks/update, tasks/cancel whose Mcp-Name is a task handle, or a
  // retry whose requestState is one): only the handle's token, the view's freshness and the body
  // count. Never a repair or a reject.
  [{ id: "handle", token: "none" }, ["pass", "sessionless", "owner"]],
  [{ id: "handle", handleBody: "unreadable" }, ["413", "invalid", "token"]],
  [{ id: "handle", handleBody: "mismatch" }, ["400", "handle-mismatch", "token"]],
  [{ id: "handle", token: "unverified", tokenCookie: "owner" }, ["pass", "fail-open", "token"]],
  [{ id: "handle", token: "unverified" }, ["pin", "fail-open", "token"]],
  [{ id: "handle", view: NOT_FRESH, tokenCookie: "owner" }, ["pass", "fail-open", "token"]],
  [{ id: "handle", view: NOT_FRESH }, ["pin", "fail-open", "token"]],
  [{ id: "handle", token: "dead" }, ["404", "handle-lost", "token"]],
  [{ id: "handle", token: "down", onOwnerDown: "unavailable" }, ["503", "handle-unavailable", "token"]],
  [{ id: "handle", tokenCookie: "owner" }, ["pass", "handle", "token"]],
  [{ id: "handle" }, ["pin", "handle", "token"]],

  // The view holds a record of the session (a shard entry, live or closed): it decides, token or not.
  // A stale view never gives 404/503; a known owner is still pinned.
  [{ view: "stale", session: "owner", cookie: "owner" }, ["pass", "fail-open", "owner"]],
  [{ view: "stale", session: "owner", cookie: "none" }, ["pin", "fail-open", "owner"]],
  [{ view: "stale", session: "owner", cookie: "other" }, ["pin+repair", "fail-open", "owner"]],
  [{ view: "stale", session: "closed" }, ["pass", "fail-open", "owner"]],
  [{ view: "fresh", session: "closed" }, ["404", "lost", "owner"]],
  [{ view: "fresh", session: "owner", owner: "gone" }, ["404", "lost", "owner"]],
  [{ view: "fresh", session: "owner", owner: "down", onOwnerDown: "unavailable" }, ["503", "unavailable", "owner"]],
  [{ view: "fresh", session: "owner", owner: "down", onOwnerDown: "pass", cookie: "owner" }, ["pass", "pin", "owner"]],
  [
    { view: "fresh", session: "owner", owner: "down", onOwnerDown: "pass", cookie: ["none", "other"] },
    ["pin", "pin", "owner"],
  ],
  [{ view: "fresh", session: "owner", owner: LIVE, cookie: "owner" }, ["pass", "pass", "owner"]],
  [{ view: "fresh", session: "owner", owner: LIVE, cookie: "none" }, ["pin", "pin", "owner"]],
  [
    { view: "fresh", session: "owner", owner: LIVE, cookie: "other", onMisroute: "pin" },
    ["pin+repair", "repair", "owner"],
  ],
  [{ view: "fresh", session: "owner", owner: LIVE, cookie: "other", onMisroute: "reject" }, ["404", "reject", "owner"]],

  // No record, and the id carries a routing token: the token's node.
  // Not checked against a fresh view (no meta, or a stale or missing view): pinned all the same.
  [{ token: "unverified", tokenCookie: "owner" }, ["pass", "fail-open", "token"]],
  [{ token: "unverified", tokenCookie: "none" }, ["pin", "fail-open", "token"]],
  [{ token: "unverified", tokenCookie: "other" }, ["pin+repair", "fail-open", "token"]],
  [{ token: ANY_TOKEN, view: NOT_FRESH, tokenCookie: "owner" }, ["pass", "fail-open", "token"]],
  [{ token: ANY_TOKEN, view: NOT_FRESH, tokenCookie: "none" }, ["pin", "fail-open", "token"]],
  [{ token: ANY_TOKEN, view: NOT_FRESH, tokenCookie: "other" }, ["pin+repair", "fail-open", "token"]],
  // A node the fresh view does not list (yet): pinned, the client's cookie never repaired.
  [{ view: "fresh", token: "unknownNode", tokenCookie: "owner" }, ["pass", "unknown", "token"]],
  [{ view: "fresh", token: "unknownNode", tokenCookie: ["none", "other"] }, ["pin", "unknown", "token"]],
  // A listed node, a boot the view does not list: the node decides.
  [{ view: "fresh", token: "newBoot", tokenCookie: "owner" }, ["pass", "pass", "token"]],
  [{ view: "fresh", token: "newBoot", tokenCookie: "none" }, ["pin", "pin", "token"]],
  [{ view: "fresh", token: "newBoot", tokenCookie: "other" }, ["pin+repair", "repair", "token"]],
  [{ view: "fresh", token: "dead" }, ["404", "lost", "token"]],
  [{ view: "fresh", token: "down", onOwnerDown: "unavailable" }, ["503", "unavailable", "token"]],
  [{ view: "fresh", token: "down", onOwnerDown: "pass", tokenCookie: "owner" }, ["pass", "pin", "token"]],
  [{ view: "fresh", token: "down", onOwnerDown: "pass", tokenCookie: ["none", "other"] }, ["pin", "pin", "token"]],
  [{ view: "fresh", token: "live", tokenCookie: "owner" }, ["pass", "pass", "token"]],
  [{ view: "fresh", token: "live", tokenCookie: "none" }, ["pin", "pin", "token"]],
  [{ view: "fresh", token: "live", tokenCookie: "other", onMisroute: "pin" }, ["pin+repair", "repair", "token"]],
  [{ view: "fresh", token: "live", tokenCookie: "other", onMisroute: "reject" }, ["404", "reject", "token"]],

  // No record, no token.
  [{ token: "none", view: "absent" }, ["pass", "fail-open", "owner"]],
  [{ token: "none", session: "unusable" }, ["pass", "fail-open", "owner"]],
  [{ token: "none", view: "stale", session: "learned", cookie: "owner" }, ["pass", "fail-open", "owner"]],
  [{ token: "none", view: "stale", session: "learned", cookie: "none" }, ["pin", "fail-open", "owner"]],
  [{ token: "none", view: "stale", session: "learned", cookie: "other" }, ["pin+repair", "fail-open", "owner"]],
  [{ token: "none", view: "stale", session: "unknown" }, ["pass", "fail-open", "owner"]],
  [{ token: "none", view: "fresh", session: "unknown" }, ["pass", "unknown", "owner"]],
  // Learned at this edge: owner known, liveness not, so never refused (no reject either).
  [{ token: "none", view: "fresh", session: "learned", cookie: "owner" }, ["pass", "pass", "owner"]],
  [{ token: "none", view: "fresh", session: "learned", cookie: "none" }, ["pin", "pin", "owner"]],
  [{ token: "none", view: "fresh", session: "learned", cookie: "other" }, ["pin+repair", "repair", "owner"]],
];

function matches(p: Pattern, c: Case): boolean {
  return FIELDS.every((f) => {
    const want = p[f] as string | readonly string[] | undefined;
    if (want === undefined) return true;
    return typeof want === "string" ? want === c[f] : want.includes(c[f]);
  });
}

/** The index of the table row that decides `c`. */
function rowFor(c: Case): number {
  const i = TABLE.findIndex(([p]) => matches(p, c));
  if (i < 0) throw new Error(`no row of the table decides ${JSON.stringify(c)}`);
  return i;
}

let decide: (...a: number[]) => number;
beforeAll(async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync("plugin/build/core.wasm"), {});
  (instance.exports._start as () => void)();
  decide = instance.exports.decide as (...a: number[]) => number;
});

const run = (c: Case): Outcome => {
  const r = decide(...FIELDS.map((f) => (INPUTS[f] as Record<string, number>)[c[f]]!));
  return [ACTIONS[(r >> 4) & 15]!, REASONS[r & 15]!, TARGETS[r >> 8]!];
};

function* allCases(): Generator<Case> {
  function* from(i: number, partial: Partial<Case>): Generator<Case> {
    if (i === FIELDS.length) {
      yield partial as Case;
      return;
    }
    const f = FIELDS[i]!;
    for (const v of Object.keys(INPUTS[f])) yield* from(i + 1, { ...partial, [f]: v });
  }
  yield* from(0, {});
}
const CASE_COUNT = FIELDS.reduce((n, f) => n * Object.keys(INPUTS[f]).length, 1);

/**
 * The cases for which `wrong` says something (true, or what was expected), with the core's outcome:
 * at most a few, enough to read a failure.
 */
function casesWhere(wrong: (c: Case, outcome: Outcome) => boolean | string): string[] {
  const found: string[] = [];
  for (const c of allCases()) {
    const outcome = run(c);
    const w = wrong(c, outcome);
    if (w === false) continue;
    const note = w === true ? "" : ` (${w})`;
    if (found.push(`${JSON.stringify(c)} -> ${outcome.join(" ")}${note}`) >= 5) break;
  }
  return found;
}

describe("decideRoute (pure core)", () => {
  it("gives the table's outcome for every input combination, and every row of the table decides some", () => {
    const used = new Set<number>();
    let checked = 0;
    const wrong = casesWhere((c, outcome) => {
      checked++;
      const row = rowFor(c);
      used.add(row);
      const want = TABLE[row]![1];
      return outcome.some((v, i) => v !== want[i]) && `row ${row}: ${want.join(" ")}`;
    });
    expect(wrong).toEqual([]);
    expect(checked).toBe(CASE_COUNT);
    expect(CASE_COUNT).toBe(4 * 2 * 3 * 5 * 4 * 3 * 2 * 2 * 7 * 3 * 3);
    // A row that decides nothing is hidden by the rows above it: the table would say more than it does.
    expect(TABLE.map((_, i) => i).filter((i) => !used.has(i))).toEqual([]);
  });

  it("never answers 404 or 503 from a stale or absent view, token or not (invariant 1)", () => {
    expect(casesWhere((c, [action]) => c.view !== "fresh" && (action === "404" || action === "503"))).toEqual([]);
  });

  it("a token pins even when the view is stale or missing (fail open still routes)", () => {
    for (const view of NOT_FRESH)
      for (const token of ["unverified", "live", "dead", "unknownNode"] as const) {
        const c: Case = {
          id: "valid",
          cookieLines: "read",
          view,
          session: "unknown",
          owner: "up",
          cookie: "none",
          onMisroute: "pin",
          onOwnerDown: "unavailable",
          token,
          tokenCookie: "none",
          handleBody: "match",
        };
        expect(run(c)).toEqual(["pin", "fail-open", "token"]);
      }
  });

  it("never refuses a request without a session id", () => {
    expect(casesWhere((c, [action]) => c.id === "none" && action !== "pass")).toEqual([]);
  });

  it("answers 400, 413 and 431 only for what it could not read or what contradicts itself", () => {
    const unreadable = (c: Case) => (c.id === "valid" || c.id === "handle") && c.cookieLines === "unreadable";
    const handle = (c: Case) => c.id === "handle" && c.cookieLines === "read" && c.token !== "none";
    const contradicts = (c: Case) => handle(c) && c.handleBody === "mismatch";
    expect(casesWhere((c, [action]) => (action === "400") !== (c.id === "invalid" || contradicts(c)))).toEqual([]);
    expect(casesWhere((c, [action]) => (action === "431") !== unreadable(c))).toEqual([]);
    expect(casesWhere((c, [action]) => (action === "413") !== (handle(c) && c.handleBody === "unreadable"))).toEqual(
      [],
    );
  });

  it("never repairs a cookie or rejects for a handle, and gives handle requests reasons of their own", () => {
    const handleReasons = [
      "handle",
      "handle-lost",
      "handle-unavailable",
      "handle-mismatch",
      "fail-open",
      "invalid",
      "sessionless",
    ];
    expect(
      casesWhere((c, [action, reason]) => c.id === "handle" && (action === "pin+repair" || reason === "reject")),
    ).toEqual([]);
    expect(casesWhere((c, [, reason]) => c.id === "handle" && !handleReasons.includes(reason))).toEqual([]);
    expect(casesWhere((c, [, reason]) => c.id !== "handle" && reason.startsWith("handle"))).toEqual([]);
  });
});
