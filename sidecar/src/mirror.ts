// The sidecar's in-memory mirror of the registry: sessions (by hash, sharded like the view), the
// owners they point at (node incarnations), node liveness, and per-owner counts kept up to date on
// every change, so neither a scrape nor a publish ever walks the keyspace.
import { cookieValueFor, sessionHash, type NodeRecord, type SessionRecord } from "../../lib/registry/index.ts";
import type { NodeViewState, ViewBoot, ViewNode } from "../../lib/view/index.ts";
import { bootTag, UNKNOWN_BOOT_TAG } from "../../lib/token/index.ts";
import * as crypto from "node:crypto";

const oneShotHash = (crypto as unknown as { hash?: (alg: string, data: string, enc: "buffer") => Buffer }).hash;
const ASCII = /^[\x21-\x7e]*$/;

/**
 * An owner is what the view calls a node id: one (cookie, boot) pair; boot null = "whatever boot
 * the node has now" (edge-learned sessions and nodes without the library never know the boot).
 */
export interface Owner {
  id: number;
  cookie: string;
  boot: string | null;
  /** A later boot of the same node was seen: this incarnation's sessions are gone. */
  retired: boolean;
  /** Live sessions (metrics). */
  live: number;
  /** Live sessions plus tombstones: the owner stays in the view while > 0. */
  refs: number;
}

export type TraefikState = "up" | "down" | "removed";

export interface NodeInfo {
  cookie: string;
  url: string;
  name: string;
  /** Last heartbeat record, and when this sidecar heard it (its own clock). */
  hb: { boot: string; state: "up" | "draining"; seen: number; heardAt: number } | null;
  /** The node deleted its own record (clean shutdown). */
  hbRemoved: boolean;
  traefik: TraefikState | null;
  /** When Traefik's state was last polled, and when this node last proved it serves (a new session). */
  traefikAt: number;
  servedAt: number;
  downSince: number | null;
  state: NodeViewState;
  /** Boots this sidecar has seen in this node's heartbeats (or proven over): any but the current one is gone. */
  hbBootsSeen: Set<string>;
}

export interface MirrorOptions {
  shardBits: number;
  nodeTtlMs: number;
  downLimitMs: number;
  tombstoneTtlMs: number;
  retryAfterSeconds: number;
  now?: () => number;
}

/** Previous boots of a node the meta lists as gone (a token of an older one is pinned: the node answers). */
const BOOTS_LISTED = 8;

export type SessionChangeKind = "new" | "changed" | "same";

// A session entry's value: owner id * 4 + reconcile generation bit * 2 + closed bit (small ints).
const pack = (owner: number, gen: number, closed: boolean) => owner * 4 + gen * 2 + (closed ? 1 : 0);
const ownerOf = (v: number) => Math.floor(v / 4);
const genOf = (v: number) => (v >> 1) & 1;
const closedOf = (v: number) => (v & 1) === 1;

export class Mirror {
  readonly shardBits: number;
  readonly shards: Array<Map<string, number>>;
  readonly owners = new Map<number, Owner>();
  private readonly ownerByKey = new Map<string, number>();
  private nextOwnerId = 1;
  readonly nodes = new Map<string, NodeInfo>();
  /** Every close this sidecar saw (hash -> when), known session or not: guards against resurrection. */
  readonly closedAt = new Map<string, number>();
  /** Shards whose file no longer matches the mirror. */
  readonly dirty = new Set<number>();
  /** Bumped when anything in the meta (owner table, states) changes. */
  metaVersion = 0;
  liveCount = 0;
  closedCount = 0;
  private gen = 0;
  private reconciling = false;
  private reconcileStart = 0;
  /** While false (registry unreachable), heartbeats do not age: an outage must not turn nodes down. */
  private heartbeatsTrusted = true;
  private readonly opts: MirrorOptions;
  private readonly now: () => number;

