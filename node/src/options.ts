// The node library's options: every check and every default of createAffinity in one place. A bad
// value throws AffinityConfigError (ERR_AFFINITY_CONFIG) naming the option, before anything starts.
import { pino } from "pino";
import type { Registry as PromRegistry } from "prom-client";
import { McpAffinityError } from "../../lib/errors.ts";
import { DEFAULT_SESSION_TTL_MS, cookieValueFor, nodeName } from "../../lib/registry/index.ts";
import { hasRedis, type RedisSettings } from "../../lib/settings/redis.ts";

/** The subset of pino's logger the library uses; any pino-compatible logger fits. */
export interface LoggerLike {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child?(bindings: object): LoggerLike;
}

/** Where the node's registry lives: Redis directly, or the sidecar's sessions API. */
/**
 * Where the node's registry lives: Redis directly (one server, Sentinel or Cluster; TLS, ACL user:
 * the Redis settings of lib/settings/redis.ts, checked there), or the sidecar's sessions API.
 */
export type RegistryOptions = RedisSettings | { sidecarUrl: string; token?: string };

export interface AffinityOptions {
  /** The node's server URL exactly as written in Traefik's service: the sticky cookie derives from it. */
  nodeUrl: string;
  /** Human name for logs, whoami and the heartbeat record (default: nodeUrl, as the sidecar calls a node without a name). */
  nodeName?: string;
  registry: RegistryOptions;
  /** Session record TTL (default 30 days, ADR-0066). */
  sessionTtlMs?: number;
  /** Heartbeat period; the node record lives 3x this long (default 5000). */
  heartbeatMs?: number;
  /** How long drain() keeps serving existing sessions (default 30000). */
  drainGraceMs?: number;
  /** Minimum time between TTL refreshes of one session (default sessionTtlMs / 30). */
  refreshIntervalMs?: number;
  /** Local sessions with no request for this long are closed (default sessionTtlMs: they expire in Redis too). */
  idleTimeoutMs?: number;
  /** Upper bound for one registry call (default 1000). */
  registryTimeoutMs?: number;
  logger?: LoggerLike;
  /** A prom-client Registry to export the library's metrics into (names prefixed mcp_affinity_node_). */
  metrics?: PromRegistry;
  /**
   * Session ids. Default: ids with a routing token (lib/token) that every Traefik replica routes
   * without waiting for the registry; a custom generator gives that up (the edge wraps such ids).
   */
  sessionIdGenerator?: () => string;
  /** Application clean-up run during every local close; a throw is logged and counted, Redis is cleaned anyway. */
  onSessionClosed?: (sessionId: string) => void | Promise<void>;
}

export class AffinityConfigError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_AFFINITY_CONFIG", message);
  }
}

/** The fixed defaults (ms); refreshIntervalMs and idleTimeoutMs default from sessionTtlMs. */
export const DEFAULTS = {
  sessionTtlMs: DEFAULT_SESSION_TTL_MS,
  heartbeatMs: 5000,
  drainGraceMs: 30_000,
  registryTimeoutMs: 1000,
  /** refreshIntervalMs = sessionTtlMs / refreshesPerTtl (at least 1 ms). */
  refreshesPerTtl: 30,
} as const;

/** Every option checked, every default filled in: what the node runs with. */
export interface AffinitySettings {
  nodeUrl: string;
  nodeName: string;
  /** The sticky cookie value of nodeUrl. */
  cookie: string;
  sessionTtlMs: number;
  heartbeatMs: number;
  /** 0: drain() ends at once. */
  drainGraceMs: number;
  refreshIntervalMs: number;
  idleTimeoutMs: number;
  registryTimeoutMs: number;
  registry: RegistryOptions;
  logger: LoggerLike;
  metrics?: PromRegistry;
  /** The application's generator, or undefined for routing-token ids. */
  sessionIdGenerator?: () => string;
  onSessionClosed?: (sessionId: string) => void | Promise<void>;
}

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v <= 0) throw new AffinityConfigError(`${name} must be a positive number of milliseconds`);
  return v;
}

const REGISTRY_NEEDED = "registry needs redisUrl, redisSentinels, redisCluster or sidecarUrl";

/**
 * The registry option: a Redis mode (its settings are checked by nodeRedisOptions, with the rules of
 * lib/settings/redis.ts) or the sidecar's sessions API with a non-empty URL.
 */
export function checkRegistryOptions(opts: unknown): RegistryOptions {
  if (!opts || typeof opts !== "object") throw new AffinityConfigError(REGISTRY_NEEDED);
  if (hasRedis(opts as RedisSettings)) return opts as RedisSettings;
  const o = opts as { sidecarUrl?: unknown };
  if (typeof o.sidecarUrl === "string" && o.sidecarUrl) return opts as RegistryOptions;
  throw new AffinityConfigError(REGISTRY_NEEDED);
}

/** Checks createAffinity's options (nodeUrl, the durations, registry: the first bad one throws) and fills in the defaults. */
export function resolveOptions(opts: AffinityOptions): AffinitySettings {
  if (!opts || typeof opts.nodeUrl !== "string" || !/^https?:\/\/[^\s]+$/.test(opts.nodeUrl)) {
    throw new AffinityConfigError("nodeUrl must be the node's http(s) URL exactly as in Traefik's service");
  }
  const sessionTtlMs = positive("sessionTtlMs", opts.sessionTtlMs, DEFAULTS.sessionTtlMs);
  const heartbeatMs = positive("heartbeatMs", opts.heartbeatMs, DEFAULTS.heartbeatMs);
  const drainGraceMs = opts.drainGraceMs === 0 ? 0 : positive("drainGraceMs", opts.drainGraceMs, DEFAULTS.drainGraceMs);
  const refreshIntervalMs = positive(
    "refreshIntervalMs",
    opts.refreshIntervalMs,
    Math.max(1, Math.floor(sessionTtlMs / DEFAULTS.refreshesPerTtl)),
  );
  const idleTimeoutMs = positive("idleTimeoutMs", opts.idleTimeoutMs, sessionTtlMs);
  const registryTimeoutMs = positive("registryTimeoutMs", opts.registryTimeoutMs, DEFAULTS.registryTimeoutMs);
  const registry = checkRegistryOptions(opts.registry);
  const cookie = cookieValueFor(opts.nodeUrl);
  return {
    nodeUrl: opts.nodeUrl,
    nodeName: nodeName({ name: opts.nodeName ?? "", url: opts.nodeUrl, cookie }),
    cookie,
    sessionTtlMs,
    heartbeatMs,
    drainGraceMs,
    refreshIntervalMs,
    idleTimeoutMs,
    registryTimeoutMs,
    registry,
    logger: opts.logger ?? (pino({ base: { component: "mcp-affinity-node" } }) as unknown as LoggerLike),
    metrics: opts.metrics,
    sessionIdGenerator: opts.sessionIdGenerator,
    onSessionClosed: opts.onSessionClosed,
  };
}
