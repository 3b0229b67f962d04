// The sidecar service: mirrors the registry, tracks node liveness, publishes the registry view,
// ingests the plugin's events and serves metrics, health and the sessions API.
import { randomInt } from "node:crypto";
import { stat } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import {
  createRegistry,
  describeRedis,
  sessionTag,
  type Registry,
  type RegistryChange,
  type SessionRecord,
} from "../../lib/registry/index.ts";
import {
  defaultViewFs,
  deleteLearned,
  drainEvents,
  QUARANTINE_DIR,
  listLearned,
  readMeta,
  viewPaths,
  type DrainResult,
  type EventBatch,
} from "../../lib/view/index.ts";
import { makeConfig, type SidecarConfig, type SidecarRuntimeOptions } from "./config.ts";
import { createHttpServer } from "./http.ts";
import { createMetrics, type SidecarMetrics } from "./metrics.ts";
import { DeathChecker } from "./deaths.ts";
import { EdgeTouches } from "./touches.ts";
import { Mirror } from "./mirror.ts";
import { Publisher, type PublishResult } from "./publisher.ts";
import { probeNode, type ProbeResult } from "./probe.ts";
import { readTraefikServers } from "./traefik.ts";

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
  ready(): boolean;
  synced(): boolean;
  /** Runs one drain of events/ now (tests). */
  drainNow(): Promise<DrainResult>;
  /** Publishes now (tests, bench). */
  publishNow(): Promise<PublishResult>;
  /** Runs a full resync now. */
  reconcileNow(): Promise<boolean>;
  /** Stops taking work, flushes events and the view, leaves the view in place. */
  close(): Promise<void>;
}

export class SidecarError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly setting?: string,
  ) {
    super(message);
  }
}

const hashKeyFromHex = (hex: string) => Buffer.from(hex, "hex").toString("latin1");

// Redis replies that say "not now" rather than "never" (ioredis ReplyError messages).
const TRANSIENT_REPLY = /^(OOM|LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|MOVED|ASK)\b/;
/**
 * A batch that fails for a permanent reason (a record the registry refuses, a Redis error reply
 * about the data) would block every later batch forever: it is moved aside instead. Connection
 * trouble (Redis down) is transient: the batch is retried.
 */
export function isPermanentApplyError(err: Error): boolean {
  const e = err as Error & { code?: string; cause?: unknown };
  if (e.code === "ERR_REGISTRY_SCHEMA" || e.code === "ERR_EVENT_FORMAT" || e.code === "ERR_VIEW_FORMAT") return true;
  const cause = e.cause as (Error & { name?: string }) | undefined;
  return cause?.name === "ReplyError" && !TRANSIENT_REPLY.test(cause.message);
}

