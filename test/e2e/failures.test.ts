// End to end through the real Traefik: the scenarios where a part fails
// (4, 5, 6, 8, 9 and 9b of docs/e2e.md "Scenarios").
// One stack; node 3 runs with --fail-close. Order matters: each scenario leaves every part running
// except the last one (node stopped), which restores it at the end.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sessionKey } from "../../lib/registry/schema.ts";
import { sessionHash, sessionTag } from "../../lib/registry/session-hash.ts";
import { readMeta } from "../../lib/view/index.ts";
import { lookupSession } from "../support/view-writers.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { redisCommand } from "../../dev/redis.ts";
import { startStack, type NodePart, type Stack } from "../../dev/stack.ts";
import { watchViewConsistency } from "../support/view-consistency.ts";
import {
  header,
  initializeBody,
  MCP_HEADERS,
  PROTOCOL_VERSION,
  raw,
  rawCall,
  stickyCookieOf,
} from "../../dev/mcp-client.ts";
import { connectSdk, CounterSequence, report, sidecarMetric, type SdkSession } from "./helpers.ts";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ name: "e2e-failures", nodeArgs: (i) => (i === 2 ? ["--fail-close"] : []) });
});

afterAll(async () => {
  await stack?.stop();
});

const base = () => stack.httpBase;

