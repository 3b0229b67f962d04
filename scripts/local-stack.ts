// `npm start`: the whole local stack on loopback — Redis (or the sidecar's in-memory store), the
// sidecar, the reference MCP nodes (one per MCPA_NODE_PORTS entry) and Traefik with the plugin —
// until Ctrl-C. Settings are checked before anything is built (scripts/prepare-stack.mjs).
import { spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync } from "node:fs";
import { join, relative } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { startL4Balancer, type L4Balancer } from "../dev/l4-balancer.ts";
import { ROOT } from "../dev/paths.ts";
import { StackError } from "../dev/process.ts";
import { REDIS_SERVER } from "../dev/redis.ts";
import { DEMO_TIMING, startStack, type ReplicaPorts, type Stack } from "../dev/stack.ts";
import type { StackPorts } from "../dev/traefik-config.ts";
import { McpAffinityError } from "../lib/errors.ts";

const USAGE = `npm start — the local mcp-affinity stack (all on 127.0.0.1)

Environment (defaults in brackets):
  MCPA_HTTP_PORT      Traefik plain HTTP entrypoint          [8080]
  MCPA_HTTPS_PORT     Traefik TLS entrypoint                 [8443]
  MCPA_API_PORT       Traefik API, ping and metrics          [8081]
  MCPA_SIDECAR_PORT   sidecar: metrics, status, sessions API [8090]
  MCPA_NODE_PORTS     the reference nodes, comma-separated   [8101,8102,8103]
  MCPA_REDIS_PORT     the redis-server the stack starts      [6390]
  MCPA_REDIS_URL      use this Redis instead of starting one
  MCPA_STORE          redis | memory (memory: the sidecar's in-memory store) [redis when redis-server exists]
  MCPA_REPLICAS       Traefik replicas, each with its own sidecar [1]; 2 to 4 put a
                      per-connection TCP balancer in front (like a Kubernetes Service);
                      replica k listens on each port above + 100 x (k - 1); needs Redis
  MCPA_LB_PORT        the balancer, when MCPA_REPLICAS > 1       [8000]
  MCPA_FAST_PATH      1: each sidecar writes its Traefik's fast-path routers (requests of
                      tokened sessions routed without the plugin; docs/operations.md) [0]
`;

const MAX_DEMO_REPLICAS = 4;
/** Replica k (k >= 2) listens on replica 1's ports plus this times (k - 1). */
const REPLICA_PORT_STEP = 100;

class SettingError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_STACK_CONFIG", message);
  }
}

function portSetting(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return dflt;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 65535)
    throw new SettingError(`${name} must be a port number (1-65535), got "${raw}"`);
  return Number(raw);
}

interface Settings {
  ports: StackPorts;
  store: "redis" | "memory";
  redisUrl?: string;
  listens: Array<[string, number]>;
  replicas: number;
  replicaPorts: ReplicaPorts[];
  lbPort: number;
  fastPath: boolean;
}

