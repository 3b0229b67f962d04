// The request-phase decision table of docs/plugin.md, row by row and policy by policy, through the
// built plugin.wasm on the fake http-wasm host, with views published by lib/view.
import { beforeEach, describe, expect, test } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeMeta, sessionHash, shardPrefix, viewPaths } from "../../lib/view/index.ts";
import { writeShard } from "../support/view-writers.ts";
import type { Exchange } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  EPOCH,
  clearEvents,
  forwardedBackends,
  makeViewDir,
  mcp,
  metaOf,
  newPlugin,
  okUpstream,
  publish,
  readEvents,
  republishMeta,
  type McpReq,
  type TempDir,
  CLUSTER_VIEW,
  bk,
  GONE_COOKIE,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

const SPEC = CLUSTER_VIEW;

const t = useView(SPEC);

/** One request on a fresh instance; returns the exchange and the `d` reason it was counted under. */
function run(req: McpReq, config: Record<string, unknown> = {}, dir = t.dir): { ex: Exchange; reason: string } {
  clearEvents(dir);
  const p = newPlugin({ dir, config });
  const ex = p.handle(mcp(req), okUpstream);
  // Force a flush of the decision counts: a later sessionless request past eventFlushMs.
  p.clock.advance(61_000);
  p.handle({ method: "GET", uri: "/mcp" });
  const counts = { ...readEvents(dir).all.decisions };
  counts.sessionless = (counts.sessionless ?? 1) - 1;
  const reasons = Object.entries(counts).filter(([, n]) => n > 0);
  expect(
    reasons.map(([r, n]) => [r, n]),
    "exactly one decision counted",
  ).toHaveLength(1);
  expect(reasons[0]![1]).toBe(1);
  expect(ex.violations).toEqual([]);
  expect(ex.trap).toBeUndefined();
  expect(ex.responseTrap).toBeUndefined();
  return { ex, reason: reasons[0]![0] };
}

function expectUntouched(ex: Exchange, req: McpReq): void {
  expect(ex.nextCalled).toBe(true);
  expect(ex.headerWrites).toEqual([]);
  const sent = mcp(req);
  expect(ex.forwarded!.headers.toObject()).toEqual(
    Object.fromEntries(
      Object.entries(
        (sent.headers as [string, string][]).reduce<Record<string, string[]>>(
          (o, [k, v]) => ((o[k.toLowerCase()] ??= []).push(v), o),
          {},
        ),
      ).concat(sent.body ? [["content-length", [String(Buffer.byteLength(sent.body))]]] : []),
    ),
  );
  expect(ex.response.header("Mcp-Affinity")).toBeUndefined();
  expect(ex.response.header("Set-Cookie")).toBeUndefined();
  expect(ex.response.status).toBe(200);
}

function expectPinned(ex: Exchange, owner: string, otherCookies = ""): void {
  expect(ex.nextCalled).toBe(true);
  expect(ex.forwarded!.cookies).toEqual([bk(owner) + (otherCookies ? "; " + otherCookies : "")]);
  expect(ex.forwarded!.headers.has("Mcp-Affinity")).toBe(false);
  expect(ex.response.header("Mcp-Affinity")).toBeUndefined();
}

function repairAttrs(ex: Exchange): { pair: string; attrs: string[] } | undefined {
  const v = ex.response.headers.values("Set-Cookie");
  if (v.length === 0) return undefined;
  expect(v).toHaveLength(1);
  const [pair, ...attrs] = v[0]!.split(";").map((s) => s.trim());
  return { pair: pair!, attrs: attrs.sort() };
}

function expectAnswer(
  ex: Exchange,
  status: number,
  reason: string,
  code: number,
  message?: string,
  id: unknown = null,
): any {
  expect(ex.nextCalled).toBe(false);
  expect(ex.response.status).toBe(status);
  expect(ex.response.headers.values("Content-Type")).toEqual(["application/json"]);
  expect(ex.response.headers.values("Mcp-Affinity")).toEqual([reason]);
  const body = ex.response.json();
  expect(body.jsonrpc).toBe("2.0");
  expect(body.id).toEqual(id);
  expect(body.error.code).toBe(code);
  expect(body.error.code).not.toBe(-32601);
  expect(typeof body.error.message).toBe("string");
  if (message) expect(body.error.message).toBe(message);
  expect(Object.keys(body).sort()).toEqual(["error", "id", "jsonrpc"]);
  return body;
}

