// The sidecar's in-memory mirror of the registry, in three parts with their own state: the session
// index (sessions by hash, sharded like the view: sessions.ts), the owner table (the node ids the
// view names, one per node incarnation: owners.ts) and node liveness (nodes.ts). The mirror applies
// each change to the parts it concerns, in the order that keeps them consistent, and answers what
// the view and the metrics ask; per-owner counts are kept on every change, so neither a scrape nor
// a publish walks the keyspace.
import { sessionHashKey, type NodeRecord, type SessionRecord } from "../../lib/registry/index.ts";
import type { NodeViewState, ViewBoot, ViewNode } from "../../lib/view/index.ts";
import { NodeLiveness, type NodeInfo } from "./nodes.ts";
import { OwnerTable, type Owner } from "./owners.ts";
import type { ProbeResult } from "./probe.ts";
import { SessionIndex, type SessionChangeKind } from "./sessions.ts";

export type { NodeInfo, TraefikState } from "./nodes.ts";
export type { Owner } from "./owners.ts";
export type { SessionChangeKind } from "./sessions.ts";

export interface MirrorOptions {
  shardBits: number;
  nodeTtlMs: number;
  downLimitMs: number;
  tombstoneTtlMs: number;
  retryAfterSeconds: number;
  /** A probe result older than this no longer counts (the prober stopped or fell behind). */
  probeValidMs?: number;
  /** Failed probes in a row before a node counts as down (a busy machine must not fake a stall). */
  probeFailuresToDown?: number;
  now?: () => number;
}

export class Mirror {
  readonly shardBits: number;
  readonly sessions: SessionIndex;
  readonly owners = new OwnerTable();
  readonly nodes: NodeLiveness;
  private readonly retryAfterSeconds: number;

  constructor(opts: MirrorOptions) {
    const now = opts.now ?? Date.now;
    this.shardBits = opts.shardBits;
    this.retryAfterSeconds = opts.retryAfterSeconds;
    this.sessions = new SessionIndex(
      { shardBits: opts.shardBits, tombstoneTtlMs: opts.tombstoneTtlMs, now },
      this.owners,
    );
    this.nodes = new NodeLiveness({
      nodeTtlMs: opts.nodeTtlMs,
      downLimitMs: opts.downLimitMs,
      probeValidMs: opts.probeValidMs,
      probeFailuresToDown: opts.probeFailuresToDown,
      now,
      onBootOver: (cookie, boot) => this.owners.retire(cookie, boot),
    });
  }

  shardOf(key: string): number {
    return this.sessions.shardOf(key);
  }
  prefixOf(shard: number): string {
    return this.sessions.prefixOf(shard);
  }

  // --- queries -------------------------------------------------------------------------------

  /** Changes whenever anything in the meta (owner table, node states, boots) changes. */
  get metaVersion(): number {
    return this.owners.version + this.nodes.version;
  }
  get liveCount(): number {
    return this.owners.liveTotal;
  }
  get closedCount(): number {
    return this.sessions.closedCount;
  }
  /** What the view says (or will say) about a session hash. */
  lookup(key: string): { owner: Owner; closed: boolean } | null {
    const e = this.sessions.entry(key);
    return e ? { owner: this.owners.get(e.ownerId)!, closed: e.closed } : null;
  }
  /** A close of this hash was seen (and has not expired). */
  wasClosed(key: string): boolean {
    return this.sessions.wasClosed(key);
  }
  isPublished(key: string, pending: ReadonlySet<number>): boolean {
    return this.sessions.isPublished(key, pending);
  }
  ownerState(o: Owner): NodeViewState {
    return o.retired ? "gone" : this.nodes.stateOf(o.cookie);
  }
  /** The meta's node table: every owner something in the view points at. */
  viewNodes(): ViewNode[] {
    const out: ViewNode[] = [];
    for (const o of this.owners.values()) {
      const state = this.ownerState(o);
      out.push({ id: o.id, cookie: o.cookie, state, retryAfterSeconds: state === "down" ? this.retryAfterSeconds : 0 });
    }
    return out.sort((a, b) => a.id - b.id);
  }
  viewBoots(): ViewBoot[] {
    return this.nodes.viewBoots(this.retryAfterSeconds);
  }
  /** Sessions of a node that can still be served: those of gone incarnations do not count. */
  liveSessionsOf(cookie: string): number {
    let n = 0;
    for (const o of this.owners.values()) if (o.cookie === cookie && this.ownerState(o) !== "gone") n += o.live;
    return n;
  }
  nodeName(n: NodeInfo): string {
    return this.nodes.nameOf(n);
  }
  urlFor(cookie: string): string {
    return this.nodes.urlFor(cookie);
  }
  probeTargets(): Array<{ cookie: string; url: string }> {
    return this.nodes.probeTargets();
  }

  // --- sessions ------------------------------------------------------------------------------

  /**
   * Applies a session record (from a change, the API, an edge learn, or a reconcile scan).
   * A scan never overrides what a live change did since the reconcile started.
   */
  applySession(id: string, record: SessionRecord, fromScan = false, key = sessionHashKey(id)): SessionChangeKind {
    if (fromScan && this.sessions.scanIsOutdated(key)) return "same";
    this.nodes.noteSession(record, !fromScan);
    const retired = !!record.boot && this.nodes.isPastBoot(record.cookie, record.boot);
    const owner = this.owners.acquire(record.cookie, record.boot, retired);
    return this.sessions.put(key, owner.id, fromScan);
  }
  /** A close: the session becomes a tombstone (edge 404) if known; remembered either way. */
  applyClose(id: string, key = sessionHashKey(id)): boolean {
    return this.sessions.close(key);
  }
  expireTombstones(): number {
    return this.sessions.expireTombstones();
  }
  beginReconcile(): void {
    this.sessions.beginReconcile();
  }
  endReconcile(completed: boolean, spareUnseen = false): number {
    return this.sessions.endReconcile(completed, spareUnseen);
  }
  /** Continues owner ids above those of a view left by a previous process (same epoch). */
  reserveOwnerIds(maxUsed: number): void {
    this.owners.reserveIds(maxUsed);
  }

  // --- nodes ---------------------------------------------------------------------------------

  /** A heartbeat record (or its deletion: null). */
  applyNode(cookie: string, rec: NodeRecord | null): void {
    this.nodes.applyHeartbeat(cookie, rec);
  }
  /** Node records of one full listing. */
  applyNodeListing(records: NodeRecord[]): void {
    for (const r of records) this.nodes.applyHeartbeat(r.cookie, r);
  }
  applyTraefik(servers: Array<{ url: string; up: boolean }>, complete: boolean): void {
    this.nodes.applyTraefik(servers, complete);
  }
  applyProbe(cookie: string, result: ProbeResult): boolean {
    return this.nodes.applyProbe(cookie, result);
  }
  setHeartbeatsTrusted(trusted: boolean): void {
    this.nodes.setHeartbeatsTrusted(trusted);
  }
  /** Recomputes node states; returns true when any changed (the meta must be republished). */
  refreshStates(): boolean {
    return this.nodes.refreshStates();
  }
}
