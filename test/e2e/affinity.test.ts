// End to end through the real Traefik, with real Redis, the real sidecar and three reference nodes:
// the scenarios that leave every part running (1, 2, 3, 7, 10, 11, 12, 13
// of docs/e2e.md "Scenarios"). They share
// one stack; each scenario leaves it as it found it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sessionHash } from "../../lib/registry/session-hash.ts";
import { lookupSession } from "../support/view-writers.ts";
import { httpGet } from "../../dev/net.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type Stack } from "../../dev/stack.ts";
import { watchViewConsistency } from "../support/view-consistency.ts";
import {
  header,
  initializeBody,
  jsonRpcOf,
  MCP_HEADERS,
  openSse,
  PROTOCOL_VERSION,
  raw,
  rawCall,
  rawInitialize,
  setCookies,
  stickyCookieOf,
} from "../../dev/mcp-client.ts";
import {
  connectSdk,
  CounterSequence,
  counterLoad,
  newTally,
  pythonClient,
  rawSocket,
  report,
  sidecarMetric,
  type CounterLoadResult,
  type SdkSession,
} from "./helpers.ts";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ name: "e2e-affinity" });
});

afterAll(async () => {
  await stack?.stop();
});

const nodeByCookie = (c: string | undefined) => stack.nodes.find((n) => n.cookie === c);

async function waitInView(sessionId: string, timeoutMs = 5000): Promise<void> {
  await waitUntil(
    "the session in the published view",
    () => lookupSession(stack.shared, sessionHash(sessionId)),
    timeoutMs,
  );
}

function pct(n: number, d: number): string {
  return `${n}/${d} (${((100 * n) / d).toFixed(1)}%)`;
}

