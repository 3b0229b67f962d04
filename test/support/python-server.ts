// Starts and stops test/servers/python_mcp_server.py: an MCP server on the official Python SDK that
// does not use the node library (the edge is its only source of truth).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { freePort, httpGet } from "../../dev/net.ts";
import { PYTHON_NODE_SCRIPT as SCRIPT, VENV_PYTHON } from "../../dev/paths.ts";
import { GiveUp, waitUntil } from "../../dev/poll.ts";

export interface PythonServer {
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

export interface PythonServerOptions {
  name: string;
  port?: number;
  /** How long to wait for /healthz (default 20 s: the first import of the SDK is slow on a busy machine). */
  readyMs?: number;
}

export async function startPythonServer(opts: PythonServerOptions): Promise<PythonServer> {
  if (!existsSync(VENV_PYTHON))
    throw new Error(".venv/bin/python is missing: run `node scripts/ensure-deps.mjs --python`");
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  let child: ChildProcess | null = null;
  let stderr = "";

  const start = async () => {
    stderr = "";
    const c = spawn(VENV_PYTHON, [SCRIPT, "--port", String(port), "--name", opts.name], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    child = c;
    c.stderr?.on("data", (d) => {
      // Keep the tail only: enough to explain a failed start.
      stderr = (stderr + d).slice(-4000);
    });
    try {
      await waitUntil(
        `python MCP server ${opts.name}'s /healthz on ${port}`,
        async () => {
          if (c.exitCode !== null || c.signalCode !== null)
            throw new GiveUp(`python MCP server ${opts.name} exited (${c.exitCode ?? c.signalCode}): ${stderr}`);
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
