// Clients for the end-to-end suites: the official TypeScript SDK client (Node fetch, no cookies),
// raw HTTP requests through Traefik, and the Python `mcp` client (httpx, keeps cookies).
import { execFile, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import {
  Client as V2Client,
  StreamableHTTPClientTransport as V2StreamableHTTPClientTransport,
} from "@modelcontextprotocol/client";
import { ROOT, VENV_PYTHON } from "../../dev/paths.ts";
import type { Stack } from "../../dev/stack.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";
import { scrapeMetric } from "../../dev/metrics.ts";

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

function countingFetch(
  tally: HttpTally,
  onCallId?: (id: number, method: string) => void,
  base: typeof fetch = fetch,
): typeof fetch {
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
    /**
     * Declare elicitation and sampling and answer the server's requests at once: elicitation with
     * `{name: "ada"}`, sampling with the text "pong" (the test servers' `ask` and `sample` tools).
     */
    answerServer?: boolean;
  } = {},
): Promise<SdkSession> {
  const client = new Client(
    { name: "mcp-affinity-e2e", version: "0.1.0" },
    opts.answerServer ? { capabilities: { elicitation: {}, sampling: {} } } : undefined,
  );
  if (opts.answerServer) {
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: { name: "ada" } }));
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({
      role: "assistant",
      content: { type: "text", text: "pong" },
      model: "e2e",
    }));
  }
  const errors: Error[] = [];
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: countingFetch(tally, opts.onCallId, opts.fetch),
    // The standalone GET stream must not spin reconnecting during outage scenarios.
    reconnectionOptions: {
      maxRetries: 0,
      initialReconnectionDelay: 1000,
      maxReconnectionDelay: 1000,
      reconnectionDelayGrowFactor: 1,
    },
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
      const r = (await client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS })) as {
        content?: Array<{ type: string; text?: string }>;
        isError?: boolean;
      };
      if (r.isError) throw new Error(`tool ${name} failed: ${r.content?.[0]?.text}`);
      return r.content?.[0]?.text ?? "";
    },
    async end() {
      await transport.terminateSession().catch(() => {});
      await client.close().catch(() => {});
    },
  };
}

export interface SdkV2Connection {
  client: V2Client;
  /** The protocol revision the client negotiated. */
  version: string | undefined;
  /** Calls a tool, returns the first text content. */
  call(name: string, args?: Record<string, unknown>): Promise<string>;
  /** The call id (`X-E2e-Call`) of the last request sent. */
  lastCallId(): string | undefined;
  close(): Promise<void>;
}

/**
 * The TypeScript SDK v2 client negotiating the protocol revision (`auto`): against our nodes it
 * speaks 2026-07-28, without a session; every request carries its call id.
 */
export async function connectSdkV2(url: string, tally: HttpTally = newTally()): Promise<SdkV2Connection> {
  let last: string | undefined;
  const client = new V2Client(
    { name: "mcp-affinity-e2e-v2", version: "0.1.0" },
    { versionNegotiation: { mode: "auto" } },
  );
  const transport = new V2StreamableHTTPClientTransport(new URL(url), {
    fetch: countingFetch(tally, (id) => void (last = String(id))),
  });
  await client.connect(transport, { timeout: CALL_TIMEOUT_MS });
  return {
    client,
    version: client.getNegotiatedProtocolVersion(),
    lastCallId: () => last,
    async call(name, args = {}) {
      const r = await client.callTool({ name, arguments: args }, { timeout: CALL_TIMEOUT_MS });
      const content = r.content as Array<{ type: string; text?: string }> | undefined;
      if (r.isError) throw new Error(`tool ${name} failed: ${content?.[0]?.text}`);
      return content?.[0]?.text ?? "";
    },
    async close() {
      await client.close().catch(() => {});
    },
  };
}

export const httpStatusOf = (err: unknown): number | null =>
  err instanceof StreamableHTTPError ? (err.code ?? null) : null;

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/**
 * The values one session's `counter` tool returns, in order. A value is continuous when it is the
 * previous one + 1, or up to one more per failed call since then: a call that failed may still have
 * run on the node (its answer lost on the way back), so it may have used up one value each.
 */
