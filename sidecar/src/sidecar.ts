// The sidecar service: mirrors the registry, tracks node liveness, publishes the registry view,
// ingests the plugin's events and serves metrics, health and the sessions API. This file only
// wires the components (sync.ts, ingest.ts, janitor.ts, watch.ts, schedule.ts, publisher.ts,
// updates.ts around the mirror) and owns the lifecycle (lifecycle.ts): start, the one transition
// to ready, and the one way down. What each component does, and on which interval, is its own.
import type { AddressInfo } from "node:net";
import { pino, type Logger } from "pino";
import { defaultViewFs, viewPaths, type ViewFs } from "../../lib/view/index.ts";
import { makeConfig, SIDECAR_SETTINGS, type SidecarConfig, type SidecarRuntimeOptions } from "./config.ts";
import { logRedaction, redactSettings } from "../../lib/settings/index.ts";
import { Periodic, settleWithin, throttledLog, type SidecarContext } from "./context.ts";
import { createHttpServer } from "./http.ts";
import { EventIngest } from "./ingest.ts";
import { LearnedJanitor } from "./janitor.ts";
import { Lifecycle, type SidecarState } from "./lifecycle.ts";
import { addStateGauges, createMetrics } from "./metrics.ts";
import { Mirror } from "./mirror.ts";
import { chooseEpoch, Publisher } from "./publisher.ts";
import { FastPathWriter } from "./fast-path.ts";
import { FastPathCounts } from "./fast-path-counts.ts";
import { PublishSchedule } from "./schedule.ts";
import { RegistryRestore } from "./restore.ts";
import { openRegistry, RegistrySync } from "./sync.ts";
import { MirrorUpdates } from "./updates.ts";
import { NodeWatch } from "./watch.ts";
import { McpAffinityError, type ErrorCode, errFields } from "../../lib/errors.ts";

/** A running sidecar, as its callers (the command line, the stack runner, tests) see it. */
export interface Sidecar {
  /** Base URL of the HTTP interface. */
  url: string;
  /** The epoch of the view it publishes. */
  epoch: number;
  log: Logger;
  /** The lifecycle state (see lifecycle.ts). */
  state(): SidecarState;
  /** A view built from the synced registry is on disk, and the sidecar is not closing. */
  ready(): boolean;
  /** Stops taking work, flushes events and the view, leaves the view in place. Idempotent. */
  close(): Promise<void>;
}

/**
 * What a test needs that no request can show: not part of the sidecar's API (index.ts does not
 * export it). Everything else a test checks through the HTTP interface, the view and the registry.
 */
