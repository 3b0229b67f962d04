// In-process registry: the embedded default when no Redis is configured (one machine, one sidecar).
import { EventEmitter } from "node:events";
import {
  DEFAULT_NODE_TTL_MS,
  DEFAULT_SESSION_TTL_MS,
  isCookieValue,
  isValidSessionId,
  type NodeRecord,
  type RegistryChange,
  type SessionRecord,
} from "./schema.ts";
import {
  RegistryError,
  ReadyUntilClosed,
  type ChangeListener,
  type RegisterOptions,
  type Registry,
  type ScanOptions,
} from "./registry.ts";

interface Entry<T> {
  value: T;
  expires: number;
}

export interface MemoryRegistryOptions {
  sessionTtlMs?: number;
  nodeTtlMs?: number;
  now?: () => number;
}

export class MemoryRegistry extends ReadyUntilClosed implements Registry {
  readonly kind = "memory" as const;
  readonly sessionTtlMs: number;
  readonly nodeTtlMs: number;
  private readonly sessions = new Map<string, Entry<SessionRecord>>();
  private readonly nodes = new Map<string, Entry<NodeRecord>>();
  private readonly bus = new EventEmitter();
  private readonly now: () => number;
  private sweeper: NodeJS.Timeout;

  constructor(opts: MemoryRegistryOptions = {}) {
    super();
    this.sessionTtlMs = opts.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.nodeTtlMs = opts.nodeTtlMs ?? DEFAULT_NODE_TTL_MS;
    this.now = opts.now ?? Date.now;
    this.bus.setMaxListeners(0);
    // Expired entries are also dropped lazily on read; the sweep bounds memory.
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  private live<T>(map: Map<string, Entry<T>>, key: string): T | null {
    const e = map.get(key);
    if (!e) return null;
    if (e.expires <= this.now()) {
      map.delete(key);
      return null;
    }
    return e.value;
  }

  private sweep(): void {
    const t = this.now();
    for (const [k, e] of this.sessions) if (e.expires <= t) this.sessions.delete(k);
    for (const [k, e] of this.nodes) if (e.expires <= t) this.nodes.delete(k);
  }

  private emit(change: RegistryChange): void {
    // Delivered asynchronously, like a pub/sub message: a listener never runs inside the writer.
    const copy = structuredClone(change);
    queueMicrotask(() => this.bus.emit("change", copy));
  }

  async registerSession(id: string, record: SessionRecord, opts: RegisterOptions = {}): Promise<boolean> {
    this.check("register");
    if (!isValidSessionId(id)) throw new RegistryError("register", "invalid session id", "ERR_REGISTRY_SCHEMA");
    if (opts.ifAbsent && this.live(this.sessions, id)) return false;
    this.sessions.set(id, { value: { ...record }, expires: this.now() + (opts.ttlMs ?? this.sessionTtlMs) });
    this.emit({ op: "session", id, record });
    return true;
  }

  async lookupSession(id: string): Promise<SessionRecord | null> {
    this.check("lookup");
    const r = this.live(this.sessions, id);
    return r ? { ...r } : null;
  }

  async closeSession(id: string): Promise<boolean> {
    this.check("close");
    const existed = this.live(this.sessions, id) !== null;
    this.sessions.delete(id);
    this.emit({ op: "close", id });
    return existed;
  }

  async touchSession(id: string, _record?: SessionRecord): Promise<boolean> {
    this.check("touch");
    const r = this.live(this.sessions, id);
    if (!r) return false;
    this.sessions.set(id, { value: r, expires: this.now() + this.sessionTtlMs });
    return true;
  }

  async touchEdgeSession(id: string, ttlMs: number, maxAgeMs: number): Promise<boolean> {
    this.check("touch");
    const r = this.live(this.sessions, id);
    if (!r || r.source !== "edge") return false;
    const now = this.now();
    const ttl = Math.min(ttlMs, r.created + maxAgeMs - now);
    if (ttl <= 0) {
      this.sessions.delete(id);
      return false;
    }
    this.sessions.set(id, { value: r, expires: now + ttl });
    return true;
  }

  async heartbeat(record: NodeRecord, ttlMs?: number): Promise<void> {
    this.check("heartbeat");
    if (!isCookieValue(record.cookie))
      throw new RegistryError("heartbeat", "invalid node cookie", "ERR_REGISTRY_SCHEMA");
    this.nodes.set(record.cookie, { value: { ...record }, expires: this.now() + (ttlMs ?? this.nodeTtlMs) });
    this.emit({ op: "node", cookie: record.cookie, record });
  }

  async getNodes(cookies: string[]): Promise<Array<NodeRecord | null>> {
    this.check("node");
    return cookies.map((c) => {
      const r = this.live(this.nodes, c);
      return r ? { ...r } : null;
    });
  }

  async removeNode(cookie: string, boot: string): Promise<boolean> {
    this.check("node");
    if (this.live(this.nodes, cookie)?.boot !== boot) return false;
    this.nodes.delete(cookie);
    this.emit({ op: "node", cookie, record: null });
    return true;
  }

  async listNodes(_opts?: ScanOptions): Promise<NodeRecord[]> {
    this.check("nodes");
    const out: NodeRecord[] = [];
    for (const k of [...this.nodes.keys()]) {
      const r = this.live(this.nodes, k);
      if (r) out.push({ ...r });
    }
    return out;
  }

  async *scanSessions(opts: ScanOptions = {}): AsyncIterable<Array<{ id: string; record: SessionRecord }>> {
    this.check("scan");
    const batch = opts.batch ?? 1000;
    let out: Array<{ id: string; record: SessionRecord }> = [];
    for (const k of [...this.sessions.keys()]) {
      const r = this.live(this.sessions, k);
      if (!r) continue;
      out.push({ id: k, record: { ...r } });
      if (out.length >= batch) {
        yield out;
        out = [];
      }
    }
    if (out.length) yield out;
  }

  async subscribe(listener: ChangeListener): Promise<() => Promise<void>> {
    this.check("subscribe");
    this.bus.on("change", listener);
    return async () => {
      this.bus.off("change", listener);
    };
  }

  async close(): Promise<void> {
    if (!this.markClosed()) return;
    clearInterval(this.sweeper);
    this.bus.removeAllListeners("change");
  }
}
