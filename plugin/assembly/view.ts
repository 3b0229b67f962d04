// RegistryView: the sidecar's published view (docs/registry-view.md), read with WASI file calls.
// Meta is cached per instance for viewRefreshMs; shards and learned files are read per lookup.
// Every file goes through one 4 KiB buffer that never grows, whatever the view's size: the meta a
// line at a time, a shard larger than the buffer a window at a time. Parsing allocates only what
// it keeps (a node's cookie or boot tag that changed), so an instance stays in its first page.
// The parsers (parseMeta, searchShard, parseLearned) read a buffer only, so a test entry can run
// them without WASI on the golden vectors of test/vectors/view.
import { Bytes, equalsAscii } from "./bytes";
import { openRead, readAt, readInto, close, fileVersion, ERRNO_NOENT } from "./wasi";
import {
  T_LIVE, T_DOWN, T_DEAD, T_NEW_BOOT, T_UNKNOWN_NODE, S_UNUSABLE, S_OWNER, S_CLOSED, S_LEARNED, S_UNKNOWN,
  NODE_UP, NODE_DRAINING, NODE_DOWN, NODE_GONE,
} from "./core";
import { UNKNOWN_BOOT_TAG } from "./token";
import { pushHex, isHexBytes, sameHashHex, parseDecBytes } from "./hex";

export const META_MAX_BYTES: i32 = 65536;
/** A meta published at most this far ahead of this host's clock still counts as fresh (clock skew between hosts). */
export const MAX_CLOCK_SKEW_MS: u64 = 2000;
/** The longest Retry-After the plugin sends, whatever a meta says (one day). */
const MAX_RETRY_SECONDS: u32 = 86400;
const U32_MAX: i64 = 0xffffffff;
// searchShard results besides a record's offset.
export const SHARD_UNUSABLE: i32 = -2; // not a shard of this view (magic, version, epoch, too short)
export const SHARD_ABSENT: i32 = -1; // a shard of this view without the session
const SHARD_HEADER: i32 = 16;
/** A learned file: `<32 hex hash> <16 hex cookie>\n`. */
const LEARNED_BYTES: i32 = 50;
const RECORD: i32 = 24;
/** A line has at most this many fields that count (a node or boot line has five). */
const MAX_FIELDS: i32 = 6;
/** Keys a line longer than the file buffer cannot have and be valid (any other key is ignored). */
const KNOWN_KEYS: string[] = ["epoch", "generation", "published", "shardBits", "node", "boot", "end"];

/** Appends what one read of file `fd` gives into the room `out` has: bytes read, 0 at the end, -1 on an error (wasi.ts readInto). */
export type ReadInto = (fd: i32, out: Bytes) => i32;

/**
 * What a lookup found out about the node a request belongs to: its sticky cookie value, its state
 * and its Retry-After hint. The caller passes the record a lookup fills (one per kind of lookup,
 * allocated once when the instance starts: a request allocates none, and an instance stays in its
 * first page). A lookup that finds no owner leaves the record as it was.
 */
export class OwnerFacts {
  cookie: string = "";
  state: u8 = NODE_UP;
  /** Seconds for Retry-After (at most MAX_RETRY_SECONDS); 0: no hint, the setting decides. */
  retry: u32 = 0;

  set(cookie: string, state: u8, retry: u32): void {
    this.cookie = cookie;
    this.state = state;
    this.retry = min<u32>(retry, MAX_RETRY_SECONDS);
  }

