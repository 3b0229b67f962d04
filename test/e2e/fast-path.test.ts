// The fast path through the real Traefik, two replicas: the sidecars write a router per live node
// incarnation, so requests of tokened sessions are routed by Traefik itself, and only what needs
// the plugin runs it (initialize, and tokens of incarnations no router lists). Checked: only the
// initializes reach the plugin's router; every call runs once and in order; the edge counts what
// Traefik routed exactly; a killed node's sessions get the edge 404 on both replicas within about a
// second; a node that joins is never answered for before its router exists; a restarted node's
// old sessions end with the edge 404 while its new ones take the new incarnation's router.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readAccessLog, type AccessLogRow } from "../../dev/access-log.ts";
import { startL4Balancer, type L4Balancer } from "../../dev/l4-balancer.ts";
import { header, raw, rawCall, rawInitialize, sessionHeaders } from "../../dev/mcp-client.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type NodePart, type ReplicaPart, type Stack } from "../../dev/stack.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";
import { metricSum, scrapeMetrics } from "../../dev/metrics.ts";
import { counterLoad, report } from "./helpers.ts";

let stack: Stack;
let lb: L4Balancer;

beforeAll(async () => {
  stack = await startStack({ name: "e2e-fast-path", nodes: 3, replicas: 2, fastPath: true });
  lb = await startL4Balancer({ targets: stack.replicas.map((r) => ({ host: "127.0.0.1", port: r.ports.http })) });
  for (const r of stack.replicas) await waitFastRouters(r, stack.nodes);
}, 180_000);

afterAll(async () => {
  await lb?.close();
  await stack?.stop();
});

/** Traefik's enabled fast-path routers (web entry point), by name. */
async function fastRouters(r: ReplicaPart): Promise<string[]> {
  const res = await fetch(`${r.apiUrl}/api/http/routers`);
  const all = (await res.json()) as Array<{ name: string; status: string }>;
  return all.filter((x) => x.name.startsWith("mcp-fast-") && x.status === "enabled").map((x) => x.name);
}

/** Until Traefik serves the POST and the other-methods router of each node's current incarnation. */
async function waitFastRouters(r: ReplicaPart, nodes: NodePart[], timeoutMs = 15_000): Promise<void> {
  await waitUntil(
    `${r.name}: a fast-path router per node`,
    async () => {
      const names = await fastRouters(r);
      return nodes.every((n) => names.filter((x) => x.includes(n.cookie)).length >= 2);
    },
    timeoutMs,
    100,
  );
}

const rowsOf = (r: ReplicaPart, from: number) => readAccessLog(r.accessLogFile).slice(from);
const isFast = (row: AccessLogRow) => (row.RouterName ?? "").startsWith("mcp-fast-");
const pinCount = async () => {
  let n = 0;
  for (const r of stack.replicas)
    n += metricSum(await scrapeMetrics(`${r.sidecarUrl}/metrics`), "mcp_affinity_edge_decisions_total", 'reason="pin"');
  return n;
};

