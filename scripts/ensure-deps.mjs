#!/usr/bin/env node
// Installs what the project needs beyond npm packages, each only when missing:
//   --plugin   build plugin/build (AssemblyScript) when a source is newer than it
//   --redis    redis-server from Debian's packages (apt-get; needs root)
//   --traefik  the pinned Traefik, built from the Go module proxy (scripts/install-traefik.sh)
//   --python   .venv with the Python `mcp` package (the cookie-keeping e2e client, the Python MCP test server)
//   --python-mcp2  .venv-mcp2 with the Python `mcp` 2.x package (the 2026-07-28 requestState server and client;
//              it cannot share .venv with the 1.x the other Python tests use)
//   --clients  the Go and Rust SDK test clients, the Go SDK test server, the Rust SDK task server and
//              task client (scripts/build-clients.mjs)
//   --chromium Debian's chromium (apt-get; needs root) for the status-page test (playwright-core)
//   --promtool, --kubeconform  pinned Go tools for the ops checks (scripts/go-tools.mjs)
//   --k8s-schemas  offline schemas for kubeconform (scripts/k8s-schemas.mjs; after --python)
// Prints one line per step; exits 2 with a message naming what is missing when it cannot install.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { goTool } from "./go-tools.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const want = new Set(process.argv.slice(2).map((a) => a.replace(/^--/, "")));
// 1.26 and later answer 404 for an unknown session id (the spec's answer; 400 before).
const PYTHON_MCP_VERSION = "1.30.0";
// The 2026-07-28 SDK: its MCPServer seals requestState under a per-process key by default.
const PYTHON_MCP2_VERSION = "2.3.0";

function fail(msg) {
  console.error(`ensure-deps: ${msg}`);
  process.exit(2);
}
const has = (cmd) => spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: root, stdio: "inherit", ...opts });

/** Newest modification time of the files under `dir` (recursively), or of the file itself. */
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return readdirSync(path).reduce((m, f) => Math.max(m, newest(join(path, f))), st.mtimeMs);
}

if (want.has("plugin")) {
  // Built only when a source is newer than the built plugin (npm start and the bench call this).
  const built = join(root, "plugin", "build", "local", "plugin.wasm");
  const sources = [
    "plugin/assembly",
    "plugin/passthrough",
    "plugin/test",
    "plugin/.traefik.yml",
    "asconfig.json",
    "package-lock.json",
    "scripts/build-plugin.mjs",
  ].map((p) => join(root, p));
  const fresh = existsSync(built) && newest(built) > Math.max(...sources.filter(existsSync).map(newest));
  if (fresh) console.log("ensure-deps: plugin/build is up to date");
  else run(process.execPath, [join(root, "scripts/build-plugin.mjs")]);
}

if (want.has("redis") && !has("redis-server") && !existsSync("/usr/bin/redis-server")) {
  if (process.getuid?.() !== 0) fail("redis-server is missing: install Debian's redis-server package (needs root)");
  console.log("ensure-deps: installing redis-server (apt-get)");
  run("apt-get", ["update", "-qq"]);
  run("apt-get", ["install", "-y", "-qq", "redis-server"], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  // Debian starts a system redis on 6379; the project always starts its own on a free port.
  spawnSync("sh", ["-c", "service redis-server stop >/dev/null 2>&1 || true"]);
}

if (want.has("traefik")) {
  const out = execFileSync("bash", [join(root, "scripts/install-traefik.sh")], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  console.log(`ensure-deps: traefik at ${out.toString().trim()}`);
}

/** Makes `.venv`-like `dir` with exactly `mcp==version`, unless it already has it. */
function ensureVenv(dir, version, probe) {
  const venvPy = join(root, dir, "bin", "python");
  const ok =
    existsSync(venvPy) &&
    spawnSync(venvPy, ["-c", `import ${probe}, importlib.metadata as m; assert m.version("mcp") == "${version}"`], {
      stdio: "ignore",
    }).status === 0;
  if (ok) return;
  const py = has("python3") ? "python3" : has("python") ? "python" : fail("python3 is missing");
  console.log(`ensure-deps: creating ${dir} with mcp==${version}`);
  if (!existsSync(venvPy)) run(py, ["-m", "venv", join(root, dir)]);
  run(venvPy, ["-m", "pip", "install", "-q", "--disable-pip-version-check", `mcp==${version}`]);
}

if (want.has("python")) ensureVenv(".venv", PYTHON_MCP_VERSION, "mcp.client.streamable_http");
if (want.has("python-mcp2")) ensureVenv(".venv-mcp2", PYTHON_MCP2_VERSION, "mcp.server.request_state");

if (want.has("chromium") && !existsSync("/usr/bin/chromium")) {
  // playwright-core drives the system browser; Debian's package is the one we test with.
  if (process.getuid?.() !== 0) fail("chromium is missing: install Debian's chromium package (needs root)");
  console.log("ensure-deps: installing chromium (apt-get)");
  run("apt-get", ["update", "-qq"]);
  run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "chromium"], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
}

for (const tool of ["promtool", "kubeconform"]) {
  if (want.has(tool)) console.log(`ensure-deps: ${tool} at ${goTool(tool)}`);
}

if (want.has("k8s-schemas")) {
  const { k8sSchemas } = await import("./k8s-schemas.mjs");
  console.log(`ensure-deps: Kubernetes schemas at ${k8sSchemas()}`);
}

if (want.has("clients")) {
  run(process.execPath, [join(root, "scripts/build-clients.mjs")], { stdio: ["ignore", "ignore", "inherit"] });
  console.log("ensure-deps: the Go and Rust SDK test clients and test servers built");
}
