// The tools that ask the client in the middle of a call (ask: elicitation, sample: sampling,
// progress: progress notifications) answer the same on the three kinds of MCP server the end-to-end
// tests put behind the edge: the reference node (TypeScript SDK, node library), the Python SDK test
// server and the Go SDK test server. Direct, no Traefik: this pins the servers' side of the contract.
// Every server-to-client message must travel on the call's own SSE stream (the POST's answer), which
// the recording fetch below checks, since that is what keeps the exchange on one node.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import {
  Client as V2Client,
  StreamableHTTPClientTransport as V2StreamableHTTPClientTransport,
} from "@modelcontextprotocol/client";
import { startGoServer, startPythonServer } from "../support/test-server.ts";
import { startNode, startRedis } from "./node-redis-helper.ts";

interface Running {
  url: string;
  stop(): Promise<void>;
}

/**
 * Whether the server sends its Mcp-Session-Id again on the answer to a tools/call POST (not only on
 * initialize's). The TypeScript SDK (webStandardStreamableHttp.js) and the Python SDK do; the Go SDK
 * v1.8.0 sets it on the initialize answer only (mcp/streamable.go: `if c.sessionID != "" &&
 * isInitialize`): after initialize, the edge sees a Go server's session id in the client's requests
 * only, never in the server's answers. Note for the edge: the TypeScript client (client/streamableHttp.js, send) adopts
 * the id of ANY POST answer that carries one, error answers included: a different id there
 * silently replaces the client's session.
 */
const SERVERS: Array<{ kind: string; repeatsSessionId: boolean; start(): Promise<Running> }> = [
  {
    kind: "reference",
    repeatsSessionId: true,
    async start() {
      const redis = await startRedis();
      const node = await startNode({ name: "tools-ref", redisUrl: redis.url });
      return {
        url: node.url,
        async stop() {
          await node.shutdown();
          await redis.stop();
        },
      };
    },
  },
  { kind: "python", repeatsSessionId: true, start: () => startPythonServer({ name: "tools-py" }) },
  { kind: "go", repeatsSessionId: false, start: () => startGoServer({ name: "tools-go" }) },
];

/** One POST the client sent; `answer` resolves once its answer's body has been read to the end. */
interface Exchange {
  message: { id?: unknown; method?: string; params?: { name?: string }; result?: unknown };
  answer: Promise<{ status: number; headers: Headers; body: string }>;
}

