// The session registry: contract, stores and the factory that picks one from configuration.
import { MemoryRegistry, type MemoryRegistryOptions } from "./memory.ts";
import { RedisRegistry, type RedisRegistryOptions } from "./redis.ts";
import type { Registry } from "./registry.ts";

export * from "./schema.ts";
export * from "./session-hash.ts";
export * from "./node-name.ts";
export * from "./registry.ts";
export { MemoryRegistry, type MemoryRegistryOptions } from "./memory.ts";
export { SidecarApiStore, type SidecarApiOptions } from "./sidecar-api.ts";
export {
  RedisRegistry,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_MAX_BACKOFF_MS,
  describeRedis,
  type RedisRegistryOptions,
  type RedisConnectionConfig,
  type RedisSentinel,
  type HostPort,
} from "./redis.ts";

/** Redis when a url, a sentinel or cluster nodes are configured; the in-memory store otherwise. */
export function createRegistry(opts: RedisRegistryOptions & MemoryRegistryOptions): Registry {
  if (opts.url || opts.sentinel?.nodes.length || opts.cluster?.length) return new RedisRegistry(opts);
  return new MemoryRegistry(opts);
}
