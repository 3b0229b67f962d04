// Sidecar settings: every one by flag (`--name value` or `--name=value`) and by environment
// variable (MCP_AFFINITY_NAME); flags win. A bad setting is one ConfigError naming it.
import { isIP } from "node:net";
import type { HostPort } from "../../lib/registry/index.ts";
import type { ShardBits, ViewFs } from "../../lib/view/index.ts";
import type { Logger } from "pino";
import { McpAffinityError } from "../../lib/errors.ts";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

export interface SidecarConfig {
  /** Shared directory (the plugin's viewDir on the host side). */
  dir: string;
  host: string;
  port: number;
  apiToken: string | null;
  redisUrl: string | null;
  redisSentinels: HostPort[] | null;
  redisSentinelName: string | null;
  redisCluster: HostPort[] | null;
  redisPassword: string | null;
  sessionTtlMs: number;
  nodeTtlMs: number;
  downLimitMs: number;
  shardBits: ShardBits;
  retryAfterSeconds: number;
  metaIntervalMs: number;
  eventIntervalMs: number;
  reconcileIntervalMs: number;
  nodePollIntervalMs: number;
  traefikApi: string | null;
  traefikServices: string[];
  traefikPollIntervalMs: number;
  probePath: string;
  probeIntervalMs: number;
  probeTimeoutMs: number;
  probeFailures: number;
  tombstoneTtlMs: number;
  learnedMaxAgeMs: number;
  mcpPath: string;
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

export class ConfigError extends McpAffinityError {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super("ERR_SIDECAR_CONFIG", message);
  }
}

interface Spec {
  key: keyof SidecarConfig;
  flag: string;
  env: string;
  help: string;
  def: string | null;
  parse: (v: string, name: string) => unknown;
  secret?: boolean;
}

const fail = (name: string, why: string): never => {
  throw new ConfigError(name, `invalid ${name}: ${why}`);
};

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export function parseDuration(v: string, name: string, min = 1, max = 400 * 86_400_000): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) fail(name, `"${v}" is not a duration (e.g. 250ms, 5s, 10m, 30d; a bare number is ms)`);
  const ms = Math.round(Number(m![1]) * UNITS[m![2] ?? "ms"]);
  if (ms < min || ms > max) fail(name, `${v} is out of range (${min} ms .. ${max} ms)`);
  return ms;
}

function int(min: number, max: number) {
  return (v: string, name: string) => {
    if (!/^\d+$/.test(v.trim())) fail(name, `"${v}" is not a whole number`);
    const n = Number(v);
    if (n < min || n > max) fail(name, `${n} is out of range (${min}..${max})`);
    return n;
  };
}

const duration = (min: number, max?: number) => (v: string, name: string) => parseDuration(v, name, min, max);

function hostPorts(v: string, name: string): HostPort[] {
  const out = v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(s);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) fail(name, `"${s}" is not host:port`);
      return { host: m![1].replace(/^\[|\]$/g, ""), port: Number(m![2]) };
    });
  if (!out.length) fail(name, "needs at least one host:port");
  return out;
}

function url(protocols: string[]) {
  return (v: string, name: string) => {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return fail(name, `"${v.replace(/\/\/[^@/]*@/, "//***@")}" is not a URL`);
    }
    if (!protocols.includes(u.protocol)) fail(name, `protocol must be ${protocols.join(" or ")}`);
    return v;
  };
}

