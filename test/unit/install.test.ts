// Installing and starting: the lock file npm ci accepts and npm install leaves alone, and the
// commands that check their settings before they build anything.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../../dev/paths.ts";

const npm = (args: string[], env: Record<string, string> = {}) =>
  spawnSync("npm", args, { cwd: ROOT, env: { ...process.env, ...env }, encoding: "utf8", timeout: 60_000 });

describe("package-lock.json", () => {
  it("holds every platform's optional binaries (npm 11 rewrites a lock without them and npm ci refuses it)", () => {
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));
    const pkgs: Record<string, { optionalDependencies?: Record<string, string> }> = lock.packages;
    const missing: string[] = [];
    for (const [path, p] of Object.entries(pkgs)) {
      for (const dep of Object.keys(p.optionalDependencies ?? {})) {
        // Resolved as node does: nested node_modules first, then each parent's, then the top.
        const parts = path
          .split("node_modules/")
          .filter(Boolean)
          .map((x) => x.replace(/\/$/, ""));
        let found = false;
        for (let i = parts.length; i >= 0 && !found; i--) {
          const prefix = parts
            .slice(0, i)
            .map((x) => `node_modules/${x}/`)
            .join("");
          found = pkgs[`${prefix}node_modules/${dep}`] !== undefined;
        }
        if (!found) missing.push(`${path} -> ${dep}`);
      }
    }
    expect(missing).toEqual([]);
    expect(Object.keys(pkgs).some((k) => k.endsWith("@rollup/rollup-win32-x64-msvc"))).toBe(true);
  });
});

describe("settings before builds", () => {
  it("npm run bench -- --help prints the usage and builds nothing", () => {
    const r = npm(["run", "--silent", "bench", "--", "--help"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Usage: npm run bench -- /);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/build-plugin|ensure-deps|install-traefik/);
  });

  it("npm run bench with a bad flag names it and builds nothing", () => {
    const r = npm(["run", "--silent", "bench", "--", "--rounds", "x"]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('traefik-bench: invalid --rounds: "x" is not a whole number');
    expect(r.stdout).not.toMatch(/build-plugin|ensure-deps/);
  });

  it("npm start with a bad MCPA_* value names it and builds nothing", () => {
    for (const [k, v, needle] of [
      ["MCPA_SIDECAR_PORT", "70000", "MCPA_SIDECAR_PORT must be a port number (1-65535)"],
      ["MCPA_NODE_PORTS", "8101,,8103", "MCPA_NODE_PORTS must be 1 to 16 comma-separated port numbers"],
      ["MCPA_REDIS_URL", "localhost:6379", "MCPA_REDIS_URL must start with redis:// or rediss://"],
    ] as const) {
      const r = npm(["run", "--silent", "start"], { [k]: v });
      expect(r.status, k).toBe(2);
      expect(r.stderr, k).toContain(`npm start: ${needle}`);
      expect(`${r.stdout}${r.stderr}`, k).not.toMatch(/build-plugin|ensure-deps|install-traefik/);
    }
  });
});
