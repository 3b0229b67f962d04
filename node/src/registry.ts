// The node's registry: which store it opens (Redis directly, or the sidecar's sessions API), the
// connection settings it opens Redis with, and the bound on every registry call.
import { McpAffinityError } from "../../lib/errors.ts";
import {
  RedisRegistry,
  SidecarApiStore,
  type NodeStore,
  type RedisRegistryOptions,
  type SessionStore,
} from "../../lib/registry/index.ts";
import { checkedRedisConnection, hasRedis, type RedisSettings } from "../../lib/settings/redis.ts";
import { AffinityConfigError, checkRegistryOptions, type RegistryOptions } from "./options.ts";

export interface NodeRegistrySettings {
  sessionTtlMs: number;
  /** The heartbeat record's TTL. */
  nodeTtlMs: number;
  /** Upper bound of one registry call. */
  timeoutMs: number;
  /** How often the node checks that Redis kept its data (its heartbeat period); absent: at reconnections only. */
  lossCheckMs?: number;
  /** A failed connection attempt (op "connect") or registry call. */
  onError: (op: string, err: Error) => void;
}

/** The Redis registry exactly as a node opens it (a bad Redis setting: AffinityConfigError). */
export function nodeRedisOptions(redis: string | RedisSettings, s: NodeRegistrySettings): RedisRegistryOptions {
  return {
    ...checkedRedisConnection(
      typeof redis === "string" ? { redisUrl: redis } : redis,
      (_setting, message) => new AffinityConfigError(message),
      "registry.",
    ),
    sessionTtlMs: s.sessionTtlMs,
    nodeTtlMs: s.nodeTtlMs,
    // With the offline queue off (lib/registry/redis.ts) a live session never waits on a dead Redis.
    commandTimeoutMs: s.timeoutMs,
    connectTimeoutMs: Math.max(1000, s.timeoutMs),
    maxBackoffMs: 2000,
    lossCheckMs: s.lossCheckMs,
    onError: s.onError,
  };
}

/** The node's session store, and its heartbeat store where the registry keeps node records. */
export function openNodeRegistry(
  opts: RegistryOptions,
  s: NodeRegistrySettings,
): { sessions: SessionStore; nodes: NodeStore | null } {
  const checked = checkRegistryOptions(opts);
  // Redis settings beside sidecarUrl are refused by nodeRedisOptions (an unknown Redis setting).
  if (hasRedis(checked as RedisSettings)) {
    const redis = new RedisRegistry(nodeRedisOptions(checked as RedisSettings, s));
    return { sessions: redis, nodes: redis };
  }
  const api = checked as { sidecarUrl: string; token?: string };
  return {
    sessions: new SidecarApiStore({ url: api.sidecarUrl, token: api.token, timeoutMs: s.timeoutMs }),
    nodes: null,
  };
}

/** `p`, or ERR_AFFINITY_TIMEOUT once `ms` have passed: one registry call, bounded. */
export function withTimeout<T>(p: Promise<T>, ms: number, op: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new McpAffinityError("ERR_AFFINITY_TIMEOUT", `registry ${op} timed out after ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
