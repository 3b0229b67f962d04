// The decision core alone (plugin/assembly/core.ts, built to plugin/build/core.wasm without any
// host): every input combination against the table in docs/plugin.md, written out independently.
import { describe, it, expect, beforeAll } from "vitest";
import { readFileSync } from "node:fs";

const ID = { none: 0, valid: 1, invalid: 2 } as const;
const VIEW = { fresh: 0, stale: 1, absent: 2 } as const;
const S = { unusable: 0, owner: 1, closed: 2, learned: 3, unknown: 4 } as const;
const OWNER = { up: 0, draining: 1, down: 2, gone: 3 } as const;
const COOKIE = { none: 0, owner: 1, other: 2 } as const;
const ACTIONS = ["pass", "pin", "pin+repair", "400", "404", "503"];
const REASONS = ["sessionless", "pass", "pin", "repair", "reject", "lost", "unavailable", "unknown", "invalid", "fail-open"];

type Case = { id: number; view: number; session: number; owner: number; cookie: number; reject: boolean; passDown: boolean };

/** The table, as an operator reads it. Returns [action, reason]. */
function expected(c: Case): [string, string] {
  if (c.id === ID.none) return ["pass", "sessionless"];
  if (c.id === ID.invalid) return ["400", "invalid"];
  if (c.view === VIEW.absent || c.session === S.unusable) return ["pass", "fail-open"];
  const toward = (): [string, string] =>
    c.cookie === COOKIE.owner ? ["pass", "pass"] : c.cookie === COOKIE.none ? ["pin", "pin"] : ["pin+repair", "repair"];
  if (c.view === VIEW.stale) {
    if (c.session === S.owner || c.session === S.learned) return [toward()[0], "fail-open"];
    return ["pass", "fail-open"];
  }
  if (c.session === S.unknown) return ["pass", "unknown"];
  if (c.session === S.closed) return ["404", "lost"];
  if (c.session === S.learned) return toward();
  if (c.owner === OWNER.gone) return ["404", "lost"];
  if (c.owner === OWNER.down) {
    if (!c.passDown) return ["503", "unavailable"];
    return [c.cookie === COOKIE.owner ? "pass" : "pin", "pin"];
  }
  if (c.cookie === COOKIE.other && c.reject) return ["404", "reject"];
  return toward();
}

let decide: (...a: number[]) => number;
beforeAll(async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync("plugin/build/core.wasm"), {});
  decide = instance.exports.decide as (...a: number[]) => number;
});

describe("decideRoute (pure core)", () => {
  it("matches the decision table for every input combination", () => {
    let checked = 0;
    for (const id of Object.values(ID))
      for (const view of Object.values(VIEW))
        for (const session of Object.values(S))
          for (const owner of Object.values(OWNER))
            for (const cookie of Object.values(COOKIE))
              for (const reject of [false, true])
                for (const passDown of [false, true]) {
                  const c = { id, view, session, owner, cookie, reject, passDown };
                  const r = decide(id, view, session, owner, cookie, reject ? 1 : 0, passDown ? 1 : 0);
                  const got: [string, string] = [ACTIONS[r >> 4], REASONS[r & 15]];
                  expect(got, JSON.stringify(c)).toEqual(expected(c));
                  checked++;
                }
    expect(checked).toBe(3 * 3 * 5 * 4 * 3 * 2 * 2);
  });

  it("never answers 404 or 503 from a stale or absent view (invariant 1)", () => {
    for (const view of [VIEW.stale, VIEW.absent])
      for (const session of Object.values(S))
        for (const owner of Object.values(OWNER)) {
          const action = ACTIONS[decide(ID.valid, view, session, owner, COOKIE.none, 1, 0) >> 4];
          expect(["404", "503"]).not.toContain(action);
        }
  });

  it("never refuses a request without a session id", () => {
    for (const view of Object.values(VIEW))
      for (const session of Object.values(S)) expect(decide(ID.none, view, session, OWNER.gone, COOKIE.other, 1, 0) >> 4).toBe(0);
  });
});
