// Plugin settings (docs/plugin.md): every setting in string form (file provider, labels) and typed
// form (Kubernetes CRD), bad values and unknown keys (one error line naming it, then fail open).
import { describe, expect, test } from "vitest";
import { rmSync } from "node:fs";
import { SESSION_ID_MAX_LENGTH } from "../../lib/registry/schema.ts";
import { viewPaths } from "../../lib/view/index.ts";
import type { Exchange } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  INIT_BODY,
  forwardedBackends,
  initializeUpstream,
  learnedFiles,
  mcp,
  newPlugin,
  okUpstream,
  republishMeta,
  CLUSTER_VIEW,
  bk,
  learnedNames,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

const SPEC = CLUSTER_VIEW;

const t = useView(SPEC);

const plugin = (config: Record<string, unknown> | string, extra: Parameters<typeof newPlugin>[0] = {}) =>
  newPlugin({ dir: t.dir, config, ...extra });
const errors = (p: ReturnType<typeof newPlugin>) => p.pool.logs.filter((l) => l.level === 2);
function setCookie(ex: Exchange): { pair: string; attrs: string[] } {
  const v = ex.response.headers.values("Set-Cookie");
  expect(v).toHaveLength(1);
  const [pair, ...attrs] = v[0]!.split(";").map((s) => s.trim());
  return { pair: pair!, attrs: attrs.sort() };
}