describe("requests without a session id", () => {
  test.each([
    ["POST", {}],
    ["GET", { method: "GET" }],
    ["POST with an empty Mcp-Session-Id", { sessionId: "" }],
    ["POST with a foreign sticky cookie", { cookie: bk(COOKIE.c) }],
    ["DELETE", { method: "DELETE" }],
  ] as [string, McpReq][])("%s: pass untouched, counted sessionless", (_n, req) => {
    const { ex, reason } = run(req);
    expectUntouched(ex, req);
    expect(reason).toBe("sessionless");
  });
});

describe("invalid session ids: 400 JSON-RPC -32600", () => {
  test.each([
    ["a space", "bad id"],
    ["a tab", "bad\tid"],
    ["non-ASCII", "sessión"],
    ["a control byte", "a\u0001b"],
    ["DEL", "a\u007fb"],
    ["longer than maxSessionIdLength (257)", "x".repeat(257)],
  ])("%s", (_n, id) => {
    const { ex, reason } = run({ sessionId: id });
    expectAnswer(ex, 400, "invalid", -32600);
    expect(reason).toBe("invalid");
  });
  test("the header given twice (even with the same value)", () => {
    const { ex, reason } = run({ sessionId: ["s-up", "s-up"] });
    expectAnswer(ex, 400, "invalid", -32600);
    expect(reason).toBe("invalid");
  });
  test("exactly maxSessionIdLength (256) is valid", () => {
    const { ex, reason } = run({ sessionId: "y".repeat(256) });
    expectUntouched(ex, { sessionId: "y".repeat(256) });
    expect(reason).toBe("unknown");
  });
});