  clear(): void {
    this.set("", NODE_UP, 0);
  }
}

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
  /** Boot tags, 8 bytes each (strings would cost an instance's page on a large cluster). */
  private bootTagBytes: Bytes = new Bytes(256);
  bootStates: u8[] = [];
  bootRetry: u32[] = [];
  /** learned/ file names are this many leading hex digits of the session hash (maxLearnedFiles). */
  learnedDigits: i32 = 3;

  private path: Bytes = new Bytes(128);
  /** The version (fileVersion) of the meta last read, and of the file now. */
  private metaKnown: StaticArray<u64> = new StaticArray<u64>(4);
  private nextVersion: StaticArray<u64> = new StaticArray<u64>(4);
  private file: Bytes = new Bytes(4096);
  // The meta being parsed, a line at a time (beginMeta, metaLine, endMeta).
  private mLine: i32 = 0;
  private mSawEnd: bool = false;
  private mEpoch: i64 = -1;
  private mGeneration: i64 = -1;
  private mPublished: i64 = -1;
  private mBits: i64 = -1;
  private mNodes: i32 = 0;
  private mBoots: i32 = 0;
  private fieldStart: StaticArray<i32> = new StaticArray<i32>(MAX_FIELDS);
  private fieldEnd: StaticArray<i32> = new StaticArray<i32>(MAX_FIELDS);

  constructor(public refreshMs: u64) {}

  /**
   * True when the cached meta is usable and fresh enough; when due, checks whether the file
   * changed (one stat) and reads it again only then. The sidecar replaces the meta by a rename,
   * so a new meta is a new inode: a version can only be missed when its inode, size and times all
   * equal the last one's, and then only until the next publish.
   */
  refresh(now: u64, force: bool): bool {
    if (this.dirfd < 0) return false;
    if (!force && this.haveMeta && now - this.loadedAt < this.refreshMs && now >= this.loadedAt) return true;
    this.loadedAt = now;
    this.setPath("view/meta");
    const known = this.metaKnown;
    if (!fileVersion(this.dirfd, this.path, this.nextVersion)) known.fill(0);
    else if (!force && this.haveMeta && sameVersion(this.nextVersion, known)) return true;
    else memory.copy(changetype<usize>(known), changetype<usize>(this.nextVersion), 32);
    this.haveMeta = this.loadMeta();
    // A changed meta leaves the strings it replaced behind (and an array's old storage when it
    // grew). An instance that serves a request now and then (the pool spreads them) may reload on
    // every one: collect at once, or that garbage outruns the periodic collection and the
    // allocator grows the instance past its first page. An unchanged meta returned above.
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
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return false;
    const ok = this.parseMetaFrom(readInto, fd, this.file);
    close(fd);
    return ok;
  }

  /**
   * Parses a meta read a piece at a time into `b` (which never grows), a line at a time. A line
   * longer than b can only be one a reader ignores (an unknown key): it is skipped; with a known
   * key, the meta is invalid (no valid line of a known key is longer than 52 bytes).
   */
  parseMetaFrom(read: ReadInto, fd: i32, b: Bytes): bool {
    b.clear();
    this.beginMeta();
    let ok = true;
    let total = 0;
    let skipping = false;
    while (ok) {
      const n = read(fd, b);
      if (n < 0) {
        ok = false;
        break;
      }
      total += n;
      if (total > META_MAX_BYTES) {
        ok = false;
        break;
      }
      let s = 0;
      for (let i = 0; i < b.len && ok; i++) {
        if (b.at(i) != 10) continue;
        if (skipping) skipping = false;
        else ok = this.metaLine(b, s, i);
        s = i + 1;
      }
      if (!ok) break;
      if (n == 0) {
        // The last line, without its final newline.
        if (s < b.len && !skipping) ok = this.metaLine(b, s, b.len);
        break;
      }
      if (s == 0 && b.len == b.buf.length) {
        // A line that fills the buffer: skip it if it is one readers ignore.
        if (!skipping) {
          ok = this.mLine++ > 0 && !this.mSawEnd && this.ignoredKey(b);
          skipping = true;
        }
        b.clear();
        continue;
      }
      // Keep the line begun for the next read.
      memory.copy(b.ptr, b.ptr + <usize>s, <usize>(b.len - s));
      b.len -= s;
    }
    return this.endMeta(ok);
  }

  /** The line at the start of `b` (longer than b) has a key no valid line of this length can have. */
  private ignoredKey(b: Bytes): bool {
    let e = 0;
    while (e < b.len && b.at(e) != 32) e++;
    if (e == 0) return false; // an empty key
    for (let k = 0; k < KNOWN_KEYS.length; k++) if (equalsAscii(b, 0, e, unchecked(KNOWN_KEYS[k]))) return false;
    return true;
  }

  /** Parses a whole meta file in `b` (the rules of docs/registry-view.md); false leaves the view unusable. */
  parseMeta(b: Bytes): bool {
    if (b.len > META_MAX_BYTES) return false;
    this.beginMeta();
    let ok = true;
    let i = 0;
    while (ok && i < b.len) {
      let e = i;
      while (e < b.len && b.at(e) != 10) e++;
      ok = this.metaLine(b, i, e);
      i = e + 1;
    }
    return this.endMeta(ok);
  }

  private beginMeta(): void {
    this.mLine = 0;
    this.mSawEnd = false;
    this.mEpoch = -1;
    this.mGeneration = -1;
    this.mPublished = -1;
    this.mBits = -1;
    this.mNodes = 0;
    this.mBoots = 0;
  }

  /** One line of the meta, bytes [s, e) of b without its newline; false: the meta is invalid. */
  private metaLine(b: Bytes, s: i32, e: i32): bool {
    if (this.mSawEnd) return false; // nothing may follow `end`
    if (this.mLine++ == 0) return equalsAscii(b, s, e, "MCPAVIEW 1");
    if (equalsAscii(b, s, e, "end")) {
      this.mSawEnd = true;
      return true;
    }
    // Fields are split at every space, as String#split(" ") splits: two spaces make an empty field.
    let n = 0;
    let f = s;
    for (let i = s; i <= e; i++) {
      if (i < e && b.at(i) != 32) continue;
      if (n < MAX_FIELDS) {
        unchecked((this.fieldStart[n] = f));
        unchecked((this.fieldEnd[n] = i));
      }
      n++;
      f = i + 1;
    }
    const ks = unchecked(this.fieldStart[0]), ke = unchecked(this.fieldEnd[0]);
    if (ke == ks || equalsAscii(b, ks, ke, "end")) return false; // an empty key, a leading space, an `end` with fields
    if (equalsAscii(b, ks, ke, "node")) {
      // node <id> <cookie> <state> <retryAfterSeconds>: one owner of sessions.
      if (n != 5) return false;
      const id = this.decField(b, 1);
      const state = this.stateField(b, 3);
      const retry = this.decField(b, 4);
      if (id < 0 || id > U32_MAX || !this.hexField(b, 2, 16) || state == 255 || retry < 0 || retry > U32_MAX) return false;
      this.putNode(this.mNodes++, <u32>id, b, unchecked(this.fieldStart[2]), state, <u32>retry);
      return true;
    }
    if (equalsAscii(b, ks, ke, "boot")) {
      // boot <cookie> <tag> <state> <retryAfterSeconds>: one incarnation of a node.
      if (n != 5) return false;
      const state = this.stateField(b, 3);
      const retry = this.decField(b, 4);
      if (!this.hexField(b, 1, 16) || !this.hexField(b, 2, 8) || state == 255 || retry < 0 || retry > U32_MAX) return false;
      this.putBoot(this.mBoots++, b, unchecked(this.fieldStart[1]), unchecked(this.fieldStart[2]), state, <u32>retry);
      return true;
    }
    const header = equalsAscii(b, ks, ke, "epoch")
      ? 0
      : equalsAscii(b, ks, ke, "generation")
        ? 1
        : equalsAscii(b, ks, ke, "published")
          ? 2
          : equalsAscii(b, ks, ke, "shardBits")
            ? 3
            : -1;
    if (header < 0) return true; // any other key is a later writer's addition: ignored
    const v = n == 2 ? this.decField(b, 1) : -1;
    if (v < 0) return false;
    if (header == 0) {
      if (this.mEpoch >= 0 || v > U32_MAX) return false;
      this.mEpoch = v;
    } else if (header == 1) {
      if (this.mGeneration >= 0) return false;
      this.mGeneration = v;
    } else if (header == 2) {
      if (this.mPublished >= 0) return false;
      this.mPublished = v;
    } else {
      if (this.mBits >= 0) return false;
      this.mBits = v;
    }
    return true;
  }

  private endMeta(ok: bool): bool {
    this.nodeIds.length = this.mNodes;
    this.nodeCookies.length = this.mNodes;
    this.nodeStates.length = this.mNodes;
    this.nodeRetry.length = this.mNodes;
    this.bootCookies.length = this.mBoots;
    this.bootTagBytes.len = this.mBoots << 3;
    this.bootStates.length = this.mBoots;
    this.bootRetry.length = this.mBoots;
    if (!ok || !this.mSawEnd || this.mEpoch < 0 || this.mGeneration < 0 || this.mPublished < 0) return false;
    const bits = this.mBits;
    if (bits != 4 && bits != 8 && bits != 12 && bits != 16) return false;
    this.epoch = <u32>this.mEpoch;
    this.generation = <u64>this.mGeneration;
    this.published = <u64>this.mPublished;
    this.shardBits = <i32>bits;
    return true;
  }

  private decField(b: Bytes, k: i32): i64 {
    return parseDecBytes(b, unchecked(this.fieldStart[k]), unchecked(this.fieldEnd[k]));
  }

  private hexField(b: Bytes, k: i32, n: i32): bool {
    const fs = unchecked(this.fieldStart[k]);
    return unchecked(this.fieldEnd[k]) - fs == n && isHexBytes(b, fs, n);
  }

  private stateField(b: Bytes, k: i32): u8 {
    const fs = unchecked(this.fieldStart[k]), fe = unchecked(this.fieldEnd[k]);
    if (equalsAscii(b, fs, fe, "up")) return NODE_UP;
    if (equalsAscii(b, fs, fe, "draining")) return NODE_DRAINING;
    if (equalsAscii(b, fs, fe, "down")) return NODE_DOWN;
    if (equalsAscii(b, fs, fe, "gone")) return NODE_GONE;
    return 255;
  }

  /** The cookie at b[at, at + 16) as a string boot line i can share: the previous boot line's, a node line's, or a new one. */
  private sharedCookie(b: Bytes, at: i32, i: i32): string {
    if (i > 0 && equalsAscii(b, at, at + 16, unchecked(this.bootCookies[i - 1]))) return unchecked(this.bootCookies[i - 1]);
    for (let k = 0; k < this.mNodes; k++)
      if (equalsAscii(b, at, at + 16, unchecked(this.nodeCookies[k]))) return unchecked(this.nodeCookies[k]);
    return b.toAscii(at, at + 16);
  }

  /** Sets node line i, keeping the cookie string it had when the bytes are the same (no garbage). */
  private putNode(i: i32, id: u32, b: Bytes, cookieAt: i32, state: u8, retry: u32): void {
    if (i < this.nodeIds.length) {
      unchecked((this.nodeIds[i] = id));
      if (!equalsAscii(b, cookieAt, cookieAt + 16, unchecked(this.nodeCookies[i])))
        unchecked((this.nodeCookies[i] = b.toAscii(cookieAt, cookieAt + 16)));
      unchecked((this.nodeStates[i] = state));
      unchecked((this.nodeRetry[i] = retry));
      return;
    }
    this.nodeIds.push(id);
    this.nodeCookies.push(b.toAscii(cookieAt, cookieAt + 16));
    this.nodeStates.push(state);
    this.nodeRetry.push(retry);
  }

  /**
   * Sets boot line i, keeping the strings it had when the bytes are the same (no garbage). A node
   * has up to nine boot lines: its cookie is one string, shared with its node line.
   */
  private putBoot(i: i32, b: Bytes, cookieAt: i32, tagAt: i32, state: u8, retry: u32): void {
    if (i < this.bootCookies.length) {
      if (!equalsAscii(b, cookieAt, cookieAt + 16, unchecked(this.bootCookies[i])))
        unchecked((this.bootCookies[i] = this.sharedCookie(b, cookieAt, i)));
      unchecked((this.bootStates[i] = state));
      unchecked((this.bootRetry[i] = retry));
    } else {
      this.bootCookies.push(this.sharedCookie(b, cookieAt, i));
      this.bootStates.push(state);
      this.bootRetry.push(retry);
    }
    const tags = this.bootTagBytes;
    tags.ensure((i + 1) << 3);
    memory.copy(tags.ptr + (<usize>i << 3), b.ptr + <usize>tagAt, 8);
  }

  /** Boot line i's tag. */
  bootTag(i: i32): string {
    return this.bootTagBytes.toAscii(i << 3, (i + 1) << 3);
  }

  /**
   * Looks a 16-byte session hash up (at `hash`) in its shard, then in learned/: S_OWNER or
   * S_LEARNED with `owner` filled, S_CLOSED, S_UNKNOWN, or S_UNUSABLE (no meta, a shard of another
   * epoch, an owner id the meta lacks).
   */
  lookup(hash: usize, owner: OwnerFacts): i32 {
    if (!this.haveMeta) return S_UNUSABLE;
    const digits = this.shardBits >> 2;
    this.path.clear();
    this.path.pushAscii("view/shards/");
    pushHex(this.path, hash, (digits + 1) >> 1);
    if (digits & 1) this.path.len--; // odd digit count: drop the last nibble
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return -fd == <i32>ERRNO_NOENT ? this.lookupLearned(hash, owner) : S_UNUSABLE;
    const rec = this.findRecord(fd, hash);
    close(fd);
    if (rec == SHARD_UNUSABLE) return S_UNUSABLE;
    if (rec == SHARD_ABSENT) return this.lookupLearned(hash, owner);
    const at = this.file.ptr + <usize>rec;
    if (load<u8>(at, 20) & 1) return S_CLOSED;
    return this.resolveOwner(load<u32>(at, 16), owner) ? S_OWNER : S_UNUSABLE;
  }

  /**
   * The hash's record in the open shard: its offset in the file buffer, SHARD_ABSENT or
   * SHARD_UNUSABLE. A shard that fits the buffer is read whole, in one call, and searched as
   * searchShard searches. A larger one (about 170 records: 700,000 sessions on 4,096 shards) is
   * searched a window of records at a time, each read where the hash should be (hashes are
   * uniform, so its rank in the shard is about its value): one or two more reads.
   */
  private findRecord(fd: i32, hash: usize): i32 {
    const b = this.file;
    if (readAt(fd, b, 0, b.buf.length) < 0) return SHARD_UNUSABLE;
    const whole = this.searchShard(b, hash);
    if (whole != SHARD_UNUSABLE || b.len < b.buf.length || !this.isShardHeader(b)) return whole;
    // The buffer is full and the header counts more records than it holds.
    const count = <i32>load<u32>(b.ptr, 12);
    const perWindow = b.buf.length / RECORD;
    let lo: i32 = 0, hi: i32 = count; // the record, if any, is in [lo, hi)
    let first: i32 = 0, n: i32 = (b.len - SHARD_HEADER) / RECORD, base: i32 = SHARD_HEADER; // the window
    while (true) {
      if (memory.compare(hash, b.ptr + <usize>base, 16) < 0) hi = first;
      else if (memory.compare(hash, b.ptr + <usize>(base + (n - 1) * RECORD), 16) > 0) lo = first + n;
      else {
        const i = searchRecords(b.ptr + <usize>base, n, hash);
        return i < 0 ? SHARD_ABSENT : base + i * RECORD;
      }
      if (lo >= hi) return SHARD_ABSENT;
      first = min<i32>(max<i32>(rankOf(hash, this.shardBits, count) - perWindow / 2, lo), max<i32>(hi - perWindow, lo));
      n = min<i32>(perWindow, hi - first);
      const want = n * RECORD;
      if (readAt(fd, b, <u64>(SHARD_HEADER + first * RECORD), want) != want) return SHARD_UNUSABLE; // shorter than its count says
      base = 0;
    }
  }

  /** A shard header of this view's epoch (magic, version, epoch). */
  private isShardHeader(b: Bytes): bool {
    return b.len >= SHARD_HEADER && load<u32>(b.ptr) == 0x5350434d /* "MCPS" */ && load<u32>(b.ptr, 4) == 1 && load<u32>(b.ptr, 8) == this.epoch;
  }

  /**
   * Binary search of the shard in `b` for the 16-byte hash at `hash`: the record's offset in b,
   * SHARD_ABSENT, or SHARD_UNUSABLE (not a shard of this view's epoch, or shorter than its count
   * says). Bytes after the last record are ignored (docs/registry-view.md).
   */
  searchShard(b: Bytes, hash: usize): i32 {
    if (!this.isShardHeader(b)) return SHARD_UNUSABLE;
    const count = <i64>load<u32>(b.ptr, 12);
    if (SHARD_HEADER + count * RECORD > <i64>b.len) return SHARD_UNUSABLE;
    const i = searchRecords(b.ptr + <usize>SHARD_HEADER, <i32>count, hash);
    return i < 0 ? SHARD_ABSENT : SHARD_HEADER + i * RECORD;
  }

  private resolveOwner(id: u32, owner: OwnerFacts): bool {
    for (let i = 0; i < this.nodeIds.length; i++) {
      if (unchecked(this.nodeIds[i]) == id) {
        owner.set(unchecked(this.nodeCookies[i]), unchecked(this.nodeStates[i]), unchecked(this.nodeRetry[i]));
        return true;
      }
    }
    return false;
  }

  /**
   * What the meta says about a session token's incarnation (cookie, boot tag), with `incarnation`
   * filled in every case: T_LIVE, T_DOWN or T_DEAD (its state and Retry-After hint), T_NEW_BOOT
   * (the node is known but not this boot: a boot younger than the view, or one the sidecar no
   * longer lists), T_UNKNOWN_NODE (both: up, no hint).
   */
  lookupToken(cookie: string, tag: string, incarnation: OwnerFacts): i32 {
    let nodeKnown = false;
    for (let i = 0; i < this.bootCookies.length; i++) {
      if (unchecked(this.bootCookies[i]) != cookie) continue;
      nodeKnown = true;
      if (!equalsAscii(this.bootTagBytes, i << 3, (i + 1) << 3, tag)) continue;
      const state = unchecked(this.bootStates[i]);
      incarnation.set(cookie, state, unchecked(this.bootRetry[i]));
      if (state == NODE_GONE) return T_DEAD;
      if (state == NODE_DOWN) return T_DOWN;
      return T_LIVE;
    }
    incarnation.set(cookie, NODE_UP, 0);
    return nodeKnown ? T_NEW_BOOT : T_UNKNOWN_NODE;
  }

  /** Boot tag of the node's running incarnation (its first `boot` line not gone), else unknown. */
  currentBootTag(cookie: string): string {
    for (let i = 0; i < this.bootCookies.length; i++) {
      if (unchecked(this.bootCookies[i]) == cookie && unchecked(this.bootStates[i]) != NODE_GONE) return this.bootTag(i);
    }
    return UNKNOWN_BOOT_TAG;
  }

  /**
   * learned/<hash prefix>: `<32 hex hash> <cookie>\n`, written by this Traefik's plugin instances
   * on initialize responses. The file is one of a bounded set; it answers only for its own hash.
   */
  lookupLearned(hash: usize, owner: OwnerFacts): i32 {
    this.path.clear();
    this.path.pushAscii("learned/");
    pushHex(this.path, hash, (this.learnedDigits + 1) >> 1);
    if (this.learnedDigits & 1) this.path.len--;
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return S_UNKNOWN;
    const ok = readAt(fd, this.file, 0, LEARNED_BYTES + 1) >= 0; // a longer file is not a learned file
    close(fd);
    return ok ? this.parseLearned(this.file, hash, owner) : S_UNKNOWN;
  }

  /**
   * A learned file's content for the hash at `hash`: S_LEARNED (`owner` filled: its cookie, up, no
   * hint) or S_UNKNOWN (partial, foreign, another session).
   */
  parseLearned(b: Bytes, hash: usize, owner: OwnerFacts): i32 {
    if (b.len != LEARNED_BYTES || b.at(32) != 32 || b.at(49) != 10 || !sameHashHex(b, hash) || !isHexBytes(b, 33, 16)) return S_UNKNOWN;
    owner.set(b.toAscii(33, 49), NODE_UP, 0);
    return S_LEARNED;
  }
}

/** Same file version; a host that gives no modification time proves nothing (always read). */
function sameVersion(a: StaticArray<u64>, b: StaticArray<u64>): bool {
  if (unchecked(a[2]) == 0) return false;
  for (let i = 0; i < 4; i++) if (unchecked(a[i]) != unchecked(b[i])) return false;
  return true;
}

/** Binary search of n sorted 24-byte records at `at` for the 16-byte hash at `hash`: its index, or -1. */
function searchRecords(at: usize, n: i32, hash: usize): i32 {
  let lo: i32 = 0, hi: i32 = n - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = memory.compare(at + <usize>(mid * RECORD), hash, 16);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Where a hash should rank among `count` records of its shard: the 32 bits after the shard's own. */
function rankOf(hash: usize, shardBits: i32, count: i32): i32 {
  let v: u64 = 0;
  for (let i = 0; i < 5; i++) v = (v << 8) | <u64>load<u8>(hash + <usize>((shardBits >> 3) + i));
  v = ((v << <u64>(shardBits & 7)) >> 8) & 0xffffffff;
  return <i32>((v * <u64>count) >> 32);
}
