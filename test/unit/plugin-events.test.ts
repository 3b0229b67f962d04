// Events the plugin writes for the sidecar (docs/registry-view.md, events/): closes, decision
// counts, many instances writing at once (in one thread and in parallel threads), and the bound.
import { describe, expect, test } from "vitest";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { viewPaths } from "../../lib/view/index.ts";
import { OffsetClock, runPoolsTogether } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  GUEST_VIEW_DIR,
  INIT_BODY,
  PLUGIN_WASM,
  clearEvents,
  eventFileNames,
  forwardedBackends,
  initializeUpstream,
  mcp,
  newPlugin,
  okUpstream,
  readEvents,
  republishMeta,
  sessionHashHex,
  type ViewSpec,
  bk,
  GONE_COOKIE,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

const SPEC: ViewSpec = {
  nodes: [
    { id: 1, cookie: COOKIE.a, state: "up" },
    { id: 2, cookie: COOKIE.b, state: "gone" },
  ],
  sessions: [
    { id: "s-up", node: 1 },
    { id: "s-gone", node: 2 },
  ],
};

const t = useView(SPEC, "per-test");

describe("close (DELETE)", () => {
  test("DELETE of a live session is routed to the owner and writes a c event at once", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ method: "DELETE", sessionId: "s-up" }), () => ({ status: 200 }));
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    expect(ex.forwarded!.method).toBe("DELETE");
    // No clock advance: the close is written with the request.
    expect(readEvents(t.dir).all.closed).toEqual([{ id: "s-up", hash: sessionHashHex("s-up"), cookie: COOKIE.a }]);
  });

  test("DELETE of a session unknown to the view: passes, c event without a cookie", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ method: "DELETE", sessionId: "nobody-knows" }), () => ({ status: 404 }));
    expect(ex.nextCalled).toBe(true);
    expect(ex.headerWrites).toEqual([]);
    expect(readEvents(t.dir).all.closed).toEqual([{ id: "nobody-knows", hash: sessionHashHex("nobody-knows"), cookie: null }]);
  });

  test("DELETE of a lost session is answered 404 and still reported", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ method: "DELETE", sessionId: "s-gone" }));
    expect(ex.response.status).toBe(404);
    const closed = readEvents(t.dir).all.closed;
    expect(closed.map((c) => [c.id, c.hash])).toEqual([["s-gone", sessionHashHex("s-gone")]]);
  });

  test("DELETE of a session learned at this edge reports the learned node", () => {
    const p = newPlugin({ dir: t.dir, instances: 2, config: { wrapSessionIds: false } });
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("edge-learned", { setCookie: `${bk(COOKIE.b)}; Path=/` }), 0);
    clearEvents(t.dir);
    const ex = p.handle(mcp({ method: "DELETE", sessionId: "edge-learned" }), () => ({ status: 200 }), 1);
    expect(forwardedBackends(ex)).toEqual([COOKIE.b]);
    expect(readEvents(t.dir).all.closed).toEqual([{ id: "edge-learned", hash: sessionHashHex("edge-learned"), cookie: COOKIE.b }]);
  });
});

/** Moves the instances' clock on and keeps the view fresh at the new time (the sidecar's job). */
async function advanceFresh(p: { clock: { advance(ms: number): void; nowMs(): number } }, ms: number): Promise<void> {
  p.clock.advance(ms);
  await republishMeta(t.dir, { ...SPEC, published: p.clock.nowMs() });
}

describe("decision counts", () => {
  test("d lines are written at most every eventFlushMs per instance, and no count is lost", async () => {
    const p = newPlugin({ dir: t.dir, config: { eventFlushMs: 1000 }, clock: new OffsetClock().freeze() });
    const advance = (ms: number) => advanceFresh(p, ms);
    let sent = 0;
    let unknown = 0;
    const burst = (n: number) => {
      for (let i = 0; i < n; i++, sent++) {
        if (sent % 2 === 0) unknown++;
        p.handle(mcp({ sessionId: sent % 2 ? "s-up" : "never-seen" }), okUpstream);
      }
    };
    burst(1);
    const afterFirst = eventFileNames(t.dir).length;
    expect(afterFirst).toBeLessThanOrEqual(1);
    burst(20);
    expect(eventFileNames(t.dir).length).toBe(afterFirst);
    await advance(998);
    burst(5);
    expect(eventFileNames(t.dir).length).toBe(afterFirst);
    await advance(5);
    burst(1);
    expect(eventFileNames(t.dir).length).toBe(afterFirst + 1);
    // The last counts go out once the interval has passed again.
    await advance(1000);
    burst(1);
    const { batches, all } = readEvents(t.dir);
    const total = Object.values(all.decisions).reduce((a, b) => a + b, 0);
    expect(total).toBe(sent);
    expect(all.decisions.unknown).toBe(unknown);
    expect(all.decisions.pin).toBe(sent - unknown);
    const ts = batches.map((b) => b.t).sort((a, b) => a - b);
    for (let i = 1; i < ts.length; i++) expect(ts[i]! - ts[i - 1]!).toBeGreaterThanOrEqual(1000);
  });

  test.each([60000, "60000"])("eventFlushMs=%s holds counts for a minute", async (v) => {
    const p = newPlugin({ dir: t.dir, config: { eventFlushMs: v }, clock: new OffsetClock().freeze() });
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    const first = eventFileNames(t.dir).length;
    await advanceFresh(p, 30_000);
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    expect(eventFileNames(t.dir).length).toBe(first);
    await advanceFresh(p, 30_001);
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    expect(eventFileNames(t.dir).length).toBe(first + 1);
    expect(readEvents(t.dir).all.decisions.pin).toBe(3);
  });
});

