// Test entry: the plugin's readers of the shared-directory formats (meta, shard, learned file) and
// its event-batch writer, alone (no ABI, no WASI imports), so both sides of every golden vector of
// test/vectors/view run on the very code the plugin runs. Built to plugin/build/view.wasm.
import "../assembly/abort";
import { Bytes } from "../assembly/bytes";
import { RegistryView, OwnerFacts, SHARD_ABSENT, SHARD_UNUSABLE } from "../assembly/view";
import { EventLog, pushSessionLine } from "../assembly/events";
import { sha256, DIGEST } from "../assembly/sha256";
import { pushHex } from "../assembly/hex";

const view = new RegistryView(0);
const learnedOwner = new OwnerFacts();
const input = new Bytes(1024);
const result = new Bytes(1024);
const hash = new Bytes(16);
const hashHex = new Bytes(32);
let events = new EventLog(-1, 0, 16);

/** Scratch input: the host writes a file's bytes (or an id) here. */
export function inputBuffer(len: i32): usize {
  input.clear();
  input.ensure(len);
  input.len = len;
  return input.ptr;
}
/** Scratch input: the 16-byte session hash a shard or learned file is probed for. */
export function hashBuffer(): usize {
  hash.clear();
  hash.ensure(16);
  hash.len = 16;
  return hash.ptr;
}
export function resultPtr(): usize {
  return result.ptr;
}
export function resultLen(): i32 {
  return result.len;
}

function pushLine(state: u8, retry: u32): void {
  result.pushByte(32);
  result.pushAscii(state == 0 ? "up" : state == 1 ? "draining" : state == 2 ? "down" : "gone");
  result.pushByte(32);
  result.pushU64(retry);
  result.pushByte(10);
}

/**
 * Parses the input as view/meta; on success leaves what the plugin took from it at result, one
 * field a line in the file's own syntax (epoch, generation, published, shardBits, node*, boot*).
 */
export function parseMeta(): bool {
  result.clear();
  if (!view.parseMeta(input)) return false;
  pushMetaResult();
  return true;
}

let streamedAt = 0;
let streamedPiece = 0;

/** Reads the input as a file would be read, at most `streamedPiece` bytes at a time. */
function readInput(_fd: i32, out: Bytes): i32 {
  const n = min<i32>(min<i32>(streamedPiece, out.buf.length - out.len), input.len - streamedAt);
  memory.copy(out.ptr + <usize>out.len, input.ptr + <usize>streamedAt, <usize>n);
  out.len += n;
  streamedAt += n;
  return n;
}

/** parseMeta as the plugin reads the file: through a buffer of `bufferBytes`, `pieceBytes` per read. */
export function parseMetaStreamed(bufferBytes: i32, pieceBytes: i32): bool {
  result.clear();
  streamedAt = 0;
  streamedPiece = pieceBytes;
  if (!view.parseMetaFrom(readInput, 0, new Bytes(bufferBytes))) return false;
  pushMetaResult();
  return true;
}

function pushMetaResult(): void {
  result.pushAscii("epoch ");
  result.pushU64(view.epoch);
  result.pushAscii("\ngeneration ");
  result.pushU64(view.generation);
  result.pushAscii("\npublished ");
  result.pushU64(view.published);
  result.pushAscii("\nshardBits ");
  result.pushU64(<u64>view.shardBits);
  result.pushByte(10);
  for (let i = 0; i < view.nodeIds.length; i++) {
    result.pushAscii("node ");
    result.pushU64(view.nodeIds[i]);
    result.pushByte(32);
    result.pushAscii(view.nodeCookies[i]);
    pushLine(view.nodeStates[i], view.nodeRetry[i]);
  }
  for (let i = 0; i < view.bootCookies.length; i++) {
    result.pushAscii("boot ");
    result.pushAscii(view.bootCookies[i]);
    result.pushByte(32);
    result.pushAscii(view.bootTag(i));
    pushLine(view.bootStates[i], view.bootRetry[i]);
  }
}

/** Freshness of a meta published at `published` seen at `now` (1: stale). */
export function isStale(published: u64, now: u64, staleAfterMs: u64): bool {
  view.published = published;
  return view.isStale(now, staleAfterMs);
}

/**
 * Searches the input as a shard of a view of `epoch` for the hash at hashBuffer: -2 unusable,
 * -1 absent, else node * 2 + closed.
 */
export function searchShard(epoch: u32): i64 {
  view.epoch = epoch;
  const off = view.searchShard(input, hash.ptr);
  if (off == SHARD_UNUSABLE || off == SHARD_ABSENT) return <i64>off;
  const rec = input.ptr + <usize>off;
  return ((<i64>load<u32>(rec, 16)) << 1) | (<i64>(load<u8>(rec, 20) & 1));
}

/** The input as a learned file probed for the hash at hashBuffer: its cookie at result, or false. */
export function parseLearned(): bool {
  result.clear();
  if (view.parseLearned(input, hash.ptr, learnedOwner) != 3 /* S_LEARNED */) return false;
  result.pushAscii(learnedOwner.cookie);
  return true;
}

/** Starts a new batch. */
export function eventsReset(): void {
  events = new EventLog(-1, 0, 16);
}
/** Queues a session line for the id in the input: kind 0 `l`, 1 `c`, 2 `v`; cookie = the input's bytes after idLen. */
export function eventsSessionLine(kind: i32, idLen: i32): void {
  hashOf(idLen);
  const cookie = input.toAscii(idLen, input.len);
  pushSessionLine(events.lines, kind == 0 ? "l" : kind == 1 ? "c" : "v", input, 0, idLen, hashHex, cookie);
  events.lineCount++;
}
/** Notes activity of the session whose id is the input (an `a` line). */
export function eventsTouch(now: u64): void {
  hashOf(input.len);
  events.touch(load<u64>(DIGEST), input, input.len, hashHex, now);
}
export function eventsCount(reason: i32): void {
  events.count(reason);
}
export function eventsBody(kind: i32): void {
  events.countBody(kind);
}
export function eventsExposed(n: u32): void {
  for (let i: u32 = 0; i < n; i++) events.countExposed();
}
export function eventsDropped(n: u32): void {
  events.dropped += n;
}
/** The batch's bytes at result. */
export function eventsEncode(now: u64): void {
  const o = events.encode(now);
  result.clear();
  result.pushBytes(o, 0, o.len);
}

function hashOf(idLen: i32): void {
  sha256(input.ptr, idLen);
  hashHex.clear();
  pushHex(hashHex, DIGEST, 16);
}
