// Task handles (MCP 2026-07-28, tasks extension) through the built plugin.wasm on the fake http-wasm
// host: a CreateTaskResult's task id becomes a handle naming the node that answered; tasks/get,
// tasks/update and tasks/cancel are routed by the handle in Mcp-Name, with the node's own id put
// back in the header and the body; the edge answers for tasks of gone and down nodes.
import { describe, expect, test } from "vitest";
import type { Exchange, NextHandler } from "../host/http-wasm-host.ts";
import {
  COOKIE,
  GONE_COOKIE,
  INIT_BODY,
  initializeUpstream,
  bk,
  forwardedBackends,
  mcp,
  newPlugin,
  readEvents,
  clearEvents,
  type ViewSpec,
} from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";
import { wrapSessionId, wrapTaskId, parseTaskHandle } from "../../lib/token/index.ts";

const SPEC: ViewSpec = {
  nodes: [],
  sessions: [],
  boots: [
    { cookie: COOKIE.a, bootTag: "0000000f", state: "gone" }, // a's previous boot
    { cookie: COOKIE.a, bootTag: "0000000a", state: "up" },
    { cookie: COOKIE.b, bootTag: "0000000b", state: "draining" },
    { cookie: COOKIE.c, bootTag: "0000000c", state: "down", retryAfterSeconds: 7 },
    { cookie: GONE_COOKIE, bootTag: "0000000e", state: "gone" },
  ],
};
const t = useView(SPEC, "per-test");

const TASK = "786512e2-9e0d-44bd-8f29-789f320fe840";
const V2026: [string, string] = ["MCP-Protocol-Version", "2026-07-28"];
const TASKS_META = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": { extensions: { "io.modelcontextprotocol/tasks": {} } },
};

function clean(ex: Exchange): void {
  expect(ex.trap).toBeUndefined();
  expect(ex.responseTrap).toBeUndefined();
  expect(ex.violations.map(String)).toEqual([]);
}

const toolsCall = (declared: boolean) =>
  JSON.stringify({
    jsonrpc: "2.0",
    id: 3,
    method: "tools/call",
    params: {
      name: "slow",
      arguments: {},
      _meta: declared ? TASKS_META : { "io.modelcontextprotocol/protocolVersion": "2026-07-28" },
    },
  });
const createTaskResult = (taskId: string) =>
  JSON.stringify({
    jsonrpc: "2.0",
    id: 3,
    result: {
      taskId,
      status: "working",
      createdAt: "2026-12-07T10:00:00Z",
      lastUpdatedAt: "2026-12-07T10:00:00Z",
      ttlMs: 60000,
      pollIntervalMs: 500,
      resultType: "task",
    },
  });

/** A node answering a tools/call with a task, as JSON (with its Content-Length) or as an SSE stream. */
const taskUpstream =
  (sse: boolean): NextHandler =>
  () => {
    const json = createTaskResult(TASK);
    if (!sse)
      return {
        status: 200,
        headers: [
          ["Content-Type", "application/json"],
          ["Content-Length", String(json.length)],
        ],
        body: json,
      };
    return {
      status: 200,
      headers: [["Content-Type", "text/event-stream"]],
      body: [
        'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\n',
        `event: message\ndata: ${json}\n\n`,
      ],
    };
  };

function callTool(p: ReturnType<typeof newPlugin>, declared: boolean, sse = false, cookie?: string) {
  const headers: [string, string][] = [["Mcp-Method", "tools/call"], ["Mcp-Name", "slow"], V2026];
  return p.handle(mcp({ body: toolsCall(declared), headers, cookie }), taskUpstream(sse));
}

const taskBody = (method: string, taskId: string, id: number | string = 7) =>
  JSON.stringify({ jsonrpc: "2.0", id, method, params: { taskId, _meta: TASKS_META } });

