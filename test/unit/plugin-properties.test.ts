// Property tests (fast-check) over random session ids and Cookie headers against a model of the
// decision table in docs/plugin.md, and the plugin's SHA-256 against node:crypto.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import fc from "fast-check";
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { viewPaths } from "../../lib/view/index.ts";
import { utf8ToBytes, type Exchange, type HostRequestInit } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  INIT_BODY,
  initializeUpstream,
  learnedFiles,
  makeViewDir,
  newPlugin,
  okUpstream,
  publish,
  readEvents,
  republishMeta,
  type PluginHandle,
  type TempDir,
  CLUSTER_VIEW,
  GONE_COOKIE,
} from "../support/plugin-fixture.ts";

const NAME = "_mcp_backend";
const SPEC = CLUSTER_VIEW;
const hash16 = (id: string) => createHash("sha256").update(id, "latin1").digest().subarray(0, 16).toString("hex");

// ------------------------------------------------------------------ the model (docs/plugin.md)

type Outcome =
  | { kind: "untouched"; reason: string }
  | { kind: "pin"; owner: string; repair: boolean; reason: string }
  | { kind: "answer"; status: number; affinity: string; reason: string };

/** Cookie pairs as the plugin sees them: split on ';' (and between lines), trimmed of space/tab. */
function pairs(lines: string[]): string[] {
  const out: string[] = [];
  for (const line of lines)
    for (const raw of line.split(";")) {
      const p = raw.replace(/^[ \t]+|[ \t]+$/g, "");
      if (p) out.push(p);
    }
  return out;
}
const pairName = (p: string) => (p.includes("=") ? p.slice(0, p.indexOf("=")) : p);
function firstCookie(lines: string[]): string | undefined {
  for (const p of pairs(lines)) {
    if (!p.includes("=") || pairName(p) !== NAME) continue;
    let v = p.slice(p.indexOf("=") + 1);
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    // An empty value names no node: Traefik picks a server as for no cookie.
    return v === "" ? undefined : v;
  }
  return undefined;
}
function pinnedCookie(lines: string[], owner: string): string {
  // eslint-disable-next-line no-control-regex
  const rest = pairs(lines).filter((p) => pairName(p) !== NAME && !/[\x00-\x08\x0a-\x1f\x7f]/.test(p));
  return [`${NAME}=${owner}`, ...rest].join("; ");
}

function model(ids: string[], cookieLines: string[], stale: boolean): Outcome {
  if (ids.length === 0 || (ids.length === 1 && ids[0] === "")) return { kind: "untouched", reason: "sessionless" };
  const id = ids[0]!;
  if (ids.length > 1 || id.length > 256 || !/^[\x21-\x7e]+$/.test(id))
    return { kind: "answer", status: 400, affinity: "invalid", reason: "invalid" };
  // Bounded read: Cookie lines beyond maxCookieBytes (default 4096, a NUL after each line) are not read.
  if (cookieLines.reduce((n, l) => n + l.length + 1, 0) > 4096)
    return { kind: "answer", status: 431, affinity: "invalid", reason: "invalid" };
  const s = SPEC.sessions.find((x) => x.id === id);
  if (!s) return { kind: "untouched", reason: stale ? "fail-open" : "unknown" };
  const node = SPEC.nodes.find((n) => n.id === s.node)!;
  const cookie = firstCookie(cookieLines);
  const toOwner = (reason: string, repair: boolean): Outcome =>
    cookie === node.cookie
      ? { kind: "untouched", reason }
      : { kind: "pin", owner: node.cookie, repair: repair && cookie !== undefined, reason };
  if (stale) {
    if (s.closed) return { kind: "untouched", reason: "fail-open" };
    return toOwner("fail-open", true);
  }
  if (s.closed || node.state === "gone") return { kind: "answer", status: 404, affinity: "lost", reason: "lost" };
  if (node.state === "down") return { kind: "answer", status: 503, affinity: "unavailable", reason: "unavailable" };
  if (cookie === node.cookie) return { kind: "untouched", reason: "pass" };
  return cookie === undefined
    ? { kind: "pin", owner: node.cookie, repair: false, reason: "pin" }
    : { kind: "pin", owner: node.cookie, repair: true, reason: "repair" };
}

// ------------------------------------------------------------------ generators