export class CounterSequence {
  private last: number;
  private mayHaveRun = 0;
  constructor(start = 0) {
    this.last = start;
  }
  /** A call answered `v`: false when it skipped or repeated a value. */
  answered(v: number): boolean {
    const continuous = v >= this.last + 1 && v <= this.last + 1 + this.mayHaveRun;
    this.last = v;
    this.mayHaveRun = 0;
    return continuous;
  }
  /** A call failed (no answer). */
  failed(): void {
    this.mayHaveRun++;
  }
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
    if (errorSamples.length < 5)
      errorSamples.push(`${new Date().toISOString()} ${(err as Error)?.message ?? err}`.slice(0, 300));
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
      const seq = new CounterSequence();
      let broken = false;
      for (let i = 0; i < calls; i++) {
        const c0 = performance.now();
        try {
          const v = Number(await s.call("counter"));
          lat.push(performance.now() - c0);
          if (!seq.answered(v)) {
            discontinuities++;
            broken = true;
          }
        } catch (err) {
          failedCalls++;
          seq.failed();
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
// The Python client

export function pythonClient(args: string[], timeoutMs = 60_000): Promise<any> {
  if (!existsSync(VENV_PYTHON))
    throw new Error(".venv/bin/python is missing: run `node scripts/ensure-deps.mjs --python`");
  return new Promise((resolve, reject) => {
    execFile(
      VENV_PYTHON,
      [join(ROOT, "test", "e2e", "python_client.py"), ...args],
      { timeout: timeoutMs, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`python_client failed: ${err.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout));
        } catch {
          reject(new Error(`python_client printed no JSON:\n${stdout}\n${stderr}`));
        }
      },
    );
  });
}

/** Sum of the series of a metric of the stack's sidecar whose labels contain every fragment; NaN when /metrics does not answer. */
export const sidecarMetric = (stack: Stack, name: string, ...fragments: string[]): Promise<number> =>
  scrapeMetric(`${stack.sidecarUrl}/metrics`, name, ...fragments);

/** Prints one `[e2e] <scenario>: {json}` measurement line (docs/e2e.md lists what each prints). */
export function report(scenario: string, data: Record<string, unknown>): void {
  console.log(`[e2e] ${scenario}: ${JSON.stringify(data)}`);
}

/**
 * Sends bytes as they are over a plain TCP connection (for requests no HTTP client would build:
 * CR/LF in header values, thousands of cookies) and parses the status line and headers.
 */
export function rawSocket(
  port: number,
  request: string | Buffer,
  timeoutMs = 5000,
): Promise<{ status: number; head: string; body: string; closedWithoutAnswer: boolean }> {
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

/** ts: the TypeScript SDK v1 client (2025-era sessions); v2: the TypeScript SDK v2 client at 2026-07-28 (no session). */
export type ClientKind = "ts" | "v2" | "py" | "go" | "rust";
export type ProcessClientKind = Exclude<ClientKind, "ts" | "v2">;
/** One operation of one client session; `at` is the wall clock when it started. */
export interface ClientEvent {
  client: ClientKind;
  ev: "init" | "whoami" | "call";
  s: string;
  at: number;
  ms: number;
  node?: string;
  value?: number;
  error?: string;
  /** The call id (`X-E2e-Call`, kept by Traefik's access log): Python, of the request whose error ended the session; Go, of a session's initialize. */
  call?: string;
  /** Python: the session's HTTP exchanges that got no 2xx (call id, JSON-RPC method, status), when the SDK ended it. */
  failed?: Array<{ call: string; rpc: string; status: number | null }>;
}

export interface SdkClientBinaries {
  go: string;
  rust: string;
}

/** The Go and Rust SDK test clients, built (or found in the cache) by the project's script, as `npm test` does. */
export function sdkClientBinaries(): SdkClientBinaries {
  const out = execFileSync(process.execPath, [join(ROOT, "scripts/build-clients.mjs"), "go", "rust"], {
    encoding: "utf8",
  });
  return JSON.parse(out) as SdkClientBinaries;
}

/**
 * The Go SDK client (v1.8.0) first probes server/discover and speaks 2026-07-28, without a session,
 * to a server that answers it, as the reference node (SDK v2) does. These suites measure 2025-era
 * sessions with it, as with the Python and Rust clients: it asks for 2025-11-25. The 2026-07-28
 * era is the TypeScript v2 client's (connectSdkV2).
 */
const GO_CLIENT_ERA = ["--protocol-version", "2025-11-25"];

/**
 * Runs the Python, Go or Rust SDK test client as its own process against `url`: `sessions` sessions
 * at once, each `calls` counter calls after a whoami. Resolves with its events (also pushed to `live`
 * as they come); rejects when the process fails.
 */
export function runSdkClientProcess(
  kind: ProcessClientKind,
  bins: SdkClientBinaries,
  url: string,
  o: { sessions: number; calls: number; pauseMs?: number; reinit?: boolean },
  live: ClientEvent[] = [],
): Promise<ClientEvent[]> {
  const pauseMs = o.pauseMs ?? 0;
  const common = [
    "--url",
    url,
    "--sessions",
    String(o.sessions),
    "--calls",
    String(o.calls),
    "--pause-ms",
    String(pauseMs),
  ];
  const [cmd, args] =
    kind === "go"
      ? [
          bins.go,
          [...common, ...GO_CLIENT_ERA, "--timeout-ms", String(CALL_TIMEOUT_MS), ...(o.reinit ? ["--reinit"] : [])],
        ]
      : kind === "rust"
        ? [bins.rust, [...common, "--timeout-ms", String(CALL_TIMEOUT_MS)]] // rmcp re-initializes on a 404 by itself
        : [VENV_PYTHON, ["test/e2e/python_client.py", "--events", ...common, ...(o.reinit ? ["--reinit"] : [])]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
    const out: ClientEvent[] = [];
    let stderr = "";
    child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const j = JSON.parse(line);
      if (j.ev === "done") return;
      const e: ClientEvent = {
        client: kind,
        ev: j.ev,
        s: `${kind}-${j.s}`,
        at: j.at,
        ms: j.ms,
        node: j.node,
        value: j.value,
        error: j.error,
        call: j.call ?? undefined,
        failed: j.failed,
      };
      out.push(e);
      live.push(e);
    });
    const limit = setTimeout(() => child.kill("SIGKILL"), o.calls * (pauseMs + CALL_TIMEOUT_MS) + 60_000);
    child.on("exit", (code) => {
      clearTimeout(limit);
      if (code === 0) resolve(out);
      else reject(new Error(`${kind} client exited ${code}: ${stderr}`));
    });
  });
}
