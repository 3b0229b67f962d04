// The one Node module that reads and writes the shared-directory formats of docs/registry-view.md,
// one file per format (meta, shards, learned, events), the fs seam and the sidecar's event-ingestion
// policy. The plugin (AssemblyScript) reads the same bytes; test/vectors/view pins both readers.
export * from "./format.ts";
export * from "./fs.ts";
export * from "./meta.ts";
export * from "./shards.ts";
export * from "./learned.ts";
export * from "./events.ts";
export * from "./ingest.ts";
