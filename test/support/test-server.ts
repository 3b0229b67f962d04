// Starts and stops the MCP test servers on the official SDKs that do not use the node library (the
// edge is their only source of truth): test/servers/python_mcp_server.py (Python SDK 1.x, 2025
// sessions), test/servers/go (Go SDK), test/servers/rust (Rust SDK, 2026-07-28 tasks kept in process
// memory) and test/servers/python_request_state_server.py (Python SDK 2.x, 2026-07-28 requestState
// sealed under a per-process key). The compiled ones are built by scripts/build-clients.mjs. All take
// --port/--host/--name and answer GET /healthz with {status, node, boot}.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { relative } from "node:path";
import { freePort, httpGet } from "../../dev/net.ts";
import {
  PYTHON_NODE_SCRIPT,
  PYTHON_REQUEST_STATE_SERVER_SCRIPT,
  ROOT,
  VENV_MCP2_PYTHON,
  VENV_PYTHON,
} from "../../dev/paths.ts";
import { GiveUp, waitUntil } from "../../dev/poll.ts";
import { builtBinary, goServerBinary } from "../../dev/stack.ts";

export interface TestServer {
  name: string;
  port: number;
  /** http://127.0.0.1:<port> (the MCP endpoint is <url>/mcp). */
  url: string;
  pid: number;
  /** Stops the process (SIGKILL when `hard`) and waits for its exit. */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port: a new process, a new boot id, no sessions. */
  restart(): Promise<void>;
}

export interface TestServerOptions {
  name: string;
  port?: number;
  /** Flags after --port/--host/--name (the Rust task server's, see RustTaskServerOptions). */
  args?: string[];
  /** How long to wait for /healthz (default 20 s: the first import of the Python SDK is slow on a busy machine). */
  readyMs?: number;
}

/** What differs between the servers: how to run one and what to call it in errors. */
interface Launcher {
  label: string;
  /** The command line before --port/--host/--name; throws when the server is not installed. */
  command(): string[];
}

/** A Python server script run by one of the project's virtual environments (`flag`: ensure-deps' flag that makes it). */
const pythonLauncher = (label: string, python: string, script: string, flag: string): Launcher => ({
  label,
  command() {
    if (!existsSync(python))
      throw new Error(`${relative(ROOT, python)} is missing: run \`node scripts/ensure-deps.mjs ${flag}\``);
    return [python, script];
  },
});

const PYTHON = pythonLauncher("python MCP server", VENV_PYTHON, PYTHON_NODE_SCRIPT, "--python");

const GO: Launcher = { label: "go MCP server", command: () => [goServerBinary()] };

const RUST_TASKS: Launcher = {
  label: "rust task server",
  command: () => [builtBinary("rustServer", "Rust MCP task server")],
};

const PYTHON_REQUEST_STATE = pythonLauncher(
  "python requestState server",
  VENV_MCP2_PYTHON,
  PYTHON_REQUEST_STATE_SERVER_SCRIPT,
  "--python-mcp2",
);

export interface RustTaskServerOptions extends Omit<TestServerOptions, "args"> {
  /** The pollIntervalMs its tasks suggest (default 200). */
  pollIntervalMs?: number;
  /** Its tasks' ttlMs (default rmcp's, 5 minutes): a terminal task is dropped one TTL after it ended. */
  taskTtlMs?: number;
  /** Answer with one JSON body where the SDK can (default: an SSE stream per request). */
  jsonResponse?: boolean;
}

export const startPythonServer = (opts: TestServerOptions) => startTestServer(PYTHON, opts);
export const startGoServer = (opts: TestServerOptions) => startTestServer(GO, opts);
export const startRustTaskServer = (opts: RustTaskServerOptions) =>
  startTestServer(RUST_TASKS, {
    ...opts,
    args: [
      ...(opts.pollIntervalMs === undefined ? [] : ["--poll-interval-ms", String(opts.pollIntervalMs)]),
      ...(opts.taskTtlMs === undefined ? [] : ["--task-ttl-ms", String(opts.taskTtlMs)]),
      ...(opts.jsonResponse ? ["--json-response"] : []),
    ],
  });
export const startPythonRequestStateServer = (opts: TestServerOptions) => startTestServer(PYTHON_REQUEST_STATE, opts);

async function startTestServer(launcher: Launcher, opts: TestServerOptions): Promise<TestServer> {
  const [cmd, ...prefix] = launcher.command();
  const label = `${launcher.label} ${opts.name}`;
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  let child: ChildProcess | null = null;
  let stderr = "";

  const start = async () => {
    stderr = "";
    const flags = ["--port", String(port), "--host", "127.0.0.1", "--name", opts.name, ...(opts.args ?? [])];
    const c = spawn(cmd!, [...prefix, ...flags], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    child = c;
    c.stderr?.on("data", (d) => {
      // Keep the tail only: enough to explain a failed start.
      stderr = (stderr + d).slice(-4000);
    });
    try {
      await waitUntil(
        `${label}'s /healthz on ${port}`,
        async () => {
          if (c.exitCode !== null || c.signalCode !== null)
            throw new GiveUp(`${label} exited (${c.exitCode ?? c.signalCode}): ${stderr}`);
          return (await httpGet(`${url}/healthz`))?.status === 200;
        },
        opts.readyMs ?? 20_000,
        50,
      );
    } catch (err) {
      if (!(err instanceof GiveUp)) c.kill("SIGKILL");
      throw err instanceof GiveUp ? err : new Error(`${(err as Error).message}: ${stderr}`);
    }
  };

  const stop = async (hard = false) => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once("exit", () => r()));
    c.kill(hard ? "SIGKILL" : "SIGTERM");
    const timer = setTimeout(() => c.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  return {
    name: opts.name,
    port,
    url,
    get pid() {
      return child?.pid ?? -1;
    },
    stop,
    async restart() {
      await stop();
      await start();
    },
  };
}
