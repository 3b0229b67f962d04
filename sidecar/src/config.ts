// Sidecar settings: every one by flag (`--name value` or `--name=value`) and by environment
// variable (MCP_AFFINITY_NAME); flags win. Read by the one settings module (lib/settings): a bad
// setting is one ConfigError naming it.
import type { ShardBits, ViewFs } from "../../lib/view/index.ts";
import type { Logger } from "pino";
import {
  LOG_LEVELS,
  checkSettings,
  duration,
  helpText as settingsHelp,
  int,
  ipAddress,
  list,
  nonEmpty,
  oneOf,
  parseSettings,
  SettingError,
  text,
  url,
  type LogLevel,
  type Schema,
  type SettingsSpec,
} from "../../lib/settings/index.ts";
import { REDIS_SETTINGS, redisRules, type RedisSettings } from "../../lib/settings/redis.ts";

export type { LogLevel };

/** The Redis settings (lib/settings/redis.ts); null: not set. */
export type SidecarRedisConfig = { [K in keyof RedisSettings]-?: Exclude<RedisSettings[K], undefined> } & {
  redisTls: boolean;
};

export interface SidecarConfig extends SidecarRedisConfig {
  /** Shared directory (the plugin's viewDir on the host side). */
  dir: string;
  host: string;
  port: number;
  apiToken: string | null;
  sessionTtlMs: number;
  nodeTtlMs: number;
  downLimitMs: number;
  shardBits: ShardBits;
  retryAfterSeconds: number;
  metaIntervalMs: number;
  eventIntervalMs: number;
  reconcileIntervalMs: number;
  lossCheckIntervalMs: number;
  nodePollIntervalMs: number;
  traefikApi: string | null;
  traefikServices: string[];
  traefikPollIntervalMs: number;
  traefikMetrics: string | null;
  probePath: string;
  probeIntervalMs: number;
  probeTimeoutMs: number;
  probeFailures: number;
  tombstoneTtlMs: number;
  learnedMaxAgeMs: number;
  mcpPath: string;
  fastPathFile: string | null;
  fastPathEntryPoints: string[];
  fastPathMiddlewares: string[];
  fastPathPriority: number;
  fastPathMaxBodyBytes: number;
  edgeSessionTtlMs: number;
  edgeTouchIntervalMs: number;
  logLevel: LogLevel;
}

/** Programmatic-only extras (tests, the stack runner). */
export interface SidecarRuntimeOptions {
  /** A ready logger (otherwise pino to stdout at config.logLevel). */
  logger?: Logger;
  /** File operations seam for the shared directory (failure injection in tests). */
  fs?: ViewFs;
  /** Fixed epoch (otherwise random). */
  epoch?: number;
}

export class ConfigError extends SettingError {
  constructor(setting: string, message: string) {
    super("ERR_SIDECAR_CONFIG", setting, message);
  }
}

const path = text((v) => (v.startsWith("/") ? undefined : "must start with /"), "path");