describe("end to end through Traefik: affinity, input, streams, reload", () => {
  it("1. cookie-less affinity: 50 TypeScript SDK sessions x 20 counter calls, plugin on vs plain sticky", async () => {
    // A fresh stack: these are the first sessions of every node incarnation, as after a deploy.
    const watch = watchViewConsistency(stack.shared);
    const on = await counterLoad(stack.mcpUrl, 50, 20);
    const consistency = await watch.stop();
    stack.writeDynamic({ plugin: false });
    await stack.waitMiddleware(false);
    let off: CounterLoadResult;
    try {
      off = await counterLoad(stack.mcpUrl, 50, 20);
    } finally {
      stack.writeDynamic({ plugin: true });
      await stack.waitMiddleware(true);
    }
    const rows: Array<[string, string, string]> = [
      ["counter calls failed", pct(on.failedCalls, on.calls), pct(off.failedCalls, off.calls)],
      ["calls answered 404", String(on.http.byStatus["404"] ?? 0), String(off.http.byStatus["404"] ?? 0)],
      ["counter discontinuities", String(on.discontinuities), String(off.discontinuities)],
      ["sessions broken", pct(on.brokenSessions, on.sessions), pct(off.brokenSessions, off.sessions)],
      ["handshakes retried", String(on.failedHandshakes), String(off.failedHandshakes)],
      ["HTTP requests failed", pct(on.http.failed, on.http.requests), pct(off.http.failed, off.http.requests)],
      [
        "call latency p50/p99 ms",
        `${on.latencyMs.p50}/${on.latencyMs.p99}`,
        `${off.latencyMs.p50}/${off.latencyMs.p99}`,
      ],
      ["wall time ms", String(on.wallMs), String(off.wallMs)],
    ];
    const w0 = Math.max(...rows.map((r) => r[0].length));
    const w1 = Math.max("plugin on".length, ...rows.map((r) => r[1].length));
    console.log(
      [
        "",
        "scenario 1: 50 sessions x 20 counter calls, official TypeScript SDK client (keeps no cookies)",
        `  ${"".padEnd(w0)}  ${"plugin on".padEnd(w1)}  plugin off (plain Traefik sticky)`,
        ...rows.map(([a, b, c]) => `  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`),
        "",
      ].join("\n"),
    );
    report("1 plugin-on", {
      ...on,
      viewChecks: consistency.checks,
      viewInconsistent: consistency.inconsistent.length,
      viewInconsistentSamples: consistency.inconsistent.slice(0, 3),
    });
    report("1 plugin-off", { ...off });
    // With the plugin not one call fails: no misroute, no edge answer, no answer lost on the way.
    expect(on.failedCalls).toBe(0);
    expect(on.failedHandshakes).toBe(0);
    expect(on.http.failed).toBe(0);
    expect(on.discontinuities).toBe(0);
    expect(on.http.byStatus["404"] ?? 0).toBe(0);
    // The view never names an owner its meta lacks: the plugin would fail open (pass untouched) on
    // such a lookup, and a cookie-less request right after initialize could land on another node.
    expect(consistency.checks).toBeGreaterThan(10);
    expect(consistency.inconsistent).toEqual([]);
    // The same load does detect misroutes: without the plugin a cookie-less client is round-robined.
    expect(off.failureRate).toBeGreaterThan(0.3);
  });

  it("2. cookie-keeping client: the Python mcp client over TLS keeps the Secure sticky cookie, sessions stable", async () => {
    const sessions = 10;
    const calls = 10;
    const out = await pythonClient([
      "--url",
      stack.mcpsUrl,
      "--cafile",
      stack.caFile,
      "--sessions",
      String(sessions),
      "--calls",
      String(calls),
    ]);
    const res: any[] = out.sessions;
    expect(res).toHaveLength(sessions);
    const errors = res.reduce((a, s) => a + s.errors.length, 0);
    for (const s of res) {
      expect(s.errors).toEqual([]);
      expect(s.values).toEqual(Array.from({ length: calls }, (_, i) => i + 1));
      // Strictly increasing: never a reset (a misroute would restart at 1 or answer 404).
      for (let i = 1; i < s.values.length; i++) expect(s.values[i]).toBeGreaterThan(s.values[i - 1]);
      expect(s.jar).toContain("_mcp_backend");
      // One Set-Cookie (the balancer's first pick), then every request carries it: nothing re-picked or repaired.
      expect(s.http.set_cookie).toBe(1);
      expect(s.http.with_cookie).toBe(s.http.requests - 1);
      expect(Object.keys(s.http.statuses).every((k) => k === "200" || k === "202")).toBe(true);
    }
    const perNode: Record<string, number> = {};
    for (const s of res) perNode[s.node] = (perNode[s.node] ?? 0) + 1;
    report("2 python-tls", {
      sessions,
      calls,
      errors,
      perNode,
      requests: res.reduce((a, s) => a + s.http.requests, 0),
      requestsWithCookie: res.reduce((a, s) => a + s.http.with_cookie, 0),
      sessionMsMax: Math.max(...res.map((s) => s.ms)),
    });
  });

  it("3. a cookie naming the wrong node reaches the owner, and the client's cookie is repaired", async () => {
    const base = stack.httpBase;
    const { sessionId, cookie } = await rawInitialize(base);
    const owner = nodeByCookie(cookie);
    expect(owner).toBeDefined();
    const others = stack.nodes.filter((n) => n !== owner);
    const results: Array<{ phase: string; status: number; value?: string; repaired?: string }> = [];
    let expectValue = 0;
    // Right after initialize (the plugin's learned/ entry), then once the sidecar's view has it.
    for (const phase of ["learned", "view"]) {
      if (phase === "view") await waitInView(sessionId);
      for (const wrong of others) {
        const r = await rawCall(base, sessionId, "counter", {
          cookie: `theme=dark; _mcp_backend=${wrong.cookie}; lang=en`,
        });
        expectValue++;
        const repaired = stickyCookieOf(r);
        results.push({ phase, status: r.status, value: r.text, repaired });
        expect(r.status).toBe(200);
        expect(r.text).toBe(String(expectValue));
        expect(repaired).toBe(owner!.cookie);
        const lines = setCookies(r).filter((l) => l.startsWith("_mcp_backend="));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/;\s*HttpOnly/i);
        expect(lines[0]).toMatch(/;\s*Secure/i);
        expect(lines[0]).toMatch(/;\s*SameSite=Strict/i);
        expect(lines[0]).toMatch(/;\s*Path=\//i);
        expect(header(r, "mcp-affinity")).toBeUndefined();
      }
    }
    // The repaired cookie is then simply obeyed: no further Set-Cookie.
    const ok = await rawCall(base, sessionId, "counter", { cookie: `_mcp_backend=${owner!.cookie}` });
    expect(ok.text).toBe(String(expectValue + 1));
    expect(stickyCookieOf(ok)).toBeUndefined();
    // Whoami with a wrong cookie names the owner.
    const who = await rawCall(base, sessionId, "whoami", { cookie: `_mcp_backend=${others[0]!.cookie}` });
    expect(JSON.parse(who.text!).node).toBe(owner!.name);
    report("3 wrong-cookie", {
      owner: owner!.name,
      requests: results.length + 2,
      repaired: results.filter((r) => r.repaired === owner!.cookie).length,
    });
  });

  it("7. non-/mcp traffic round-robins across the three nodes and gets no sticky cookie", async () => {
    const counts: Record<string, number> = {};
    let cookies = 0;
    const n = 60;
    for (let i = 0; i < n; i++) {
      // Half of them carry a sticky cookie for node 1: the default router must ignore it.
      const headers: Record<string, string> = i % 2 ? { cookie: `_mcp_backend=${stack.nodes[0]!.cookie}` } : {};
      const r = await raw(`${stack.httpBase}/graphql`, {
        method: i % 3 ? "GET" : "POST",
        headers,
        body: i % 3 ? undefined : "{}",
      });
      expect(r.status).toBe(200);
      counts[JSON.parse(r.body).node] = (counts[JSON.parse(r.body).node] ?? 0) + 1;
      if (setCookies(r).length) cookies++;
    }
    report("7 round-robin", { requests: n, perNode: counts, setCookies: cookies });
    expect(cookies).toBe(0);
    expect(Object.keys(counts).sort()).toEqual(stack.nodes.map((x) => x.name).sort());
    for (const c of Object.values(counts)) expect(c).toBeGreaterThanOrEqual(n / 3 - 4);
  });

  it("10. requests without a session id pass untouched (initialize, a sessionless 2026-07-28 POST, GET)", async () => {
    const base = stack.httpBase;
    const direct = stack.nodes[0]!.url;
    const bodies = async () => ({
      buffered: await sidecarMetric(stack, "mcp_affinity_edge_post_bodies_total", 'body="buffered"'),
      streamed: await sidecarMetric(stack, "mcp_affinity_edge_post_bodies_total", 'body="streamed"'),
    });
    const before = await bodies();
    // An initialize: answered by a node, learned by the edge, with Traefik's own sticky cookie.
    const init = await raw(`${base}/mcp`, { method: "POST", headers: MCP_HEADERS, body: initializeBody() });
    expect(init.status).toBe(200);
    expect(header(init, "mcp-session-id")).toMatch(/^[\x21-\x7e]+$/);
    expect(header(init, "mcp-affinity")).toBeUndefined();
    expect(jsonRpcOf(init.body).result.protocolVersion).toBe(PROTOCOL_VERSION);

    // An initialize whose body is near the plugin's inspection limit, with multi-byte text and the
    // method after the params: the node must still parse it (the plugin gave the body back intact).
    const big = JSON.stringify({
      jsonrpc: "2.0",
      id: 7,
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: "é—✓".repeat(5000) + "x".repeat(40_000), version: "1" },
      },
      method: "initialize",
    });
    const bigInit = await raw(`${base}/mcp`, { method: "POST", headers: MCP_HEADERS, body: big });
    expect(bigInit.status).toBe(200);
    expect(jsonRpcOf(bigInit.body).id).toBe(7);

    // Sessionless requests in the 2026-07-28 style (no initialize, no session id): whatever the node
    // says, the answer through Traefik is the node's own, never the edge's.
    const cases: Array<{ name: string; method: string; headers: Record<string, string>; body?: string }> = [
      {
        name: "2026 tools/list",
        method: "POST",
        headers: { ...MCP_HEADERS, "mcp-protocol-version": "2026-07-28" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }),
      },
      {
        name: "2026 tools/call, 300 KB",
        method: "POST",
        headers: { ...MCP_HEADERS, "mcp-protocol-version": "2026-07-28" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 2,
          method: "tools/call",
          params: { name: "whoami", arguments: { pad: "y".repeat(300_000) } },
        }),
      },
      { name: "GET without session", method: "GET", headers: { accept: "text/event-stream" } },
      { name: "DELETE without session", method: "DELETE", headers: {} },
      {
        name: "empty Mcp-Session-Id",
        method: "POST",
        headers: { ...MCP_HEADERS, "mcp-session-id": "" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/list" }),
      },
    ];
    const seen: Record<string, number> = {};
    for (const c of cases) {
      const viaEdge = await raw(`${base}/mcp`, { method: c.method, headers: c.headers, body: c.body });
      const atNode = await raw(`${direct}/mcp`, { method: c.method, headers: c.headers, body: c.body });
      seen[c.name] = viaEdge.status;
      expect(viaEdge.status, c.name).toBe(atNode.status);
      expect(viaEdge.body, c.name).toBe(atNode.body);
      expect(header(viaEdge, "mcp-affinity"), c.name).toBeUndefined();
    }
    // An initialize just under maxBufferedBodyBytes (64 KiB), method last: the plugin copies it into
    // Traefik's memory in 4 KiB pieces, finds the initialize in the last one and learns the session.
    const near = JSON.stringify({
      jsonrpc: "2.0",
      id: 8,
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: "é—✓".repeat(3000) + "x".repeat(41_000), version: "1" },
      },
      method: "initialize",
    });
    expect(Buffer.byteLength(near)).toBeGreaterThan(65_000);
    expect(Buffer.byteLength(near)).toBeLessThanOrEqual(65_536);
    const nearInit = await raw(`${base}/mcp`, { method: "POST", headers: MCP_HEADERS, body: near });
    expect(nearInit.status).toBe(200);
    expect(jsonRpcOf(nearInit.body).id).toBe(8);
    // Every POST with a body is counted by how it went on: the initializes up to 64 KiB and the
    // small sessionless POSTs buffered; the 80 KB initialize and the 300 KB call streamed.
    // An instance writes its counts when it serves a request a second or more after its last batch.
    const after = await waitUntil(
      "the plugin's body counts at the sidecar",
      async () => {
        await raw(`${base}/mcp`, { method: "GET", headers: { accept: "text/event-stream" } });
        const b = await bodies();
        return b.streamed - before.streamed >= 2 && b.buffered - before.buffered >= 4 ? b : null;
      },
      10_000,
      250,
    );
    expect(after.streamed - before.streamed).toBe(2);
    // initialize, 64 KB initialize, tools/list, empty-id tools/list (plus counts of earlier scenarios
    // an instance had not flushed yet: an instance reports when it serves its next request)
    expect(after.buffered - before.buffered).toBeGreaterThanOrEqual(4);
    report("10 sessionless", {
      initialize: init.status,
      bigInitialize: bigInit.status,
      bigInitializeBytes: Buffer.byteLength(big),
      nearInitializeBytes: Buffer.byteLength(near),
      bodiesBuffered: after.buffered - before.buffered,
      bodiesStreamed: after.streamed - before.streamed,
      ...seen,
    });
  });

  it("11. bad input through Traefik: clear 4xx JSON-RPC answers or a pass, never a 500; Traefik healthy afterwards", async () => {
    const base = stack.httpBase;
    const port = stack.ports.http;
    const { sessionId, cookie } = await rawInitialize(base);
    const owner = nodeByCookie(cookie)!;
    const results: Record<string, number> = {};
    const jsonRpc400 = (r: { status: number; body: string }, name: string) => {
      expect(r.status, name).toBe(400);
      const b = JSON.parse(r.body);
      expect(b.jsonrpc, name).toBe("2.0");
      expect(b.id, name).toBeNull();
      expect(b.error.code, name).toBe(-32600);
      expect(b.error.code, name).not.toBe(-32601);
    };
    const post = (headers: Record<string, string | string[]>) =>
      raw(`${base}/mcp`, {
        method: "POST",
        headers: { ...MCP_HEADERS, "mcp-protocol-version": PROTOCOL_VERSION, ...headers },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });

    // Invalid characters (visible ASCII only is valid).
    for (const [name, sid] of [
      ["space", "abc def"],
      ["non-ASCII", "sess-é"],
      ["DEL", "abc\x7f"],
      ["tab", "abc\tdef"],
    ] as const) {
      let status: number;
      if (/[^\x20-\x7e\t]/.test(sid)) {
        const r = await rawSocket(
          port,
          Buffer.from(
            `POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: ${sid}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
            "utf8",
          ),
        );
        status = r.status;
        if (status === 400 && r.head.toLowerCase().includes("application/json")) jsonRpc400(r, name);
      } else {
        const r = await post({ "mcp-session-id": sid });
        status = r.status;
        jsonRpc400(r, name);
        expect(header(r, "mcp-affinity")).toBe("invalid");
      }
      results[`invalid ${name}`] = status;
      expect(status, name).toBeGreaterThanOrEqual(400);
      expect(status, name).toBeLessThan(500);
    }

    // A 100 KB session id.
    const long = await post({ "mcp-session-id": "a".repeat(100 * 1024) });
    results["100 KB session id"] = long.status;
    jsonRpc400(long, "100 KB session id");

    // Duplicate Mcp-Session-Id headers (same and different values).
    for (const [name, values] of [
      ["duplicate same", [sessionId, sessionId]],
      ["duplicate different", [sessionId, "other-session"]],
    ] as const) {
      const r = await rawSocket(
        port,
        `POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: ${values[0]}\r\nMcp-Session-Id: ${values[1]}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      );
      results[name] = r.status;
      jsonRpc400(r, name);
    }

    // Hundreds of cookies around a valid session, within maxCookieBytes (4 KiB): pinned to the
    // owner, other cookies kept. Beyond it the plugin does not read them: 431 with a JSON-RPC body.
    const other = stack.nodes.find((n) => n !== owner)!.cookie;
    const many = Array.from({ length: 300 }, (_, i) => `c${i}=v${i}`).join("; ");
    expect(many.length).toBeLessThan(4096 - 40);
    const manyCookies = await rawCall(base, sessionId, "counter", { cookie: `${many}; _mcp_backend=${other}` });
    results["300 cookies"] = manyCookies.status;
    expect(manyCookies.status).toBe(200);
    expect(manyCookies.text).toBe("1");
    const tooMany = Array.from({ length: 400 }, (_, i) => `c${i}=v${i}`).join("; ");
    const tooManyCookies = await rawCall(base, sessionId, "counter", { cookie: `${tooMany}; _mcp_backend=${other}` });
    results["400 cookies"] = tooManyCookies.status;
    expect(tooManyCookies.status).toBe(431);
    expect(tooManyCookies.headers["content-type"]).toBe("application/json");
    expect(jsonRpcOf(tooManyCookies.body).error.code).toBe(-32600);
    // Thousands of tiny cookie lines.
    const lines = Array.from({ length: 300 }, (_, i) => `Cookie: k${i}=${i}\r\n`).join("");
    const callBody = JSON.stringify({
      jsonrpc: "2.0",
      id: 9,
      method: "tools/call",
      params: { name: "counter", arguments: {} },
    });
    const manyLines = await rawSocket(
      port,
      `POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: ${sessionId}\r\nMcp-Protocol-Version: ${PROTOCOL_VERSION}\r\n${lines}Content-Length: ${callBody.length}\r\nConnection: close\r\n\r\n${callBody}`,
    );
    results["300 Cookie lines"] = manyLines.status;
    expect(manyLines.status).toBe(200);
    expect(jsonRpcOf(manyLines.body).result.content[0].text).toBe("2");

    // Header injection: CR/LF in the session id and in cookie values; a cookie value that looks like
    // another header. Go's server or the plugin must refuse or neutralise them: no injected header.
    const injections: Array<[string, string]> = [
      ["CRLF in session id", `Mcp-Session-Id: ${sessionId}\r\nX-Injected: 1`],
      ["bare LF in session id", `Mcp-Session-Id: abc\nX-Injected: 1`],
      ["CR in session id", `Mcp-Session-Id: abc\rX-Injected: 1`],
      ["CRLF in cookie", `Mcp-Session-Id: ${sessionId}\r\nCookie: _mcp_backend=${owner.cookie}\r\nSet-Cookie: evil=1`],
      [
        "control char in cookie",
        `Mcp-Session-Id: ${sessionId}\r\nCookie: a=\x01b; _mcp_backend=zzzz\x0bSet-Cookie:evil`,
      ],
      ["encoded CRLF in session id", `Mcp-Session-Id: abc%0d%0aX-Injected:%201`],
    ];
    for (const [name, hdrs] of injections) {
      const r = await rawSocket(
        port,
        Buffer.from(
          `POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n${hdrs}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
          "latin1",
        ),
      );
      results[name] = r.status;
      expect(r.status, name).toBeGreaterThanOrEqual(200);
      expect(r.status, name).toBeLessThan(500);
      expect(r.head.toLowerCase(), name).not.toContain("x-injected");
      expect(r.head.toLowerCase(), name).not.toContain("evil");
    }

    // A session id made of every visible ASCII character, and one at the length limit: valid, unknown, passed to a node (its 404).
    const visible = Array.from({ length: 94 }, (_, i) => String.fromCharCode(0x21 + i)).join("");
    for (const [name, sid] of [
      ["all visible ASCII", visible],
      ["256 chars", "s".repeat(256)],
    ] as const) {
      const r = await post({ "mcp-session-id": sid });
      results[name] = r.status;
      expect(r.status, name).toBe(404);
      expect(JSON.parse(r.body).error.code).toBe(-32001);
    }
    const tooLong = await post({ "mcp-session-id": "s".repeat(257) });
    results["257 chars"] = tooLong.status;
    jsonRpc400(tooLong, "257 chars");

    report("11 bad-input", results);
    expect(Object.values(results).every((s) => s > 0 && s < 500)).toBe(true);

    // Traefik is healthy afterwards: ping, and a fresh SDK session works.
    expect((await httpGet(`${stack.apiUrl}/ping`))?.status).toBe(200);
    const s = await connectSdk(stack.mcpUrl);
    expect(await s.call("counter")).toBe("1");
    expect(await s.call("counter")).toBe("2");
    await s.end();
    expect(stack.traefik.running).toBe(true);
  });

  it("12. SSE: a session's GET stream delivers its owner's notifications; 100 streams at once", async () => {
    const base = stack.httpBase;
    // One session, through the SDK client's own standalone stream.
    const got: any[] = [];
    const s = await connectSdk(stack.mcpUrl, newTally(), { onNotification: (n) => got.push(n) });
    const who = JSON.parse(await s.call("whoami"));
    // The SDK opens its GET stream after `initialized`, asynchronously; give it a moment.
    await sleep(300);
    const sent = JSON.parse(await s.call("notify", { count: 5, intervalMs: 5, target: "standalone" }));
    await waitUntil("5 notifications on the SDK client's GET stream", async () => got.length >= 5, 5000);
    expect(got.every((n) => n.method === "notifications/message" && n.params.data.node === who.node)).toBe(true);
    expect(sent.node).toBe(who.node);
    await s.end();

    // Many streams at once, cookie-less, each pinned to its owner by the edge.
    const n = 100;
    const count = 3;
    const t0 = Date.now();
    const sessions = await Promise.all(Array.from({ length: n }, () => rawInitialize(base)));
    const owners = sessions.map((x) => nodeByCookie(x.cookie)!.name);
    const streams = await Promise.all(sessions.map((x) => openSse(base, x.sessionId)));
    expect(streams.every((st) => st.status === 200)).toBe(true);
    const answers = await Promise.all(
      sessions.map((x) =>
        rawCall(base, x.sessionId, "notify", { args: { count, intervalMs: 10, target: "standalone" } }),
      ),
    );
    await Promise.all(streams.map((st) => st.waitFor(count, 10_000)));
    const wrong = streams.filter((st, i) => st.messages.some((m) => m.params?.data?.node !== owners[i])).length;
    const received = streams.reduce((a, st) => a + st.messages.length, 0);
    for (const st of streams) st.close();
    const badAnswers = answers.filter(
      (a, i) => a.status !== 200 || JSON.parse(a.text ?? "{}").node !== owners[i],
    ).length;
    const perNode: Record<string, number> = {};
    for (const o of owners) perNode[o] = (perNode[o] ?? 0) + 1;
    report("12 sse", {
      streams: n,
      notificationsEach: count,
      received,
      fromWrongNode: wrong,
      badToolAnswers: badAnswers,
      perNode,
      wallMs: Date.now() - t0,
    });
    expect(received).toBe(n * count);
    expect(wrong).toBe(0);
    expect(badAnswers).toBe(0);
    // All of them end cleanly.
    const deletes = await Promise.all(
      sessions.map((x) =>
        raw(`${base}/mcp`, {
          method: "DELETE",
          headers: { "mcp-session-id": x.sessionId, "mcp-protocol-version": PROTOCOL_VERSION },
        }),
      ),
    );
    expect(deletes.every((d) => d.status === 200)).toBe(true);
  });

  it("13. Traefik reloads its dynamic configuration during load: no failed requests", async () => {
    const sessions: SdkSession[] = await Promise.all(Array.from({ length: 12 }, () => connectSdk(stack.mcpUrl)));
    const t0 = Date.now();
    let stop = false;
    let calls = 0;
    let failed = 0;
    let discontinuities = 0;
    const errors: string[] = [];
    const loops = sessions.map(async (s) => {
      const seq = new CounterSequence();
      while (!stop) {
        try {
          const v = Number(await s.call("counter"));
          calls++;
          if (!seq.answered(v)) discontinuities++;
        } catch (err) {
          failed++;
          seq.failed();
          calls++;
          if (errors.length < 5) errors.push(`${new Date().toISOString()} ${(err as Error).message}`);
        }
      }
    });
    // Each rewrite changes the plugin's settings, so Traefik builds new middleware instances.
    const reloads = 6;
    let applied = 0;
    for (let i = 0; i < reloads; i++) {
      await sleep(700);
      const want = String(2 + ((i + 1) % 2));
      stack.writeDynamic({
        pluginSettings: { staleAfterMs: String(stack.timing.staleAfterMs), retryAfterSeconds: want },
        comment: `reload ${i}`,
      });
      await waitUntil(
        "Traefik to apply the new dynamic configuration",
        async () => {
          const r = await httpGet(`${stack.apiUrl}/api/http/middlewares/mcp-affinity@file`);
          return r?.status === 200 && JSON.parse(r.text).plugin?.["mcp-affinity"]?.retryAfterSeconds === want;
        },
        10_000,
      );
      applied++;
    }
    await sleep(700);
    stop = true;
    await Promise.all(loops);
    await Promise.all(sessions.map((s) => s.end()));
    report("13 reload", {
      sessions: sessions.length,
      reloads: applied,
      calls,
      failed,
      discontinuities,
      errors,
      wallMs: Date.now() - t0,
    });
    expect(applied).toBe(reloads);
    expect(calls).toBeGreaterThan(100);
    expect(failed).toBe(0);
    expect(discontinuities).toBe(0);
  });
});