const visible = fc.string({
  unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: 300,
});
// Anything but NUL (no HTTP host delivers a NUL inside a header value).
const anyText = fc.string({ unit: "binary", maxLength: 40 }).map((s) => s.replace(/\0/g, ""));
const idArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SPEC.sessions.map((s) => s.id)) },
  { weight: 2, arbitrary: visible },
  { weight: 2, arbitrary: anyText },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "",
      " ",
      "s-up ",
      "s-up\r\nX-Injected: 1",
      "s\u00e9",
      "x".repeat(256),
      "x".repeat(257),
      "y".repeat(5000),
    ),
  },
);
const idsArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant<string[]>([]) },
  { weight: 6, arbitrary: idArb.map((x) => [x]) },
  { weight: 1, arbitrary: fc.tuple(idArb, idArb).map(([a, b]) => [a, b]) },
  { weight: 1, arbitrary: fc.constantFrom("s-up", "s-gone").map((x) => [x, x]) },
);
const backendValue = fc.constantFrom(
  COOKIE.a,
  COOKIE.b,
  COOKIE.c,
  COOKIE.d,
  GONE_COOKIE,
  "",
  "zz",
  `"${COOKIE.a}"`,
  `"${COOKIE.b}"`,
  `${COOKIE.a}\r\n`,
  COOKIE.a.toUpperCase(),
);
const pairArb = fc.oneof(
  { weight: 4, arbitrary: backendValue.map((v) => `${NAME}=${v}`) },
  {
    weight: 3,
    arbitrary: fc.tuple(fc.constantFrom("theme", "sid", "a", "lang", "_ga", "x"), anyText).map(([k, v]) => `${k}=${v}`),
  },
  { weight: 2, arbitrary: anyText },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'q="a;b"',
      'quoted="v"',
      "big=" + "v".repeat(20_000),
      "ключ=значение",
      "inj=1\r\nSet-Cookie: evil=1",
      "tab=\tx",
      "=novalue",
      "noequals",
      `${NAME}`,
      `${NAME}==${COOKIE.a}`,
      ` ${NAME}=${COOKIE.a}`,
    ),
  },
);
const lineArb = fc
  .tuple(fc.array(pairArb, { maxLength: 6 }), fc.constantFrom("; ", ";", " ;  ", ";\t"))
  .map(([ps, sep]) => ps.join(sep));
const cookiesArb = fc.array(lineArb, { maxLength: 4 });
const methodArb = fc.constantFrom("POST", "GET", "DELETE");

function request(ids: string[], cookies: string[], method: string): HostRequestInit {
  const headers: [string, string][] = [["Accept", "application/json, text/event-stream"]];
  for (const id of ids) headers.push(["Mcp-Session-Id", id]);
  for (const c of cookies) headers.push(["Cookie", c]);
  return {
    method,
    uri: "/mcp",
    host: "edge.test",
    headers,
    body: method === "POST" ? '{"jsonrpc":"2.0","id":1,"method":"ping"}' : undefined,
  };
}

function check(ex: Exchange, want: Outcome, ids: string[], cookies: string[], method = "GET"): void {
  expect(ex.trap).toBeUndefined();
  expect(ex.responseTrap).toBeUndefined();
  expect(ex.violations).toEqual([]);
  for (const w of ex.headerWrites) expect(w.value).not.toMatch(/[\r\n]/);
  if (want.kind !== "answer" || want.status !== 503) expect(ex.response.status).toBeLessThan(500);
  const bytesCookies = cookies.map(utf8ToBytes);
  switch (want.kind) {
    case "untouched":
      expect(ex.nextCalled).toBe(true);
      expect(ex.headerWrites).toEqual([]);
      expect(ex.forwarded!.cookies).toEqual(bytesCookies);
      expect(ex.forwarded!.headers.values("Mcp-Session-Id")).toEqual(ids.map(utf8ToBytes));
      break;
    case "pin": {
      expect(ex.nextCalled).toBe(true);
      expect(ex.forwarded!.cookies).toEqual([pinnedCookie(bytesCookies, want.owner)]);
      const sc = ex.response.headers.values("Set-Cookie");
      if (want.repair) expect(sc.map((v) => v.split(";")[0])).toEqual([`${NAME}=${want.owner}`]);
      else expect(sc).toEqual([]);
      expect(ex.response.header("Mcp-Affinity")).toBeUndefined();
      break;
    }
    case "answer": {
      expect(ex.nextCalled).toBe(false);
      expect(ex.response.status).toBe(want.status);
      expect(ex.response.headers.values("Mcp-Affinity")).toEqual([want.affinity]);
      expect(ex.response.headers.values("Content-Type")).toEqual(["application/json"]);
      const body = ex.response.json();
      // Only the 503 names the request (the POST body's id 1); the 404 and 400 stay "id": null.
      expect(body.id).toBe(want.status === 503 && method === "POST" ? 1 : null);
      expect(body.jsonrpc).toBe("2.0");
      expect(body.error.code).not.toBe(-32601);
      break;
    }
  }
}

