// Clients for the end-to-end suites: the official TypeScript SDK client (Node fetch, no cookies),
// raw HTTP requests through Traefik, and the Python `mcp` client (httpx, keeps cookies).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Agent, request as undiciRequest } from "undici";
import { httpGet } from "../../dev/net.ts";
import { ROOT } from "../../dev/paths.ts";
import type { Stack } from "../../dev/stack.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";

export const LATEST_PROTOCOL = "2025-06-18";
/** A call that gets no answer fails within this time instead of the SDK's 60 s. */
export const CALL_TIMEOUT_MS = 8000;

/** Counts every HTTP exchange the SDK client makes (status, or -1 for a network error). */
export interface HttpTally {
  requests: number;
  failed: number;
  byStatus: Record<string, number>;
}

export const newTally = (): HttpTally => ({ requests: 0, failed: 0, byStatus: {} });

let callIds = 0;

function countingFetch(tally: HttpTally, onCallId?: (id: number, method: string) => void, base: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    tally.requests++;
    if (onCallId) {
      const id = ++callIds;
      const headers = new Headers(init?.headers);
      headers.set(CALL_ID_HEADER, String(id));
      init = { ...init, headers };
      onCallId(id, init.method ?? "GET");
    }
    try {
      const r = await base(input, init);
      tally.byStatus[r.status] = (tally.byStatus[r.status] ?? 0) + 1;
      if (r.status >= 400) tally.failed++;
      return r;
    } catch (err) {
      // An abort of our own (client.close()) is not a failure of the system under test.
      if ((err as Error).name !== "AbortError") {
        tally.failed++;
        tally.byStatus["-1"] = (tally.byStatus["-1"] ?? 0) + 1;
      }
      throw err;
    }
  };
}

export interface SdkSession {
  client: Client;
  transport: StreamableHTTPClientTransport;
  sessionId: string;
  /** Calls a tool, returns the first text content. */
  call(name: string, args?: Record<string, unknown>): Promise<string>;
  /** DELETE (terminateSession), then close. */
  end(): Promise<void>;
  errors: Error[];
}

export async function connectSdk(
  url: string,
  tally: HttpTally = newTally(),
  opts: {
    onNotification?: (n: unknown) => void;
    onCallId?: (id: number, method: string) => void;
    /** The fetch under the counting one (default: Node's). */
    fetch?: typeof fetch;
  } = {},
): Promise<SdkSession> {
  const client = new Client({ name: "mcp-affinity-e2e", version: "0.1.0" });
  const errors: Error[] = [];
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: countingFetch(tally, opts.onCallId, opts.fetch),
    // The standalone GET stream must not spin reconnecting during outage scenarios.
    reconnectionOptions: { maxRetries: 0, initialReconnectionDelay: 1000, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1 },
  });
  client.onerror = (e) => errors.push(e);
  if (opts.onNotification) {
    client.fallbackNotificationHandler = async (n) => opts.onNotification!(n);
  }
  // Bounded like a call: an initialize whose streamed answer Traefik cut would wait the SDK's 60 s.
  await client.connect(transport, { timeout: CALL_TIMEOUT_MS });
  const sessionId = transport.sessionId;
  if (!sessionId) throw new Error("no session id after initialize");
  return {
    client,
    transport,
    sessionId,
    errors,
    async call(name, args = {}) {
      const r = (await client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS })) as { content?: Array<{ type: string; text?: string }>; isError?: boolean };
      if (r.isError) throw new Error(`tool ${name} failed: ${r.content?.[0]?.text}`);
      return r.content?.[0]?.text ?? "";
    },
    async end() {
      await transport.terminateSession().catch(() => {});
      await client.close().catch(() => {});
    },
  };
}

