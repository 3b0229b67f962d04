// The sidecar's event-ingestion policy over the formats of lib/view: which batches of events/ are
// applied, in which order, which wait, which count as corrupt, and which are moved to the bounded
// quarantine. The formats themselves (file names, batch text) are lib/view/events.ts; what a batch
// does to the registry and the mirror is ingest.ts.
import { join } from "node:path";
import {
  defaultViewFs,
  errnoCode,
  eventFileChannel,
  EventFormatError,
  parseEventBatch,
  viewPaths,
  type EventBatch,
  type ViewIoOptions,
} from "../../lib/view/index.ts";

/** A file without `end` younger than this is still being written (or was never finished). */
export const EVENT_INCOMPLETE_GRACE_MS = 5_000;
/** The plugin writes at most 8 KiB per batch; anything far bigger is not ours. */
export const EVENT_MAX_BYTES = 1024 * 1024;

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
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return r;
    throw err;
  }
  const sessionFiles: string[] = [];
  const countFiles: string[] = [];
  for (const n of names) {
    const channel = eventFileChannel(n);
    if (channel) (channel === "session" ? sessionFiles : countFiles).push(n);
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
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return null;
      if (errnoCode(err) === "EISDIR") {
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
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") opts.onError?.(file, err as Error);
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
  const { events: evDir, quarantine: qDir } = viewPaths(dir);
  const max = opts.maxQuarantine ?? DEFAULT_MAX_QUARANTINE;
  opts.onQuarantine?.(file, err);
  try {
    await fs.mkdir(qDir, { recursive: true });
    // Names sort by time: the oldest go first when the folder is full.
    const kept = (await fs.readdir(qDir)).filter((n) => /^q-\d+-/.test(n)).sort();
    for (const old of kept.slice(0, Math.max(0, kept.length - max + 1)))
      await fs.unlink(join(qDir, old)).catch(() => undefined);
    await fs.rename(join(evDir, file), join(qDir, `q-${String(Date.now()).padStart(15, "0")}-${file}`));
  } catch {
    // Cannot keep it: drop it rather than block every later batch.
    await fs.unlink(join(evDir, file)).catch(() => undefined);
  }
}
