// The benchmarks' MCP sessions on the raw client of dev/mcp-client.ts, and the counter call in
// pre-built form for the load loops.
import type { Dispatcher } from "undici";
import { rawInitialize } from "../../dev/mcp-client.ts";
import { waitUntil } from "../../dev/poll.ts";
import { McpAffinityError, type ErrorCode } from "../../lib/errors.ts";
import { sessionHash } from "../../lib/view/index.ts";
import { lookupSession } from "../../test/support/view-writers.ts";

export class BenchError extends McpAffinityError {
  constructor(message: string, code: ErrorCode) {
    super(code, message);
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

/**
 * Initializes a session through `base` (Traefik's plain sticky router: it answers with the sticky
 * cookie, which notifications/initialized then carries). `cookieToUrl` maps the cookie to the owner.
 */
export async function initSession(
  dispatcher: Dispatcher,
  base: string,
  cookieToUrl: Map<string, string>,
): Promise<BenchSession> {
  let s: Awaited<ReturnType<typeof rawInitialize>>;
  try {
    s = await rawInitialize(base, { dispatcher, withCookie: true, clientName: "mcp-affinity-bench" });
  } catch (err) {
    throw new BenchError((err as Error).message.slice(0, 300), "ERR_BENCH_INIT");
  }
  if (!s.cookie)
    throw new BenchError("initialize through Traefik came back without the _mcp_backend cookie", "ERR_BENCH_INIT");
  const nodeUrl = cookieToUrl.get(s.cookie);
  if (!nodeUrl) throw new BenchError(`cookie ${s.cookie} names no known node`, "ERR_BENCH_INIT");
  return { id: s.sessionId, cookie: s.cookie, nodeUrl, counter: 0 };
}

export const counterBody = (rpcId: number): string =>
  `{"jsonrpc":"2.0","id":${rpcId},"method":"tools/call","params":{"name":"counter","arguments":{}}}`;

const COUNTER_RE = /"text":"(\d+)"/;

/** The counter value in a tools/call answer (JSON or one SSE message), or null. */
export function counterOf(body: string): number | null {
  const m = COUNTER_RE.exec(body);
  return m ? Number(m[1]) : null;
}

/** Waits until the view published in `shared` holds every one of `sessions` (their nodes registered them). */
export async function waitSessionsInView(what: string, shared: string, sessions: BenchSession[]): Promise<void> {
  await waitUntil(
    what,
    async () => {
      for (const s of sessions) if (!(await lookupSession(shared, sessionHash(s.id)))) return false;
      return true;
    },
    20_000,
    100,
  );
}
