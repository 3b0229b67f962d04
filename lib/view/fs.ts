// The fs seam of lib/view (tests inject failures through it), the directory layout and the one
// atomic write every writer uses.
import * as nodeFs from "node:fs/promises";
import { join } from "node:path";
import { errFields } from "../errors.ts";

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
  /** Batches the sidecar could never apply (its policy: sidecar/src/drain.ts). */
  quarantine: join(dir, "events-quarantine"),
});

let tmpCounter = 0;
/**
 * Write then rename (in the same directory unless `tmpDir`): a reader sees the old or the new file, never a mix.
 * The temporary name is `.<name>.tmp-<pid>` plus a per-process counter so two concurrent writes
 * of one file in one process cannot clobber each other's temporary.
 */
export async function atomicWrite(
  path: string,
  data: Buffer | string,
  opts: ViewIoOptions & { tmpDir?: string } = {},
): Promise<void> {
  const fs = opts.fs ?? defaultViewFs;
  const slash = path.lastIndexOf("/");
  // `tmpDir` (same file system): for a directory whose every change a watcher acts on.
  const dir = opts.tmpDir ?? path.slice(0, slash);
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

/** The errno code of a failed fs call (`ENOENT`, ...), or undefined for an error without one. */
export const errnoCode = (err: unknown): string | undefined => errFields(err).code;