export async function startSidecar(config: Partial<SidecarConfig> = {}, runtime: SidecarRuntimeOptions = {}): Promise<Sidecar> {
  const cfg = makeConfig(config);
  const log =
    runtime.logger ??
    pino({ level: cfg.logLevel, base: { service: "mcp-affinity-sidecar" }, redact: { paths: ["*.password", "*.token", "*.apiToken"], censor: "***" } });
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
  } catch (err: any) {
    throw new SidecarError(`cannot create the shared directory ${cfg.dir}: ${err?.message}`, "ERR_SIDECAR_DIR", "--dir");
  }

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

  let closing = false;
  let synced = false;
  let metrics: SidecarMetrics; // assigned below; the registry's error hook needs it
  const lastLog = new Map<string, number>();
  /** One line per kind per 5 s: an outage must not flood the log. */
  const throttled = (kind: string, fn: () => void) => {
    const now = Date.now();
    if (now - (lastLog.get(kind) ?? 0) < 5000) return;
    lastLog.set(kind, now);
    fn();
  };

  const conn = {
    url: cfg.redisUrl ?? undefined,
    sentinels: cfg.redisSentinels ?? undefined,
    sentinelName: cfg.redisSentinelName ?? undefined,
    cluster: cfg.redisCluster ?? undefined,
    password: cfg.redisPassword ?? undefined,
  };
  const registry = createRegistry({
    ...conn,
    sessionTtlMs: cfg.sessionTtlMs,
    nodeTtlMs: cfg.nodeTtlMs,
    onError: (op, err) => {
      metrics?.redisErrors.inc({ operation: op });
      if (!closing) throttled(`redis:${op}`, () => log.warn({ op, err: { message: err.message } }, "redis operation failed"));
    },
    onBadChange: (err) => throttled("badchange", () => log.warn({ err: { message: err.message } }, "unreadable message on the change channel (skipped)")),
  });

  let publisher: Publisher;
  metrics = createMetrics({
    mirror,
    lastPublished: () => publisher?.lastPublished ?? null,
    registryUp: () => registry.status() === "ready",
    ready: () => isReady(),
  });
  publisher = new Publisher(mirror, { dir: cfg.dir, epoch, fs, log, metrics });
  if (adopt) {
    mirror.reserveOwnerIds(adopt.nodes.reduce((max, n) => Math.max(max, n.id), 0));
    publisher.adopt(adopt);
  }
  /** Set once a view published after the first sync is on disk (an earlier, empty view does not count). */
  let syncedViewPublished = false;
  const isReady = () => syncedViewPublished && !closing;

  // --- publishing ------------------------------------------------------------------------
  let firstPublishAllowed = false;
  let publishTimer: NodeJS.Timeout | null = null;
  let lastMetaVersion = -1;
  // Changes of one tick go out together; a publish in progress coalesces the rest (Publisher).
  // No longer delay: the time from a registration to the view is what the edge waits on.
  const publishSoon = (delayMs = 0) => {
    if (closing || !firstPublishAllowed || publishTimer) return;
    publishTimer = setTimeout(() => {
      publishTimer = null;
      void publishNow();
    }, delayMs);
  };
  const publishNow = async (): Promise<PublishResult> => {
    lastMetaVersion = mirror.metaVersion;
    const wasSynced = synced;
    const r = await publisher.publish();
    if (wasSynced && r.ok) syncedViewPublished = true;
    if (r.kind === "full") log.info({ epoch, shards: r.shards, sessions: mirror.liveCount, ms: Math.round(r.ms), ok: r.ok }, "view published");
    return r;
  };
  const maybePublish = () => {
    if (mirror.dirty.size || mirror.metaVersion !== lastMetaVersion) publishSoon();
  };

  // --- registry changes ------------------------------------------------------------------
  const countNew = (kind: string, record: SessionRecord) => {
    if (kind === "new") metrics.registrations.inc({ source: record.source });
  };
  const onChange = (c: RegistryChange) => {
    if (closing) return;
    switch (c.op) {
      case "session":
        countNew(mirror.applySession(c.id, c.record), c.record);
        break;
      case "close":
        if (mirror.applyClose(c.id)) metrics.closes.inc({ origin: "registry" });
        break;
      case "node":
        mirror.applyNode(c.cookie, c.record);
        mirror.refreshStates();
        break;
    }
    maybePublish();
  };

  // --- sync and reconcile ----------------------------------------------------------------
  let subscribed = false;
  let reconciling: Promise<boolean> | null = null;
  /** The next scan follows a registry outage: it must not drop what it does not see yet. */
  let afterOutage = false;
  const reconcile = (): Promise<boolean> => {
    reconciling ??= (async () => {
      const t0 = performance.now();
      mirror.beginReconcile();
      let completed = false;
      let scanned = 0;
      let invalid = 0;
      try {
        if (!subscribed) {
          await registry.subscribe(onChange);
          subscribed = true;
        }
        const onInvalid = () => void invalid++;
        mirror.applyNodeListing(await registry.listNodes({ onInvalid }));
        for await (const batch of registry.scanSessions({ batch: 1000, onInvalid })) {
          if (closing) break;
          for (const { id, record } of batch) mirror.applySession(id, record, true);
          scanned += batch.length;
        }
        completed = !closing;
      } catch (err: any) {
        metrics.reconciles.inc({ result: "error" });
        throttled("reconcile", () => log.warn({ err: { message: err?.message, code: err?.code } }, "registry sync failed; retrying"));
      }
      const spare = afterOutage;
      const dropped = mirror.endReconcile(completed, spare);
      if (completed) afterOutage = false;
      if (completed) {
        metrics.reconciles.inc({ result: "ok" });
        metrics.reconcileDuration.observe((performance.now() - t0) / 1000);
        if (!synced) log.info({ sessions: mirror.liveCount, nodes: mirror.nodes.size, ms: Math.round(performance.now() - t0), invalid }, "registry synced");
        else log.debug({ scanned, [spare ? "spared" : "dropped"]: dropped, invalid }, "reconciled");
        synced = true;
        firstPublishAllowed = true;
        mirror.refreshStates();
        maybePublish();
      }
      return completed;
    })().finally(() => {
      reconciling = null;
    });
    return reconciling;
  };

  // Sync until it works (Redis down at start: keep retrying with backoff).
  let syncDelay = 100;
  let syncTimer: NodeJS.Timeout | null = null;
  const syncLoop = async () => {
    syncTimer = null;
    if (closing) return;
    if (await reconcile()) {
      syncDelay = 100;
      return;
    }
    syncDelay = Math.min(syncDelay * 2, 5000);
    syncTimer = setTimeout(syncLoop, syncDelay);
  };
  let wasDown = false;
  registry.onStatus((s) => {
    if (closing) return;
    if (s === "down") {
      wasDown = true;
      mirror.setHeartbeatsTrusted(false);
      log.warn({ redis: describeRedis(conn) }, "registry connection lost; keeping the last view fresh");
    } else if (s === "ready") {
      mirror.setHeartbeatsTrusted(true);
      if (wasDown) {
        wasDown = false;
        afterOutage = true;
        log.info("registry connection back; resyncing");
        if (!syncTimer) void syncLoop();
      }
    }
  });

  // --- events ----------------------------------------------------------------------------
  const deaths = new DeathChecker({
    urlFor: (cookie) => mirror.urlFor(cookie),
    path: cfg.mcpPath,
    log,
    onResult: (result) => metrics.deathChecks.inc({ result }),
    onDead: async (id, hash) => {
      await registry.closeSession(id);
      if (mirror.applyClose(id, hashKeyFromHex(hash))) metrics.closes.inc({ origin: "owner-404" });
      log.info({ session: sessionTag(id) }, "session gone on its node (404): closed at the edge");
      maybePublish();
    },
  });
  const touches = new EdgeTouches({
    touch: (id) => registry.touchEdgeSession(id, Math.min(cfg.edgeSessionTtlMs, cfg.sessionTtlMs), cfg.sessionTtlMs),
    onResult: (result, n) => metrics.edgeTouches.inc({ result }, n),
  });
  const applyBatch = async (b: EventBatch): Promise<void> => {
    for (const l of b.learned) {
      const key = hashKeyFromHex(l.hash);
      if (mirror.closedAt.has(key) || mirror.lookup(key)) continue; // known (or closed): a record exists
      const record: SessionRecord = { node: mirror.urlFor(l.cookie), cookie: l.cookie, boot: null, created: b.t || Date.now(), source: "edge" };
      // Nothing but activity tells the edge such a session still lives: a short TTL, renewed by use.
      if (await registry.registerSession(l.id, record, { ifAbsent: true, ttlMs: Math.min(cfg.edgeSessionTtlMs, cfg.sessionTtlMs) })) {
        countNew(mirror.applySession(l.id, record, false, key), record);
        log.debug({ session: sessionTag(l.id), cookie: l.cookie }, "session learned at the edge registered");
      } else {
        const existing = await registry.lookupSession(l.id);
        if (existing) countNew(mirror.applySession(l.id, existing, false, key), existing);
      }
    }
    for (const c of b.closed) {
      await registry.closeSession(c.id);
      // One close, one count: the node's own close reaches this mirror through the registry too,
      // and a retried batch finds the session closed already.
      if (mirror.applyClose(c.id, hashKeyFromHex(c.hash))) metrics.closes.inc({ origin: "edge" });
      log.debug({ session: sessionTag(c.id) }, "session closed at the edge");
    }
    // Counted only once the whole batch is applied: a retried batch is never counted twice.
    for (const v of b.suspects ?? []) deaths.suspect(v.id, v.hash, v.cookie);
    for (const a of b.active ?? []) if (mirror.lookup(hashKeyFromHex(a.hash))) touches.add(a.id);
    for (const [reason, n] of Object.entries(b.decisions)) metrics.decisions.inc({ reason }, n);
    for (const [body, n] of Object.entries(b.bodies ?? {})) metrics.postBodies.inc({ body }, n);
    if (b.dropped) metrics.eventsDropped.inc(b.dropped);
    if (b.t) metrics.eventLag.observe(Math.max(0, Date.now() - b.t) / 1000);
    maybePublish();
  };
  let draining: Promise<DrainResult> | null = null;
  // After a failed apply (registry down), pending files are not re-read every tick: back off to 1 s.
  let drainBackoffMs = 0;
  let drainNotBefore = 0;
  const drainTick = async () => {
    if (drainBackoffMs && Date.now() < drainNotBefore && registry.status() !== "ready") return;
    const r = await drainNow();
    drainBackoffMs = r.failed ? Math.min(Math.max(drainBackoffMs * 2, cfg.eventIntervalMs * 2), 1000) : 0;
    drainNotBefore = Date.now() + drainBackoffMs;
  };
  const drainNow = (): Promise<DrainResult> => {
    draining ??= drainEvents(cfg.dir, applyBatch, {
      fs,
      isPermanent: isPermanentApplyError,
      onQuarantine: (file, err: any) => {
        metrics.eventFiles.inc({ result: "quarantined" });
        log.error({ file, err: { message: err?.message, code: err?.code } }, "event batch cannot be applied; moved to events-quarantine/");
      },
      onCorrupt: (file, err) => throttled(`corrupt:${file}`, () => log.warn({ file, err: { message: err.message } }, "corrupt event file deleted")),
      onBadLines: (file, n) => throttled("badlines", () => log.warn({ file, lines: n }, "unreadable event lines skipped")),
      onError: (file, err: any) =>
        throttled("apply", () => log.warn({ file, err: { message: err?.message, code: err?.code } }, "event batch not applied yet; kept for the next attempt")),
    })
      .then((r) => {
        if (r.applied) metrics.eventFiles.inc({ result: "applied" }, r.applied);
        void countQuarantine();
        if (r.corrupt) metrics.eventFiles.inc({ result: "corrupt" }, r.corrupt);
        if (r.badLines) metrics.eventBadLines.inc(r.badLines);
        metrics.eventPending.set(r.pending + r.failed);
        return r;
      })
      .catch((err: any) => {
        metrics.dirErrors.inc({ operation: "read_events" });
        throttled("events", () => log.warn({ err: { message: err?.message, code: err?.code } }, "cannot read events/"));
        return { applied: 0, corrupt: 0, pending: 0, failed: 0, quarantined: 0, badLines: 0, foreign: 0 };
      })
      .finally(() => {
        draining = null;
      });
    return draining;
  };

  const countQuarantine = async () => {
    const names = await fs.readdir(join(cfg.dir, QUARANTINE_DIR)).catch(() => [] as string[]);
    metrics.eventQuarantine.set(names.filter((n) => n.startsWith("q-")).length);
  };

  // --- learned/ cleanup and tombstones ---------------------------------------------------
  const cleanupLearned = async () => {
    if (mirror.expireTombstones()) maybePublish();
    if (!publisher.published) return;
    const pending = publisher.pendingShards();
    const now = Date.now();
    const invalid: string[] = [];
    try {
      const entries = await listLearned(cfg.dir, { fs, withMtime: true, onInvalid: (n) => invalid.push(n) });
      metrics.learnedFiles.set(entries.length + invalid.length);
      for (const f of entries) {
        let reason: "published" | "expired" | null = null;
        if (mirror.isPublished(hashKeyFromHex(f.hashHex), pending)) reason = "published";
        else if (now - (f.mtimeMs ?? now) > cfg.learnedMaxAgeMs) reason = "expired";
        if (reason) {
          await deleteLearned(cfg.dir, f.name, { fs, hashHex: f.hashHex });
          metrics.learnedDeleted.inc({ reason });
        }
      }
      for (const name of invalid) {
        // The plugin may be mid-write; only a file that stays unreadable is removed.
        const st = await stat(join(paths.learned, name)).catch(() => null);
        if (st && now - st.mtimeMs > 5000) {
          await deleteLearned(cfg.dir, name, { fs });
          metrics.learnedDeleted.inc({ reason: "invalid" });
          throttled("learned-invalid", () => log.warn({ file: name }, "unreadable learned/ file deleted"));
        }
      }
    } catch (err: any) {
      metrics.dirErrors.inc({ operation: "learned" });
      throttled("learned", () => log.warn({ err: { message: err?.message, code: err?.code } }, "cannot clean learned/"));
    }
  };

  // --- node liveness ---------------------------------------------------------------------
  const pollNodes = async () => {
    if (registry.status() !== "ready") return;
    const cookies = [...mirror.nodes.values()].filter((n) => n.hb).map((n) => n.cookie);
    if (!cookies.length) return;
    try {
      const recs = await registry.getNodes(cookies);
      recs.forEach((r, i) => r && mirror.applyNode(cookies[i], r));
    } catch {
      /* counted by the registry's error hook */
    }
    if (mirror.refreshStates()) maybePublish();
  };
  const pollTraefik = async () => {
    if (!cfg.traefikApi) return;
    try {
      mirror.applyTraefik(await readTraefikServers(cfg.traefikApi, cfg.traefikServices), true);
    } catch (err: any) {
      metrics.traefikErrors.inc();
      throttled("traefik", () => log.warn({ err: { message: err?.message } }, "cannot read Traefik's API; node states from heartbeats only"));
    }
    if (mirror.refreshStates()) maybePublish();
  };

  // One probe per node at a time; each result is applied (and published) as soon as it comes.
  // At most one timed-out probe per node stays open for a late answer (the first one sent: a
  // resumed process answers its connections in order).
  const probing = new Set<string>();
  const lingering = new Set<string>();
  const applyProbe = (cookie: string, url: string, result: ProbeResult, late = false) => {
    if (closing) return;
    metrics.probes.inc({ result: late ? `late-${result}` : result });
    const before = mirror.nodes.get(cookie)?.state;
    if (mirror.applyProbe(cookie, result)) maybePublish();
    const after = mirror.nodes.get(cookie)?.state;
    if (before !== after) log.info({ node: mirror.nodes.get(cookie)?.name || url, probe: result, late, from: before, to: after }, "node state changed");
  };
  const probeNodes = () => {
    for (const { cookie, url } of mirror.probeTargets()) {
      if (probing.has(cookie)) continue;
      probing.add(cookie);
      const late = lingering.has(cookie)
        ? undefined
        : {
            maxMs: cfg.downLimitMs,
            onAnswer: (r: ProbeResult | null) => {
              lingering.delete(cookie);
              if (r) applyProbe(cookie, url, r, true);
            },
          };
      void probeNode(url, cfg.probePath, cfg.probeTimeoutMs, late).then((result) => {
        probing.delete(cookie);
        if (result === "timeout" && late) lingering.add(cookie);
        applyProbe(cookie, url, result);
      });
    }
  };

  // --- timers ----------------------------------------------------------------------------
  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, fn: () => Promise<unknown> | void) => {
    let running = false;
    const t = setInterval(() => {
      if (running || closing) return;
      running = true;
      Promise.resolve()
        .then(fn)
        .catch((err) => log.error({ err: { message: err?.message } }, "periodic task failed"))
        .finally(() => {
          running = false;
        });
    }, ms);
    timers.push(t);
  };
  every(cfg.eventIntervalMs, drainTick);
  every(cfg.metaIntervalMs, async () => {
    if (!firstPublishAllowed) return;
    mirror.refreshStates();
    await publishNow();
  });
  every(Math.max(50, Math.min(250, Math.floor(cfg.nodeTtlMs / 4))), () => {
    if (mirror.refreshStates()) maybePublish();
  });
  every(cfg.nodePollIntervalMs, pollNodes);
  every(cfg.reconcileIntervalMs, async () => {
    if (synced && registry.status() === "ready") await reconcile();
  });
  every(1000, cleanupLearned);
  every(cfg.edgeTouchIntervalMs, () => (registry.status() === "ready" ? touches.flush() : undefined));
  if (cfg.probePath !== "off") every(cfg.probeIntervalMs, probeNodes);
  if (cfg.traefikApi) {
    every(cfg.traefikPollIntervalMs, pollTraefik);
    void pollTraefik();
  }

  // --- HTTP ------------------------------------------------------------------------------
  const health = () => ({
    registry: registry.kind,
    registryStatus: registry.status(),
    synced,
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
      countNew(mirror.applySession(id, record), record);
      maybePublish();
    },
    onClosed: (id) => {
      if (mirror.applyClose(id)) metrics.closes.inc({ origin: "api" });
      maybePublish();
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: any) =>
      reject(new SidecarError(`cannot listen on ${cfg.host}:${cfg.port}: ${err?.message}`, err?.code === "EADDRINUSE" ? "ERR_SIDECAR_LISTEN" : "ERR_SIDECAR_LISTEN", "--port")),
    );
    server.listen(cfg.port, cfg.host, () => resolve());
  }).catch(async (err) => {
    closing = true;
    timers.forEach(clearInterval);
    await registry.close();
    throw err;
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`;
  log.info(
    { url, dir: cfg.dir, epoch, registry: registry.kind === "redis" ? describeRedis(conn) : "memory", shardBits: cfg.shardBits },
    "mcp-affinity sidecar started",
  );

  // First view: once synced, or after a short wait with what we know (Redis down at start).
  void syncLoop();
  const firstWait = setTimeout(() => {
    firstPublishAllowed = true;
    if (!publisher.published) void publishNow();
  }, 1000);

  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      deaths.close();
      clearTimeout(firstWait);
      if (syncTimer) clearTimeout(syncTimer);
      if (publishTimer) clearTimeout(publishTimer);
      timers.forEach(clearInterval);
      const serverClosed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 1000).unref();
      // Flush: events already written by the plugin go to the registry once more, then the view.
      if (draining) await draining;
      if (registry.status() === "ready") {
        closing = false; // let the final drain apply
        await Promise.race([drainNow(), new Promise((r) => setTimeout(r, 2000))]);
        closing = true;
      }
      await publisher.idle();
      if (publisher.published || firstPublishAllowed) await publisher.publish().catch(() => undefined);
      if (reconciling) await Promise.race([reconciling, new Promise((r) => setTimeout(r, 1000))]);
      await registry.close();
      await serverClosed;
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
    ready: isReady,
    synced: () => synced,
    drainNow,
    publishNow,
    reconcileNow: reconcile,
    close,
  };
}
