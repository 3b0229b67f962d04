// The one Node module that reads and writes the shared-directory formats of docs/registry-view.md:
// view/meta, view/shards/<hex>, learned/<hash>, events/e-<slot>.evt. The plugin (AssemblyScript)
// reads the same bytes, so the layouts here must match that document exactly.
import * as nodeFs from "node:fs/promises";
import { join } from "node:path";
import { isValidSessionId, sessionHash as schemaSessionHash } from "../registry/schema.ts";
import { McpAffinityError } from "../errors.ts";

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
/**
 * How the plugin passed a POST body on: `buffered` (copied into Traefik's memory first: the answer
 * cannot be cut by golang/go#40747) or `streamed` (chunked, or above maxBufferedBodyBytes).
 */
export const BODY_KINDS = ["buffered", "streamed"] as const;
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

export class ViewFormatError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_VIEW_FORMAT", message);
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
// learned/<hash prefix>

/** Default plugin setting maxLearnedFiles (16^3): learned/ file names are 3 hex digits. */
export const LEARNED_DEFAULT_DIGITS = 3;
const LEARNED_NAME = /^[0-9a-f]{1,4}$/;

/** The learned/ file name of a session hash: its first `digits` hex digits (plugin: maxLearnedFiles = 16^digits). */
export function learnedName(hashHex: string, digits = LEARNED_DEFAULT_DIGITS): string {
  if (!HEX32.test(hashHex)) throw new ViewFormatError("learned hash is not 32 lowercase hex digits");
  if (!Number.isInteger(digits) || digits < 1 || digits > 4) throw new ViewFormatError("learned name digits must be 1 to 4");
  return hashHex.slice(0, digits);
}

/** Parses a learned/ file: `<32 hex hash> <cookie>\n`; null when partial or foreign. */
function decodeLearned(text: string): { hashHex: string; cookie: string } | null {
  if (text.length !== 50 || text[32] !== " " || text[49] !== "\n") return null;
  const hashHex = text.slice(0, 32);
  const cookie = text.slice(33, 49);
  return HEX32.test(hashHex) && COOKIE.test(cookie) ? { hashHex, cookie } : null;
}

export async function writeLearned(dir: string, hashHex: string, cookie: string, opts: ViewIoOptions & { digits?: number } = {}): Promise<void> {
  const name = learnedName(hashHex, opts.digits);
  if (!COOKIE.test(cookie)) throw new ViewFormatError("learned cookie is not 16 hex digits");
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  await fs.mkdir(p.learned, { recursive: true });
  await atomicWrite(join(p.learned, name), `${hashHex} ${cookie}\n`, opts);
}

export interface ListLearnedOptions extends ViewIoOptions {
  /** Called for a learned-looking file whose content is not `<hash> <cookie>\n` (partial or foreign). */
  onInvalid?: (name: string) => void;
  /** Include each file's mtime (needs one stat per file). */
  withMtime?: boolean;
}

export interface LearnedEntry {
  /** File name in learned/ (a hash prefix). */
  name: string;
  hashHex: string;
  cookie: string;
  mtimeMs?: number;
}

export async function listLearned(dir: string, opts: ListLearnedOptions = {}): Promise<LearnedEntry[]> {
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  let names: string[];
  try {
    names = await fs.readdir(p.learned);
  } catch (err: any) {
    if (err?.code === "ENOENT") return [];
    throw err;
  }
  const out: LearnedEntry[] = [];
  for (const name of names) {
    if (!LEARNED_NAME.test(name)) continue; // temporaries and foreign files
    let text: string;
    let mtimeMs: number | undefined;
    try {
      text = (await fs.readFile(join(p.learned, name))).toString("latin1");
      if (opts.withMtime) mtimeMs = (await fs.stat(join(p.learned, name))).mtimeMs;
    } catch (err: any) {
      if (err?.code === "ENOENT") continue; // deleted meanwhile
      throw err;
    }
    const e = decodeLearned(text);
    if (!e || !e.hashHex.startsWith(name)) {
      opts.onInvalid?.(name);
      continue;
    }
    out.push(mtimeMs === undefined ? { name, ...e } : { name, ...e, mtimeMs });
  }
  return out;
}

/**
 * Deletes learned/<name>; with `hashHex`, only while the file still holds that session (the
 * plugin may have replaced it with a newer session of the same prefix meanwhile).
 */