describe("the fast path", () => {
  it("SDK sessions through both replicas: only the initializes run the plugin, every call runs once and in order, and the edge counts exactly what Traefik routed", async () => {
    const from = stack.replicas.map((r) => readAccessLog(r.accessLogFile).length);
    const pinsBefore = await pinCount();
    const run = await counterLoad(`${lb.base}/mcp`, 8, 25);
    expect(run.failedCalls, run.errorSamples.join("\n")).toBe(0);
    expect(run.discontinuities).toBe(0);
    expect(run.failedHandshakes).toBe(0);
    // Access-log rows and Traefik's counts are written when a request ends (the SSE streams end a
    // little after their sessions); the sidecars read Traefik's counts every poll. Both settle.
    const observe = async () => {
      const rows = stack.replicas.flatMap((r, k) => rowsOf(r, from[k]!));
      return { rows, fast: rows.filter(isFast), pins: (await pinCount()) - pinsBefore };
    };
    const t0 = Date.now();
    let last = { fast: 0, pins: 0 };
    await waitUntil(
      "the fast path's requests counted as pins",
      async () => {
        const o = await observe();
        last = { fast: o.fast.length, pins: o.pins };
        return o.fast.length >= 8 * 25 && o.pins === o.fast.length;
      },
      10_000,
      100,
    ).catch((err: Error) => {
      const byRouter = new Map<string, number>();
      for (const row of stack.replicas.flatMap((r, k) => rowsOf(r, from[k]!))) {
        const key = `${row.RouterName} ${row.RequestMethod} ${row.DownstreamStatus}`;
        byRouter.set(key, (byRouter.get(key) ?? 0) + 1);
      }
      throw new Error(`${err.message}: ${JSON.stringify(last)} ${JSON.stringify([...byRouter])}`);
    });
    const countedWithinMs = Date.now() - t0;
    await sleep(1500);
    const { rows, fast, pins } = await observe();
    expect(pins).toBe(fast.length);
    // One initialize per session went through the plugin's router; everything else was fast.
    const viaPlugin = rows.filter((row) => !isFast(row));
    expect(viaPlugin.map((row) => `${row.RequestMethod} ${row.RouterName}`)).toEqual(
      Array.from({ length: 8 }, () => "POST mcp@file"),
    );
    expect(new Set(fast.map((row) => row.RequestMethod))).toEqual(new Set(["POST", "GET", "DELETE"]));
    report("fast-path sdk sessions", {
      sessions: 8,
      calls: run.calls,
      fastRequests: fast.length,
      pluginRequests: viaPlugin.length,
      countedWithinMs,
    });
  }, 60_000);

  it("bad input on a live incarnation's id still gets the plugin's answer: a Cookie line too large 431, an id too long 400, both with a JSON-RPC body", async () => {
    const { sessionId } = await rawInitialize(stack.httpBase);
    const big = await rawCall(stack.httpBase, sessionId, "counter", { cookie: `theme=${"x".repeat(5000)}` });
    expect([big.status, header(big, "mcp-affinity")]).toEqual([431, "invalid"]);
    expect(JSON.parse(big.body)).toMatchObject({ jsonrpc: "2.0", error: { code: expect.any(Number) } });
    // Past the plugin's maxSessionIdLength (256), starting with the live incarnation's whole id.
    const long = await rawCall(stack.httpBase, `${sessionId}${"x".repeat(300)}`, "counter");
    expect([long.status, header(long, "mcp-affinity")]).toEqual([400, "invalid"]);
    expect(JSON.parse(long.body)).toMatchObject({ jsonrpc: "2.0", error: { code: expect.any(Number) } });
    // The session itself is untouched: its next call is its first.
    expect((await rawCall(stack.httpBase, sessionId, "counter")).text).toBe("1");
  });

  it("POST bodies: declared within the bound, read into memory on the fast router; larger or chunked, through the plugin (counted as streamed); each call runs once", async () => {
    const r = stack.replicas[0]!;
    const { sessionId } = await rawInitialize(r.httpBase);
    const streamed = async () =>
      metricSum(
        await scrapeMetrics(`${r.sidecarUrl}/metrics`),
        "mcp_affinity_edge_post_bodies_total",
        'body="streamed"',
      );
    const streamedBefore = await streamed();
    const from = readAccessLog(r.accessLogFile).length;
    const small = await rawCall(r.httpBase, sessionId, "counter", { headers: { [CALL_ID_HEADER]: "body-small" } });
    // Above the sidecar's default bound (64 KiB, the plugin's maxBufferedBodyBytes too).
    const large = await rawCall(r.httpBase, sessionId, "counter", {
      headers: { [CALL_ID_HEADER]: "body-large" },
      args: { pad: "x".repeat(70_000) },
    });
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: 7,
      method: "tools/call",
      params: { name: "counter", arguments: {} },
    });
    const chunked = await request(`${r.httpBase}/mcp`, {
      method: "POST",
      headers: { ...sessionHeaders(sessionId), [CALL_ID_HEADER]: "body-chunked" },
      body: Readable.from([body.slice(0, 20), body.slice(20)]),
    });
    const chunkedText = await chunked.body.text();
    expect([small.status, small.text, large.status, large.text]).toEqual([200, "1", 200, "2"]);
    // A stream body: undici sends it chunked, without a Content-Length.
    expect([chunked.statusCode, /"text":"3"/.test(chunkedText)]).toEqual([200, true]);
    const callKey = `request_${CALL_ID_HEADER}`;
    let rows: AccessLogRow[] = [];
    await waitUntil(
      "the three calls' access-log rows",
      async () => (rows = rowsOf(r, from).filter((row) => String(row[callKey] ?? "").startsWith("body-"))).length === 3,
      5000,
      50,
    );
    expect(Object.fromEntries(rows.map((row) => [row[callKey], row.RouterName]))).toEqual({
      "body-small": `mcp-fast-${sessionId.slice(4, 4 + 24)}-post@file`,
      "body-large": "mcp@file",
      "body-chunked": "mcp@file",
    });
    // An instance writes its counts when it serves a request a second or more after its last batch.
    const counted = await waitUntil(
      "the plugin's streamed bodies counted",
      async () => {
        await raw(`${r.httpBase}/mcp`, { method: "GET", headers: { accept: "text/event-stream" } });
        const n = (await streamed()) - streamedBefore;
        return n >= 2 ? n : null;
      },
      10_000,
      250,
    );
    expect(counted).toBe(2);
  });

  it("a killed node: its sessions get the edge 404 on both replicas within about a second (Traefik's 502 before), every other session sees no error", async () => {
    const victim = stack.nodes[1]!;
    const sessions: Array<{ id: string; node: NodePart }> = [];
    while (sessions.filter((s) => s.node === victim).length < 2 || sessions.length < 6) {
      const { sessionId } = await rawInitialize(stack.replicas[sessions.length % 2]!.httpBase);
      sessions.push({ id: sessionId, node: stack.nodes.find((n) => sessionId.includes(n.cookie))! });
    }
    interface Seen {
      call: string;
      replica: number;
      round: number;
      victim: boolean;
      status: number;
      edge: string | undefined;
      sentAt: number;
    }
    const seen: Seen[] = [];
    let stop = false;
    let callNo = 0;
    // The kill comes between rounds: a call in flight when a process is killed fails for the kill's
    // sake, not the edge's. Each loop parks at the gate while it is closed.
    let gate: Promise<void> | null = null;
    let parked = 0;
    const loop = async (replica: number) => {
      for (let round = 0; !stop; round++) {
        if (gate) {
          parked++;
          await gate;
          parked--;
        }
        await Promise.all(
          sessions.map(async (s) => {
            const call = `fast-kill-${++callNo}`;
            const sentAt = Date.now();
            const r = await rawCall(stack.replicas[replica]!.httpBase, s.id, "counter", {
              headers: { [CALL_ID_HEADER]: call },
              timeoutMs: 5000,
            });
            seen.push({
              call,
              replica,
              round,
              victim: s.node === victim,
              status: r.status,
              edge: header(r, "mcp-affinity"),
              sentAt,
            });
          }),
        );
        await sleep(50);
      }
    };
    const loops = [loop(0), loop(1)];
    await sleep(500);
    let open!: () => void;
    gate = new Promise<void>((r) => (open = r));
    await waitUntil("both loops between rounds", () => parked === 2, 10_000, 5);
    await victim.kill();
    const killedAt = Date.now();
    gate = null;
    open();
    await sleep(3000);
    stop = true;
    await Promise.all(loops);
    const failures: string[] = [];
    const firstEdge: number[] = [];
    for (const replica of [0, 1]) {
      const mine = seen.filter((s) => s.replica === replica);
      for (const s of mine.filter((s) => !s.victim)) if (s.status !== 200) failures.push(JSON.stringify(s));
      const v = mine.filter((s) => s.victim).sort((a, b) => a.sentAt - b.sentAt);
      const lost = v.filter((s) => s.status === 404 && s.edge === "lost");
      expect(lost.length, `replica ${replica + 1}: no edge 404 for the killed node's sessions`).toBeGreaterThan(0);
      const first = lost[0]!;
      firstEdge.push(first.sentAt - killedAt);
      for (const s of v) {
        if (s.sentAt < killedAt) {
          if (s.status !== 200) failures.push(`before the kill: ${JSON.stringify(s)}`);
        } else if (s.round > first.round) {
          if (s.status !== 404 || s.edge !== "lost") failures.push(`after the first edge 404: ${JSON.stringify(s)}`);
        } else if (s.status !== 502 && !(s.status === 404 && s.edge === "lost")) {
          // Between the kill and the removal of its router Traefik's proxy meets a closed port.
          failures.push(`while the router was there: ${JSON.stringify(s)}`);
        }
      }
    }
    expect(failures, failures.join("\n")).toEqual([]);
    for (const ms of firstEdge) expect(ms).toBeLessThan(1500);
    report("fast-path kill", { firstEdge404AfterKillMs: firstEdge, requests: seen.length });
    // Its routers are gone on both replicas; the node comes back with a new incarnation and routers.
    for (const r of stack.replicas)
      await waitUntil(
        `${r.name}: the killed node's routers gone`,
        async () => !(await fastRouters(r)).some((n) => n.includes(victim.cookie)),
        5000,
        100,
      );
    await victim.start();
    for (const r of stack.replicas) await waitFastRouters(r, stack.nodes);
  }, 90_000);

  it("a node that joins: its sessions are served through the other replica at once, through the plugin until that replica's router exists, never answered for at the edge", async () => {
    const added = await stack.addNode();
    const answers: string[] = [];
    let onNew = 0;
    // New sessions go to a joining server once it settled (3 s): initialize until 3 landed there.
    const until = Date.now() + 20_000;
    while (Date.now() < until && onNew < 3) {
      const { sessionId } = await rawInitialize(stack.replicas[0]!.httpBase);
      if (!sessionId.includes(added.cookie)) {
        await sleep(50);
        continue;
      }
      onNew++;
      for (let k = 0; k < 5; k++) {
        const r = await rawCall(stack.replicas[1]!.httpBase, sessionId, "counter");
        answers.push(`${r.status}/${header(r, "mcp-affinity") ?? "-"}/${r.text}`);
      }
    }
    expect(onNew).toBeGreaterThan(0);
    expect(
      answers.filter((a) => !a.startsWith("200/")),
      answers.join(" "),
    ).toEqual([]);
    for (const r of stack.replicas) await waitFastRouters(r, [added]);
    report("fast-path join", { sessionsOnNewNode: onNew, calls: answers.length });
  }, 90_000);

  it("a restarted node: its old sessions end with the edge 404, its new sessions take the new incarnation's router", async () => {
    const node = stack.nodes[0]!;
    let old = "";
    while (!old.includes(node.cookie)) old = (await rawInitialize(stack.replicas[0]!.httpBase)).sessionId;
    const oldBoot = old.slice(4 + 16, 4 + 24);
    await node.restart();
    for (const r of stack.replicas)
      await waitUntil(
        `${r.name}: the new incarnation's routers`,
        async () => {
          const names = (await fastRouters(r)).filter((n) => n.includes(node.cookie));
          return names.length >= 2 && !names.some((n) => n.includes(`${node.cookie}${oldBoot}`));
        },
        10_000,
        100,
      );
    for (const r of stack.replicas) {
      const a = await rawCall(r.httpBase, old, "counter");
      expect([a.status, header(a, "mcp-affinity")]).toEqual([404, "lost"]);
    }
    let fresh = "";
    while (!fresh.includes(node.cookie)) fresh = (await rawInitialize(stack.replicas[1]!.httpBase)).sessionId;
    const from = stack.replicas.map((r) => readAccessLog(r.accessLogFile).length);
    for (const r of stack.replicas) expect((await rawCall(r.httpBase, fresh, "counter")).status).toBe(200);
    await sleep(500);
    for (const [k, r] of stack.replicas.entries())
      expect(rowsOf(r, from[k]!).map((row) => row.RouterName)).toEqual([
        `mcp-fast-${fresh.slice(4, 4 + 24)}-post@file`,
      ]);
  }, 90_000);

  // Traefik drops every file of a directory when one is bad: each file the sidecars wrote (at
  // every kill, join and restart above) must have loaded.
  it("Traefik loaded every fast-path file the sidecars wrote", () => {
    for (const r of stack.replicas) {
      const log = readFileSync(join(stack.dir, "logs", `${r.name}.log`), "utf8");
      const refused = log.split("\n").filter((l) => /"providerName":"file"/.test(l) && /"level":"error"/.test(l));
      expect(refused, r.name).toEqual([]);
    }
  });
});
