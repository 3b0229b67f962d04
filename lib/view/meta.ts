// view/meta (docs/registry-view.md): encoder, decoder and the sidecar's reader/writer.
import {
  ViewFormatError,
  BOOT_TAG,
  DEC,
  isU32,
  isShardBits,
  STATES,
  type ViewMeta,
  type ViewNode,
  type ViewBoot,
  type NodeViewState,
} from "./format.ts";
import { isCookieValue } from "../registry/schema.ts";
import { atomicWrite, defaultViewFs, errnoCode, viewPaths, type ViewIoOptions } from "./fs.ts";

export const META_MAGIC = "MCPAVIEW 1";
export const META_MAX_BYTES = 64 * 1024;

export function encodeMeta(meta: ViewMeta): string {
  if (!isU32(meta.epoch)) throw new ViewFormatError(`meta epoch ${meta.epoch} is not a u32`);
  if (!Number.isSafeInteger(meta.generation) || meta.generation < 0)
    throw new ViewFormatError("meta generation is not a u64");
  if (!Number.isSafeInteger(meta.published) || meta.published < 0)
    throw new ViewFormatError("meta published is not a timestamp");
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
    if (!isCookieValue(n.cookie)) throw new ViewFormatError(`node ${n.id} cookie is not 16 hex digits`);
    if (!STATES.has(n.state)) throw new ViewFormatError(`node ${n.id} state ${n.state} is unknown`);
    const retry = n.retryAfterSeconds ?? 0;
    if (!isU32(retry)) throw new ViewFormatError(`node ${n.id} retryAfterSeconds is not a u32`);
    lines.push(`node ${n.id} ${n.cookie} ${n.state} ${retry}`);
  }
  for (const b of meta.boots ?? []) {
    if (!isCookieValue(b.cookie)) throw new ViewFormatError(`boot ${b.bootTag} cookie is not 16 hex digits`);
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

function decInt(s: string | undefined, what: string): number {
  if (s === undefined || !DEC.test(s)) throw new ViewFormatError(`meta ${what} is not a decimal integer`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new ViewFormatError(`meta ${what} is out of range`);
  return n;
}

/** Keys with one value that a meta holds exactly once. */
const SCALARS = ["epoch", "generation", "published", "shardBits"] as const;

/**
 * Parses a meta file by the rules of docs/registry-view.md (the plugin's parser follows the same
 * rules: test/vectors/view); throws ViewFormatError (the plugin would treat it as missing).
 */
export function decodeMeta(text: string): ViewMeta {
  if (text.length > META_MAX_BYTES) throw new ViewFormatError("meta is larger than 64 KiB");
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  if (lines[0] !== META_MAGIC) throw new ViewFormatError("meta does not start with MCPAVIEW 1");
  if (lines.length < 2 || lines[lines.length - 1] !== "end")
    throw new ViewFormatError("meta does not end with its end line");
  const scalars: Partial<Record<(typeof SCALARS)[number], number>> = {};
  const nodes: ViewNode[] = [];
  const boots: ViewBoot[] = [];
  for (let i = 1; i < lines.length - 1; i++) {
    const f = lines[i].split(" ");
    const key = f[0];
    if ((SCALARS as readonly string[]).includes(key)) {
      const k = key as (typeof SCALARS)[number];
      if (f.length !== 2) throw new ViewFormatError(`meta line ${i + 1}: ${k} needs 1 field`);
      if (scalars[k] !== undefined) throw new ViewFormatError(`meta line ${i + 1}: second ${k} line`);
      scalars[k] = decInt(f[1], k);
      continue;
    }
    switch (key) {
      case "node": {
        if (f.length !== 5) throw new ViewFormatError(`meta line ${i + 1}: node needs 4 fields`);
        const id = decInt(f[1], "node id");
        if (!isU32(id)) throw new ViewFormatError("meta node id is not a u32");
        if (!isCookieValue(f[2])) throw new ViewFormatError(`meta line ${i + 1}: bad cookie`);
        if (!STATES.has(f[3])) throw new ViewFormatError(`meta line ${i + 1}: bad state`);
        const retry = decInt(f[4], "retryAfterSeconds");
        if (!isU32(retry)) throw new ViewFormatError(`meta line ${i + 1}: retryAfterSeconds is not a u32`);
        nodes.push({ id, cookie: f[2], state: f[3] as NodeViewState, retryAfterSeconds: retry });
        break;
      }
      case "boot": {
        if (f.length !== 5) throw new ViewFormatError(`meta line ${i + 1}: boot needs 4 fields`);
        if (!isCookieValue(f[1])) throw new ViewFormatError(`meta line ${i + 1}: bad cookie`);
        if (!BOOT_TAG.test(f[2])) throw new ViewFormatError(`meta line ${i + 1}: bad boot tag`);
        if (!STATES.has(f[3])) throw new ViewFormatError(`meta line ${i + 1}: bad state`);
        const retry = decInt(f[4], "retryAfterSeconds");
        if (!isU32(retry)) throw new ViewFormatError(`meta line ${i + 1}: retryAfterSeconds is not a u32`);
        boots.push({ cookie: f[1], bootTag: f[2], state: f[3] as NodeViewState, retryAfterSeconds: retry });
        break;
      }
      case "":
        throw new ViewFormatError(`meta line ${i + 1}: empty line or leading space`);
      case "end":
        throw new ViewFormatError(`meta line ${i + 1}: a line after end`);
      default:
        // A later writer's addition: ignored, so that an older reader still takes the view over.
        break;
    }
  }
  const { epoch, generation, published, shardBits } = scalars;
  if (epoch === undefined || generation === undefined || published === undefined || shardBits === undefined) {
    throw new ViewFormatError("meta lacks epoch, generation, published or shardBits");
  }
  if (!isU32(epoch)) throw new ViewFormatError("meta epoch is not a u32");
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
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return null;
    throw err;
  }
  try {
    return decodeMeta(buf.toString("latin1"));
  } catch (err) {
    if (err instanceof ViewFormatError) return null;
    throw err;
  }
}
