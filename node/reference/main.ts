// Entry point of the reference MCP node: `tsx node/reference/main.ts --port 7001 --redis-url redis://127.0.0.1:6379`.
import { ConfigError, parseNodeConfig, USAGE, type NodeConfig } from "./config.ts";
import { startReferenceNode } from "./server.ts";

let cfg: NodeConfig | null;
try {
  cfg = parseNodeConfig(process.argv.slice(2), process.env);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`mcp-node: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
if (cfg === null) {
  process.stdout.write(USAGE);
  process.exit(0);
}

let node;
try {
  node = await startReferenceNode(cfg);
} catch (err) {
  const e = err as NodeJS.ErrnoException;
  if (e.code === "EADDRINUSE" || e.code === "EACCES") {
    process.stderr.write(`mcp-node: --port ${cfg.port} on ${cfg.host} cannot be used (${e.code})\n`);
    process.exit(2);
  }
  if (e.code === "EADDRNOTAVAIL" || e.code === "ENOTFOUND" || e.code === "EAI_AGAIN") {
    process.stderr.write(`mcp-node: --host ${cfg.host} cannot be bound (${e.code})\n`);
    process.exit(2);
  }
  if (e.code === "ERR_AFFINITY_CONFIG") {
    process.stderr.write(`mcp-node: ${e.message}\n`);
    process.exit(2);
  }
  throw err;
}

let signals = 0;
const onSignal = (sig: NodeJS.Signals) => {
  // A second signal means "now": skip the rest of the grace period.
  if (++signals > 1) process.exit(1);
  node.affinity.log.info({ signal: sig }, "shutting down");
  node.shutdown().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);
