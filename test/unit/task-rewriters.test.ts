// The plugin's task-handle rewriters (plugin/assembly/tasks.ts, through plugin/build/core.wasm): the
// request side removes a handle's head from `taskId`, the answer side inserts it into a
// CreateTaskResult's or a tasks/get result's `taskId`. Each is checked against the same body fed
// whole and in pieces of every size, since a body reaches the plugin in pieces cut anywhere.
import { describe, it, expect, beforeAll } from "vitest";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { wrapTaskId } from "../../lib/token/index.ts";

type Exports = {
  _start(): void;
  memory: WebAssembly.Memory;
  rewriteInput(len: number): number;
  rewriteArgument(len: number): number;
  rewriteResultPtr(): number;
  rewriteResultLen(): number;
  removeTaskHead(piece: number, state: number): number;
  wrapTaskIds(mode: number, sse: number, piece: number): number;
};
let wasm: Exports;
beforeAll(async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync("plugin/build/core.wasm"), {});
  wasm = instance.exports as unknown as Exports;
  wasm._start();
});

function put(where: number, text: string): void {
  const b = Buffer.from(text, "latin1");
  new Uint8Array(wasm.memory.buffer, where, b.length).set(b);
}
const output = () =>
  Buffer.from(new Uint8Array(wasm.memory.buffer, wasm.rewriteResultPtr(), wasm.rewriteResultLen())).toString("latin1");

const COOKIE = "0123456789abcdef";
const TAG = "a1b2c3d4";
const HEAD = `mt1.${COOKIE}${TAG}.`;
const OTHER_HEAD = `mt1.fedcba9876543210${TAG}.`;
const TASK = "786512e2-9e0d-44bd-8f29-789f320fe840";

/** Removes HEAD (or `handle`'s head) from `body` fed in pieces of `piece` bytes. */
function remove(body: string, piece = 1 << 16, handle = HEAD + TASK) {
  put(wasm.rewriteArgument(handle.length), handle);
  put(wasm.rewriteInput(body.length), body);
  const r = wasm.removeTaskHead(piece, 0);
  return { body: output(), removed: r % 1000, foreign: r >= 1000 };
}

/** Learns and removes the head of the requestState values of `body`. */
function removeState(body: string, piece = 1 << 16) {
  put(wasm.rewriteInput(body.length), body);
  const r = wasm.removeTaskHead(piece, 1);
  const out = output();
  const removed = r % 1000;
  return {
    body: removed > 0 ? out.slice(0, -29) : out,
    head: removed > 0 ? out.slice(-29) : null,
    removed,
    foreign: r >= 1000,
  };
}

/**
 * Wraps with HEAD: mode "created" (a CreateTaskResult's task id), "echo" (the result names
 * `echo`), or "state" (a CreateTaskResult's task id or an InputRequiredResult's requestState).
 */
function wrap(body: string, mode: "created" | "echo" | "state", sse = false, piece = 1 << 16, echo = TASK) {
  const arg = mode === "echo" ? HEAD + echo : HEAD;
  put(wasm.rewriteArgument(arg.length), arg);
  put(wasm.rewriteInput(body.length), body);
  const r = wasm.wrapTaskIds(mode === "echo" ? 1 : mode === "state" ? 2 : 0, sse ? 1 : 0, piece);
  return { body: output(), wrapped: r % 1000, overflowed: Math.floor(r / 1000) };
}

const getRequest = (taskId: string, space = "") =>
  `{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"taskId"${space}:${space}"${taskId}","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`;
/** What the node gets: the head's bytes become whitespace before the value (the body keeps its length). */
const unwrapped = (taskId: string, space = "") =>
  getRequest(taskId, space).replace(`"taskId"${space}:${space}"`, `"taskId"${space}:${space}${" ".repeat(29)}"`);
const created = (taskId: string, first: "resultType" | "taskId") => {
  const rt = `"resultType":"task"`;
  const id = `"taskId":"${taskId}"`;
  const rest = `"status":"working","createdAt":"2026-12-07T10:00:00Z","lastUpdatedAt":"2026-12-07T10:00:00Z","ttlMs":60000,"pollIntervalMs":500`;
  const fields = first === "resultType" ? [rt, id, rest] : [id, rest, rt];
  return `{"jsonrpc":"2.0","id":3,"result":{${fields.join(",")}}}`;
};

