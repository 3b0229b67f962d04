// Raw Streamable HTTP (undici: keeps duplicate headers and odd values as given), for the tests and
// the benchmarks: initialize a session, call a tool, open the standalone GET stream, read the sticky
// cookie. No SDK client here on purpose: the tests send what the SDK never would, and the
// benchmarks would measure the SDK's per-call overhead instead of the edge.
import { Agent, request as undiciRequest, type Dispatcher } from "undici";

/** The protocol version the raw client announces and sends. */
export const PROTOCOL_VERSION = "2025-06-18";
/** Traefik's sticky cookie, as traefik/dynamic.yml names it. */
export const STICKY_COOKIE = "_mcp_backend";
export const MCP_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

/** A parsed JSON-RPC message: its shape is what the caller asserts. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type JsonRpcMessage = any;

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
}

const dispatcher = new Agent({ connections: 64, pipelining: 1 });
// Open streams each hold a connection: they get their own pool, without a cap.
const streamDispatcher = new Agent({ pipelining: 1 });

export interface RawOptions {
  method?: string;
  headers?: Record<string, string | string[]> | string[];
  body?: string;
  timeoutMs?: number;
  /** The connection pool (default: one shared pool of 64 connections). */
  dispatcher?: Dispatcher;
}

export async function raw(url: string, opts: RawOptions = {}): Promise<RawResponse> {
  const r = await undiciRequest(url, {
    method: (opts.method ?? "GET") as "GET",
    headers: opts.headers as Record<string, string>,
    body: opts.body,
    dispatcher: opts.dispatcher ?? dispatcher,
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

export const setCookies = (r: Pick<RawResponse, "headers">): string[] => {
  const v = r.headers["set-cookie"];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
};

/** The sticky cookie's value in a response's Set-Cookie lines, if any. */
export function stickyCookieOf(r: Pick<RawResponse, "headers">, name = STICKY_COOKIE): string | undefined {
  for (const line of setCookies(r)) {
    const m = new RegExp(`^${name}=([^;]*)`).exec(line);
    if (m) return m[1];
  }
  return undefined;
}

/** The headers of a request in a session, with the sticky cookie when one is given. */
export function sessionHeaders(sessionId: string, cookie?: string): Record<string, string> {
  const h: Record<string, string> = {
    ...MCP_HEADERS,
    "mcp-session-id": sessionId,
    "mcp-protocol-version": PROTOCOL_VERSION,
  };
  if (cookie !== undefined) h.cookie = `${STICKY_COOKIE}=${cookie}`;
  return h;
}

export function initializeBody(id = 1, clientName = "raw-e2e"): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method: "initialize",
    params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: clientName, version: "0.1.0" } },
  });
}

/** Parses a JSON or single-event SSE body into the JSON-RPC message. */
export function jsonRpcOf(body: string): JsonRpcMessage {
  const t = body.trim();
  if (t.startsWith("{") || t.startsWith("[")) return JSON.parse(t);
  const data = t
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).trim());
  return data.length ? JSON.parse(data[data.length - 1]!) : null;
}

export interface RawInitializeOptions {
  /** Send the sticky cookie of the initialize answer with notifications/initialized (plain sticky Traefik routes by it). */
  withCookie?: boolean;
  clientName?: string;
  dispatcher?: Dispatcher;
}

/** A raw session: initialize + initialized, keeping whatever cookie the caller chooses to send. */
export async function rawInitialize(
  base: string,
  o: RawInitializeOptions = {},
): Promise<{ sessionId: string; cookie: string | undefined; init: RawResponse }> {
  const init = await raw(`${base}/mcp`, {
    method: "POST",
    headers: MCP_HEADERS,
    body: initializeBody(1, o.clientName),
    dispatcher: o.dispatcher,
  });
  if (init.status !== 200) throw new Error(`initialize answered ${init.status}: ${init.body}`);
  const sessionId = header(init, "mcp-session-id");
  if (!sessionId) throw new Error("initialize gave no Mcp-Session-Id");
  const cookie = stickyCookieOf(init);
  const headers = sessionHeaders(sessionId, o.withCookie ? cookie : undefined);
  const n = await raw(`${base}/mcp`, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    dispatcher: o.dispatcher,
  });
  if (n.status !== 202) throw new Error(`initialized answered ${n.status}: ${n.body}`);
  return { sessionId, cookie, init };
}

let rpcId = 100;
/** tools/call over raw HTTP with a session id and optional Cookie header. */
export async function rawCall(
  base: string,
  sessionId: string,
  tool: string,
  extra: { cookie?: string; headers?: Record<string, string>; args?: Record<string, unknown>; timeoutMs?: number } = {},
): Promise<RawResponse & { text?: string }> {
  const headers: Record<string, string> = { ...sessionHeaders(sessionId), ...extra.headers };
  if (extra.cookie !== undefined) headers.cookie = extra.cookie;
  const r = await raw(`${base}/mcp`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: ++rpcId,
      method: "tools/call",
      params: { name: tool, arguments: extra.args ?? {} },
    }),
    timeoutMs: extra.timeoutMs,
  });
  let text: string | undefined;
  if (r.status === 200) text = jsonRpcOf(r.body)?.result?.content?.[0]?.text;
  return { ...r, text };
}

export interface SseStream {
  status: number;
  headers: Record<string, string | string[]>;
  /** JSON-RPC messages received so far. */
  messages: JsonRpcMessage[];
  /** Resolves when `n` messages have arrived (rejects after timeoutMs). */
  waitFor(n: number, timeoutMs: number): Promise<void>;
  close(): void;
}

/** Opens the standalone GET stream of a session (resolves once the response headers are in). */
export async function openSse(
  base: string,
  sessionId: string,
  extraHeaders: Record<string, string> = {},
): Promise<SseStream> {
  const ac = new AbortController();
  const r = await undiciRequest(`${base}/mcp`, {
    method: "GET",
    headers: {
      accept: "text/event-stream",
      "mcp-session-id": sessionId,
      "mcp-protocol-version": PROTOCOL_VERSION,
      ...extraHeaders,
    },
    dispatcher: streamDispatcher,
    signal: ac.signal,
    bodyTimeout: 0,
  });
  const messages: JsonRpcMessage[] = [];
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
        const deadline = setTimeout(
          () => reject(new Error(`SSE: ${messages.length}/${n} messages after ${timeoutMs} ms`)),
          timeoutMs,
        );
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
