// RegistryView: the sidecar's published view (docs/registry-view.md), read with WASI file calls.
// Meta is cached per instance for viewRefreshMs; shards and learned files are read per lookup.
// The parsers (parseMeta, searchShard, parseLearned) read a buffer only, so a test entry can run
// them without WASI on the golden vectors of test/vectors/view.
import { Bytes } from "./bytes";
import { openRead, readAll, readMore, close, ERRNO_NOENT } from "./wasi";
import {
  T_LIVE, T_DOWN, T_DEAD, T_NEW_BOOT, T_UNKNOWN_NODE, S_UNUSABLE, S_OWNER, S_CLOSED, S_LEARNED, S_UNKNOWN,
  NODE_UP, NODE_DRAINING, NODE_DOWN, NODE_GONE,
} from "./core";
import { UNKNOWN_BOOT_TAG } from "./token";
import { pushHex, isHexString, isHexBytes, sameHashHex, parseDec } from "./hex";

export const META_MAX_BYTES: i32 = 65536;
/** A meta published at most this far ahead of this host's clock still counts as fresh (clock skew between hosts). */
export const MAX_CLOCK_SKEW_MS: u64 = 2000;
/** The longest Retry-After the plugin sends, whatever a meta says (one day). */
const MAX_RETRY_SECONDS: u32 = 86400;
const U32_MAX: i64 = 0xffffffff;
// searchShard results besides a record's offset.
export const SHARD_UNUSABLE: i32 = -2; // not a shard of this view (magic, version, epoch, too short)
export const SHARD_ABSENT: i32 = -1; // a shard of this view without the session

export class RegistryView {
  dirfd: i32 = -1;
  loadedAt: u64 = 0;
  haveMeta: bool = false;
  epoch: u32 = 0;
  generation: u64 = 0;
  published: u64 = 0;
  shardBits: i32 = 12;
  nodeIds: u32[] = [];
  nodeCookies: string[] = [];
  nodeStates: u8[] = [];
  nodeRetry: u32[] = [];
  // Node incarnations by boot tag (`boot` lines), for session tokens.
  bootCookies: string[] = [];
  bootTags: string[] = [];
  bootStates: u8[] = [];
  bootRetry: u32[] = [];
  // Result of the last lookup (or lookupToken), in fields rather than a returned object: no
  // allocation per request, and the instance stays in its one page of memory.
  ownerCookie: string = "";
  ownerState: u8 = NODE_UP;
  ownerRetry: u32 = 0;
  /** learned/ file names are this many leading hex digits of the session hash (maxLearnedFiles). */
  learnedDigits: i32 = 3;

  private path: Bytes = new Bytes(128);
  private lastShardSize: i32 = 0;
  private file: Bytes = new Bytes(4096);

  constructor(public refreshMs: u64) {}

  /** True when the cached meta is usable and fresh enough; reloads it when due. */
  refresh(now: u64, force: bool): bool {
    if (this.dirfd < 0) return false;
    if (!force && this.haveMeta && now - this.loadedAt < this.refreshMs && now >= this.loadedAt) return true;
    this.loadedAt = now;
    this.haveMeta = this.loadMeta();
    // Parsing leaves a string per line and field behind. An instance that serves a request now and
    // then (the pool spreads them) reloads the meta on every one: collect at once, or that garbage
    // outruns the periodic collection and the allocator grows the instance past its first page.
    __collect();
    return this.haveMeta;
  }

  /** Stale: published more than staleAfterMs ago, or further ahead than MAX_CLOCK_SKEW_MS (a clock gone wrong). */
  isStale(now: u64, staleAfterMs: u64): bool {
    if (this.published > now) return this.published - now > MAX_CLOCK_SKEW_MS;
    return now - this.published > staleAfterMs;
  }

  private setPath(p: string): void {
    this.path.clear();
    this.path.pushAscii(p);
  }

  private loadMeta(): bool {
    this.setPath("view/meta");
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return false;
    const ok = readAll(fd, this.file);
    close(fd);
    return ok && this.parseMeta(this.file);
  }

