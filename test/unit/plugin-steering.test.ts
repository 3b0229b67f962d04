// New sessions go to up servers: an initialize whose sticky cookie names no up server is given an
// up server's cookie (request Cookie rewritten, the same cookie set on the answer), spread evenly.
// Every other POST without a session id (a 2026 request, a stateless server's) is placed the same
// way, without telling the client; a GET is left to Traefik. Through the built plugin.wasm on the fake http-wasm host.
import { describe, expect, test } from "vitest";
import {
  COOKIE,
  GONE_COOKIE,
  INIT_BODY,
  bk,
  forwardedBackends,
  initializeUpstream,
  mcp,
  newPlugin,
  okUpstream,
  type ViewSpec,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

// The view's incarnation table: each node's running boot in its state, older boots gone.
const SERVERS: ViewSpec = {
  nodes: [],
  sessions: [],
  boots: [
    { cookie: COOKIE.a, bootTag: "0000000a", state: "gone" },
    { cookie: COOKIE.a, bootTag: "000000a2", state: "up" },
    { cookie: COOKIE.b, bootTag: "0000000b", state: "draining" },
    { cookie: COOKIE.c, bootTag: "00000000", state: "up" },
    { cookie: COOKIE.d, bootTag: "0000000d", state: "down" },
    { cookie: GONE_COOKIE, bootTag: "00000005", state: "gone" },
  ],
};
const t = useView(SERVERS);
const UP = new Set([COOKIE.a, COOKIE.c]);

/** Cookie and Set-Cookie writes (the plugin also wraps the new session's id in the answer). */
const cookieWrites = (ex: { headerWrites: Array<{ name: string }> }) =>
  ex.headerWrites.filter((w) => /^(set-)?cookie$/i.test(w.name));

function initialize(p: ReturnType<typeof newPlugin>, cookie?: string) {
  return p.handle(mcp({ body: INIT_BODY, cookie }), initializeUpstream("new-session", { setCookie: null }));
}

describe("placement of new sessions", () => {
  test.each([
    ["no cookie", undefined],
    ["a draining server's cookie", bk(COOKIE.b)],
    ["a down server's cookie", bk(COOKIE.d)],
    ["a gone server's cookie", bk(GONE_COOKIE)],
    ["an unknown cookie value", bk("0123456789abcdef")],
  ])("%s: the request names an up server, and the answer sets that cookie", (_n, cookie) => {
    const ex = initialize(newPlugin({ dir: t.dir }), cookie ? `theme=dark; ${cookie}` : undefined);
    expect(ex.trap).toBeUndefined();
    const [picked, ...rest] = forwardedBackends(ex);
    expect(rest).toEqual([]);
    expect(UP.has(picked!)).toBe(true);
    if (cookie) expect(ex.forwarded!.cookies[0]).toContain("theme=dark");
    const set = ex.response.headers.values("Set-Cookie");
    expect(set).toHaveLength(1);
    expect(set[0]!.split(";")[0]).toBe(bk(picked!));
  });

  test("a cookie naming an up server is left alone", () => {
    const ex = initialize(newPlugin({ dir: t.dir }), bk(COOKIE.c));
    expect(cookieWrites(ex)).toEqual([]);
    expect(forwardedBackends(ex)).toEqual([COOKIE.c]);
  });

  test("spread: 40 new sessions through one instance, 20 on each up server, none elsewhere", () => {
    const p = newPlugin({ dir: t.dir });
    const counts = new Map<string, number>();
    for (let i = 0; i < 40; i++) {
      const b = forwardedBackends(initialize(p))[0]!;
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    expect(Object.fromEntries(counts)).toEqual({ [COOKIE.a]: 20, [COOKIE.c]: 20 });
  });

  test.each([
    ["no cookie", undefined],
    ["a draining server's cookie", bk(COOKIE.b)],
    ["a down server's cookie", bk(COOKIE.d)],
    ["a gone server's cookie", bk(GONE_COOKIE)],
  ])("a sessionless POST that is no initialize, %s: an up server, and the client is told nothing", (_n, cookie) => {
    const p = newPlugin({ dir: t.dir });
    const body = '{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}';
    const headers: [string, string][] = [
      ["Mcp-Method", "tools/list"],
      ["MCP-Protocol-Version", "2026-07-28"],
    ];
    const ex = p.handle(mcp({ body, cookie, headers }), okUpstream);
    const [picked, ...rest] = forwardedBackends(ex);
    expect(rest).toEqual([]);
    expect(UP.has(picked!)).toBe(true);
    expect(ex.response.headers.values("Set-Cookie")).toEqual([]);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
  });

  test("a sessionless POST whose cookie names an up server, and a GET: untouched", () => {
    const p = newPlugin({ dir: t.dir });
    const tools = p.handle(
      mcp({ body: '{"jsonrpc":"2.0","id":3,"method":"tools/list"}', cookie: bk(COOKIE.a) }),
      okUpstream,
    );
    expect(cookieWrites(tools)).toEqual([]);
    const get = p.handle(mcp({ method: "GET" }), okUpstream);
    expect(cookieWrites(get)).toEqual([]);
  });
});

describe("no placement without a fresh view or an up server", () => {
  const none = useView(
    {
      ...SERVERS,
      boots: SERVERS.boots!.map((s) => ({ ...s, state: s.state === "up" ? ("draining" as const) : s.state })),
    },
    "per-test",
  );
  test("no up server: Traefik picks", () => {
    const ex = initialize(newPlugin({ dir: none.dir }));
    expect(cookieWrites(ex)).toEqual([]);
    expect(forwardedBackends(ex)).toEqual([]);
  });
  const stale = useView({ ...SERVERS, published: Date.now() - 3_600_000 }, "per-test");
  test("stale view: Traefik picks (fail open)", () => {
    const ex = initialize(newPlugin({ dir: stale.dir }));
    expect(cookieWrites(ex)).toEqual([]);
  });
});