/** A fetch that records every POST when it is sent, with its answer's status, headers and a copy of its body. */
function recordingFetch(log: Exchange[]): typeof fetch {
  return async (input, init) => {
    if (init?.method !== "POST") return fetch(input, init);
    let settle!: (a: Awaited<Exchange["answer"]>) => void;
    log.push({ message: JSON.parse(String(init.body)), answer: new Promise((r) => (settle = r)) });
    let res: Response;
    try {
      res = await fetch(input, init);
    } catch (err) {
      settle({ status: 0, headers: new Headers(), body: String(err) });
      throw err;
    }
    if (!res.body) {
      settle({ status: res.status, headers: res.headers, body: "" });
      return res;
    }
    const [mine, theirs] = res.body.tee();
    void new Response(mine)
      .text()
      .catch(() => "")
      .then((body) => settle({ status: res.status, headers: res.headers, body }));
    return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

const text = (r: unknown) => (r as { content: Array<{ type: string; text: string }> }).content[0]!.text;

describe.each(SERVERS)("$kind server: ask, sample, progress", ({ repeatsSessionId, start }) => {
  let server: Running;
  let client: Client;
  let transport: StreamableHTTPClientTransport;
  const posts: Exchange[] = [];
  const asked: unknown[] = [];
  const sampled: unknown[] = [];

  beforeAll(async () => {
    server = await start();
    client = new Client(
      { name: "server-tools-test", version: "1.0.0" },
      { capabilities: { elicitation: {}, sampling: {} } },
    );
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      asked.push(req.params);
      return { action: "accept", content: { name: "ada" } };
    });
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      sampled.push(req.params);
      return { role: "assistant", content: { type: "text", text: "pong" }, model: "test-model" };
    });
    transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), { fetch: recordingFetch(posts) });
    await client.connect(transport);
  });
  afterAll(async () => {
    await client?.close().catch(() => {});
    await server?.stop();
  });

  /** Calls `name`; returns its text, its duration and the answer to the POST that carried it. */
  async function call(name: string, onprogress?: (p: { progress: number; total?: number }) => void) {
    const t0 = Date.now();
    const r = await client.callTool({ name, arguments: {} }, undefined, onprogress ? { onprogress } : undefined);
    const ms = Date.now() - t0;
    const post = posts.filter((p) => p.message.method === "tools/call" && p.message.params?.name === name).at(-1)!;
    return { text: text(r), ms, answer: await post.answer };
  }

  /** The answers of the client's POSTs that carried a response to the server (elicitation, sampling). */
  const responsesPosted = () => Promise.all(posts.filter((p) => p.message.result !== undefined).map((p) => p.answer));

  it("ask elicits a name on the call's stream and greets it", async () => {
    const r = await call("ask");
    expect(r.text).toBe("hello ada");
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({
      message: "What is your name?",
      requestedSchema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
    });
    expect(r.answer.body).toContain('"elicitation/create"');
    // The client's answer is a POST of its own, sent while the call is still open.
    expect((await responsesPosted()).map((a) => a.status)).toEqual([202]);
    expect(r.ms).toBeLessThan(1000);
  });

  it("sample asks the client's model on the call's stream and quotes its answer", async () => {
    const r = await call("sample");
    expect(r.text).toBe("sampled: pong");
    expect(sampled).toHaveLength(1);
    expect(sampled[0]).toMatchObject({
      messages: [{ role: "user", content: { type: "text", text: "ping" } }],
      maxTokens: 16,
    });
    expect(r.answer.body).toContain('"sampling/createMessage"');
    expect((await responsesPosted()).map((a) => a.status)).toEqual([202, 202]);
    expect(r.ms).toBeLessThan(1000);
  });

  it("progress sends 3 notifications 400 ms apart on the call's stream, then answers", async () => {
    const seen: Array<{ progress: number; total?: number; at: number }> = [];
    const r = await call("progress", (p) => void seen.push({ progress: p.progress, total: p.total, at: Date.now() }));
    const doneAt = Date.now();
    expect(r.text).toBe("done");
    expect(seen.map((p) => [p.progress, p.total])).toEqual([
      [1, 3],
      [2, 3],
      [3, 3],
    ]);
    expect(doneAt - seen[0]!.at).toBeGreaterThanOrEqual(600);
    expect(r.answer.body.match(/"notifications\/progress"/g)).toHaveLength(3);
  });

  it("progress without a progress token sends nothing and still takes 1.2 s", async () => {
    const r = await call("progress");
    expect(r.text).toBe("done");
    expect(r.ms).toBeGreaterThanOrEqual(1100);
    expect(r.answer.body).not.toContain("notifications/progress");
  });

  it("ask answers declined when the client declines", async () => {
    const other = new Client({ name: "server-tools-decline", version: "1.0.0" }, { capabilities: { elicitation: {} } });
    other.setRequestHandler(ElicitRequestSchema, async () => ({ action: "decline" }));
    await other.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`)));
    try {
      expect(text(await other.callTool({ name: "ask", arguments: {} }))).toBe("declined");
    } finally {
      await other.close();
    }
  });

  it(`${repeatsSessionId ? "repeats" : "does not repeat"} its Mcp-Session-Id on a tools/call answer`, async () => {
    const sid = transport.sessionId;
    expect(sid).toBeTruthy();
    const init = await posts.find((p) => p.message.method === "initialize")!.answer;
    expect(init.headers.get("mcp-session-id")).toBe(sid);
    const calls = await Promise.all(posts.filter((p) => p.message.method === "tools/call").map((p) => p.answer));
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls) expect(c.headers.get("mcp-session-id")).toBe(repeatsSessionId ? sid : null);
  });
});

// The reference node serves the same tools to a client speaking 2026-07-28 (SDK v2, negotiated):
// no session; ask and sample answer input_required and the client retries the call with the answer.
describe("reference server, a client at 2026-07-28: ask, sample, progress", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let node: Awaited<ReturnType<typeof startNode>>;
  let client: V2Client;
  const asked: unknown[] = [];
  const sampled: unknown[] = [];
  const sids: Array<string | null> = [];

  beforeAll(async () => {
    redis = await startRedis();
    node = await startNode({ name: "tools-ref-2026", redisUrl: redis.url });
    client = new V2Client(
      { name: "server-tools-2026", version: "1.0.0" },
      { capabilities: { elicitation: {}, sampling: {} }, versionNegotiation: { mode: "auto" } },
    );
    client.setRequestHandler("elicitation/create", async (req) => {
      asked.push(req.params);
      return { action: "accept", content: { name: "ada" } };
    });
    client.setRequestHandler("sampling/createMessage", async (req) => {
      sampled.push(req.params);
      return { role: "assistant", content: { type: "text", text: "pong" }, model: "test-model" };
    });
    const recording: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      sids.push(res.headers.get("mcp-session-id"));
      return res;
    };
    await client.connect(new V2StreamableHTTPClientTransport(new URL(`${node.url}/mcp`), { fetch: recording }));
  });
  afterAll(async () => {
    await client?.close().catch(() => {});
    await node?.shutdown();
    await redis?.stop();
  });

  it("negotiates 2026-07-28 and never gets a session", async () => {
    expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28");
    expect(JSON.parse(text(await client.callTool({ name: "whoami" })))).toEqual({
      node: "tools-ref-2026",
      boot: node.affinity.bootId,
    });
    // No session: the counter lives for one request.
    expect(text(await client.callTool({ name: "counter" }))).toBe("1");
    expect(text(await client.callTool({ name: "counter" }))).toBe("1");
    expect(sids.every((s) => s === null)).toBe(true);
    expect(node.affinity.sessionCount).toBe(0);
  });

  it("ask: the client answers the elicitation and the retried call greets it", async () => {
    expect(text(await client.callTool({ name: "ask" }))).toBe("hello ada");
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({ message: "What is your name?" });
  });

  it("sample: the client's model answers and the retried call quotes it", async () => {
    expect(text(await client.callTool({ name: "sample" }))).toBe("sampled: pong");
    expect(sampled).toHaveLength(1);
  });

  it("progress: 3 notifications on the call's own stream, in order, then the answer", async () => {
    const seen: number[] = [];
    const r = await client.callTool({ name: "progress" }, { onprogress: (p) => seen.push(p.progress) });
    expect(text(r)).toBe("done");
    expect(seen).toEqual([1, 2, 3]);
  });
});