  /** Parses a meta file (the rules of docs/registry-view.md); false leaves the view unusable. */
  parseMeta(b: Bytes): bool {
    this.nodeIds.length = 0;
    this.nodeCookies.length = 0;
    this.nodeStates.length = 0;
    this.nodeRetry.length = 0;
    this.bootCookies.length = 0;
    this.bootTags.length = 0;
    this.bootStates.length = 0;
    this.bootRetry.length = 0;
    if (b.len > META_MAX_BYTES) return false;
    let line = 0;
    let i = 0;
    let sawEnd = false;
    let epoch: i64 = -1, generation: i64 = -1, published: i64 = -1, bits: i64 = -1;
    while (i < b.len) {
      if (sawEnd) return false; // nothing may follow `end`
      let e = i;
      while (e < b.len && b.at(e) != 10) e++;
      const text = b.toAscii(i, e);
      i = e + 1;
      if (line++ == 0) {
        if (text != "MCPAVIEW 1") return false;
        continue;
      }
      if (text == "end") {
        sawEnd = true;
        continue;
      }
      const parts = text.split(" ");
      const key = parts[0];
      if (key == "epoch" || key == "generation" || key == "published" || key == "shardBits") {
        const v = parts.length == 2 ? parseDec(parts[1]) : -1;
        if (v < 0) return false;
        if (key == "epoch") {
          if (epoch >= 0 || v > U32_MAX) return false;
          epoch = v;
        } else if (key == "generation") {
          if (generation >= 0) return false;
          generation = v;
        } else if (key == "published") {
          if (published >= 0) return false;
          published = v;
        } else {
          if (bits >= 0) return false;
          bits = v;
        }
      } else if (key == "node") {
        // node <id> <cookie> <state> <retryAfterSeconds>: one owner of sessions.
        if (parts.length != 5) return false;
        const id = parseDec(parts[1]);
        const state = parseState(parts[3]);
        const retry = parseDec(parts[4]);
        if (id < 0 || id > U32_MAX || !isHexString(parts[2], 16) || state == 255 || retry < 0 || retry > U32_MAX) return false;
        this.nodeIds.push(<u32>id);
        this.nodeCookies.push(parts[2]);
        this.nodeStates.push(state);
        this.nodeRetry.push(<u32>retry);
      } else if (key == "boot") {
        // boot <cookie> <tag> <state> <retryAfterSeconds>: one incarnation of a node.
        if (parts.length != 5) return false;
        const state = parseState(parts[3]);
        const retry = parseDec(parts[4]);
        if (!isHexString(parts[1], 16) || !isHexString(parts[2], 8) || state == 255 || retry < 0 || retry > U32_MAX) return false;
        this.bootCookies.push(parts[1]);
        this.bootTags.push(parts[2]);
        this.bootStates.push(state);
        this.bootRetry.push(<u32>retry);
      } else if (key.length == 0 || key == "end") {
        return false; // an empty line, a leading space, or an `end` with fields
      }
      // any other key is a later writer's addition: ignored
    }
    if (!sawEnd || epoch < 0 || generation < 0 || published < 0) return false;
    if (bits != 4 && bits != 8 && bits != 12 && bits != 16) return false;
    this.epoch = <u32>epoch;
    this.generation = <u64>generation;
    this.published = <u64>published;
    this.shardBits = <i32>bits;
    return true;
  }

  /** Looks a 16-byte session hash up (at `hash`): S_OWNER sets ownerCookie/ownerState/ownerRetry. */
  lookup(hash: usize): i32 {
    if (!this.haveMeta) return S_UNUSABLE;
    const digits = this.shardBits >> 2;
    this.path.clear();
    this.path.pushAscii("view/shards/");
    pushHex(this.path, hash, (digits + 1) >> 1);
    if (digits & 1) this.path.len--; // odd digit count: drop the last nibble
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return -fd == <i32>ERRNO_NOENT ? this.lookupLearned(hash) : S_UNUSABLE;
    const ok = this.readShard(fd);
    close(fd);
    if (!ok) return S_UNUSABLE;
    const rec = this.searchShard(this.file, hash);
    if (rec == SHARD_UNUSABLE) return S_UNUSABLE;
    if (rec == SHARD_ABSENT) return this.lookupLearned(hash);
    const at = this.file.ptr + <usize>rec;
    if (load<u8>(at, 20) & 1) return S_CLOSED;
    return this.resolveOwner(load<u32>(at, 16)) ? S_OWNER : S_UNUSABLE;
  }

  /**
   * Binary search of the shard in `b` for the 16-byte hash at `hash`: the record's offset in b,
   * SHARD_ABSENT, or SHARD_UNUSABLE (not a shard of this view's epoch, or shorter than its count
   * says). Bytes after the last record are ignored (docs/registry-view.md).
   */
  searchShard(b: Bytes, hash: usize): i32 {
    if (b.len < 16) return SHARD_UNUSABLE;
    const base = b.ptr;
    if (load<u32>(base) != 0x5350434d /* "MCPS" */ || load<u32>(base, 4) != 1) return SHARD_UNUSABLE;
    if (load<u32>(base, 8) != this.epoch) return SHARD_UNUSABLE;
    const count = <i64>load<u32>(base, 12);
    if (16 + count * 24 > <i64>b.len) return SHARD_UNUSABLE;
    let lo: i32 = 0, hi: i32 = <i32>count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const off = 16 + mid * 24;
      const c = memory.compare(base + <usize>off, hash, 16);
      if (c == 0) return off;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return SHARD_ABSENT;
  }