export const SIDECAR_SETTINGS: SettingsSpec<SidecarConfig> = {
  dir: {
    name: "dir",
    type: text(nonEmpty, "dir"),
    def: "/var/run/mcp-affinity",
    help: "shared directory (the plugin's viewDir, host side)",
  },
  host: {
    name: "host",
    type: ipAddress,
    def: "127.0.0.1",
    help: "HTTP listen address (beyond loopback needs --api-token)",
  },
  port: {
    name: "port",
    type: int(0, 65535),
    def: 9464,
    help: "HTTP port (/metrics, /healthz, /readyz, /v1/sessions); 0 = any free port",
  },
  apiToken: {
    name: "api-token",
    type: text((v) => (v.length >= 16 ? undefined : "must be at least 16 characters"), "token"),
    help: "bearer token required by /v1/* (required when --host is not loopback)",
    secret: true,
  },
  ...REDIS_SETTINGS,
  sessionTtlMs: {
    name: "session-ttl",
    type: duration(1000),
    def: 30 * 86_400_000,
    help: "TTL of mcp:session:{id} records",
  },
  nodeTtlMs: {
    name: "node-ttl",
    type: duration(100, 3_600_000),
    def: 15_000,
    help: "a node whose heartbeat is older than this is down",
  },
  downLimitMs: {
    name: "down-limit",
    type: duration(100),
    def: 30_000,
    help: "a node that does not answer (down) longer than this is gone (edge answers 404 for its sessions); a refused connection or a new boot is gone at once",
  },
  shardBits: {
    name: "shard-bits",
    type: oneOf([4, 8, 12, 16] as const),
    def: 12,
    help: "view shard bits: 4, 8, 12 or 16 (12 = 4096 shard files)",
  },
  retryAfterSeconds: {
    name: "retry-after",
    type: int(0, 3600),
    def: 0,
    help: "Retry-After hint in the view for down nodes (0 = the plugin's own setting)",
  },
  metaIntervalMs: {
    name: "meta-interval",
    type: duration(50, 60_000),
    def: 1000,
    help: "how often the view's freshness stamp is rewritten",
  },
  eventIntervalMs: {
    name: "event-interval",
    type: duration(5, 60_000),
    def: 25,
    help: "how often events/ is drained",
  },
  reconcileIntervalMs: {
    name: "reconcile-interval",
    type: duration(1000),
    def: 300_000,
    help: "full resync with the registry (SCAN) every",
  },
  lossCheckIntervalMs: {
    name: "loss-check-interval",
    type: duration(100, 600_000),
    def: 2000,
    help: "how often Redis is checked for lost data (the marker key, every master's run_id); also at every reconnect",
  },
  nodePollIntervalMs: {
    name: "node-poll-interval",
    type: duration(50, 600_000),
    def: 2000,
    help: "how often known node records are re-read (besides pub/sub)",
  },
  traefikApi: {
    name: "traefik-api",
    type: url(["http:", "https:"]),
    help: "Traefik API base URL, to take node health from Traefik (nodes without the library)",
    secret: true,
  },
  traefikServices: {
    name: "traefik-services",
    type: list,
    def: [],
    help: "Traefik service names of the MCP servers, comma-separated (e.g. mcp@file)",
  },
  traefikPollIntervalMs: {
    name: "traefik-poll-interval",
    type: duration(50, 600_000),
    def: 2000,
    help: "how often the Traefik API is polled",
  },
  traefikMetrics: {
    name: "traefik-metrics",
    type: url(["http:", "https:"]),
    help: "Traefik's Prometheus endpoint, where the fast path's requests are counted (default: /metrics on --traefik-api)",
    secret: true,
  },
  probePath: {
    name: "probe-path",
    type: text((v) => (v === "off" || v.startsWith("/") ? undefined : `"${v}" must start with / (or be off)`), "path"),
    def: "/healthz",
    help: 'health path the sidecar probes on every node ("off" = no probing: liveness from heartbeats and Traefik\'s API)',
  },
  probeIntervalMs: {
    name: "probe-interval",
    type: duration(50, 60_000),
    def: 250,
    help: "how often each node is probed (a recovery is seen within one interval)",
  },
  probeTimeoutMs: {
    name: "probe-timeout",
    type: duration(50, 60_000),
    def: 1000,
    help: "a probe not answered within this has failed (see --probe-failures)",
  },
  probeFailures: {
    name: "probe-failures",
    type: int(1, 100),
    def: 2,
    help: "failed probes in a row (timeouts or unhealthy answers) before a node is down; a refused connection counts at once",
  },
  tombstoneTtlMs: {
    name: "tombstone-ttl",
    type: duration(0),
    def: 600_000,
    help: "how long a closed session stays in the view as closed (edge 404)",
  },
  edgeSessionTtlMs: {
    name: "edge-session-ttl",
    type: duration(60_000),
    def: 86_400_000,
    help: "TTL of records learned at the edge (servers without the node library), renewed while the session is active, never past --session-ttl after creation",
  },
  edgeTouchIntervalMs: {
    name: "edge-touch-interval",
    type: duration(100, 3_600_000),
    def: 60_000,
    help: "activity of edge-learned sessions is written to Redis at most this often (one command per active session)",
  },
  mcpPath: {
    name: "mcp-path",
    type: path,
    def: "/mcp",
    help: "MCP endpoint path on the nodes (to confirm with the owner a session the edge saw die)",
  },
  fastPathFile: {
    name: "fast-path-file",
    type: text(
      (v) => (/\.ya?ml$/.test(v) && v.startsWith("/") ? undefined : "must be an absolute path ending in .yml or .yaml"),
      "file",
    ),
    help: "write Traefik routers for the sessions of live node incarnations here (a file in the directory Traefik's file provider watches): Traefik routes them without the plugin; unset = off",
  },
  fastPathEntryPoints: {
    name: "fast-path-entry-points",
    type: list,
    def: ["web", "websecure"],
    help: "entry points of the fast-path routers, comma-separated (those of the plugin's router)",
  },
  fastPathMiddlewares: {
    name: "fast-path-middlewares",
    type: list,
    def: [],
    help: "middlewares every fast-path router runs, comma-separated (e.g. auth@file)",
  },
  fastPathPriority: {
    name: "fast-path-priority",
    type: int(2, 2_147_483_647),
    def: 1010,
    help: "priority of the fast-path routers (their POST routers: one more): above the plugin's routers",
  },
  fastPathMaxBodyBytes: {
    name: "fast-path-max-body-bytes",
    type: int(0, 16 * 1024 * 1024),
    // The plugin's maxBufferedBodyBytes default: a body either path would read is read on both.
    // Traefik allocates what a body holds, not this bound (docs/operations.md).
    def: 65536,
    help: "fast-path POST bodies declared up to this size are read into memory before they go on, so the proxy cannot cut their answers; larger ones and bodies without a Content-Length take the plugin's path (0 = fast-path bodies stream)",
  },
  learnedMaxAgeMs: {
    name: "learned-max-age",
    type: duration(1000),
    def: 600_000,
    help: "learned/ files older than this are deleted even when not in the view",
  },
  logLevel: {
    name: "log-level",
    type: oneOf(LOG_LEVELS),
    def: "info",
    help: LOG_LEVELS.join(", "),
  },
};