const SPECS: Spec[] = [
  {
    key: "dir",
    flag: "dir",
    env: "DIR",
    def: "/var/run/mcp-affinity",
    help: "shared directory (the plugin's viewDir, host side)",
    parse: (v, n) => (v ? v : fail(n, "is empty")),
  },
  {
    key: "host",
    flag: "host",
    env: "HOST",
    def: "127.0.0.1",
    help: "HTTP listen address (beyond loopback needs --api-token)",
    parse: (v, n) => (v && (isIP(v) || v === "localhost") ? v : fail(n, `"${v}" is not an IP address`)),
  },
  {
    key: "port",
    flag: "port",
    env: "PORT",
    def: "9464",
    help: "HTTP port (/metrics, /healthz, /readyz, /v1/sessions); 0 = any free port",
    parse: int(0, 65535),
  },
  {
    key: "apiToken",
    flag: "api-token",
    env: "API_TOKEN",
    def: null,
    help: "bearer token required by /v1/* (required when --host is not loopback)",
    parse: (v, n) => (v.length >= 16 ? v : fail(n, "must be at least 16 characters")),
    secret: true,
  },
  {
    key: "redisUrl",
    flag: "redis-url",
    env: "REDIS_URL",
    def: null,
    help: "Redis server URL (redis:// or rediss://); none of the redis settings = in-memory registry",
    parse: url(["redis:", "rediss:"]),
    secret: true,
  },
  {
    key: "redisSentinels",
    flag: "redis-sentinels",
    env: "REDIS_SENTINELS",
    def: null,
    help: "Sentinel addresses host:port,host:port (with --redis-sentinel-name)",
    parse: hostPorts,
  },
  {
    key: "redisSentinelName",
    flag: "redis-sentinel-name",
    env: "REDIS_SENTINEL_NAME",
    def: null,
    help: "name of the master the Sentinels monitor",
    parse: (v, n) => (v ? v : fail(n, "is empty")),
  },
  {
    key: "redisCluster",
    flag: "redis-cluster",
    env: "REDIS_CLUSTER",
    def: null,
    help: "Redis Cluster seed nodes host:port,host:port",
    parse: hostPorts,
  },
  {
    key: "redisPassword",
    flag: "redis-password",
    env: "REDIS_PASSWORD",
    def: null,
    help: "Redis password for Sentinel/Cluster modes (for a single server put it in the URL)",
    parse: (v) => v,
    secret: true,
  },
  {
    key: "sessionTtlMs",
    flag: "session-ttl",
    env: "SESSION_TTL",
    def: "30d",
    help: "TTL of mcp:session:{id} records",
    parse: duration(1000),
  },
  {
    key: "nodeTtlMs",
    flag: "node-ttl",
    env: "NODE_TTL",
    def: "15s",
    help: "a node whose heartbeat is older than this is down",
    parse: duration(100, 3_600_000),
  },
  {
    key: "downLimitMs",
    flag: "down-limit",
    env: "DOWN_LIMIT",
    def: "30s",
    help: "a node that does not answer (down) longer than this is gone (edge answers 404 for its sessions); a refused connection or a new boot is gone at once",
    parse: duration(100),
  },
  {
    key: "shardBits",
    flag: "shard-bits",
    env: "SHARD_BITS",
    def: "12",
    help: "view shard bits: 4, 8, 12 or 16 (12 = 4096 shard files)",
    parse: (v, n) =>
      ["4", "8", "12", "16"].includes(v.trim()) ? Number(v) : fail(n, `must be 4, 8, 12 or 16, not "${v}"`),
  },
  {
    key: "retryAfterSeconds",
    flag: "retry-after",
    env: "RETRY_AFTER",
    def: "0",
    help: "Retry-After hint in the view for down nodes (0 = the plugin's own setting)",
    parse: int(0, 3600),
  },
  {
    key: "metaIntervalMs",
    flag: "meta-interval",
    env: "META_INTERVAL",
    def: "1s",
    help: "how often the view's freshness stamp is rewritten",
    parse: duration(50, 60_000),
  },
  {
    key: "eventIntervalMs",
    flag: "event-interval",
    env: "EVENT_INTERVAL",
    def: "25ms",
    help: "how often events/ is drained",
    parse: duration(5, 60_000),
  },
  {
    key: "reconcileIntervalMs",
    flag: "reconcile-interval",
    env: "RECONCILE_INTERVAL",
    def: "5m",
    help: "full resync with the registry (SCAN) every",
    parse: duration(1000),
  },
  {
    key: "nodePollIntervalMs",
    flag: "node-poll-interval",
    env: "NODE_POLL_INTERVAL",
    def: "2s",
    help: "how often known node records are re-read (besides pub/sub)",
    parse: duration(50, 600_000),
  },
  {
    key: "traefikApi",
    flag: "traefik-api",
    env: "TRAEFIK_API",
    def: null,
    help: "Traefik API base URL, to take node health from Traefik (nodes without the library)",
    parse: url(["http:", "https:"]),
  },
  {
    key: "traefikServices",
    flag: "traefik-services",
    env: "TRAEFIK_SERVICES",
    def: "",
    help: "Traefik service names of the MCP servers, comma-separated (e.g. mcp@file)",
    parse: (v) =>
      v
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean),
  },
  {
    key: "traefikPollIntervalMs",
    flag: "traefik-poll-interval",
    env: "TRAEFIK_POLL_INTERVAL",
    def: "2s",
    help: "how often the Traefik API is polled",
    parse: duration(50, 600_000),
  },
  {
    key: "probePath",
    flag: "probe-path",
    env: "PROBE_PATH",
    def: "/healthz",
    help: 'health path the sidecar probes on every node ("off" = no probing: liveness from heartbeats and Traefik\'s API)',
    parse: (v, n) => (v === "off" || v.startsWith("/") ? v : fail(n, `"${v}" must start with / (or be off)`)),
  },
  {
    key: "probeIntervalMs",
    flag: "probe-interval",
    env: "PROBE_INTERVAL",
    def: "250ms",
    help: "how often each node is probed (a recovery is seen within one interval)",
    parse: duration(50, 60_000),
  },
  {
    key: "probeTimeoutMs",
    flag: "probe-timeout",
    env: "PROBE_TIMEOUT",
    def: "1s",
    help: "a probe not answered within this has failed (see --probe-failures)",
    parse: duration(50, 60_000),
  },
  {
    key: "probeFailures",
    flag: "probe-failures",
    env: "PROBE_FAILURES",
    def: "2",
    help: "failed probes in a row (timeouts or unhealthy answers) before a node is down; a refused connection counts at once",
    parse: int(1, 100),
  },
  {
    key: "tombstoneTtlMs",
    flag: "tombstone-ttl",
    env: "TOMBSTONE_TTL",
    def: "10m",
    help: "how long a closed session stays in the view as closed (edge 404)",
    parse: duration(0),
  },
  {
    key: "edgeSessionTtlMs",
    flag: "edge-session-ttl",
    env: "EDGE_SESSION_TTL",
    def: "1d",
    help: "TTL of records learned at the edge (servers without the node library), renewed while the session is active, never past --session-ttl after creation",
    parse: duration(60_000),
  },
  {
    key: "edgeTouchIntervalMs",
    flag: "edge-touch-interval",
    env: "EDGE_TOUCH_INTERVAL",
    def: "1m",
    help: "activity of edge-learned sessions is written to Redis at most this often (one command per active session)",
    parse: duration(100, 3_600_000),
  },
  {
    key: "mcpPath",
    flag: "mcp-path",
    env: "MCP_PATH",
    def: "/mcp",
    help: "MCP endpoint path on the nodes (to confirm with the owner a session the edge saw die)",
    parse: (v, n) => (v.startsWith("/") ? v : fail(n, "must start with /")),
  },
  {
    key: "learnedMaxAgeMs",
    flag: "learned-max-age",
    env: "LEARNED_MAX_AGE",
    def: "10m",
    help: "learned/ files older than this are deleted even when not in the view",
    parse: duration(1000),
  },
  {
    key: "logLevel",
    flag: "log-level",
    env: "LOG_LEVEL",
    def: "info",
    help: "trace, debug, info, warn, error, fatal or silent",
    parse: (v, n) =>
      ["trace", "debug", "info", "warn", "error", "fatal", "silent"].includes(v) ? v : fail(n, `unknown level "${v}"`),
  },
];