describe("removing a handle's head from a task request", () => {
  it("leaves the node its own task id, the body as long and otherwise byte for byte, however it is cut", () => {
    const body = getRequest(HEAD + TASK, " ");
    for (let piece = 1; piece <= body.length; piece++) {
      expect(remove(body, piece)).toEqual({ body: unwrapped(TASK, " "), removed: 1, foreign: false });
    }
  });

  it("finds no match in a body whose taskId is raw, another node's handle, or only mentioned inside a string", () => {
    expect(remove(getRequest(TASK))).toEqual({ body: getRequest(TASK), removed: 0, foreign: false });
    expect(remove(getRequest(OTHER_HEAD + TASK))).toEqual({
      body: getRequest(OTHER_HEAD + TASK),
      removed: 0,
      foreign: true,
    });
    const quoted = `{"id":1,"method":"tasks/update","params":{"taskId":"${TASK}","inputResponses":{"a":{"text":"\\"taskId\\":\\"${HEAD}x\\""}}}}`;
    expect(remove(quoted)).toEqual({ body: quoted, removed: 0, foreign: false });
  });

  it("keeps any body intact when it holds no handle (random JSON-ish text cut anywhere)", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), fc.integer({ min: 1, max: 64 }), (text, piece) => {
        const body = Buffer.from(text, "utf8").toString("latin1").replaceAll(HEAD, "");
        expect(remove(body, piece).body).toBe(body);
      }),
      { numRuns: 300 },
    );
  });

  it("undoes the answer side's wrap: wrapping then removing gives back the server's bytes", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[\x21-\x7e]{1,80}$/), fc.integer({ min: 1, max: 40 }), (raw, piece) => {
        fc.pre(!raw.includes('"') && !raw.includes("\\"));
        const handle = wrapTaskId(raw, COOKIE, TAG);
        const answer = created(raw, "taskId");
        const w = wrap(answer, "created", false, piece);
        expect(w.body).toBe(created(handle, "taskId"));
        const node = remove(getRequest(handle), piece, handle).body;
        expect(node).toBe(unwrapped(raw));
        expect(node.length).toBe(getRequest(handle).length);
        expect(JSON.parse(node).params.taskId).toBe(raw);
      }),
      { numRuns: 200 },
    );
  });
});