let fresh: TempDir;
let stale: TempDir;
let pf: PluginHandle;
let ps: PluginHandle;
beforeAll(async () => {
  fresh = makeViewDir();
  stale = makeViewDir();
  await publish(fresh.dir, SPEC);
  await publish(stale.dir, { ...SPEC, published: Date.now() - 60_000 });
  // Long staleness limit for the fresh view: the property run must not age it.
  pf = newPlugin({ dir: fresh.dir, config: { staleAfterMs: 3_600_000 }, instances: 2 });
  ps = newPlugin({ dir: stale.dir, config: { staleAfterMs: 5000 }, instances: 2 });
});
afterAll(() => {
  fresh.cleanup();
  stale.cleanup();
});

describe("random session ids and Cookie headers", () => {
  test("fresh view: no trap, no 5xx but the table's 503, only the outcome the table gives, no CR/LF written", () => {
    let n = 0;
    fc.assert(
      fc.property(idsArb, cookiesArb, methodArb, (ids, cookies, method) => {
        const ex = pf.handle(request(ids, cookies, method), okUpstream, n++ % 2);
        check(ex, model(ids.map(utf8ToBytes), cookies.map(utf8ToBytes), false), ids, cookies, method);
      }),
      { numRuns: 600 },
    );
  });

  test("stale view: never 404 or 503 whatever the input", () => {
    let n = 0;
    fc.assert(
      fc.property(idsArb, cookiesArb, methodArb, (ids, cookies, method) => {
        const ex = ps.handle(request(ids, cookies, method), okUpstream, n++ % 2);
        const want = model(ids.map(utf8ToBytes), cookies.map(utf8ToBytes), true);
        check(ex, want, ids, cookies, method);
        expect([404, 503]).not.toContain(ex.response.status);
      }),
      { numRuns: 300 },
    );
  });

  test("decision reasons match the model (counted in d lines)", async () => {
    const t = makeViewDir();
    try {
      await publish(t.dir, SPEC);
      const p = newPlugin({ dir: t.dir, config: { staleAfterMs: 3_600_000 } });
      const want: Record<string, number> = {};
      fc.assert(
        fc.property(idsArb, cookiesArb, (ids, cookies) => {
          const r = model(ids.map(utf8ToBytes), cookies.map(utf8ToBytes), false).reason;
          want[r] = (want[r] ?? 0) + 1;
          p.handle(request(ids, cookies, "POST"), okUpstream);
        }),
        { numRuns: 300 },
      );
      p.clock.advance(120_000);
      await republishMeta(t.dir, { ...SPEC, published: p.clock.nowMs() });
      p.handle({ method: "GET", uri: "/mcp" });
      want.sessionless = (want.sessionless ?? 0) + 1;
      expect(readEvents(t.dir).all.decisions).toEqual(want);
    } finally {
      t.cleanup();
    }
  });
});

describe("SHA-256 in the plugin vs node:crypto", () => {
  test("learned/<hash> names, l and c events carry SHA-256(id)[0..16) for random ids of every length", () => {
    const t = makeViewDir();
    try {
      const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir, instances: 1 });
      const lengths = fc.oneof(
        visible,
        fc.constantFrom(1, 31, 32, 33, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 256).chain((len) =>
          fc.string({
            unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
            minLength: len,
            maxLength: len,
          }),
        ),
      );
      fc.assert(
        fc.property(lengths, (id) => {
          rmSync(viewPaths(t.dir).learned, { recursive: true, force: true });
          rmSync(viewPaths(t.dir).events, { recursive: true, force: true });
          p.handle(
            { method: "POST", uri: "/mcp", headers: [["Content-Type", "application/json"]], body: INIT_BODY },
            initializeUpstream(id, { setCookie: `${NAME}=${COOKIE.a}; Path=/` }),
          );
          const want = hash16(id);
          expect([...learnedFiles(t.dir).keys()]).toEqual([want]);
          p.handle({ method: "DELETE", uri: "/mcp", headers: [["Mcp-Session-Id", id]] }, () => ({ status: 200 }));
          const { all } = readEvents(t.dir);
          expect(all.learned.map((l) => [l.id, l.hash])).toEqual([[id, want]]);
          expect(all.closed.map((c) => [c.id, c.hash])).toEqual([[id, want]]);
        }),
        { numRuns: 200 },
      );
    } finally {
      t.cleanup();
    }
  });

  test("known vectors", () => {
    expect(hash16("abc")).toBe("ba7816bf8f01cfea414140de5dae2223");
    const t = makeViewDir();
    try {
      const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
      for (const id of ["abc", "a".repeat(55), "a".repeat(64), "x".repeat(256)]) {
        p.handle(
          { method: "POST", uri: "/mcp", headers: [["Content-Type", "application/json"]], body: INIT_BODY },
          initializeUpstream(id),
        );
        expect(learnedFiles(t.dir).has(hash16(id)), `len ${id.length}`).toBe(true);
      }
    } finally {
      t.cleanup();
    }
  });
});
