// The one Node module that reads and writes the shared-directory formats of docs/registry-view.md:
// view/meta, view/shards/<hex>, learned/<hash>, events/e-<slot>.evt. The plugin (AssemblyScript)
// reads the same bytes, so the layouts here must match that document exactly.
import * as nodeFs from "node:fs/promises";
import { join } from "node:path";
import { sessionHash as schemaSessionHash } from "../registry/schema.ts";

export type NodeViewState = "up" | "draining" | "down" | "gone";
export interface ViewNode {
  id: number;
  cookie: string;
  state: NodeViewState;
  retryAfterSeconds?: number;
}
/** One incarnation of a node (`boot` line): what a session id's routing token is checked against. */
export interface ViewBoot {
  cookie: string;
  /** lib/token bootTag(boot id), or UNKNOWN_BOOT_TAG for a node whose boot is not known. */
  bootTag: string;
  state: NodeViewState;
  retryAfterSeconds?: number;
}
export interface ViewSession {
  hash: Buffer /* 16 bytes */;
  node: number;
  closed?: boolean;
}
export type ShardBits = 4 | 8 | 12 | 16;
export interface ViewMeta {
  epoch: number;
  generation: number;
  published: number;
  shardBits: ShardBits;
  nodes: ViewNode[];
  /** Node incarnations for routing tokens (absent in views written before tokens existed). */
  boots?: ViewBoot[];
}

export const META_MAGIC = "MCPAVIEW 1";
export const SHARD_MAGIC = "MCPS";
export const SHARD_VERSION = 1;
export const SHARD_HEADER_BYTES = 16;
export const SHARD_RECORD_BYTES = 24;
export const HASH_BYTES = 16;
export const META_MAX_BYTES = 64 * 1024;
export const EVENT_MAGIC = "MCPAEV 1";
/** A file without `end` younger than this is still being written (or was never finished). */
export const EVENT_INCOMPLETE_GRACE_MS = 5_000;
/** The plugin writes at most 8 KiB per batch; anything far bigger is not ours. */
export const EVENT_MAX_BYTES = 1024 * 1024;
/** Session ids the plugin may report (its maxSessionIdLength goes up to 4096). */
export const EVENT_MAX_SESSION_ID = 4096;
export const DECISION_REASONS = [
  "sessionless",
  "pass",
  "pin",
  "repair",
  "reject",
  "lost",
  "unavailable",
  "unknown",
  "invalid",
  "fail-open",
] as const;

export const sessionHash = schemaSessionHash;

export class ViewFormatError extends Error {
  readonly code: string;
  constructor(message: string, code = "ERR_VIEW_FORMAT") {
    super(message);
    this.code = code;
  }
}