describe("defaults", () => {
  test("no config at all (get_config returns nothing): defaults apply, no error", () => {
    const p = newPlugin({ dir: t.dir, host: { config: undefined } });
    const ex = p.handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream);
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    expect(setCookie(ex)).toEqual({ pair: bk(COOKIE.a), attrs: ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"] });
    expect(p.handle(mcp({ sessionId: "s-down" })).response.headers.values("Retry-After")).toEqual(["5"]);
    expect(p.handle(mcp({ sessionId: "x".repeat(257) })).response.status).toBe(400);
    expect(p.pool.logs).toEqual([]);
  });

  test("every setting given explicitly, all as strings, then all typed: accepted without an error", () => {
    const strings = {
      viewDir: "/var/run/mcp-affinity",
      cookieName: "_mcp_backend",
      cookiePath: "/",
      cookieSecure: "true",
      cookieHttpOnly: "true",
      cookieSameSite: "Strict",
      onMisroute: "pin",
      onOwnerDown: "unavailable",
      retryAfterSeconds: "5",
      staleAfterMs: "5000",
      viewRefreshMs: "100",
      maxSessionIdLength: "256",
      learnSessions: "true",
      maxInitializeBodyBytes: "65536",
      maxBufferedBodyBytes: "65536",
      maxCookieBytes: "4096",
      eventFlushMs: "1000",
      maxEventFiles: "4096",
      maxSessionEventFiles: "4096",
      maxLearnedFiles: "4096",
      logLevel: "info",
    };
    const typed = Object.fromEntries(
      Object.entries(strings).map(([k, v]) => [k, v === "true" ? true : /^[0-9]+$/.test(v) ? Number(v) : v]),
    );
    for (const cfg of [strings, typed]) {
      const p = plugin(cfg);
      expect(p.handle(mcp({ sessionId: "s-gone" })).response.status).toBe(404);
      expect(p.handle(mcp({ sessionId: "s-up" }), okUpstream).forwarded!.cookies).toEqual([bk(COOKIE.a)]);
      expect(p.pool.logs).toEqual([]);
    }
  });
});

describe("each setting, string and typed", () => {
  test("viewDir: another mount point", () => {
    const p = newPlugin({ config: { viewDir: "/data/alt" }, host: { mounts: { "/data/alt": t.dir } } });
    expect(p.handle(mcp({ sessionId: "s-gone" })).response.status).toBe(404);
    expect(p.pool.logs).toEqual([]);
  });

  test("viewDir not among the mounts: one error line naming viewDir, then fail open", () => {
    const p = newPlugin({ config: {} });
    for (let i = 0; i < 3; i++) {
      const ex = p.handle(mcp({ sessionId: "s-gone" }), okUpstream);
      expect(ex.nextCalled).toBe(true);
      expect(ex.headerWrites).toEqual([]);
    }
    expect(errors(p)).toHaveLength(1);
    expect(errors(p)[0]!.message).toContain("viewDir");
  });

  test("cookieName: the pinned and repaired cookie uses it; _mcp_backend is then just another cookie", () => {
    const p = plugin({ cookieName: "SERVERID" });
    let ex = p.handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream);
    expect(ex.forwarded!.cookies).toEqual([`SERVERID=${COOKIE.a}; ${bk(COOKIE.b)}`]);
    ex = p.handle(mcp({ sessionId: "s-up", cookie: `SERVERID=${COOKIE.b}` }), okUpstream);
    expect(ex.forwarded!.cookies).toEqual([`SERVERID=${COOKIE.a}`]);
    expect(setCookie(ex).pair).toBe(`SERVERID=${COOKIE.a}`);
    ex = p.handle(mcp({ sessionId: "s-up", cookie: `SERVERID=${COOKIE.a}` }), okUpstream);
    expect(ex.headerWrites).toEqual([]);
  });

  test.each([
    [{ cookiePath: "/mcp" }, ["HttpOnly", "Path=/mcp", "SameSite=Strict", "Secure"]],
    [{ cookieSecure: "false" }, ["HttpOnly", "Path=/", "SameSite=Strict"]],
    [{ cookieSecure: false }, ["HttpOnly", "Path=/", "SameSite=Strict"]],
    [{ cookieHttpOnly: "false" }, ["Path=/", "SameSite=Strict", "Secure"]],
    [{ cookieHttpOnly: false }, ["Path=/", "SameSite=Strict", "Secure"]],
    [{ cookieSecure: true, cookieHttpOnly: "true" }, ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"]],
    [{ cookieSameSite: "Lax" }, ["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]],
    [{ cookieSameSite: "None" }, ["HttpOnly", "Path=/", "SameSite=None", "Secure"]],
    [{ cookieSameSite: "" }, ["HttpOnly", "Path=/", "Secure"]],
  ])("repair Set-Cookie attributes %o", (cfg, attrs) => {
    const p = plugin(cfg);
    const ex = p.handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream);
    expect(setCookie(ex)).toEqual({ pair: bk(COOKIE.a), attrs });
    expect(p.pool.logs).toEqual([]);
  });

  test("onMisroute: pin / reject", () => {
    expect(
      plugin({ onMisroute: "pin" }).handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream).nextCalled,
    ).toBe(true);
    const ex = plugin({ onMisroute: "reject" }).handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream);
    expect(ex.response.status).toBe(404);
    expect(ex.response.header("Mcp-Affinity")).toBe("reject");
  });

  test("onOwnerDown: unavailable / pass", () => {
    expect(plugin({ onOwnerDown: "unavailable" }).handle(mcp({ sessionId: "s-down" })).response.status).toBe(503);
    const ex = plugin({ onOwnerDown: "pass" }).handle(mcp({ sessionId: "s-down" }), okUpstream);
    expect(ex.nextCalled).toBe(true);
    expect(forwardedBackends(ex)).toEqual([COOKIE.c]);
  });

  test.each([17, "17", 1, "3600"])("retryAfterSeconds=%o", (v) => {
    const ex = plugin({ retryAfterSeconds: v }).handle(mcp({ sessionId: "s-down" }));
    expect(ex.response.headers.values("Retry-After")).toEqual([String(v)]);
  });

  test.each([0, "0"])("viewRefreshMs=%o: a meta change is seen by the very next request", async (v) => {
    const p = plugin({ viewRefreshMs: v });
    expect(p.handle(mcp({ sessionId: "s-up" }), okUpstream).nextCalled).toBe(true);
    await republishMeta(t.dir, {
      ...SPEC,
      nodes: SPEC.nodes.map((n) => (n.id === 1 ? { ...n, state: "gone" as const } : n)),
    });
    expect(p.handle(mcp({ sessionId: "s-up" })).response.status).toBe(404);
  });

  test.each([10000, "10000"])("viewRefreshMs=%o: the instance reuses the meta it read until then", async (v) => {
    const p = plugin({ viewRefreshMs: v });
    expect(p.handle(mcp({ sessionId: "s-up" }), okUpstream).nextCalled).toBe(true);
    await republishMeta(t.dir, {
      ...SPEC,
      nodes: SPEC.nodes.map((n) => (n.id === 1 ? { ...n, state: "gone" as const } : n)),
    });
    expect(p.handle(mcp({ sessionId: "s-up" }), okUpstream).nextCalled).toBe(true);
    p.clock.advance(10_001);
    await republishMeta(t.dir, {
      ...SPEC,
      published: p.clock.nowMs(),
      nodes: SPEC.nodes.map((n) => (n.id === 1 ? { ...n, state: "gone" as const } : n)),
    });
    expect(p.handle(mcp({ sessionId: "s-up" })).response.status).toBe(404);
  });

  test.each([16, "16"])("maxSessionIdLength=%o", (v) => {
    const p = plugin({ maxSessionIdLength: v });
    expect(p.handle(mcp({ sessionId: "z".repeat(17) })).response.status).toBe(400);
    expect(p.handle(mcp({ sessionId: "z".repeat(16) }), okUpstream).nextCalled).toBe(true);
  });

  test.each([SESSION_ID_MAX_LENGTH, String(SESSION_ID_MAX_LENGTH)])(
    "maxSessionIdLength=%o (the session-id rule's maximum) admits ids up to it",
    (v) => {
      const p = plugin({ maxSessionIdLength: v });
      expect(p.handle(mcp({ sessionId: "z".repeat(SESSION_ID_MAX_LENGTH) }), okUpstream).nextCalled).toBe(true);
      expect(p.handle(mcp({ sessionId: "z".repeat(SESSION_ID_MAX_LENGTH + 1) })).response.status).toBe(400);
    },
  );

  test.each([256, "256"])(
    "maxCookieBytes=%o: Cookie lines beyond it get 431 on a session request, untouched without a session",
    (v) => {
      const p = plugin({ maxCookieBytes: v });
      const big = "x=" + "y".repeat(300);
      const ex = p.handle(mcp({ sessionId: "s-up", cookie: big }));
      expect(ex.response.status).toBe(431);
      expect(ex.response.json()).toEqual({
        jsonrpc: "2.0",
        error: { code: -32600, message: "Cookie header too large" },
        id: null,
      });
      expect(
        p.handle(mcp({ sessionId: "s-up", cookie: "x=" + "y".repeat(200) }), okUpstream).forwarded!.cookies[0],
      ).toMatch(/^_mcp_backend=/);
      expect(p.handle(mcp({ method: "GET", cookie: big }), okUpstream).headerWrites).toEqual([]);
    },
  );

  test.each([16, "256", 65536])("maxLearnedFiles=%o names learned/ files by that many hash prefixes", (v) => {
    rmSync(viewPaths(t.dir).learned, { recursive: true, force: true });
    const p = plugin({ maxLearnedFiles: v });
    for (let i = 0; i < 40; i++) p.handle(mcp({ body: INIT_BODY }), initializeUpstream(`lf-${i}`));
    const digits = Math.log2(Number(v)) / 4;
    const names = learnedNames(t.dir);
    for (const n of names) expect(n).toMatch(new RegExp(`^[0-9a-f]{${digits}}$`));
    expect(names.length).toBeLessThanOrEqual(Number(v));
    // The newest session of each prefix is the one kept.
    const kept = learnedFiles(t.dir);
    expect(kept.size).toBe(names.length);
    rmSync(viewPaths(t.dir).learned, { recursive: true, force: true });
  });

  test.each(["debug"])("logLevel=%s lets debug lines through (Traefik's logger enables every level)", (v) => {
    const p = plugin({ logLevel: v });
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("no-cookie", { setCookie: null }));
    expect(p.pool.logs.filter((l) => l.level === -1).length).toBeGreaterThan(0);
  });

  test.each(["info", "warn", "error", "none"])("logLevel=%s keeps debug lines out", (v) => {
    const p = plugin({ logLevel: v });
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("no-cookie", { setCookie: null }));
    expect(p.pool.logs.filter((l) => l.level === -1)).toEqual([]);
  });

  test("logLevel=none silences errors too (viewDir not mounted)", () => {
    const p = newPlugin({ config: { logLevel: "none" } });
    p.handle(mcp({ sessionId: "s-gone" }), okUpstream);
    expect(p.pool.logs).toEqual([]);
  });
});

