// Response phase (learning from initialize responses: invariant 2, cookie-less affinity) and what
// is never buffered, through the built plugin.wasm on the fake http-wasm host.
import { describe, expect, test } from "vitest";
import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import type { Exchange, NextHandler } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  INIT_BODY,
  TOOLS_LIST_BODY,
  clearEvents,
  forwardedBackends,
  initializeUpstream,
  learnedFiles,
  makeViewDir,
  mcp,
  newPlugin,
  okUpstream,
  publish,
  readEvents,
  type ViewSpec,
  bk,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

const SPEC: ViewSpec = {
  nodes: [
    { id: 1, cookie: COOKIE.a, state: "up" },
    { id: 2, cookie: COOKIE.b, state: "up" },
  ],
  sessions: [{ id: "known", node: 1 }],
};
const hash16 = (id: string) => createHash("sha256").update(id).digest().subarray(0, 16).toString("hex");
const setCookieB = `${bk(COOKIE.b)}; Path=/; HttpOnly; Secure; SameSite=Strict`;

const t = useView(SPEC, "per-test");

function clean(ex: Exchange): void {
  expect(ex.trap).toBeUndefined();
  expect(ex.responseTrap).toBeUndefined();
  expect(ex.violations).toEqual([]);
}

describe("learning from an initialize response", () => {
  test("balancer Set-Cookie: learned/<hash> and an l event exist once the held response is released; the next cookie-less request on another instance reaches the owner", () => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir, instances: 2 });
    const id = "3f1c6a0e-learn-me";
    const up = initializeUpstream(id, { setCookie: setCookieB });
    const upstreamResponse = up({} as never)!;
    const ex = p.handle(mcp({ body: INIT_BODY }), up, 0);
    clean(ex);
    expect(ex.responseBuffered).toBe(true);
    // The upstream got the exact original body (read by the plugin and written back).
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(INIT_BODY);
    expect(ex.forwarded!.headers.get("Content-Length")).toBe(String(Buffer.byteLength(INIT_BODY)));
    expect(ex.headerWrites).toEqual([]);
    // The client gets the upstream's response unchanged.
    expect(ex.response.status).toBe(200);
    expect(ex.response.text()).toBe(upstreamResponse.body);
    expect(ex.response.headers.values("Set-Cookie")).toEqual([setCookieB]);
    expect(ex.response.headers.values("Mcp-Session-Id")).toEqual([id]);
    expect(ex.response.header("Mcp-Affinity")).toBeUndefined();

    expect([...learnedFiles(t.dir)]).toEqual([[hash16(id), COOKIE.b + "\n"]]);
    const { all } = readEvents(t.dir);
    expect(all.learned).toEqual([{ id, hash: hash16(id), cookie: COOKIE.b }]);

    // Invariant 2: the very next request, no cookie, on a different instance: pinned to the owner.
    const next = p.handle(mcp({ sessionId: id }), okUpstream, 1);
    clean(next);
    expect(next.forwarded!.cookies).toEqual([bk(COOKIE.b)]);
    expect(next.responseBuffered).toBe(false);
    // With the cookie naming the learned node it passes untouched.
    const withCookie = p.handle(mcp({ sessionId: id, cookie: bk(COOKIE.b) }), okUpstream, 1);
    expect(withCookie.headerWrites).toEqual([]);
    expect(withCookie.forwarded!.cookies).toEqual([bk(COOKIE.b)]);
    // Session ids never appear in clear outside events/.
    for (const [name, content] of learnedFiles(t.dir)) expect(name + content).not.toContain(id);
    expect(p.pool.logs.map((l) => l.message).join("\n")).not.toContain(id);
  });

  test("learned session with a cookie naming another node is pinned to the learned node and the cookie repaired", () => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("learned-2", { setCookie: setCookieB }));
    clearEvents(t.dir);
    const ex = p.handle(mcp({ sessionId: "learned-2", cookie: `a=1; ${bk(COOKIE.a)}` }), okUpstream);
    clean(ex);
    expect(ex.forwarded!.cookies).toEqual([`${bk(COOKIE.b)}; a=1`]);
    expect(ex.response.headers.values("Set-Cookie")).toEqual([
      `${bk(COOKIE.b)}; Path=/; HttpOnly; Secure; SameSite=Strict`,
    ]);
    // docs/plugin.md: a session only in learned/ is counted `pass`, `pin` or `repair`.
    p.clock.advance(61_000);
    p.handle({ method: "GET", uri: "/mcp" });
    const d = readEvents(t.dir).all.decisions;
    expect(d).toEqual({ repair: 1, sessionless: 1 });
  });

  test("a shard naming an owner its meta lacks (mid-rewrite): a learned session is still pinned, an unlearned one passes", async () => {
    await publish(t.dir, {
      nodes: SPEC.nodes,
      sessions: [...SPEC.sessions, { id: "orphan", node: 99 }, { id: "orphan-2", node: 99 }],
    });
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("orphan", { setCookie: setCookieB }));
    const pinned = p.handle(mcp({ sessionId: "orphan" }), okUpstream);
    clean(pinned);
    expect(pinned.forwarded!.cookies).toEqual([bk(COOKIE.b)]);
    const passed = p.handle(mcp({ sessionId: "orphan-2" }), okUpstream);
    clean(passed);
    expect(passed.headerWrites).toEqual([]);
    expect(passed.response.status).toBe(200);
  });

  test("no view published yet: a learned session is still pinned (fail-open row), counted fail-open", () => {
    const empty = makeViewDir();
    try {
      const p = newPlugin({ config: { wrapSessionIds: false }, dir: empty.dir, instances: 2 });
      const ex = p.handle(mcp({ body: INIT_BODY }), initializeUpstream("before-view", { setCookie: setCookieB }), 0);
      expect(ex.responseBuffered).toBe(true);
      clearEvents(empty.dir);
      const next = p.handle(mcp({ sessionId: "before-view" }), okUpstream, 1);
      clean(next);
      expect(next.forwarded!.cookies).toEqual([bk(COOKIE.b)]);
      // An unknown session with no view passes untouched.
      expect(p.handle(mcp({ sessionId: "not-learned" }), okUpstream, 1).headerWrites).toEqual([]);
      p.clock.advance(61_000);
      p.handle({ method: "GET", uri: "/mcp" }, undefined, 1);
      expect(readEvents(empty.dir).all.decisions).toEqual({ "fail-open": 2, sessionless: 1 });
    } finally {
      empty.cleanup();
    }
  });

  test("the view wins over learned/ once it knows the session", async () => {
    const p = newPlugin({ dir: t.dir, config: { wrapSessionIds: false, viewRefreshMs: 0 } });
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("moved", { setCookie: setCookieB }));
    await publish(t.dir, { ...SPEC, sessions: [...SPEC.sessions, { id: "moved", node: 1 }] });
    const ex = p.handle(mcp({ sessionId: "moved" }), okUpstream);
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
  });

  test("no Set-Cookie from the balancer: the request's own valid cookie names the owner", () => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    const ex = p.handle(
      mcp({ body: INIT_BODY, cookie: `x=y; ${bk(COOKIE.a)}` }),
      initializeUpstream("own-cookie", { setCookie: null }),
    );
    clean(ex);
    expect(ex.responseBuffered).toBe(true);
    expect([...learnedFiles(t.dir)]).toEqual([[hash16("own-cookie"), COOKIE.a + "\n"]]);
    expect(readEvents(t.dir).all.learned).toEqual([{ id: "own-cookie", hash: hash16("own-cookie"), cookie: COOKIE.a }]);
  });

  test("the balancer's Set-Cookie wins over the request's stale cookie; other Set-Cookie lines are skipped", () => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    const up: NextHandler = () => ({
      status: 200,
      headers: [
        ["Set-Cookie", "other=1; Path=/"],
        ["Set-Cookie", setCookieB],
        ["Mcp-Session-Id", "sc-wins"],
      ],
      body: "{}",
    });
    p.handle(mcp({ body: INIT_BODY, cookie: bk(COOKIE.a) }), up);
    expect([...learnedFiles(t.dir)]).toEqual([[hash16("sc-wins"), COOKIE.b + "\n"]]);
  });

  test("whitespace around the colon still marks an initialize", () => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    const body = '{ "jsonrpc" : "2.0", "id" : 1, "method" :\n "initialize", "params" : {} }';
    const ex = p.handle(mcp({ body }), initializeUpstream("spaced", { setCookie: setCookieB }));
    expect(ex.responseBuffered).toBe(true);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
    expect(learnedFiles(t.dir).has(hash16("spaced"))).toBe(true);
  });

  test.each([
    ["a non-2xx answer", initializeUpstream("err-1", { setCookie: setCookieB, status: 400 })],
    ["no Mcp-Session-Id", (() => ({ status: 200, headers: [["Set-Cookie", setCookieB]], body: "{}" })) as NextHandler],
    ["an invalid Mcp-Session-Id", initializeUpstream("has space", { setCookie: setCookieB })],
    ["no usable sticky cookie", initializeUpstream("no-cookie", { setCookie: null })],
    [
      "a sticky cookie that is not 16 hex digits",
      initializeUpstream("bad-cookie", { setCookie: "_mcp_backend=node-a; Path=/" }),
    ],
  ])("%s: nothing learned, response released unchanged", (_n, up) => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    const ex = p.handle(mcp({ body: INIT_BODY }), up);
    clean(ex);
    const want = up({} as never)!;
    expect(ex.response.status).toBe(want.status);
    expect(ex.response.text()).toBe(want.body);
    expect(learnedFiles(t.dir).size).toBe(0);
    expect(readEvents(t.dir).all.learned).toEqual([]);
  });
});

