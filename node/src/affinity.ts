// The node side of ADR-0066: register sessions before the initialize response leaves, answer
// hasSession locally, clean the registry on close whatever happened locally, heartbeat with a boot id.
import { randomBytes } from "node:crypto";
import { bootTag, mintSessionId } from "../../lib/token/index.ts";
import {
  StreamableHTTPServerTransport,
  type StreamableHTTPServerTransportOptions,
} from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  isValidSessionId,
  sessionTag,
  type NodeRecord,
  type NodeState,
  type NodeStore,
  type SessionRecord,
  type SessionStore,
} from "../../lib/registry/index.ts";
import { errFields } from "../../lib/errors.ts";
import { AffinityMetrics, type AffinityStats, type MissReason } from "./metrics.ts";
import { AffinityConfigError, resolveOptions, type AffinityOptions, type LoggerLike } from "./options.ts";
import { openNodeRegistry, withTimeout } from "./registry.ts";

// bench/traefik-bench.ts still imports this from here; everything else uses the index.
export { nodeRedisOptions } from "./registry.ts";

export type AffinityState = "up" | "draining" | "drained" | "stopped";

/** Anything the SDK can connect a transport to: McpServer or the low-level Server. */
export interface ConnectableServer {
  connect(transport: StreamableHTTPServerTransport): Promise<void>;
  close(): Promise<void>;
}

interface SessionEntry {
  transport: StreamableHTTPServerTransport;
  server?: ConnectableServer;
  created: number;
  lastSeen: number;
  lastRefresh: number;
  registered: boolean;
  /** In-flight requests (an open SSE stream counts): the idle sweep leaves such sessions alone. */
  active: number;
  refreshing: boolean;
}

export interface CloseResult {
  /** closed: local close ran cleanly; failed: it threw; unknown: no such session in this process. */
  local: "closed" | "failed" | "unknown";
  registry: "deleted" | "failed";
  error?: unknown;
}

export interface SessionCheck {
  local: boolean;
  reason?: MissReason;
  /** Owner URL from the registry record, when one exists. */
  owner?: string;
  /** misroute: the owner's heartbeat names the record's boot (the session lives there). */
  ownerLive?: boolean;
}

type TransportExtras = Omit<
  StreamableHTTPServerTransportOptions,
  "sessionIdGenerator" | "onsessioninitialized" | "onsessionclosed"
> & {
  onsessioninitialized?: (sessionId: string) => void | Promise<void>;
  onsessionclosed?: (sessionId: string) => void | Promise<void>;
};

const MAX_MISS_CHECKS_IN_FLIGHT = 64;

export class Affinity {
  readonly nodeUrl: string;
  readonly nodeName: string;
  readonly cookie: string;
  readonly bootId: string;
  readonly sessionTtlMs: number;
  readonly heartbeatMs: number;
  readonly drainGraceMs: number;
  readonly refreshIntervalMs: number;
  readonly idleTimeoutMs: number;
  readonly registryTimeoutMs: number;
  /** The session records: Redis, or the sidecar's sessions API. */
  readonly sessionStore: SessionStore;
  /** Heartbeats: the same Redis registry, or null with the sessions API (it keeps no node records). */
  readonly nodeStore: NodeStore | null;
  readonly log: LoggerLike;

  private readonly sessions = new Map<string, SessionEntry>();
  private readonly metrics: AffinityMetrics;
  private readonly genId: () => string;
  private readonly onSessionClosed?: (id: string) => void | Promise<void>;
  private readonly missChecks = new Map<string, Promise<SessionCheck>>();
  private _state: AffinityState = "up";
  private heartbeatTimer?: NodeJS.Timeout;
  private sweepTimer?: NodeJS.Timeout;
  private drainPromise?: Promise<void>;
  private stopPromise?: Promise<void>;
  private drainDeadline = 0;
  private lastConnError = 0;

