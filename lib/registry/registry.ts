// The registry contract: one interface, two stores (MemoryRegistry, RedisRegistry), and the parts of
// it a node uses (SessionStore, NodeStore; the sidecar's sessions API serves the first). Every write
// announces a RegistryChange to every subscriber (in Redis: PUBLISH on CHANGE_CHANNEL, in the same
// script as the write, so a subscriber never misses a write it could have seen).
import { McpAffinityError, type ErrorCode } from "../errors.ts";
import type { NodeRecord, RegistryChange, SessionRecord } from "./schema.ts";

export type RegistryStatus = "connecting" | "ready" | "down" | "closed";

/**
 * Why a store says it may have lost records: its marker is gone or was replaced (restarted empty,
 * flushed), or a master it writes to is another server or process than before (a failover or a
 * restart: the writes it had not replicated are lost).
 */
export type RegistryLoss = "marker" | "master";
export type LossListener = (reason: RegistryLoss) => void;

export interface RegisterOptions {
  /** Write only when no record exists (edge-learned sessions never overwrite a node's record). */
  ifAbsent?: boolean;
  /** Overrides the registry's session TTL for this record. */
  ttlMs?: number;
}

export interface ScanOptions {
  /** Keys per SCAN round trip. */
  batch?: number;
  /** Called for a key whose value is not a valid record (skipped). */
  onInvalid?: (key: string, err: Error) => void;
}

export type ChangeListener = (change: RegistryChange) => void;

/**
 * What a node needs for its own sessions; every store has it, also the sidecar's sessions API
 * (lib/registry/sidecar-api.ts), which a node may use instead of Redis.
 */
export interface SessionStore {
  readonly kind: "memory" | "redis" | "sidecar-api";
  /** Writes `mcp:session:{id}` with the session TTL and announces it. */
  registerSession(id: string, record: SessionRecord): Promise<boolean>;
  lookupSession(id: string): Promise<SessionRecord | null>;
  /** Deletes the record (whoever owns it); returns whether one existed. Always announced. */
  closeSession(id: string): Promise<boolean>;
  /**
   * Renews the session TTL without rewriting (not announced: nothing changed); false when the record
   * is gone. `record` is written again by a store that cannot renew a TTL alone (the sessions API).
   */
  touchSession(id: string, record: SessionRecord): Promise<boolean>;
  status(): RegistryStatus;
  /** Connection status changes ("ready" again after an outage means: Redis may have lost everything). */
  onStatus(listener: (s: RegistryStatus) => void): () => void;
  /**
   * The store may have lost records (never for the memory store and the sessions API): every
   * writer puts back the live sessions it keeps. Returns unsubscribe.
   */
  onLoss(listener: LossListener): () => void;
  close(): Promise<void>;
}

/** Node heartbeats: kept by the Redis and memory stores, not by the sessions API. */
export interface NodeStore {
  /** Writes `mcp:node:{cookie}` with the node TTL (or ttlMs) and announces it. */
  heartbeat(record: NodeRecord, ttlMs?: number): Promise<void>;
  /** The records of these cookies, in order (null: no live record). One round trip. */
  getNodes(cookies: string[]): Promise<Array<NodeRecord | null>>;
  /**
   * Deletes a node record only while it still carries `boot` (a successor on the same URL keeps its
   * own) and then announces it with record null; returns whether it deleted.
   */
  removeNode(cookie: string, boot: string): Promise<boolean>;
}

/** The whole registry (Redis or memory): the node's part plus what the sidecar needs to mirror it. */
export interface Registry extends SessionStore, NodeStore {
  readonly kind: "memory" | "redis";

  /** Writes `mcp:session:{id}` with the TTL; returns false when ifAbsent and a record exists. */
  registerSession(id: string, record: SessionRecord, opts?: RegisterOptions): Promise<boolean>;
  /**
   * Refreshes an edge-learned record's TTL to `ttlMs`, never past its creation + `maxAgeMs`; a
   * node's own record is left alone (its node refreshes it). One command; not announced.
   */
  touchEdgeSession(id: string, ttlMs: number, maxAgeMs: number): Promise<boolean>;
  listNodes(opts?: ScanOptions): Promise<NodeRecord[]>;

  /** Iterates every session record in batches (for reconcile); no ordering, may repeat a key. */
  scanSessions(opts?: ScanOptions): AsyncIterable<Array<{ id: string; record: SessionRecord }>>;

  /** Registers a change listener; resolves once the subscription is active. Returns unsubscribe. */
  subscribe(listener: ChangeListener): Promise<() => Promise<void>>;
}

/** The listeners of a store's onStatus. */
export class StatusListeners {
  private readonly listeners = new Set<(s: RegistryStatus) => void>();
  add(listener: (s: RegistryStatus) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }
  emit(s: RegistryStatus): void {
    for (const l of [...this.listeners]) l(s);
  }
}

/** Base of the stores with no connection to watch (memory, the sessions API): ready until closed. */
export abstract class ReadyUntilClosed {
  private readonly listeners = new StatusListeners();
  private closed = false;
  status(): RegistryStatus {
    return this.closed ? "closed" : "ready";
  }
  onStatus(listener: (s: RegistryStatus) => void): () => void {
    return this.listeners.add(listener);
  }
  /** Nothing to lose behind the store's back: the memory store is the data, the sessions API's sidecar puts back. */
  onLoss(_listener: LossListener): () => void {
    return () => {};
  }
  /** Throws ERR_REGISTRY_CLOSED once closed. */
  protected check(op: string): void {
    if (this.closed) throw new RegistryError(op, "registry is closed", "ERR_REGISTRY_CLOSED");
  }
  /** Marks the store closed and tells the listeners; false when it already was. */
  protected markClosed(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.listeners.emit("closed");
    return true;
  }
}

export type RegistryErrorCode = Extract<ErrorCode, `ERR_REGISTRY_${string}`>;

/** Every failed registry call: `op` names the operation (for metrics and logs). */
export class RegistryError extends McpAffinityError {
  readonly op: string;
  constructor(
    op: string,
    message: string,
    code: RegistryErrorCode = "ERR_REGISTRY_UNAVAILABLE",
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.op = op;
  }
}
