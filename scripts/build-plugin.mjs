#!/usr/bin/env node
// Builds plugin/build/plugin.wasm and the pass-through baseline, lays out the local-plugin folder
// Traefik loads as it is (plugin/build/local: .traefik.yml + plugin.wasm), and with --package
// writes plugin/build/mcp-affinity-plugin.zip, the layout the Traefik plugin catalog expects.
import { execFileSync } from "node:child_process";
import { mkdirSync, copyFileSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { deflateRawSync, crc32 } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const asc = join(root, "node_modules", ".bin", "asc");
if (!existsSync(asc)) {
  console.error("build-plugin: AssemblyScript is not installed: run `npm install` first");
  process.exit(2);
}
const run = (args) => execFileSync(asc, args, { cwd: root, stdio: "inherit" });
run(["plugin/assembly/index.ts", "--target", "plugin"]);
run(["plugin/passthrough/index.ts", "--target", "passthrough"]);
run(["plugin/test/core-entry.ts", "--target", "core"]);
run(["plugin/test/view-entry.ts", "--target", "view"]);

const local = join(root, "plugin", "build", "local");
mkdirSync(local, { recursive: true });
copyFileSync(join(root, "plugin", ".traefik.yml"), join(local, ".traefik.yml"));
copyFileSync(join(root, "plugin", "build", "plugin.wasm"), join(local, "plugin.wasm"));

if (process.argv.includes("--package")) {
  const files = [".traefik.yml", "plugin.wasm"].map((name) => ({ name, data: readFileSync(join(local, name)) }));
  const out = join(root, "plugin", "build", "mcp-affinity-plugin.zip");
  writeFileSync(out, zip(files));
  console.log(`build-plugin: wrote ${out}`);
}
console.log("build-plugin: plugin/build/plugin.wasm, plugin/build/local/");

/** A minimal zip (deflate) writer: two files do not justify a dependency. */
function zip(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  const dosTime = 0,
    dosDate = ((2026 - 1980) << 9) | (1 << 5) | 1;
  for (const { name, data } of entries) {
    const nameBuf = Buffer.from(name);
    const comp = deflateRawSync(data);
    const crc = crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0, 6);
    lh.writeUInt16LE(8, 8);
    lh.writeUInt16LE(dosTime, 10);
    lh.writeUInt16LE(dosDate, 12);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(comp.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(nameBuf.length, 26);
    locals.push(lh, nameBuf, comp);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0, 8);
    ch.writeUInt16LE(8, 10);
    ch.writeUInt16LE(dosTime, 12);
    ch.writeUInt16LE(dosDate, 14);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(comp.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(nameBuf.length, 28);
    ch.writeUInt32LE(offset, 42);
    centrals.push(ch, nameBuf);
    offset += lh.length + nameBuf.length + comp.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}
