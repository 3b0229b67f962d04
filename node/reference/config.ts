// Flags and environment of the reference node (MCP_NODE_*), read by the one settings module
// (lib/settings). Flags win over environment variables.
import {
  LOG_LEVELS,
  SettingError,
  bool,
  helpText,
  int,
  oneOf,
  parseSettings,
  text,
  url,
  type LogLevel,
  type Schema,
  type SettingsSpec,
} from "../../lib/settings/index.ts";
import { REDIS_SETTINGS, hasRedis, redisRules, type RedisSettings } from "../../lib/settings/redis.ts";

export interface NodeConfig extends RedisSettings {
  port: number;
  host: string;
  name: string;
  nodeUrl: string;
  sidecarUrl?: string;
  sidecarToken?: string;
  drainGraceMs: number;
  heartbeatMs: number;
  sessionTtlMs?: number;
  /** Close sessions idle this long (default DEFAULT_IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number;
  failClose: boolean;
  logLevel: LogLevel;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;
const YEAR_MS = 365 * 24 * 3600 * 1000;

export class ConfigError extends SettingError {
  constructor(setting: string, message: string) {
    super("ERR_NODE_CONFIG", setting, message);
  }
}

export const NODE_SETTINGS: SettingsSpec<NodeConfig> = {
  port: { name: "port", type: int(0, 65535), help: "port to listen on (required; 0 = any free port)" },
  host: { name: "host", type: text(undefined, "addr"), def: "127.0.0.1", help: "address to bind" },
  name: {
    name: "name",
    type: text((v) => (/^[\x21-\x7e]{1,100}$/.test(v) ? undefined : "must be 1-100 visible ASCII characters"), "name"),
    help: "node name (default node-<port>)",
  },
  nodeUrl: {
    name: "node-url",
    env: "MCP_NODE_URL",
    type: url(["http:", "https:"]),
    help: "the node's URL exactly as in Traefik's service (default http://127.0.0.1:<port>)",
  },
  ...REDIS_SETTINGS,
  sidecarUrl: {
    name: "sidecar-url",
    type: url(["http:", "https:"]),
    help: "registry through the sidecar's sessions API (instead of Redis)",
  },
  sidecarToken: { name: "sidecar-token", type: text(), help: "bearer token for the sidecar", secret: true },
  drainGraceMs: {
    name: "drain-grace-ms",
    type: int(0, 3_600_000),
    def: 10_000,
    help: "serve existing sessions this long after SIGTERM",
  },
  heartbeatMs: { name: "heartbeat-ms", type: int(50, 600_000), def: 5000, help: "heartbeat period" },
  sessionTtlMs: { name: "session-ttl-ms", type: int(1000, YEAR_MS), help: "session record TTL (default 30 days)" },
  idleTimeoutMs: {
    name: "idle-timeout-ms",
    type: int(1000, YEAR_MS),
    // Sessions a client abandoned without DELETE hold memory until closed: half an hour of silence is enough.
    def: DEFAULT_IDLE_TIMEOUT_MS,
    help: "close sessions idle this long",
  },
  failClose: { name: "fail-close", type: bool, def: false, help: "make every local session close throw (tests)" },
  logLevel: { name: "log-level", type: oneOf(LOG_LEVELS), def: "info", help: "pino level" },
};

const REGISTRIES = "--redis-url, --redis-sentinels or --redis-cluster (MCP_NODE_REDIS_*), or --sidecar-url";

const SCHEMA: Schema<NodeConfig> = {
  specs: NODE_SETTINGS,
  envPrefix: "MCP_NODE_",
  error: (setting, message) => new ConfigError(setting, message),
  unset: undefined,
  rules: (c, ctx) => {
    if (c.port === undefined) ctx.fail("port", "--port (or MCP_NODE_PORT) is required");
    if (!c.nodeUrl && c.port === 0)
      ctx.fail("nodeUrl", "--node-url is required with --port 0 (the URL must name the real port)");
    c.name ??= `node-${c.port}`;
    c.nodeUrl ??= `http://127.0.0.1:${c.port}`;
    if (hasRedis(c) && c.sidecarUrl) {
      const mode = (["redisUrl", "redisSentinels", "redisCluster"] as const).find((k) => c[k]);
      ctx.fail(mode!, `${ctx.flag(mode!)} and --sidecar-url exclude each other: choose one registry`);
    }
    if (!hasRedis(c) && !c.sidecarUrl) ctx.fail("redisUrl", `a registry is required: ${REGISTRIES}`);
    redisRules(c, ctx);
  },
};

export const USAGE = helpText(SCHEMA, ["Usage: tsx node/reference/main.ts [options]", ""]);

/** Returns null when --help was asked for. */
export function parseNodeConfig(argv: string[], env: NodeJS.ProcessEnv): NodeConfig | null {
  return parseSettings(SCHEMA, argv, env);
}