export const httpStatusOf = (err: unknown): number | null => (err instanceof StreamableHTTPError ? (err.code ?? null) : null);

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export interface CounterLoadResult {
  sessions: number;
  callsPerSession: number;
  calls: number;
  failedCalls: number;
  /** Successful calls whose value was not the previous one + 1 (+ failed calls in between that may have run). */
  discontinuities: number;
  /** Sessions with at least one failed or discontinuous call. */
  brokenSessions: number;
  /** Initialize handshakes (initialize + initialized) that failed (and were tried again, so that plain Traefik's misroutes can be measured). */
  failedHandshakes: number;
  http: HttpTally;
  latencyMs: { p50: number; p99: number; max: number };
  failureRate: number;
  wallMs: number;
  startMs: number;
  endMs: number;
  /** The first few error messages, for diagnosis. */
  errorSamples: string[];
}

/**
 * `sessions` SDK clients at once, each making `calls` sequential counter calls. Every failure is
 * counted, not thrown, so the same load can measure plain Traefik sticky (plugin off).
 */
export async function counterLoad(url: string, sessions: number, calls: number): Promise<CounterLoadResult> {
  const http = newTally();
  const lat: number[] = [];
  let failedCalls = 0;
  let discontinuities = 0;
  let brokenSessions = 0;
  let failedHandshakes = 0;
  const errorSamples: string[] = [];
  const note = (err: unknown) => {
    if (errorSamples.length < 5) errorSamples.push(`${new Date().toISOString()} ${(err as Error)?.message ?? err}`.slice(0, 300));
  };
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      let s: SdkSession | null = null;
      for (let attempt = 0; attempt < 10 && !s; attempt++) {
        try {
          s = await connectSdk(url, http);
        } catch (err) {
          failedHandshakes++;
          note(err);
        }
      }
      if (!s) {
        failedCalls += calls;
        brokenSessions++;
        return;
      }
      let last = 0;
      // A call that failed may still have run on the node (its answer was lost on the way back).
      let maybeRan = 0;
      let broken = false;
      for (let i = 0; i < calls; i++) {
        const c0 = performance.now();
        try {
          const v = Number(await s.call("counter"));
          lat.push(performance.now() - c0);
          if (v < last + 1 || v > last + 1 + maybeRan) {
            discontinuities++;
            broken = true;
          }
          last = v;
          maybeRan = 0;
        } catch (err) {
          failedCalls++;
          maybeRan++;
          broken = true;
          note(err);
        }
      }
      if (broken) brokenSessions++;
      await s.end();
    }),
  );
  const total = sessions * calls;
  return {
    sessions,
    callsPerSession: calls,
    calls: total,
    failedCalls,
    discontinuities,
    brokenSessions,
    failedHandshakes,
    http,
    latencyMs: { p50: round(percentile(lat, 50)), p99: round(percentile(lat, 99)), max: round(percentile(lat, 100)) },
    failureRate: (failedCalls + discontinuities) / total,
    wallMs: Date.now() - t0,
    startMs: t0,
    endMs: Date.now(),
    errorSamples,
  };
}

const round = (n: number) => Math.round(n * 10) / 10;

// ---------------------------------------------------------------------------------------------
// Raw HTTP through Traefik (undici: keeps duplicate headers and odd values as given)

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
}

const dispatcher = new Agent({ connections: 64, pipelining: 1 });
// Open streams each hold a connection: they get their own pool, without a cap.
const streamDispatcher = new Agent({ pipelining: 1 });