function taskRequest(
  p: ReturnType<typeof newPlugin>,
  method: string,
  handle: string,
  opts: { body?: string; version?: string | null; cookie?: string; upstream?: NextHandler } = {},
) {
  const headers: [string, string][] = [
    ["Mcp-Method", method],
    ["Mcp-Name", handle],
  ];
  if (opts.version !== null) headers.push(["MCP-Protocol-Version", opts.version ?? "2026-07-28"]);
  const seen: { name?: string; body?: string } = {};
  const upstream: NextHandler =
    opts.upstream ??
    ((req) => {
      seen.name = req.headers.get("Mcp-Name");
      seen.body = Buffer.from(req.body).toString();
      const taskId = JSON.parse(seen.body).params.taskId as string;
      return {
        status: 200,
        headers: [["Content-Type", "application/json"]],
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 7,
          result: { resultType: "complete", taskId, status: "working", ttlMs: 60000 },
        }),
      };
    });
  const ex = p.handle(mcp({ body: opts.body ?? taskBody(method, handle), headers, cookie: opts.cookie }), upstream);
  return { ex, seen };
}

const decisions = (dir: string) => readEvents(dir).all.decisions;

describe("a task created through the edge gets a handle naming its node", () => {
  test.each([
    ["JSON", false],
    ["SSE", true],
  ])("%s answer: the task id carries the answering node's token, the rest of the answer byte for byte", (_n, sse) => {
    const p = newPlugin({ dir: t.dir });
    const ex = callTool(p, true, sse);
    clean(ex);
    expect(ex.responseBuffered).toBe(true);
    // No session: the request went to an up node (a is the only one).
    expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
    const handle = wrapTaskId(TASK, COOKIE.a, "0000000a");
    expect(ex.response.text()).toBe(
      sse
        ? `event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\nevent: message\ndata: ${createTaskResult(handle)}\n\n`
        : createTaskResult(handle),
    );
    if (!sse) expect(ex.response.headers.get("Content-Length")).toBe(String(createTaskResult(handle).length));
    expect(parseTaskHandle(handle)).toMatchObject({ cookie: COOKIE.a, bootTag: "0000000a", inner: TASK });
  });

  test("the node the balancer picked is the one named when the edge placed nothing (its Set-Cookie)", () => {
    const p = newPlugin({ dir: t.dir });
    const up: NextHandler = (req) => {
      const r = taskUpstream(false)(req)!;
      return { ...r, headers: [...(r.headers as [string, string][]), ["Set-Cookie", `${bk(COOKIE.b)}; Path=/`]] };
    };
    const ex = p.handle(
      mcp({ body: toolsCall(true), headers: [["Mcp-Method", "tools/call"], V2026], cookie: bk(COOKIE.a) }),
      up,
    );
    clean(ex);
    expect(JSON.parse(ex.response.text()).result.taskId).toBe(wrapTaskId(TASK, COOKIE.b, "0000000b"));
  });

  test("a client that did not declare the tasks extension costs no held answer", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = callTool(p, false);
    clean(ex);
    expect(ex.responseBuffered).toBe(false);
    expect(ex.response.text()).toBe(createTaskResult(TASK));
  });

  test("wrapTaskIds=false: answers and task requests pass as they are", () => {
    const p = newPlugin({ dir: t.dir, config: { wrapTaskIds: false } });
    expect(callTool(p, true).response.text()).toBe(createTaskResult(TASK));
    const handle = wrapTaskId(TASK, COOKIE.a, "0000000a");
    const { seen } = taskRequest(p, "tasks/get", handle);
    expect(seen.name).toBe(handle);
  });
});

