// Routing tokens in session ids (docs/plugin.md, "Session tokens"), through the built plugin.wasm
// on the fake http-wasm host: ids minted by the node library are routed by their token on any
// Traefik, ids of other servers are wrapped on the initialize answer and unwrapped on every request.
import { describe, expect, test } from "vitest";
import type { Exchange } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  INIT_BODY,
  bk,
  clearEvents,
  forwardedBackends,
  initializeUpstream,
  learnedFiles,
  makeViewDir,
  mcp,
  newPlugin,
  okUpstream,
  readEvents,
  type ViewSpec,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";
import { bootTag, mintSessionId, parseSessionToken, wrapSessionId, UNKNOWN_BOOT_TAG } from "../../lib/token/index.ts";
import { sessionHashHex } from "../../lib/registry/session-hash.ts";

const BOOT_A = bootTag("boot-a-2");
const OLD_BOOT_A = bootTag("boot-a-1");
const BOOT_B = bootTag("boot-b-1");
const BOOT_C = bootTag("boot-c-1");
const SPEC: ViewSpec = {
  nodes: [
    { id: 1, cookie: COOKIE.a, state: "up" },
    { id: 2, cookie: COOKIE.b, state: "up" },
  ],
  sessions: [{ id: "recorded", node: 1 }],
  boots: [
    { cookie: COOKIE.a, bootTag: BOOT_A, state: "up" },
    { cookie: COOKIE.a, bootTag: OLD_BOOT_A, state: "gone" },
    { cookie: COOKIE.b, bootTag: BOOT_B, state: "draining" },
    { cookie: COOKIE.c, bootTag: BOOT_C, state: "down", retryAfterSeconds: 7 },
    { cookie: COOKIE.d, bootTag: UNKNOWN_BOOT_TAG, state: "up" },
  ],
};
const t = useView(SPEC, "per-test");
const setCookie = (c: string) => `${bk(c)}; Path=/; HttpOnly; Secure; SameSite=Strict`;

function clean(ex: Exchange): void {
  expect(ex.trap).toBeUndefined();
  expect(ex.responseTrap).toBeUndefined();
  expect(ex.violations).toEqual([]);
}
const sid = (ex: Exchange) => ex.forwarded?.headers.values("Mcp-Session-Id");

