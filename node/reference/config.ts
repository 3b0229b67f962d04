// Flags and environment of the reference node. Flags win over environment variables.
import { parseArgs } from "node:util";
import { McpAffinityError } from "../../lib/errors.ts";

export interface NodeConfig {
  port: number;
  host: string;
  name: string;
  nodeUrl: string;
  redisUrl?: string;
  sidecarUrl?: string;
  sidecarToken?: string;
  drainGraceMs: number;
  heartbeatMs: number;
  sessionTtlMs?: number;
  /** Close sessions idle this long (default DEFAULT_IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number;
  failClose: boolean;
  logLevel: string;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;

export class ConfigError extends McpAffinityError {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super("ERR_NODE_CONFIG", message);
  }
}

export const USAGE = `Usage: tsx node/reference/main.ts [options]

  --port <n>            MCP_NODE_PORT            port to listen on (required, 1-65535; 0 = any free port)
  --host <addr>         MCP_NODE_HOST            address to bind (default 127.0.0.1)
  --name <name>         MCP_NODE_NAME            node name (default node-<port>)
  --node-url <url>      MCP_NODE_URL             URL as in Traefik's service (default http://127.0.0.1:<port>)
  --redis-url <url>     MCP_NODE_REDIS_URL       registry in Redis (redis:// or rediss://)
  --sidecar-url <url>   MCP_NODE_SIDECAR_URL     registry through the sidecar's sessions API
  --sidecar-token <t>   MCP_NODE_SIDECAR_TOKEN   bearer token for the sidecar
  --drain-grace-ms <n>  MCP_NODE_DRAIN_GRACE_MS  serve existing sessions this long after SIGTERM (default 10000)
  --heartbeat-ms <n>    MCP_NODE_HEARTBEAT_MS    heartbeat period (default 5000)
  --session-ttl-ms <n>  MCP_NODE_SESSION_TTL_MS  session record TTL (default 30 days)
  --idle-timeout-ms <n> MCP_NODE_IDLE_TIMEOUT_MS close sessions idle this long (default 1800000: 30 minutes)
  --fail-close          MCP_NODE_FAIL_CLOSE=1    make every local session close throw (tests)
  --log-level <level>   MCP_NODE_LOG_LEVEL       pino level (default info)
  --help
`;

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function int(setting: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(setting, `${setting} must be a whole number, got "${raw}"`);
  const n = Number(raw.trim());
  if (n < min || n > max) throw new ConfigError(setting, `${setting} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function url(setting: string, raw: string, protocols: string[]): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(setting, `${setting} is not a valid URL: "${raw}"`);
  }
  if (!protocols.includes(u.protocol)) {
    throw new ConfigError(
      setting,
      `${setting} must use ${protocols.map((p) => p.replace(":", "")).join(" or ")}, got "${raw}"`,
    );
  }
  return raw;
}

/** Returns null when --help was asked for. */
export function parseNodeConfig(argv: string[], env: NodeJS.ProcessEnv): NodeConfig | null {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        host: { type: "string" },
        name: { type: "string" },
        "node-url": { type: "string" },
        "redis-url": { type: "string" },
        "sidecar-url": { type: "string" },
        "sidecar-token": { type: "string" },
        "drain-grace-ms": { type: "string" },
        "heartbeat-ms": { type: "string" },
        "session-ttl-ms": { type: "string" },
        "idle-timeout-ms": { type: "string" },
        "fail-close": { type: "boolean" },
        "log-level": { type: "string" },
        help: { type: "boolean" },
      },
    }));
  } catch (err) {
    const m = /'(--?[\w-]+)/.exec((err as Error).message);
    throw new ConfigError(m?.[1] ?? "arguments", (err as Error).message.split("\n")[0]!);
  }
  if (values.help) return null;
  const pick = (flag: string, envName: string): { setting: string; raw: string } | undefined => {
    const v = values[flag];
    if (typeof v === "string") return { setting: `--${flag}`, raw: v };
    const e = env[envName];
    if (e !== undefined && e !== "") return { setting: envName, raw: e };
    return undefined;
  };

  const portS = pick("port", "MCP_NODE_PORT");
  if (!portS) throw new ConfigError("--port", "--port (or MCP_NODE_PORT) is required");
  const port = int(portS.setting, portS.raw, 0, 65535);
  const host = pick("host", "MCP_NODE_HOST")?.raw ?? "127.0.0.1";
  const nameS = pick("name", "MCP_NODE_NAME");
  if (nameS && !/^[\x21-\x7e]{1,100}$/.test(nameS.raw))
    throw new ConfigError(nameS.setting, `${nameS.setting} must be 1-100 visible ASCII characters`);
  const urlS = pick("node-url", "MCP_NODE_URL");
  if (urlS) url(urlS.setting, urlS.raw, ["http:", "https:"]);
  if (!urlS && port === 0)
    throw new ConfigError("--node-url", "--node-url is required with --port 0 (the URL must name the real port)");
  const redisS = pick("redis-url", "MCP_NODE_REDIS_URL");
  const sidecarS = pick("sidecar-url", "MCP_NODE_SIDECAR_URL");
  if (redisS && sidecarS)
    throw new ConfigError(
      redisS.setting,
      `${redisS.setting} and ${sidecarS.setting} exclude each other: choose one registry`,
    );
  if (!redisS && !sidecarS)
    throw new ConfigError(
      "--redis-url",
      "a registry is required: --redis-url (MCP_NODE_REDIS_URL) or --sidecar-url (MCP_NODE_SIDECAR_URL)",
    );
  if (redisS) url(redisS.setting, redisS.raw, ["redis:", "rediss:"]);
  if (sidecarS) url(sidecarS.setting, sidecarS.raw, ["http:", "https:"]);
  const graceS = pick("drain-grace-ms", "MCP_NODE_DRAIN_GRACE_MS");
  const hbS = pick("heartbeat-ms", "MCP_NODE_HEARTBEAT_MS");
  const ttlS = pick("session-ttl-ms", "MCP_NODE_SESSION_TTL_MS");
  const idleS = pick("idle-timeout-ms", "MCP_NODE_IDLE_TIMEOUT_MS");
  const levelS = pick("log-level", "MCP_NODE_LOG_LEVEL");
  if (levelS && !LEVELS.includes(levelS.raw))
    throw new ConfigError(levelS.setting, `${levelS.setting} must be one of ${LEVELS.join(", ")}`);
  const failEnv = env.MCP_NODE_FAIL_CLOSE;
  if (failEnv !== undefined && !["", "0", "1", "true", "false"].includes(failEnv)) {
    throw new ConfigError("MCP_NODE_FAIL_CLOSE", "MCP_NODE_FAIL_CLOSE must be 1, true, 0 or false");
  }
  return {
    port,
    host,
    name: nameS?.raw ?? `node-${port}`,
    nodeUrl: urlS?.raw ?? `http://127.0.0.1:${port}`,
    redisUrl: redisS?.raw,
    sidecarUrl: sidecarS?.raw,
    sidecarToken: pick("sidecar-token", "MCP_NODE_SIDECAR_TOKEN")?.raw,
    drainGraceMs: graceS ? int(graceS.setting, graceS.raw, 0, 3_600_000) : 10_000,
    heartbeatMs: hbS ? int(hbS.setting, hbS.raw, 50, 600_000) : 5000,
    sessionTtlMs: ttlS ? int(ttlS.setting, ttlS.raw, 1000, 365 * 24 * 3600 * 1000) : undefined,
    // Sessions a client abandoned without DELETE hold memory until closed: half an hour of silence is enough.
    idleTimeoutMs: idleS ? int(idleS.setting, idleS.raw, 1000, 365 * 24 * 3600 * 1000) : DEFAULT_IDLE_TIMEOUT_MS,
    failClose: values["fail-close"] === true || failEnv === "1" || failEnv === "true",
    logLevel: levelS?.raw ?? "info",
  };
}