/** A session created through Traefik on a chosen node (the sticky cookie steers the initialize). */
async function sessionOn(node: NodePart): Promise<string> {
  const init = await raw(`${base()}/mcp`, {
    method: "POST",
    headers: { ...MCP_HEADERS, cookie: `_mcp_backend=${node.cookie}` },
    body: initializeBody(),
  });
  expect(init.status).toBe(200);
  const sid = header(init, "mcp-session-id")!;
  // Traefik kept the cookie: no new pick.
  expect(stickyCookieOf(init)).toBeUndefined();
  const n = await raw(`${base()}/mcp`, {
    method: "POST",
    headers: { ...MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": PROTOCOL_VERSION },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  expect(n.status).toBe(202);
  return sid;
}

/** A session on `node` whose first counter call answered 1. */
async function countedSessionOn(node: NodePart): Promise<string> {
  const sid = await sessionOn(node);
  const r = await rawCall(base(), sid, "counter");
  expect(r.status).toBe(200);
  expect(r.text).toBe("1");
  return sid;
}

/** What the published view says about a session: its owner incarnation's state, or closed. */
async function viewSession(sid: string): Promise<{ state: string; nodeId: number } | "closed" | null> {
  const r = await lookupSession(stack.shared, sessionHash(sid));
  if (!r) return null;
  if (r.closed) return "closed";
  const meta = await readMeta(stack.shared);
  const node = meta?.nodes.find((n) => n.id === r.node);
  return node ? { state: node.state, nodeId: node.id } : null;
}

async function waitViewState(sid: string, want: string, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  await waitUntil(
    `session ${sessionTag(sid)} in view state ${want}`,
    async () => {
      const v = await viewSession(sid);
      return v === want || (typeof v === "object" && v?.state === want);
    },
    timeoutMs,
    25,
  );
  return Date.now() - t0;
}

async function redisHas(sid: string): Promise<boolean> {
  return (await redisCommand(stack.redis!.port, `EXISTS ${sessionKey(sid)}`)) === ":1";
}

const metric = (name: string, labels = ""): Promise<number> => sidecarMetric(stack, name, labels);

/** Sessions calling `counter` in a loop until stopped; counts failures and discontinuities. */
function runLoad(sessions: SdkSession[]) {
  let stop = false;
  const stats = { calls: 0, failed: 0, discontinuities: 0, errors: [] as string[] };
  const loops = sessions.map(async (s) => {
    const seq = new CounterSequence(Number(await s.call("counter")));
    while (!stop) {
      try {
        if (!seq.answered(Number(await s.call("counter")))) stats.discontinuities++;
      } catch (err) {
        stats.failed++;
        seq.failed();
        if (stats.errors.length < 5)
          stats.errors.push(`${new Date().toISOString()} ${(err as Error).message.slice(0, 200)}`);
      }
      stats.calls++;
      await sleep(10);
    }
  });
  return {
    stats,
    async stop() {
      stop = true;
      await Promise.all(loops);
      return stats;
    },
  };
}

/** New SDK sessions, two at a time, each with a few counter calls (sessions born during an outage). */
function runNewSessions(calls = 3) {
  let stop = false;
  const born: string[] = [];
  const stats = { sessions: 0, failed: 0, errors: [] as string[] };
  // Two loops, so that sessions keep being born while one waits for a slow answer.
  const loop = Promise.all(
    [0, 1].map(async () => {
      while (!stop) {
        try {
          const s = await connectSdk(stack.mcpUrl);
          born.push(s.sessionId);
          for (let i = 1; i <= calls; i++) {
            const v = await s.call("counter");
            if (v !== String(i)) throw new Error(`counter ${v} instead of ${i}`);
          }
          await s.client.close();
          stats.sessions++;
        } catch (err) {
          stats.failed++;
          if (stats.errors.length < 5)
            stats.errors.push(`${new Date().toISOString()} ${(err as Error).message.slice(0, 200)}`);
        }
        await sleep(50);
      }
    }),
  );
  return {
    stats,
    born,
    async stop() {
      stop = true;
      await loop;
      return stats;
    },
  };
}

const eventFiles = () => {
  try {
    return readdirSync(join(stack.shared, "events")).filter((f) => f.endsWith(".evt")).length;
  } catch {
    return 0;
  }
};

async function redisOutage(keepData: boolean, label: string): Promise<void> {
  const sessions = await Promise.all(Array.from({ length: 9 }, () => connectSdk(stack.mcpUrl)));
  for (const s of sessions)
    await waitUntil(
      "the session in the view",
      async () => (await lookupSession(stack.shared, sessionHash(s.sessionId))) !== null,
      5000,
    );
  const load = runLoad(sessions);
  const t0 = Date.now();
  await sleep(500);
  const errorsBefore = await metric("mcp_affinity_redis_errors_total");
  // keepData: a snapshot on the way down, loaded on start (Debian's default RDB snapshot on
  // shutdown). Otherwise the restarted Redis is empty, as a cache-only Redis would be.
  if (keepData) await redisCommand(stack.redis!.port, "SAVE");
  await stack.redis!.stop();
  const fresh = runNewSessions();
  await sleep(3000);
  const registryUpWhileDown = await metric("mcp_affinity_registry_up");
  const bornWhileDown = [...fresh.born];
  const freshWhileDown = { ...fresh.stats };
  await stack.redis!.start();
  const restartedAt = Date.now();
  await waitUntil("the sidecar to reconnect", async () => (await metric("mcp_affinity_registry_up")) === 1, 15_000);
  const reconnectMs = Date.now() - restartedAt;
  await sleep(2000);
  const loadStats = await load.stop();
  const freshStats = await fresh.stop();

  // Registrations resume: a session created now is in Redis at once.
  const s = await connectSdk(stack.mcpUrl);
  expect(await redisHas(s.sessionId)).toBe(true);
  await s.end();
  // The sessions that lived through the outage are back in the registry (nodes re-register, the
  // sidecar ingests the learned events that waited on disk).
  let restored = 0;
  for (const x of [...sessions.map((q) => q.sessionId), ...bornWhileDown]) {
    try {
      await waitUntil("a session back in Redis", () => redisHas(x), 5000);
      restored++;
    } catch {
      /* counted below */
    }
  }
  await Promise.all(sessions.map((q) => q.end()));
  const errorsAfter = await metric("mcp_affinity_redis_errors_total");
  report(label, {
    outageMs: restartedAt - t0 - 500,
    registryUpWhileDown,
    sidecarReconnectMs: reconnectMs,
    redisErrorsCounted: errorsAfter - errorsBefore,
    loadCalls: loadStats.calls,
    loadFailed: loadStats.failed,
    discontinuities: loadStats.discontinuities,
    newSessionsWhileDown: freshWhileDown.sessions,
    newSessionsFailedWhileDown: freshWhileDown.failed,
    newSessionsTotal: freshStats.sessions,
    newSessionsFailedTotal: freshStats.failed,
    sessionsBackInRedis: `${restored}/${sessions.length + bornWhileDown.length}`,
    errors: [...loadStats.errors, ...freshStats.errors],
  });
  expect(registryUpWhileDown).toBe(0);
  expect(errorsAfter).toBeGreaterThan(errorsBefore);
  expect(loadStats.failed).toBe(0);
  expect(freshStats.failed).toBe(0);
  expect(loadStats.discontinuities).toBe(0);
  expect(loadStats.calls).toBeGreaterThan(100);
  expect(freshWhileDown.sessions).toBeGreaterThan(3);
  expect(restored).toBe(sessions.length + bornWhileDown.length);
}

describe("end to end through Traefik: failures", () => {
  it("6. DELETE: the registry entry is gone even when the node's local close fails", async () => {
    const node3 = stack.nodes[2]!;
    const sid = await sessionOn(node3);
    const who = await rawCall(base(), sid, "whoami");
    expect(who.status, who.body).toBe(200);
    expect(who.text).toContain(node3.name);
    await waitViewState(sid, "up", 5000);
    expect(await redisHas(sid)).toBe(true);
    const closesBefore = await metric("mcp_affinity_closes_total");
    const logBefore = node3.proc.log().length;

    const t0 = Date.now();
    const del = await raw(`${base()}/mcp`, {
      method: "DELETE",
      headers: { "mcp-session-id": sid, "mcp-protocol-version": PROTOCOL_VERSION },
    });
    await waitUntil("the registry record to be deleted", async () => !(await redisHas(sid)), 5000, 10);
    const redisGoneMs = Date.now() - t0;
    const tombstoneMs = await waitViewState(sid, "closed", 5000);

    // The node really failed its local close (the registry was cleaned anyway).
    const nodeLog = node3.proc.log().slice(logBefore);
    expect(nodeLog).toContain("local session close failed");
    expect(nodeLog).toContain(sessionTag(sid));
    // Afterwards its node answers 404 itself: the session's token names a live incarnation, which
    // decides without the session's record, through the plugin as through the fast path's routers
    // (docs/architecture.md, "a closed session of a live node").
    const after = await rawCall(base(), sid, "counter");
    expect(after.status).toBe(404);
    expect(JSON.parse(after.body)).toEqual({
      jsonrpc: "2.0",
      error: { code: -32001, message: "Session not found" },
      id: null,
    });
    expect(header(after, "mcp-affinity")).toBeUndefined();
    await waitUntil(
      "the close to be counted",
      async () => (await metric("mcp_affinity_closes_total")) > closesBefore,
      5000,
    );
    report("6 delete-fail-close", {
      deleteStatus: del.status,
      redisGoneMs,
      tombstoneInViewMs: Date.now() - t0 - redisGoneMs + tombstoneMs,
      afterStatus: after.status,
    });
  });

  it("8. sidecar killed during load: no failed request (fail open); restarted, it resumes", async () => {
    const sessions = await Promise.all(Array.from({ length: 9 }, () => connectSdk(stack.mcpUrl)));
    const load = runLoad(sessions);
    const fresh = runNewSessions();
    await sleep(500);
    await stack.sidecar!.kill();
    const killedAt = Date.now();
    // Past the plugin's staleAfterMs: the view goes stale, the plugin pins from it and from learned/.
    await sleep(stack.timing.staleAfterMs + 2000);
    const meta = await readMeta(stack.shared);
    const viewAgeMs = Date.now() - (meta?.published ?? 0);
    const pendingEvents = eventFiles();
    const bornWhileDown = fresh.born.length;
    const restartT = Date.now();
    const watch = watchViewConsistency(stack.shared);
    await stack.startSidecar();
    const readyMs = Date.now() - restartT;
    await sleep(1000);
    const consistency = await watch.stop();
    const loadStats = await load.stop();
    const freshStats = await fresh.stop();
    await Promise.all(sessions.map((s) => s.end()));

    // It resumes: a fresh view again, the outage's events ingested, its sessions in the view.
    await waitUntil(
      "a fresh view",
      async () => Date.now() - ((await readMeta(stack.shared))?.published ?? 0) < 1500,
      5000,
    );
    await waitUntil("the pending events to be ingested", async () => eventFiles() === 0, 10_000);
    const sample = fresh.born.slice(0, bornWhileDown);
    for (const sid of sample) {
      await waitUntil(
        `session ${sessionTag(sid)} born during the outage in the view`,
        async () => (await lookupSession(stack.shared, sessionHash(sid))) !== null,
        5000,
      );
    }
    // The decisions the plugin made during the outage reached the new sidecar process.
    const failOpen = await metric("mcp_affinity_edge_decisions_total", 'reason="fail-open"');
    // With the fast path the sidecar's last file stays and Traefik keeps routing tokened requests by
    // it: the plugin sees only initializes (sessionless), so the outage's requests are counted as
    // Traefik's fast-path router rows while the view was stale instead of fail-open decisions.
    const fastRoutedWhileStale = stack
      .accessLog()
      .filter(
        (r) =>
          (r.RouterName ?? "").startsWith("mcp-fast-") &&
          Date.parse(r.StartUTC) >= killedAt + stack.timing.staleAfterMs &&
          Date.parse(r.StartUTC) <= restartT,
      ).length;
    report("8 sidecar-killed", {
      outageMs: restartT - killedAt,
      viewAgeAtRestartMs: viewAgeMs,
      staleAfterMs: stack.timing.staleAfterMs,
      loadCalls: loadStats.calls,
      loadFailed: loadStats.failed,
      discontinuities: loadStats.discontinuities,
      newSessions: freshStats.sessions,
      newSessionsFailed: freshStats.failed,
      bornWhileDown,
      pendingEventFilesAtRestart: pendingEvents,
      sidecarReadyMs: readyMs,
      failOpenDecisionsIngested: failOpen,
      fastRoutedWhileStale,
      viewChecksAroundRestart: consistency.checks,
      viewInconsistentAroundRestart: consistency.inconsistent.length,
      viewInconsistentSamples: consistency.inconsistent.slice(0, 2),
      errors: [...loadStats.errors, ...freshStats.errors],
    });
    expect(viewAgeMs).toBeGreaterThan(stack.timing.staleAfterMs);
    expect(loadStats.failed).toBe(0);
    expect(freshStats.failed).toBe(0);
    expect(loadStats.discontinuities).toBe(0);
    expect(loadStats.calls).toBeGreaterThan(100);
    expect(bornWhileDown).toBeGreaterThan(3);
    if (stack.fastPath) expect(fastRoutedWhileStale).toBeGreaterThan(0);
    else expect(failOpen).toBeGreaterThan(0);
  });

  it("9. Redis stopped during load (restarted with its data): existing sessions keep working; registrations resume", async () => {
    await redisOutage(true, "9 redis-stopped");
  });

  it("9b. Redis replaced by an empty one during load: existing sessions keep working; the registry is rebuilt", async () => {
    await redisOutage(false, "9b redis-restarted-empty");
  });

  it("4. node restarted (same URL, new boot): its old sessions get the edge 404, the new process sees none of them; a new initialize works", async () => {
    const [n1, n2, n3] = stack.nodes as [NodePart, NodePart, NodePart];
    const old1 = [await countedSessionOn(n1), await countedSessionOn(n1), await countedSessionOn(n1)];
    const others = [await countedSessionOn(n2), await countedSessionOn(n3)];
    for (const sid of [...old1, ...others]) await waitViewState(sid, "up", 5000);
    const bootBefore = await n1.boot();
    const t0 = Date.now();
    await n1.restart();
    const bootAfter = await n1.boot();
    // The /mcp service has no health check of Traefik's: the sidecar's probe is the one liveness decider.
    expect(await stack.traefikServerStatus(0)).not.toBe("DOWN");
    expect(bootAfter).not.toBe(bootBefore);
    const logStart = n1.proc.log().length;
    await waitViewState(old1[0]!, "gone", 10_000);
    const killToGoneMs = Date.now() - t0;

    const answers = [];
    for (const sid of old1) {
      // Cookie-less, with the node's own cookie, a GET stream and a DELETE: all answered at the edge.
      answers.push(await rawCall(base(), sid, "counter"));
      answers.push(await rawCall(base(), sid, "counter", { cookie: `_mcp_backend=${n1.cookie}` }));
      answers.push(
        await raw(`${base()}/mcp`, {
          method: "GET",
          headers: { accept: "text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": PROTOCOL_VERSION },
        }),
      );
    }
    for (const a of answers) {
      expect(a.status).toBe(404);
      expect(JSON.parse(a.body)).toEqual({
        jsonrpc: "2.0",
        error: { code: -32001, message: "Session not found" },
        id: null,
      });
      expect(header(a, "mcp-affinity")).toBe("lost");
    }
    // The restarted node received none of them (it logs every request for a session it lacks) ...
    await sleep(300);
    const seen = n1.proc.log().slice(logStart);
    for (const sid of old1) expect(seen).not.toContain(sessionTag(sid));
    // ... which this check would notice: one request straight to the node shows up in its log.
    const direct = await raw(`${n1.url}/mcp`, {
      method: "POST",
      headers: { ...MCP_HEADERS, "mcp-session-id": old1[0]!, "mcp-protocol-version": PROTOCOL_VERSION },
      body: "{}",
    });
    expect(direct.status).toBe(404);
    await waitUntil(
      "the node to log the direct request",
      async () => n1.proc.log().slice(logStart).includes(sessionTag(old1[0]!)),
      3000,
    );

    // Other nodes' sessions are untouched.
    for (const sid of others) expect((await rawCall(base(), sid, "counter")).text).toBe("2");
    // New sessions work: cookie-less with the SDK, and one steered onto the restarted node.
    const s = await connectSdk(stack.mcpUrl);
    expect(await s.call("counter")).toBe("1");
    expect(await s.call("counter")).toBe("2");
    await s.end();
    const onNew = await sessionOn(n1);
    expect(JSON.parse((await rawCall(base(), onNew, "whoami")).text!).boot).toBe(bootAfter);
    expect((await rawCall(base(), onNew, "counter")).text).toBe("1");
    report("4 node-restarted", {
      killToNewBootGoneInViewMs: killToGoneMs,
      edge404s: answers.length,
      requestsSeenByRestartedNode: 0,
    });
  });

  it("5. node stopped: 503 + Retry-After while down, others untouched; back with the same boot its sessions continue; once gone, 404", async () => {
    const [n1, n2, n3] = stack.nodes as [NodePart, NodePart, NodePart];
    const down = [await countedSessionOn(n2), await countedSessionOn(n2)];
    // Probes go to their own session: a probe sent before the edge knows the node is down waits in
    // the stopped process's socket and runs when it resumes.
    const probe = await countedSessionOn(n2);
    const others = [await countedSessionOn(n1), await countedSessionOn(n3)];
    for (const sid of [...down, probe, ...others]) await waitViewState(sid, "up", 5000);
    const boot = await n2.boot();

    // Down for now (SIGSTOP: same process, same boot, answers nothing).
    const t0 = Date.now();
    n2.pause();
    let first503 = 0;
    await waitUntil(
      "an edge 503 for the stopped node's session",
      async () => {
        const r = await rawCall(base(), probe, "counter", { timeoutMs: 500 }).catch(() => null);
        if (r?.status === 503) first503 = Date.now() - t0;
        return r?.status === 503;
      },
      15_000,
      100,
    );
    const unavailable = [];
    for (const sid of down) unavailable.push(await rawCall(base(), sid, "counter", { timeoutMs: 2000 }));
    for (const a of unavailable) {
      expect(a.status).toBe(503);
      expect(Number(header(a, "retry-after"))).toBeGreaterThanOrEqual(1);
      expect(header(a, "mcp-affinity")).toBe("unavailable");
      const b = JSON.parse(a.body);
      expect(b.jsonrpc).toBe("2.0");
      expect(Number.isInteger(b.id)).toBe(true); // the request's own id: the client can match it
      expect(b.error.code).not.toBe(-32601);
    }
    for (const sid of others) expect((await rawCall(base(), sid, "counter")).text).toBe("2");

    // Back with the same boot: its sessions continue where they were.
    const r0 = Date.now();
    n2.resume();
    let back = 0;
    await waitUntil(
      "the resumed node's session to be served again",
      async () => {
        const r = await rawCall(base(), probe, "counter", { timeoutMs: 1000 }).catch(() => null);
        if (r?.status === 200) back = Date.now() - r0;
        return r?.status === 200 ? r : null;
      },
      15_000,
      100,
    );
    expect(await n2.boot()).toBe(boot);
    // The 503s never reached the node: each session continues at 2.
    for (const sid of down) expect((await rawCall(base(), sid, "counter")).text).toBe("2");

    // Down too long: gone, 404 at the edge.
    const g0 = Date.now();
    n2.pause();
    let lostAfter = 0;
    await waitUntil(
      "an edge 404 once the node counts as gone",
      async () => {
        // The edge's own 404 (Mcp-Affinity: lost). Until the view says gone, a request that Traefik's
        // health check has already re-picked onto another node may get that node's 404 instead.
        const r = await rawCall(base(), probe, "counter", { timeoutMs: 500 }).catch(() => null);
        const edgeLost = r?.status === 404 && header(r, "mcp-affinity") === "lost";
        if (edgeLost) lostAfter = Date.now() - g0;
        return edgeLost ? r : null;
      },
      stack.timing.downLimitMs + 15_000,
      200,
    );
    for (const sid of down) {
      const lost = await rawCall(base(), sid, "counter", { timeoutMs: 2000 });
      expect(lost.status).toBe(404);
      expect(header(lost, "mcp-affinity")).toBe("lost");
      expect(JSON.parse(lost.body).error.code).toBe(-32001);
    }
    for (const sid of others) expect((await rawCall(base(), sid, "counter")).text).toBe("3");
    n2.resume();
    report("5 node-stopped", {
      pauseToFirst503Ms: first503,
      retryAfter: header(unavailable[0]!, "retry-after"),
      resumeToServedMs: back,
      pauseToGone404Ms: lostAfter,
      downLimitMs: stack.timing.downLimitMs,
      nodeTtlMs: stack.timing.nodeTtlMs,
    });
  });
});
