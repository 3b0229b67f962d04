// The sidecar's in-memory mirror of the registry, in three parts with their own state: the session
// index (sessions by hash, sharded like the view: sessions.ts), the owner table (the node ids the
// view names, one per node incarnation: owners.ts) and node liveness (nodes.ts). Per-owner counts
// are kept on every change, so neither a scrape nor a publish walks the keyspace.
//
// Why a facade with private parts, not the parts handed to each component: the parts are not
// independent. A session record touches all three, in an order that matters (liveness learns from
// it first, then the owner is acquired, retired at birth when its boot is over, then the index
// points at it); an owner's state is the owner table's retirement plus the node's liveness; a dirty
// shard may name an owner the table has already dropped. Those rules live here, once. A component
// that held a part could skip them (a publisher clearing dirty shards, metrics summing owners its
// own way), so no part leaves this class: components get the questions they need answered and the
// changes they may make, and read node entries only as read-only NodeInfo.
import { sessionHashKey, type NodeRecord, type SessionRecord } from "../../lib/registry/index.ts";
import type { NodeViewState, ViewBoot, ViewNode } from "../../lib/view/index.ts";
import type { SidecarConfig } from "./config.ts";
import { NodeLiveness, type NodeInfo } from "./nodes.ts";
import { OwnerTable, type Owner } from "./owners.ts";
import type { ProbeResult } from "./probe.ts";
import { SessionIndex, type SessionChangeKind } from "./sessions.ts";

export type { NodeInfo, TraefikState } from "./nodes.ts";
export type { Owner } from "./owners.ts";
export type { SessionChangeKind } from "./sessions.ts";

/** The settings the mirror follows: the sidecar hands it its config. */
export type MirrorOptions = Pick<
  SidecarConfig,
  | "shardBits"
  | "nodeTtlMs"
  | "downLimitMs"
  | "tombstoneTtlMs"
  | "retryAfterSeconds"
  | "probePath"
  | "probeIntervalMs"
  | "probeTimeoutMs"
  | "probeFailures"
> & { now?: () => number };

export class Mirror {
  readonly shardBits: number;
  readonly #sessions: SessionIndex;
  readonly #owners = new OwnerTable();
  readonly #nodes: NodeLiveness;
  readonly #retryAfterSeconds: number;

