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
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

// Sessions the edge knows: closes are reported only for those.
const KNOWN = [
  ...Array.from({ length: 400 }, (_, i) => `close-${i}`),
  ...[0, 1, 2].flatMap((w) => Array.from({ length: 120 }, (_, i) => `w${w}-${i}`)),
  ...Array.from({ length: 100 }, (_, i) => `bound-${i}`),
  ...Array.from({ length: 60 }, (_, i) => `${"L".repeat(250)}-${i}`),
];
const SPEC: ViewSpec = {
  nodes: [
    { id: 1, cookie: COOKIE.a, state: "up" },
    { id: 2, cookie: COOKIE.b, state: "gone" },
  ],
  sessions: [{ id: "s-up", node: 1 }, { id: "s-gone", node: 2 }, ...KNOWN.map((id) => ({ id, node: 1 }))],
};
const sessionFiles = (dir: string) => eventFileNames(dir).filter((f) => f.startsWith("s-"));
const countFiles = (dir: string) => eventFileNames(dir).filter((f) => f.startsWith("e-"));

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

  test("DELETE of a session unknown to the edge (a forged id): passes, no event", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ method: "DELETE", sessionId: "nobody-knows" }), () => ({ status: 404 }));
    expect(ex.nextCalled).toBe(true);
    expect(ex.headerWrites).toEqual([]);
    expect(readEvents(t.dir).all.closed).toEqual([]);
    expect(sessionFiles(t.dir)).toEqual([]);
  });

  test("a flood of forged DELETEs writes no session batch and at most one count batch per eventFlushMs", () => {
    const p = newPlugin({ dir: t.dir, instances: 4, clock: new OffsetClock().freeze() });
    for (let i = 0; i < 2000; i++)
      p.handle(mcp({ method: "DELETE", sessionId: `forged-${i}` }), () => ({ status: 404 }), i % 4);
    expect(sessionFiles(t.dir)).toEqual([]);
    // A fresh instance writes its first counts at once, then every eventFlushMs.
    expect(countFiles(t.dir).length).toBeLessThanOrEqual(4);
    expect(readEvents(t.dir).all.closed).toEqual([]);
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
    expect(readEvents(t.dir).all.closed).toEqual([
      { id: "edge-learned", hash: sessionHashHex("edge-learned"), cookie: COOKIE.b },
    ]);
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

describe("rare decisions", () => {
  test("lost and invalid are written with the request itself, frequent counts ride along", () => {
    // Frozen clock: nothing but the rare decision can trigger a write.
    const p = newPlugin({ dir: t.dir, config: { eventFlushMs: 60000 }, clock: new OffsetClock().freeze() });
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    const first = eventFileNames(t.dir).length;
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    expect(eventFileNames(t.dir).length).toBe(first);
    expect(p.handle(mcp({ sessionId: "s-gone" })).response.status).toBe(404);
    expect(eventFileNames(t.dir).length).toBe(first + 1);
    expect(p.handle(mcp({ sessionId: "bad id" })).response.status).toBe(400);
    expect(eventFileNames(t.dir).length).toBe(first + 2);
    const { all } = readEvents(t.dir);
    expect(all.decisions).toMatchObject({ lost: 1, invalid: 1, pin: 2 });
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
    const want = inputs.flatMap((inp) =>
      inp.requests.map((r) => (r.headers as [string, string][]).find(([k]) => k === "Mcp-Session-Id")![1]),
    );
    expect(all.closed.map((c) => c.id).sort()).toEqual(want.sort());
    expect(all.dropped).toBe(0);
  });
});

describe("bounded disk", () => {
  test("maxSessionEventFiles bounds pending session batches; lost closes are counted and reported once the sidecar consumes; counts survive", () => {
    const p = newPlugin({ dir: t.dir, config: { maxSessionEventFiles: "16" } });
    for (let i = 0; i < 100; i++) p.handle(mcp({ method: "DELETE", sessionId: `bound-${i}` }), () => ({ status: 200 }));
    const files = eventFileNames(t.dir);
    expect(files.length).toBe(16);
    for (const f of files) {
      expect(f).toMatch(/^s-([0-9]|1[0-5])\.evt$/);
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

  test("with every slot taken, rare decisions wait for the flush interval and none is lost", () => {
    const p = newPlugin({ dir: t.dir, config: { maxEventFiles: "16" }, clock: new OffsetClock().freeze() });
    // Rare decisions are written with their request: 16 of them take every slot.
    for (let i = 0; i < 16; i++) p.handle(mcp({ sessionId: "bad id" }));
    expect(eventFileNames(t.dir)).toHaveLength(16);
    const before = readEvents(t.dir).all.decisions;
    for (let i = 0; i < 50; i++) expect(p.handle(mcp({ sessionId: "bad id" })).response.status).toBe(400);
    expect(eventFileNames(t.dir)).toHaveLength(16);
    clearEvents(t.dir); // the sidecar catches up
    p.handle(mcp({ sessionId: "bad id" })); // within the interval: still waiting
    expect(eventFileNames(t.dir)).toHaveLength(0);
    p.clock.advance(1_000);
    p.handle(mcp({ sessionId: "bad id" }));
    expect(before.invalid).toBe(16);
    expect(before.invalid! + readEvents(t.dir).all.decisions.invalid!).toBe(16 + 52);
  });

  test("typed maxSessionEventFiles works too, and every event file stays under 8 KiB", () => {
    const p = newPlugin({ dir: t.dir, config: { maxSessionEventFiles: 20 } });
    const long = "L".repeat(250);
    for (let i = 0; i < 60; i++)
      p.handle(mcp({ method: "DELETE", sessionId: `${long}-${i}` }), () => ({ status: 200 }));
    const files = eventFileNames(t.dir);
    expect(files.length).toBe(20);
    for (const f of files) expect(readFileSync(join(viewPaths(t.dir).events, f)).length).toBeLessThanOrEqual(8192);
  });
});

describe("separate channels", () => {
  test("count batches filling every e- slot never stop a learn or a close (s- slots)", () => {
    const p = newPlugin({
      dir: t.dir,
      instances: 2,
      config: { maxEventFiles: 16, eventFlushMs: 100, wrapSessionIds: false },
    });
    // Fill the count channel: every instance flushes counts every 100 ms.
    for (let i = 0; i < 200; i++) {
      p.clock.advance(101);
      p.handle(mcp({ sessionId: `unknown-${i}` }), okUpstream, i % 2);
    }
    expect(countFiles(t.dir)).toHaveLength(16);
    p.handle(mcp({ body: INIT_BODY }), initializeUpstream("while-full", { setCookie: `${bk(COOKIE.a)}; Path=/` }), 0);
    p.handle(mcp({ method: "DELETE", sessionId: "close-7" }), () => ({ status: 200 }), 1);
    const { all } = readEvents(t.dir);
    expect(all.learned.map((l) => l.id)).toEqual(["while-full"]);
    expect(all.closed.map((c) => c.id)).toEqual(["close-7"]);
    expect(all.dropped).toBe(0);
    expect(sessionFiles(t.dir)).toHaveLength(2);
  });
});

describe("deaths seen at the edge", () => {
  const notFound = () => ({
    status: 404,
    headers: [["Content-Type", "application/json"]] as [string, string][],
    body: "{}",
  });
  test("the owner answering a held session without Mcp-Session-Id (a 404) is reported as v, once per 10 s", () => {
    const p = newPlugin({ dir: t.dir, clock: new OffsetClock().freeze() });
    p.handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.a) }), notFound);
    p.handle(mcp({ sessionId: "s-up", cookie: bk(COOKIE.a) }), notFound);
    expect(readEvents(t.dir).all.suspects).toEqual([{ id: "s-up", hash: sessionHashHex("s-up"), cookie: COOKIE.a }]);
    p.clock.advance(10_001);
    p.handle(mcp({ sessionId: "s-up" }), notFound);
    expect(readEvents(t.dir).all.suspects).toHaveLength(2);
  });

  test("not reported: answers carrying the session, SSE streams, another node's answer, unknown sessions, DELETEs", () => {
    const p = newPlugin({ dir: t.dir });
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    p.handle(mcp({ sessionId: "s-up", method: "GET" }), () => ({
      status: 200,
      headers: [["Content-Type", "text/event-stream"]],
      body: "event: message\n\n",
    }));
    // A notification's 202: no body, no Content-Type, no session header.
    p.handle(mcp({ sessionId: "s-up", body: '{"jsonrpc":"2.0","method":"notifications/initialized"}' }), () => ({
      status: 202,
    }));
    // The Python SDK's 202 says application/json with an empty body (and its session header, which
    // Traefik strips from a wrapped session's answers).
    p.handle(mcp({ sessionId: "s-up", body: '{"jsonrpc":"2.0","method":"notifications/initialized"}' }), () => ({
      status: 202,
      headers: [
        ["Content-Type", "application/json"],
        ["Content-Length", "0"],
      ],
    }));
    p.handle(mcp({ sessionId: "s-up" }), () => ({
      status: 404,
      headers: [
        ["Content-Type", "application/json"],
        ["Set-Cookie", `${bk(COOKIE.b)}; Path=/`],
      ],
      body: "{}",
    }));
    p.handle(mcp({ sessionId: "never-seen" }), notFound);
    p.handle(mcp({ sessionId: "close-1", method: "DELETE" }), () => ({ status: 200 }));
    expect(readEvents(t.dir).all.suspects ?? []).toEqual([]);
  });
});

describe("activity of held sessions", () => {
  test("a request of a held session is reported (a line) once a minute per instance, with the counts; unknown and closing sessions are not", async () => {
    const p = newPlugin({ dir: t.dir, config: { eventFlushMs: 1000 }, clock: new OffsetClock().freeze() });
    for (let i = 0; i < 5; i++) p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    p.handle(mcp({ sessionId: "never-seen" }), okUpstream);
    p.handle(mcp({ sessionId: "close-3", method: "DELETE" }), () => ({ status: 200 }));
    await advanceFresh(p, 1001);
    p.handle({ method: "GET", uri: "/mcp" });
    expect(readEvents(t.dir).all.active).toEqual([{ id: "s-up", hash: sessionHashHex("s-up") }]);
    expect(sessionFiles(t.dir).length).toBe(1); // the close; activity rides the count batches
    clearEvents(t.dir);
    await advanceFresh(p, 30_000);
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    await advanceFresh(p, 30_001);
    p.handle(mcp({ sessionId: "s-up" }), okUpstream);
    await advanceFresh(p, 1001);
    p.handle({ method: "GET", uri: "/mcp" });
    expect(readEvents(t.dir).all.active).toEqual([{ id: "s-up", hash: sessionHashHex("s-up") }]);
  });
});
