// The 2026-07-28 servers and clients the end-to-end tests run, directly (no edge): the Rust SDK task
// server (tasks in process memory) with the Rust SDK task client, and the Python SDK 2.x server whose
// requestState is sealed under a per-process key with the Python SDK 2.x client. Against one process
// every flow completes; against two, a task handle or a requestState minted by one process fails on
// the other, which is why the edge must route them.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../../dev/poll.ts";
import { failedCalls, messageOf, post2026, runRequestStateClient, runRustTaskClient } from "../support/task-clients.ts";
import { startPythonRequestStateServer, startRustTaskServer, type TestServer } from "../support/test-server.ts";

const mcp = (s: TestServer) => `${s.url}/mcp`;
/** How often the task servers here suggest polling (their --poll-interval-ms). */
const POLL_MS = 100;
/** The task TTL of the short-lived server: rmcp drops a terminal task one TTL after it ended. */
const TASK_TTL_MS = 1000;

/** A 2026-07-28 request to a server, with the tasks extension declared. */
const request2026 = (server: TestServer, method: string, mcpName: string, params: Record<string, unknown>, id = 7) =>
  post2026(mcp(server), { method, mcpName, params, id });

/** A tasks/* request as a 2026-07-28 client sends it: Mcp-Name is the task id. */
const taskRequest = (server: TestServer, method: string, params: { taskId: string; [k: string]: unknown }, id = 7) =>
  request2026(server, method, params.taskId, params, id);

describe("Rust SDK task server, Rust SDK task client", () => {
  let a: TestServer;
  let b: TestServer;
  let json: TestServer;
  let shortLived: TestServer;

  beforeAll(async () => {
    // Sequential: the first start may build the binaries.
    a = await startRustTaskServer({ name: "rs-a", pollIntervalMs: POLL_MS });
    b = await startRustTaskServer({ name: "rs-b", pollIntervalMs: POLL_MS });
    json = await startRustTaskServer({ name: "rs-json", pollIntervalMs: POLL_MS, jsonResponse: true });
    shortLived = await startRustTaskServer({ name: "rs-ttl", pollIntervalMs: POLL_MS, taskTtlMs: TASK_TTL_MS });
  }, 600_000);

  afterAll(async () => {
    await Promise.all([a, b, json, shortLived].map((s) => s?.stop()));
  });

  it("slow tasks complete on their node, each request on its own line with its own call id", async () => {
    const run = await runRustTaskClient({ url: mcp(a), tasks: 3, ms: 300 });
    expect(failedCalls(run)).toBe("");
    expect(run.exitCode).toBe(0);
    expect(run.units.map((t) => [t.task, t.ok, t.status, t.node])).toEqual([
      [1, true, "completed", "rs-a"],
      [2, true, "completed", "rs-a"],
      [3, true, "completed", "rs-a"],
    ]);
    const ids = run.calls.map((c) => c.call);
    expect(ids.every((id) => typeof id === "string")).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    // Each task: one tools/call answered with a task handle, then tasks/get for that handle only.
    for (const t of run.units) {
      const mine = run.calls.filter((c) => c.task === t.task);
      expect(mine[0]).toMatchObject({ method: "tools/call", taskId: t.taskId, taskStatus: "working", status: 200 });
      expect(mine.slice(1).every((c) => c.method === "tasks/get" && c.taskId === t.taskId)).toBe(true);
      expect(mine[mine.length - 1]).toMatchObject({ taskStatus: "completed", node: "rs-a" });
    }
    // The SDK's default answers every request with an SSE stream.
    expect(new Set(run.calls.map((c) => c.body))).toEqual(new Set(["sse"]));
    expect(run.summary).toMatchObject({ tasks: 3, completed: 3, failedTasks: 0, failedCalls: 0, nodes: { "rs-a": 3 } });
  });

  it("answers with one JSON body per request when the server is set so", async () => {
    const run = await runRustTaskClient({ url: mcp(json), tasks: 1, ms: 100 });
    expect(failedCalls(run)).toBe("");
    expect(new Set(run.calls.map((c) => c.body))).toEqual(new Set(["json"]));
    expect(run.units[0]).toMatchObject({ ok: true, status: "completed", node: "rs-json" });
  });

  it("an input-requesting task completes after tasks/update, with the answer and its node", async () => {
    const run = await runRustTaskClient({ url: mcp(a), tasks: 2, tool: "ask", answer: "ada" });
    expect(failedCalls(run)).toBe("");
    for (const t of run.units) {
      expect(t).toMatchObject({ ok: true, status: "completed", node: "rs-a" });
      expect((t as { result?: { answer?: string } }).result?.answer).toBe("ada");
      // In order: input_required, then the update, then completed.
      const seq = run.calls.filter((c) => c.task === t.task).map((c) => c.taskStatus ?? c.method);
      const asked = seq.indexOf("input_required");
      const updated = seq.indexOf("tasks/update");
      expect(asked).toBeGreaterThan(0);
      expect(updated).toBeGreaterThan(asked);
      expect(seq.lastIndexOf("completed")).toBeGreaterThan(updated);
    }
  });

  it("tasks/cancel: a cancelled task ends cancelled, the others complete", async () => {
    // 60 s tasks: only a cancel ends them within the run.
    const cancelled = await runRustTaskClient({ url: mcp(a), tasks: 2, ms: 60_000, cancelEvery: 1 });
    expect(failedCalls(cancelled)).toBe("");
    expect(cancelled.units.map((t) => [t.ok, t.status])).toEqual([
      [true, "cancelled"],
      [true, "cancelled"],
    ]);
    expect(cancelled.summary.byMethod["tasks/cancel"]).toEqual({ calls: 2, failed: 0 });
    // Every second one: `ask` tasks wait for their answer, so only the cancel can end the second.
    const mixed = await runRustTaskClient({ url: mcp(a), tasks: 2, tool: "ask", cancelEvery: 2 });
    expect(failedCalls(mixed)).toBe("");
    expect(mixed.units.map((t) => [t.ok, t.status])).toEqual([
      [true, "completed"],
      [true, "cancelled"],
    ]);
    expect(mixed.calls.filter((c) => c.task === 2).map((c) => c.method)).not.toContain("tasks/update");
  });

  it("an unknown task id is -32602 on tasks/get, tasks/update and tasks/cancel, with the request's id", async () => {
    const taskId = randomUUID();
    for (const [method, params] of [
      ["tasks/get", { taskId }],
      ["tasks/update", { taskId, inputResponses: {} }],
      ["tasks/cancel", { taskId }],
    ] as const) {
      const r = await taskRequest(a, method, params, 41);
      // rmcp answers a JSON-RPC error to a handled request with 200 (here in an SSE stream).
      expect([method, r.status]).toEqual([method, 200]);
      expect(messageOf(r.body)).toMatchObject({ id: 41, error: { code: -32602 } });
    }
  });

  it("an expired task is -32602: seen completed first, then gone once its TTL has passed", async () => {
    const created = messageOf(
      (await request2026(shortLived, "tools/call", "slow", { name: "slow", arguments: { ms: 0 } })).body,
    );
    expect(created.result).toMatchObject({ resultType: "task", status: "working", ttlMs: TASK_TTL_MS });
    const taskId = String(created.result!.taskId);
    const get = async () => messageOf((await taskRequest(shortLived, "tasks/get", { taskId })).body);
    // Completed at once (0 ms of work); it stays observable for one TTL after that.
    await waitUntil("the task completed", async () => (await get()).result?.status === "completed", TASK_TTL_MS, 20);
    // rmcp evicts it on the first request after that TTL; the wait allows three.
    await waitUntil("the task expired", async () => (await get()).error?.code === -32602, 3 * TASK_TTL_MS, 50);
  });

  it("a task of one process polled on another is -32602 there; its own process still has it", async () => {
    const run = await runRustTaskClient({ url: mcp(a), pollUrl: mcp(b), tasks: 1, ms: 300 });
    expect(run.exitCode).toBe(1);
    const [create, poll, ...rest] = run.calls.filter((c) => c.task === 1);
    expect(create).toMatchObject({ method: "tools/call", ok: true, taskStatus: "working" });
    expect(poll).toMatchObject({ method: "tasks/get", taskId: create!.taskId, status: 200, code: -32602, ok: false });
    // A spec client abandons the task at the first -32602.
    expect(rest).toEqual([]);
    expect(run.units[0]).toMatchObject({ ok: false, taskId: create!.taskId });
    const onA = await taskRequest(a, "tasks/get", { taskId: String(create!.taskId) });
    expect(messageOf(onA.body).result).toMatchObject({ taskId: create!.taskId });
  });
});