/** The file operations this module uses: a seam so tests can inject failures (full disk). */
export interface ViewFs {
  writeFile(path: string, data: Buffer | string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<string[]>;
  unlink(path: string): Promise<void>;
  mkdir(path: string, opts: { recursive: true }): Promise<unknown>;
  stat(path: string): Promise<{ mtimeMs: number; size: number }>;
}
export const defaultViewFs: ViewFs = {
  writeFile: (p, d) => nodeFs.writeFile(p, d),
  rename: (a, b) => nodeFs.rename(a, b),
  readFile: (p) => nodeFs.readFile(p),
  readdir: (p) => nodeFs.readdir(p),
  unlink: (p) => nodeFs.unlink(p),
  mkdir: (p, o) => nodeFs.mkdir(p, o),
  stat: (p) => nodeFs.stat(p),
};
export interface ViewIoOptions {
  fs?: ViewFs;
}

export const viewPaths = (dir: string) => ({
  view: join(dir, "view"),
  meta: join(dir, "view", "meta"),
  shards: join(dir, "view", "shards"),
  learned: join(dir, "learned"),
  events: join(dir, "events"),
});

const HEX32 = /^[0-9a-f]{32}$/;
const COOKIE = /^[0-9a-f]{16}$/;
const BOOT_TAG = /^[0-9a-f]{8}$/;
const U32_MAX = 0xffff_ffff;
const isU32 = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= U32_MAX;
const isShardBits = (n: unknown): n is ShardBits => n === 4 || n === 8 || n === 12 || n === 16;
const STATES: ReadonlySet<string> = new Set(["up", "draining", "down", "gone"]);

let tmpCounter = 0;
/**
 * Write then rename in the same directory: a reader sees the old or the new file, never a mix.
 * The temporary name is `.<name>.tmp-<pid>` plus a per-process counter so two concurrent writes
 * of one file in one process cannot clobber each other's temporary.
 */
export async function atomicWrite(path: string, data: Buffer | string, opts: ViewIoOptions = {}): Promise<void> {
  const fs = opts.fs ?? defaultViewFs;
  const slash = path.lastIndexOf("/");
  const dir = path.slice(0, slash);
  const name = path.slice(slash + 1);
  const tmp = `${dir}/.${name}.tmp-${process.pid}.${++tmpCounter}`;
  try {
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.unlink(tmp).catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// view/meta

export function encodeMeta(meta: ViewMeta): string {
  if (!isU32(meta.epoch)) throw new ViewFormatError(`meta epoch ${meta.epoch} is not a u32`);
  if (!Number.isSafeInteger(meta.generation) || meta.generation < 0) throw new ViewFormatError("meta generation is not a u64");
  if (!Number.isSafeInteger(meta.published) || meta.published < 0) throw new ViewFormatError("meta published is not a timestamp");
  if (!isShardBits(meta.shardBits)) throw new ViewFormatError(`meta shardBits ${meta.shardBits} is not 4, 8, 12 or 16`);
  const lines = [
    META_MAGIC,
    `epoch ${meta.epoch}`,
    `generation ${meta.generation}`,
    `published ${meta.published}`,
    `shardBits ${meta.shardBits}`,
  ];
  for (const n of meta.nodes) {
    if (!isU32(n.id)) throw new ViewFormatError(`node id ${n.id} is not a u32`);
    if (!COOKIE.test(n.cookie)) throw new ViewFormatError(`node ${n.id} cookie is not 16 hex digits`);
    if (!STATES.has(n.state)) throw new ViewFormatError(`node ${n.id} state ${n.state} is unknown`);
    const retry = n.retryAfterSeconds ?? 0;
    if (!isU32(retry)) throw new ViewFormatError(`node ${n.id} retryAfterSeconds is not a u32`);
    lines.push(`node ${n.id} ${n.cookie} ${n.state} ${retry}`);
  }
  for (const b of meta.boots ?? []) {
    if (!COOKIE.test(b.cookie)) throw new ViewFormatError(`boot ${b.bootTag} cookie is not 16 hex digits`);
    if (!BOOT_TAG.test(b.bootTag)) throw new ViewFormatError(`boot tag of ${b.cookie} is not 8 hex digits`);
    if (!STATES.has(b.state)) throw new ViewFormatError(`boot ${b.cookie} ${b.bootTag} state ${b.state} is unknown`);
    const retry = b.retryAfterSeconds ?? 0;
    if (!isU32(retry)) throw new ViewFormatError(`boot ${b.cookie} ${b.bootTag} retryAfterSeconds is not a u32`);
    lines.push(`boot ${b.cookie} ${b.bootTag} ${b.state} ${retry}`);
  }
  lines.push("end");
  const text = lines.join("\n") + "\n";
  if (text.length > META_MAX_BYTES) throw new ViewFormatError(`meta is ${text.length} bytes, over ${META_MAX_BYTES}`);
  return text;
}

const DEC = /^(0|[1-9][0-9]*)$/;
function decInt(s: string | undefined, what: string): number {
  if (s === undefined || !DEC.test(s)) throw new ViewFormatError(`meta ${what} is not a decimal integer`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new ViewFormatError(`meta ${what} is out of range`);
  return n;
}

/** Parses a meta file; throws ViewFormatError (the plugin would treat it as missing). */
export function decodeMeta(text: string): ViewMeta {
  if (text.length > META_MAX_BYTES) throw new ViewFormatError("meta is larger than 64 KiB");
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  if (lines[0] !== META_MAGIC) throw new ViewFormatError("meta does not start with MCPAVIEW 1");
  if (lines[lines.length - 1] !== "end") throw new ViewFormatError("meta has no end line");
  let epoch: number | undefined;
  let generation: number | undefined;
  let published: number | undefined;
  let shardBits: number | undefined;
  const nodes: ViewNode[] = [];
  const boots: ViewBoot[] = [];
  for (let i = 1; i < lines.length - 1; i++) {
    const f = lines[i].split(" ");
    switch (f[0]) {
      case "epoch":
        epoch = decInt(f[1], "epoch");
        if (!isU32(epoch)) throw new ViewFormatError("meta epoch is not a u32");
        break;
      case "generation":
        generation = decInt(f[1], "generation");
        break;
      case "published":
        published = decInt(f[1], "published");
        break;
      case "shardBits":
        shardBits = decInt(f[1], "shardBits");
        break;
      case "node": {
        if (f.length !== 5) throw new ViewFormatError(`meta line ${i + 1}: node needs 4 fields`);
        const id = decInt(f[1], "node id");
        if (!isU32(id)) throw new ViewFormatError("meta node id is not a u32");
        if (!COOKIE.test(f[2])) throw new ViewFormatError(`meta line ${i + 1}: bad cookie`);
        if (!STATES.has(f[3])) throw new ViewFormatError(`meta line ${i + 1}: bad state`);
        const retry = decInt(f[4], "retryAfterSeconds");
        nodes.push({ id, cookie: f[2], state: f[3] as NodeViewState, retryAfterSeconds: retry });
        break;
      }
      case "boot": {
        if (f.length !== 5) throw new ViewFormatError(`meta line ${i + 1}: boot needs 4 fields`);
        if (!COOKIE.test(f[1])) throw new ViewFormatError(`meta line ${i + 1}: bad cookie`);
        if (!BOOT_TAG.test(f[2])) throw new ViewFormatError(`meta line ${i + 1}: bad boot tag`);
        if (!STATES.has(f[3])) throw new ViewFormatError(`meta line ${i + 1}: bad state`);
        const retry = decInt(f[4], "retryAfterSeconds");
        boots.push({ cookie: f[1], bootTag: f[2], state: f[3] as NodeViewState, retryAfterSeconds: retry });
        break;
      }
      default:
        throw new ViewFormatError(`meta line ${i + 1}: unknown key`);
    }
  }
  if (epoch === undefined || generation === undefined || published === undefined || shardBits === undefined) {
    throw new ViewFormatError("meta lacks epoch, generation, published or shardBits");
  }
  if (!isShardBits(shardBits)) throw new ViewFormatError("meta shardBits is not 4, 8, 12 or 16");
  return { epoch, generation, published, shardBits, nodes, boots };
}

export async function writeMeta(dir: string, meta: ViewMeta, opts: ViewIoOptions = {}): Promise<void> {
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  const text = encodeMeta(meta);
  await fs.mkdir(p.shards, { recursive: true });
  await atomicWrite(p.meta, text, opts);
}

/** The published meta, or null when missing or malformed (a reader fails open on both). */
export async function readMeta(dir: string, opts: ViewIoOptions = {}): Promise<ViewMeta | null> {
  const fs = opts.fs ?? defaultViewFs;
  let buf: Buffer;
  try {
    buf = await fs.readFile(viewPaths(dir).meta);
  } catch (err: any) {
    if (err?.code === "ENOENT") return null;
    throw err;
  }
  try {
    return decodeMeta(buf.toString("latin1"));
  } catch (err) {
    if (err instanceof ViewFormatError) return null;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// view/shards/<hex>

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
    if (!Buffer.isBuffer(s.hash) || s.hash.length !== HASH_BYTES) throw new ViewFormatError("session hash is not 16 bytes");
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
export async function writeShardBuffer(dir: string, prefix: string, buf: Buffer, opts: ViewIoOptions = {}): Promise<void> {
  if (!/^[0-9a-f]{1,4}$/.test(prefix)) throw new ViewFormatError(`shard prefix ${JSON.stringify(prefix)} is not 1 to 4 hex digits`);
  await atomicWrite(join(viewPaths(dir).shards, prefix), buf, opts);
}

export interface DecodedShard {
  epoch: number;
  sessions: Array<{ hash: Buffer; node: number; closed: boolean }>;
}

export function decodeShard(buf: Buffer): DecodedShard {
  if (buf.length < SHARD_HEADER_BYTES || buf.toString("latin1", 0, 4) !== SHARD_MAGIC) {
    throw new ViewFormatError("shard has no MCPS header");
  }
  if (buf.readUInt32LE(4) !== SHARD_VERSION) throw new ViewFormatError("shard format version is not 1");
  const n = buf.readUInt32LE(12);
  if (buf.length !== SHARD_HEADER_BYTES + n * SHARD_RECORD_BYTES) throw new ViewFormatError("shard length does not match its count");
  const sessions: DecodedShard["sessions"] = [];
  for (let i = 0, off = SHARD_HEADER_BYTES; i < n; i++, off += SHARD_RECORD_BYTES) {
    sessions.push({
      hash: Buffer.from(buf.subarray(off, off + 16)),
      node: buf.readUInt32LE(off + 16),
      closed: (buf[off + 20] & 1) === 1,
    });
  }
  return { epoch: buf.readUInt32LE(8), sessions };
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

const isPrefixFor = (prefix: string, shardBits: number) => prefix.length === shardBits / 4 && /^[0-9a-f]+$/.test(prefix);

export async function writeShard(
  dir: string,
  meta: Pick<ViewMeta, "epoch" | "shardBits">,
  prefix: string,
  sessions: ViewSession[],
  opts: ViewIoOptions = {},
): Promise<void> {
  if (!isPrefixFor(prefix, meta.shardBits)) throw new ViewFormatError(`shard prefix ${JSON.stringify(prefix)} does not fit shardBits ${meta.shardBits}`);
  for (const s of sessions) {
    if (Buffer.isBuffer(s.hash) && s.hash.length === HASH_BYTES && shardPrefix(s.hash, meta.shardBits) !== prefix) {
      throw new ViewFormatError(`a session hash does not belong to shard ${prefix}`);
    }
  }
  const buf = encodeShard(meta.epoch, sessions);
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  await fs.mkdir(p.shards, { recursive: true });
  await atomicWrite(join(p.shards, prefix), buf, opts);
}

export async function removeShard(dir: string, prefix: string, opts: ViewIoOptions = {}): Promise<void> {
  const fs = opts.fs ?? defaultViewFs;
  await fs.unlink(join(viewPaths(dir).shards, prefix)).catch((err: any) => {
    if (err?.code !== "ENOENT") throw err;
  });
}

/** Names of the shard files present (temporaries and foreign names excluded). */
export async function listShards(dir: string, opts: ViewIoOptions = {}): Promise<string[]> {
  const fs = opts.fs ?? defaultViewFs;
  try {
    return (await fs.readdir(viewPaths(dir).shards)).filter((n) => /^[0-9a-f]{1,4}$/.test(n));
  } catch (err: any) {
    if (err?.code === "ENOENT") return [];
    throw err;
  }
}

/** Runs fn over items with at most `limit` in flight. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Cold publish: every shard, then removal of shard files whose prefix is now empty (or of another
 * shardBits), then the meta. Meta last: a reader never sees a meta pointing at shards not yet written.
 */
export async function publishView(dir: string, meta: ViewMeta, sessions: Iterable<ViewSession>, opts: ViewIoOptions = {}): Promise<void> {
  if (!isShardBits(meta.shardBits)) throw new ViewFormatError(`shardBits ${meta.shardBits} is not 4, 8, 12 or 16`);
  const groups = new Map<string, ViewSession[]>();
  for (const s of sessions) {
    if (!Buffer.isBuffer(s.hash) || s.hash.length !== HASH_BYTES) throw new ViewFormatError("session hash is not 16 bytes");
    const prefix = shardPrefix(s.hash, meta.shardBits);
    let g = groups.get(prefix);
    if (!g) groups.set(prefix, (g = []));
    g.push(s);
  }
  const fs = opts.fs ?? defaultViewFs;
  await fs.mkdir(viewPaths(dir).shards, { recursive: true });
  await eachLimited([...groups.entries()], 16, ([prefix, list]) => writeShard(dir, meta, prefix, list, opts));
  const stale = (await listShards(dir, opts)).filter((name) => !groups.has(name));
  await eachLimited(stale, 16, (name) => removeShard(dir, name, opts));
  await writeMeta(dir, meta, opts);
}

/** Looks a session hash up the way the plugin does: meta, then the one shard of its prefix. */
export async function lookupSession(dir: string, hash: Buffer, opts: ViewIoOptions = {}): Promise<{ node: number; closed: boolean } | null> {
  const meta = await readMeta(dir, opts);
  if (!meta) return null;
  const fs = opts.fs ?? defaultViewFs;
  let buf: Buffer;
  try {
    buf = await fs.readFile(join(viewPaths(dir).shards, shardPrefix(hash, meta.shardBits)));
  } catch (err: any) {
    if (err?.code === "ENOENT") return null;
    throw err;
  }
  if (buf.length < SHARD_HEADER_BYTES || buf.toString("latin1", 0, 4) !== SHARD_MAGIC || buf.readUInt32LE(4) !== SHARD_VERSION) return null;
  if (buf.readUInt32LE(8) !== meta.epoch) return null;
  return findInShard(buf, hash);
}

// ---------------------------------------------------------------------------------------------
// learned/<32 hex>

export async function writeLearned(dir: string, hashHex: string, cookie: string, opts: ViewIoOptions = {}): Promise<void> {
  if (!HEX32.test(hashHex)) throw new ViewFormatError("learned hash is not 32 lowercase hex digits");
  if (!COOKIE.test(cookie)) throw new ViewFormatError("learned cookie is not 16 hex digits");
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  await fs.mkdir(p.learned, { recursive: true });
  await atomicWrite(join(p.learned, hashHex), cookie + "\n", opts);
}

export interface ListLearnedOptions extends ViewIoOptions {
  /** Called for a learned-looking file whose content is not `<cookie>\n` (partial or foreign). */
  onInvalid?: (name: string) => void;
  /** Include each file's mtime (needs one stat per file). */
  withMtime?: boolean;
}

export async function listLearned(
  dir: string,
  opts: ListLearnedOptions = {},
): Promise<Array<{ hashHex: string; cookie: string; mtimeMs?: number }>> {
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  let names: string[];
  try {
    names = await fs.readdir(p.learned);
  } catch (err: any) {
    if (err?.code === "ENOENT") return [];
    throw err;
  }
  const out: Array<{ hashHex: string; cookie: string; mtimeMs?: number }> = [];
  for (const name of names) {
    if (!HEX32.test(name)) continue; // temporaries and foreign files
    let text: string;
    let mtimeMs: number | undefined;
    try {
      text = (await fs.readFile(join(p.learned, name))).toString("latin1");
      if (opts.withMtime) mtimeMs = (await fs.stat(join(p.learned, name))).mtimeMs;
    } catch (err: any) {
      if (err?.code === "ENOENT") continue; // deleted meanwhile
      throw err;
    }
    const cookie = text.endsWith("\n") ? text.slice(0, -1) : "";
    if (!COOKIE.test(cookie)) {
      opts.onInvalid?.(name);
      continue;
    }
    out.push(mtimeMs === undefined ? { hashHex: name, cookie } : { hashHex: name, cookie, mtimeMs });
  }
  return out;
}

export async function deleteLearned(dir: string, hashHex: string, opts: ViewIoOptions = {}): Promise<void> {
  if (!HEX32.test(hashHex)) throw new ViewFormatError("learned hash is not 32 lowercase hex digits");
  const fs = opts.fs ?? defaultViewFs;
  await fs.unlink(join(viewPaths(dir).learned, hashHex)).catch((err: any) => {
    if (err?.code !== "ENOENT") throw err;
  });
}

// ---------------------------------------------------------------------------------------------
// events/e-<slot>.evt

export interface EventBatch {
  t: number;
  learned: Array<{ id: string; hash: string; cookie: string }>;
  closed: Array<{ id: string; hash: string; cookie: string | null }>;
  decisions: Record<string, number>;
  dropped: number;
  /** Lines skipped by a lenient parse (never written). */
  badLines?: number;
}

export class EventFormatError extends Error {
  readonly code = "ERR_EVENT_FORMAT";
}

const SESSION_ID = /^[\x21-\x7e]+$/;
const REASON = /^[a-z][a-z-]{0,31}$/;
const isSessionId = (s: string | undefined): s is string =>
  s !== undefined && s.length > 0 && s.length <= EVENT_MAX_SESSION_ID && SESSION_ID.test(s);
function count(s: string | undefined): number | null {
  if (s === undefined || !DEC.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/** Parses one body line into the batch; returns an error message or null. */
function parseEventLine(line: string, b: EventBatch, seenT: { v: boolean }): string | null {
  const f = line.split(" ");
  switch (f[0]) {
    case "t": {
      const t = count(f[1]);
      if (f.length !== 2 || t === null) return "bad t line";
      if (seenT.v) return "second t line";
      b.t = t;
      seenT.v = true;
      return null;
    }
    case "l":
    case "c": {
      if (f.length !== 4) return `${f[0]} line needs 3 fields`;
      const [, id, hash, cookie] = f;
      if (!isSessionId(id)) return `${f[0]} line has no valid session id`;
      if (!HEX32.test(hash)) return `${f[0]} line has no valid hash`;
      if (schemaSessionHash(id).toString("hex") !== hash) return `${f[0]} line hash does not match its session id`;
      if (f[0] === "l") {
        if (!COOKIE.test(cookie)) return "l line has no valid cookie";
        b.learned.push({ id, hash, cookie });
      } else {
        if (cookie !== "-" && !COOKIE.test(cookie)) return "c line has no valid cookie";
        b.closed.push({ id, hash, cookie: cookie === "-" ? null : cookie });
      }
      return null;
    }
    case "d": {
      const n = count(f[2]);
      if (f.length !== 3 || !REASON.test(f[1]) || n === null) return "bad d line";
      b.decisions[f[1]] = (b.decisions[f[1]] ?? 0) + n;
      return null;
    }
    case "x": {
      const n = count(f[1]);
      if (f.length !== 2 || n === null) return "bad x line";
      b.dropped += n;
      return null;
    }
    default:
      return "unknown line";
  }
}

export interface ParseEventOptions {
  /** Skip (and count in `badLines`) malformed body lines instead of rejecting the batch. */
  lenient?: boolean;
}

/**
 * Parses an event batch. Header, a `t` line and the final `end` are always required; with
 * `lenient`, a malformed body line is skipped and counted instead of failing the whole batch.
 */
export function parseEventBatch(text: string, opts: ParseEventOptions = {}): EventBatch {
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  else throw new EventFormatError("event batch does not end with a newline");
  if (lines[0] !== EVENT_MAGIC) throw new EventFormatError("event batch does not start with MCPAEV 1");
  if (lines.length < 2 || lines[lines.length - 1] !== "end") throw new EventFormatError("event batch has no end line");
  const b: EventBatch = { t: 0, learned: [], closed: [], decisions: {}, dropped: 0 };
  const seenT = { v: false };
  let bad = 0;
  for (let i = 1; i < lines.length - 1; i++) {
    const err = parseEventLine(lines[i], b, seenT);
    if (err) {
      if (!opts.lenient) throw new EventFormatError(`event line ${i + 1}: ${err}`);
      bad++;
    }
  }
  if (!seenT.v) throw new EventFormatError("event batch has no t line");
  if (opts.lenient) b.badLines = bad;
  return b;
}

/**
 * The text the plugin writes for a batch: header, t, l*, c*, d* (non-zero, in DECISION_REASONS
 * order), x (when non-zero), end. (The plugin may interleave l and c lines in the order it saw them.)
 */
export function formatEventBatch(b: EventBatch): string {
  const lines = [EVENT_MAGIC, `t ${b.t}`];
  for (const l of b.learned) lines.push(`l ${l.id} ${l.hash} ${l.cookie}`);
  for (const c of b.closed) lines.push(`c ${c.id} ${c.hash} ${c.cookie ?? "-"}`);
  // The plugin writes reasons in DECISION_REASONS order; any other reason follows.
  const reasons = [...DECISION_REASONS.filter((r) => r in b.decisions), ...Object.keys(b.decisions).filter((r) => !(DECISION_REASONS as readonly string[]).includes(r))];
  for (const reason of reasons) if (b.decisions[reason] > 0) lines.push(`d ${reason} ${b.decisions[reason]}`);
  if (b.dropped > 0) lines.push(`x ${b.dropped}`);
  lines.push("end");
  return lines.join("\n") + "\n";
}

export interface DrainOptions extends ViewIoOptions {
  now?: () => number;
  /** How long a file without `end` may stay before it counts as corrupt (default 5 s). */
  incompleteGraceMs?: number;
  /** At most this many files per drain (the rest wait for the next one). */
  maxFiles?: number;
  /** Called for each corrupt file (before it is deleted). */
  onCorrupt?: (file: string, err: Error) => void;
  /** Called for a batch with skipped lines. */
  onBadLines?: (file: string, count: number) => void;
  /** Called when apply() or a delete fails; the file stays for the next drain. */
  onError?: (file: string, err: Error) => void;
}

export interface DrainResult {
  applied: number;
  corrupt: number;
  pending: number;
  /** Batches whose apply failed: kept for the next drain. */
  failed: number;
  badLines: number;
  /** Names in events/ that are not e-<slot>.evt (ignored, never deleted). */
  foreign: number;
}

const EVENT_FILE = /^e-[0-9]{1,10}\.evt$/;

/**
 * One pass over events/: applies complete batches oldest first (by their `t`), then deletes each
 * applied file. Incomplete files wait out the grace period; corrupt files are counted and deleted.
 * When an apply fails, that file and every later one stay for the next drain (order preserved:
 * a close must never be applied before the learn it follows).
 */
export async function drainEvents(
  dir: string,
  apply: (b: EventBatch, file: string) => Promise<void>,
  opts: DrainOptions = {},
): Promise<DrainResult> {
  const fs = opts.fs ?? defaultViewFs;
  const now = opts.now ?? Date.now;
  const grace = opts.incompleteGraceMs ?? EVENT_INCOMPLETE_GRACE_MS;
  const r: DrainResult = { applied: 0, corrupt: 0, pending: 0, failed: 0, badLines: 0, foreign: 0 };
  const evDir = viewPaths(dir).events;
  let names: string[];
  try {
    names = await fs.readdir(evDir);
  } catch (err: any) {
    if (err?.code === "ENOENT") return r;
    throw err;
  }
  const files = names.filter((n) => {
    if (EVENT_FILE.test(n)) return true;
    if (!n.startsWith(".")) r.foreign++;
    return false;
  });
  const limit = opts.maxFiles ?? 1000;
  if (files.length > limit) r.pending += files.length - limit;
  const batches: Array<{ file: string; b: EventBatch; mtimeMs: number }> = [];
  const corrupt = async (file: string, err: Error) => {
    r.corrupt++;
    opts.onCorrupt?.(file, err);
    await fs.unlink(join(evDir, file)).catch(() => undefined);
  };
  for (const file of files.slice(0, limit)) {
    const path = join(evDir, file);
    let st: { mtimeMs: number; size: number };
    let buf: Buffer;
    try {
      st = await fs.stat(path);
      if (st.size > EVENT_MAX_BYTES) {
        await corrupt(file, new EventFormatError(`event file is ${st.size} bytes`));
        continue;
      }
      buf = await fs.readFile(path);
    } catch (err: any) {
      if (err?.code === "ENOENT") continue;
      if (err?.code === "EISDIR") {
        r.foreign++;
        continue;
      }
      throw err;
    }
    const text = buf.toString("latin1");
    const complete = text.endsWith("\nend\n");
    if (!complete) {
      if (now() - st.mtimeMs < grace) r.pending++;
      else await corrupt(file, new EventFormatError("event batch has no end line (after grace period)"));
      continue;
    }
    try {
      const b = parseEventBatch(text, { lenient: true });
      batches.push({ file, b, mtimeMs: st.mtimeMs });
    } catch (err) {
      await corrupt(file, err as Error);
    }
  }
  batches.sort((a, b) => a.b.t - b.b.t || a.mtimeMs - b.mtimeMs || (a.file < b.file ? -1 : 1));
  for (let i = 0; i < batches.length; i++) {
    const { file, b } = batches[i];
    try {
      await apply(b, file);
    } catch (err) {
      r.failed++;
      r.pending += batches.length - i - 1;
      opts.onError?.(file, err as Error);
      break;
    }
    if (b.badLines) {
      r.badLines += b.badLines;
      opts.onBadLines?.(file, b.badLines);
    }
    r.applied++;
    try {
      await fs.unlink(join(evDir, file));
    } catch (err: any) {
      if (err?.code !== "ENOENT") opts.onError?.(file, err);
    }
  }
  return r;
}