describe("bad settings: one error line naming the setting, then fail open", () => {
  const bad: [string, unknown][] = [
    ["viewDir", "relative/dir"],
    ["viewDir", ""],
    ["viewDir", 5],
    ["cookieName", ""],
    ["cookieName", "a b"],
    ["cookieName", "a;b"],
    ["cookieName", "bäck"],
    ["cookiePath", ""],
    ["cookiePath", "mcp"],
    ["cookiePath", "/a;b"],
    ["cookiePath", "/a\nb"],
    ["cookieSecure", "yes"],
    ["cookieSecure", 1],
    ["cookieHttpOnly", "no"],
    ["cookieSameSite", "Sometimes"],
    ["onMisroute", "drop"],
    ["onMisroute", ""],
    ["onOwnerDown", "retry"],
    ["retryAfterSeconds", 0],
    ["retryAfterSeconds", "0"],
    ["retryAfterSeconds", 3601],
    ["retryAfterSeconds", "abc"],
    ["retryAfterSeconds", -1],
    ["retryAfterSeconds", "5s"],
    ["staleAfterMs", 99],
    ["staleAfterMs", "3600001"],
    ["viewRefreshMs", -1],
    ["viewRefreshMs", "10001"],
    ["maxSessionIdLength", 15],
    ["maxSessionIdLength", String(SESSION_ID_MAX_LENGTH + 1)],
    ["maxCookieBytes", 63],
    ["maxCookieBytes", "4097"],
    ["maxSessionEventFiles", 15],
    ["maxLearnedFiles", 4095],
    ["maxLearnedFiles", "100"],
    ["learnSessions", "maybe"],
    ["maxInitializeBodyBytes", 255],
    ["maxInitializeBodyBytes", "1048577"],
    ["maxBufferedBodyBytes", "16777217"],
    ["maxBufferedBodyBytes", -1],
    ["maxBufferedBodyBytes", "64k"],
    ["maxCookieBytes", "63"],
    ["eventFlushMs", 99],
    ["eventFlushMs", "60001"],
    ["maxEventFiles", 15],
    ["maxEventFiles", "65537"],
    ["logLevel", "verbose"],
    ["cookieName", { nested: 1 }],
    ["retryAfterSeconds", [5]],
    ["onMisroute", null],
    // Unknown settings (including a wrong case of a known one).
    ["viewdir", "/var/run/mcp-affinity"],
    ["onmisroute", "pin"],
    ["foo", "bar"],
  ];

  test.each(bad)("%s = %o", (key, value) => {
    const p = plugin({ [key]: value });
    const requests = [
      () => p.handle(mcp({ sessionId: "s-gone" }), okUpstream),
      () => p.handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream),
      () => p.handle(mcp({ sessionId: "bad id" }), okUpstream),
      () =>
        p.handle(
          mcp({ body: INIT_BODY }),
          initializeUpstream(`learn-${key}`, { setCookie: `${bk(COOKIE.a)}; Path=/` }),
        ),
    ];
    for (const r of requests) {
      const ex = r();
      expect(ex.nextCalled).toBe(true);
      expect(ex.headerWrites).toEqual([]);
      expect(ex.responseBuffered).toBe(false);
      expect(ex.forwarded!.bodyInMemory).toBe(false); // passed untouched: the body streams
      expect(ex.response.status).toBe(200);
      expect(ex.trap).toBeUndefined();
    }
    expect(learnedFiles(t.dir).size).toBe(0);
    const errs = errors(p);
    expect(errs).toHaveLength(1);
    expect(errs[0]!.message).toContain(key);
    expect(p.pool.logs).toHaveLength(1);
  });

  test("a bad setting among good ones still fails open for the whole config", () => {
    const p = plugin({ cookieName: "SERVERID", onMisroute: "reject", retryAfterSeconds: "nope" });
    const ex = p.handle(mcp({ sessionId: "s-up", cookie: `SERVERID=${COOKIE.b}` }), okUpstream);
    expect(ex.headerWrites).toEqual([]);
    expect(errors(p)).toHaveLength(1);
    expect(errors(p)[0]!.message).toContain("retryAfterSeconds");
  });
});
