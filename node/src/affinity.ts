// The node side of ADR-0066: register sessions before the initialize response leaves, answer
// hasSession locally, clean the registry on close whatever happened locally, heartbeat with a boot id.
// This class wires the parts (options.ts, registry.ts, sessions.ts, transports.ts, misses.ts,
// close.ts, heartbeat.ts) and owns the lifecycle (lifecycle.ts): drain and stop.
import { randomBytes } from "node:crypto";
import {
  StreamableHTTPServerTransport,
  type StreamableHTTPServerTransportOptions,
} from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { errFields } from "../../lib/errors.ts";
import { sessionTag, type NodeStore, type SessionStore } from "../../lib/registry/index.ts";
import { SessionCloser, type CloseResult } from "./close.ts";
import type { NodeContext } from "./context.ts";
import { Heartbeat } from "./heartbeat.ts";
import { NodeLifecycle, type AffinityState } from "./lifecycle.ts";
import { AffinityMetrics, type AffinityStats } from "./metrics.ts";
import { MissClassifier, type SessionCheck } from "./misses.ts";
import { resolveOptions, type AffinityOptions, type LoggerLike } from "./options.ts";
import { openNodeRegistry, withTimeout } from "./registry.ts";
import { RETRY_MS, SessionTable, type ClosableServer } from "./sessions.ts";
import {
  SessionTransports,
  type SessionHooks,
  type TransportWiring,
  type UserSessionHooks,
  type WirableTransport,
} from "./transports.ts";

/** Anything the v1 SDK can connect a transport to: McpServer or the low-level Server. */
export interface ConnectableServer extends ClosableServer {
  connect(transport: StreamableHTTPServerTransport): Promise<void>;
}

/** Options of the v1 SDK transport, the session hooks excepted (the application's own run after the library's). */
export type TransportExtras = Omit<StreamableHTTPServerTransportOptions, keyof SessionHooks> & UserSessionHooks;

