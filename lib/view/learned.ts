// learned/<hash prefix> (docs/registry-view.md): written by the plugin, read and deleted by the sidecar.
import { join } from "node:path";
import { isCookieValue } from "../registry/schema.ts";
import { ViewFormatError, HEX32 } from "./format.ts";
import { defaultViewFs, errnoCode, viewPaths, type ViewIoOptions } from "./fs.ts";

/** Default plugin setting maxLearnedFiles (16^3): learned/ file names are 3 hex digits. */
export const LEARNED_DEFAULT_DIGITS = 3;
const LEARNED_NAME = /^[0-9a-f]{1,4}$/;

/** The learned/ file name of a session hash: its first `digits` hex digits (plugin: maxLearnedFiles = 16^digits). */
export function learnedName(hashHex: string, digits = LEARNED_DEFAULT_DIGITS): string {
  if (!HEX32.test(hashHex)) throw new ViewFormatError("learned hash is not 32 lowercase hex digits");
  if (!Number.isInteger(digits) || digits < 1 || digits > 4)
    throw new ViewFormatError("learned name digits must be 1 to 4");
  return hashHex.slice(0, digits);
}

/** Parses a learned/ file: `<32 hex hash> <cookie>\n`; null when partial or foreign. */
export function decodeLearned(text: string): { hashHex: string; cookie: string } | null {
  if (text.length !== 50 || text[32] !== " " || text[49] !== "\n") return null;
  const hashHex = text.slice(0, 32);
  const cookie = text.slice(33, 49);
  return HEX32.test(hashHex) && isCookieValue(cookie) ? { hashHex, cookie } : null;
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
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
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
    } catch (err) {
      if (errnoCode(err) === "ENOENT") continue; // deleted meanwhile
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
export async function deleteLearned(
  dir: string,
  name: string,
  opts: ViewIoOptions & { hashHex?: string } = {},
): Promise<void> {
  if (!LEARNED_NAME.test(name)) throw new ViewFormatError("learned name is not 1 to 4 lowercase hex digits");
  const fs = opts.fs ?? defaultViewFs;
  const path = join(viewPaths(dir).learned, name);
  try {
    if (opts.hashHex !== undefined) {
      const e = decodeLearned((await fs.readFile(path)).toString("latin1"));
      if (e?.hashHex !== opts.hashHex) return;
    }
    await fs.unlink(path);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}