  constructor(opts: MirrorOptions) {
    this.opts = opts;
    this.shardBits = opts.shardBits;
    this.now = opts.now ?? Date.now;
    this.shards = Array.from({ length: 2 ** opts.shardBits }, () => new Map());
  }

  // --- hashes and shards -------------------------------------------------------------------

  /** The session hash as a 16-character latin1 string (the mirror's key). */
  static key(id: string): string {
    // crypto.hash (Node >= 20.12) skips the Hash object: a full reconcile hashes every id.
    // Its UTF-8 input equals the schema's latin1 for session ids (visible ASCII).
    if (oneShotHash && ASCII.test(id)) return oneShotHash("sha256", id, "buffer").toString("latin1", 0, 16);
    return sessionHash(id).toString("latin1");
  }
  shardOf(key: string): number {
    const b = this.shardBits;
    const first = key.charCodeAt(0);
    if (b === 4) return first >> 4;
    if (b === 8) return first;
    const second = key.charCodeAt(1);
    if (b === 12) return (first << 4) | (second >> 4);
    return (first << 8) | second;
  }
  prefixOf(shard: number): string {
    return shard.toString(16).padStart(this.shardBits / 4, "0");
  }

  private getEntry(key: string): number | undefined {
    return this.shards[this.shardOf(key)].get(key);
  }
  private setEntry(key: string, v: number): void {
    const s = this.shardOf(key);
    this.shards[s].set(key, v);
    this.dirty.add(s);
  }
  private deleteEntry(key: string): void {
    const s = this.shardOf(key);
    if (this.shards[s].delete(key)) this.dirty.add(s);
  }

  /** What the view says (or will say) about a session hash. */
  lookup(key: string): { owner: Owner; closed: boolean } | null {
    const v = this.getEntry(key);
    if (v === undefined) return null;
    return { owner: this.owners.get(ownerOf(v))!, closed: closedOf(v) };
  }
  isPublished(key: string, pending: ReadonlySet<number>): boolean {
    return this.getEntry(key) !== undefined && !pending.has(this.shardOf(key));
  }

  // --- owners ------------------------------------------------------------------------------

  private ownerFor(cookie: string, boot: string | null): Owner {
    const k = cookie + "\0" + (boot ?? "");
    let id = this.ownerByKey.get(k);
    if (id === undefined) {
      id = this.nextOwnerId++;
      const node = this.nodes.get(cookie);
      const o: Owner = { id, cookie, boot, retired: false, live: 0, refs: 0 };
      // A boot the node no longer runs (the heartbeat shows a different one) is retired at once.
      if (boot && node?.hb && node.hb.boot !== boot && node.hbBootsSeen.has(boot)) o.retired = true;
      this.owners.set(id, o);
      this.ownerByKey.set(k, id);
      this.metaVersion++;
    }
    return this.owners.get(id)!;
  }

  private ref(o: Owner, live: number, refs: number): void {
    o.live += live;
    o.refs += refs;
    this.liveCount += live;
    if (o.refs <= 0) {
      // Unreferenced: drop it from the table (ids are never reused within the epoch).
      this.owners.delete(o.id);
      this.ownerByKey.delete(o.cookie + "\0" + (o.boot ?? ""));
      this.metaVersion++;
    }
  }

  private retireBoot(cookie: string, boot: string): void {
    const id = this.ownerByKey.get(cookie + "\0" + boot);
    const o = id === undefined ? undefined : this.owners.get(id);
    if (o && !o.retired) {
      o.retired = true;
      this.metaVersion++;
    }
  }

  // --- sessions ----------------------------------------------------------------------------

