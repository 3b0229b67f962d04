// Where the repository and the interpreters the local stack runs live.
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The project's Python (scripts/ensure-deps.mjs --python makes it), with the official `mcp` SDK. */
export const VENV_PYTHON = join(ROOT, ".venv", "bin", "python");
/** An MCP server on the official Python SDK that knows nothing of mcp-affinity. */
export const PYTHON_NODE_SCRIPT = join(ROOT, "test", "servers", "python_mcp_server.py");
/** Builds (or finds in .cache/clients/) the Go SDK test clients and the Go SDK test server (test/servers/go). */
export const BUILD_CLIENTS_SCRIPT = join(ROOT, "scripts", "build-clients.mjs");
/** The Python with the 2026-07-28 `mcp` 2.x SDK (scripts/ensure-deps.mjs --python-mcp2 makes it). */
export const VENV_MCP2_PYTHON = join(ROOT, ".venv-mcp2", "bin", "python");
/** An MCP 2026-07-28 server on the Python `mcp` 2.x SDK whose tool needs a requestState round trip. */
export const PYTHON_REQUEST_STATE_SERVER_SCRIPT = join(ROOT, "test", "servers", "python_request_state_server.py");
/** The requestState retry client on the Python `mcp` 2.x SDK. */
export const PYTHON_REQUEST_STATE_CLIENT_SCRIPT = join(ROOT, "test", "clients", "python_request_state_client.py");
