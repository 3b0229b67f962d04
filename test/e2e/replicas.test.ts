// Two real Traefik replicas (a sidecar and a shared directory each, one Redis, the same nodes) as in
// a Kubernetes deployment with replicas: 2, with the official TypeScript SDK client (keeps no
// cookies), one user at a time: a new client with its own connections per session, so the request
// right after initialize may reach the other replica before any propagation could have told it.
// Two fronts: a per-connection L4 balancer (a Service, an NLB) and every request to a random replica.
// Nodes: the reference nodes (node library: ids carry a routing token) and a Python MCP server on the
// official SDK (no node library: the plugin wraps its ids). The plugin-on runs must be clean; the
// same loads with the plugin off (plain sticky) are printed beside them.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ownConnectionsFetch, randomReplicaFetch, startL4Balancer, type L4Balancer } from "../support/l4-balancer.ts";
import { startStack, type AccessLogRow, type NodeKind, type Stack } from "../support/stack.ts";
import { sleep } from "../support/wait.ts";
import { connectSdk, newTally, report, type HttpTally, type SdkSession } from "./helpers.ts";

const SESSIONS = 100;
const CALLS = 5;
const HANDSHAKE_ATTEMPTS = 5;

type Front = "l4" | "random";

/** A short, non-secret name for a session id in failure reports. */
const idTag = (sid: string | undefined) => (sid ? createHash("sha256").update(sid).digest("hex").slice(0, 12) : "-");

interface Failure {
  at: string;
  session: string;
  what: string;
}

interface SequentialResult {
  front: Front;
  sessions: number;
  calls: number;
  /** Sessions whose handshake (initialize + initialized) failed at least once. */
  failedHandshakes: number;
  /** Handshake attempts that failed (a failed one is retried with a new client). */
  failedHandshakeAttempts: number;
  failedCalls: number;
  /** Sessions whose counter values were not exactly 1..CALLS. */
  discontinuousSessions: number;
  /** /mcp requests a node answered 404, from both replicas' access logs. */
  nodeSide404: number;
  /** /mcp requests the edge answered 404 itself. */
  edge404: number;
  http: HttpTally;
  /** Requests per replica (access logs). */
  perReplica: number[];
  wallMs: number;
  failures: Failure[];
  node404Rows: string[];
}

/** Requests of the /mcp router in [from, to] from a replica's access log. */
function mcpRows(rows: AccessLogRow[], from: number, to: number): AccessLogRow[] {
  return rows.filter((r) => (r.RouterName ?? "").includes("mcp") && Date.parse(r.StartUTC) >= from && Date.parse(r.StartUTC) <= to);
}

async function sequentialLoad(stack: Stack, lb: L4Balancer, front: Front): Promise<SequentialResult> {
  const http = newTally();
  const failures: Failure[] = [];
  const fail = (session: string | undefined, what: string) => failures.push({ at: new Date().toISOString(), session: idTag(session), what: what.slice(0, 200) });
  let failedHandshakes = 0;
  let failedHandshakeAttempts = 0;
  let failedCalls = 0;
  let discontinuousSessions = 0;
  const bases = stack.replicas.map((r) => r.httpBase);
  const t0 = Date.now();
  for (let i = 0; i < SESSIONS; i++) {
    // One user: its own client, transport and connections.
    const conn = front === "l4" ? ownConnectionsFetch() : randomReplicaFetch(bases);
    const url = front === "l4" ? `${lb.base}/mcp` : stack.mcpUrl;
    let s: SdkSession | null = null;
    try {
      for (let attempt = 0; attempt < HANDSHAKE_ATTEMPTS && !s; attempt++) {
        try {
          s = await connectSdk(url, http, { fetch: conn.fetch });
        } catch (err) {
          failedHandshakeAttempts++;
          if (attempt === 0) failedHandshakes++;
          fail(undefined, `handshake: ${(err as Error).message}`);
        }
      }
      if (!s) {
        failedCalls += CALLS;
        continue;
      }
      const values: string[] = [];
      for (let c = 0; c < CALLS; c++) {
        try {
          values.push(await s.call("counter"));
        } catch (err) {
          failedCalls++;
          values.push("x");
          fail(s.sessionId, `call ${c + 1}: ${(err as Error).message}`);
        }
      }
      const want = Array.from({ length: CALLS }, (_, k) => String(k + 1)).join(",");
      if (values.join(",") !== want) {
        discontinuousSessions++;
        fail(s.sessionId, `counter ${values.join(",")}`);
      }
      for (const e of s.errors) fail(s.sessionId, `client error: ${e.message}`);
      await s.end();
    } finally {
      await conn.close();
    }
  }
  const t1 = Date.now();
  // The access log is written when a request ends: give the last lines a moment.
  await sleep(300);
  let nodeSide404 = 0;
  let edge404 = 0;
  const perReplica: number[] = [];
  const node404Rows: string[] = [];
  for (const r of stack.replicas) {
    const rows = mcpRows(r.accessLog(), t0 - 50, t1 + 50);
    perReplica.push(rows.length);
    for (const row of rows) {
      if (row.OriginStatus === 404) {
        nodeSide404++;
        if (node404Rows.length < 10) node404Rows.push(`${r.name} ${row.StartUTC} ${row.RequestMethod} -> ${row.ServiceURL}`);
      } else if (row.DownstreamStatus === 404 && !row.OriginStatus) edge404++;
    }
  }
  return { front, sessions: SESSIONS, calls: SESSIONS * CALLS, failedHandshakes, failedHandshakeAttempts, failedCalls, discontinuousSessions, nodeSide404, edge404, http, perReplica, wallMs: t1 - t0, failures, node404Rows };
}