/** One log line per this long for registry connection errors (ioredis retries every few hundred ms). */
const CONNECTION_ERROR_LOG_MS = 10_000;
/** The idle sweep runs at least this often. */
const MAX_SWEEP_MS = 60_000;

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

  private readonly sessions: SessionTable;
  private readonly metrics: AffinityMetrics;
  private readonly transports: SessionTransports<StreamableHTTPServerTransport, StreamableHTTPServerTransportOptions>;
  private readonly wiring: TransportWiring;
  private readonly misses: MissClassifier;
  private readonly closer: SessionCloser;
  private readonly heartbeats: Heartbeat;
  private readonly lifecycle: NodeLifecycle;
  private lastConnError = 0;
  /** Requests in flight that belong to no session (2026-07-28 requests, v2.ts): a drain waits for them too. */
  private sessionlessInFlight = 0;

  constructor(opts: AffinityOptions) {
    const settings = resolveOptions(opts);
    this.nodeUrl = settings.nodeUrl;
    this.nodeName = settings.nodeName;
    this.cookie = settings.cookie;
    this.bootId = randomBytes(8).toString("hex");
    this.sessionTtlMs = settings.sessionTtlMs;
    this.heartbeatMs = settings.heartbeatMs;
    this.drainGraceMs = settings.drainGraceMs;
    this.refreshIntervalMs = settings.refreshIntervalMs;
    this.idleTimeoutMs = settings.idleTimeoutMs;
    this.registryTimeoutMs = settings.registryTimeoutMs;
    const base = settings.logger;
    this.log = base.child ? base.child({ node: this.nodeName, boot: this.bootId }) : base;
    this.metrics = new AffinityMetrics(
      settings.metrics,
      () => this.sessions.size,
      () => this.lifecycle.state,
    );
    const { sessions, nodes } = openNodeRegistry(settings.registry, {
      sessionTtlMs: this.sessionTtlMs,
      nodeTtlMs: 3 * this.heartbeatMs,
      timeoutMs: this.registryTimeoutMs,
      lossCheckMs: this.heartbeatMs,
      onError: (op, err) => {
        if (op === "connect") this.onConnectionError(err);
      },
    });
    this.sessionStore = sessions;
    this.nodeStore = nodes;

    const ctx: NodeContext = {
      settings,
      bootId: this.bootId,
      log: this.log,
      metrics: this.metrics,
      store: sessions,
      nodes,
      call: (p, op) => withTimeout(p, settings.registryTimeoutMs, op),
    };
    this.sessions = new SessionTable(ctx);
    this.closer = new SessionCloser(ctx, this.sessions);
    this.misses = new MissClassifier(ctx);
    this.wiring = {
      ctx,
      table: this.sessions,
      close: (id) => this.closeSession(id),
      state: () => this.lifecycle.state,
    };
    this.transports = this.sessionTransports(
      (options, hooks) => new StreamableHTTPServerTransport({ ...options, ...hooks }),
    );
    this.heartbeats = new Heartbeat(ctx, () =>
      !this.lifecycle.serving ? null : this.lifecycle.state === "up" ? "up" : "draining",
    );

    // Heartbeat and idle sweep run while the node serves. The first heartbeat goes out when the
    // registry is first ready; the sidecar mode has none.
    this.lifecycle = new NodeLifecycle({
      drainGraceMs: this.drainGraceMs,
      background: [
        { everyMs: this.heartbeatMs, run: () => void this.heartbeat() },
        { everyMs: Math.min(this.idleTimeoutMs, MAX_SWEEP_MS), run: () => this.sweepIdle() },
        // A session whose registration failed is retried without waiting for its next request.
        { everyMs: RETRY_MS, run: () => void this.sessions.retryUnregistered() },
      ],
      idle: () => this.sessions.size === 0 && this.sessionlessInFlight === 0,
      onStep: (from, to) => {
        if (to === "draining") {
          this.log.info({ graceMs: this.drainGraceMs, sessions: this.sessions.size }, "draining");
          void this.heartbeat();
        }
        if (from === "draining") this.log.info({ sessions: this.sessions.size }, "drain finished");
      },
    });
    // Every (re)connection may reach an empty Redis (restart without persistence), and the first one
    // finds the sessions that arrived before it: put every live session back without waiting for
    // its next refresh.
    this.sessionStore.onStatus((s) => {
      if (s !== "ready") return;
      this.log.info({ sessions: this.sessions.size }, "registry reconnected, re-registering local sessions");
      void this.heartbeat();
      void this.sessions.reregisterAll();
    });
    // Redis lost records without this connection dropping (a Cluster failover, a flush), or came
    // back empty: the same, every live session written again.
    this.sessionStore.onLoss((reason) => {
      this.log.warn({ reason, sessions: this.sessions.size }, "registry lost data; re-registering local sessions");
      void this.sessions.reregisterAll();
    });
    if (!this.nodeStore)
      this.log.info(
        { registry: "sidecar" },
        "sidecar registry: node heartbeats off (liveness comes from Traefik's health check)",
      );
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
    return this.lifecycle.state;
  }

  /** True while up, or draining within the grace period. False once the grace has passed. */
  get healthy(): boolean {
    return this.lifecycle.healthy;
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
      state: this.lifecycle.state,
      sessions: this.sessions.size,
    });
  }

  private onConnectionError(err: Error): void {
    this.metrics.registryError("connection");
    const now = Date.now();
    if (now - this.lastConnError > CONNECTION_ERROR_LOG_MS) {
      this.lastConnError = now;
      this.log.warn({ err: errFields(err) }, "registry connection error");
    }
  }

  // ---- transports (transports.ts) -----------------------------------------------------------

  /**
   * A factory of session transports of any SDK line, wired to this node like createTransport's:
   * `construct` builds one transport from the application's options and the library's session
   * hooks. The v2 entry (v2.ts) makes its transports here; the sessions share one table.
   */
  sessionTransports<T extends WirableTransport, O extends object>(
    construct: (options: Omit<O, keyof SessionHooks>, hooks: SessionHooks) => T,
  ): SessionTransports<T, O> {
    return new SessionTransports<T, O>(this.wiring, construct);
  }

  /**
   * A stateful Streamable HTTP transport wired to this node's registry: the session is registered
   * inside onsessioninitialized, which the SDK awaits before it builds the initialize response.
   */
  createTransport(extras: TransportExtras = {}, server?: ConnectableServer): StreamableHTTPServerTransport {
    return this.transports.create(extras, server);
  }

  /** Remembers which server a transport is connected to, so closeSession can close both. */
  bindServer(transport: StreamableHTTPServerTransport, server: ConnectableServer): void {
    this.transports.bind(transport, server);
  }

  /** The transport serving a session in this process, if any. */
  transportFor(id: string): StreamableHTTPServerTransport | undefined {
    return this.transports.transportFor(id);
  }

  // ---- local sessions and TTL refresh (sessions.ts) -----------------------------------------

  /**
   * Marks a request for a local session: refreshes its registry TTL at most once per
   * refreshIntervalMs (retries a failed registration sooner), in the background.
   */
  touch(id: string): boolean {
    return this.sessions.touch(id);
  }

  /** Counts a request in flight for the idle sweep; call the returned function when it ends. */
  enter(id: string): () => void {
    return this.sessions.enter(id);
  }

  /**
   * Counts a request that belongs to no session (a stateless 2026-07-28 request) while it is
   * served: a drain ends early only once none is left. Call the returned function when it ends.
   */
  enterSessionless(): () => void {
    this.sessionlessInFlight++;
    let done = false;
    return () => {
      if (!done) {
        done = true;
        this.sessionlessInFlight--;
      }
    };
  }

  private sweepIdle(): void {
    for (const id of this.sessions.idle()) {
      this.log.info({ session: sessionTag(id) }, "closing idle session");
      void this.closeSession(id);
    }
  }

  // ---- hasSession (misses.ts) -----------------------------------------------------------------

  /**
   * Local check only (no registry latency). A miss that the registry knows about is explained in
   * the background: logged and counted as misroute, stale or unknown. See checkSession.
   */
  hasSession(id: string): boolean {
    if (this.sessions.has(id)) return true;
    void this.misses.explain(id);
    return false;
  }

  /** hasSession with the registry explanation awaited (each call counts one mismatch when not local). */
  checkSession(id: string): Promise<SessionCheck> {
    if (this.sessions.has(id)) return Promise.resolve({ local: true });
    return this.misses.explain(id);
  }

  // ---- close (close.ts) -----------------------------------------------------------------------

  /**
   * Closes a session: the local close (application hook, transport, server) is attempted, and the
   * registry record is deleted and the close announced whatever that did, also for sessions this
   * process never knew (they may belong to another node or a previous boot).
   */
  closeSession(id: string): Promise<CloseResult> {
    return this.closer.close(id);
  }

  // ---- heartbeat (heartbeat.ts), drain, stop (lifecycle.ts) -------------------------------------

  /** Writes the heartbeat now (also runs every heartbeatMs while the node serves). Never throws. */
  heartbeat(): Promise<boolean> {
    return this.heartbeats.beat();
  }

  /**
   * Marks the node draining (announced at once in its heartbeat), keeps serving existing sessions
   * for drainGraceMs (less if none remain), then resolves: the caller stops and exits. A second
   * call is the same drain; after stop() it rejects (ERR_AFFINITY_LIFECYCLE).
   */
  drain(): Promise<void> {
    return this.lifecycle.drain();
  }

  /**
   * Closes every local session (registry records deleted: they die with this process), removes the
   * heartbeat record if it still carries this boot, and closes the registry connection. A second
   * call is the same stop.
   */
  stop(): Promise<void> {
    return this.lifecycle.stop(async () => {
      const ids = this.sessions.ids();
      await Promise.all(ids.map((id) => this.closeSession(id)));
      await this.heartbeats.remove();
      await this.sessionStore.close();
      this.log.info({ closedSessions: ids.length }, "affinity stopped");
    });
  }
}

export function createAffinity(options: AffinityOptions): Affinity {
  return new Affinity(options);
}
