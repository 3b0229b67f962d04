// Two real Traefik replicas (a sidecar and a shared directory each, one Redis, the same nodes) as in
// a Kubernetes deployment with replicas: 2, with the official TypeScript SDK client (keeps no
// cookies), one user at a time: a new client with its own connections per session, so the request
// right after initialize may reach the other replica before any propagation could have told it.
// Two fronts: a per-connection L4 balancer (a Service, an NLB) and every request to a random replica.
// Nodes: the reference nodes (node library: ids carry a routing token) and a Python MCP server on the
// official SDK (no node library: the plugin wraps its ids). The plugin-on runs must be clean; the
// same loads with the plugin off (plain sticky) are printed beside them (with the fast path on, its
// routers stay without the plugin: reference sessions are routed by their token and must be clean
// too). Every request carries a call id (X-E2e-Call, kept by Traefik's access log): a failure is
// printed with the rows of its calls.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sessionTag } from "../../lib/registry/session-hash.ts";
import { bootTag, parseSessionToken } from "../../lib/token/index.ts";
import { isProxyCut, type AccessLogRow } from "../../dev/access-log.ts";
import { ownConnectionsFetch, randomReplicaFetch, startL4Balancer, type L4Balancer } from "../../dev/l4-balancer.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type NodeKind, type Stack } from "../../dev/stack.ts";
import { header, PROTOCOL_VERSION, raw, rawCall, rawInitialize } from "../../dev/mcp-client.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";
import { connectSdk, CounterSequence, newTally, report, type HttpTally, type SdkSession } from "./helpers.ts";

const SESSIONS = 100;
const CALLS = 5;
const HANDSHAKE_ATTEMPTS = 5;

type Front = "l4" | "random";

/** A short, non-secret name for a session id in failure reports. */
const idTag = (sid: string | undefined) => (sid ? sessionTag(sid) : "-");

interface Failure {
  at: string;
  session: string;
  what: string;
  /** Its exchanges that got no 2xx, each by call id with the access-log row that holds it (replica, statuses, node). */
  calls?: string[];
}

/** One HTTP exchange of the SDK client, as the client saw it (status -1: no answer). */
interface Exchange {
  t0: number;
  t: number;
  call: string;
  method: string;
  rpc: string;
  status: number;
  session: string;
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
  /** Sessions whose counter values skipped or repeated (a failed call may have run: one skip each). */
  discontinuousSessions: number;
  /** /mcp requests a node answered 404, from both replicas' access logs. */
  nodeSide404: number;
  /** /mcp requests the edge answered 404 itself. */
  edge404: number;
  /** Answers Traefik's proxy cut (isProxyCut, either replica) during the run: measured, never excused. */
  proxyCuts: number;
  http: HttpTally;
  /** Requests per replica (access logs). */
  perReplica: number[];
  /** Requests Traefik's fast-path routers took (access logs: router `mcp-fast-*`), both replicas. */
  fastRouted: number;
  wallMs: number;
  failures: Failure[];
  node404Rows: string[];
}

/** Requests of the /mcp router in [from, to] from a replica's access log. */
function mcpRows(rows: AccessLogRow[], from: number, to: number): AccessLogRow[] {
  return rows.filter(
    (r) => (r.RouterName ?? "").includes("mcp") && Date.parse(r.StartUTC) >= from && Date.parse(r.StartUTC) <= to,
  );
}

/** Records what the client sent and got, by call id and session tag (never the id). */
function recording(base: typeof fetch, log: Exchange[]): typeof fetch {
  return async (input, init) => {
    let rpc = "";
    try {
      rpc = typeof init?.body === "string" ? (JSON.parse(init.body).method ?? "") : "";
    } catch {
      /* not JSON */
    }
    const headers = new Headers(init?.headers);
    const sid = headers.get("mcp-session-id");
    const x = {
      t0: Date.now(),
      call: headers.get(CALL_ID_HEADER) ?? "",
      method: init?.method ?? "GET",
      rpc,
      session: sid ? sessionTag(sid) : "-",
    };
    try {
      const r = await base(input, init);
      log.push({ ...x, t: Date.now(), status: r.status });
      return r;
    } catch (err) {
      if ((err as Error).name !== "AbortError") log.push({ ...x, t: Date.now(), status: -1 });
      throw err;
    }
  };
}