  constructor(opts: AffinityOptions) {
    const settings = resolveOptions(opts);
    this.nodeUrl = settings.nodeUrl;
    this.cookie = settings.cookie;
    this.nodeName = settings.nodeName;
    this.bootId = randomBytes(8).toString("hex");
    this.sessionTtlMs = settings.sessionTtlMs;
    this.heartbeatMs = settings.heartbeatMs;
    this.drainGraceMs = settings.drainGraceMs;
    this.refreshIntervalMs = settings.refreshIntervalMs;
    this.idleTimeoutMs = settings.idleTimeoutMs;
    this.registryTimeoutMs = settings.registryTimeoutMs;
    // Ids carry a routing token (owner cookie + boot tag) so every Traefik replica routes them at once.
    const tag = bootTag(this.bootId);
    const gen = settings.sessionIdGenerator ?? (() => mintSessionId(this.cookie, tag));
    // The one session-id rule: an id the edge or the registry would refuse is never handed out.
    this.genId = () => {
      const id = gen();
      if (!isValidSessionId(id))
        throw new AffinityConfigError(
          "sessionIdGenerator returned an id outside the session-id rule (1-1024 visible ASCII characters)",
        );
      return id;
    };
    this.onSessionClosed = settings.onSessionClosed;
    const base = settings.logger;
    this.log = base.child ? base.child({ node: this.nodeName, boot: this.bootId }) : base;
    this.metrics = new AffinityMetrics(
      settings.metrics,
      () => this.sessions.size,
      () => this._state,
    );
    const { sessions, nodes } = openNodeRegistry(settings.registry, {
      sessionTtlMs: this.sessionTtlMs,
      nodeTtlMs: 3 * this.heartbeatMs,
      timeoutMs: this.registryTimeoutMs,
      onError: (op, err) => {
        if (op === "connect") this.onConnectionError(err);
      },
    });
    this.sessionStore = sessions;
    this.nodeStore = nodes;
    // Every (re)connection may reach an empty Redis (restart without persistence), and the first one
    // finds the sessions that arrived before it: put every live session back without waiting for
    // its next refresh.
    this.sessionStore.onStatus((s) => {
      if (s !== "ready") return;
      this.log.info({ sessions: this.sessions.size }, "registry reconnected, re-registering local sessions");
      void this.heartbeat();
      void this.reregisterAll();
    });
    if (!this.nodeStore)
      this.log.info(
        { registry: "sidecar" },
        "sidecar registry: node heartbeats off (liveness comes from Traefik's health check)",
      );
    // The first heartbeat goes out when the registry is first ready; the sidecar mode has none.
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    this.heartbeatTimer.unref();
    this.sweepTimer = setInterval(() => this.sweepIdle(), Math.min(this.idleTimeoutMs, 60_000));
    this.sweepTimer.unref();
    this.log.info({ url: this.nodeUrl, cookie: this.cookie, registry: this.sessionStore.kind }, "affinity started");
  }

