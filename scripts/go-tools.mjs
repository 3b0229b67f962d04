// The real ecosystem tools the ops checks run, pinned here and nowhere else: built from the Go
// module proxy by scripts/install-go-tool.sh into .cache/bin/<name>-<version> on first use.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export const GO_TOOLS = {
  // Prometheus v3.16 (the Go module tags Prometheus 3.x as v0.3xx).
  promtool: "github.com/prometheus/prometheus/cmd/promtool@v0.316.0",
  kubeconform: "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0",
};

/** Path of the pinned tool's binary, building it first when it is not cached yet. */
export function goTool(name) {
  const pkg = GO_TOOLS[name];
  if (!pkg) throw new Error(`unknown tool ${name}`);
  const out = execFileSync("bash", [join(root, "scripts", "install-go-tool.sh"), name, pkg], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  return out.toString().trim();
}