  /**
   * Applies a session record (from a change, the API, an edge learn, or a reconcile scan).
   * A scan never overrides what a live change did since the reconcile started.
   */
  applySession(id: string, record: SessionRecord, fromScan = false, key = Mirror.key(id)): SessionChangeKind {
    const old = this.getEntry(key);
    if (fromScan && this.reconciling) {
      if (old !== undefined && genOf(old) === this.gen) return "same";
      const closed = this.closedAt.get(key);
      if (closed !== undefined && closed >= this.reconcileStart) return "same";
    }
    this.noteBoot(record);
    if (!fromScan) this.noteServed(record);
    const o = this.ownerFor(record.cookie, record.boot);
    if (old !== undefined) {
      if (ownerOf(old) === o.id && !closedOf(old)) {
        if (genOf(old) !== this.gen) this.shards[this.shardOf(key)].set(key, pack(o.id, this.gen, false)); // not a view change
        return "same";
      }
      const prev = this.owners.get(ownerOf(old))!;
      if (closedOf(old)) this.closedCount--;
      this.ref(o, 1, 1); // before the unref, so an owner moving to itself is never dropped
      this.ref(prev, closedOf(old) ? 0 : -1, -1);
      this.setEntry(key, pack(o.id, this.gen, false));
      if (!fromScan) this.closedAt.delete(key);
      return "changed";
    }
    this.ref(o, 1, 1);
    this.setEntry(key, pack(o.id, this.gen, false));
    if (!fromScan) this.closedAt.delete(key);
    return "new";
  }

  /** A close: the session becomes a tombstone (edge 404) if known; remembered either way. */
  applyClose(id: string, key = Mirror.key(id)): boolean {
    this.closedAt.set(key, this.now());
    const old = this.getEntry(key);
    if (old === undefined || closedOf(old)) return false;
    const o = this.owners.get(ownerOf(old))!;
    this.ref(o, -1, 0);
    this.closedCount++;
    if (this.opts.tombstoneTtlMs > 0) {
      this.setEntry(key, pack(o.id, this.gen, true));
    } else {
      this.ref(o, 0, -1);
      this.closedCount--;
      this.deleteEntry(key);
    }
    return true;
  }

  /** Drops a live entry outright (reconcile: gone from the registry, e.g. expired). */
  private dropEntry(shard: number, key: string, v: number): void {
    const o = this.owners.get(ownerOf(v))!;
    if (closedOf(v)) this.closedCount--;
    this.ref(o, closedOf(v) ? 0 : -1, -1);
    this.shards[shard].delete(key);
    this.dirty.add(shard);
  }

  /** Removes tombstones and close memories older than the tombstone TTL. */
  expireTombstones(): number {
    const limit = this.now() - this.opts.tombstoneTtlMs;
    let n = 0;
    for (const [key, at] of this.closedAt) {
      if (at > limit) continue;
      this.closedAt.delete(key);
      const s = this.shardOf(key);
      const v = this.shards[s].get(key);
      if (v !== undefined && closedOf(v)) {
        this.dropEntry(s, key, v);
        n++;
      }
    }
    return n;
  }

  beginReconcile(): void {
    this.gen ^= 1;
    this.reconciling = true;
    this.reconcileStart = this.now();
  }

  /**
   * Ends a full scan: live entries the scan did not see (and no change touched) are dropped.
   * With `spareUnseen` (the first scan after a registry outage: Redis may have come back empty
   * while nodes are still re-registering) they are kept and marked seen, so only the next scan
   * drops what is still missing then.
   */
  endReconcile(completed: boolean, spareUnseen = false): number {
    this.reconciling = false;
    if (!completed) return 0;
    let n = 0;
    const stale = this.gen ^ 1;
    for (let s = 0; s < this.shards.length; s++) {
      for (const [key, v] of this.shards[s]) {
        if (closedOf(v) || genOf(v) !== stale) continue;
        if (spareUnseen) this.shards[s].set(key, v ^ 2); // current generation: not a view change
        else this.dropEntry(s, key, v);
        n++;
      }
    }
    return n;
  }

  /** Continues owner ids above those of a view left by a previous process (same epoch). */
  reserveOwnerIds(maxUsed: number): void {
    this.nextOwnerId = Math.max(this.nextOwnerId, maxUsed + 1);
  }

