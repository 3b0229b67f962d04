// The golden vectors of the shared-directory formats (test/vectors/view, rules in
// docs/registry-view.md), each run through both readers: lib/view and the plugin's own parsers
// (plugin/build/view.wasm, built from plugin/test/view-entry.ts: the plugin's code without WASI).
// Event batches, written by the plugin and read by the sidecar, are pinned from both ends: the
// plugin's encoder must produce the vector's bytes, and lib/view must decode them as stated.
import { describe, it, expect, beforeAll } from "vitest";
import { readFileSync } from "node:fs";
import {
  decodeLearned,
  decodeMeta,
  decodeShard,
  findInShard,
  parseEventBatch,
  DECISION_REASONS,
  BODY_KINDS,
  type ViewMeta,
} from "../../lib/view/index.ts";

const vectors = (name: string) => JSON.parse(readFileSync(`test/vectors/view/${name}.json`, "utf8"));
const { meta: metaVectors, freshness } = vectors("meta") as {
  meta: Array<{ name: string; text: string; valid: boolean; meta?: ViewMeta; why?: string }>;
  freshness: Array<{ name: string; published: number; now: number; staleAfterMs: number; stale: boolean }>;
};
const { shards } = vectors("shards") as {
  shards: Array<{
    name: string;
    hex: string;
    metaEpoch: number;
    decode: { epoch: number; sessions: Array<{ hash: string; node: number; closed: boolean }> } | { error: string };
    probes: Array<{ hash: string; expect: "absent" | "unusable" | { node: number; closed: boolean } }>;
  }>;
};
const { learned } = vectors("learned") as {
  learned: Array<{ name: string; text: string; probe: string; cookie: string | null }>;
};
type EventInput = {
  t: number;
  lines?: Array<{ kind: "l" | "c" | "v"; id: string; cookie: string }>;
  touches?: Array<{ id: string; now: number }>;
  counts?: string[];
  bodies?: string[];
  exposed?: number;
  dropped?: number;
};
const events = vectors("events") as {
  written: Array<{ name: string; input: EventInput; text: string; decode: unknown }>;
  read: Array<{ name: string; text: string; lenient: boolean; decode?: unknown; error?: string }>;
};

/** The plugin's parsers, run on its own code without a host. */
let plugin: {
  memory: WebAssembly.Memory;
  inputBuffer(len: number): number;
  hashBuffer(): number;
  resultPtr(): number;
  resultLen(): number;
  parseMeta(): number;
  parseMetaStreamed(bufferBytes: number, pieceBytes: number): number;
  isStale(published: bigint, now: bigint, staleAfterMs: bigint): number;
  searchShard(epoch: number): bigint;
  parseLearned(): number;
  eventsReset(): void;
  eventsSessionLine(kind: number, idLen: number): void;
  eventsTouch(now: bigint): void;
  eventsCount(reason: number): void;
  eventsBody(kind: number): void;
  eventsExposed(n: number): void;
  eventsDropped(n: number): void;
  eventsEncode(now: bigint): void;
};
// The buffer is asked for first: growing it may grow the memory, which detaches the old ArrayBuffer.
const put = (bytes: Buffer) => {
  const at = plugin.inputBuffer(bytes.length);
  new Uint8Array(plugin.memory.buffer, at, bytes.length).set(bytes);
};
const putHash = (hex: string) => {
  const at = plugin.hashBuffer();
  new Uint8Array(plugin.memory.buffer, at, 16).set(Buffer.from(hex, "hex"));
};
const result = () =>
  Buffer.from(new Uint8Array(plugin.memory.buffer, plugin.resultPtr(), plugin.resultLen())).toString("latin1");

beforeAll(async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync("plugin/build/view.wasm"), {});
  plugin = instance.exports as unknown as typeof plugin;
  (instance.exports._start as () => void)();
});

/** What the plugin took from a meta, in the form parseMeta leaves at result. */
function pluginForm(m: ViewMeta): string {
  const lines = [
    `epoch ${m.epoch}`,
    `generation ${m.generation}`,
    `published ${m.published}`,
    `shardBits ${m.shardBits}`,
  ];
  for (const n of m.nodes) lines.push(`node ${n.id} ${n.cookie} ${n.state} ${n.retryAfterSeconds}`);
  for (const b of m.boots ?? []) lines.push(`boot ${b.cookie} ${b.bootTag} ${b.state} ${b.retryAfterSeconds}`);
  return lines.join("\n") + "\n";
}

/** [buffer, bytes per read]: the plugin's own, and smaller ones no valid line of a known key outgrows (52 bytes). */
const STREAMED = [
  [4096, 4096],
  [4096, 1000],
  [64, 64],
  [64, 7],
  [53, 1],
] as const;

