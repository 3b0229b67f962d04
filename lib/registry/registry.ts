// The registry contract: one interface, two stores (MemoryRegistry, RedisRegistry). Every write
// announces a RegistryChange to every subscriber (in Redis: PUBLISH on CHANGE_CHANNEL, in the same
// script as the write, so a subscriber never misses a write it could have seen).
import type { NodeRecord, RegistryChange, SessionRecord } from "./schema.ts";

export type RegistryStatus = "connecting" | "ready" | "down" | "closed";

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

export interface Registry {
  readonly kind: "memory" | "redis";
  readonly sessionTtlMs: number;
  readonly nodeTtlMs: number;

  /** Writes `mcp:session:{id}` with the TTL; returns false when ifAbsent and a record exists. */
  registerSession(id: string, record: SessionRecord, opts?: RegisterOptions): Promise<boolean>;
  lookupSession(id: string): Promise<SessionRecord | null>;
  /** Deletes the record (whoever owns it); returns whether one existed. Always announced. */
  closeSession(id: string): Promise<boolean>;
  /** Refreshes the TTL without rewriting (not announced: nothing changed). */
  touchSession(id: string, ttlMs?: number): Promise<boolean>;
  /**
   * Refreshes an edge-learned record's TTL to `ttlMs`, never past its creation + `maxAgeMs`; a
   * node's own record is left alone (its node refreshes it). One command; not announced.
   */
  touchEdgeSession(id: string, ttlMs: number, maxAgeMs: number): Promise<boolean>;

  /** Writes `mcp:node:{cookie}` with the node TTL (a heartbeat). */
  heartbeat(record: NodeRecord, ttlMs?: number): Promise<void>;
  getNode(cookie: string): Promise<NodeRecord | null>;
  /** Deletes a node record (clean shutdown); announced with record null. */
  removeNode(cookie: string): Promise<boolean>;
  listNodes(opts?: ScanOptions): Promise<NodeRecord[]>;

  /** Iterates every session record in batches (for reconcile); no ordering, may repeat a key. */
  scanSessions(opts?: ScanOptions): AsyncIterable<Array<{ id: string; record: SessionRecord }>>;

  /** Registers a change listener; resolves once the subscription is active. Returns unsubscribe. */
  subscribe(listener: ChangeListener): Promise<() => Promise<void>>;

  status(): RegistryStatus;
  /** Connection status changes ("ready" again after an outage means: resync). */
  onStatus(listener: (s: RegistryStatus) => void): () => void;
  close(): Promise<void>;
}

export class RegistryError extends Error {
  readonly code: string;
  readonly op: string;
  constructor(op: string, message: string, code = "ERR_REGISTRY_UNAVAILABLE", options?: { cause?: unknown }) {
    super(message, options);
    this.op = op;
    this.code = code;
  }
}