describe("ids minted by the node library", () => {
  test("a live incarnation the view has never seen a session of: pinned on the very first request", () => {
    const p = newPlugin({ dir: t.dir });
    for (const [cookie, tag] of [
      [COOKIE.a, BOOT_A],
      [COOKIE.b, BOOT_B],
    ] as const) {
      const id = mintSessionId(cookie, tag);
      const ex = p.handle(mcp({ sessionId: id }), okUpstream);
      clean(ex);
      expect(forwardedBackends(ex)).toEqual([cookie]);
      // The node sees its own id; nothing is held back.
      expect(sid(ex)).toEqual([id]);
      expect(ex.responseBuffered).toBe(false);
    }
  });

  test("a cookie naming another node is repaired toward the token's node", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ sessionId: mintSessionId(COOKIE.a, BOOT_A), cookie: bk(COOKIE.b) }), okUpstream);
    clean(ex);
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    expect(ex.response.headers.values("Set-Cookie")).toEqual([setCookie(COOKIE.a)]);
  });

  test("a rebooted incarnation gets the edge 404 without the view knowing the session", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ sessionId: mintSessionId(COOKIE.a, OLD_BOOT_A) }), () => {
      throw new Error("must not reach a node");
    });
    clean(ex);
    expect(ex.response.status).toBe(404);
    expect(ex.response.header("Mcp-Affinity")).toBe("lost");
    expect(JSON.parse(ex.response.text())).toEqual({
      jsonrpc: "2.0",
      error: { code: -32001, message: "Session not found" },
      id: null,
    });
  });

  test("a down incarnation gets 503 with the view's Retry-After", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ sessionId: mintSessionId(COOKIE.c, BOOT_C) }), okUpstream);
    clean(ex);
    expect(ex.response.status).toBe(503);
    expect(ex.response.header("Retry-After")).toBe("7");
  });

  test("a boot the view has not heard of, and a node the view does not list yet, are pinned (the node decides)", () => {
    const p = newPlugin({ dir: t.dir });
    const fresh = p.handle(mcp({ sessionId: mintSessionId(COOKIE.a, bootTag("boot-a-3")) }), okUpstream);
    clean(fresh);
    expect(forwardedBackends(fresh)).toEqual([COOKIE.a]);
    // A server that joined after this view was published: pinned (Traefik ignores a cookie naming no
    // server it has, so a pin never does worse than a pass); a client cookie is not "repaired".
    const unlisted = "fedcba9876543210";
    for (const cookie of [undefined, bk(COOKIE.a)]) {
      const joined = p.handle(mcp({ sessionId: mintSessionId(unlisted, BOOT_A), cookie }), okUpstream);
      clean(joined);
      expect(forwardedBackends(joined)).toEqual([unlisted]);
      expect(joined.response.headers.values("Set-Cookie")).toEqual([]);
      expect(joined.response.status).toBe(200);
    }
  });

  test("a fresh view's incarnation decides without the session's record (as the fast path does); a DELETE still reads it", async () => {
    const id = mintSessionId(COOKIE.a, BOOT_A);
    const { publish } = await import("../support/plugin-fixture.ts");
    // The record says closed: only a DELETE (the edge reports the close of a session it holds) reads it.
    await publish(t.dir, { ...SPEC, sessions: [{ id, node: 1, closed: true }] });
    const p = newPlugin({ dir: t.dir });
    for (const method of ["POST", "GET"]) {
      const ex = p.handle(mcp({ method, sessionId: id }), okUpstream);
      clean(ex);
      expect(ex.nextCalled, method).toBe(true);
      expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    }
    const del = p.handle(mcp({ method: "DELETE", sessionId: id }), okUpstream);
    clean(del);
    expect(del.nextCalled).toBe(false);
    expect(del.response.status).toBe(404);
    expect(del.response.header("Mcp-Affinity")).toBe("lost");
    p.clock.advance(61_000);
    p.handle({ method: "GET", uri: "/mcp" });
    expect(readEvents(t.dir).all.decisions).toEqual({ pin: 2, lost: 1, sessionless: 1 });
  });

  test("a wrapped id keeps its record (the edge alone reports its use, close and loss): a closed one is answered 404", async () => {
    const id = wrapSessionId("server-own-id-1", COOKIE.a, BOOT_A);
    const { publish } = await import("../support/plugin-fixture.ts");
    await publish(t.dir, { ...SPEC, sessions: [{ id, node: 1, closed: true }] });
    const ex = newPlugin({ dir: t.dir }).handle(mcp({ sessionId: id }), okUpstream);
    clean(ex);
    expect(ex.nextCalled).toBe(false);
    expect(ex.response.status).toBe(404);
    expect(ex.response.header("Mcp-Affinity")).toBe("lost");
  });

  test("a record naming another node than the token: the record decides only where the token cannot (a stale view)", async () => {
    const id = mintSessionId(COOKIE.a, BOOT_A);
    const { publish } = await import("../support/plugin-fixture.ts");
    await publish(t.dir, { ...SPEC, sessions: [{ id, node: 2 }] });
    const fresh = newPlugin({ dir: t.dir }).handle(mcp({ sessionId: id }), okUpstream);
    clean(fresh);
    expect(forwardedBackends(fresh)).toEqual([COOKIE.a]);
    await publish(t.dir, { ...SPEC, published: Date.now() - 3_600_000, sessions: [{ id, node: 2 }] });
    const stale = newPlugin({ dir: t.dir }).handle(mcp({ sessionId: id }), okUpstream);
    clean(stale);
    expect(forwardedBackends(stale)).toEqual([COOKIE.b]);
  });

  test("the meta is read again only when its file changed: a stat per refresh otherwise", async () => {
    const id = mintSessionId(COOKIE.a, BOOT_A);
    const p = newPlugin({ dir: t.dir });
    clean(p.handle(mcp({ sessionId: id }), okUpstream));
    const host = p.pool.instances[0]!;
    const before = new Map(host.wasiCalls);
    const made = (name: string) => (host.wasiCalls.get(name) ?? 0) - (before.get(name) ?? 0);
    for (let i = 0; i < 10; i++) {
      p.clock.advance(150); // past viewRefreshMs (100): a refresh is due on every request
      const ex = p.handle(mcp({ sessionId: id }), okUpstream);
      clean(ex);
      expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    }
    // The lean path reads no shard, and the unchanged meta is not read again.
    expect([made("path_filestat_get"), made("fd_read"), made("fd_pread")]).toEqual([10, 0, 0]);
    // A new meta (the sidecar renames it into place) is read at the next refresh.
    const { republishMeta } = await import("../support/plugin-fixture.ts");
    await republishMeta(t.dir, {
      ...SPEC,
      boots: SPEC.boots!.map((b) => (b.bootTag === BOOT_A ? { ...b, state: "down" as const } : b)),
    });
    p.clock.advance(150);
    const down = p.handle(mcp({ sessionId: id }), okUpstream);
    clean(down);
    expect(down.response.status).toBe(503);
    expect(made("fd_read")).toBeGreaterThan(0);
  });

  test("no view at all: still pinned by the token, counted fail-open, never refused", () => {
    const empty = makeViewDir();
    try {
      const p = newPlugin({ dir: empty.dir });
      for (const tag of [BOOT_A, OLD_BOOT_A]) {
        const ex = p.handle(mcp({ sessionId: mintSessionId(COOKIE.a, tag) }), okUpstream);
        clean(ex);
        expect(ex.response.status).toBe(200);
        expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
      }
      p.clock.advance(61_000);
      p.handle({ method: "GET", uri: "/mcp" });
      expect(readEvents(empty.dir).all.decisions).toEqual({ "fail-open": 2, sessionless: 1 });
    } finally {
      empty.cleanup();
    }
  });

  test("a stale view pins a dead incarnation's token instead of answering 404", async () => {
    const { publish } = await import("../support/plugin-fixture.ts");
    await publish(t.dir, { ...SPEC, published: Date.now() - 60_000 });
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ sessionId: mintSessionId(COOKIE.a, OLD_BOOT_A) }), okUpstream);
    clean(ex);
    expect(ex.response.status).toBe(200);
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
  });

  test("an initialize answer with a minted id is left as it is, and learned by that id", () => {
    const p = newPlugin({ dir: t.dir });
    const id = mintSessionId(COOKIE.b, BOOT_B);
    const ex = p.handle(mcp({ body: INIT_BODY }), initializeUpstream(id, { setCookie: setCookie(COOKIE.b) }));
    clean(ex);
    expect(ex.response.headers.values("Mcp-Session-Id")).toEqual([id]);
    expect([...learnedFiles(t.dir).keys()]).toEqual([sessionHashHex(id)]);
  });

  test("a node minting ids for another URL than Traefik's is reported (a warning, once per answer)", () => {
    const p = newPlugin({ dir: t.dir });
    // The client's cookie names an up node (no placement); Traefik's answer names another one.
    p.handle(
      mcp({ body: INIT_BODY, cookie: bk(COOKIE.d) }),
      initializeUpstream(mintSessionId(COOKIE.a, BOOT_A), { setCookie: setCookie(COOKIE.b) }),
    );
    expect(p.pool.logs.map((l) => l.message).join("\n")).toMatch(/another server URL than Traefik's/);
  });
});

