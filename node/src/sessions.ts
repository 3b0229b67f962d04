// The sessions this process holds: their registration before the initialize answer, the TTL
// refresh at most once per refreshIntervalMs, re-registration after a registry loss, the requests
// in flight and the idle sweep.
import { errFields } from "../../lib/errors.ts";
import { sessionTag, type SessionRecord } from "../../lib/registry/index.ts";
import type { NodeContext } from "./context.ts";

/** What the session table needs of a session's transport, whichever SDK line made it. */
export interface SessionTransport {
  readonly sessionId?: string;
  close(): Promise<void>;
}

/** What the session table needs of a session's server: McpServer or the low-level Server, v1 or v2. */
export interface ClosableServer {
  close(): Promise<void>;
}

export interface SessionEntry {
  transport: SessionTransport;
  server?: ClosableServer;
  created: number;
  lastSeen: number;
  lastRefresh: number;
  registered: boolean;
  /** In-flight requests (an open SSE stream counts): the idle sweep leaves such sessions alone. */
  active: number;
  refreshing: boolean;
}

/** A failed registration or refresh is retried after this long at most. */
export const RETRY_MS = 5000;
/** Sessions registered again at once after a registry loss. */
const REREGISTER_BATCH = 100;

export class SessionTable {
  readonly #entries = new Map<string, SessionEntry>();

  constructor(private readonly ctx: NodeContext) {}

  get size(): number {
    return this.#entries.size;
  }

  has(id: string): boolean {
    return this.#entries.has(id);
  }

  get(id: string): SessionEntry | undefined {
    return this.#entries.get(id);
  }

  ids(): string[] {
    return [...this.#entries.keys()];
  }

  /** A session the SDK has just initialized; register it before the answer leaves. */
  add(id: string, transport: SessionTransport, server: ClosableServer | undefined): SessionEntry {
    const now = Date.now();
    const entry: SessionEntry = {
      transport,
      server,
      created: now,
      lastSeen: now,
      lastRefresh: now,
      registered: false,
      active: 0,
      refreshing: false,
    };
    this.#entries.set(id, entry);
    return entry;
  }

  /** Out of the table (a close): the entry, if it was there. */
  remove(id: string): SessionEntry | undefined {
    const entry = this.#entries.get(id);
    this.#entries.delete(id);
    return entry;
  }

  private record(entry: SessionEntry): SessionRecord {
    const { settings, bootId } = this.ctx;
    return { node: settings.nodeUrl, cookie: settings.cookie, boot: bootId, created: entry.created, source: "node" };
  }

  async register(id: string, entry: SessionEntry): Promise<boolean> {
    const { ctx } = this;
    try {
      await ctx.call(ctx.store.registerSession(id, this.record(entry)), "register");
      entry.registered = true;
      entry.lastRefresh = Date.now();
      ctx.metrics.registration("ok");
      return true;
    } catch (err) {
      // Registry trouble never breaks the session: it works on this node, the edge falls back to cookies.
      entry.registered = false;
      entry.lastRefresh = Date.now();
      ctx.metrics.registration("failed");
      ctx.metrics.registryError("register");
      ctx.log.warn(
        { session: sessionTag(id), err: errFields(err) },
        "session registration failed; session continues on this node",
      );
      return false;
    }
  }

  /** Every local session written again (the registry may have restarted empty). */
  async reregisterAll(): Promise<void> {
    const ids = this.ids();
    for (let i = 0; i < ids.length; i += REREGISTER_BATCH) {
      await Promise.all(
        ids.slice(i, i + REREGISTER_BATCH).map(async (id) => {
          const entry = this.#entries.get(id);
          if (entry) await this.register(id, entry);
        }),
      );
    }
  }

  /** Sessions whose registration failed, registered again now (idle ones have no request to retry on). */
  async retryUnregistered(): Promise<void> {
    const due = Date.now() - RETRY_MS;
    const ids = [...this.#entries].filter(([, e]) => !e.registered && !e.refreshing && e.lastRefresh <= due);
    for (let i = 0; i < ids.length; i += REREGISTER_BATCH) {
      await Promise.all(
        ids.slice(i, i + REREGISTER_BATCH).map(async ([id, entry]) => {
          if (entry.registered || entry.refreshing || !this.#entries.has(id)) return;
          entry.refreshing = true;
          try {
            await this.register(id, entry);
          } finally {
            entry.refreshing = false;
          }
        }),
      );
    }
  }

  /**
   * Marks a request for a local session: refreshes its registry TTL at most once per
   * refreshIntervalMs (retries a failed registration sooner), in the background.
   */
  touch(id: string): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    const { refreshIntervalMs } = this.ctx.settings;
    const now = Date.now();
    entry.lastSeen = now;
    const due = entry.registered
      ? now - entry.lastRefresh >= refreshIntervalMs
      : now - entry.lastRefresh >= Math.min(refreshIntervalMs, RETRY_MS);
    if (due && !entry.refreshing) void this.refresh(id, entry);
    return true;
  }

  private async refresh(id: string, entry: SessionEntry): Promise<void> {
    const { ctx } = this;
    const { refreshIntervalMs } = ctx.settings;
    entry.refreshing = true;
    try {
      if (!entry.registered) {
        await this.register(id, entry);
        return;
      }
      const present = await ctx.call(ctx.store.touchSession(id, this.record(entry)), "refresh");
      entry.lastRefresh = Date.now();
      if (present) {
        ctx.metrics.refresh("ok");
      } else {
        // The record vanished (Redis restarted empty, evicted): put it back.
        ctx.metrics.refresh("missing");
        await this.register(id, entry);
      }
    } catch (err) {
      // Retry after a short pause rather than a whole refresh interval.
      entry.lastRefresh = Date.now() - refreshIntervalMs + Math.min(refreshIntervalMs, RETRY_MS);
      ctx.metrics.refresh("failed");
      ctx.metrics.registryError("refresh");
      ctx.log.warn({ session: sessionTag(id), err: errFields(err) }, "session TTL refresh failed");
    } finally {
      entry.refreshing = false;
    }
  }

  /** Counts a request in flight for the idle sweep; call the returned function when it ends. */
  enter(id: string): () => void {
    const entry = this.#entries.get(id);
    if (!entry) return () => {};
    entry.active++;
    let done = false;
    return () => {
      if (!done) {
        done = true;
        entry.active--;
        entry.lastSeen = Date.now();
      }
    };
  }

  /** The sessions without a request in flight and none for idleTimeoutMs. */
  idle(): string[] {
    const cutoff = Date.now() - this.ctx.settings.idleTimeoutMs;
    const ids: string[] = [];
    for (const [id, entry] of this.#entries) if (entry.active === 0 && entry.lastSeen < cutoff) ids.push(id);
    return ids;
  }
}
