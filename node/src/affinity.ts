// The node side of ADR-0066: register sessions before the initialize response leaves, answer
// hasSession locally, clean the registry on close whatever happened locally, heartbeat with a boot id.
import { randomBytes } from "node:crypto";
import { bootTag, mintSessionId } from "../../lib/token/index.ts";
import { pino } from "pino";
import type { Registry as PromRegistry } from "prom-client";
import {
  StreamableHTTPServerTransport,
  type StreamableHTTPServerTransportOptions,
} from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  DEFAULT_SESSION_TTL_MS,
  RedisRegistry,
  SidecarApiStore,
  cookieValueFor,
  isValidSessionId,
  sessionTag,
  type NodeRecord,
  type NodeState,
  type NodeStore,
  type RedisRegistryOptions,
  type SessionRecord,
  type SessionStore,
} from "../../lib/registry/index.ts";
import { McpAffinityError, errFields } from "../../lib/errors.ts";
import { AffinityMetrics, type AffinityStats, type MissReason } from "./metrics.ts";

/** The subset of pino's logger the library uses; any pino-compatible logger fits. */
export interface LoggerLike {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child?(bindings: object): LoggerLike;
}

export interface AffinityOptions {
  /** The node's server URL exactly as written in Traefik's service: the sticky cookie derives from it. */
  nodeUrl: string;
  /** Human name for logs, whoami and the heartbeat record (default: the URL's host). */
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

export class AffinityConfigError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_AFFINITY_CONFIG", message);
  }
}

/** Where the node's registry lives: Redis directly, or the sidecar's sessions API. */
export type RegistryOptions = { redisUrl: string } | { sidecarUrl: string; token?: string };

export interface NodeRegistrySettings {
  sessionTtlMs: number;
  /** The heartbeat record's TTL. */
  nodeTtlMs: number;
  /** Upper bound of one registry call. */
  timeoutMs: number;
  /** A failed connection attempt (op "connect") or registry call. */
  onError: (op: string, err: Error) => void;
}

/** The Redis registry exactly as a node opens it. */
export function nodeRedisOptions(url: string, s: NodeRegistrySettings): RedisRegistryOptions {
  return {
    url,
    sessionTtlMs: s.sessionTtlMs,
    nodeTtlMs: s.nodeTtlMs,
    // With the offline queue off (lib/registry/redis.ts) a live session never waits on a dead Redis.
    commandTimeoutMs: s.timeoutMs,
    connectTimeoutMs: Math.max(1000, s.timeoutMs),
    maxBackoffMs: 2000,
    onError: s.onError,
  };
}

/** The node's session store, and its heartbeat store where the registry keeps node records. */
export function openNodeRegistry(
  opts: RegistryOptions,
  s: NodeRegistrySettings,
): { sessions: SessionStore; nodes: NodeStore | null } {
  if ("redisUrl" in opts && opts.redisUrl) {
    const redis = new RedisRegistry(nodeRedisOptions(opts.redisUrl, s));
    return { sessions: redis, nodes: redis };
  }
  if ("sidecarUrl" in opts && opts.sidecarUrl)
    return {
      sessions: new SidecarApiStore({ url: opts.sidecarUrl, token: opts.token, timeoutMs: s.timeoutMs }),
      nodes: null,
    };
  throw new AffinityConfigError("registry needs redisUrl or sidecarUrl");
}

const MAX_MISS_CHECKS_IN_FLIGHT = 64;

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v <= 0) throw new AffinityConfigError(`${name} must be a positive number of milliseconds`);
  return v;
}

function withTimeout<T>(p: Promise<T>, ms: number, op: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new McpAffinityError("ERR_AFFINITY_TIMEOUT", `registry ${op} timed out after ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

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
    if (!opts || typeof opts.nodeUrl !== "string" || !/^https?:\/\/[^\s]+$/.test(opts.nodeUrl)) {
      throw new AffinityConfigError("nodeUrl must be the node's http(s) URL exactly as in Traefik's service");
    }
    this.nodeUrl = opts.nodeUrl;
    this.cookie = cookieValueFor(opts.nodeUrl);
    this.nodeName = opts.nodeName || new URL(opts.nodeUrl).host;
    this.bootId = randomBytes(8).toString("hex");
    this.sessionTtlMs = positive("sessionTtlMs", opts.sessionTtlMs, DEFAULT_SESSION_TTL_MS);
    this.heartbeatMs = positive("heartbeatMs", opts.heartbeatMs, 5000);
    this.drainGraceMs = opts.drainGraceMs === 0 ? 0 : positive("drainGraceMs", opts.drainGraceMs, 30_000);
    this.refreshIntervalMs = positive(
      "refreshIntervalMs",
      opts.refreshIntervalMs,
      Math.max(1, Math.floor(this.sessionTtlMs / 30)),
    );
    this.idleTimeoutMs = positive("idleTimeoutMs", opts.idleTimeoutMs, this.sessionTtlMs);
    this.registryTimeoutMs = positive("registryTimeoutMs", opts.registryTimeoutMs, 1000);
    // Ids carry a routing token (owner cookie + boot tag) so every Traefik replica routes them at once.
    const tag = bootTag(this.bootId);
    const gen = opts.sessionIdGenerator ?? (() => mintSessionId(this.cookie, tag));
    // The one session-id rule: an id the edge or the registry would refuse is never handed out.
    this.genId = () => {
      const id = gen();
      if (!isValidSessionId(id))
        throw new AffinityConfigError(
          "sessionIdGenerator returned an id outside the session-id rule (1-1024 visible ASCII characters)",
        );
      return id;
    };
    this.onSessionClosed = opts.onSessionClosed;
    const base = opts.logger ?? (pino({ base: { component: "mcp-affinity-node" } }) as unknown as LoggerLike);
    this.log = base.child ? base.child({ node: this.nodeName, boot: this.bootId }) : base;
    this.metrics = new AffinityMetrics(
      opts.metrics,
      () => this.sessions.size,
      () => this._state,
    );
    if (!opts.registry || typeof opts.registry !== "object")
      throw new AffinityConfigError("registry needs redisUrl or sidecarUrl");
    const { sessions, nodes } = openNodeRegistry(opts.registry, {
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
