// Test-only writers and readers of the shared directory: what the sidecar publishes (a whole view,
// one shard), what the plugin writes (learned files, event batches), and the plugin's lookup path.
// Production code never writes these shapes this way (the sidecar publishes in its own order).
import { join } from "node:path";
import {
  ViewFormatError,
  HASH_BYTES,
  encodeShard,
  findInShard,
  shardPrefix,
  listShards,
  removeShard,
  readMeta,
  writeMeta,
  learnedName,
  defaultViewFs,
  viewPaths,
  atomicWrite,
  decodeShardHeader,
  BODY_KINDS,
  DECISION_REASONS,
  EVENT_MAGIC,
  type ViewIoOptions,
  type ViewMeta,
  type ViewSession,
  type EventBatch,
} from "../../lib/view/index.ts";
import { isShardBits } from "../../lib/view/format.ts";
import { isCookieValue } from "../../lib/registry/schema.ts";

const isPrefixFor = (prefix: string, shardBits: number) =>
  prefix.length === shardBits / 4 && /^[0-9a-f]+$/.test(prefix);

export async function writeShard(
  dir: string,
  meta: Pick<ViewMeta, "epoch" | "shardBits">,
  prefix: string,
  sessions: ViewSession[],
  opts: ViewIoOptions = {},
): Promise<void> {
  if (!isPrefixFor(prefix, meta.shardBits))
    throw new ViewFormatError(`shard prefix ${JSON.stringify(prefix)} does not fit shardBits ${meta.shardBits}`);
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

/** Runs fn over items with at most `limit` in flight. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * A whole view for a test: every shard, then removal of shard files whose prefix is now empty (or of
 * another shardBits), then the meta. Enough for a directory no reader watches while it is written;
 * the sidecar's publisher follows the writer rules of docs/registry-view.md instead (the meta with
 * the union of old and new owners first, then the shards, then the meta with the current owners).
 */
export async function publishView(
  dir: string,
  meta: ViewMeta,
  sessions: Iterable<ViewSession>,
  opts: ViewIoOptions = {},
): Promise<void> {
  if (!isShardBits(meta.shardBits)) throw new ViewFormatError(`shardBits ${meta.shardBits} is not 4, 8, 12 or 16`);
  const groups = new Map<string, ViewSession[]>();
  for (const s of sessions) {
    if (!Buffer.isBuffer(s.hash) || s.hash.length !== HASH_BYTES)
      throw new ViewFormatError("session hash is not 16 bytes");
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
export async function lookupSession(
  dir: string,
  hash: Buffer,
  opts: ViewIoOptions = {},
): Promise<{ node: number; closed: boolean } | null> {
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
  let epoch: number;
  try {
    ({ epoch } = decodeShardHeader(buf));
  } catch {
    return null; // not a shard (the plugin treats it as absent)
  }
  if (epoch !== meta.epoch) return null;
  return findInShard(buf, hash);
}

export async function writeLearned(
  dir: string,
  hashHex: string,
  cookie: string,
  opts: ViewIoOptions & { digits?: number } = {},
): Promise<void> {
  const name = learnedName(hashHex, opts.digits);
  if (!isCookieValue(cookie)) throw new ViewFormatError("learned cookie is not 16 hex digits");
  const fs = opts.fs ?? defaultViewFs;
  const p = viewPaths(dir);
  await fs.mkdir(p.learned, { recursive: true });
  await atomicWrite(join(p.learned, name), `${hashHex} ${cookie}\n`, opts);
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
  const reasons = [
    ...DECISION_REASONS.filter((r) => r in b.decisions),
    ...Object.keys(b.decisions).filter((r) => !(DECISION_REASONS as readonly string[]).includes(r)),
  ];
  for (const reason of reasons) if (b.decisions[reason] > 0) lines.push(`d ${reason} ${b.decisions[reason]}`);
  for (const kind of BODY_KINDS) if ((b.bodies?.[kind] ?? 0) > 0) lines.push(`b ${kind} ${b.bodies![kind]}`);
  if ((b.exposedServerIds ?? 0) > 0) lines.push(`w ${b.exposedServerIds}`);
  if (b.dropped > 0) lines.push(`x ${b.dropped}`);
  lines.push("end");
  return lines.join("\n") + "\n";
}
