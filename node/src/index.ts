// Public entry of the node library: see docs/node-library.md.
export { Affinity, createAffinity } from "./affinity.ts";
export { AffinityConfigError } from "./options.ts";
export type { AffinityOptions, LoggerLike, RegistryOptions } from "./options.ts";
export { AffinityLifecycleError, AFFINITY_STATES, type AffinityState } from "./lifecycle.ts";
export type { CloseResult } from "./close.ts";
export type { ConnectableServer, TransportExtras } from "./affinity.ts";
export type { SessionCheck } from "./misses.ts";
export { nodeRedisOptions, openNodeRegistry, type NodeRegistrySettings } from "./registry.ts";
export {
  createMcpHandler,
  keepIdleConnectionsOpen,
  mountMcp,
  PROXY_IDLE_TIMEOUT_MS,
  writeSessionNotFound,
} from "./http.ts";
export { SESSION_NOT_FOUND_BODY } from "./routing.ts";
export type { AppLike, McpHandlerOptions, McpRequestHandler, Mounted, MountOptions, TransportOptions } from "./http.ts";
export { RegistryError } from "../../lib/registry/registry.ts";
export { McpAffinityError, ERROR_CODES, type ErrorCode } from "../../lib/errors.ts";
export { MISS_REASONS } from "./metrics.ts";
export type { AffinityStats, MissReason } from "./metrics.ts";