describe("task requests route by their handle", () => {
  test.each(["tasks/get", "tasks/update", "tasks/cancel"])(
    "%s of a live node's task: pinned there, the node sees only its own task id",
    (method) => {
      const p = newPlugin({ dir: t.dir });
      const handle = wrapTaskId(TASK, COOKIE.a, "0000000a");
      const { ex, seen } = taskRequest(p, method, handle, { cookie: `theme=dark; ${bk(COOKIE.c)}` });
      clean(ex);
      expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
      expect(ex.forwarded!.cookies[0]).toContain("theme=dark");
      expect(seen.name).toBe(TASK);
      // Whitespace takes the head's place: the body keeps the length the client declared.
      expect(seen.body).toBe(
        taskBody(method, handle).replace(`"taskId":"${handle}"`, `"taskId":${" ".repeat(29)}"${TASK}"`),
      );
      // No cookie of the client's is repaired for a task.
      expect(ex.response.headers.values("Set-Cookie")).toEqual([]);
      // tasks/get's answer names the task: the client gets its handle back.
      const answered = JSON.parse(ex.response.text()).result.taskId as string;
      expect(answered).toBe(method === "tasks/get" ? handle : TASK);
      expect(ex.responseBuffered).toBe(method === "tasks/get");
    },
  );

  test("a task of a node not in the view yet, or of a stale view: still pinned by its token", () => {
    const p = newPlugin({ dir: t.dir });
    const unlisted = wrapTaskId(TASK, COOKIE.d, "0000000d");
    const { ex, seen } = taskRequest(p, "tasks/get", unlisted);
    clean(ex);
    expect(forwardedBackends(ex)).toEqual([COOKIE.d]);
    expect(seen.name).toBe(TASK);
  });

  test("gone or rebooted node: -32602 at the edge with the request's id, never the node", () => {
    const p = newPlugin({ dir: t.dir });
    for (const handle of [wrapTaskId(TASK, GONE_COOKIE, "0000000e"), wrapTaskId(TASK, COOKIE.a, "0000000f")]) {
      const { ex } = taskRequest(p, "tasks/get", handle, { body: taskBody("tasks/get", handle, "req-9") });
      clean(ex);
      expect(ex.forwarded).toBeUndefined();
      expect(ex.response.status).toBe(200);
      expect(ex.response.headers.get("Mcp-Affinity")).toBe("handle-lost");
      const body = JSON.parse(ex.response.text());
      expect(body).toMatchObject({ jsonrpc: "2.0", id: "req-9", error: { code: -32602 } });
    }
  });

  test("down node: 503 with the node's Retry-After and the request's id", () => {
    const p = newPlugin({ dir: t.dir });
    const handle = wrapTaskId(TASK, COOKIE.c, "0000000c");
    const { ex } = taskRequest(p, "tasks/update", handle, { body: taskBody("tasks/update", handle, 11) });
    clean(ex);
    expect(ex.forwarded).toBeUndefined();
    expect(ex.response.status).toBe(503);
    expect(ex.response.headers.get("Retry-After")).toBe("7");
    expect(JSON.parse(ex.response.text())).toMatchObject({ id: 11, error: { code: -32000 } });
  });

  test.each([
    ["the body names the raw task id", (h: string) => ({ body: taskBody("tasks/get", TASK), handle: h })],
    [
      "the body names another node's handle",
      (h: string) => ({ body: taskBody("tasks/get", wrapTaskId(TASK, COOKIE.b, "0000000b")), handle: h }),
    ],
    ["no MCP-Protocol-Version", (h: string) => ({ body: taskBody("tasks/get", h), handle: h, version: null })],
    [
      "a 2025 MCP-Protocol-Version",
      (h: string) => ({ body: taskBody("tasks/get", h), handle: h, version: "2025-11-25" }),
    ],
  ])("%s: 400 with -32020, never the node", (_n, make) => {
    const p = newPlugin({ dir: t.dir });
    const { body, handle, version } = make(wrapTaskId(TASK, COOKIE.a, "0000000a")) as {
      body: string;
      handle: string;
      version?: string | null;
    };
    const { ex } = taskRequest(p, "tasks/get", handle, { body, version });
    clean(ex);
    expect(ex.forwarded).toBeUndefined();
    expect(ex.response.status).toBe(400);
    expect(ex.response.headers.get("Mcp-Affinity")).toBe("handle-mismatch");
    expect(JSON.parse(ex.response.text())).toMatchObject({ id: 7, error: { code: -32020 } });
  });

  test("a body larger than maxBufferedBodyBytes cannot be rewritten: 413 with a JSON-RPC body", () => {
    const p = newPlugin({ dir: t.dir, config: { maxBufferedBodyBytes: 64 } });
    const handle = wrapTaskId(TASK, COOKIE.a, "0000000a");
    const { ex } = taskRequest(p, "tasks/update", handle, { body: taskBody("tasks/update", handle) });
    clean(ex);
    expect(ex.forwarded).toBeUndefined();
    expect(ex.response.status).toBe(413);
    expect(JSON.parse(ex.response.text())).toMatchObject({ error: { code: -32600 } });
  });

  test("every task decision is counted by its reason", () => {
    clearEvents(t.dir);
    const p = newPlugin({ dir: t.dir });
    taskRequest(p, "tasks/get", wrapTaskId(TASK, COOKIE.a, "0000000a"));
    taskRequest(p, "tasks/get", wrapTaskId(TASK, GONE_COOKIE, "0000000e"));
    taskRequest(p, "tasks/get", wrapTaskId(TASK, COOKIE.c, "0000000c"));
    taskRequest(p, "tasks/get", wrapTaskId(TASK, COOKIE.a, "0000000a"), { version: null });
    callTool(p, true);
    // Frequent reasons are batched: a request past eventFlushMs flushes them.
    p.clock.advance(61_000);
    p.handle({ method: "GET", uri: "/mcp" });
    expect(decisions(t.dir)).toEqual({
      handle: 1,
      "handle-lost": 1,
      "handle-unavailable": 1,
      "handle-mismatch": 1,
      sessionless: 2,
    });
  });
});