export const ENV_PREFIX = "MCP_AFFINITY_";

const isLoopback = (h: string) => h === "localhost" || h === "::1" || /^127\./.test(h);

const SCHEMA: Schema<SidecarConfig> = {
  specs: SIDECAR_SETTINGS,
  envPrefix: ENV_PREFIX,
  error: (setting, message) => new ConfigError(setting, message),
  rules: (c, ctx) => {
    redisRules(c, ctx);
    if (!isLoopback(c.host) && !c.apiToken)
      ctx.fail("apiToken", `--api-token is required when --host (${c.host}) is not a loopback address`);
    if (c.fastPathFile && !c.traefikApi && !c.traefikMetrics)
      ctx.fail(
        "traefikMetrics",
        "--fast-path-file needs --traefik-metrics (or --traefik-api): the requests the fast path routes are counted from Traefik's metrics",
      );
    if (c.traefikApi && !c.traefikServices.length)
      ctx.fail("traefikServices", "--traefik-api needs --traefik-services");
    if (c.downLimitMs < c.nodeTtlMs)
      ctx.fail("downLimitMs", `--down-limit (${c.downLimitMs} ms) must be at least --node-ttl (${c.nodeTtlMs} ms)`);
  },
};

/** Where Traefik's Prometheus metrics are read: --traefik-metrics, else /metrics on --traefik-api; null: neither. */
export function traefikMetricsUrl(c: Pick<SidecarConfig, "traefikApi" | "traefikMetrics">): string | null {
  if (c.traefikMetrics) return c.traefikMetrics;
  if (!c.traefikApi) return null;
  const u = new URL(c.traefikApi);
  u.pathname = `${u.pathname.replace(/\/+$/, "")}/metrics`;
  return u.toString();
}

export function helpText(): string {
  return settingsHelp(SCHEMA, [
    "mcp-affinity-sidecar: session registry, registry view and metrics beside a Traefik instance",
    "",
    "usage: mcp-affinity-sidecar [--setting value ...]",
    "",
    "Every setting is a flag or an environment variable; flags win. Durations: 250ms, 5s, 10m, 30d.",
    "No Redis setting: the in-memory registry.",
    "",
  ]);
}

/** Parses argv (without node and script) and the environment; null when --help is asked for. Throws ConfigError. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): SidecarConfig | null {
  return parseSettings(SCHEMA, argv, env);
}

/**
 * A full config for programmatic use: defaults plus overrides, each override checked by the type
 * and rules of its flag (a bad value is the ConfigError the CLI throws, naming the flag). A null
 * override means "not set".
 */
export function makeConfig(over: Partial<SidecarConfig> = {}): SidecarConfig {
  return checkSettings(SCHEMA, over);
}