  // --- nodes -------------------------------------------------------------------------------

  private node(cookie: string): NodeInfo {
    let n = this.nodes.get(cookie);
    if (!n) {
      n = { cookie, url: "", name: "", hb: null, hbRemoved: false, traefik: null, traefikAt: 0, servedAt: 0, downSince: null, state: "up", hbBootsSeen: new Set() };
      this.nodes.set(cookie, n);
      this.metaVersion++;
    }
    return n;
  }

  private seeBoot(n: NodeInfo, boot: string): void {
    n.hbBootsSeen.add(boot);
    if (n.hbBootsSeen.size > 64) n.hbBootsSeen.delete(n.hbBootsSeen.values().next().value!); // oldest first
  }

  /** A session names a boot other than the node's current one and is older than its last heartbeat: that boot is over. */
  private noteBoot(r: SessionRecord): void {
    if (!r.boot) return;
    const n = this.nodes.get(r.cookie);
    if (!n?.hb || n.hb.boot === r.boot) return;
    if (r.created <= n.hb.seen) {
      this.seeBoot(n, r.boot);
      this.retireBoot(r.cookie, r.boot);
    }
  }

  /** A heartbeat record (or its deletion: null). */
  applyNode(cookie: string, rec: NodeRecord | null): void {
    const n = this.node(cookie);
    const now = this.now();
    if (!rec) {
      if (n.hb) {
        this.seeBoot(n, n.hb.boot);
        this.retireBoot(cookie, n.hb.boot);
      }
      n.hb = null;
      n.hbRemoved = true;
      this.metaVersion++;
      return;
    }
    n.url = rec.url || n.url;
    n.name = rec.name || n.name;
    n.hbRemoved = false;
    const prev = n.hb;
    if (prev && prev.boot !== rec.boot) {
      if (rec.seen >= prev.seen) {
        // A new boot of the same server URL: the old incarnation is gone.
        this.seeBoot(n, prev.boot);
        this.retireBoot(cookie, prev.boot);
      } else {
        return; // an older record arriving late
      }
    }
    this.seeBoot(n, rec.boot);
    // A boot the view's token table does not list yet (or one it must now list as gone).
    if (!prev || prev.boot !== rec.boot) this.metaVersion++;
    if (!prev || prev.seen !== rec.seen || prev.boot !== rec.boot || prev.state !== rec.state) {
      n.hb = { boot: rec.boot, state: rec.state, seen: rec.seen, heardAt: now };
    }
  }

  /** Node records of one full listing: cookies absent from it have no record any more (expired). */
  applyNodeListing(records: NodeRecord[]): void {
    for (const r of records) this.applyNode(r.cookie, r);
  }

  applyTraefik(servers: Array<{ url: string; up: boolean }>, complete: boolean): void {
    const seen = new Set<string>();
    for (const s of servers) {
      const cookie = cookieValueFor(s.url);
      seen.add(cookie);
      const n = this.node(cookie);
      n.url = n.url || s.url;
      n.traefik = s.up ? "up" : "down";
      n.traefikAt = this.now();
    }
    if (complete) {
      for (const n of this.nodes.values()) if (n.traefik !== null && !seen.has(n.cookie)) n.traefik = "removed";
    }
  }

  setHeartbeatsTrusted(trusted: boolean): void {
    if (trusted && !this.heartbeatsTrusted) {
      // Back from an outage: every node gets a fresh TTL window to show its heartbeat again.
      const now = this.now();
      for (const n of this.nodes.values()) if (n.hb) n.hb.heardAt = now;
    }
    this.heartbeatsTrusted = trusted;
  }

