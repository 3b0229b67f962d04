// The one Node module that reads and writes the shared-directory formats of docs/registry-view.md,
// one file per format (meta, shards, learned, events) and the fs seam. Formats only: what the
// sidecar does with them (when to publish, how to drain events/) lives in sidecar/src. The plugin
// (AssemblyScript) reads the same bytes; test/vectors/view pins both readers.
export * from "./format.ts";
export * from "./fs.ts";
export * from "./meta.ts";
export * from "./shards.ts";
export * from "./learned.ts";
export * from "./events.ts";
