#!/usr/bin/env node
// Builds the Go and Rust SDK test clients (test/clients/go, test/clients/rust), the Go SDK test
// server (test/servers/go), and the Rust SDK task server with its task client (test/servers/rust,
// one crate) from the Go module proxy and crates.io, pinned by go.sum and Cargo.lock,
// and caches each binary under .cache/clients/ by a hash of its sources: a changed one is rebuilt,
// an unchanged one is reused. The cache may be shared by several checkouts: each build goes to a
// temporary name, then is renamed.
//   node scripts/build-clients.mjs            all: {"go": ..., "rust": ..., "goServer": ..., "rustServer": ..., "rustTasksClient": ...}
//   node scripts/build-clients.mjs goServer   only those named: {"goServer": ...}
// Prints the paths as JSON; exits 2 naming what is missing.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cache = join(root, ".cache", "clients");

function fail(msg) {
  console.error(`build-clients: ${msg}`);
  process.exit(2);
}

function sourcesHash(dir) {
  const h = createHash("sha256");
  const walk = (d) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else h.update(relative(dir, p)).update("\0").update(readFileSync(p)).update("\0");
    }
  };
  walk(dir);
  return h.digest("hex").slice(0, 12);
}

const goBuild = (src, out) =>
  execFileSync("go", ["build", "-mod=readonly", "-trimpath", "-o", out, "."], {
    cwd: src,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, CGO_ENABLED: "0" },
  });

/** `cargo build` of the crate in `src` into the shared target directory; copies binary `bin` to `out`. */
const cargoBuild = (bin) => (src, out) => {
  const target = join(cache, "rust-target"); // shared incremental cache: dependencies compile once
  execFileSync("cargo", ["build", "--release", "--locked", "--quiet"], {
    cwd: src,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, CARGO_TARGET_DIR: target },
  });
  execFileSync("cp", [join(target, "release", bin), out]);
};

const CLIENTS = {
  go: { dir: join(root, "test/clients/go"), tool: "go", what: "Go SDK client", build: goBuild },
  rust: {
    dir: join(root, "test/clients/rust"),
    tool: "cargo",
    what: "Rust SDK client",
    build: cargoBuild("mcp-affinity-e2e-rust"),
  },
  // The MCP server on the Go SDK (dev/stack.ts's "go" node kind, the server tests).
  goServer: { dir: join(root, "test/servers/go"), tool: "go", what: "Go SDK test server", build: goBuild },
  // The 2026-07-28 task server on the Rust SDK and its task client driver: one crate, two binaries.
  rustServer: {
    dir: join(root, "test/servers/rust"),
    tool: "cargo",
    what: "Rust SDK task server",
    build: cargoBuild("rust-tasks-server"),
  },
  rustTasksClient: {
    dir: join(root, "test/servers/rust"),
    tool: "cargo",
    what: "Rust SDK task client",
    build: cargoBuild("rust-tasks-client"),
  },
};

/** Path of the client (or test server) binary, building it when missing. */
export function ensureClient(name) {
  const c = CLIENTS[name];
  if (!c) fail(`unknown name ${name}: one of ${Object.keys(CLIENTS).join(", ")}`);
  const out = join(cache, `${name}-${sourcesHash(c.dir)}`);
  if (existsSync(out)) return out;
  try {
    execFileSync("sh", ["-c", `command -v ${c.tool}`], { stdio: "ignore" });
  } catch {
    fail(`${c.tool} is needed to build the ${c.what} (${relative(root, c.dir)})`);
  }
  mkdirSync(cache, { recursive: true });
  const work = mkdtempSync(join(cache, `${name}-build.`));
  try {
    console.error(`build-clients: building the ${c.what} (first time: minutes on 2 cores)`);
    c.build(c.dir, join(work, "bin"));
    renameSync(join(work, "bin"), out);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const names = process.argv.length > 2 ? process.argv.slice(2) : Object.keys(CLIENTS);
  console.log(JSON.stringify(Object.fromEntries(names.map((n) => [n, ensureClient(n)]))));
}