describe("Python SDK 2.x requestState server, Python SDK 2.x client", () => {
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startPythonRequestStateServer({ name: "py2-a" }),
      startPythonRequestStateServer({ name: "py2-b" }),
    ]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a, b].map((s) => s?.stop()));
  });

  it("the retry completes on the process that minted the requestState", async () => {
    const run = await runRequestStateClient({ url: mcp(a), calls: 3 });
    expect(failedCalls(run)).toBe("");
    expect(run.exitCode).toBe(0);
    expect(run.units.map((u) => [u.ok, u.node])).toEqual([
      [true, "py2-a"],
      [true, "py2-a"],
      [true, "py2-a"],
    ]);
    const rounds = run.calls.filter((c) => c.method === "tools/call").map((c) => [c.i, c.round, c.resultType]);
    expect(rounds).toEqual(
      [1, 2, 3].flatMap((i) => [
        [i, "first", "input_required"],
        [i, "retry", "complete"],
      ]),
    );
    const ids = run.calls.map((c) => c.call);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("the retry fails with -32602 on another process (its per-process key cannot open the state)", async () => {
    const run = await runRequestStateClient({ url: mcp(a), retryUrl: mcp(b), calls: 2 });
    expect(run.exitCode).toBe(1);
    expect(run.units.map((u) => [u.ok, u.code])).toEqual([
      [false, -32602],
      [false, -32602],
    ]);
    const retries = run.calls.filter((c) => c.round === "retry" && c.method === "tools/call");
    expect(retries.map((c) => [c.status, c.code, c.message])).toEqual([
      [400, -32602, "Invalid or expired requestState"],
      [400, -32602, "Invalid or expired requestState"],
    ]);
    // The first round still came from the minting process.
    const firsts = run.calls.filter((c) => c.round === "first");
    expect(firsts.every((c) => c.ok && c.resultType === "input_required")).toBe(true);
  });
});
