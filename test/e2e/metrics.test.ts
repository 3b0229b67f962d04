// The numbers an operator alerts on, end to end through the real Traefik: edge decisions reach the
// sidecar's /metrics at once and exactly, a close counts once, the scrape passes promtool, and
// Traefik exports the series McpAffinityPluginSilent compares with.
import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sessionHash } from "../../lib/registry/session-hash.ts";
import { lookupSession } from "../support/view-writers.ts";
import { goTool } from "../../scripts/go-tools.mjs";
import { metricSum, scrapeMetrics } from "../../dev/metrics.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type Stack } from "../../dev/stack.ts";
import { header, MCP_HEADERS, PROTOCOL_VERSION, raw, rawCall, rawInitialize } from "../../dev/mcp-client.ts";
import { report } from "./helpers.ts";

let stack: Stack;
/** A session closed through Traefik: its node, or for a DELETE the edge, answers 404 for it. */
let closedSession = "";

beforeAll(async () => {
  // The plugin's own answers are counted here (the edge 404 for a closed session's DELETE): with the
  // fast path that session's requests would reach its node, which answers 404 itself.
  stack = await startStack({ name: "e2e-metrics", nodes: 2, fastPath: false });
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

const sidecarMetric = async (name: string, ...fragments: string[]) =>
  metricSum(await scrapeMetrics(`${stack.sidecarUrl}/metrics`), name, ...fragments);

describe("edge decisions and closes on /metrics", () => {
  it("a DELETE counts one close; N edge 404s count exactly N lost within 2 s, with the instance idle after them", async () => {
    const closesBefore = await sidecarMetric("mcp_affinity_closes_total");
    const { sessionId } = await rawInitialize(stack.httpBase);
    closedSession = sessionId;
    const headers = { ...MCP_HEADERS, "mcp-session-id": sessionId, "mcp-protocol-version": PROTOCOL_VERSION };
    expect((await rawCall(stack.httpBase, sessionId, "counter")).text).toBe("1");
    const del = await raw(`${stack.httpBase}/mcp`, { method: "DELETE", headers });
    expect(del.status).toBe(200);
    await waitUntil(
      "the close in the view",
      async () => (await lookupSession(stack.shared, sessionHash(sessionId)))?.closed === true,
      5000,
      20,
    );
    // The node's own close reaches the sidecar through the registry, the plugin's through its
    // event: both arrive well within a second; the count must stay 1.
    await sleep(1000);
    expect((await sidecarMetric("mcp_affinity_closes_total")) - closesBefore).toBe(1);

    const N = 10;
    const lostBefore = await sidecarMetric("mcp_affinity_edge_decisions_total", 'reason="lost"');
    // A call of the closed session: its token names a live incarnation, which decides without the
    // session's record (as the fast path would): its node answers the 404 itself.
    const call = await raw(`${stack.httpBase}/mcp`, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect([call.status, header(call, "mcp-affinity")]).toEqual([404, undefined]);
    // A DELETE reads the record (the edge reports the closes of sessions it holds): a closed
    // session's DELETE, repeated, is the edge's 404 each time.
    for (let i = 0; i < N; i++) {
      const r = await raw(`${stack.httpBase}/mcp`, { method: "DELETE", headers });
      expect(r.status).toBe(404);
      expect(header(r, "mcp-affinity")).toBe("lost"); // answered by the edge, not a node
    }
    // No request after the last 404: the counts must not wait for one.
    const t0 = Date.now();
    const { ms } = await waitUntil(
      `${N} lost decisions on /metrics`,
      async () =>
        (await sidecarMetric("mcp_affinity_edge_decisions_total", 'reason="lost"')) - lostBefore >= N
          ? { ms: Date.now() - t0 }
          : null,
      2000,
      25,
    );
    await sleep(1500);
    expect((await sidecarMetric("mcp_affinity_edge_decisions_total", 'reason="lost"')) - lostBefore).toBe(N);
    report("metrics lost-counted", { lost: N, countedWithinMs: ms });
  });
});

describe("the scrapes", () => {
  it("the sidecar's /metrics after real traffic passes promtool check metrics", async () => {
    const text = await scrapeMetrics(`${stack.sidecarUrl}/metrics`);
    expect(metricSum(text, "mcp_affinity_edge_decisions_total")).toBeGreaterThan(0);
    const r = spawnSync(goTool("promtool"), ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(`${r.stdout}${r.stderr}`).toBe("");
    expect(r.status).toBe(0);
  });

  it("Traefik exports the MCP service's request count the silent-plugin alert compares with", async () => {
    const text = await scrapeMetrics(stack.traefikMetricsUrl);
    // McpAffinityPluginSilent selects service=~"mcp@file|..." (ops/prometheus-alerts.yml).
    expect(metricSum(text, "traefik_service_requests_total", 'service="mcp@file"')).toBeGreaterThan(0);
  });
});

describe("a plugin with a bad setting", () => {
  it("passes everything and reports nothing while Traefik counts the requests (what McpAffinityPluginSilent compares)", async () => {
    const headers = { ...MCP_HEADERS, "mcp-session-id": closedSession, "mcp-protocol-version": PROTOCOL_VERSION };
    // The closed session's DELETE: the edge's 404 while the plugin routes, its node's without it.
    const post = () => raw(`${stack.httpBase}/mcp`, { method: "DELETE", headers });
    expect(header(await post(), "mcp-affinity")).toBe("lost");
    // eventFlushMs below its range: the plugin logs the setting once and passes every request.
    stack.writeDynamic({ pluginSettings: { staleAfterMs: String(stack.timing.staleAfterMs), eventFlushMs: "5" } });
    await waitUntil(
      "Traefik to load the middleware with the bad setting",
      async () => header(await post(), "mcp-affinity") === undefined,
      15_000,
      200,
    );
    await sleep(1500); // batches of the old instances
    const decisionsBefore = await sidecarMetric("mcp_affinity_edge_decisions_total");
    const servedBefore = metricSum(
      await scrapeMetrics(stack.traefikMetricsUrl),
      "traefik_service_requests_total",
      'service="mcp@file"',
    );
    const N = 30;
    for (let i = 0; i < N; i++) expect((await post()).status).toBe(404); // the node's own 404 now
    await sleep(1500);
    const served =
      metricSum(await scrapeMetrics(stack.traefikMetricsUrl), "traefik_service_requests_total", 'service="mcp@file"') -
      servedBefore;
    expect(served).toBeGreaterThanOrEqual(N);
    const decisions = (await sidecarMetric("mcp_affinity_edge_decisions_total")) - decisionsBefore;
    expect(decisions).toBe(0);
    report("metrics plugin-silent", { traefikServed: served, decisions });
  });
});
