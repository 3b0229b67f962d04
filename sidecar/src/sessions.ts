// The session index: every session the mirror knows, by hash, sharded like the view, each entry
// naming its owner and whether it is closed (a tombstone the edge answers 404 for). It tracks the
// shards whose file no longer matches, every close it saw (against resurrection by an older
// write), and the reconcile generation that tells what a full scan did not see.
import type { OwnerTable } from "./owners.ts";

export type SessionChangeKind = "new" | "changed" | "same";

// An entry's value: owner id * 4 + reconcile generation bit * 2 + closed bit (small ints).
const pack = (owner: number, gen: number, closed: boolean) => owner * 4 + gen * 2 + (closed ? 1 : 0);
const ownerOf = (v: number) => Math.floor(v / 4);
const genOf = (v: number) => (v >> 1) & 1;
const closedOf = (v: number) => (v & 1) === 1;

export interface SessionIndexOptions {
  shardBits: number;
  /** How long a close stays in the view (and in memory); 0 = not at all. */
  tombstoneTtlMs: number;
  now: () => number;
}

export class SessionIndex {
  readonly shardBits: number;
  readonly #shards: Array<Map<string, number>>;
  /** Shards whose file no longer matches the index. */
  readonly #dirty = new Set<number>();
  /** Every close seen (hash -> when), known session or not: guards against resurrection. */
  readonly #closedAt = new Map<string, number>();
  #closedCount = 0;
  #gen = 0;
  #reconciling = false;
  #reconcileStart = 0;

  constructor(
    private readonly opts: SessionIndexOptions,
    private readonly owners: OwnerTable,
  ) {
    this.shardBits = opts.shardBits;
    this.#shards = Array.from({ length: 2 ** opts.shardBits }, () => new Map());
  }

  /** The shard of a key (the session hash as a latin1 string: lib/registry/session-hash.ts). */
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

  // --- queries -------------------------------------------------------------------------------

