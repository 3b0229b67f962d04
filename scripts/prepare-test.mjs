#!/usr/bin/env node
// `npm test` step one: everything the suites need, installed by the project itself.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
execFileSync(
  process.execPath,
  [
    join(root, "scripts/ensure-deps.mjs"),
    "--plugin",
    "--redis",
    "--traefik",
    "--python",
    "--python-mcp2",
    "--clients",
    "--chromium",
    "--promtool",
    "--kubeconform",
    "--k8s-schemas",
  ],
  { stdio: "inherit" },
);