  /** Reads a shard, stopping as soon as the header's record count is satisfied (saves a read). */
  private readShard(fd: i32): bool {
    const b = this.file;
    b.clear();
    b.ensure(this.lastShardSize + 1);
    while (true) {
      const n = readMore(fd, b);
      if (n < 0) return false;
      if (n == 0) return true;
      if (b.len >= 16) {
        const want = 16 + <i64>load<u32>(b.ptr, 12) * 24;
        if (<i64>b.len >= want) {
          this.lastShardSize = b.len;
          return true;
        }
      }
    }
  }

  private resolveOwner(id: u32): bool {
    for (let i = 0; i < this.nodeIds.length; i++) {
      if (unchecked(this.nodeIds[i]) == id) {
        this.ownerCookie = unchecked(this.nodeCookies[i]);
        this.ownerState = unchecked(this.nodeStates[i]);
        this.ownerRetry = min<u32>(unchecked(this.nodeRetry[i]), MAX_RETRY_SECONDS);
        return true;
      }
    }
    return false;
  }

  /**
   * What the meta says about a session token's incarnation (cookie, boot tag): T_LIVE, T_DOWN or
   * T_DEAD with ownerCookie/ownerState/ownerRetry set, T_NEW_BOOT (the node is known but not this
   * boot: a boot younger than the view, or one the sidecar no longer lists), T_UNKNOWN_NODE.
   */
  lookupToken(cookie: string, tag: string): i32 {
    let nodeKnown = false;
    for (let i = 0; i < this.bootCookies.length; i++) {
      if (unchecked(this.bootCookies[i]) != cookie) continue;
      nodeKnown = true;
      if (unchecked(this.bootTags[i]) != tag) continue;
      this.ownerCookie = cookie;
      this.ownerState = unchecked(this.bootStates[i]);
      this.ownerRetry = min<u32>(unchecked(this.bootRetry[i]), MAX_RETRY_SECONDS);
      if (this.ownerState == NODE_GONE) return T_DEAD;
      if (this.ownerState == NODE_DOWN) return T_DOWN;
      return T_LIVE;
    }
    this.ownerCookie = cookie;
    this.ownerState = NODE_UP;
    this.ownerRetry = 0;
    return nodeKnown ? T_NEW_BOOT : T_UNKNOWN_NODE;
  }

  /** Boot tag of the node's running incarnation (its first `boot` line not gone), else unknown. */
  currentBootTag(cookie: string): string {
    for (let i = 0; i < this.bootCookies.length; i++) {
      if (unchecked(this.bootCookies[i]) == cookie && unchecked(this.bootStates[i]) != NODE_GONE) return unchecked(this.bootTags[i]);
    }
    return UNKNOWN_BOOT_TAG;
  }

  /**
   * learned/<hash prefix>: `<32 hex hash> <cookie>\n`, written by this Traefik's plugin instances
   * on initialize responses. The file is one of a bounded set; it answers only for its own hash.
   */
  lookupLearned(hash: usize): i32 {
    this.path.clear();
    this.path.pushAscii("learned/");
    pushHex(this.path, hash, (this.learnedDigits + 1) >> 1);
    if (this.learnedDigits & 1) this.path.len--;
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return S_UNKNOWN;
    const ok = readAll(fd, this.file);
    close(fd);
    return ok ? this.parseLearned(this.file, hash) : S_UNKNOWN;
  }

  /** A learned file's content for the hash at `hash`: S_LEARNED (ownerCookie set) or S_UNKNOWN (partial, foreign, another session). */
  parseLearned(b: Bytes, hash: usize): i32 {
    if (b.len != 50 || b.at(32) != 32 || b.at(49) != 10 || !sameHashHex(b, hash) || !isHexBytes(b, 33, 16)) return S_UNKNOWN;
    this.ownerCookie = b.toAscii(33, 49);
    this.ownerState = NODE_UP;
    this.ownerRetry = 0;
    return S_LEARNED;
  }
}

function parseState(st: string): u8 {
  if (st == "up") return NODE_UP;
  if (st == "draining") return NODE_DRAINING;
  if (st == "down") return NODE_DOWN;
  if (st == "gone") return NODE_GONE;
  return 255;
}