  get shardCount(): number {
    return this.#shards.length;
  }
  /** Tombstones in the index. */
  get closedCount(): number {
    return this.#closedCount;
  }
  /** The entry for a hash: its owner id and whether it is closed. */
  entry(key: string): { ownerId: number; closed: boolean } | null {
    const v = this.get(key);
    return v === undefined ? null : { ownerId: ownerOf(v), closed: closedOf(v) };
  }
  /** A close of this hash was seen (and has not expired). */
  wasClosed(key: string): boolean {
    return this.#closedAt.has(key);
  }
  /** The entry exists and its shard is on disk (not among `pending`). */
  isPublished(key: string, pending: ReadonlySet<number>): boolean {
    return this.get(key) !== undefined && !pending.has(this.shardOf(key));
  }
  /** Entries of one shard for the encoder: [hash, owner id, closed]. */
  shardEntries(shard: number): Array<[string, number, boolean]> {
    const out: Array<[string, number, boolean]> = [];
    for (const [k, v] of this.#shards[shard]) out.push([k, ownerOf(v), closedOf(v)]);
    return out;
  }

  // --- the shards the view must rewrite --------------------------------------------------------

  dirtyShards(): ReadonlySet<number> {
    return this.#dirty;
  }
  /** The dirty shards, handed to a publish (the set is cleared). */
  takeDirty(): number[] {
    const out = [...this.#dirty];
    this.#dirty.clear();
    return out;
  }
  /** A shard whose write failed: it goes out with the next publish. */
  markDirty(shard: number): void {
    this.#dirty.add(shard);
  }

  // --- changes -------------------------------------------------------------------------------

  /** A scan result older than a live change made since the reconcile started: it must not undo it. */
  scanIsOutdated(key: string): boolean {
    if (!this.#reconciling) return false;
    const old = this.get(key);
    if (old !== undefined && genOf(old) === this.#gen) return true;
    const closed = this.#closedAt.get(key);
    return closed !== undefined && closed >= this.#reconcileStart;
  }

  /** Points the session at `ownerId` (from a change, the API, an edge learn, or a scan). */
  put(key: string, ownerId: number, fromScan: boolean): SessionChangeKind {
    const old = this.get(key);
    if (old !== undefined) {
      if (ownerOf(old) === ownerId && !closedOf(old)) {
        if (genOf(old) !== this.#gen) this.#shards[this.shardOf(key)].set(key, pack(ownerId, this.#gen, false)); // not a view change
        return "same";
      }
      if (closedOf(old)) this.#closedCount--;
      this.owners.ref(ownerId, 1, 1); // before the unref, so an owner moving to itself is never dropped
      this.owners.ref(ownerOf(old), closedOf(old) ? 0 : -1, -1);
      this.set(key, pack(ownerId, this.#gen, false));
      if (!fromScan) this.#closedAt.delete(key);
      return "changed";
    }
    this.owners.ref(ownerId, 1, 1);
    this.set(key, pack(ownerId, this.#gen, false));
    if (!fromScan) this.#closedAt.delete(key);
    return "new";
  }

  /** A close: the session becomes a tombstone (edge 404) if known; remembered either way. */
  close(key: string): boolean {
    this.#closedAt.set(key, this.opts.now());
    const old = this.get(key);
    if (old === undefined || closedOf(old)) return false;
    const owner = ownerOf(old);
    this.owners.ref(owner, -1, 0);
    this.#closedCount++;
    if (this.opts.tombstoneTtlMs > 0) {
      this.set(key, pack(owner, this.#gen, true));
    } else {
      this.owners.ref(owner, 0, -1);
      this.#closedCount--;
      const s = this.shardOf(key);
      if (this.#shards[s].delete(key)) this.#dirty.add(s);
    }
    return true;
  }

  /** Removes tombstones and close memories older than the tombstone TTL. */
  expireTombstones(): number {
    const limit = this.opts.now() - this.opts.tombstoneTtlMs;
    let n = 0;
    for (const [key, at] of this.#closedAt) {
      if (at > limit) continue;
      this.#closedAt.delete(key);
      const s = this.shardOf(key);
      const v = this.#shards[s].get(key);
      if (v !== undefined && closedOf(v)) {
        this.drop(s, key, v);
        n++;
      }
    }
    return n;
  }

  beginReconcile(): void {
    this.#gen ^= 1;
    this.#reconciling = true;
    this.#reconcileStart = this.opts.now();
  }

  /**
   * Ends a full scan: live entries the scan did not see (and no change touched) are dropped.
   * With `spareUnseen` (the first scan after a registry outage: Redis may have come back empty
   * while nodes are still re-registering) they are kept and marked seen, so only the next scan
   * drops what is still missing then.
   */
  endReconcile(completed: boolean, spareUnseen = false): number {
    this.#reconciling = false;
    if (!completed) return 0;
    let n = 0;
    const stale = this.#gen ^ 1;
    for (let s = 0; s < this.#shards.length; s++) {
      for (const [key, v] of this.#shards[s]) {
        if (closedOf(v) || genOf(v) !== stale) continue;
        if (spareUnseen)
          this.#shards[s].set(key, v ^ 2); // current generation: not a view change
        else this.drop(s, key, v);
        n++;
      }
    }
    return n;
  }

  private get(key: string): number | undefined {
    return this.#shards[this.shardOf(key)].get(key);
  }
  private set(key: string, v: number): void {
    const s = this.shardOf(key);
    this.#shards[s].set(key, v);
    this.#dirty.add(s);
  }
  /** Drops an entry outright (expired tombstone, or gone from the registry). */
  private drop(shard: number, key: string, v: number): void {
    if (closedOf(v)) this.#closedCount--;
    this.owners.ref(ownerOf(v), closedOf(v) ? 0 : -1, -1);
    this.#shards[shard].delete(key);
    this.#dirty.add(shard);
  }
}
