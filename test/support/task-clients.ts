// Runs the 2026-07-28 client drivers of the tests and parses their lines: the Rust SDK task client
// (test/servers/rust, built by scripts/build-clients.mjs) and the Python SDK 2.x requestState client
// (test/clients/python_request_state_client.py). Both print one JSON line per HTTP request with its
// X-E2e-Call id, one per task or round trip, and a summary; a failed request is a line, never a gap.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { PYTHON_REQUEST_STATE_CLIENT_SCRIPT, ROOT, VENV_MCP2_PYTHON } from "../../dev/paths.ts";
import { builtBinary } from "../../dev/stack.ts";
import { raw, type RawResponse } from "../../dev/mcp-client.ts";

export interface Post2026 {
  method: string;
  /** The Mcp-Name header (a tool's name, a task id or handle); none when undefined. */
  mcpName?: string;
  params: Record<string, unknown>;
  id?: number | string;
  /** Extra headers (an X-E2e-Call id). */
  headers?: Record<string, string>;
  /** The client's capabilities (default: the tasks extension). */
  capabilities?: Record<string, unknown>;
}

/** One 2026-07-28 request as a client sends it: the mirrored headers, the per-request _meta. */
export function post2026(url: string, r: Post2026): Promise<RawResponse> {
  const meta = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": { name: "mcp-affinity-tests", version: "0" },
    "io.modelcontextprotocol/clientCapabilities": r.capabilities ?? {
      extensions: { "io.modelcontextprotocol/tasks": {} },
    },
  };
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": r.method,
    ...r.headers,
  };
  if (r.mcpName !== undefined) headers["mcp-name"] = r.mcpName;
  return raw(url, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: r.id ?? 7, method: r.method, params: { ...r.params, _meta: meta } }),
  });
}

export interface JsonRpcAnswer {
  id?: unknown;
  result?: Record<string, unknown>;
  error?: { code: number; message?: string };
}

/** The last JSON-RPC message of an answer, whether a JSON body or an SSE stream. */
export function messageOf(body: string): JsonRpcAnswer {
  const data = body
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).trim());
  return JSON.parse(data.length > 0 ? data[data.length - 1]! : body) as JsonRpcAnswer;
}

/** One HTTP request of the Rust task client. */
export interface TaskCallLine {
  ev: "call";
  /** The X-E2e-Call id (null: the SDK failed before sending). */
  call: string | null;
  method: string;
  /** The task's number in the run (1-based), null for server/discover. */
  task: number | null;
  taskId: string | null;
  status: number | null;
  /** How the answer came: "json" or "sse" (null: no parsable answer). */
  body: "json" | "sse" | null;
  code: number | null;
  message: string | null;
  /** A transport failure or an unexpected answer. */
  error: string | null;
  /** The status the result names (tools/call's CreateTaskResult, tasks/get). */
  taskStatus: string | null;
  /** The node a completed task's result names. */
  node: string | null;
  ok: boolean;
  at: number;
  ms: number;
}

/** One task of the Rust task client, from creation to its terminal state. */
export interface TaskLine {
  ev: "task";
  task: number;
  taskId?: string;
  ok: boolean;
  cancelled?: boolean;
  status?: string | null;
  node?: string | null;
  polls?: number;
  error?: string | null;
}

export interface TaskSummary {
  ev: "summary";
  tasks: number;
  completed: number;
  cancelled: number;
  failedTasks: number;
  calls: number;
  failedCalls: number;
  byMethod: Record<string, { calls: number; failed: number }>;
  nodes: Record<string, number>;
}

export interface ClientRun<C, U, S> {
  calls: C[];
  units: U[];
  summary: S;
  exitCode: number;
}

export type TaskClientRun = ClientRun<TaskCallLine, TaskLine, TaskSummary>;

export interface TaskClientOptions {
  url: string;
  /** Where tasks/get, tasks/update and tasks/cancel go (default: url). */
  pollUrl?: string;
  tasks: number;
  tool?: "slow" | "ask";
  /** How long a `slow` task runs (default 2000 ms). */
  ms?: number;
  /** Cancel every k-th task right after it is created (0: none). */
  cancelEvery?: number;
  answer?: string;
  /** Poll period; default: the pollIntervalMs the server suggests. */
  pollMs?: number;
  timeoutMs?: number;
  maxPolls?: number;
  callPrefix?: string;
}

