// The sidecar service: mirrors the registry, tracks node liveness, publishes the registry view,
// ingests the plugin's events and serves metrics, health and the sessions API. This file wires
// the components (sync.ts, ingest.ts, janitor.ts, watch.ts, schedule.ts) and owns the lifecycle
// (lifecycle.ts): start, the one transition to ready, and close.
import { randomInt } from "node:crypto";
import type { AddressInfo } from "node:net";
import { pino, type Logger } from "pino";
import { createRegistry, describeRedis, type Registry } from "../../lib/registry/index.ts";
import { defaultViewFs, readMeta, viewPaths, type DrainResult } from "../../lib/view/index.ts";
import { makeConfig, SIDECAR_SETTINGS, type SidecarConfig, type SidecarRuntimeOptions } from "./config.ts";
import { logRedaction, redactSettings } from "../../lib/settings/index.ts";
import { redisConnection } from "../../lib/settings/redis.ts";
import { countRegistration, Periodic, settleWithin, throttledLog, type SidecarContext } from "./context.ts";
import { createHttpServer } from "./http.ts";
import { EventIngest } from "./ingest.ts";
import { LearnedJanitor } from "./janitor.ts";
import { Lifecycle, type SidecarState } from "./lifecycle.ts";
import { addStateGauges, createMetrics, type SidecarMetrics } from "./metrics.ts";
import { Mirror } from "./mirror.ts";
import { Publisher, type PublishResult } from "./publisher.ts";
import { PublishSchedule } from "./schedule.ts";
import { RegistrySync } from "./sync.ts";
import { NodeWatch } from "./watch.ts";
import { McpAffinityError, type ErrorCode, errFields } from "../../lib/errors.ts";

export { isPermanentApplyError } from "./ingest.ts";

export interface Sidecar {
  /** Base URL of the HTTP interface. */
  url: string;
  port: number;
  epoch: number;
  config: SidecarConfig;
  registry: Registry;
  mirror: Mirror;
  publisher: Publisher;
  metrics: SidecarMetrics;
  log: Logger;
  /** The lifecycle state (see lifecycle.ts). */
  state(): SidecarState;
  /** A view built from the synced registry is on disk, and the sidecar is not closing. */
  ready(): boolean;
  /** A full registry sync has completed. */
  synced(): boolean;
  /** Runs one drain of events/ now (tests). */
  drainNow(): Promise<DrainResult>;
  /** Publishes now (tests, bench). */
  publishNow(): Promise<PublishResult>;
  /** Runs a full resync now. */
  reconcileNow(): Promise<boolean>;
  /** Stops taking work, flushes events and the view, leaves the view in place. Idempotent. */
  close(): Promise<void>;
}

export class SidecarError extends McpAffinityError {
  constructor(
    message: string,
    code: ErrorCode,
    readonly setting?: string,
  ) {
    super(code, message);
  }
}

/** How long the shutdown waits for the final drain, and for a scan in progress. */
const FINAL_DRAIN_MS = 2000;
const SCAN_SETTLE_MS = 1000;