describe("wrapping a task id in an answer", () => {
  it("wraps a CreateTaskResult's taskId whatever the key order, JSON or SSE, however it is cut", () => {
    for (const first of ["resultType", "taskId"] as const) {
      const json = created(TASK, first);
      const want = created(HEAD + TASK, first);
      const sse = `event: message\nid: 1\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"taskId":"x"}}\n\nevent: message\ndata: ${json}\n\n`;
      const sseWant = sse.replace(json, want);
      for (let piece = 1; piece <= sse.length; piece += 3) {
        expect(wrap(json, "created", false, piece)).toEqual({ body: want, wrapped: 1, overflowed: 0 });
        expect(wrap(sse, "created", true, piece)).toEqual({ body: sseWant, wrapped: 1, overflowed: 0 });
      }
    }
  });

  it("reads CR LF framed events, and a message whose JSON spans several data lines", () => {
    const json = created(TASK, "taskId");
    const split = json.replace(',"status"', '\r\ndata: ,"status"');
    const sse = `event: message\r\ndata: ${split}\r\n\r\n`;
    const want = sse.replace(`"taskId":"${TASK}"`, `"taskId":"${HEAD + TASK}"`);
    for (let piece = 1; piece < 30; piece += 4)
      expect(wrap(sse, "created", true, piece)).toEqual({ body: want, wrapped: 1, overflowed: 0 });
  });

  it("leaves a result that is no task alone, even when a tool's own data says taskId or resultType", () => {
    const own = `{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"x"}],"structuredContent":{"resultType":"task","taskId":"${TASK}"},"resultType":"complete"}}`;
    expect(wrap(own, "created")).toEqual({ body: own, wrapped: 0, overflowed: 0 });
    const late = `{"jsonrpc":"2.0","id":3,"result":{"taskId":"${TASK}","resultType":"complete"}}`;
    expect(wrap(late, "created")).toEqual({ body: late, wrapped: 0, overflowed: 0 });
    const error = `{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"no","data":{"resultType":"task","taskId":"${TASK}"}}}`;
    expect(wrap(error, "created")).toEqual({ body: error, wrapped: 0, overflowed: 0 });
  });

  it("leaves ids it could not carry in a header alone (escapes, non-ASCII, too long)", () => {
    for (const id of ['a\\"b', "caf\u00e9", "x".repeat(256)]) {
      const body = created(id, "resultType");
      expect(wrap(body, "created").wrapped).toBe(0);
      expect(wrap(body, "created").body).toBe(body);
    }
  });

  it("gives up after HOLD_BYTES rather than hold an answer: the id goes out as it came", () => {
    const padding = `"statusMessage":"${"p".repeat(2000)}"`;
    const body = `{"jsonrpc":"2.0","id":3,"result":{"taskId":"${TASK}",${padding},"resultType":"task"}}`;
    expect(wrap(body, "created")).toEqual({ body, wrapped: 0, overflowed: 1 });
  });

  it("wraps a tasks/get result's taskId only when it is the task the request named", () => {
    const get = (id: string) =>
      `{"jsonrpc":"2.0","id":4,"result":{"resultType":"complete","taskId":"${id}","status":"completed","result":{"content":[],"taskId":"${id}"}}}`;
    for (let piece = 1; piece < 40; piece += 7) {
      expect(wrap(get(TASK), "echo", false, piece)).toEqual({
        body: get(HEAD + TASK).replace(`"content":[],"taskId":"${HEAD + TASK}"`, `"content":[],"taskId":"${TASK}"`),
        wrapped: 1,
        overflowed: 0,
      });
    }
    expect(wrap(get("another-task"), "echo")).toEqual({ body: get("another-task"), wrapped: 0, overflowed: 0 });
    expect(wrap(get(TASK + "x"), "echo")).toEqual({ body: get(TASK + "x"), wrapped: 0, overflowed: 0 });
  });
});

describe("requestState handles", () => {
  const STATE = "v1." + "Ab9-_".repeat(80);
  const inputRequired = (state: string) =>
    `{"jsonrpc":"2.0","id":1,"result":{"inputRequests":{"confirm":{"method":"elicitation/create","params":{"message":"Proceed?","mode":"form"}}},"requestState":"${state}","resultType":"input_required"}}`;
  const retry = (state: string) =>
    `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"inputResponses":{"confirm":{"action":"accept","content":{"confirm":true}}},"requestState":"${state}","name":"confirm","arguments":{}}}`;

  it("wraps an InputRequiredResult's requestState (after its input requests, before its result type), however it is cut", () => {
    for (let piece = 1; piece < 60; piece += 7) {
      expect(wrap(inputRequired(STATE), "state", false, piece)).toEqual({
        body: inputRequired(HEAD + STATE),
        wrapped: 1,
        overflowed: 0,
      });
    }
    // Only where asked: a task id wrapper leaves a requestState alone, and a complete result keeps its own.
    expect(wrap(inputRequired(STATE), "created").wrapped).toBe(0);
    const complete = inputRequired(STATE).replace("input_required", "complete");
    expect(wrap(complete, "state")).toEqual({ body: complete, wrapped: 0, overflowed: 0 });
  });

  it("a retry: the head is learned from the body, turned into whitespace, and a second node's head is foreign", () => {
    for (let piece = 1; piece < 60; piece += 5) {
      const r = removeState(retry(HEAD + STATE), piece);
      expect(r.head).toBe(HEAD);
      expect(r.removed).toBe(1);
      expect(r.foreign).toBe(false);
      expect(r.body.length).toBe(retry(HEAD + STATE).length);
      expect(JSON.parse(r.body).params.requestState).toBe(STATE);
    }
    expect(removeState(retry(STATE))).toMatchObject({ body: retry(STATE), removed: 0, head: null });
    const two = retry(HEAD + STATE).replace('"name":"confirm"', `"requestState":"${OTHER_HEAD}x","name":"confirm"`);
    expect(removeState(two)).toMatchObject({ removed: 1, foreign: true });
  });
});