/** The stack's settings from MCPA_*; `installed`: also require what the builds install (redis-server). */
function readSettings(installed = true): Settings {
  const nodesRaw = process.env.MCPA_NODE_PORTS || "8101,8102,8103";
  const nodes = nodesRaw.split(",").map((p) => p.trim());
  if (
    nodes.length < 1 ||
    nodes.length > 16 ||
    nodes.some((p) => !/^\d+$/.test(p) || Number(p) < 1 || Number(p) > 65535)
  ) {
    throw new SettingError(`MCPA_NODE_PORTS must be 1 to 16 comma-separated port numbers, got "${nodesRaw}"`);
  }
  const ports: StackPorts = {
    http: portSetting("MCPA_HTTP_PORT", 8080),
    https: portSetting("MCPA_HTTPS_PORT", 8443),
    api: portSetting("MCPA_API_PORT", 8081),
    sidecar: portSetting("MCPA_SIDECAR_PORT", 8090),
    redis: portSetting("MCPA_REDIS_PORT", 6390),
    nodes: nodes.map(Number),
  };
  const storeRaw = process.env.MCPA_STORE;
  if (storeRaw && storeRaw !== "redis" && storeRaw !== "memory")
    throw new SettingError(`MCPA_STORE must be redis or memory, got "${storeRaw}"`);
  const redisUrl = process.env.MCPA_REDIS_URL || undefined;
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl))
    throw new SettingError(`MCPA_REDIS_URL must start with redis:// or rediss://, got "${redisUrl}"`);
  if (redisUrl && storeRaw === "memory")
    throw new SettingError("MCPA_REDIS_URL and MCPA_STORE=memory exclude each other");
  let store: "redis" | "memory" = storeRaw === "memory" ? "memory" : "redis";
  if (!storeRaw && !redisUrl && !existsSync(REDIS_SERVER)) store = "memory";
  if (installed && storeRaw === "redis" && !redisUrl && !existsSync(REDIS_SERVER)) {
    throw new SettingError(
      `MCPA_STORE=redis but redis-server is missing at ${REDIS_SERVER}: install it, or set MCPA_REDIS_URL`,
    );
  }
  const replicasRaw = process.env.MCPA_REPLICAS || "1";
  if (!/^\d+$/.test(replicasRaw) || Number(replicasRaw) < 1 || Number(replicasRaw) > MAX_DEMO_REPLICAS) {
    throw new SettingError(`MCPA_REPLICAS must be a number from 1 to ${MAX_DEMO_REPLICAS}, got "${replicasRaw}"`);
  }
  const replicas = Number(replicasRaw);
  // Before the builds redis-server may still be missing (they install it): only an explicit choice counts then.
  if (replicas > 1 && store === "memory" && (installed || storeRaw === "memory"))
    throw new SettingError(
      "MCPA_REPLICAS > 1 needs Redis (every sidecar reads the same registry): unset MCPA_STORE=memory, install redis-server or set MCPA_REDIS_URL",
    );
  const lbPort = portSetting("MCPA_LB_PORT", 8000);
  const replicaPorts: ReplicaPorts[] = [];
  for (let k = 1; k < replicas; k++) {
    const shift = (p: number, name: string) => {
      const q = p + REPLICA_PORT_STEP * k;
      if (q > 65535)
        throw new SettingError(
          `${name} ${p} + ${REPLICA_PORT_STEP * k} for replica ${k + 1} is past 65535: choose a lower ${name}`,
        );
      return q;
    };
    replicaPorts.push({
      http: shift(ports.http, "MCPA_HTTP_PORT"),
      https: shift(ports.https, "MCPA_HTTPS_PORT"),
      api: shift(ports.api, "MCPA_API_PORT"),
      sidecar: shift(ports.sidecar, "MCPA_SIDECAR_PORT"),
    });
  }
  // Every port the stack listens on, by the setting that names it: distinct, and free at start.
  const listens: Array<[string, number]> = [
    ...(replicas > 1 ? [["MCPA_LB_PORT", lbPort] as [string, number]] : []),
    ...replicaPorts.flatMap((rp, k): Array<[string, number]> => [
      [`MCPA_HTTP_PORT + ${REPLICA_PORT_STEP * (k + 1)} (replica ${k + 2})`, rp.http],
      [`MCPA_HTTPS_PORT + ${REPLICA_PORT_STEP * (k + 1)} (replica ${k + 2})`, rp.https],
      [`MCPA_API_PORT + ${REPLICA_PORT_STEP * (k + 1)} (replica ${k + 2})`, rp.api],
      [`MCPA_SIDECAR_PORT + ${REPLICA_PORT_STEP * (k + 1)} (replica ${k + 2})`, rp.sidecar],
    ]),
    ["MCPA_HTTP_PORT", ports.http],
    ["MCPA_HTTPS_PORT", ports.https],
    ["MCPA_API_PORT", ports.api],
    ["MCPA_SIDECAR_PORT", ports.sidecar],
    ...ports.nodes.map((p): [string, number] => ["MCPA_NODE_PORTS", p]),
    ...(store === "redis" && !redisUrl ? [["MCPA_REDIS_PORT", ports.redis] as [string, number]] : []),
  ];
  const seen = new Map<number, string>();
  for (const [name, p] of listens) {
    if (seen.has(p)) throw new SettingError(`${name}: port ${p} is also used by ${seen.get(p)}`);
    seen.set(p, name);
  }
  const fastPathRaw = process.env.MCPA_FAST_PATH || "0";
  if (fastPathRaw !== "0" && fastPathRaw !== "1")
    throw new SettingError(`MCPA_FAST_PATH must be 0 or 1, got "${fastPathRaw}"`);
  return { ports, store, redisUrl, listens, replicas, replicaPorts, lbPort, fastPath: fastPathRaw === "1" };
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

