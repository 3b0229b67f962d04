// Compiles a small AssemblyScript test guest with the asc API (no WAT compiler on the machine).
// The result is cached in the OS temp dir by source hash: a rerun does not pay the 2 s compile.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import asc from "assemblyscript/asc";

export async function compileAsGuest(sourcePath: string, opts: { optimizeLevel?: number } = {}): Promise<Uint8Array> {
  const source = readFileSync(sourcePath, "utf8");
  const name = basename(sourcePath).replace(/\..*$/, "");
  const key = createHash("sha256")
    .update(asc.version)
    .update(String(opts.optimizeLevel ?? 1))
    .update(source)
    .digest("hex")
    .slice(0, 16);
  const cacheDir = join(tmpdir(), "mcpa-as-guests");
  const cached = join(cacheDir, `${name}-${key}.wasm`);
  if (existsSync(cached)) return readFileSync(cached);
  const r = await asc.compileString(
    { [`${name}.ts`]: source },
    {
      optimizeLevel: opts.optimizeLevel ?? 1,
      runtime: "incremental",
      exportStart: "_start",
      // No env imports: the http-wasm host has none (abort traps instead).
      use: [`abort=${name}/myAbort`],
    },
  );
  if (r.error || !r.binary)
    throw new Error(`asc failed for ${sourcePath}: ${r.error?.message}\n${r.stderr.toString()}`);
  mkdirSync(cacheDir, { recursive: true });
  writeFileSync(cached, r.binary);
  return r.binary;
}
