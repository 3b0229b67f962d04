// Memory stays flat: every open SSE stream pins one instance in Traefik, so an instance's linear
// memory must not grow with the number of requests it has served.
import { expect, test } from "vitest";
import type { Exchange, HostRequestInit, NextHandler } from "../host/http-wasm-host.ts";
import { OffsetClock } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  INIT_BODY,
  clearEvents,
  initializeUpstream,
  mcp,
  newPlugin,
  okUpstream,
  CLUSTER_VIEW,
  bk,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";
import { mintSessionId, wrapSessionId, wrapTaskId } from "../../lib/token/index.ts";

const SPEC = CLUSTER_VIEW;
const MINTED = mintSessionId(COOKIE.a, "0badf00d");
const WRAPPED = wrapSessionId("server-own-id", COOKIE.a, "0badf00d");
const echoUpstream: NextHandler = () => ({ status: 200, headers: [["Mcp-Session-Id", "server-own-id"]], body: "{}" });

// The mix, by kind: [request, upstream, expected status].
const KINDS: [string, (i: number) => HostRequestInit, NextHandler | undefined, number][] = [
  ["hit", () => mcp({ sessionId: "s-up", cookie: `theme=dark; ${bk(COOKIE.a)}` }), okUpstream, 200],
  ["pin", () => mcp({ sessionId: "s-up", cookie: "theme=dark; lang=en" }), okUpstream, 200],
  ["repair", () => mcp({ sessionId: "s-up", cookie: bk(COOKIE.b) }), okUpstream, 200],
  ["lost", () => mcp({ sessionId: "s-gone" }), undefined, 404],
  ["unavailable", () => mcp({ sessionId: "s-down" }), undefined, 503],
  ["sessionless", () => mcp({ method: "GET" }), okUpstream, 200],
  ["unknown", (i) => mcp({ sessionId: `unknown-${i}` }), okUpstream, 200],
  ["invalid", () => mcp({ sessionId: "bad id" }), undefined, 400],
  ["token", () => mcp({ sessionId: MINTED }), okUpstream, 200],
  ["wrapped", () => mcp({ sessionId: WRAPPED }), echoUpstream, 200],
];

const t = useView({ ...SPEC, published: Date.now() }); // fresh for the whole run: staleAfterMs is an hour below

/** A tools/call of `size` bytes; an initialize of `size` bytes with its method last. */
const bigCall = (size: number) => {
  const head = '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"';
  return head + "x".repeat(size - head.length - 4) + '"}}}';
};
const bigInitialize = (size: number) => {
  const head =
    '{"jsonrpc":"2.0","id":1,"params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"},"pad":"';
  const tail = '"},"method":"initialize"}';
  return head + "p".repeat(size - head.length - tail.length) + tail;
};
// Bodies the plugin copies through its fixed buffer (at the default bound), and ones it streams.
const BODY_64K = bigCall(65_536);
const INIT_60K = bigInitialize(60_000);
const BODY_200K = bigCall(200_000);

test("100,000 requests through one instance leave its memory size unchanged after a 1,000-request warm-up", () => {
  const p = newPlugin({ dir: t.dir, config: { staleAfterMs: 3_600_000 } });
  const host = p.pool.instances[0]!;
  const seen = new Map<string, number>();
  let i = 0;
  const one = () => {
    let ex;
    let want: number;
    let kind: string;
    if (i % 100 === 99) {
      kind = "initialize";
      ex = host.handle(mcp({ body: INIT_BODY }), initializeUpstream(`mem-${i}`));
      want = 200;
    } else if (i % 100 === 29) {
      kind = "initialize-60k";
      ex = host.handle(mcp({ body: INIT_60K }), initializeUpstream(`mem-big-${i}`));
      want = 200;
      if (!ex.responseBuffered || ex.forwarded?.body.length !== INIT_60K.length)
        throw new Error(`request ${i}: 60 KB initialize not learned or not forwarded whole`);
    } else if (i % 100 === 39 || i % 100 === 59) {
      kind = i % 100 === 39 ? "buffered-64k" : "streamed-200k";
      const body = i % 100 === 39 ? BODY_64K : BODY_200K;
      ex = host.handle(mcp({ sessionId: "s-up", body }), okUpstream);
      want = 200;
      if (ex.forwarded?.bodyInMemory !== (i % 100 === 39) || ex.forwarded?.body.length !== body.length)
        throw new Error(`request ${i} (${kind}): body not passed on as expected`);
    } else if (i % 100 === 49) {
      kind = "delete";
      ex = host.handle(mcp({ method: "DELETE", sessionId: "s-up" }), () => ({ status: 200 }));
      want = 200;
    } else {
      const [k, req, up, status] = KINDS[i % KINDS.length]!;
      kind = k;
      ex = host.handle(req(i), up);
      want = status;
    }
    if (ex.response.status !== want || ex.trap || ex.responseTrap)
      throw new Error(`request ${i} (${kind}): ${ex.response.status} ${ex.trap ?? ex.responseTrap ?? ""}`);
    seen.set(kind, (seen.get(kind) ?? 0) + 1);
    if (i % 1000 === 999) clearEvents(t.dir); // the sidecar consumes events
    i++;
  };
  for (let n = 0; n < 1_000; n++) one();
  const before = host.memoryBytes;
  for (let n = 0; n < 100_000; n++) one();
  expect(host.memoryBytes).toBe(before);
  // One 64 KiB page per instance: every open SSE stream holds an instance in Traefik.
  expect(host.memoryBytes).toBe(65_536);
  expect(host.requests).toBe(101_000);
  expect(seen.get("initialize")).toBe(1010);
  for (const k of ["initialize-60k", "buffered-64k", "streamed-200k"]) expect(seen.get(k), k).toBe(1010);
  for (const [k] of KINDS) expect(seen.get(k), k).toBeGreaterThan(4_000);
}, 120_000);