describe("owner up or draining", () => {
  test.each([
    ["s-up", COOKIE.a],
    ["s-drain", COOKIE.b],
  ])("%s, no cookie: pin (Cookie rewritten to carry the owner)", (id, owner) => {
    const { ex, reason } = run({ sessionId: id });
    expectPinned(ex, owner);
    expect(ex.response.header("Set-Cookie")).toBeUndefined();
    expect(reason).toBe("pin");
  });
  test.each([
    ["s-up", COOKIE.a],
    ["s-drain", COOKIE.b],
  ])("%s, cookie names the owner: pass untouched", (id, owner) => {
    const req = { sessionId: id, cookie: `theme=dark; ${bk(owner)}` };
    const { ex, reason } = run(req);
    expectUntouched(ex, req);
    expect(reason).toBe("pass");
  });
  test.each([
    ["s-up", COOKIE.a, COOKIE.b],
    ["s-drain", COOKIE.b, COOKIE.a],
  ])("%s, cookie names another node: pin + repair Set-Cookie (onMisroute=pin)", (id, owner, other) => {
    const { ex, reason } = run({ sessionId: id, cookie: bk(other) });
    expectPinned(ex, owner);
    expect(repairAttrs(ex)).toEqual({ pair: bk(owner), attrs: ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"] });
    expect(reason).toBe("repair");
  });
  test("pinning keeps every other cookie of every Cookie line in order, drops every _mcp_backend pair", () => {
    const req = {
      sessionId: "s-up",
      cookie: [`theme=dark; ${bk(COOKIE.b)}; lang=en`, `sid=xyz; ${bk(COOKIE.c)}`, "last=1"],
    };
    const { ex, reason } = run(req);
    expectPinned(ex, COOKIE.a, "theme=dark; lang=en; sid=xyz; last=1");
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    expect(reason).toBe("repair");
  });
  test("cookie naming the owner only in a later pair: Traefik obeys the first one, so it is a misroute", () => {
    const { ex, reason } = run({ sessionId: "s-up", cookie: [bk(COOKIE.b), bk(COOKIE.a)] });
    expectPinned(ex, COOKIE.a);
    expect(reason).toBe("repair");
  });
  test("onMisroute=reject: cookie names another node -> 404 reject; no cookie still pins; owner cookie passes", () => {
    const cfg = { onMisroute: "reject" };
    let r = run({ sessionId: "s-up", cookie: bk(COOKIE.b) }, cfg);
    const body = expectAnswer(r.ex, 404, "reject", -32001);
    expect(body.error.message).toMatch(/^Session not found/);
    expect(r.reason).toBe("reject");
    r = run({ sessionId: "s-up" }, cfg);
    expectPinned(r.ex, COOKIE.a);
    expect(r.reason).toBe("pin");
    const req = { sessionId: "s-up", cookie: bk(COOKIE.a) };
    r = run(req, cfg);
    expectUntouched(r.ex, req);
    expect(r.reason).toBe("pass");
  });
});

describe("owner down (same boot)", () => {
  test("onOwnerDown=unavailable: 503 + Retry-After from the configured value when the view gives no hint", () => {
    const { ex, reason } = run({ sessionId: "s-down" });
    expectAnswer(ex, 503, "unavailable", ex.response.json().error.code, undefined, 2);
    expect(ex.response.headers.values("Retry-After")).toEqual(["5"]);
    expect(reason).toBe("unavailable");
  });
  test("503 Retry-After takes the view's hint", () => {
    const { ex } = run({ sessionId: "s-down-hint", cookie: bk(COOKIE.d) });
    expectAnswer(ex, 503, "unavailable", ex.response.json().error.code, undefined, 2);
    expect(ex.response.headers.values("Retry-After")).toEqual(["42"]);
  });
  test("retryAfterSeconds setting is used when the view gives no hint", () => {
    const { ex } = run({ sessionId: "s-down" }, { retryAfterSeconds: 17 });
    expect(ex.response.headers.values("Retry-After")).toEqual(["17"]);
  });
  test.each([
    ["no cookie", undefined],
    ["cookie names the owner", bk(COOKIE.c)],
    ["cookie names another node", bk(COOKIE.a)],
  ])("onOwnerDown=pass, %s: pinned to the owner, counted pin", (_n, cookie) => {
    const { ex, reason } = run({ sessionId: "s-down", cookie }, { onOwnerDown: "pass" });
    expect(ex.nextCalled).toBe(true);
    expect(forwardedBackends(ex)).toEqual([COOKIE.c]);
    expect(ex.forwarded!.cookies).toHaveLength(1);
    expect(ex.response.header("Mcp-Affinity")).toBeUndefined();
    expect(reason).toBe("pin");
  });
});

describe("owner gone or session closed: 404 -32001 Session not found", () => {
  test.each(["s-gone", "s-closed"])("%s", (id) => {
    for (const cookie of [undefined, bk(COOKIE.a), bk(GONE_COOKIE)]) {
      const { ex, reason } = run({ sessionId: id, cookie });
      expectAnswer(ex, 404, "lost", -32001, "Session not found");
      expect(ex.response.header("Retry-After")).toBeUndefined();
      expect(reason).toBe("lost");
    }
  });
  test("DELETE of a lost session is answered 404 too (and still reported closed)", () => {
    const { ex, reason } = run({ sessionId: "s-gone", method: "DELETE" });
    expectAnswer(ex, 404, "lost", -32001, "Session not found");
    expect(reason).toBe("lost");
  });
});

describe("session unknown to the view and to learned/", () => {
  test.each([undefined, bk(COOKIE.b)])("pass untouched (the node decides), cookie %s", (cookie) => {
    const req = { sessionId: "never-seen", cookie };
    const { ex, reason } = run(req);
    expectUntouched(ex, req);
    expect(reason).toBe("unknown");
  });
});

describe("view trouble fails open (invariants 1 and 3)", () => {
  let d: TempDir;
  beforeEach(() => {
    d = makeViewDir();
    return () => d.cleanup();
  });

  test("view missing: every session passes untouched, counted fail-open", () => {
    for (const id of ["s-up", "s-gone", "s-down", "s-closed"]) {
      const req = { sessionId: id, cookie: bk(COOKIE.b) };
      const { ex, reason } = run(req, {}, d.dir);
      expectUntouched(ex, req);
      expect(reason).toBe("fail-open");
    }
  });

  test("meta without its end line is treated as missing", async () => {
    await publish(d.dir, SPEC);
    const text = encodeMeta(metaOf(SPEC));
    writeFileSync(viewPaths(d.dir).meta, text.slice(0, text.lastIndexOf("end")));
    const req = { sessionId: "s-gone" };
    const { ex, reason } = run(req, {}, d.dir);
    expectUntouched(ex, req);
    expect(reason).toBe("fail-open");
  });

  test("meta garbage or truncated shard: pass untouched", async () => {
    await publish(d.dir, SPEC);
    const shard = join(viewPaths(d.dir).shards, shardPrefix(sessionHash("s-gone"), 12));
    writeFileSync(shard, Buffer.from("MCPS\x01\x00\x00\x00", "latin1"));
    let r = run({ sessionId: "s-gone" }, {}, d.dir);
    expectUntouched(r.ex, { sessionId: "s-gone" });
    expect(r.reason).toBe("fail-open");
    writeFileSync(viewPaths(d.dir).meta, "not a view\n");
    r = run({ sessionId: "s-up" }, {}, d.dir);
    expectUntouched(r.ex, { sessionId: "s-up" });
    expect(r.reason).toBe("fail-open");
  });

  test("shard of another epoch than the meta: pass untouched, counted fail-open", async () => {
    await publish(d.dir, { ...SPEC, epoch: EPOCH + 1 });
    // Meta says EPOCH, every shard says EPOCH + 1 (a sidecar restart caught mid-publish).
    await republishMeta(d.dir, SPEC);
    for (const id of ["s-gone", "s-closed", "s-up"]) {
      const req = { sessionId: id };
      const { ex, reason } = run(req, {}, d.dir);
      expectUntouched(ex, req);
      expect(reason).toBe("fail-open");
    }
  });

  test("one shard of another epoch while the others match: only that lookup fails open", async () => {
    await publish(d.dir, SPEC);
    const meta = metaOf({ ...SPEC, epoch: EPOCH + 9 });
    mkdirSync(viewPaths(d.dir).shards, { recursive: true });
    await writeShard(d.dir, meta, shardPrefix(sessionHash("s-gone"), 12), [{ hash: sessionHash("s-gone"), node: 5 }]);
    const r = run({ sessionId: "s-gone" }, {}, d.dir);
    expectUntouched(r.ex, { sessionId: "s-gone" });
    expect(r.reason).toBe("fail-open");
    expectAnswer(run({ sessionId: "s-closed" }, {}, d.dir).ex, 404, "lost", -32001);
  });

  test("stale view: never 404 or 503; known owners are still pinned; counted fail-open", async () => {
    await publish(d.dir, { ...SPEC, published: Date.now() - 6_000 });
    for (const id of ["s-gone", "s-closed", "s-down", "s-down-hint", "never-seen"]) {
      const { ex, reason } = run({ sessionId: id }, {}, d.dir);
      expect(ex.nextCalled, id).toBe(true);
      expect(ex.response.status).toBe(200);
      expect(ex.response.header("Mcp-Affinity")).toBeUndefined();
      expect(reason).toBe("fail-open");
    }
    const { ex, reason } = run({ sessionId: "s-up", cookie: "k=v" }, {}, d.dir);
    expectPinned(ex, COOKIE.a, "k=v");
    expect(reason).toBe("fail-open");
    const down = run({ sessionId: "s-down" }, {}, d.dir).ex;
    expect(forwardedBackends(down)).toEqual([COOKIE.c]);
  });

  test("staleAfterMs decides freshness: a 6 s old view is fresh with staleAfterMs=10000", async () => {
    await publish(d.dir, { ...SPEC, published: Date.now() - 6_000 });
    expectAnswer(run({ sessionId: "s-gone" }, { staleAfterMs: "10000" }, d.dir).ex, 404, "lost", -32001);
    expectAnswer(run({ sessionId: "s-gone" }, { staleAfterMs: 10000 }, d.dir).ex, 404, "lost", -32001);
  });

  test("a view published up to 2 s ahead (clock skew) is fresh; further ahead it is stale, never fresh", async () => {
    await publish(d.dir, { ...SPEC, published: Date.now() + 1_500 });
    expectAnswer(run({ sessionId: "s-gone" }, {}, d.dir).ex, 404, "lost", -32001);
    await publish(d.dir, { ...SPEC, published: Date.now() + 60_000 });
    const { ex, reason } = run({ sessionId: "s-gone" }, {}, d.dir);
    expect(ex.nextCalled).toBe(true);
    expect(reason).toBe("fail-open");
  });

  test("a view going stale while an instance reuses its meta: the instance notices by the clock", async () => {
    await publish(d.dir, SPEC);
    const p = newPlugin({ dir: d.dir });
    expectAnswer(p.handle(mcp({ sessionId: "s-gone" })), 404, "lost", -32001);
    p.clock.advance(6_000);
    const ex = p.handle(mcp({ sessionId: "s-gone" }), okUpstream);
    expect(ex.nextCalled).toBe(true);
    expect(ex.response.status).toBe(200);
  });
});

test("the meta written by lib/view is what the plugin reads (sanity of the fixture)", () => {
  expect(encodeMeta(metaOf(SPEC))).toContain(`node 4 ${COOKIE.d} down 42`);
});

describe("shards larger than the plugin's 4 KiB file buffer (a window of records at a time)", () => {
  // 16 shards of about 625 records (15 KiB, four windows): 4,096 shards at 2.5 million sessions.
  const FILLER = 10_000;
  // And 600 more in shard 0, all in the top quarter of its hashes: a skewed shard, where a record's
  // place is far from where a uniform spread would put it.
  const skewed: string[] = [];
  for (let i = 0; skewed.length < 600; i++) {
    const h = sessionHash(`filler-skewed-${i}`);
    if (h[0]! >> 4 === 0 && (h[0]! & 15) >= 12) skewed.push(`filler-skewed-${i}`);
  }
  const spec = {
    ...SPEC,
    shardBits: 4 as const,
    sessions: [
      ...SPEC.sessions,
      ...[...Array.from({ length: FILLER }, (_, i) => `filler-${i}`), ...skewed].map((id, i) => ({
        id,
        node: 1 + (i % 2),
        closed: i % 7 === 3,
      })),
    ],
  };
  const big = useView(spec);

  test("every record is found, wherever it sits in its shard; ids the shard lacks are unknown", () => {
    const byShard = new Map<string, { id: string; hash: Buffer; node: number; closed: boolean }[]>();
    for (const s of spec.sessions.filter((s) => s.id.startsWith("filler-"))) {
      const hash = sessionHash(s.id);
      const k = shardPrefix(hash, 4);
      byShard.set(k, [...(byShard.get(k) ?? []), { ...s, hash, closed: s.closed ?? false }]);
    }
    expect(Math.min(...[...byShard.values()].map((l) => l.length))).toBeGreaterThan((3 * 4096) / 24);
    // In every shard: the first and last records, those around the first window's end, and a sample.
    const picked = [...byShard.values()].flatMap((l) => {
      l.sort((a, b) => Buffer.compare(a.hash, b.hash));
      const at = new Set([0, 1, 168, 169, 170, 171, 339, 340, 341, l.length - 2, l.length - 1]);
      for (let i = 0; i < l.length; i += 17) at.add(i);
      return [...at].filter((i) => i < l.length).map((i) => l[i]!);
    });
    const p = newPlugin({ dir: big.dir });
    const owners: Record<number, string> = { 1: COOKIE.a, 2: COOKIE.b };
    for (const s of picked) {
      const ex = p.handle(mcp({ sessionId: s.id }), okUpstream);
      if (s.closed) expectAnswer(ex, 404, "lost", -32001);
      else expectPinned(ex, owners[s.node]!);
    }
    // Ids in no shard: between, before and after the records of their shards.
    for (let i = 0; i < 200; i++) {
      const ex = p.handle(mcp({ sessionId: `absent-${i}` }), okUpstream);
      expectUntouched(ex, { sessionId: `absent-${i}` });
    }
    expect(picked.length).toBeGreaterThan(16 * 40);
  });
});
