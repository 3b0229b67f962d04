// The built plugin.wasm on the real http-wasm host: runs the Go conformance test of
// test/conformance (http-wasm-host-go's handler/nethttp on wazero, at the versions the pinned
// Traefik uses, configured like Traefik's local Wasm plugins). The Go test binary is built once per
// content of its sources and cached under .cache/real-host-conformance/.
import { beforeAll, expect, test } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PLUGIN_WASM } from "../support/plugin-fixture.ts";

const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const pkg = join(root, "test", "conformance");
const PINNED = ["github.com/http-wasm/http-wasm-host-go", "github.com/tetratelabs/wazero"];
/** Binaries of other source versions (other worktrees, older commits) are dropped after a week. */
const KEEP_OLD_BINARIES_MS = 7 * 24 * 3600 * 1000;

function go(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    return execFileSync("go", args, {
      cwd,
      env: { ...process.env, ...env },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    const e = err as { code?: string; stderr?: string };
    if (e.code === "ENOENT")
      throw new Error("Go is needed for the real-host conformance test (it also builds the pinned Traefik)", {
        cause: err,
      });
    throw new Error(`go ${args.join(" ")}: ${e.stderr ?? err}`, { cause: err });
  }
}

/** The Traefik version the project pins (scripts/install-traefik.sh, overridable as there). */
function traefikVersion(): string {
  const m = /version=\$\{TRAEFIK_VERSION:-(v[0-9.]+)\}/.exec(
    readFileSync(join(root, "scripts", "install-traefik.sh"), "utf8"),
  );
  if (!m) throw new Error("scripts/install-traefik.sh names no Traefik version");
  return process.env.TRAEFIK_VERSION ?? m[1]!;
}

/** Versions a go.mod requires, for the modules in `paths`. */
function required(goMod: string, paths: string[]): Record<string, string | undefined> {
  return Object.fromEntries(
    paths.map((p) => [
      p,
      new RegExp(`^\\s*(?:require\\s+)?${p.replace(/\./g, "\\.")}\\s+(v\\S+)`, "m").exec(goMod)?.[1],
    ]),
  );
}

let binary = "";

beforeAll(() => {
  if (!existsSync(PLUGIN_WASM)) throw new Error(`${PLUGIN_WASM} is missing: run \`npm run build\``);
  // The key covers everything compiled in: the Go sources, go.mod/go.sum and the toolchain.
  const key = createHash("sha256").update(go(["version"], pkg));
  for (const name of readdirSync(pkg)
    .filter((n) => n.endsWith(".go") || n === "go.mod" || n === "go.sum")
    .sort()) {
    key.update(`${name}\0`).update(readFileSync(join(pkg, name)));
  }
  const dir = join(root, ".cache", "real-host-conformance");
  binary = join(dir, `conformance-${key.digest("hex").slice(0, 16)}.test`);
  if (existsSync(binary)) return;
  mkdirSync(dir, { recursive: true });
  // .cache is shared by worktrees: build under a private name, then rename into place.
  const tmp = `${binary}.tmp-${process.pid}`;
  try {
    go(["test", "-c", "-o", tmp, "."], pkg);
    renameSync(tmp, binary);
  } finally {
    rmSync(tmp, { force: true });
  }
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false }); // another worktree may prune at once
    if (p !== binary && st && Date.now() - st.mtimeMs > KEEP_OLD_BINARIES_MS) rmSync(p, { force: true });
  }
}, 900_000);

test("the host libraries are the versions the pinned Traefik's go.mod requires", () => {
  const version = traefikVersion();
  const empty = mkdtempSync(join(tmpdir(), "mcpa-gomod-"));
  try {
    const info = JSON.parse(
      go(["list", "-m", "-json", `github.com/traefik/traefik/v3@${version}`], empty, { GOFLAGS: "-mod=mod" }),
    ) as { GoMod: string };
    const traefik = required(readFileSync(info.GoMod, "utf8"), PINNED);
    const ours = Object.fromEntries(
      go(["list", "-m", "-f", "{{.Path}} {{.Version}}", ...PINNED], pkg)
        .trim()
        .split("\n")
        .map((l) => l.split(" ")),
    );
    for (const p of PINNED) expect(traefik[p], `Traefik ${version} requires ${p}`).toMatch(/^v/);
    expect(ours).toEqual(traefik);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

/** Runs the Go tests matching `pattern`; fails with the Go output when one fails. */
function runGo(pattern: string): void {
  const r = spawnSync(binary, ["-test.v", "-test.count=1", `-test.run=${pattern}`, "-repo", root], {
    cwd: root,
    env: { ...process.env, NODE: process.execPath },
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    timeout: 300_000,
  });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (r.status !== 0) {
    // The failing checks with their messages first, then the whole run.
    const failures = out.split("\n").filter((l) => /^\s+\S/.test(l) && !/^\s*(--- PASS|--- SKIP|=== )/.test(l));
    throw new Error(
      `Go conformance ${pattern} failed (exit ${r.status ?? r.signal}${r.error ? `, ${r.error.message}` : ""}):\n${failures.join("\n")}\n\n--- full output ---\n${out}`,
    );
  }
  // Guard against a run that checked nothing: the top-level test passed and had subtests.
  expect(out).toMatch(new RegExp(`^--- PASS: ${pattern.replace(/^\^|\$$/g, "")} `, "m"));
  expect(out).toMatch(/^\s+--- PASS: /m);
}

test("decision table rows on the real host", () => runGo("^TestDecisionTable$"), 300_000);
test(
  "learning on the real host: learned/<hash> before release, next request on another middleware pinned",
  () => runGo("^TestLearning$"),
  300_000,
);
test("request bodies reach the upstream byte-identical on the real host", () => runGo("^TestRequestBodies$"), 300_000);
test(
  "every instance stays within its first 64 KiB page on the real host, whatever it serves (a small view, a million sessions' shards)",
  () => runGo("^TestInstanceMemory$"),
  300_000,
);
test(
  "every new meta is seen within a refresh on the real host, though an unchanged one is only checked",
  () => runGo("^TestMetaVersions$"),
  300_000,
);