const pct = (n: number, d: number) => `${n}/${d} (${((100 * n) / d).toFixed(1)}%)`;

function table(kind: NodeKind, on: SequentialResult[], off: SequentialResult[]): string {
  const rows: Array<[string, (r: SequentialResult) => string]> = [
    ["sessions with a failed handshake", (r) => pct(r.failedHandshakes, r.sessions)],
    ["failed handshake attempts", (r) => String(r.failedHandshakeAttempts)],
    ["failed counter calls", (r) => pct(r.failedCalls, r.calls)],
    ["sessions with counters not 1..5", (r) => String(r.discontinuousSessions)],
    ["node-side 404s (access logs)", (r) => String(r.nodeSide404)],
    ["edge 404s", (r) => String(r.edge404)],
    ["HTTP requests failed", (r) => pct(r.http.failed, r.http.requests)],
    ["requests per replica", (r) => r.perReplica.join(" / ")],
    ["wall time ms", (r) => String(r.wallMs)],
  ];
  const head = ["", ...on.map((r) => `plugin on, ${r.front}`), ...off.map((r) => `plugin off, ${r.front}`)];
  const lines = [head, ...rows.map(([name, f]) => [name, ...on.map(f), ...off.map(f)])];
  const widths = head.map((_, c) => Math.max(...lines.map((l) => l[c]!.length)));
  return [`two replicas, ${kind} nodes, ${SESSIONS} sessions x ${CALLS} calls one user at a time:`, ...lines.map((l) => l.map((v, c) => v.padEnd(widths[c]!)).join(" | "))].join("\n");
}

for (const kind of ["reference", "python"] as const) {
  describe(`two Traefik replicas, ${kind} nodes`, () => {
    let stack: Stack;
    let lb: L4Balancer;

    beforeAll(async () => {
      stack = await startStack({ name: `replicas-${kind}`, replicas: 2, nodeKind: kind, nodes: 3 });
      lb = await startL4Balancer({ targets: stack.replicas.map((r) => ({ host: "127.0.0.1", port: r.ports.http })) });
    }, 120_000);

    afterAll(async () => {
      await lb?.close();
      await stack?.stop();
    });

    it(`${SESSIONS} sessions x ${CALLS} counter calls through a per-connection L4 balancer and to a random replica per request: clean with the plugin, plain sticky printed beside`, async () => {
      const on = [await sequentialLoad(stack, lb, "l4"), await sequentialLoad(stack, lb, "random")];
      stack.writeDynamic({ plugin: false });
      await stack.waitMiddleware(false);
      let off: SequentialResult[];
      try {
        off = [await sequentialLoad(stack, lb, "l4"), await sequentialLoad(stack, lb, "random")];
      } finally {
        stack.writeDynamic({ plugin: true });
        await stack.waitMiddleware(true);
      }
      console.log(table(kind, on, off));
      report(`replicas ${kind}`, {
        on: on.map((r) => ({ front: r.front, failedHandshakes: r.failedHandshakes, failedCalls: r.failedCalls, nodeSide404: r.nodeSide404, discontinuous: r.discontinuousSessions, wallMs: r.wallMs })),
        off: off.map((r) => ({ front: r.front, failedHandshakes: r.failedHandshakes, failedCalls: r.failedCalls, nodeSide404: r.nodeSide404, discontinuous: r.discontinuousSessions, wallMs: r.wallMs })),
        l4Picks: lb.picks,
      });
      for (const r of on) {
        if (r.failures.length || r.nodeSide404) console.log(`plugin on, ${r.front}: failures`, r.failures.slice(0, 10), "node 404s", r.node404Rows);
      }
      // Both replicas took part in every front.
      for (const r of [...on, ...off]) for (const n of r.perReplica) expect(n, r.front).toBeGreaterThan(0);
      for (const r of on) {
        expect({ front: r.front, handshakes: r.failedHandshakes, calls: r.failedCalls, discontinuous: r.discontinuousSessions, node404: r.nodeSide404, failures: r.failures.slice(0, 5) }).toEqual({
          front: r.front,
          handshakes: 0,
          calls: 0,
          discontinuous: 0,
          node404: 0,
          failures: [],
        });
      }
      // The plain-sticky run shows what the load detects: without cookies, requests scatter.
      expect(off.some((r) => r.failedHandshakes + r.failedCalls > 0)).toBe(true);
    }, 300_000);
  });
}