describe("many instances at once", () => {
  test("8 instances interleaved in one millisecond: every close lands exactly once", () => {
    // Same wall-clock millisecond for all: the clock-derived slots collide and O_EXCL must resolve it.
    const p = newPlugin({ dir: t.dir, instances: 8, clock: new OffsetClock().freeze() });
    const ids = Array.from({ length: 400 }, (_, i) => `close-${i}`);
    ids.forEach((id, i) => p.handle(mcp({ method: "DELETE", sessionId: id }), () => ({ status: 200 }), i % 8));
    const { all } = readEvents(t.dir);
    expect(all.closed.map((c) => c.id).sort()).toEqual([...ids].sort());
    expect(all.dropped).toBe(0);
  });

  test("3 threads x 4 instances writing at the same time: no event lost, no file torn", async () => {
    const per = 120;
    const inputs = [0, 1, 2].map((w) => ({
      host: { wasmPath: PLUGIN_WASM, config: {}, mounts: { [GUEST_VIEW_DIR]: t.dir } },
      instances: 4,
      requests: Array.from({ length: per }, (_, i) => mcp({ method: "DELETE", sessionId: `w${w}-${i}` })),
    }));
    const results = await runPoolsTogether(inputs);
    for (const r of results) {
      expect(r.traps).toEqual([]);
      expect(r.violations).toEqual([]);
      expect(r.nextCalled).toBe(per);
    }
    const { all } = readEvents(t.dir); // strict parse: a torn or mixed file fails here
    const want = inputs.flatMap((inp) => inp.requests.map((r) => (r.headers as [string, string][]).find(([k]) => k === "Mcp-Session-Id")![1]));
    expect(all.closed.map((c) => c.id).sort()).toEqual(want.sort());
    expect(all.dropped).toBe(0);
  });
});

describe("bounded disk", () => {
  test("maxEventFiles bounds pending files; dropped batches are reported once the sidecar consumes; counts survive", () => {
    const p = newPlugin({ dir: t.dir, config: { maxEventFiles: "16" } });
    for (let i = 0; i < 100; i++) p.handle(mcp({ method: "DELETE", sessionId: `bound-${i}` }), () => ({ status: 200 }));
    const files = eventFileNames(t.dir);
    expect(files.length).toBe(16);
    for (const f of files) {
      expect(f).toMatch(/^e-([0-9]|1[0-5])\.evt$/);
      expect(statSync(join(viewPaths(t.dir).events, f)).size).toBeLessThanOrEqual(8192);
    }
    const first = readEvents(t.dir);
    expect(first.all.closed).toHaveLength(16);
    clearEvents(t.dir); // the sidecar consumed them
    p.clock.advance(2_000);
    p.handle({ method: "GET", uri: "/mcp" });
    const second = readEvents(t.dir);
    expect(second.all.dropped).toBe(84);
    const sum = (d: Record<string, number>) => Object.values(d).reduce((a, b) => a + b, 0);
    expect(sum(first.all.decisions) + sum(second.all.decisions)).toBe(101);
  });

  test("typed maxEventFiles works too, and every event file stays under 8 KiB", () => {
    const p = newPlugin({ dir: t.dir, config: { maxEventFiles: 20 } });
    const long = "L".repeat(250);
    for (let i = 0; i < 60; i++) p.handle(mcp({ method: "DELETE", sessionId: `${long}-${i}` }), () => ({ status: 200 }));
    const files = eventFileNames(t.dir);
    expect(files.length).toBe(20);
    for (const f of files) expect(readFileSync(join(viewPaths(t.dir).events, f)).length).toBeLessThanOrEqual(8192);
  });
});