describe("a requestState routes its retry to the node that issued it", () => {
  const STATE = "v1." + "s".repeat(400);
  const confirm = (params: Record<string, unknown>, capabilities: Record<string, unknown>) =>
    JSON.stringify({
      jsonrpc: "2.0",
      id: 9,
      method: "tools/call",
      params: {
        name: "confirm",
        arguments: {},
        ...params,
        _meta: {
          "io.modelcontextprotocol/protocolVersion": "2026-07-28",
          "io.modelcontextprotocol/clientCapabilities": capabilities,
        },
      },
    });
  const headers: [string, string][] = [["Mcp-Method", "tools/call"], ["Mcp-Name", "confirm"], V2026];
  const inputRequired: NextHandler = () => ({
    status: 200,
    headers: [["Content-Type", "application/json"]],
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 9,
      result: {
        inputRequests: { confirm: { method: "elicitation/create", params: {} } },
        requestState: STATE,
        resultType: "input_required",
      },
    }),
  });

  test("the first answer's requestState names the node; the retry is pinned there and the node reads its own state", () => {
    const p = newPlugin({ dir: t.dir });
    const first = p.handle(mcp({ body: confirm({}, { elicitation: {} }), headers }), inputRequired);
    clean(first);
    expect(first.responseBuffered).toBe(true);
    const state = JSON.parse(first.response.text()).result.requestState as string;
    expect(state).toBe(wrapTaskId(STATE, COOKIE.a, "0000000a"));

    let seen = "";
    const retry = p.handle(
      mcp({
        body: confirm({ requestState: state, inputResponses: { confirm: { action: "accept" } } }, { elicitation: {} }),
        headers,
        cookie: bk(COOKIE.c),
      }),
      (req) => {
        seen = Buffer.from(req.body).toString();
        return {
          status: 200,
          headers: [["Content-Type", "application/json"]],
          body: '{"jsonrpc":"2.0","id":9,"result":{"content":[],"resultType":"complete"}}',
        };
      },
    );
    clean(retry);
    expect(forwardedBackends(retry)).toEqual([COOKIE.a]);
    expect(JSON.parse(seen).params.requestState).toBe(STATE);
    expect(retry.forwarded!.headers.get("Mcp-Name")).toBe("confirm");
  });

  test("a retry whose node is gone: 400 with -32602, the SDK's answer for a state it cannot open", () => {
    const p = newPlugin({ dir: t.dir });
    const state = wrapTaskId(STATE, GONE_COOKIE, "0000000e");
    const ex = p.handle(mcp({ body: confirm({ requestState: state }, { elicitation: {} }), headers }), () => {
      throw new Error("the node must not be asked");
    });
    clean(ex);
    expect(ex.response.status).toBe(400);
    expect(ex.response.headers.get("Mcp-Affinity")).toBe("handle-lost");
    expect(JSON.parse(ex.response.text())).toMatchObject({
      id: 9,
      error: { code: -32602, data: { reason: "invalid_request_state" } },
    });
  });

  test("a client that declared nothing a server may ask for costs no held answer", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(mcp({ body: confirm({}, {}), headers }), inputRequired);
    clean(ex);
    expect(ex.responseBuffered).toBe(false);
  });
});

