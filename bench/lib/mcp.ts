// Raw Streamable HTTP for the benchmark: initialize a session, call `counter`, open a GET stream.
// No SDK client here on purpose: the SDK's per-call overhead would be measured instead of the edge.
import { request, type Dispatcher } from "undici";

export const PROTOCOL_VERSION = "2025-06-18";
export const ACCEPT = "application/json, text/event-stream";

export class BenchError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export interface BenchSession {
  id: string;
  /** Sticky cookie value Traefik gave at initialize (names the owner). */
  cookie: string;
  /** The owner's server URL (found from the cookie). */
  nodeUrl: string;
  /** Last counter value this harness saw (continuity check). */
  counter: number;
}

const COOKIE_RE = /(?:^|[;,]\s*)_mcp_backend=([0-9a-f]{16})/;

export function stickyCookieOf(setCookie: string | string[] | undefined): string | null {
  const lines = Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : [];
  for (const l of lines) {
    const m = COOKIE_RE.exec(l);
    if (m) return m[1]!;
  }
  return null;
}

/**
 * Initializes a session through `base` (Traefik's plain sticky router: it answers with the sticky
 * cookie), then sends notifications/initialized. `cookieToUrl` maps the cookie to the owner.
 */
export async function initSession(dispatcher: Dispatcher, base: string, cookieToUrl: Map<string, string>): Promise<BenchSession> {
  const init = await request(`${base}/mcp`, {
    dispatcher,
    method: "POST",
    headers: { "content-type": "application/json", accept: ACCEPT },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "mcp-affinity-bench", version: "0.1.0" } },
    }),
  });
  const text = await init.body.text();
  const id = init.headers["mcp-session-id"];
  if (init.statusCode !== 200 || typeof id !== "string") throw new BenchError(`initialize answered ${init.statusCode}: ${text.slice(0, 200)}`, "ERR_BENCH_INIT");
  const cookie = stickyCookieOf(init.headers["set-cookie"]);
  if (!cookie) throw new BenchError("initialize through Traefik came back without the _mcp_backend cookie", "ERR_BENCH_INIT");
  const nodeUrl = cookieToUrl.get(cookie);
  if (!nodeUrl) throw new BenchError(`cookie ${cookie} names no known node`, "ERR_BENCH_INIT");
  const note = await request(`${base}/mcp`, {
    dispatcher,
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: ACCEPT,
      "mcp-session-id": id,
      "mcp-protocol-version": PROTOCOL_VERSION,
      cookie: `_mcp_backend=${cookie}`,
    },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  await note.body.dump();
  if (note.statusCode !== 202) throw new BenchError(`notifications/initialized answered ${note.statusCode}`, "ERR_BENCH_INIT");
  return { id, cookie, nodeUrl, counter: 0 };
}

export const counterBody = (rpcId: number): string =>
  `{"jsonrpc":"2.0","id":${rpcId},"method":"tools/call","params":{"name":"counter","arguments":{}}}`;

const COUNTER_RE = /"text":"(\d+)"/;

/** The counter value in a tools/call answer (JSON or one SSE message), or null. */
export function counterOf(body: string): number | null {
  const m = COUNTER_RE.exec(body);
  return m ? Number(m[1]) : null;
}

export function callHeaders(s: BenchSession, withCookie: boolean): Record<string, string> {
  const h: Record<string, string> = {
    "content-type": "application/json",
    accept: ACCEPT,
    "mcp-session-id": s.id,
    "mcp-protocol-version": PROTOCOL_VERSION,
  };
  if (withCookie) h.cookie = `_mcp_backend=${s.cookie}`;
  return h;
}
