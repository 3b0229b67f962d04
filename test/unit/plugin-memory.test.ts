// Memory stays flat: every open SSE stream pins one instance in Traefik, so an instance's linear
// memory must not grow with the number of requests it has served.
import { expect, test } from "vitest";
import type { HostRequestInit, NextHandler } from "../host/http-wasm-host.ts";
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
import { mintSessionId, wrapSessionId } from "../../lib/token/index.ts";

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

const t = useView({ ...SPEC, published: Date.now() + 3_600_000 });

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
    if (ex.response.status !== want || ex.trap || ex.responseTrap) throw new Error(`request ${i} (${kind}): ${ex.response.status} ${ex.trap ?? ex.responseTrap ?? ""}`);
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
  for (const [k] of KINDS) expect(seen.get(k), k).toBeGreaterThan(7_500);
}, 120_000);