export async function raw(
  url: string,
  opts: { method?: string; headers?: Record<string, string | string[]> | string[]; body?: string; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const r = await undiciRequest(url, {
    method: (opts.method ?? "GET") as "GET",
    headers: opts.headers as Record<string, string>,
    body: opts.body,
    dispatcher,
    headersTimeout: opts.timeoutMs ?? 10_000,
    bodyTimeout: opts.timeoutMs ?? 10_000,
  });
  const body = await r.body.text();
  return { status: r.statusCode, headers: r.headers as Record<string, string | string[]>, body };
}

export const header = (r: RawResponse, name: string): string | undefined => {
  const v = r.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(", ") : v;
};

export const setCookies = (r: RawResponse): string[] => {
  const v = r.headers["set-cookie"];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
};

/** The `_mcp_backend` value of a response's Set-Cookie lines, if any. */
export function stickyCookieOf(r: RawResponse, name = "_mcp_backend"): string | undefined {
  for (const line of setCookies(r)) {
    const m = new RegExp(`^${name}=([^;]*)`).exec(line);
    if (m) return m[1];
  }
  return undefined;
}

export const MCP_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

export function initializeBody(id = 1): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method: "initialize",
    params: { protocolVersion: LATEST_PROTOCOL, capabilities: {}, clientInfo: { name: "raw-e2e", version: "0.1.0" } },
  });
}

/** Parses a JSON or single-event SSE body into the JSON-RPC message. */
export function jsonRpcOf(body: string): any {
  const t = body.trim();
  if (t.startsWith("{") || t.startsWith("[")) return JSON.parse(t);
  const data = t
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).trim());
  return data.length ? JSON.parse(data[data.length - 1]!) : null;
}

/** A raw session: initialize + initialized, keeping whatever cookie the caller chooses to send. */
export async function rawInitialize(base: string): Promise<{ sessionId: string; cookie: string | undefined; init: RawResponse }> {
  const init = await raw(`${base}/mcp`, { method: "POST", headers: MCP_HEADERS, body: initializeBody() });
  if (init.status !== 200) throw new Error(`initialize answered ${init.status}: ${init.body}`);
  const sessionId = header(init, "mcp-session-id");
  if (!sessionId) throw new Error("initialize gave no Mcp-Session-Id");
  const cookie = stickyCookieOf(init);
  const headers: Record<string, string> = { ...MCP_HEADERS, "mcp-session-id": sessionId, "mcp-protocol-version": LATEST_PROTOCOL };
  const n = await raw(`${base}/mcp`, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) });
  if (n.status !== 202) throw new Error(`initialized answered ${n.status}: ${n.body}`);
  return { sessionId, cookie, init };
}

let rpcId = 100;
/** tools/call over raw HTTP with a session id and optional Cookie header. */
export async function rawCall(base: string, sessionId: string, tool: string, extra: { cookie?: string; headers?: Record<string, string>; args?: Record<string, unknown>; timeoutMs?: number } = {}): Promise<RawResponse & { text?: string }> {
  const headers: Record<string, string> = { ...MCP_HEADERS, "mcp-session-id": sessionId, "mcp-protocol-version": LATEST_PROTOCOL, ...extra.headers };
  if (extra.cookie !== undefined) headers.cookie = extra.cookie;
  const r = await raw(`${base}/mcp`, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcId, method: "tools/call", params: { name: tool, arguments: extra.args ?? {} } }), timeoutMs: extra.timeoutMs });
  let text: string | undefined;
  if (r.status === 200) text = jsonRpcOf(r.body)?.result?.content?.[0]?.text;
  return { ...r, text };
}

// ---------------------------------------------------------------------------------------------
// The Python client

export const PYTHON = join(ROOT, ".venv", "bin", "python");

