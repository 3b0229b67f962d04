// What the parts of the node share: its settings and identity, the log, the counters, the registry
// stores and the one way to call them.
import type { NodeStore, SessionStore } from "../../lib/registry/index.ts";
import type { AffinityMetrics } from "./metrics.ts";
import type { AffinitySettings, LoggerLike } from "./options.ts";

export interface NodeContext {
  readonly settings: AffinitySettings;
  /** Random per process: tells this process's records from a previous boot's on the same URL. */
  readonly bootId: string;
  readonly log: LoggerLike;
  readonly metrics: AffinityMetrics;
  /** The session records: Redis, or the sidecar's sessions API. */
  readonly store: SessionStore;
  /** Heartbeats: the same Redis registry, or null with the sessions API (it keeps no node records). */
  readonly nodes: NodeStore | null;
  /** One registry call, bounded by registryTimeoutMs (ERR_AFFINITY_TIMEOUT). */
  call<T>(p: Promise<T>, op: string): Promise<T>;
}
