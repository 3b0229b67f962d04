// POST bodies: copied into the host's memory (so the proxy never reads the client's connection
// while the answer flows) through one fixed buffer, or streamed and counted; initialize found in
// a body that arrives in pieces. Through the built plugin.wasm on the fake http-wasm host.
import { describe, expect, test } from "vitest";
import type { Exchange, HostRequestInit, NextHandler } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  CLUSTER_VIEW,
  INIT_BODY,
  clearEvents,
  initializeUpstream,
  learnedFiles,
  mcp,
  newPlugin,
  okUpstream,
  readEvents,
  bk,
} from "../support/plugin-fixture.ts";
import { parseSessionToken } from "../../lib/token/index.ts";
import { useView } from "../support/use-view.ts";

const t = useView(CLUSTER_VIEW, "per-test");
const setCookieB = `${bk(COOKIE.b)}; Path=/; HttpOnly; Secure; SameSite=Strict`;
const sse: NextHandler = () => ({
  status: 200,
  headers: [["Content-Type", "text/event-stream"]],
  body: ['event: message\ndata: {"a":1}\n\n', 'event: message\ndata: {"b":2}\n\n'],
});

/** A JSON-RPC call of exactly `size` bytes (multi-byte text in its padding). */
function callOf(size: number): string {
  const head = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"';
  const tail = '"}}}';
  const room = size - Buffer.byteLength(head + tail);
  const unit = "é€x"; // 2 + 3 + 1 bytes
  const pad = unit.repeat(Math.floor(room / 6)) + "y".repeat(room % 6);
  const s = head + pad + tail;
  expect(Buffer.byteLength(s)).toBe(size);
  return s;
}

function clean(ex: Exchange): void {
  expect(ex.trap).toBeUndefined();
  expect(ex.responseTrap).toBeUndefined();
  expect(ex.violations).toEqual([]);
}

function bodies(): Record<string, number> {
  return readEvents(t.dir).all.bodies ?? {};
}

describe("a POST of a known session", () => {
  test.each([1, 100, 4095, 4096, 4097, 12_288, 65_535, 65_536])(
    "%i bytes: the proxy gets the exact body from memory; counted buffered",
    (size) => {
      const p = newPlugin({ dir: t.dir, config: { eventFlushMs: 100 } });
      const body = callOf(Math.max(size, 120)).slice(0, size);
      const ex = p.handle(mcp({ sessionId: "s-up", body }), sse);
      clean(ex);
      expect(ex.forwarded!.bodyInMemory).toBe(true);
      expect(Buffer.from(ex.forwarded!.body).equals(Buffer.from(body))).toBe(true);
      expect(ex.forwarded!.headers.get("Content-Length")).toBe(String(Buffer.byteLength(body)));
      // The SSE answer is never held.
      expect(ex.responseBuffered).toBe(false);
      expect(ex.response.text()).toBe((sse({} as never)!.body as string[]).join(""));
      p.clock.advance(200);
      p.handle(mcp({ method: "GET" }), okUpstream); // flushes the counts
      expect(bodies()).toEqual({ buffered: 1 });
    },
  );

  test("one byte over maxBufferedBodyBytes, and a chunked body: streamed as they come, counted streamed", () => {
    const p = newPlugin({ dir: t.dir });
    const big = callOf(65_537);
    const a = p.handle(mcp({ sessionId: "s-up", body: big }), okUpstream);
    const b = p.handle({ ...mcp({ sessionId: "s-up", body: callOf(300) }), chunked: true }, okUpstream);
    for (const [ex, want] of [
      [a, big],
      [b, callOf(300)],
    ] as const) {
      clean(ex);
      expect(ex.forwarded!.bodyInMemory).toBe(false);
      expect(Buffer.from(ex.forwarded!.body).toString()).toBe(want);
    }
    p.clock.advance(2000);
    p.handle(mcp({ method: "GET" }), okUpstream);
    expect(bodies()).toEqual({ streamed: 2 });
  });

  test.each([
    ["0 (off)", 0, 100, false],
    ["1 MiB (string)", "1048576", 1_048_576, true],
    ["1000 (typed)", 1000, 1000, true],
    ["1000", 1000, 1001, false],
  ] as const)("maxBufferedBodyBytes %s, body %i bytes: in memory %s", (_n, v, size, inMemory) => {
    const p = newPlugin({ dir: t.dir, config: { maxBufferedBodyBytes: v } });
    const body = callOf(size);
    const ex = p.handle(mcp({ sessionId: "s-up", body }), okUpstream);
    clean(ex);
    expect(ex.forwarded!.bodyInMemory).toBe(inMemory);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
  });

  test("GET, DELETE, a POST with Content-Length: 0 and the edge's own answers read no body and count none", () => {
    const p = newPlugin({ dir: t.dir });
    const reqs: Array<[HostRequestInit, number]> = [
      [mcp({ method: "GET", sessionId: "s-up" }), 200],
      [mcp({ method: "DELETE", sessionId: "s-up" }), 200],
      [mcp({ sessionId: "s-up", body: "", headers: [["Content-Length", "0"]] }), 200],
      [mcp({ sessionId: "s-gone", body: callOf(500) }), 404],
      [mcp({ sessionId: "s-down", body: callOf(500) }), 503],
      [mcp({ sessionId: "bad id", body: callOf(500) }), 400],
    ];
    for (const [req, status] of reqs) {
      const ex = p.handle(req, okUpstream);
      clean(ex);
      expect(ex.response.status).toBe(status);
      if (ex.forwarded) expect(ex.forwarded.bodyInMemory).toBe(false);
    }
    p.clock.advance(2000);
    p.handle(mcp({ method: "GET" }), okUpstream);
    expect(bodies()).toEqual({});
  });
});

