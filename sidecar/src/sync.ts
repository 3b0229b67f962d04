// Registry sync: the registry the settings name, and the mirror following it through its change
// channel, with a full scan (reconcile) at start, after every outage and every reconcileInterval
// to catch what the channel missed. At start the sync is retried with backoff until it succeeds
// (Redis down at start).
import type { Logger } from "pino";
import { createRegistry, describeRedis, type Registry, type RegistryChange } from "../../lib/registry/index.ts";
import { redisConnection } from "../../lib/settings/redis.ts";
import type { SidecarConfig } from "./config.ts";
import type { Periodic, SidecarContext } from "./context.ts";
import type { SidecarMetrics } from "./metrics.ts";
import type { RegistryRestore } from "./restore.ts";
import { errFields } from "../../lib/errors.ts";

export interface OpenedRegistry {
  registry: Registry;
  /** What the logs call it: the Redis target without credentials, or "memory". */
  target: string;
}

/**
 * The registry the settings name: Redis (one server, Sentinel or Cluster) or, with no Redis
 * setting, the in-memory store. Every failed operation is counted; it is logged at most every 5 s
 * per operation unless `errorsExpected()` (the sidecar is closing the connection itself).
 */
export function openRegistry(
  cfg: SidecarConfig,
  o: {
    metrics: SidecarMetrics;
    log: Logger;
    throttled: SidecarContext["throttled"];
    errorsExpected: () => boolean;
  },
): OpenedRegistry {
  const conn = redisConnection(cfg);
  const registry = createRegistry({
    ...conn,
    sessionTtlMs: cfg.sessionTtlMs,
    nodeTtlMs: cfg.nodeTtlMs,
    lossCheckMs: cfg.lossCheckIntervalMs,
    onError: (op, err) => {
      o.metrics.redisErrors.inc({ operation: op });
      if (!o.errorsExpected())
        o.throttled(`redis:${op}`, () => o.log.warn({ op, err: { message: err.message } }, "redis operation failed"));
    },
    onBadChange: (err) =>
      o.throttled("badchange", () =>
        o.log.warn({ err: { message: err.message } }, "unreadable message on the change channel (skipped)"),
      ),
  });
  return { registry, target: registry.kind === "redis" ? describeRedis(conn) : "memory" };
}

export class RegistrySync {
  /** A full scan has completed once: the mirror holds the registry. */
  #synced = false;
  #stopped = false;
  #subscribed = false;
  #reconciling: Promise<boolean> | null = null;
  /** The connection was lost; when it is back, a resync follows. */
  #connectionLost = false;
  /** The next scan follows a registry outage: it must not drop what it does not see yet. */
  #spareNextScan = false;
  #retryDelayMs = 100;
  #retryTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ctx: SidecarContext,
    /** The first full scan completed (and every later one). */
    private readonly onSynced: () => void,
    redisTarget: string,
    private readonly restore: RegistryRestore,
  ) {
    ctx.registry.onStatus((s) => {
      if (this.#stopped) return;
      if (s === "down") {
        this.#connectionLost = true;
        ctx.mirror.setHeartbeatsTrusted(false);
        ctx.log.warn({ redis: redisTarget }, "registry connection lost; keeping the last view fresh");
      } else if (s === "ready") {
        ctx.mirror.setHeartbeatsTrusted(true);
        if (this.#connectionLost) {
          this.#connectionLost = false;
          this.#spareNextScan = true;
          ctx.log.info("registry connection back; resyncing");
          if (!this.#retryTimer) void this.syncUntilDone();
        }
      }
    });
    // Redis lost records: the nodes put theirs back, this sidecar the ones it keeps (restore.ts),
    // and the next scan must not drop what is still on its way back.
    ctx.registry.onLoss((reason) => {
      if (this.#stopped) return;
      this.#spareNextScan = true;
      ctx.metrics.registryLosses.inc({ reason });
      ctx.log.warn(
        { redis: redisTarget, reason, kept: restore.size },
        "registry lost data; putting kept sessions back",
      );
      void this.restore.restore();
    });
  }

  get synced(): boolean {
    return this.#synced;
  }

  // Every write announced, this sidecar's own among them: those were applied already when made,
  // and applying them again changes nothing (updates.ts).
  private onChange = (c: RegistryChange): void => {
    if (this.#stopped) return;
    const { updates } = this.ctx;
    if (c.op === "session") updates.session(c.id, c.record);
    else if (c.op === "close") updates.close(c.id, "registry");
    else updates.node(c.cookie, c.record);
  };

  /** One full scan (joined when one is running); resolves whether it completed. */
  reconcile(): Promise<boolean> {
    this.#reconciling ??= this.scan().finally(() => {
      this.#reconciling = null;
    });
    return this.#reconciling;
  }

  private async scan(): Promise<boolean> {
    const { registry, mirror, metrics, log } = this.ctx;
    const t0 = performance.now();
    mirror.beginReconcile();
    let completed = false;
    let scanned = 0;
    let invalid = 0;
    try {
      if (!this.#subscribed) {
        await registry.subscribe(this.onChange);
        this.#subscribed = true;
      }
      const onInvalid = () => void invalid++;
      mirror.applyNodeListing(await registry.listNodes({ onInvalid }));
      for await (const batch of registry.scanSessions({ batch: 1000, onInvalid })) {
        if (this.#stopped) break;
        for (const { id, record } of batch) {
          mirror.applySession(id, record, true);
          this.restore.note(id, record);
        }
        scanned += batch.length;
      }
      completed = !this.#stopped;
    } catch (err) {
      metrics.reconciles.inc({ result: "error" });
      this.ctx.throttled("reconcile", () => log.warn({ err: errFields(err) }, "registry sync failed; retrying"));
    }
    const spare = this.#spareNextScan;
    const dropped = mirror.endReconcile(completed, spare);
    if (!completed) return false;
    this.#spareNextScan = false;
    this.restore.prune();
    metrics.reconciles.inc({ result: "ok" });
    metrics.reconcileDuration.observe((performance.now() - t0) / 1000);
    if (!this.#synced)
      log.info(
        { sessions: mirror.liveCount, nodes: mirror.nodeCount, ms: Math.round(performance.now() - t0), invalid },
        "registry synced",
      );
    else log.debug({ scanned, [spare ? "spared" : "dropped"]: dropped, invalid }, "reconciled");
    this.#synced = true;
    this.onSynced();
    mirror.refreshStates();
    this.ctx.changed();
    return true;
  }

  /** Syncs until a scan completes, backing off up to 5 s between attempts. */
  async syncUntilDone(): Promise<void> {
    this.#retryTimer = null;
    if (this.#stopped) return;
    if (await this.reconcile()) {
      this.#retryDelayMs = 100;
      return;
    }
    this.#retryDelayMs = Math.min(this.#retryDelayMs * 2, 5000);
    this.#retryTimer = setTimeout(() => void this.syncUntilDone(), this.#retryDelayMs);
  }

  /** Starts: the sync until a first scan completes, then a scan every reconcileInterval. */
  start(ticks: Periodic): void {
    ticks.every(this.ctx.cfg.reconcileIntervalMs, () => this.tick());
    void this.syncUntilDone();
  }

  /** The reconcileInterval tick: a full scan while synced and connected. */
  private async tick(): Promise<void> {
    if (this.#synced && this.ctx.registry.status() === "ready") await this.reconcile();
  }

  /** No more changes applied, no more scans started; a scan in progress stops at its next batch. */
  stop(): void {
    this.#stopped = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  /** The scan in progress, if any (to wait for it at shutdown). */
  get inProgress(): Promise<boolean> | null {
    return this.#reconciling;
  }
}