async function selfCheck(url: string): Promise<string> {
  const client = new Client({ name: "npm-start-self-check", version: "0.1.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  const values: string[] = [];
  let node: string;
  try {
    const who = (await client.callTool({ name: "whoami", arguments: {} })) as { content: Array<{ text: string }> };
    node = JSON.parse(who.content[0]!.text).node;
    for (let i = 0; i < 3; i++) {
      const r = (await client.callTool({ name: "counter", arguments: {} })) as { content: Array<{ text: string }> };
      values.push(r.content[0]!.text);
    }
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close().catch(() => {});
  }
  if (values.join(",") !== "1,2,3")
    throw new StackError(`self-check: counter gave ${values.join(",")} instead of 1,2,3`, "ERR_STACK_SELF_CHECK");
  return `initialize, whoami and 3 counter calls through Traefik without cookies: served by ${node}, counter 1,2,3`;
}

function printBanner(s: Stack, store: string, check: string, balancer: L4Balancer | null): void {
  const rel = (p: string) => relative(process.cwd(), p) || ".";
  const mcpUrl = balancer ? `${balancer.base}/mcp` : s.mcpUrl;
  const replicaLines = balancer
    ? [
        `  MCP endpoint          ${mcpUrl}   (TCP balancer: a random replica per new connection)`,
        ...s.replicas.flatMap((r) => [
          `  ${r.name.padEnd(21)} ${r.mcpUrl}   (TLS ${r.mcpsUrl}; metrics ${r.traefikMetricsUrl})`,
          `    its sidecar         ${r.sidecarUrl}/status, ${r.sidecarUrl}/metrics   (shared directory ${rel(r.shared)})`,
        ]),
      ]
    : [
        `  MCP endpoint          ${mcpUrl}`,
        `  MCP endpoint (TLS)    ${s.mcpsUrl}   (self-signed; certificate: ${rel(s.caFile)})`,
        `  Sidecar metrics       ${s.sidecarUrl}/metrics`,
        `  Sidecar status page   ${s.sidecarUrl}/status   (also /readyz, /healthz, /v1/nodes)`,
        `  Traefik metrics       ${s.traefikMetricsUrl}`,
        `  Traefik status        ${s.apiUrl}/api/http/services/mcp@file`,
      ];
  const lines = [
    "",
    "mcp-affinity local stack is up",
    "",
    ...replicaLines,
    `  Nodes                 ${s.nodes.map((n) => `${n.name} ${n.url}`).join(", ")}`,
    `  Registry              ${store}`,
    ...(balancer ? [] : [`  Shared view directory ${rel(s.shared)}`]),
    `  Logs                  ${rel(s.dir)}/logs/`,
    "",
    `  Self-check: ${check}`,
    "",
    "Point any MCP client (Streamable HTTP) at the MCP endpoint, or try it by hand:",
    `  curl -si ${mcpUrl} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\`,
    `    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'`,
    "Press Ctrl-C to stop everything.",
    "",
  ];
  console.log(lines.join("\n"));
}

async function main(): Promise<void> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    process.stdout.write(USAGE);
    return;
  }
  const settings = (installed: boolean): ReturnType<typeof readSettings> => {
    try {
      return readSettings(installed);
    } catch (err) {
      if (err instanceof SettingError) {
        console.error(`npm start: ${err.message}`);
        process.exit(2);
      }
      throw err;
    }
  };
  // Settings first: a typo costs no plugin or Traefik build. The builds may install
  // redis-server (root), so the store is decided after them.
  settings(false);
  const prepared = spawnSync(process.execPath, [join(ROOT, "scripts", "prepare-stack.mjs")], { stdio: "inherit" });
  if (prepared.status !== 0) process.exit(prepared.status ?? 1);
  const { ports, store, redisUrl, listens, replicas, replicaPorts, lbPort, fastPath } = settings(true);
  if (store === "memory" && !process.env.MCPA_STORE)
    console.log(`npm start: no redis-server at ${REDIS_SERVER}: using the sidecar's in-memory store`);
  for (const [name, p] of listens) {
    if (!(await portFree(p))) {
      console.error(`npm start: port ${p} (${name}) is already in use on 127.0.0.1: stop what uses it or set ${name}`);
      process.exit(2);
    }
  }

  const nodesText = `${ports.nodes.length} reference node${ports.nodes.length === 1 ? "" : "s"}`;
  console.log(
    replicas > 1
      ? `npm start: starting Redis, ${nodesText}, ${replicas} Traefik replicas with a sidecar each and the balancer ...`
      : `npm start: starting ${store === "memory" ? "" : "Redis, "}the sidecar, ${nodesText} and Traefik ...`,
  );
  let stack: Stack | null = null;
  let balancer: L4Balancer | null = null;
  let stopping = false;
  const shutdown = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nnpm start: ${why}: stopping Traefik, the nodes, the sidecar and Redis ...`);
    await balancer?.close();
    await stack?.stop();
    console.log("npm start: stopped.");
    process.exit(code);
  };
  let signals = 0;
  let firstSignalAt = 0;
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      signals++;
      if (!firstSignalAt) firstSignalAt = Date.now();
      // Ctrl-C reaches us from the terminal and again from npm, at once: only a second Ctrl-C a
      // moment later means "do not wait" (the exit hook then kills every child).
      else if (Date.now() - firstSignalAt > 1000) {
        console.error("npm start: stopping now");
        process.exit(130);
      }
      void shutdown(sig, 0);
    });
  }

  try {
    stack = await startStack({
      name: "stack",
      nodes: ports.nodes.length,
      ports,
      redis: store === "redis",
      redisUrl,
      replicas,
      replicaPorts,
      fastPath,
      timing: DEMO_TIMING,
      pluginSettings: { staleAfterMs: String(DEMO_TIMING.staleAfterMs) },
    });
  } catch (err) {
    const e = err as Error & { code?: string };
    console.error(`npm start: ${e.message}${e.code ? ` (${e.code})` : ""}`);
    console.error(`npm start: logs are in ${relative(process.cwd(), `${ROOT}/.run/stack/logs`)}/`);
    process.exit(1);
  }
  if (stopping) return;
  const s = stack;
  if (replicas > 1) {
    try {
      balancer = await startL4Balancer({
        port: lbPort,
        targets: s.replicas.map((r) => ({ host: "127.0.0.1", port: r.ports.http })),
      });
    } catch (err) {
      console.error(`npm start: the balancer cannot listen on ${lbPort} (MCPA_LB_PORT): ${(err as Error).message}`);
      await shutdown("no balancer", 1);
      return;
    }
  }
  const parts = [...s.replicas.flatMap((r) => [r.traefik, r.sidecar]), ...s.nodes.map((n) => n.proc)].filter(
    (p) => p !== null,
  );
  for (const p of parts) {
    p.onUnexpectedExit = (code, signal) => {
      // Ctrl-C in a terminal reaches every process of the group: their exit is then expected.
      if (stopping || signals > 0) return;
      console.error(
        `npm start: ${p.name} exited unexpectedly (code ${code}, signal ${signal}); last log lines:\n${p.tail(10)}`,
      );
      void shutdown(`${p.name} died`, 1);
    };
  }
  const storeText =
    store === "memory"
      ? "in-memory store inside the sidecar"
      : redisUrl
        ? redisUrl
        : `${s.redisUrl} (redis-server started by the stack)`;
  let check: string;
  try {
    check = await selfCheck(balancer ? `${balancer.base}/mcp` : s.mcpUrl);
  } catch (err) {
    check = `FAILED: ${(err as Error).message}`;
  }
  printBanner(s, storeText, check, balancer);
}

main().catch((err) => {
  console.error(`npm start: ${(err as Error).message}`);
  process.exit(1);
});