describe("a POST without a session id", () => {
  test("a tools/list (sessionless 2026-style call) is buffered too, not learned", () => {
    const p = newPlugin({ dir: t.dir });
    const body = callOf(2000);
    const ex = p.handle(mcp({ body }), sse);
    clean(ex);
    expect(ex.forwarded!.bodyInMemory).toBe(true);
    expect(ex.responseBuffered).toBe(false);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
  });

  // The key and value straddle every cut between two 4 KiB pieces, with whitespace around the colon.
  test('an initialize whose "method" : "initialize" straddles the copy buffer\'s cuts is still found', () => {
    const p = newPlugin({ dir: t.dir });
    const member = '"method" :\n "initialize"';
    for (let k = 0; k <= member.length; k++) {
      clearEvents(t.dir);
      const prefix =
        '{"jsonrpc":"2.0","id":1,"params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"},"pad":"';
      const padLen = 4096 * 3 - k - prefix.length - 3; // the member starts k bytes before a cut
      const body = prefix + "p".repeat(padLen) + '"},' + member + "}";
      expect(JSON.parse(body).method).toBe("initialize");
      const id = `straddle-${k}`;
      const ex = p.handle(mcp({ body }), initializeUpstream(id, { setCookie: setCookieB }));
      clean(ex);
      expect(ex.responseBuffered, `cut ${k} bytes into the member`).toBe(true);
      expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
      // Learned by the id the client got: the server's own, wrapped with its routing token.
      expect(readEvents(t.dir).all.learned.map((l) => parseSessionToken(l.id)?.inner)).toEqual([id]);
    }
  });

  test.each([
    ['"method":"initialized"', false],
    ['"method" "initialize"', false],
    ['"methods":"initialize"', false],
    ['"xmethod":"initialize"', false],
    ['""method":"initialize"', true],
    ['"method"\t:\r\n"initialize"', true],
  ])("%s -> initialize %s", (member, want) => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(
      mcp({ body: `{"jsonrpc":"2.0","id":1,${member}}` }),
      initializeUpstream("m", { setCookie: setCookieB }),
    );
    expect(ex.responseBuffered).toBe(want);
    expect(ex.forwarded!.bodyInMemory).toBe(true);
  });

  test("maxBufferedBodyBytes 0: an initialize is still read (learning needs it) and learned; a larger one is not", () => {
    const p = newPlugin({ dir: t.dir, config: { maxBufferedBodyBytes: 0 } });
    const ex = p.handle(mcp({ body: INIT_BODY }), initializeUpstream("still-learned", { setCookie: setCookieB }));
    clean(ex);
    expect(ex.responseBuffered).toBe(true);
    expect(ex.forwarded!.bodyInMemory).toBe(true);
    expect(learnedFiles(t.dir).size).toBe(1);
    const big = INIT_BODY.replace('"params":{', `"params":{"pad":"${"p".repeat(70_000)}",`);
    const ex2 = p.handle(mcp({ body: big }), initializeUpstream("too-big", { setCookie: setCookieB }));
    clean(ex2);
    expect(ex2.responseBuffered).toBe(false);
    expect(ex2.forwarded!.bodyInMemory).toBe(false);
  });

  test("an initialize above maxInitializeBodyBytes but within maxBufferedBodyBytes is buffered, not inspected", () => {
    const p = newPlugin({ dir: t.dir, config: { maxInitializeBodyBytes: 1000, maxBufferedBodyBytes: 100_000 } });
    const big = INIT_BODY.replace('"params":{', `"params":{"pad":"${"p".repeat(5000)}",`);
    const ex = p.handle(mcp({ body: big }), initializeUpstream("not-inspected", { setCookie: setCookieB }));
    clean(ex);
    expect(ex.forwarded!.bodyInMemory).toBe(true);
    expect(ex.responseBuffered).toBe(false);
    expect(learnedFiles(t.dir).size).toBe(0);
  });
});