  constructor(opts: MirrorOptions) {
    const now = opts.now ?? Date.now;
    this.shardBits = opts.shardBits;
    this.#retryAfterSeconds = opts.retryAfterSeconds;
    this.#sessions = new SessionIndex(
      { shardBits: opts.shardBits, tombstoneTtlMs: opts.tombstoneTtlMs, now },
      this.#owners,
    );
    this.#nodes = new NodeLiveness({
      nodeTtlMs: opts.nodeTtlMs,
      downLimitMs: opts.downLimitMs,
      probe:
        opts.probePath === "off"
          ? null
          : { intervalMs: opts.probeIntervalMs, timeoutMs: opts.probeTimeoutMs, failures: opts.probeFailures },
      now,
      onBootOver: (cookie, boot) => this.#owners.retire(cookie, boot),
    });
  }

  // --- the view: shards, the dirty-shard bookkeeping, the meta (publisher, schedule) -------------

  get shardCount(): number {
    return this.#sessions.shardCount;
  }
  /** The shard of a mirror key (lib/registry/session-hash.ts: sessionHashKey). */
  shardOf(key: string): number {
    return this.#sessions.shardOf(key);
  }
  /** A shard's file name in view/shards/. */
  prefixOf(shard: number): string {
    return this.#sessions.prefixOf(shard);
  }
  /** One shard's entries for the encoder: [key, owner id, closed]; empty when the shard has none. */
  shardEntries(shard: number): Array<[string, number, boolean]> {
    return this.#sessions.shardEntries(shard);
  }
  /** Shards whose file no longer matches the mirror. */
  dirtyShards(): ReadonlySet<number> {
    return this.#sessions.dirtyShards();
  }
  /** The dirty shards, handed to a publish: the mirror forgets them until they change again. */
  takeDirtyShards(): number[] {
    return this.#sessions.takeDirty();
  }
  /** A shard whose write failed: it goes out with the next publish. */
  markShardDirty(shard: number): void {
    this.#sessions.markDirty(shard);
  }
  /** Changes whenever anything in the meta (owner table, node states, boots) changes. */
  get metaVersion(): number {
    return this.#owners.version + this.#nodes.version;
  }
  /** The meta's node table: every owner something in the view points at. */
  viewNodes(): ViewNode[] {
    const out: ViewNode[] = [];
    for (const o of this.#owners.values()) {
      const state = this.ownerState(o);
      out.push({ id: o.id, cookie: o.cookie, state, retryAfterSeconds: this.retryAfter(state) });
    }
    return out.sort((a, b) => a.id - b.id);
  }
  /** The meta's incarnation table (routing tokens). */
  viewBoots(): ViewBoot[] {
    return this.#nodes.viewBoots((state) => this.retryAfter(state));
  }

  // --- sessions: what the view says ---------------------------------------------------------------

  get liveCount(): number {
    return this.#owners.liveTotal;
  }
  get closedCount(): number {
    return this.#sessions.closedCount;
  }
  /** What the view says (or will say) about a session hash. */
  lookup(key: string): { owner: Owner; closed: boolean } | null {
    const e = this.#sessions.entry(key);
    return e ? { owner: this.#owners.get(e.ownerId)!, closed: e.closed } : null;
  }
  /** A close of this hash was seen (and has not expired). */
  wasClosed(key: string): boolean {
    return this.#sessions.wasClosed(key);
  }
  /** The session is in the mirror and its shard is on disk (not among `pending`). */
  isPublished(key: string, pending: ReadonlySet<number>): boolean {
    return this.#sessions.isPublished(key, pending);
  }
  /** An owner's state in the view: gone once its boot is over, else its node's state. */
  ownerState(o: Owner): NodeViewState {
    return o.retired ? "gone" : this.#nodes.stateOf(o.cookie);
  }
  /**
   * Sessions per node (by cookie) that can still be served: those of gone incarnations do not
   * count. The one count of live sessions per node (metrics, /v1/nodes); nodes without any are absent.
   */
  liveSessionsByNode(): Map<string, number> {
    const out = new Map<string, number>();
    for (const o of this.#owners.values())
      if (o.live > 0 && this.ownerState(o) !== "gone") out.set(o.cookie, (out.get(o.cookie) ?? 0) + o.live);
    return out;
  }

  // --- nodes: what is known of them ---------------------------------------------------------------

  get nodeCount(): number {
    return this.#nodes.size;
  }
  nodes(): IterableIterator<NodeInfo> {
    return this.#nodes.values();
  }
  node(cookie: string): NodeInfo | undefined {
    return this.#nodes.get(cookie);
  }
  /** The state the view gives a node (one never heard of is up). */
  nodeState(cookie: string): NodeViewState {
    return this.#nodes.stateOf(cookie);
  }
  /** Server URL for a cookie when known ("" otherwise). */
  urlFor(cookie: string): string {
    return this.#nodes.urlFor(cookie);
  }
  /** The incarnations the fast path routes (fast-path.ts). */
  liveIncarnations(): Array<{ cookie: string; bootTag: string; url: string }> {
    return this.#nodes.liveIncarnations();
  }
  probeTargets(): Array<{ cookie: string; url: string }> {
    return this.#nodes.probeTargets();
  }

  // --- session changes ----------------------------------------------------------------------------

  /**
   * Applies a session record (from a change, the API, an edge learn, or a reconcile scan).
   * A scan never overrides what a live change did since the reconcile started. Idempotent: the
   * same record applied again is "same" and changes nothing (the sidecar applies its own writes
   * twice: see updates.ts).
   */
  applySession(id: string, record: SessionRecord, fromScan = false, key = sessionHashKey(id)): SessionChangeKind {
    if (fromScan && this.#sessions.scanIsOutdated(key)) return "same";
    this.#nodes.noteSession(record, !fromScan);
    const retired = !!record.boot && this.#nodes.isPastBoot(record.cookie, record.boot);
    const owner = this.#owners.acquire(record.cookie, record.boot, retired);
    return this.#sessions.put(key, owner.id, fromScan);
  }
  /**
   * A close: the session becomes a tombstone (edge 404) if known; remembered either way. True only
   * the first time (a second close of the same session changes nothing).
   */
  applyClose(id: string, key = sessionHashKey(id)): boolean {
    return this.#sessions.close(key);
  }
  expireTombstones(): number {
    return this.#sessions.expireTombstones();
  }
  beginReconcile(): void {
    this.#sessions.beginReconcile();
  }
  endReconcile(completed: boolean, spareUnseen = false): number {
    return this.#sessions.endReconcile(completed, spareUnseen);
  }
  /** Continues owner ids above those of a view left by a previous process (same epoch). */
  reserveOwnerIds(maxUsed: number): void {
    this.#owners.reserveIds(maxUsed);
  }

  // --- node changes -------------------------------------------------------------------------------

  /** A heartbeat record (or its deletion: null). */
  applyNode(cookie: string, rec: NodeRecord | null): void {
    this.#nodes.applyHeartbeat(cookie, rec);
  }
  /** Node records of one full listing. */
  applyNodeListing(records: NodeRecord[]): void {
    for (const r of records) this.#nodes.applyHeartbeat(r.cookie, r);
  }
  applyTraefik(servers: Array<{ url: string; up: boolean }>, complete: boolean): void {
    this.#nodes.applyTraefik(servers, complete);
  }
  /** A probe result; true when the view must change. */
  applyProbe(cookie: string, result: ProbeResult): boolean {
    return this.#nodes.applyProbe(cookie, result);
  }
  setHeartbeatsTrusted(trusted: boolean): void {
    this.#nodes.setHeartbeatsTrusted(trusted);
  }
  /** Recomputes node states; returns true when any changed (the meta must be republished). */
  refreshStates(): boolean {
    return this.#nodes.refreshStates();
  }

  private retryAfter(state: NodeViewState): number {
    return state === "down" ? this.#retryAfterSeconds : 0;
  }
}