export async function deleteLearned(dir: string, name: string, opts: ViewIoOptions & { hashHex?: string } = {}): Promise<void> {
  if (!LEARNED_NAME.test(name)) throw new ViewFormatError("learned name is not 1 to 4 lowercase hex digits");
  const fs = opts.fs ?? defaultViewFs;
  const path = join(viewPaths(dir).learned, name);
  try {
    if (opts.hashHex !== undefined) {
      const e = decodeLearned((await fs.readFile(path)).toString("latin1"));
      if (e?.hashHex !== opts.hashHex) return;
    }
    await fs.unlink(path);
  } catch (err: any) {
    if (err?.code !== "ENOENT") throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// events/e-<slot>.evt

export interface EventBatch {
  t: number;
  learned: Array<{ id: string; hash: string; cookie: string }>;
  closed: Array<{ id: string; hash: string; cookie: string | null }>;
  /** Sessions whose owner may have answered 404 (`v` lines): to be checked with the owner. */
  suspects?: Array<{ id: string; hash: string; cookie: string }>;
  /** Sessions the edge saw active (`a` lines): their edge-learned records live on. */
  active?: Array<{ id: string; hash: string }>;
  decisions: Record<string, number>;
  dropped: number;
  /** POSTs with a body by how the plugin passed the body on (`b` lines): buffered, streamed. */
  bodies?: Record<string, number>;
  /** Lines skipped by a lenient parse (never written). */
  badLines?: number;
}

export class EventFormatError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_EVENT_FORMAT", message);
  }
}

const REASON = /^[a-z][a-z-]{0,31}$/;
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
    case "c":
    case "v": {
      if (f.length !== 4) return `${f[0]} line needs 3 fields`;
      const [, id, hash, cookie] = f;
      if (!isValidSessionId(id)) return `${f[0]} line has no valid session id`;
      if (!HEX32.test(hash)) return `${f[0]} line has no valid hash`;
      if (schemaSessionHash(id).toString("hex") !== hash) return `${f[0]} line hash does not match its session id`;
      if (f[0] === "l" || f[0] === "v") {
        if (!COOKIE.test(cookie)) return `${f[0]} line has no valid cookie`;
        if (f[0] === "l") b.learned.push({ id, hash, cookie });
        else (b.suspects ??= []).push({ id, hash, cookie });
      } else {
        if (cookie !== "-" && !COOKIE.test(cookie)) return "c line has no valid cookie";
        b.closed.push({ id, hash, cookie: cookie === "-" ? null : cookie });
      }
      return null;
    }
    case "a": {
      if (f.length !== 3) return "a line needs 2 fields";
      const [, id, hash] = f;
      if (!isValidSessionId(id)) return "a line has no valid session id";
      if (!HEX32.test(hash) || schemaSessionHash(id).toString("hex") !== hash) return "a line hash does not match its session id";
      (b.active ??= []).push({ id, hash });
      return null;
    }
    case "d": {
      const n = count(f[2]);
      if (f.length !== 3 || !REASON.test(f[1]) || n === null) return "bad d line";
      b.decisions[f[1]] = (b.decisions[f[1]] ?? 0) + n;
      return null;
    }
    case "b": {
      const n = count(f[2]);
      if (f.length !== 3 || !(BODY_KINDS as readonly string[]).includes(f[1]!) || n === null) return "bad b line";
      b.bodies ??= {};
      b.bodies[f[1]!] = (b.bodies[f[1]!] ?? 0) + n;
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
 * order), b (non-zero), x (when non-zero), end. (The plugin may interleave l and c lines in the order it saw them.)
 */
export function formatEventBatch(b: EventBatch): string {
  const lines = [EVENT_MAGIC, `t ${b.t}`];
  for (const l of b.learned) lines.push(`l ${l.id} ${l.hash} ${l.cookie}`);
  for (const c of b.closed) lines.push(`c ${c.id} ${c.hash} ${c.cookie ?? "-"}`);
  for (const v of b.suspects ?? []) lines.push(`v ${v.id} ${v.hash} ${v.cookie}`);
  for (const a of b.active ?? []) lines.push(`a ${a.id} ${a.hash}`);
  // The plugin writes reasons in DECISION_REASONS order; any other reason follows.
  const reasons = [...DECISION_REASONS.filter((r) => r in b.decisions), ...Object.keys(b.decisions).filter((r) => !(DECISION_REASONS as readonly string[]).includes(r))];
  for (const reason of reasons) if (b.decisions[reason] > 0) lines.push(`d ${reason} ${b.decisions[reason]}`);
  for (const kind of BODY_KINDS) if ((b.bodies?.[kind] ?? 0) > 0) lines.push(`b ${kind} ${b.bodies![kind]}`);
  if (b.dropped > 0) lines.push(`x ${b.dropped}`);
  lines.push("end");
  return lines.join("\n") + "\n";
}