describe("view/meta", () => {
  it("has vectors for every tolerance rule", () => expect(metaVectors.length).toBeGreaterThan(40));
  for (const v of metaVectors) {
    it(`${v.valid ? "valid" : "invalid"}: ${v.name}`, () => {
      if (v.valid) expect(decodeMeta(v.text)).toEqual(v.meta);
      else expect(() => decodeMeta(v.text)).toThrow();
      put(Buffer.from(v.text, "latin1"));
      expect(plugin.parseMeta() === 1, "the plugin's verdict").toBe(v.valid);
      if (v.valid) expect(result()).toBe(pluginForm(v.meta!));
      // As the plugin reads the file: through its 4 KiB buffer, and through smaller ones (lines
      // longer than the buffer, lines split between reads), a read at a time.
      for (const [buffer, piece] of STREAMED) {
        expect(
          plugin.parseMetaStreamed(buffer, piece) === 1,
          `the verdict through ${buffer} bytes, ${piece} a read`,
        ).toBe(v.valid);
        if (v.valid) expect(result()).toBe(pluginForm(v.meta!));
      }
    });
  }
  for (const f of freshness) {
    it(`freshness (plugin): ${f.name}`, () => {
      expect(plugin.isStale(BigInt(f.published), BigInt(f.now), BigInt(f.staleAfterMs)) === 1).toBe(f.stale);
    });
  }
});

describe("view/shards", () => {
  for (const v of shards) {
    it(v.name, () => {
      const buf = Buffer.from(v.hex, "hex");
      let decoded: ReturnType<typeof decodeShard> | null = null;
      if ("error" in v.decode) expect(() => decodeShard(buf)).toThrow();
      else {
        decoded = decodeShard(buf);
        expect({
          epoch: decoded.epoch,
          sessions: decoded.sessions.map((s) => ({ ...s, hash: s.hash.toString("hex") })),
        }).toEqual(v.decode);
      }
      put(buf);
      for (const p of v.probes) {
        // lib/view as the plugin reads: a shard of this view, then a binary search.
        const hash = Buffer.from(p.hash, "hex");
        const ours =
          decoded === null || decoded.epoch !== v.metaEpoch ? "unusable" : (findInShard(buf, hash) ?? "absent");
        expect(ours, `lib/view, probe ${p.hash}`).toEqual(p.expect);
        putHash(p.hash);
        const r = plugin.searchShard(v.metaEpoch);
        const theirs =
          r === -2n ? "unusable" : r === -1n ? "absent" : { node: Number(r >> 1n), closed: (r & 1n) === 1n };
        expect(theirs, `plugin, probe ${p.hash}`).toEqual(p.expect);
      }
    });
  }
});

describe("learned/<prefix>", () => {
  for (const v of learned) {
    it(v.name, () => {
      const e = decodeLearned(v.text);
      expect(e !== null && e.hashHex === v.probe ? e.cookie : null, "lib/view").toBe(v.cookie);
      put(Buffer.from(v.text, "latin1"));
      putHash(v.probe);
      expect(plugin.parseLearned() === 1 ? result() : null, "plugin").toBe(v.cookie);
    });
  }
});

describe("events/ batches", () => {
  for (const v of events.written) {
    it(`written by the plugin, read by lib/view: ${v.name}`, () => {
      const i = v.input;
      plugin.eventsReset();
      for (const l of i.lines ?? []) {
        put(Buffer.from(l.id + l.cookie, "latin1"));
        plugin.eventsSessionLine(["l", "c", "v"].indexOf(l.kind), l.id.length);
      }
      for (const t of i.touches ?? []) {
        put(Buffer.from(t.id, "latin1"));
        plugin.eventsTouch(BigInt(t.now));
      }
      for (const r of i.counts ?? []) plugin.eventsCount((DECISION_REASONS as readonly string[]).indexOf(r));
      for (const b of i.bodies ?? []) plugin.eventsBody((BODY_KINDS as readonly string[]).indexOf(b));
      if (i.exposed) plugin.eventsExposed(i.exposed);
      if (i.dropped) plugin.eventsDropped(i.dropped);
      plugin.eventsEncode(BigInt(i.t));
      expect(result()).toBe(v.text);
      expect(parseEventBatch(v.text)).toEqual(v.decode);
    });
  }
  for (const v of events.read) {
    it(`read by lib/view: ${v.name}`, () => {
      if (v.error !== undefined) expect(() => parseEventBatch(v.text, { lenient: v.lenient })).toThrow();
      else expect(parseEventBatch(v.text, { lenient: v.lenient })).toEqual(v.decode);
    });
  }
});