  /**
   * Resolves true once the registry connection is up and the first heartbeat is written, false after
   * timeoutMs (the node may serve anyway: registrations are retried once the registry is back).
   */
  async ready(timeoutMs = 3 * this.registryTimeoutMs): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.sessionStore.status() !== "ready") {
      if (Date.now() >= deadline || this.sessionStore.status() === "closed") return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.nodeStore ? this.heartbeat() : true;
  }

  get state(): AffinityState {
    return this._state;
  }

  /** True while draining and within the grace period, or up. False once the grace has passed. */
  get healthy(): boolean {
    return this._state === "up" || (this._state === "draining" && Date.now() < this.drainDeadline);
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  stats(): AffinityStats {
    return this.metrics.snapshot({
      url: this.nodeUrl,
      cookie: this.cookie,
      name: this.nodeName,
      boot: this.bootId,
      state: this._state,
      sessions: this.sessions.size,
    });
  }

  private onConnectionError(err: Error): void {
    this.metrics.registryError("connection");
    const now = Date.now();
    // ioredis retries every few hundred ms: one log line per 10 s is enough.
    if (now - this.lastConnError > 10_000) {
      this.lastConnError = now;
      this.log.warn({ err: errFields(err) }, "registry connection error");
    }
  }

  private sessionRecord(entry: SessionEntry): SessionRecord {
    return { node: this.nodeUrl, cookie: this.cookie, boot: this.bootId, created: entry.created, source: "node" };
  }

  // ---- transports -------------------------------------------------------------------------

  /**
   * A stateful Streamable HTTP transport wired to this node's registry: the session is registered
   * inside onsessioninitialized, which the SDK awaits before it builds the initialize response.
   */
  createTransport(extras: TransportExtras = {}, server?: ConnectableServer): StreamableHTTPServerTransport {
    const { onsessioninitialized: userInit, onsessionclosed: userClosed, ...rest } = extras;
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      ...rest,
      sessionIdGenerator: this.genId,
      onsessioninitialized: async (id: string) => {
        const now = Date.now();
        const entry: SessionEntry = {
          transport,
          server: server ?? this.servers.get(transport),
          created: now,
          lastSeen: now,
          lastRefresh: now,
          registered: false,
          active: 0,
          refreshing: false,
        };
        this.sessions.set(id, entry);
        if (this._state !== "up")
          this.log.warn({ session: sessionTag(id), state: this._state }, "new session while draining");
        await this.register(id, entry);
        await userInit?.(id);
      },
      onsessionclosed: async (id: string) => {
        // A DELETE from the client: never throw back into the SDK, the outcome is logged and counted.
        await this.closeSession(id);
        try {
          await userClosed?.(id);
        } catch (err) {
          this.log.warn({ session: sessionTag(id), err: errFields(err) }, "onsessionclosed hook failed");
        }
      },
    });
    // A server-side close (server.close(), transport.close()) ends the session too: clean up once.
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && this.sessions.get(id)?.transport === transport) void this.closeSession(id);
    };
    return transport;
  }

  private readonly servers = new WeakMap<StreamableHTTPServerTransport, ConnectableServer>();

  /** Remembers which server a transport is connected to, so closeSession can close both. */
  bindServer(transport: StreamableHTTPServerTransport, server: ConnectableServer): void {
    this.servers.set(transport, server);
    const id = transport.sessionId;
    const entry = id === undefined ? undefined : this.sessions.get(id);
    if (entry && entry.transport === transport) entry.server = server;
  }

  /** The transport serving a session in this process, if any. */
  transportFor(id: string): StreamableHTTPServerTransport | undefined {
    return this.sessions.get(id)?.transport;
  }

  // ---- registration and TTL refresh ---------------------------------------------------------

  private async register(id: string, entry: SessionEntry): Promise<boolean> {
    try {
      await withTimeout(
        this.sessionStore.registerSession(id, this.sessionRecord(entry)),
        this.registryTimeoutMs,
        "register",
      );
      entry.registered = true;
      entry.lastRefresh = Date.now();
      this.metrics.registration("ok");
      return true;
    } catch (err) {
      // Registry trouble never breaks the session: it works on this node, the edge falls back to cookies.
      entry.registered = false;
      entry.lastRefresh = Date.now();
      this.metrics.registration("failed");
      this.metrics.registryError("register");
      this.log.warn(
        { session: sessionTag(id), err: errFields(err) },
        "session registration failed; session continues on this node",
      );
      return false;
    }
  }

  private async reregisterAll(): Promise<void> {
    const ids = [...this.sessions.keys()];
    for (let i = 0; i < ids.length; i += 100) {
      await Promise.all(
        ids.slice(i, i + 100).map(async (id) => {
          const entry = this.sessions.get(id);
          if (entry) await this.register(id, entry);
        }),
      );
    }
  }

  /**
   * Marks a request for a local session: refreshes its registry TTL at most once per
   * refreshIntervalMs (retries a failed registration sooner), in the background.
   */
  touch(id: string): boolean {
    const entry = this.sessions.get(id);
    if (!entry) return false;
    const now = Date.now();
    entry.lastSeen = now;
    const due = entry.registered
      ? now - entry.lastRefresh >= this.refreshIntervalMs
      : now - entry.lastRefresh >= Math.min(this.refreshIntervalMs, 5000);
    if (due && !entry.refreshing) void this.refresh(id, entry);
    return true;
  }

  private async refresh(id: string, entry: SessionEntry): Promise<void> {
    entry.refreshing = true;
    try {
      if (!entry.registered) {
        await this.register(id, entry);
        return;
      }
      const present = await withTimeout(
        this.sessionStore.touchSession(id, this.sessionRecord(entry)),
        this.registryTimeoutMs,
        "refresh",
      );
      entry.lastRefresh = Date.now();
      if (present) {
        this.metrics.refresh("ok");
      } else {
        // The record vanished (Redis restarted empty, evicted): put it back.
        this.metrics.refresh("missing");
        await this.register(id, entry);
      }
    } catch (err) {
      // Retry after a short pause rather than a whole refresh interval.
      entry.lastRefresh = Date.now() - this.refreshIntervalMs + Math.min(this.refreshIntervalMs, 5000);
      this.metrics.refresh("failed");
      this.metrics.registryError("refresh");
      this.log.warn({ session: sessionTag(id), err: errFields(err) }, "session TTL refresh failed");
    } finally {
      entry.refreshing = false;
    }
  }

  /** Counts a request in flight for the idle sweep; call the returned function when it ends. */
  enter(id: string): () => void {
    const entry = this.sessions.get(id);
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

  private sweepIdle(): void {
    const cutoff = Date.now() - this.idleTimeoutMs;
    for (const [id, entry] of this.sessions) {
      if (entry.active === 0 && entry.lastSeen < cutoff) {
        this.log.info({ session: sessionTag(id) }, "closing idle session");
        void this.closeSession(id);
      }
    }
  }

  // ---- hasSession --------------------------------------------------------------------------

  /**
   * Local check only (no registry latency). A miss that the registry knows about is explained in
   * the background: logged and counted as misroute, stale or unknown. See checkSession.
   */
  hasSession(id: string): boolean {
    if (this.sessions.has(id)) return true;
    void this.checkSession(id);
    return false;
  }

  /** hasSession with the registry explanation awaited (each call counts one mismatch when not local). */
  checkSession(id: string): Promise<SessionCheck> {
    if (this.sessions.has(id)) return Promise.resolve({ local: true });
    if (!isValidSessionId(id))
      return Promise.resolve(this.countMiss(id, { local: false, reason: "unknown" }, "malformed id"));
    const pending = this.missChecks.get(id);
    if (pending) {
      // Same id asked again while its lookup runs: share the lookup, count the request.
      return pending.then((r) => this.countMiss(id, r, "repeat"));
    }
    if (this.missChecks.size >= MAX_MISS_CHECKS_IN_FLIGHT) {
      return Promise.resolve(this.countMiss(id, { local: false, reason: "unchecked" }, "too many lookups in flight"));
    }
    const p = this.classify(id);
    this.missChecks.set(id, p);
    return p
      .finally(() => this.missChecks.delete(id))
      .then((r) => this.countMiss(id, r, r.reason === "unchecked" ? "registry error" : undefined));
  }

  private countMiss(id: string, r: SessionCheck & { detail?: string }, note?: string): SessionCheck {
    const reason = r.reason ?? "unknown";
    this.metrics.mismatch(reason);
    const detail = r.detail ?? note;
    this.log.warn(
      { session: sessionTag(id), reason, owner: r.owner, ...(detail ? { detail } : {}) },
      "session not served by this node",
    );
    return r.ownerLive
      ? { local: false, reason, owner: r.owner, ownerLive: true }
      : { local: false, reason, owner: r.owner };
  }

  private async classify(id: string): Promise<SessionCheck & { detail?: string }> {
    let rec: SessionRecord | null;
    try {
      rec = await withTimeout(this.sessionStore.lookupSession(id), this.registryTimeoutMs, "lookup");
    } catch (err) {
      this.metrics.registryError("lookup");
      return { local: false, reason: "unchecked", detail: errFields(err).message };
    }
    if (!rec) return { local: false, reason: "unknown" };
    const owner = rec.node || undefined;
    if (rec.cookie === this.cookie) {
      // Ours by URL, yet not in this process: a previous boot's session, or one closed without cleanup.
      return {
        local: false,
        reason: "stale",
        owner,
        detail: rec.boot === this.bootId ? "closed on this boot" : "previous boot",
      };
    }
    const nodes = this.nodeStore;
    if (!nodes) return { local: false, reason: "misroute", owner, detail: "owner liveness unknown (sidecar registry)" };
    let node: NodeRecord | null;
    try {
      [node = null] = await withTimeout(nodes.getNodes([rec.cookie]), this.registryTimeoutMs, "lookup");
    } catch (err) {
      this.metrics.registryError("lookup");
      return { local: false, reason: "unchecked", owner, detail: errFields(err).message };
    }
    if (!node) return { local: false, reason: "stale", owner, detail: "owner has no heartbeat" };
    if (rec.boot !== null && node.boot !== rec.boot)
      return { local: false, reason: "stale", owner, detail: "owner rebooted" };
    return { local: false, reason: "misroute", owner, ownerLive: true };
  }

  // ---- close -------------------------------------------------------------------------------

  private readonly closing = new Map<string, Promise<CloseResult>>();

  /**
   * Closes a session: the local close (application hook, transport, server) is attempted, and the
   * registry record is deleted and the close announced whatever that did, also for sessions this
   * process never knew (they may belong to another node or a previous boot).
   */
  closeSession(id: string): Promise<CloseResult> {
    const running = this.closing.get(id);
    if (running) return running;
    const p = this.doClose(id).finally(() => this.closing.delete(id));
    this.closing.set(id, p);
    return p;
  }

  private async doClose(id: string): Promise<CloseResult> {
    const entry = this.sessions.get(id);
    let local: CloseResult["local"] = entry ? "closed" : "unknown";
    let error: unknown;
    if (entry) {
      // Out of the table first: the transport's onclose must not start a second close.
      this.sessions.delete(id);
      const steps: Array<() => unknown> = [];
      if (this.onSessionClosed) steps.push(() => this.onSessionClosed!(id));
      steps.push(() => entry.transport.close());
      if (entry.server) steps.push(() => entry.server!.close());
      for (const step of steps) {
        try {
          await step();
        } catch (err) {
          local = "failed";
          error ??= err;
        }
      }
      if (local === "failed")
        this.log.warn(
          { session: sessionTag(id), err: errFields(error) },
          "local session close failed; cleaning registry anyway",
        );
    }
    let registry: CloseResult["registry"] = "deleted";
    try {
      await withTimeout(this.sessionStore.closeSession(id), this.registryTimeoutMs, "close");
    } catch (err) {
      registry = "failed";
      this.metrics.registryError("close");
      this.log.warn({ session: sessionTag(id), err: errFields(err) }, "registry cleanup failed on close");
    }
    this.metrics.close(local);
    this.log.info({ session: sessionTag(id), local, registry }, "session closed");
    return error === undefined ? { local, registry } : { local, registry, error };
  }

  // ---- heartbeat, drain, stop --------------------------------------------------------------

  private nodeRecord(): NodeRecord {
    const state: NodeState = this._state === "up" ? "up" : "draining";
    return { url: this.nodeUrl, cookie: this.cookie, boot: this.bootId, name: this.nodeName, state, seen: Date.now() };
  }

  /** Writes the heartbeat now (also runs every heartbeatMs). Never throws. */
  async heartbeat(): Promise<boolean> {
    const nodes = this.nodeStore;
    if (!nodes || this._state === "stopped") return false;
    try {
      await withTimeout(nodes.heartbeat(this.nodeRecord()), this.registryTimeoutMs, "heartbeat");
      this.metrics.heartbeat("ok");
      return true;
    } catch (err) {
      this.metrics.heartbeat("failed");
      this.metrics.registryError("heartbeat");
      this.log.debug({ err: errFields(err) }, "heartbeat failed");
      return false;
    }
  }

  /**
   * Marks the node draining (announced at once in its heartbeat), keeps serving existing sessions
   * for drainGraceMs (less if none remain), then resolves: the caller stops and exits.
   */
  drain(): Promise<void> {
    if (this.drainPromise) return this.drainPromise;
    this._state = "draining";
    this.drainDeadline = Date.now() + this.drainGraceMs;
    this.log.info({ graceMs: this.drainGraceMs, sessions: this.sessions.size }, "draining");
    void this.heartbeat();
    this.drainPromise = new Promise<void>((resolve) => {
      const check = () => {
        if (this.sessions.size === 0 || Date.now() >= this.drainDeadline || this._state === "stopped") {
          clearInterval(timer);
          if (this._state === "draining") this._state = "drained";
          this.log.info({ sessions: this.sessions.size }, "drain finished");
          resolve();
        }
      };
      const timer = setInterval(check, Math.min(100, Math.max(10, this.drainGraceMs)));
      check();
    });
    return this.drainPromise;
  }

  /**
   * Closes every local session (registry records deleted: they die with this process), removes the
   * heartbeat record if it still carries this boot, and closes the registry connection.
   */
  stop(): Promise<void> {
    this.stopPromise ??= (async () => {
      clearInterval(this.heartbeatTimer);
      clearInterval(this.sweepTimer);
      const ids = [...this.sessions.keys()];
      await Promise.all(ids.map((id) => this.closeSession(id)));
      this._state = "stopped";
      if (this.nodeStore) {
        try {
          await withTimeout(this.nodeStore.removeNode(this.cookie, this.bootId), this.registryTimeoutMs, "heartbeat");
        } catch (err) {
          this.metrics.registryError("heartbeat");
          this.log.warn({ err: errFields(err) }, "could not remove node record");
        }
      }
      await this.sessionStore.close();
      this.log.info({ closedSessions: ids.length }, "affinity stopped");
    })();
    return this.stopPromise;
  }
}

export function createAffinity(options: AffinityOptions): Affinity {
  return new Affinity(options);
}