export interface SidecarTestHooks {
  /** Runs a full resync now instead of at the next --reconcile-interval; resolves whether it completed. */
  reconcile(): Promise<boolean>;
  /** Resolves once no publish is in progress (a write already started has landed). */
  publishIdle(): Promise<void>;
}
const testHooks = new WeakMap<Sidecar, SidecarTestHooks>();
/** Tests only: the hooks of a sidecar started by startSidecar. */
export function sidecarTestHooks(sc: Sidecar): SidecarTestHooks {
  const hooks = testHooks.get(sc);
  if (!hooks) throw new Error("not a sidecar started by startSidecar");
  return hooks;
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
  const { epoch, previous } = await chooseEpoch(cfg.dir, cfg.shardBits, { fs, fixed: runtime.epoch });
  await makeSharedDir(cfg.dir, fs);

  // --- state and components ----------------------------------------------------------------
  const lifecycle = new Lifecycle();
  const mirror = new Mirror(cfg);
  const metrics = createMetrics();
  const throttled = throttledLog();
  const { registry, target } = openRegistry(cfg, {
    metrics,
    log,
    throttled,
    // At shutdown the connection is being closed by us: its errors are expected.
    errorsExpected: () => !lifecycle.running,
  });
  const publisher = new Publisher(mirror, { dir: cfg.dir, epoch, fs, log, metrics });
  if (previous) publisher.adopt(previous);
  const fastPath = cfg.fastPathFile
    ? new FastPathWriter({
        file: cfg.fastPathFile,
        settings: {
          pathPrefix: cfg.mcpPath,
          entryPoints: cfg.fastPathEntryPoints,
          middlewares: cfg.fastPathMiddlewares,
          priority: cfg.fastPathPriority,
          maxBodyBytes: cfg.fastPathMaxBodyBytes,
        },
        log,
        metrics,
        fs,
      })
    : null;
  const schedule = new PublishSchedule({
    mirror,
    publisher,
    log,
    epoch,
    metaIntervalMs: cfg.metaIntervalMs,
    // The one way into ready: the first view built from a synced mirror is on disk.
    onSyncedView: () => {
      if (lifecycle.state === "syncing") lifecycle.to("ready");
    },
    onPublished: () => void fastPath?.update(mirror.liveIncarnations()),
  });
  const changed = () => schedule.changed();
  const restore = new RegistryRestore({ cfg, registry, metrics, log, mirror });
  const updates = new MirrorUpdates(mirror, metrics, changed, restore);
  const ctx: SidecarContext = { cfg, log, metrics, registry, mirror, updates, fs, throttled, changed };
  const sync = new RegistrySync(ctx, () => schedule.mirrorSynced(), target, restore);
  const watch = new NodeWatch(ctx);
  const ingest = new EventIngest(ctx, (id, hash, cookie) => watch.suspect(id, hash, cookie));
  const janitor = new LearnedJanitor(ctx, publisher);
  const fastPathCounts = fastPath ? new FastPathCounts(ctx) : null;
  const isReady = () => lifecycle.state === "ready";
  addStateGauges(metrics, {
    mirror,
    lastPublished: () => publisher.lastPublished,
    registryUp: () => registry.status() === "ready",
    ready: isReady,
  });

  // --- HTTP ----------------------------------------------------------------------------------
  const server = createHttpServer({
    log,
    metrics,
    registry,
    mirror,
    apiToken: cfg.apiToken,
    health: () => ({
      registry: registry.kind,
      registryStatus: registry.status(),
      synced: sync.synced,
      epoch,
      viewAgeMs: publisher.lastPublished === null ? null : Date.now() - publisher.lastPublished,
      sessions: mirror.liveCount,
      nodes: mirror.nodeCount,
    }),
    ready: isReady,
    // Applied at once; the write's PUBLISH applies it again (updates.ts).
    onRegistered: (id, record) => updates.session(id, record),
    onClosed: (id) => updates.close(id, "api"),
  });

  // --- the one way down: from any state, any number of calls, one shutdown ----------------------
  const ticks = new Periodic(log);
  let listening = false;
  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      // Started components flush what the plugin already wrote: events to the registry, then the view.
      const started = lifecycle.state !== "starting";
      lifecycle.to("closing");
      ticks.stop();
      sync.stop();
      restore.stop();
      watch.stop();
      schedule.stop();
      const serverClosed = listening ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 1000).unref();
      if (started) {
        await ingest.finalDrain(FINAL_DRAIN_MS);
        await schedule.finalPublish();
      }
      await fastPath?.idle();
      const scan = sync.inProgress;
      if (scan) await settleWithin(scan, SCAN_SETTLE_MS);
      await registry.close();
      await serverClosed;
      lifecycle.to("closed");
      if (started) log.info({ epoch }, "mcp-affinity sidecar stopped; the last view stays in place");
    })());

  // --- start -----------------------------------------------------------------------------------
  try {
    await listen(server, cfg.host, cfg.port);
    listening = true;
  } catch (err) {
    await close();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`;
  log.info(
    {
      url,
      dir: cfg.dir,
      epoch,
      registry: target,
      shardBits: cfg.shardBits,
      settings: redactSettings(SIDECAR_SETTINGS, cfg),
    },
    "mcp-affinity sidecar started",
  );
  lifecycle.to("syncing");
  sync.start(ticks);
  ingest.start(ticks);
  watch.start(ticks);
  janitor.start(ticks);
  fastPathCounts?.start(ticks);
  // The first view: once synced, or after a short wait with what is known (Redis down at start).
  schedule.start(ticks);

  const sidecar: Sidecar = { url, epoch, log, state: () => lifecycle.state, ready: isReady, close };
  testHooks.set(sidecar, { reconcile: () => sync.reconcile(), publishIdle: () => publisher.idle() });
  return sidecar;
}

/** The shared directory must be usable: the plugin writes learned/ and events/ into it. */
async function makeSharedDir(dir: string, fs: ViewFs): Promise<void> {
  const paths = viewPaths(dir);
  try {
    for (const p of [paths.shards, paths.learned, paths.events]) await fs.mkdir(p, { recursive: true });
  } catch (err) {
    throw new SidecarError(
      `cannot create the shared directory ${dir}: ${errFields(err).message}`,
      "ERR_SIDECAR_DIR",
      "--dir",
    );
  }
}

function listen(server: ReturnType<typeof createHttpServer>, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", (err: Error) =>
      reject(new SidecarError(`cannot listen on ${host}:${port}: ${err.message}`, "ERR_SIDECAR_LISTEN", "--port")),
    );
    server.listen(port, host, () => resolve());
  });
}