/** One requestState request of the Python client. */
export interface MrtrCallLine {
  ev: "call";
  call: string | null;
  method: string;
  status: number | null;
  contentType: string | null;
  i: number;
  round: "first" | "retry";
  code: number | null;
  message: string | null;
  error: string | null;
  resultType: string | null;
  node: string | null;
  ok: boolean;
}

export interface MrtrLine {
  ev: "mrtr";
  i: number;
  ok: boolean;
  node?: string | null;
  code?: number | null;
  error?: string;
}

export interface MrtrSummary {
  ev: "summary";
  calls: number;
  completed: number;
  failed: number;
  requests: number;
  failedRequests: number;
  nodes: Record<string, number>;
}

export type MrtrClientRun = ClientRun<MrtrCallLine, MrtrLine, MrtrSummary>;

export interface MrtrClientOptions {
  url: string;
  /** Where the retry goes (default: url). */
  retryUrl?: string;
  calls: number;
  callPrefix?: string;
}

/**
 * Runs a driver to its end and sorts its lines. Resolves with every line whatever the exit code
 * (1 means a request or a task failed, which the lines name); rejects when it could not run
 * (bad flags, no summary, a line that is not JSON) or outlives `limitMs`.
 */
function runDriver<C, U, S>(cmd: string, args: string[], unit: string, limitMs: number): Promise<ClientRun<C, U, S>> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
    const calls: C[] = [];
    const units: U[] = [];
    let summary: S | undefined;
    let bad: string | undefined;
    let stderr = "";
    child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      let j: { ev?: string };
      try {
        j = JSON.parse(line) as { ev?: string };
      } catch {
        bad ??= line;
        return;
      }
      if (j.ev === "call") calls.push(j as C);
      else if (j.ev === unit) units.push(j as U);
      else if (j.ev === "summary") summary = j as S;
      else bad ??= line;
    });
    const limit = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.on("close", (code, signal) => {
      clearTimeout(limit);
      if (bad !== undefined) reject(new Error(`${cmd}: a line that is not one of its events: ${bad}`));
      else if (summary === undefined || code === null || code > 1)
        reject(new Error(`${cmd} ${args.join(" ")} ended (${code ?? signal}) without a summary: ${stderr}`));
      else resolve({ calls, units, summary, exitCode: code });
    });
  });
}

/** Runs the Rust SDK task client (see test/servers/rust/src/client.rs) against a server or the edge. */
export function runRustTaskClient(o: TaskClientOptions): Promise<TaskClientRun> {
  const args = ["--url", o.url, "--tasks", String(o.tasks)];
  const add = (flag: string, v: string | number | undefined) => {
    if (v !== undefined) args.push(flag, String(v));
  };
  add("--poll-url", o.pollUrl);
  add("--tool", o.tool);
  add("--ms", o.ms);
  add("--cancel-every", o.cancelEvery);
  add("--answer", o.answer);
  add("--poll-ms", o.pollMs);
  add("--timeout-ms", o.timeoutMs);
  add("--max-polls", o.maxPolls);
  add("--call-prefix", o.callPrefix);
  const timeoutMs = o.timeoutMs ?? 10_000;
  // Every task: its creation, its polls (each at most a timeout) and its own run time.
  const limitMs = 30_000 + o.tasks * ((o.ms ?? 2000) + (o.maxPolls ?? 600) * ((o.pollMs ?? 1000) + timeoutMs));
  return runDriver(builtBinary("rustTasksClient", "Rust MCP task client"), args, "task", Math.min(limitMs, 600_000));
}

/** Runs the Python SDK 2.x requestState client against a server or the edge. */
export function runRequestStateClient(o: MrtrClientOptions): Promise<MrtrClientRun> {
  const args = [PYTHON_REQUEST_STATE_CLIENT_SCRIPT, "--url", o.url, "--calls", String(o.calls)];
  if (o.retryUrl !== undefined) args.push("--retry-url", o.retryUrl);
  if (o.callPrefix !== undefined) args.push("--call-prefix", o.callPrefix);
  return runDriver(VENV_MCP2_PYTHON, args, "mrtr", 30_000 + o.calls * 60_000);
}

/** The failed request lines of a run, one per line, for an assertion's message. */
export function failedCalls(run: { calls: Array<{ ok: boolean }> }): string {
  return run.calls
    .filter((c) => !c.ok)
    .map((c) => JSON.stringify(c))
    .join("\n");
}