export interface DrainOptions extends ViewIoOptions {
  now?: () => number;
  /** How long a file without `end` may stay before it counts as corrupt (default 5 s). */
  incompleteGraceMs?: number;
  /** At most this many count files (e-*) per drain (the rest wait for the next one). Session files (s-*) are all read. */
  maxFiles?: number;
  /** Called for each corrupt file (before it is deleted). */
  onCorrupt?: (file: string, err: Error) => void;
  /** Called for a batch with skipped lines. */
  onBadLines?: (file: string, count: number) => void;
  /** Called when apply() or a delete fails; the file stays for the next drain. */
  onError?: (file: string, err: Error) => void;
  /**
   * Says whether an apply() failure is permanent (retrying cannot help: the batch is moved to
   * events-quarantine/ and the next batches go on) or transient (the batch and all later ones wait).
   */
  isPermanent?: (err: Error) => boolean;
  /** Called for each batch moved aside. */
  onQuarantine?: (file: string, err: Error) => void;
  /** At most this many files kept in events-quarantine/ (oldest removed first; default 64). */
  maxQuarantine?: number;
}

export interface DrainResult {
  applied: number;
  corrupt: number;
  pending: number;
  /** Batches whose apply failed: kept for the next drain. */
  failed: number;
  /** Batches whose apply failed for a permanent reason: moved to events-quarantine/. */
  quarantined: number;
  badLines: number;
  /** Names in events/ that are not e-<slot>.evt or s-<slot>.evt (ignored, never deleted). */
  foreign: number;
}

/** Session batches (learns, closes: order matters) and count batches (decision counts, lost counts). */
const EVENT_FILE = /^([es])-[0-9]{1,10}\.evt$/;
export const QUARANTINE_DIR = "events-quarantine";
export const DEFAULT_MAX_QUARANTINE = 64;
/** A batch's `t` is taken just before its file is created: an incomplete file's own `t` is at most this much before its mtime. */
const CREATE_SLACK_MS = 1000;

type ReadBatch = { file: string; b: EventBatch; mtimeMs: number };

/**
 * One pass over events/. Session batches (s-*) are all read and applied strictly in the order
 * they were written (their `t`, then mtime and name), whatever the backlog; a batch written after
 * a file still being written waits for it. Count batches (e-*) follow, up to maxFiles, in any
 * order. Applied files are deleted; corrupt files counted and deleted. A transient apply failure
 * keeps that batch and every later session batch for the next drain (a close must never be
 * applied before the learn it follows); a permanent one moves the batch to events-quarantine/.
 */