test("1 MiB bodies copied at maxBufferedBodyBytes 16 MiB: the instance stays in its first page", () => {
  const p = newPlugin({ dir: t.dir, config: { staleAfterMs: 3_600_000, maxBufferedBodyBytes: 16_777_216 } });
  const host = p.pool.instances[0]!;
  const body = bigCall(1_048_576);
  for (let n = 0; n < 200; n++) {
    const ex = host.handle(mcp({ sessionId: "s-up", body }), okUpstream);
    expect(ex.forwarded!.bodyInMemory).toBe(true);
    expect(ex.forwarded!.body.length).toBe(body.length);
  }
  expect(host.memoryBytes).toBe(65_536);
}, 120_000);

// An instance the pool hands a request now and then reloads the meta (viewRefreshMs, 100 ms) before
// each one: what it leaves behind must not add up either (seen on the real host under real traffic).
test.each([
  ["back to back", 0],
  ["with a meta reload and an event flush before every request", 1100],
])(
  "1 MiB Cookie lines, session ids and initialize bodies never grow an instance past its first page: %s",
  (_, gapMs) => {
    const clock = new OffsetClock().freeze();
    const p = newPlugin({ dir: t.dir, clock, config: { staleAfterMs: 3_600_000 } });
    const host = p.pool.instances[0]!;
    const MiB = 1 << 20;
    const bigCookie = "a=" + "c".repeat(MiB);
    const bigId = "i".repeat(MiB);
    const bigBody = INIT_BODY.slice(0, -1) + ',"pad":"' + "b".repeat(MiB) + '"}';
    // The largest inputs the plugin does read: a body and Cookie lines at their bounds (2048 and 4096 bytes).
    const edgeCookie = `${bk(COOKIE.b)}; x=` + "c".repeat(4096 - 1 - bk(COOKIE.b).length - 4);
    const shortPairs = "a;".repeat(2047) + "a";
    const edgeBody = INIT_BODY.slice(0, -1) + ',"pad":"' + "b".repeat(2048 - INIT_BODY.length - 9) + '"}';
    expect(edgeBody.length).toBe(2048);
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const runs: [string, () => Exchange][] = [
        ["cookie", () => host.handle(mcp({ sessionId: "s-up", cookie: bigCookie }), okUpstream)],
        ["id", () => host.handle(mcp({ sessionId: bigId }), okUpstream)],
        ["body", () => host.handle(mcp({ body: bigBody, cookie: bigCookie }), initializeUpstream(`big-${i}`))],
        ["edge-body", () => host.handle(mcp({ body: edgeBody, cookie: edgeCookie }), initializeUpstream(`edge-${i}`))],
        [
          "edge-body-cookie",
          () =>
            host.handle(
              mcp({ body: edgeBody, cookie: edgeCookie.slice(0, 2047) }),
              initializeUpstream(`edgec-${i}`, { setCookie: null }),
            ),
        ],
        ["edge-cookie", () => host.handle(mcp({ sessionId: "s-up", cookie: edgeCookie }), okUpstream)],
        // Within maxCookieBytes, but 2,048 one-letter pairs: the pinned line ("; " before each) would
        // be half as long again, past its buffer.
        ["short-pairs", () => host.handle(mcp({ sessionId: "s-up", cookie: shortPairs }), okUpstream)],
        ["init-cookie", () => host.handle(mcp({ body: INIT_BODY, cookie: bigCookie }), initializeUpstream(`ic-${i}`))],
      ];
      for (const [kind, run] of runs) {
        clock.advance(gapMs);
        const ex = run();
        if (ex.trap || ex.responseTrap) throw new Error(`${kind}: ${ex.trap ?? ex.responseTrap}`);
        const key = `${kind} ${ex.response.status}${ex.responseBuffered ? " learned" : ""}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
      if (i % 50 === 49) clearEvents(t.dir);
    }
    // The documented rule: Cookie lines too large to read get 431, an oversized id 400, an initialize
    // body beyond maxInitializeBodyBytes passes untouched (not learned); inputs at the bounds are read.
    expect(Object.fromEntries(outcomes)).toEqual({
      "cookie 431": 400,
      "id 400": 400,
      "body 200": 400,
      "edge-body 200 learned": 400,
      "edge-cookie 200": 400,
      "short-pairs 431": 400,
      // Both at an initialize's bounds (2048-byte body, 2048 bytes of Cookie lines), no Set-Cookie: learned from the client's cookie.
      "edge-body-cookie 200 learned": 400,
      // Cookie lines too large on an initialize: learned from the balancer's Set-Cookie alone.
      "init-cookie 200 learned": 400,
    });
    expect(host.memoryBytes).toBe(65_536);
  },
  120_000,
);

// Task handles: answers held and rewritten, request bodies rewritten, all through the instance's
// fixed buffers (tasks.ts); large answers and bodies must leave no trace in its memory.
test("1 MiB task answers and 60 KiB task requests never grow an instance past its first page", () => {
  const p = newPlugin({ dir: t.dir, config: { staleAfterMs: 3_600_000 } });
  const host = p.pool.instances[0]!;
  const MiB = 1 << 20;
  const handle = wrapTaskId("task-1", COOKIE.a, "0badf00d");
  const meta = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": { extensions: { "io.modelcontextprotocol/tasks": {} } },
  };
  const call = JSON.stringify({
    jsonrpc: "2.0",
    id: 3,
    method: "tools/call",
    params: { name: "t", arguments: {}, _meta: meta },
  });
  const created = (pad: number) =>
    JSON.stringify({
      jsonrpc: "2.0",
      id: 3,
      result: { taskId: "task-1", statusMessage: "s".repeat(pad), resultType: "task" },
    });
  const progress = `event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"message":"${"p".repeat(MiB)}"}}\n\n`;
  const taskAnswer =
    (pad: number): NextHandler =>
    () => ({
      status: 200,
      headers: [
        ["Content-Type", "text/event-stream"],
        ["Set-Cookie", `${bk(COOKIE.a)}; Path=/`],
      ],
      body: [progress, `data: ${created(pad)}\n\n`],
    });
  const getBody = (pad: number) =>
    JSON.stringify({
      jsonrpc: "2.0",
      id: 4,
      method: "tasks/update",
      params: { taskId: handle, inputResponses: { a: { text: "u".repeat(pad) } } },
    });
  const getAnswer: NextHandler = () => ({
    status: 200,
    headers: [["Content-Type", "application/json"]],
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 4,
      result: { resultType: "complete", taskId: "task-1", status: "completed", result: { text: "r".repeat(MiB) } },
    }),
  });
  const headers = (method: string): [string, string][] => [
    ["Mcp-Method", method],
    ["Mcp-Name", method === "tools/call" ? "t" : handle],
    ["MCP-Protocol-Version", "2026-07-28"],
  ];
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 60; i++) {
    const runs: [string, () => Exchange][] = [
      ["created", () => host.handle(mcp({ body: call, headers: headers("tools/call") }), taskAnswer(10))],
      ["created-far", () => host.handle(mcp({ body: call, headers: headers("tools/call") }), taskAnswer(4096))],
      [
        "get",
        () =>
          host.handle(
            mcp({ body: getBody(10).replace("tasks/update", "tasks/get"), headers: headers("tasks/get") }),
            getAnswer,
          ),
      ],
      ["update-60k", () => host.handle(mcp({ body: getBody(60_000), headers: headers("tasks/update") }), okUpstream)],
      ["update-1m", () => host.handle(mcp({ body: getBody(MiB), headers: headers("tasks/update") }), okUpstream)],
    ];
    for (const [kind, run] of runs) {
      const ex = run();
      if (ex.trap || ex.responseTrap) throw new Error(`${kind}: ${ex.trap ?? ex.responseTrap}`);
      expect(ex.violations, kind).toEqual([]);
      const text = ex.response.text();
      const wrapped = text.includes(`"taskId":"mt1.`);
      const key = `${kind} ${ex.response.status}${wrapped ? " wrapped" : ""}`;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }
    if (i % 20 === 19) clearEvents(t.dir);
  }
  // A task id held longer than the wrapper's bound goes out as it came; a body past
  // maxBufferedBodyBytes is refused, not rewritten.
  expect(Object.fromEntries(outcomes)).toEqual({
    "created 200 wrapped": 60,
    "created-far 200": 60,
    "get 200 wrapped": 60,
    "update-60k 200": 60,
    "update-1m 413": 60,
  });
  expect(host.memoryBytes).toBe(65_536);
}, 120_000);