export async function startSidecar(
  config: Partial<SidecarConfig> = {},
  runtime: SidecarRuntimeOptions = {},
): Promise<Sidecar> {
  const cfg = makeConfig(config);
  const log =
    runtime.logger ??
    pino({
      level: cfg.logLevel,
      base: { service: "mcp-affinity-sidecar" },
      redact: logRedaction(SIDECAR_SETTINGS, ["password", "token"]),
    });
  const fs = runtime.fs ?? defaultViewFs;
  const paths = viewPaths(cfg.dir);
  // A view left by a previous process is taken over (its epoch and owner ids) rather than replaced:
  // a new epoch would make every shard disagree with the meta until all were rewritten.
  const previous = runtime.epoch === undefined ? await readMeta(cfg.dir, { fs }).catch(() => null) : null;
  const adopt = previous && previous.shardBits === cfg.shardBits ? previous : null;
  const epoch = runtime.epoch ?? adopt?.epoch ?? randomInt(1, 0xffff_ffff);

  // The shared directory must be usable: the plugin writes learned/ and events/ into it.
  try {
    for (const p of [paths.shards, paths.learned, paths.events]) await fs.mkdir(p, { recursive: true });
  } catch (err) {
    throw new SidecarError(
      `cannot create the shared directory ${cfg.dir}: ${errFields(err).message}`,
      "ERR_SIDECAR_DIR",
      "--dir",
    );
  }

  const lifecycle = new Lifecycle();
  const mirror = new Mirror({
    shardBits: cfg.shardBits,
    nodeTtlMs: cfg.nodeTtlMs,
    downLimitMs: cfg.downLimitMs,
    tombstoneTtlMs: cfg.tombstoneTtlMs,
    retryAfterSeconds: cfg.retryAfterSeconds,
    // A few missed rounds (a busy event loop) keep the last result; a stopped prober loses its say.
    probeValidMs: cfg.probePath === "off" ? 0 : 4 * cfg.probeIntervalMs + cfg.probeFailures * cfg.probeTimeoutMs,
    probeFailuresToDown: cfg.probeFailures,
  });
  const metrics = createMetrics();
  const throttled = throttledLog();

  const conn = redisConnection(cfg);
  const registry = createRegistry({
    ...conn,
    sessionTtlMs: cfg.sessionTtlMs,
    nodeTtlMs: cfg.nodeTtlMs,
    onError: (op, err) => {
      metrics.redisErrors.inc({ operation: op });
      // At shutdown the connection is being closed by us: its errors are expected.
      if (lifecycle.running)
        throttled(`redis:${op}`, () => log.warn({ op, err: { message: err.message } }, "redis operation failed"));
    },
    onBadChange: (err) =>
      throttled("badchange", () =>
        log.warn({ err: { message: err.message } }, "unreadable message on the change channel (skipped)"),
      ),
  });

  const publisher = new Publisher(mirror, { dir: cfg.dir, epoch, fs, log, metrics });
  if (adopt) {
    mirror.reserveOwnerIds(adopt.nodes.reduce((max, n) => Math.max(max, n.id), 0));
    publisher.adopt(adopt);
  }

  // --- components ------------------------------------------------------------------------
  const schedule = new PublishSchedule({
    mirror,
    publisher,
    log,
    epoch,
    // The one way into ready: the first view built from a synced mirror is on disk.
    onSyncedView: () => {
      if (lifecycle.state === "syncing") lifecycle.to("ready");
    },
  });
  const ctx: SidecarContext = { cfg, log, metrics, registry, mirror, fs, throttled, changed: () => schedule.changed() };
  const sync = new RegistrySync(ctx, () => schedule.mirrorSynced(), describeRedis(conn));
  const watch = new NodeWatch(ctx);
  const ingest = new EventIngest(ctx, (id, hash, cookie) => watch.suspect(id, hash, cookie));
  const janitor = new LearnedJanitor(ctx, publisher);
  const isReady = () => lifecycle.state === "ready";
  addStateGauges(metrics, {
    mirror,
    lastPublished: () => publisher.lastPublished,
    registryUp: () => registry.status() === "ready",
    ready: isReady,
  });

  const ticks = new Periodic(log);
  const startTicks = () => {
    ticks.every(cfg.eventIntervalMs, () => ingest.tick());
    ticks.every(cfg.metaIntervalMs, () => schedule.refresh());
    ticks.every(Math.max(50, Math.min(250, Math.floor(cfg.nodeTtlMs / 4))), () => watch.refresh());
    ticks.every(cfg.nodePollIntervalMs, () => watch.pollHeartbeats());
    ticks.every(cfg.reconcileIntervalMs, () => sync.tick());
    ticks.every(1000, () => janitor.sweep());
    ticks.every(cfg.edgeTouchIntervalMs, () => ingest.flushTouches());
    if (cfg.probePath !== "off") ticks.every(cfg.probeIntervalMs, () => watch.probe());
    if (cfg.traefikApi) {
      ticks.every(cfg.traefikPollIntervalMs, () => watch.pollTraefik());
      void watch.pollTraefik();
    }
  };

  // --- HTTP ------------------------------------------------------------------------------
  const health = () => ({
    registry: registry.kind,
    registryStatus: registry.status(),
    synced: sync.synced,
    epoch,
    viewAgeMs: publisher.lastPublished === null ? null : Date.now() - publisher.lastPublished,
    sessions: mirror.liveCount,
    nodes: mirror.nodes.size,
  });
  const server = createHttpServer({
    log,
    metrics,
    registry,
    mirror,
    apiToken: cfg.apiToken,
    health,
    ready: isReady,
    onRegistered: (id, record) => {
      countRegistration(metrics, mirror.applySession(id, record), record);
      ctx.changed();
    },
    onClosed: (id) => {
      if (mirror.applyClose(id)) metrics.closes.inc({ origin: "api" });
      ctx.changed();
    },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: Error) =>
        reject(
          new SidecarError(`cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`, "ERR_SIDECAR_LISTEN", "--port"),
        ),
      );
      server.listen(cfg.port, cfg.host, () => resolve());
    });
  } catch (err) {
    lifecycle.to("closing");
    sync.stop();
    watch.stop();
    await registry.close();
    lifecycle.to("closed");
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`;
  log.info(
    {
      url,
      dir: cfg.dir,
      epoch,
      registry: registry.kind === "redis" ? describeRedis(conn) : "memory",
      shardBits: cfg.shardBits,
      settings: redactSettings(SIDECAR_SETTINGS, cfg),
    },
    "mcp-affinity sidecar started",
  );

  lifecycle.to("syncing");
  startTicks();
  void sync.syncUntilDone();
  // The first view: once synced, or after a short wait with what is known (Redis down at start).
  schedule.start();

  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      lifecycle.to("closing");
      ticks.stop();
      sync.stop();
      watch.stop();
      schedule.stop();
      const serverClosed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 1000).unref();
      // The final flush: events the plugin already wrote go to the registry, then the view.
      await ingest.finalDrain(FINAL_DRAIN_MS);
      await schedule.finalPublish();
      const scan = sync.inProgress;
      if (scan) await settleWithin(scan, SCAN_SETTLE_MS);
      await registry.close();
      await serverClosed;
      lifecycle.to("closed");
      log.info({ epoch }, "mcp-affinity sidecar stopped; the last view stays in place");
    })());

  return {
    url,
    port,
    epoch,
    config: cfg,
    registry,
    mirror,
    publisher,
    metrics,
    log,
    state: () => lifecycle.state,
    ready: isReady,
    synced: () => sync.synced,
    drainNow: () => ingest.drain(),
    publishNow: () => schedule.publishNow(),
    reconcileNow: () => sync.reconcile(),
    close,
  };
}