describe("never buffered", () => {
  const sse: NextHandler = () => ({
    status: 200,
    headers: [["Content-Type", "text/event-stream"]],
    body: ['event: message\ndata: {"a":1}\n\n', ": keep-alive\n\n", 'event: message\ndata: {"b":2}\n\n'],
  });

  test.each([
    ["GET SSE stream without a session id", mcp({ method: "GET" })],
    ["GET SSE stream of a known session (pinned)", mcp({ method: "GET", sessionId: "known" })],
    ["POST of a known session", mcp({ sessionId: "known", body: INIT_BODY })],
    ["POST without a session id that is not an initialize", mcp({ body: TOOLS_LIST_BODY })],
    [
      "an initialize larger than maxInitializeBodyBytes",
      mcp({ body: INIT_BODY.replace('"params":{', `"params":{"pad":"${"p".repeat(70_000)}",`) }),
    ],
  ])("%s", (_n, req) => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    const ex = p.handle(req, sse);
    clean(ex);
    expect(ex.responseBuffered).toBe(false);
    expect(ex.response.text()).toBe((sse({} as never)!.body as string[]).join(""));
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(typeof req.body === "string" ? req.body : "");
    expect(learnedFiles(t.dir).size).toBe(0);
  });

  test("an initialize without Content-Length (chunked) is not inspected", () => {
    const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
    const ex = p.handle(
      { ...mcp({ body: INIT_BODY }), chunked: true },
      initializeUpstream("chunked", { setCookie: setCookieB }),
    );
    clean(ex);
    expect(ex.responseBuffered).toBe(false);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(INIT_BODY);
    expect(learnedFiles(t.dir).size).toBe(0);
  });

  test.each([false, "false"])("learnSessions=%s: initialize passes unbuffered, nothing learned", (v) => {
    const p = newPlugin({ dir: t.dir, config: { wrapSessionIds: false, learnSessions: v } });
    const ex = p.handle(mcp({ body: INIT_BODY }), initializeUpstream("off", { setCookie: setCookieB }));
    clean(ex);
    expect(ex.responseBuffered).toBe(false);
    expect(learnedFiles(t.dir).size).toBe(0);
    expect(readEvents(t.dir).all.learned).toEqual([]);
  });

  test("maxInitializeBodyBytes bounds what is inspected (string and typed)", () => {
    const body = INIT_BODY + " ".repeat(300 - INIT_BODY.length);
    for (const v of ["256", 256]) {
      const p = newPlugin({ dir: t.dir, config: { wrapSessionIds: false, maxInitializeBodyBytes: v } });
      expect(p.handle(mcp({ body }), initializeUpstream("big")).responseBuffered).toBe(false);
    }
    for (const v of ["300", 300]) {
      const p = newPlugin({ dir: t.dir, config: { wrapSessionIds: false, maxInitializeBodyBytes: v } });
      expect(p.handle(mcp({ body }), initializeUpstream("fits")).responseBuffered).toBe(true);
    }
  });
});

test("the learned/ directory holds only hash names (no clear ids)", () => {
  const p = newPlugin({ config: { wrapSessionIds: false }, dir: t.dir });
  for (let i = 0; i < 5; i++)
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream(`sess-${i}`, { setCookie: setCookieB }));
  const names = readdirSync(`${t.dir}/learned`);
  expect(names.sort()).toEqual([0, 1, 2, 3, 4].map((i) => hash16(`sess-${i}`).slice(0, 3)).sort());
  expect([...learnedFiles(t.dir).keys()].sort()).toEqual([0, 1, 2, 3, 4].map((i) => hash16(`sess-${i}`)).sort());
});
