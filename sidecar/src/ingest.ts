// Event ingest: the plugin's event batches in events/ are applied to the registry and the mirror
// (learned sessions registered, closes recorded, suspects handed to the death checks, activity of
// edge-learned sessions renewed, counts added to the metrics). A batch that can never apply is
// moved to events-quarantine/; one that fails for now (registry down) stays for the next drain.
import { hexToKey, sessionTag, type SessionRecord } from "../../lib/registry/index.ts";
import { viewPaths, type EventBatch } from "../../lib/view/index.ts";
import { settleWithin, type Periodic, type SidecarContext } from "./context.ts";
import { drainEvents, type DrainResult } from "./drain.ts";
import { EdgeTouches } from "./touches.ts";
import { errFields } from "../../lib/errors.ts";

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

const NOTHING_DRAINED: DrainResult = {
  applied: 0,
  corrupt: 0,
  pending: 0,
  failed: 0,
  quarantined: 0,
  badLines: 0,
  foreign: 0,
};

export class EventIngest {
  readonly #touches: EdgeTouches;
  #draining: Promise<DrainResult> | null = null;
  /** After a failed apply (registry down), pending files are not re-read every tick: up to 1 s apart. */
  #retryBackoffMs = 0;
  #retryNotBefore = 0;

  constructor(
    private readonly ctx: SidecarContext,
    /** A session the edge saw answered without a session: its owner is asked. */
    private readonly suspect: (id: string, hash: string, cookie: string) => void,
  ) {
    const { cfg, registry, metrics } = ctx;
    this.#touches = new EdgeTouches({
      touch: (id) => registry.touchEdgeSession(id, Math.min(cfg.edgeSessionTtlMs, cfg.sessionTtlMs), cfg.sessionTtlMs),
      onResult: (result, n) => metrics.edgeTouches.inc({ result }, n),
    });
  }

  /** Starts the drains (every eventInterval) and the renewals of edge records (every edgeTouchInterval). */
  start(ticks: Periodic): void {
    ticks.every(this.ctx.cfg.eventIntervalMs, () => this.tick());
    ticks.every(this.ctx.cfg.edgeTouchIntervalMs, () => this.flushTouches());
  }

  /** The eventInterval tick: a drain, unless the last one failed and the backoff has not run out. */
  private async tick(): Promise<void> {
    if (this.#retryBackoffMs && Date.now() < this.#retryNotBefore && this.ctx.registry.status() !== "ready") return;
    const r = await this.drain();
    this.#retryBackoffMs = r.failed
      ? Math.min(Math.max(this.#retryBackoffMs * 2, this.ctx.cfg.eventIntervalMs * 2), 1000)
      : 0;
    this.#retryNotBefore = Date.now() + this.#retryBackoffMs;
  }

  /** The edgeTouchInterval tick: pending activity written while the registry is connected. */
  private async flushTouches(): Promise<void> {
    if (this.ctx.registry.status() === "ready") await this.#touches.flush();
  }

  /** One drain of events/ now (joined when one is running). */
  private drain(): Promise<DrainResult> {
    const { cfg, fs, metrics, log, throttled } = this.ctx;
    this.#draining ??= drainEvents(cfg.dir, (b) => this.apply(b), {
      fs,
      isPermanent: isPermanentApplyError,
      onQuarantine: (file, err: unknown) => {
        metrics.eventFiles.inc({ result: "quarantined" });
        log.error({ file, err: errFields(err) }, "event batch cannot be applied; moved to events-quarantine/");
      },
      onCorrupt: (file, err) =>
        throttled(`corrupt:${file}`, () =>
          log.warn({ file, err: { message: err.message } }, "corrupt event file deleted"),
        ),
      onBadLines: (file, n) =>
        throttled("badlines", () => log.warn({ file, lines: n }, "unreadable event lines skipped")),
      onError: (file, err: unknown) =>
        throttled("apply", () =>
          log.warn({ file, err: errFields(err) }, "event batch not applied yet; kept for the next attempt"),
        ),
    })
      .then((r) => {
        if (r.applied) metrics.eventFiles.inc({ result: "applied" }, r.applied);
        void this.countQuarantine();
        if (r.corrupt) metrics.eventFiles.inc({ result: "corrupt" }, r.corrupt);
        if (r.badLines) metrics.eventBadLines.inc(r.badLines);
        metrics.eventPending.set(r.pending + r.failed);
        return r;
      })
      .catch((err: unknown) => {
        metrics.dirErrors.inc({ operation: "read_events" });
        throttled("events", () => log.warn({ err: errFields(err) }, "cannot read events/"));
        return { ...NOTHING_DRAINED };
      })
      .finally(() => {
        this.#draining = null;
      });
    return this.#draining;
  }

  /**
   * The drain at shutdown: after the one in progress, what the plugin has written so far goes to
   * the registry once more (bounded in time; skipped when the registry is unreachable).
   */
  async finalDrain(timeoutMs: number): Promise<void> {
    if (this.#draining) await this.#draining;
    if (this.ctx.registry.status() === "ready") await settleWithin(this.drain(), timeoutMs);
  }

  private async apply(b: EventBatch): Promise<void> {
    const { cfg, registry, mirror, updates, metrics, log } = this.ctx;
    for (const l of b.learned) {
      const key = hexToKey(l.hash);
      if (mirror.wasClosed(key) || mirror.lookup(key)) continue; // known (or closed): a record exists
      const record: SessionRecord = {
        node: mirror.urlFor(l.cookie),
        cookie: l.cookie,
        boot: null,
        created: b.t || Date.now(),
        source: "edge",
      };
      // Nothing but activity tells the edge such a session still lives: a short TTL, renewed by use.
      if (
        await registry.registerSession(l.id, record, {
          ifAbsent: true,
          ttlMs: Math.min(cfg.edgeSessionTtlMs, cfg.sessionTtlMs),
        })
      ) {
        updates.session(l.id, record, key);
        log.debug({ session: sessionTag(l.id), cookie: l.cookie }, "session learned at the edge registered");
      } else {
        const existing = await registry.lookupSession(l.id);
        if (existing) updates.session(l.id, existing, key);
      }
    }
    for (const c of b.closed) {
      await registry.closeSession(c.id);
      // One close, one count: the node's own close reaches this mirror through the registry too,
      // and a retried batch finds the session closed already.
      updates.close(c.id, "edge", hexToKey(c.hash));
      log.debug({ session: sessionTag(c.id) }, "session closed at the edge");
    }
    // Counted only once the whole batch is applied: a retried batch is never counted twice.
    for (const v of b.suspects ?? []) this.suspect(v.id, v.hash, v.cookie);
    for (const a of b.active ?? []) if (mirror.lookup(hexToKey(a.hash))) this.#touches.add(a.id);
    for (const [reason, n] of Object.entries(b.decisions)) metrics.decisions.inc({ reason }, n);
    for (const [body, n] of Object.entries(b.bodies ?? {})) metrics.postBodies.inc({ body }, n);
    if (b.exposedServerIds) metrics.exposedServerIds.inc(b.exposedServerIds);
    if (b.dropped) metrics.eventsDropped.inc(b.dropped);
    if (b.t) metrics.eventLag.observe(Math.max(0, Date.now() - b.t) / 1000);
  }

  private async countQuarantine(): Promise<void> {
    const names = await this.ctx.fs.readdir(viewPaths(this.ctx.cfg.dir).quarantine).catch(() => [] as string[]);
    this.ctx.metrics.eventQuarantine.set(names.filter((n) => n.startsWith("q-")).length);
  }
}