export const ENV_PREFIX = "MCP_AFFINITY_";

export function helpText(): string {
  const rows = SPECS.map((s) => {
    const d = s.def === null || s.def === "" ? "" : ` (default ${s.def})`;
    return `  --${s.flag.padEnd(22)} ${ENV_PREFIX}${s.env}\n      ${s.help}${d}`;
  });
  return [
    "mcp-affinity-sidecar: session registry, registry view and metrics beside a Traefik instance",
    "",
    "usage: mcp-affinity-sidecar [--setting value ...]",
    "",
    "Every setting is a flag or an environment variable; flags win. Durations: 250ms, 5s, 10m, 30d.",
    "",
    ...rows,
    "  --help                   this text",
    "",
  ].join("\n");
}

const isLoopback = (h: string) => h === "localhost" || h === "::1" || /^127\./.test(h);

/** A setting as given: its text and the name to report it under (a flag or an environment variable). */
interface Given {
  value: string;
  name: string;
}

/** Parses argv (without node and script) and the environment; throws ConfigError. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): SidecarConfig {
  const given = new Map<string, Given>();
  for (const s of SPECS) {
    const v = env[ENV_PREFIX + s.env];
    if (v !== undefined && v !== "") given.set(s.flag, { value: v, name: `${ENV_PREFIX}${s.env}` });
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(a);
    if (!m) throw new ConfigError(a, `unexpected argument "${a}" (settings are --name value; see --help)`);
    const spec = SPECS.find((s) => s.flag === m[1]);
    if (!spec) throw new ConfigError(`--${m[1]}`, `unknown setting --${m[1]} (see --help)`);
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= argv.length || argv[i + 1].startsWith("--"))
        throw new ConfigError(`--${m[1]}`, `--${m[1]} needs a value`);
      value = argv[++i];
    }
    given.set(spec.flag, { value, name: `--${spec.flag}` });
  }
  return resolve(given);
}

/** The one validation path: every setting through its spec, then the rules between settings. */
function resolve(given: Map<string, Given>): SidecarConfig {
  const cfg: Record<string, unknown> = {};
  for (const s of SPECS) {
    const g = given.get(s.flag);
    if (g) cfg[s.key] = s.parse(g.value, g.name);
    else cfg[s.key] = s.def === null ? null : s.parse(s.def, `--${s.flag}`);
  }
  const c = cfg as unknown as SidecarConfig;
  const modes = [
    c.redisUrl && "--redis-url",
    c.redisSentinels && "--redis-sentinels",
    c.redisCluster && "--redis-cluster",
  ].filter(Boolean);
  if (modes.length > 1)
    throw new ConfigError(String(modes[1]), `${modes.join(" and ")} exclude each other: choose one Redis mode`);
  if (c.redisSentinels && !c.redisSentinelName)
    throw new ConfigError("--redis-sentinel-name", "--redis-sentinels needs --redis-sentinel-name");
  if (!isLoopback(c.host) && !c.apiToken) {
    throw new ConfigError("--api-token", `--api-token is required when --host (${c.host}) is not a loopback address`);
  }
  if (c.traefikApi && !c.traefikServices.length)
    throw new ConfigError("--traefik-services", "--traefik-api needs --traefik-services");
  if (c.downLimitMs < c.nodeTtlMs)
    throw new ConfigError(
      "--down-limit",
      `--down-limit (${c.downLimitMs} ms) must be at least --node-ttl (${c.nodeTtlMs} ms)`,
    );
  return c;
}

/** A typed value as the text the CLI would take (durations in ms, lists comma-separated). */
function asText(value: unknown): string {
  if (Array.isArray(value))
    return value
      .map((v) =>
        typeof v === "object" && v ? `${v.host.includes(":") ? `[${v.host}]` : v.host}:${v.port}` : String(v),
      )
      .join(",");
  return String(value);
}

/**
 * A full config for programmatic use: defaults plus overrides, each override given to the same
 * parser as its flag (a bad value is the ConfigError the CLI throws, naming the flag). A null
 * override means "not set".
 */
export function makeConfig(over: Partial<SidecarConfig> = {}): SidecarConfig {
  const given = new Map<string, Given>();
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined || value === null) continue;
    const spec = SPECS.find((s) => s.key === key);
    if (!spec) throw new ConfigError(key, `unknown setting ${key}`);
    given.set(spec.flag, { value: asText(value), name: `--${spec.flag}` });
  }
  return resolve(given);
}