export function pythonClient(args: string[], timeoutMs = 60_000): Promise<any> {
  if (!existsSync(PYTHON)) throw new Error(".venv/bin/python is missing: run `node scripts/ensure-deps.mjs --python`");
  return new Promise((resolve, reject) => {
    execFile(PYTHON, [join(ROOT, "test", "e2e", "python_client.py"), ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`python_client failed: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`python_client printed no JSON:\n${stdout}\n${stderr}`));
      }
    });
  });
}

/** Sum of every series of a sidecar metric (or of those whose labels contain `labels`); NaN when /metrics does not answer. */
export async function sidecarMetric(stack: Stack, name: string, labels = ""): Promise<number> {
  const r = await httpGet(`${stack.sidecarUrl}/metrics`);
  if (!r) return NaN;
  let sum = 0;
  for (const line of r.text.split("\n")) {
    const series = line.startsWith(`${name}{`) || line.startsWith(`${name} `);
    if (series && (!labels || line.includes(labels))) sum += Number(line.split(" ").pop());
  }
  return sum;
}

/** Prints one `[e2e] <scenario>: {json}` measurement line (docs/e2e.md lists what each prints). */
export function report(scenario: string, data: Record<string, unknown>): void {
  console.log(`[e2e] ${scenario}: ${JSON.stringify(data)}`);
}

/**
 * Sends bytes as they are over a plain TCP connection (for requests no HTTP client would build:
 * CR/LF in header values, thousands of cookies) and parses the status line and headers.
 */
export function rawSocket(port: number, request: string | Buffer, timeoutMs = 5000): Promise<{ status: number; head: string; body: string; closedWithoutAnswer: boolean }> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const sep = text.indexOf("\r\n\r\n");
      const head = sep >= 0 ? text.slice(0, sep) : text;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      let body = sep >= 0 ? text.slice(sep + 4) : "";
      if (/^transfer-encoding:\s*chunked/im.test(head)) body = dechunk(body);
      resolve({ status: m ? Number(m[1]) : 0, head, body, closedWithoutAnswer: !m });
    };
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    sock.on("data", (d) => chunks.push(d));
    sock.on("close", done);
    sock.on("error", () => {});
    sock.on("connect", () => sock.write(request));
  });
}

export interface SseStream {
  status: number;
  headers: Record<string, string | string[]>;
  /** JSON-RPC messages received so far. */
  messages: any[];
  /** Resolves when `n` messages have arrived (rejects after timeoutMs). */
  waitFor(n: number, timeoutMs: number): Promise<void>;
  close(): void;
}

/** Opens the standalone GET stream of a session (resolves once the response headers are in). */
export async function openSse(base: string, sessionId: string, extraHeaders: Record<string, string> = {}): Promise<SseStream> {
  const ac = new AbortController();
  const r = await undiciRequest(`${base}/mcp`, {
    method: "GET",
    headers: { accept: "text/event-stream", "mcp-session-id": sessionId, "mcp-protocol-version": LATEST_PROTOCOL, ...extraHeaders },
    dispatcher: streamDispatcher,
    signal: ac.signal,
    bodyTimeout: 0,
  });
  const messages: any[] = [];
  const waiters: Array<() => void> = [];
  let buf = "";
  r.body.setEncoding("utf8");
  r.body.on("data", (chunk: string) => {
    buf += chunk;
    let sep: number;
    while ((sep = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, sep);
      buf = buf.slice(sep + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim())
        .join("\n");
      if (data) {
        try {
          messages.push(JSON.parse(data));
        } catch {
          messages.push({ unparsable: data });
        }
      }
    }
    for (const w of waiters.splice(0)) w();
  });
  r.body.on("error", () => {});
  return {
    status: r.statusCode,
    headers: r.headers as Record<string, string | string[]>,
    messages,
    waitFor(n, timeoutMs) {
      return new Promise((resolve, reject) => {
        const deadline = setTimeout(() => reject(new Error(`SSE: ${messages.length}/${n} messages after ${timeoutMs} ms`)), timeoutMs);
        const check = () => {
          if (messages.length >= n) {
            clearTimeout(deadline);
            resolve();
          } else waiters.push(check);
        };
        check();
      });
    },
    close() {
      ac.abort();
    },
  };
}

function dechunk(body: string): string {
  let out = "";
  let rest = body;
  for (;;) {
    const eol = rest.indexOf("\r\n");
    if (eol < 0) return out;
    const size = parseInt(rest.slice(0, eol), 16);
    if (!Number.isFinite(size) || size === 0) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}
