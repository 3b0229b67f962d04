// view/shards/<hex> (docs/registry-view.md): encoders, decoder, lookup and the sidecar's file operations.
import { join } from "node:path";
import { ViewFormatError, HASH_BYTES, isU32, isShardBits, type ViewSession } from "./format.ts";
import { atomicWrite, defaultViewFs, errnoCode, viewPaths, type ViewIoOptions } from "./fs.ts";

export const SHARD_MAGIC = "MCPS";
export const SHARD_VERSION = 1;
export const SHARD_HEADER_BYTES = 16;
export const SHARD_RECORD_BYTES = 24;

export function shardPrefix(hash: Buffer, shardBits: number): string {
  if (!isShardBits(shardBits)) throw new ViewFormatError(`shardBits ${shardBits} is not 4, 8, 12 or 16`);
  return hash.toString("hex", 0, Math.ceil(shardBits / 8)).slice(0, shardBits / 4);
}

const compareHash = (a: Buffer, b: Buffer): number => Buffer.compare(a, b);

/** A shard buffer of `count` records with its header written (records zeroed). */
function allocShard(epoch: number, count: number): Buffer {
  const buf = Buffer.alloc(SHARD_HEADER_BYTES + count * SHARD_RECORD_BYTES);
  buf.write(SHARD_MAGIC, 0, "latin1");
  buf.writeUInt32LE(SHARD_VERSION, 4);
  buf.writeUInt32LE(epoch, 8);
  buf.writeUInt32LE(count, 12);
  return buf;
}
/** Sorts (bytewise by hash), drops duplicate hashes (the later entry wins) and encodes. */
export function encodeShard(epoch: number, sessions: readonly ViewSession[]): Buffer {
  if (!isU32(epoch)) throw new ViewFormatError(`shard epoch ${epoch} is not a u32`);
  for (const s of sessions) {
    if (!Buffer.isBuffer(s.hash) || s.hash.length !== HASH_BYTES)
      throw new ViewFormatError("session hash is not 16 bytes");
    if (!isU32(s.node)) throw new ViewFormatError(`session node ${s.node} is not a u32`);
  }
  // Stable sort keeps input order among equal hashes, so "last wins" is well defined.
  const sorted = sessions.map((s, i) => ({ s, i })).sort((a, b) => compareHash(a.s.hash, b.s.hash) || a.i - b.i);
  const unique: ViewSession[] = [];
  for (const { s } of sorted) {
    const last = unique[unique.length - 1];
    if (last && last.hash.equals(s.hash)) unique[unique.length - 1] = s;
    else unique.push(s);
  }
  const buf = allocShard(epoch, unique.length);
  let off = SHARD_HEADER_BYTES;
  for (const s of unique) {
    s.hash.copy(buf, off);
    buf.writeUInt32LE(s.node, off + 16);
    buf[off + 20] = s.closed ? 1 : 0;
    // bytes 21..23 stay zero (reserved)
    off += SHARD_RECORD_BYTES;
  }
  return buf;
}

/**
 * Fast path for large views (the sidecar's mirror): hashes as 16-character latin1 strings, whose
 * string order is their bytewise order. `entries` are [hash, node, closed]; sorted here.
 */
export function encodeShardEntries(epoch: number, entries: Array<[string, number, boolean]>): Buffer {
  if (!isU32(epoch)) throw new ViewFormatError(`shard epoch ${epoch} is not a u32`);
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const buf = allocShard(epoch, entries.length);
  let off = SHARD_HEADER_BYTES;
  for (const [hash, node, closed] of entries) {
    if (hash.length !== HASH_BYTES || buf.write(hash, off, HASH_BYTES, "latin1") !== HASH_BYTES) {
      throw new ViewFormatError("session hash is not 16 latin1 characters");
    }
    buf.writeUInt32LE(node, off + 16);
    buf[off + 20] = closed ? 1 : 0;
    off += SHARD_RECORD_BYTES;
  }
  return buf;
}

/** Writes an already encoded shard (see encodeShardEntries) atomically. */
export async function writeShardBuffer(
  dir: string,
  prefix: string,
  buf: Buffer,
  opts: ViewIoOptions = {},
): Promise<void> {
  if (!/^[0-9a-f]{1,4}$/.test(prefix))
    throw new ViewFormatError(`shard prefix ${JSON.stringify(prefix)} is not 1 to 4 hex digits`);
  await atomicWrite(join(viewPaths(dir).shards, prefix), buf, opts);
}

export interface ShardHeader {
  epoch: number;
  /** Records in the shard. */
  count: number;
}

/**
 * A shard's header: its first SHARD_HEADER_BYTES bytes are enough (a reader that only counts the
 * view's sessions reads no records).
 */
export function decodeShardHeader(buf: Buffer): ShardHeader {
  if (buf.length < SHARD_HEADER_BYTES || buf.toString("latin1", 0, 4) !== SHARD_MAGIC) {
    throw new ViewFormatError("shard has no MCPS header");
  }
  if (buf.readUInt32LE(4) !== SHARD_VERSION) throw new ViewFormatError("shard format version is not 1");
  return { epoch: buf.readUInt32LE(8), count: buf.readUInt32LE(12) };
}

export interface DecodedShard {
  epoch: number;
  sessions: Array<{ hash: Buffer; node: number; closed: boolean }>;
}

export function decodeShard(buf: Buffer): DecodedShard {
  const { epoch, count: n } = decodeShardHeader(buf);
  // Bytes after the last record are ignored (room for a later version's trailer; the plugin stops reading at the count).
  if (buf.length < SHARD_HEADER_BYTES + n * SHARD_RECORD_BYTES)
    throw new ViewFormatError("shard is shorter than its count says");
  const sessions: DecodedShard["sessions"] = [];
  for (let i = 0, off = SHARD_HEADER_BYTES; i < n; i++, off += SHARD_RECORD_BYTES) {
    sessions.push({
      hash: Buffer.from(buf.subarray(off, off + 16)),
      node: buf.readUInt32LE(off + 16),
      closed: (buf[off + 20] & 1) === 1,
    });
  }
  return { epoch, sessions };
}

/** Binary search in an encoded shard, as the plugin does it. */
export function findInShard(buf: Buffer, hash: Buffer): { node: number; closed: boolean } | null {
  const n = Math.min(buf.readUInt32LE(12), Math.floor((buf.length - SHARD_HEADER_BYTES) / SHARD_RECORD_BYTES));
  let lo = 0;
  let hi = n - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const off = SHARD_HEADER_BYTES + mid * SHARD_RECORD_BYTES;
    const c = buf.compare(hash, 0, 16, off, off + 16); // compares the record with the target
    if (c === 0) return { node: buf.readUInt32LE(off + 16), closed: (buf[off + 20] & 1) === 1 };
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return null;
}

export async function removeShard(dir: string, prefix: string, opts: ViewIoOptions = {}): Promise<void> {
  const fs = opts.fs ?? defaultViewFs;
  await fs.unlink(join(viewPaths(dir).shards, prefix)).catch((err: unknown) => {
    if (errnoCode(err) !== "ENOENT") throw err;
  });
}

/** Names of the shard files present (temporaries and foreign names excluded). */
export async function listShards(dir: string, opts: ViewIoOptions = {}): Promise<string[]> {
  const fs = opts.fs ?? defaultViewFs;
  try {
    return (await fs.readdir(viewPaths(dir).shards)).filter((n) => /^[0-9a-f]{1,4}$/.test(n));
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  }
}