describe("what a client that speaks both eras sends", () => {
  test("an initialize with Mcp-Method (a 2026 client falling back) is learned and wrapped like any initialize", () => {
    const p = newPlugin({ dir: t.dir });
    const ex = p.handle(
      mcp({ body: INIT_BODY, headers: [["Mcp-Method", "initialize"]] }),
      initializeUpstream("server-own-session", { setCookie: `${bk(COOKIE.a)}; Path=/` }),
    );
    clean(ex);
    expect(ex.responseBuffered).toBe(true);
    expect(ex.response.headers.get("Mcp-Session-Id")).toBe(wrapSessionId("server-own-session", COOKIE.a, "0000000a"));
  });
});

test("a requestState retry answered with another input request: the new state names the node that answered, not the client's cookie", () => {
  const p = newPlugin({ dir: t.dir });
  const state = wrapTaskId("v1.first", COOKIE.a, "0000000a");
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 5,
    method: "tools/call",
    params: {
      name: "confirm",
      arguments: {},
      requestState: state,
      _meta: { "io.modelcontextprotocol/clientCapabilities": { elicitation: {} } },
    },
  });
  const headers: [string, string][] = [["Mcp-Method", "tools/call"], ["Mcp-Name", "confirm"], V2026];
  const ex = p.handle(mcp({ body, headers, cookie: bk(COOKIE.c) }), () => ({
    status: 200,
    headers: [["Content-Type", "application/json"]],
    body: '{"jsonrpc":"2.0","id":5,"result":{"inputRequests":{},"requestState":"v1.second","resultType":"input_required"}}',
  }));
  clean(ex);
  expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
  expect(JSON.parse(ex.response.text()).result.requestState).toBe(wrapTaskId("v1.second", COOKIE.a, "0000000a"));
});

test("a subscriptions/listen stream is never held, whatever its client declared", () => {
  const p = newPlugin({ dir: t.dir });
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "subscriptions/listen",
    params: {
      notifications: { taskIds: [wrapTaskId(TASK, COOKIE.a, "0000000a")] },
      _meta: TASKS_META_WITH_INPUTS,
    },
  });
  const ex = p.handle(mcp({ body, headers: [["Mcp-Method", "subscriptions/listen"], V2026] }), () => ({
    status: 200,
    headers: [["Content-Type", "text/event-stream"]],
    body: ['data: {"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{}}\n\n'],
  }));
  clean(ex);
  expect(ex.responseBuffered).toBe(false);
  // No handle routes it: it went to an up node, its body as the client sent it.
  expect(forwardedBackends(ex)).toEqual([COOKIE.a]);
  expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
});

const TASKS_META_WITH_INPUTS = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {
    elicitation: {},
    sampling: {},
    extensions: { "io.modelcontextprotocol/tasks": {} },
  },
};
