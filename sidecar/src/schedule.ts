// When the view is published: changes of one tick go out together as soon as publishing is open
// (after the first registry sync, or after a short first wait with what is known when the registry
// is unreachable at start), and the meta is rewritten every metaInterval so the view stays fresh.
import type { Logger } from "pino";
import type { Mirror } from "./mirror.ts";
import type { Periodic } from "./context.ts";
import type { Publisher, PublishResult } from "./publisher.ts";

export interface PublishScheduleOptions {
  mirror: Mirror;
  publisher: Publisher;
  log: Logger;
  epoch: number;
  /** The meta is rewritten this often (the view's freshness stamp). */
  metaIntervalMs: number;
  /** A publish built from a synced mirror reached the disk. */
  onSyncedView: () => void;
  /** How long the first view waits for the first sync before going out with what is known. */
  firstWaitMs?: number;
  /** After each publish (the node table may have changed): the fast path follows the view. */
  onPublished?: () => void;
}

export class PublishSchedule {
  /** Publishing is open: the first sync completed, or the first wait ran out. */
  #open = false;
  /** The mirror has completed a full registry sync: what is published from now on is the registry. */
  #mirrorSynced = false;
  #stopped = false;
  #timer: NodeJS.Timeout | null = null;
  #firstWait: NodeJS.Timeout | null = null;
  /** The mirror's meta version when the last publish started. */
  #publishedMetaVersion = -1;

  constructor(private readonly o: PublishScheduleOptions) {}

  get open(): boolean {
    return this.#open;
  }

  /** Starts the meta refresh and the first wait. */
  start(ticks: Periodic): void {
    ticks.every(this.o.metaIntervalMs, () => this.refresh());
    this.#firstWait = setTimeout(() => {
      this.#firstWait = null;
      this.#open = true;
      if (!this.o.publisher.published) void this.publishNow();
    }, this.o.firstWaitMs ?? 1000);
  }

  /** A full registry sync completed: publishing opens, and the next good publish is a synced view. */
  mirrorSynced(): void {
    this.#open = true;
    this.#mirrorSynced = true;
  }

  /** Publishes soon when the mirror holds anything the view does not show yet. */
  changed(): void {
    const m = this.o.mirror;
    if (m.dirtyShards().size || m.metaVersion !== this.#publishedMetaVersion) this.soon();
  }

  // The time from a registration to the view is what the edge waits on: no delay beyond the tick;
  // a publish in progress coalesces what comes meanwhile (Publisher).
  private soon(): void {
    if (this.#stopped || !this.#open || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.publishNow();
    }, 0);
  }

  private async publishNow(): Promise<PublishResult> {
    const { mirror, publisher, log, epoch } = this.o;
    this.#publishedMetaVersion = mirror.metaVersion;
    const fromSynced = this.#mirrorSynced;
    const r = await publisher.publish();
    this.o.onPublished?.();
    if (fromSynced && r.ok) this.o.onSyncedView();
    if (r.kind === "full")
      log.info(
        { epoch, shards: r.shards, sessions: mirror.liveCount, ms: Math.round(r.ms), ok: r.ok },
        "view published",
      );
    return r;
  }

  /** The metaInterval tick: node states recomputed, the meta (and any change) rewritten. */
  private async refresh(): Promise<void> {
    if (!this.#open) return;
    this.o.mirror.refreshStates();
    await this.publishNow();
  }

  /** No more scheduled publishes. */
  stop(): void {
    this.#stopped = true;
    if (this.#firstWait) clearTimeout(this.#firstWait);
    if (this.#timer) clearTimeout(this.#timer);
    this.#firstWait = this.#timer = null;
  }

  /** The last publish at shutdown (after stop): what the final event drain changed goes out. */
  async finalPublish(): Promise<void> {
    const { publisher } = this.o;
    await publisher.idle();
    if (publisher.published || this.#open) await publisher.publish().catch(() => undefined);
  }
}