async function sequentialLoad(stack: Stack, lb: L4Balancer, front: Front): Promise<SequentialResult> {
  const http = newTally();
  const exchanges: Exchange[] = [];
  const failures: Failure[] = [];
  /** Failures to name by their exchanges' call ids: [from, to] of the failed operation. */
  const pending: Array<{ f: Failure; from: number; to: number }> = [];
  const fail = (session: string | undefined, what: string, from?: number) => {
    const f = { at: new Date().toISOString(), session: idTag(session), what: what.slice(0, 200) };
    failures.push(f);
    if (from !== undefined) pending.push({ f, from, to: Date.now() });
  };
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
        const h0 = Date.now();
        try {
          s = await connectSdk(url, http, { fetch: recording(conn.fetch, exchanges), onCallId: () => {} });
        } catch (err) {
          failedHandshakeAttempts++;
          if (attempt === 0) failedHandshakes++;
          fail(undefined, `handshake: ${(err as Error).message}`, h0);
        }
      }
      if (!s) {
        failedCalls += CALLS;
        continue;
      }
      const values: string[] = [];
      const seq = new CounterSequence();
      let skipped = false;
      for (let c = 0; c < CALLS; c++) {
        const c0 = Date.now();
        try {
          const v = Number(await s.call("counter"));
          values.push(String(v));
          if (!seq.answered(v)) skipped = true;
        } catch (err) {
          failedCalls++;
          seq.failed();
          values.push("x");
          fail(s.sessionId, `call ${c + 1}: ${(err as Error).message}`, c0);
        }
      }
      if (skipped) {
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
  let proxyCuts = 0;
  let fastRouted = 0;
  const byCall = new Map<string, string>();
  for (const r of stack.replicas) {
    const rows = mcpRows(r.accessLog(), t0 - 50, t1 + 50);
    perReplica.push(rows.length);
    for (const row of rows) {
      if ((row.RouterName ?? "").startsWith("mcp-fast-")) fastRouted++;
      if (row.OriginStatus === 404) {
        nodeSide404++;
        if (node404Rows.length < 10)
          node404Rows.push(`${r.name} ${row.StartUTC} ${row.RequestMethod} -> ${row.ServiceURL}`);
      } else if (row.DownstreamStatus === 404 && !row.OriginStatus) edge404++;
      const call = row[`request_${CALL_ID_HEADER}`];
      if (call !== undefined)
        byCall.set(
          String(call),
          `${r.name} ${row.StartUTC} ${row.RequestMethod} ${row.DownstreamStatus} origin ${row.OriginStatus ?? "-"} -> ${row.ServiceURL ?? "edge"}${isProxyCut(row) ? " (proxy cut)" : ""}`,
        );
    }
    proxyCuts += r.proxyCuts(t0 - 50, t1 + 50).length;
  }
  // Each failure is named by the exchanges of its operation that got no 2xx (one user at a time:
  // every exchange in its time span is its own), with the access-log row of each call id.
  for (const p of pending) {
    p.f.calls = exchanges
      .filter((e) => e.t0 >= p.from && e.t0 <= p.to && (e.status < 200 || e.status > 299))
      .map((e) => `${e.call} ${e.method} ${e.rpc} ${e.status}: ${byCall.get(e.call) ?? "no access-log row"}`);
  }
  return {
    front,
    sessions: SESSIONS,
    calls: SESSIONS * CALLS,
    failedHandshakes,
    failedHandshakeAttempts,
    failedCalls,
    discontinuousSessions,
    nodeSide404,
    edge404,
    proxyCuts,
    http,
    perReplica,
    fastRouted,
    wallMs: t1 - t0,
    failures,
    node404Rows,
  };
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
    ["proxy cuts (isProxyCut)", (r) => String(r.proxyCuts)],
    ["HTTP requests failed", (r) => pct(r.http.failed, r.http.requests)],
    ["requests per replica", (r) => r.perReplica.join(" / ")],
    ["wall time ms", (r) => String(r.wallMs)],
  ];
  const head = ["", ...on.map((r) => `plugin on, ${r.front}`), ...off.map((r) => `plugin off, ${r.front}`)];
  const lines = [head, ...rows.map(([name, f]) => [name, ...on.map(f), ...off.map(f)])];
  const widths = head.map((_, c) => Math.max(...lines.map((l) => l[c]!.length)));
  return [
    `two replicas, ${kind} nodes, ${SESSIONS} sessions x ${CALLS} calls one user at a time:`,
    ...lines.map((l) => l.map((v, c) => v.padEnd(widths[c]!)).join(" | ")),
  ].join("\n");
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
        on: on.map((r) => ({
          front: r.front,
          proxyCuts: r.proxyCuts,
          failedHandshakes: r.failedHandshakes,
          failedCalls: r.failedCalls,
          nodeSide404: r.nodeSide404,
          discontinuous: r.discontinuousSessions,
          wallMs: r.wallMs,
        })),
        off: off.map((r) => ({
          front: r.front,
          failedHandshakes: r.failedHandshakes,
          failedCalls: r.failedCalls,
          nodeSide404: r.nodeSide404,
          discontinuous: r.discontinuousSessions,
          wallMs: r.wallMs,
        })),
        l4Picks: lb.picks,
      });
      for (const r of on) {
        if (r.failures.length || r.nodeSide404)
          console.log(`plugin on, ${r.front}: failures`, r.failures.slice(0, 10), "node 404s", r.node404Rows);
      }
      // Both replicas took part in every front.
      for (const r of [...on, ...off]) for (const n of r.perReplica) expect(n, r.front).toBeGreaterThan(0);
      // Plugin on: nothing fails (a failure is printed with its call ids and their access-log rows).
      for (const r of on) {
        expect({ front: r.front, failures: r.failures, node404: r.nodeSide404, edge404: r.edge404 }).toEqual({
          front: r.front,
          failures: [],
          node404: 0,
          edge404: 0,
        });
      }
      if (stack.fastPath && kind === "reference") {
        // With the fast path, "plugin off" is not plain sticky for minted ids: the sidecars' routers
        // still send every request of a reference node's session (token in the id) to its node, so
        // only the initialize reaches the plain /mcp router, and nothing fails.
        for (const r of off) {
          expect(r.fastRouted, r.front).toBeGreaterThan(0);
          expect({ front: r.front, failures: r.failures, node404: r.nodeSide404 }).toEqual({
            front: r.front,
            failures: [],
            node404: 0,
          });
        }
      } else {
        // The plain-sticky run shows what the load detects: without cookies, requests scatter.
        expect(off.some((r) => r.failedHandshakes + r.failedCalls > 0)).toBe(true);
      }
    }, 300_000);

    if (kind === "reference") {
      it("a node restarted (new boot): both replicas answer the edge 404 for its old sessions, the new process sees none of them", async () => {
        const n1 = stack.nodes[0]!;
        const [a, b] = stack.replicas as [Stack["replicas"][0], Stack["replicas"][0]];
        // Sessions on node 1, each born on one replica and called on the other.
        const old: string[] = [];
        for (let i = 0; old.length < 3 && i < 60; i++) {
          const [born, other] = i % 2 ? [a, b] : [b, a];
          const { sessionId } = await rawInitialize(born.httpBase);
          if (parseSessionToken(sessionId)?.cookie !== n1.cookie) continue;
          const r = await rawCall(other.httpBase, sessionId, "counter");
          expect(r.text, `session ${sessionTag(sessionId)} on ${other.name}`).toBe("1");
          old.push(sessionId);
        }
        expect(old).toHaveLength(3);
        const bootBefore = await n1.boot();
        const t0 = Date.now();
        await n1.restart();
        expect(await n1.boot()).not.toBe(bootBefore);
        const logStart = n1.proc.log().length;
        // Each replica learns the restart through its own sidecar: the old incarnation is gone in both views.
        for (const r of stack.replicas) {
          await waitUntil(
            `${r.name}'s view to mark node 1's old boot gone`,
            async () =>
              (await r.viewMeta())?.boots?.some(
                (x) => x.cookie === n1.cookie && x.bootTag === bootTag(bootBefore) && x.state === "gone",
              ),
            15_000,
            25,
          );
          await waitUntil(
            `${r.name} to see the restarted node UP`,
            async () => (await r.traefikServerStatus(0)) === "UP",
            10_000,
          );
        }
        const goneMs = Date.now() - t0;
        const t1 = Date.now();
        for (const r of stack.replicas) {
          for (const sid of old) {
            const answers = [
              await rawCall(r.httpBase, sid, "counter"),
              await rawCall(r.httpBase, sid, "counter", { cookie: `_mcp_backend=${n1.cookie}` }),
              await raw(`${r.httpBase}/mcp`, {
                method: "GET",
                headers: {
                  accept: "text/event-stream",
                  "mcp-session-id": sid,
                  "mcp-protocol-version": PROTOCOL_VERSION,
                },
              }),
            ];
            for (const ans of answers) {
              const who = `${r.name}, session ${sessionTag(sid)}`;
              expect(ans.status, who).toBe(404);
              expect(header(ans, "mcp-affinity"), who).toBe("lost");
              expect(JSON.parse(ans.body), who).toEqual({
                jsonrpc: "2.0",
                error: { code: -32001, message: "Session not found" },
                id: null,
              });
            }
          }
        }
        await sleep(300);
        // Answered at the edge: no node was asked (access logs), and the new process logged none of them.
        for (const r of stack.replicas) {
          const rows = mcpRows(r.accessLog(), t1 - 50, Date.now());
          expect(rows.length, r.name).toBe(old.length * 3);
          for (const row of rows) expect(row.OriginStatus ?? 0, `${r.name} ${row.StartUTC}`).toBe(0);
        }
        const seen = n1.proc.log().slice(logStart);
        for (const sid of old) expect(seen).not.toContain(sessionTag(sid));
        // A new session still works through either replica, on any node.
        const fresh = await rawInitialize(b.httpBase);
        expect((await rawCall(a.httpBase, fresh.sessionId, "counter")).text).toBe("1");
        report("replicas node restart", { sessions: old.length, restartToGoneInBothViewsMs: goneMs });
      }, 120_000);
    }
  });
}