  /**
   * A session that reaches us live (not from a scan) was just created on its node: the node serves,
   * whatever an older poll of Traefik said (a restarted node is back in Traefik before our next poll).
   */
  private noteServed(r: SessionRecord): void {
    const n = this.nodes.get(r.cookie);
    if (!n || (r.boot && n.hb && n.hb.boot !== r.boot)) return;
    const now = this.now();
    n.servedAt = now;
    if (n.state === "down" && this.computeNodeState(n, now) !== "down") this.refreshStates();
  }

  private computeNodeState(n: NodeInfo, now: number): NodeViewState {
    let s: NodeViewState;
    const traefikDown = n.traefik === "down" && n.servedAt <= n.traefikAt;
    if (n.hb) {
      const live = !this.heartbeatsTrusted || now - n.hb.heardAt <= this.opts.nodeTtlMs;
      if (!live) s = n.traefik === "up" ? "up" : "down";
      else s = traefikDown ? "down" : n.hb.state;
    } else if (n.hbRemoved) {
      s = "gone";
    } else if (traefikDown) {
      s = "down";
    } else if (n.traefik === "removed") {
      s = "gone";
    } else {
      s = "up"; // nothing known against it: pin and let Traefik decide
    }
    if (s === "down") {
      n.downSince ??= now;
      if (now - n.downSince > this.opts.downLimitMs) s = "gone";
    } else {
      n.downSince = null;
    }
    return s;
  }

  /** Recomputes node states; returns true when any changed (the meta must be republished). */
  refreshStates(): boolean {
    const now = this.now();
    let changed = false;
    for (const n of this.nodes.values()) {
      const s = this.computeNodeState(n, now);
      if (s !== n.state) {
        n.state = s;
        changed = true;
      }
    }
    if (changed) this.metaVersion++;
    return changed;
  }

  ownerState(o: Owner): NodeViewState {
    if (o.retired) return "gone";
    return this.nodes.get(o.cookie)?.state ?? "up";
  }

  /** The meta's node table: every owner something in the view points at. */
  viewNodes(): ViewNode[] {
    const out: ViewNode[] = [];
    for (const o of this.owners.values()) {
      const state = this.ownerState(o);
      out.push({ id: o.id, cookie: o.cookie, state, retryAfterSeconds: state === "down" ? this.opts.retryAfterSeconds : 0 });
    }
    return out.sort((a, b) => a.id - b.id);
  }

  /**
   * The meta's incarnation table for session tokens: each node's running boot in the node's state,
   * its previous boots (the last BOOTS_LISTED) as gone, and nodes whose boot nobody reports (servers
   * without the node library) under the unknown tag.
   */
  viewBoots(): ViewBoot[] {
    const out: ViewBoot[] = [];
    const retry = (state: NodeViewState) => (state === "down" ? this.opts.retryAfterSeconds : 0);
    for (const n of this.nodes.values()) {
      const current = n.hb?.boot ?? null;
      if (current !== null) out.push({ cookie: n.cookie, bootTag: bootTag(current), state: n.state, retryAfterSeconds: retry(n.state) });
      else if (n.hbBootsSeen.size === 0) out.push({ cookie: n.cookie, bootTag: UNKNOWN_BOOT_TAG, state: n.state, retryAfterSeconds: retry(n.state) });
      const old = [...n.hbBootsSeen].filter((b) => b !== current).slice(-BOOTS_LISTED);
      for (const b of old) out.push({ cookie: n.cookie, bootTag: bootTag(b), state: "gone", retryAfterSeconds: 0 });
    }
    return out;
  }

  /** Server URL for a cookie when known (for edge-learned records). */
  urlFor(cookie: string): string {
    return this.nodes.get(cookie)?.url ?? "";
  }

  /** Entries of one shard for the encoder: [hash, owner id, closed]. */
  shardEntries(shard: number): Array<[string, number, boolean]> {
    const out: Array<[string, number, boolean]> = [];
    for (const [k, v] of this.shards[shard]) out.push([k, ownerOf(v), closedOf(v)]);
    return out;
  }
}
