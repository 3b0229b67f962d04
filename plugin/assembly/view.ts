// RegistryView: the sidecar's published view (docs/registry-view.md), read with WASI file calls.
// Meta is cached per instance for viewRefreshMs; shards and learned files are read per lookup.
import { Bytes } from "./abi";
import { openRead, readAll, readMore, close, ERRNO_NOENT } from "./wasi";
import { T_LIVE, T_DOWN, T_DEAD, T_NEW_BOOT, T_UNKNOWN_NODE } from "./core";
import { UNKNOWN_BOOT_TAG } from "./token";

export const NODE_UP: u8 = 0;
export const NODE_DRAINING: u8 = 1;
export const NODE_DOWN: u8 = 2;
export const NODE_GONE: u8 = 3;

// Lookup outcomes.
export const VIEW_MISSING: i32 = 0; // no usable view (fail open)
export const FOUND: i32 = 1; // session record with a known owner incarnation
export const CLOSED: i32 = 2; // tombstone
export const LEARNED: i32 = 3; // only in learned/: owner cookie, state unknown
export const NOT_FOUND: i32 = 4;
export const INCONSISTENT: i32 = 5; // shard of another epoch, or owner id not in meta

const HEX = "0123456789abcdef";

export class RegistryView {
  dirfd: i32 = -1;
  loadedAt: u64 = 0;
  haveMeta: bool = false;
  epoch: u32 = 0;
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
  // Result of the last lookup (or lookupToken).
  ownerCookie: string = "";
  ownerState: u8 = NODE_UP;
  ownerRetry: u32 = 0;

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
    return this.haveMeta;
  }

  isStale(now: u64, staleAfterMs: u64): bool {
    return now > this.published && now - this.published > staleAfterMs;
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
    if (!ok || this.file.len > 65536) return false;
    return this.parseMeta();
  }

  private parseMeta(): bool {
    const b = this.file;
    this.nodeIds.length = 0;
    this.nodeCookies.length = 0;
    this.nodeStates.length = 0;
    this.nodeRetry.length = 0;
    this.bootCookies.length = 0;
    this.bootTags.length = 0;
    this.bootStates.length = 0;
    this.bootRetry.length = 0;
    let line = 0;
    let i = 0;
    let sawEnd = false;
    let epoch: i64 = -1, published: i64 = -1, bits: i64 = -1;
    while (i < b.len) {
      let e = i;
      while (e < b.len && b.at(e) != 10) e++;
      const text = b.toAscii(i, e);
      i = e + 1;
      if (line++ == 0) {
        if (text != "MCPAVIEW 1") return false;
        continue;
      }
      if (text == "end") { sawEnd = true; break; }
      const parts = text.split(" ");
      const key = parts[0];
      if (key == "epoch" && parts.length == 2) epoch = parseDec(parts[1]);
      else if (key == "published" && parts.length == 2) published = parseDec(parts[1]);
      else if (key == "shardBits" && parts.length == 2) bits = parseDec(parts[1]);
      else if (key == "node" && parts.length == 5) {
        const id = parseDec(parts[1]);
        const st = parts[3];
        const retry = parseDec(parts[4]);
        if (id < 0 || id > 0xffffffff || retry < 0 || parts[2].length != 16) return false;
        const state = parseState(st);
        if (state == 255) return false;
        this.nodeIds.push(<u32>id);
        this.nodeCookies.push(parts[2]);
        this.nodeStates.push(state);
        this.nodeRetry.push(<u32>min<i64>(retry, 86400));
      } else if (key == "boot" && parts.length == 5) {
        // boot <cookie> <tag> <state> <retryAfterSeconds>: one incarnation of a node.
        const retry = parseDec(parts[4]);
        const state = parseState(parts[3]);
        if (!isHexString(parts[1], 16) || !isHexString(parts[2], 8) || state == 255 || retry < 0) return false;
        this.bootCookies.push(parts[1]);
        this.bootTags.push(parts[2]);
        this.bootStates.push(state);
        this.bootRetry.push(<u32>min<i64>(retry, 86400));
      }
      // other keys (generation, future ones) are informational
    }
    if (!sawEnd || epoch < 0 || epoch > 0xffffffff || published < 0) return false;
    if (bits != 4 && bits != 8 && bits != 12 && bits != 16) return false;
    this.epoch = <u32>epoch;
    this.published = <u64>published;
    this.shardBits = <i32>bits;
    return true;
  }

  /** Looks a 16-byte session hash up (at `hash`): FOUND sets ownerCookie/ownerState/ownerRetry. */
  lookup(hash: usize): i32 {
    if (!this.haveMeta) return VIEW_MISSING;
    const digits = this.shardBits >> 2;
    this.path.clear();
    this.path.pushAscii("view/shards/");
    pushHex(this.path, hash, (digits + 1) >> 1);
    if (digits & 1) this.path.len--; // odd digit count: drop the last nibble
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return -fd == <i32>ERRNO_NOENT ? this.lookupLearned(hash) : INCONSISTENT;
    const ok = this.readShard(fd);
    close(fd);
    const b = this.file;
    if (!ok || b.len < 16) return INCONSISTENT;
    const base = b.ptr;
    if (load<u32>(base) != 0x5350434d /* "MCPS" */ || load<u32>(base, 4) != 1) return INCONSISTENT;
    if (load<u32>(base, 8) != this.epoch) return INCONSISTENT;
    const count = <i32>load<u32>(base, 12);
    if (count < 0 || 16 + count * 24 > b.len) return INCONSISTENT;
    let lo = 0, hi = count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const rec = base + 16 + <usize>mid * 24;
      const c = memory.compare(rec, hash, 16);
      if (c == 0) {
        if (load<u8>(rec, 20) & 1) return CLOSED;
        return this.resolveOwner(load<u32>(rec, 16)) ? FOUND : INCONSISTENT;
      }
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return this.lookupLearned(hash);
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
        this.ownerRetry = unchecked(this.nodeRetry[i]);
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
      this.ownerRetry = unchecked(this.bootRetry[i]);
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

  /** learned/<32 hex>: written by this Traefik's plugin instances on initialize responses. */
  lookupLearned(hash: usize): i32 {
    this.path.clear();
    this.path.pushAscii("learned/");
    pushHex(this.path, hash, 16);
    const fd = openRead(this.dirfd, this.path);
    if (fd < 0) return NOT_FOUND;
    const ok = readAll(fd, this.file);
    close(fd);
    if (!ok || this.file.len < 16 || !isHex16(this.file)) return NOT_FOUND;
    this.ownerCookie = this.file.toAscii(0, 16);
    this.ownerState = NODE_UP;
    this.ownerRetry = 0;
    return LEARNED;
  }
}

export function pushHex(out: Bytes, src: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const v = load<u8>(src + <usize>i);
    out.pushByte(<u8>HEX.charCodeAt(v >> 4));
    out.pushByte(<u8>HEX.charCodeAt(v & 15));
  }
}

function parseState(st: string): u8 {
  if (st == "up") return NODE_UP;
  if (st == "draining") return NODE_DRAINING;
  if (st == "down") return NODE_DOWN;
  if (st == "gone") return NODE_GONE;
  return 255;
}

function isHexString(s: string, n: i32): bool {
  if (s.length != n) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function isHex16(b: Bytes): bool {
  for (let i = 0; i < 16; i++) {
    const c = b.at(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function parseDec(s: string): i64 {
  if (s.length == 0 || s.length > 19) return -1;
  let v: i64 = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    v = v * 10 + <i64>(c - 48);
  }
  return v;
}