describe("ids of servers that do not mint tokens (wrapped at the edge)", () => {
  const SERVER_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

  function initialize(p: ReturnType<typeof newPlugin>, owner: string, serverId = SERVER_ID): Exchange {
    // The initialize goes where its cookie says (an up node: the edge places new sessions on up nodes only).
    const ex = p.handle(
      mcp({ body: INIT_BODY, cookie: bk(owner) }),
      initializeUpstream(serverId, { setCookie: setCookie(owner) }),
      0,
    );
    clean(ex);
    return ex;
  }

  test("the client gets the wrapped id (owner cookie, its current boot tag), learned and reported by it", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = initialize(p, COOKIE.a);
    const wrapped = wrapSessionId(SERVER_ID, COOKIE.a, BOOT_A);
    expect(ex.response.headers.values("Mcp-Session-Id")).toEqual([wrapped]);
    expect([...learnedFiles(t.dir)]).toEqual([[sessionHashHex(wrapped), COOKIE.a + "\n"]]);
    expect(readEvents(t.dir).all.learned).toEqual([{ id: wrapped, hash: sessionHashHex(wrapped), cookie: COOKIE.a }]);
    // A node without a known boot gets the unknown tag.
    expect(initialize(p, COOKIE.d).response.headers.values("Mcp-Session-Id")).toEqual([
      wrapSessionId(SERVER_ID, COOKIE.d, UNKNOWN_BOOT_TAG),
    ]);
  });

  test("every request is unwrapped for the node and pinned by the token on any instance, learned or not", () => {
    const p = newPlugin({ dir: t.dir, instances: 2 });
    const wrapped = initialize(p, COOKIE.a).response.headers.values("Mcp-Session-Id")[0]!;
    // Another Traefik has neither the view record nor learned/: only the token.
    const other = makeViewDir();
    try {
      const q = newPlugin({ dir: other.dir });
      for (const method of ["POST", "GET", "DELETE"]) {
        const ex = q.handle(mcp({ method, sessionId: wrapped }), okUpstream);
        clean(ex);
        expect(sid(ex)).toEqual([SERVER_ID]);
        expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
      }
    } finally {
      other.cleanup();
    }
    const ex = p.handle(mcp({ sessionId: wrapped }), okUpstream, 1);
    clean(ex);
    expect(sid(ex)).toEqual([SERVER_ID]);
  });

  test("no answer is held: an answer that repeats the server's id flows as written and is counted as exposed", () => {
    const p = newPlugin({ dir: t.dir });
    const wrapped = initialize(p, COOKIE.a).response.headers.values("Mcp-Session-Id")[0]!;
    clearEvents(t.dir);
    const echo = () => ({
      status: 200,
      headers: [
        ["Content-Type", "text/event-stream"],
        ["Mcp-Session-Id", SERVER_ID],
      ] as [string, string][],
      body: ["event: message\n", "data: {}\n\n"],
    });
    // Without the router that strips the header (Traefik's job), the client sees the server's id:
    // the edge does not hold the stream to hide it, it counts it for the operator.
    const post = p.handle(mcp({ sessionId: wrapped }), echo);
    clean(post);
    expect(post.responseBuffered).toBe(false);
    expect(post.response.headers.values("Mcp-Session-Id")).toEqual([SERVER_ID]);
    expect(post.response.text()).toBe("event: message\ndata: {}\n\n");
    // Stripped (the router is there), or an id that is not the server's: nothing to count.
    const stripped = p.handle(mcp({ sessionId: wrapped }), () => ({ status: 200, headers: [] }));
    expect(stripped.responseBuffered).toBe(false);
    const odd = p.handle(mcp({ sessionId: wrapped }), () => ({ status: 200, headers: [["Mcp-Session-Id", "other"]] }));
    expect(odd.response.headers.values("Mcp-Session-Id")).toEqual(["other"]);
    // GET streams and DELETEs are never checked: no client takes an id from them.
    for (const method of ["GET", "DELETE"]) {
      const ex = p.handle(mcp({ method, sessionId: wrapped }), echo);
      clean(ex);
      expect(ex.responseBuffered).toBe(false);
    }
    p.clock.advance(61_000);
    p.handle(mcp({ method: "GET" }), okUpstream); // flushes the counts
    expect(readEvents(t.dir).all.exposedServerIds).toBe(1);
  });

  test("answers the edge gives itself do not unwrap: a dead incarnation's wrapped id gets the edge 404", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ sessionId: wrapSessionId(SERVER_ID, COOKIE.a, OLD_BOOT_A) }), okUpstream);
    clean(ex);
    expect(ex.response.status).toBe(404);
    expect(ex.forwarded).toBeUndefined();
  });

  test("a plugin failing open (a bad setting, or no shared directory) still unwraps and holds nothing", () => {
    const wrapped = wrapSessionId(SERVER_ID, COOKIE.b, BOOT_B);
    const echo = () => ({ status: 200, headers: [["Mcp-Session-Id", SERVER_ID]] as [string, string][], body: "{}" });
    for (const p of [newPlugin({ dir: t.dir, config: { onMisroute: "bogus" } }), newPlugin({})]) {
      for (const method of ["POST", "GET"]) {
        const ex = p.handle(mcp({ method, sessionId: wrapped }), echo);
        clean(ex);
        expect(sid(ex)).toEqual([SERVER_ID]);
        expect(ex.responseBuffered).toBe(false);
      }
    }
  });

  test("an id that would outgrow maxSessionIdLength once wrapped stays as the server chose it", () => {
    const p = newPlugin({ dir: t.dir, config: { maxSessionIdLength: 64 } });
    const long = "x".repeat(40);
    const ex = initialize(p, COOKIE.a, long);
    expect(ex.response.headers.values("Mcp-Session-Id")).toEqual([long]);
    expect([...learnedFiles(t.dir).keys()]).toEqual([sessionHashHex(long)]);
  });

  test("wrapSessionIds=false keeps server ids as they are", () => {
    const p = newPlugin({ dir: t.dir, config: { wrapSessionIds: "false" } });
    expect(initialize(p, COOKIE.b).response.headers.values("Mcp-Session-Id")).toEqual([SERVER_ID]);
  });

  test("the wrapped id is what the edge and the registry know; the clear id never lands in learned/ or logs", () => {
    const p = newPlugin({ dir: t.dir });
    const wrapped = initialize(p, COOKIE.b).response.headers.values("Mcp-Session-Id")[0]!;
    expect(parseSessionToken(wrapped)).toMatchObject({ kind: "wrapped", inner: SERVER_ID });
    for (const [name, content] of learnedFiles(t.dir)) expect(name + content).not.toContain(SERVER_ID);
    expect(p.pool.logs.map((l) => l.message).join("\n")).not.toContain(SERVER_ID);
    clearEvents(t.dir);
  });
});