export async function drainEvents(
  dir: string,
  apply: (b: EventBatch, file: string) => Promise<void>,
  opts: DrainOptions = {},
): Promise<DrainResult> {
  const fs = opts.fs ?? defaultViewFs;
  const now = opts.now ?? Date.now;
  const grace = opts.incompleteGraceMs ?? EVENT_INCOMPLETE_GRACE_MS;
  const r: DrainResult = { applied: 0, corrupt: 0, pending: 0, failed: 0, quarantined: 0, badLines: 0, foreign: 0 };
  const evDir = viewPaths(dir).events;
  let names: string[];
  try {
    names = await fs.readdir(evDir);
  } catch (err: any) {
    if (err?.code === "ENOENT") return r;
    throw err;
  }
  const sessionFiles: string[] = [];
  const countFiles: string[] = [];
  for (const n of names) {
    const m = EVENT_FILE.exec(n);
    if (m) (m[1] === "s" ? sessionFiles : countFiles).push(n);
    else if (!n.startsWith(".")) r.foreign++;
  }
  const limit = opts.maxFiles ?? 1000;
  if (countFiles.length > limit) r.pending += countFiles.length - limit;
  const corrupt = async (file: string, err: Error) => {
    r.corrupt++;
    opts.onCorrupt?.(file, err);
    await fs.unlink(join(evDir, file)).catch(() => undefined);
  };
  /** Reads and parses; returns the batch, "incomplete" (with its mtime) or null (gone, corrupt, foreign). */
  const read = async (file: string): Promise<ReadBatch | { incomplete: number } | null> => {
    const path = join(evDir, file);
    let st: { mtimeMs: number; size: number };
    let buf: Buffer;
    try {
      st = await fs.stat(path);
      if (st.size > EVENT_MAX_BYTES) {
        await corrupt(file, new EventFormatError(`event file is ${st.size} bytes`));
        return null;
      }
      buf = await fs.readFile(path);
    } catch (err: any) {
      if (err?.code === "ENOENT") return null;
      if (err?.code === "EISDIR") {
        r.foreign++;
        return null;
      }
      throw err;
    }
    const text = buf.toString("latin1");
    if (!text.endsWith("\nend\n")) {
      if (now() - st.mtimeMs < grace) return { incomplete: st.mtimeMs };
      await corrupt(file, new EventFormatError("event batch has no end line (after grace period)"));
      return null;
    }
    try {
      return { file, b: parseEventBatch(text, { lenient: true }), mtimeMs: st.mtimeMs };
    } catch (err) {
      await corrupt(file, err as Error);
      return null;
    }
  };
  const done = async (file: string, b: EventBatch) => {
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
  };

  /** Applies one batch: "stop" on a transient failure (it and what follows wait for the next pass). */
  const applyOne = async (file: string, b: EventBatch): Promise<"done" | "stop"> => {
    try {
      await apply(b, file);
    } catch (err) {
      if (!opts.isPermanent?.(err as Error)) {
        r.failed++;
        opts.onError?.(file, err as Error);
        return "stop";
      }
      await quarantine(dir, file, err as Error, opts);
      r.quarantined++;
      return "done";
    }
    await done(file, b);
    return "done";
  };

  // Session batches: strict write order.
  const batches: ReadBatch[] = [];
  let holdFrom = Infinity;
  for (const file of sessionFiles) {
    const x = await read(file);
    if (!x) continue;
    if ("incomplete" in x) {
      r.pending++;
      holdFrom = Math.min(holdFrom, x.incomplete - CREATE_SLACK_MS);
    } else batches.push(x);
  }
  batches.sort((a, b) => a.b.t - b.b.t || a.mtimeMs - b.mtimeMs || (a.file < b.file ? -1 : 1));
  for (let i = 0; i < batches.length; i++) {
    const { file, b } = batches[i];
    if (b.t >= holdFrom) {
      r.pending += batches.length - i;
      break;
    }
    const outcome = await applyOne(file, b);
    if (outcome === "stop") {
      r.pending += batches.length - i - 1;
      break;
    }
  }

  // Count batches: order does not matter; a transient failure stops this pass.
  for (const file of countFiles.slice(0, limit)) {
    const x = await read(file);
    if (!x) continue;
    if ("incomplete" in x) {
      r.pending++;
      continue;
    }
    if ((await applyOne(file, x.b)) === "stop") break;
  }
  return r;
}

/** Moves a batch that can never be applied to events-quarantine/ (kept for inspection, bounded). */
async function quarantine(dir: string, file: string, err: Error, opts: DrainOptions): Promise<void> {
  const fs = opts.fs ?? defaultViewFs;
  const qDir = join(dir, QUARANTINE_DIR);
  const max = opts.maxQuarantine ?? DEFAULT_MAX_QUARANTINE;
  opts.onQuarantine?.(file, err);
  try {
    await fs.mkdir(qDir, { recursive: true });
    // Names sort by time: the oldest go first when the folder is full.
    const kept = (await fs.readdir(qDir)).filter((n) => /^q-\d+-/.test(n)).sort();
    for (const old of kept.slice(0, Math.max(0, kept.length - max + 1))) await fs.unlink(join(qDir, old)).catch(() => undefined);
    await fs.rename(join(dir, "events", file), join(qDir, `q-${String(Date.now()).padStart(15, "0")}-${file}`));
  } catch {
    // Cannot keep it: drop it rather than block every later batch.
    await fs.unlink(join(dir, "events", file)).catch(() => undefined);
  }
}
