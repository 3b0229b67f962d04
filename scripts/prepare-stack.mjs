#!/usr/bin/env node
// `npm start` step one: the plugin build and the pinned Traefik, plus redis-server when it can be
// installed (root) — without it the stack runs on the sidecar's in-memory store.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const hasRedis =
  existsSync(process.env.REDIS_SERVER ?? "/usr/bin/redis-server") ||
  spawnSync("sh", ["-c", "command -v redis-server"], { stdio: "ignore" }).status === 0;
const canInstall =
  process.getuid?.() === 0 && spawnSync("sh", ["-c", "command -v apt-get"], { stdio: "ignore" }).status === 0;
const steps = ["--plugin", "--traefik"];
if (!hasRedis && canInstall && process.env.MCPA_STORE !== "memory" && !process.env.MCPA_REDIS_URL)
  steps.push("--redis");
try {
  execFileSync(process.execPath, [join(root, "scripts/ensure-deps.mjs"), ...steps], { stdio: "inherit" });
} catch (err) {
  // ensure-deps already printed what is missing.
  process.exit(err.status ?? 1);
}
