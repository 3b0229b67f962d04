import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  decodeMeta,
  decodeShard,
  defaultViewFs,
  deleteLearned,
  learnedName,
  encodeMeta,
  encodeShard,
  listLearned,
  parseEventBatch,
  readMeta,
  sessionHash,
  shardPrefix,
  writeMeta,
  type EventBatch,
  type ViewFs,
  type ViewMeta,
  type ViewSession,
} from "../../lib/view/index.ts";
import { formatEventBatch, lookupSession, publishView, writeLearned, writeShard } from "../support/view-writers.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "mcpa-view-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const meta = (over: Partial<ViewMeta> = {}): ViewMeta => ({
  epoch: 7,
  generation: 3,
  published: 1_700_000_000_123,
  shardBits: 12,
  nodes: [
    { id: 1, cookie: "0123456789abcdef", state: "up" },
    { id: 2, cookie: "fedcba9876543210", state: "down", retryAfterSeconds: 9 },
  ],
  ...over,
});

describe("session hash and shard prefix", () => {
  it("is the first 16 bytes of SHA-256 of the id", () => {
    // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223 b00361a396177a9cb410ff61f20015ad
    expect(sessionHash("abc").toString("hex")).toBe("ba7816bf8f01cfea414140de5dae2223");
  });
  it("takes shardBits/4 hex digits", () => {
    const h = sessionHash("abc");
    expect(shardPrefix(h, 4)).toBe("b");
    expect(shardPrefix(h, 8)).toBe("ba");
    expect(shardPrefix(h, 12)).toBe("ba7");
    expect(shardPrefix(h, 16)).toBe("ba78");
    expect(() => shardPrefix(h, 10)).toThrow();
  });
});

describe("view/meta", () => {
  it("writes the exact text of the format", async () => {
    await writeMeta(dir, meta());
    const text = await readFile(join(dir, "view", "meta"), "latin1");
    expect(text).toBe(
      "MCPAVIEW 1\nepoch 7\ngeneration 3\npublished 1700000000123\nshardBits 12\n" +
        "node 1 0123456789abcdef up 0\nnode 2 fedcba9876543210 down 9\nend\n",
    );
  });
  it("round-trips", async () => {
    await writeMeta(dir, meta());
    const m = await readMeta(dir);
    expect(m).toEqual({
      ...meta(),
      nodes: [
        { id: 1, cookie: "0123456789abcdef", state: "up", retryAfterSeconds: 0 },
        { id: 2, cookie: "fedcba9876543210", state: "down", retryAfterSeconds: 9 },
      ],
      boots: [],
    });
  });
  it("round-trips boot lines (node incarnations for session tokens) and refuses malformed ones", async () => {
    const boots = [
      { cookie: "0123456789abcdef", bootTag: "a1b2c3d4", state: "up" as const, retryAfterSeconds: 0 },
      { cookie: "0123456789abcdef", bootTag: "00000000", state: "gone" as const, retryAfterSeconds: 0 },
      { cookie: "fedcba9876543210", bootTag: "0badf00d", state: "down" as const, retryAfterSeconds: 9 },
    ];
    await writeMeta(dir, { ...meta(), boots });
    expect((await readMeta(dir))!.boots).toEqual(boots);
    expect(() => encodeMeta({ ...meta(), boots: [{ ...boots[0]!, bootTag: "A1B2C3D4" }] })).toThrow(/boot tag/);
    expect(() =>
      decodeMeta("MCPAVIEW 1\nepoch 1\ngeneration 1\npublished 1\nshardBits 12\nboot 0123456789abcdef xyz up 0\nend\n"),
    ).toThrow(/boot tag/);
  });
  it("is null when missing, truncated (no end) or foreign", async () => {
    expect(await readMeta(dir)).toBeNull();
    await mkdir(join(dir, "view"), { recursive: true });
    const full = encodeMeta(meta());
    await writeFile(join(dir, "view", "meta"), full.slice(0, full.length - 4));
    expect(await readMeta(dir)).toBeNull();
    await writeFile(join(dir, "view", "meta"), "hello\nend\n");
    expect(await readMeta(dir)).toBeNull();
    await writeFile(join(dir, "view", "meta"), full.replace("shardBits 12", "shardBits 10"));
    expect(await readMeta(dir)).toBeNull();
    await writeFile(join(dir, "view", "meta"), full.replace("up 0", "sleeping 0"));
    expect(await readMeta(dir)).toBeNull();
  });
  it("rejects values that do not fit", () => {
    expect(() => encodeMeta(meta({ epoch: 2 ** 32 }))).toThrow(/epoch/);
    expect(() => encodeMeta(meta({ nodes: [{ id: 1, cookie: "XYZ", state: "up" }] }))).toThrow(/cookie/);
    expect(() => decodeMeta("MCPAVIEW 1\nepoch 1\nend\n")).toThrow(/lacks/);
  });
});

describe("view/shards", () => {
  it("writes the exact byte layout, sorted by hash", async () => {
    const a = Buffer.from("ba7816bf8f01cfea414140de5dae2223", "hex");
    const b = Buffer.from("ba700000000000000000000000000001", "hex");
    await writeShard(dir, { epoch: 0x01020304, shardBits: 12 }, "ba7", [
      { hash: a, node: 5 },
      { hash: b, node: 0x0a0b0c0d, closed: true },
    ]);
    const bytes = await readFile(join(dir, "view", "shards", "ba7"));
    const expected =
      "4d435053" + // "MCPS"
      "01000000" + // version 1
      "04030201" + // epoch LE
      "02000000" + // count 2
      "ba700000000000000000000000000001" +
      "0d0c0b0a" +
      "01" +
      "000000" + // b sorts first, closed
      "ba7816bf8f01cfea414140de5dae2223" +
      "05000000" +
      "00" +
      "000000";
    expect(bytes.toString("hex")).toBe(expected);
    expect(bytes.length).toBe(16 + 2 * 24);
  });
  it("keeps the last of duplicate hashes and refuses sessions of another prefix", async () => {
    const h = sessionHash("s1");
    const p = shardPrefix(h, 8);
    const buf = encodeShard(1, [
      { hash: h, node: 1 },
      { hash: h, node: 2 },
    ]);
    expect(decodeShard(buf).sessions).toEqual([{ hash: h, node: 2, closed: false }]);
    const other = p === "00" ? "01" : "00";
    await expect(writeShard(dir, { epoch: 1, shardBits: 8 }, other, [{ hash: h, node: 1 }])).rejects.toThrow(/belong/);
    await expect(writeShard(dir, { epoch: 1, shardBits: 8 }, "abc", [])).rejects.toThrow(/prefix/);
  });
  it("publishView round-trips through lookupSession for many sessions", async () => {
    const sessions: ViewSession[] = [];
    for (let i = 0; i < 3000; i++)
      sessions.push({ hash: sessionHash(`sess-${i}`), node: (i % 5) + 1, closed: i % 7 === 0 });
    await publishView(dir, meta({ shardBits: 8 }), sessions);
    for (const i of [0, 1, 6, 7, 999, 2999]) {
      expect(await lookupSession(dir, sessionHash(`sess-${i}`))).toEqual({ node: (i % 5) + 1, closed: i % 7 === 0 });
    }
    expect(await lookupSession(dir, sessionHash("nope"))).toBeNull();
    const files = await readdir(join(dir, "view", "shards"));
    expect(files.length).toBe(256);
    expect(files.filter((f) => f.startsWith("."))).toEqual([]);
  });
  it("publishView removes shards of prefixes now empty and of another shardBits", async () => {
    const s = (id: string, node = 1) => ({ hash: sessionHash(id), node });
    await publishView(dir, meta({ shardBits: 4 }), [s("a"), s("b"), s("c")]);
    const before = await readdir(join(dir, "view", "shards"));
    expect(before.length).toBeGreaterThan(1);
    await publishView(dir, meta({ shardBits: 4 }), [s("a")]);
    expect(await readdir(join(dir, "view", "shards"))).toEqual([shardPrefix(sessionHash("a"), 4)]);
    await publishView(dir, meta({ shardBits: 12 }), [s("a")]);
    expect(await readdir(join(dir, "view", "shards"))).toEqual([shardPrefix(sessionHash("a"), 12)]);
    expect(await lookupSession(dir, sessionHash("a"))).toEqual({ node: 1, closed: false });
    expect(await lookupSession(dir, sessionHash("b"))).toBeNull();
  });
  it("lookup ignores a shard of another epoch and a corrupt shard", async () => {
    const h = sessionHash("x");
    await publishView(dir, meta({ epoch: 1, shardBits: 4 }), [{ hash: h, node: 3 }]);
    expect(await lookupSession(dir, h)).toEqual({ node: 3, closed: false });
    await writeMeta(dir, meta({ epoch: 2, shardBits: 4 }));
    expect(await lookupSession(dir, h)).toBeNull();
    await writeFile(join(dir, "view", "shards", shardPrefix(h, 4)), "garbage");
    await writeMeta(dir, meta({ epoch: 1, shardBits: 4 }));
    expect(await lookupSession(dir, h)).toBeNull();
  });
  it("a concurrent reader never sees a half-written file", async () => {
    const h = sessionHash("atomic");
    const p = shardPrefix(h, 4);
    const big = (n: number): ViewSession[] => {
      const out: ViewSession[] = [{ hash: h, node: n }];
      for (let i = 0; i < 4000; i++) {
        const x = Buffer.alloc(16, i & 0xff);
        x.write(p + "0", 0, "hex"); // same prefix as h (first nibble)
        x.writeUInt32BE(i, 12);
        x[0] = (parseInt(p, 16) << 4) | (i & 0xf);
        out.push({ hash: x, node: n });
      }
      return out;
    };
    let writing = true;
    const writer = (async () => {
      for (let n = 1; n <= 30; n++) {
        await writeShard(dir, { epoch: 1, shardBits: 4 }, p, big(n));
        await writeMeta(dir, meta({ generation: n, shardBits: 4, epoch: 1 }));
      }
      writing = false;
    })();
    let reads = 0;
    while (writing) {
      const m = await readFile(join(dir, "view", "meta"), "latin1").catch(() => null);
      if (m !== null) expect(() => decodeMeta(m)).not.toThrow();
      const s = await readFile(join(dir, "view", "shards", p)).catch(() => null);
      if (s !== null) {
        const d = decodeShard(s); // throws on a shard shorter than its count (a torn write)
        expect(d.sessions.length).toBe(4001);
        reads++;
      }
    }
    await writer;
    expect(reads).toBeGreaterThan(0);
    expect((await readdir(join(dir, "view"))).filter((f) => f.startsWith("."))).toEqual([]);
  });
  it("a failed write (full disk) leaves the old file and no temporary", async () => {
    await writeMeta(dir, meta({ generation: 1 }));
    const full: ViewFs = {
      ...defaultViewFs,
      writeFile: async (p, d) => {
        await defaultViewFs.writeFile(p, Buffer.from(d).subarray(0, 5)); // a partial write, then ENOSPC
        throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
      },
    };
    await expect(writeMeta(dir, meta({ generation: 2 }), { fs: full })).rejects.toMatchObject({ code: "ENOSPC" });
    expect((await readMeta(dir))?.generation).toBe(1);
    expect((await readdir(join(dir, "view"))).sort()).toEqual(["meta", "shards"]);
  });
});

describe("learned/", () => {
  it("round-trips and skips temporaries, foreign and partial files", async () => {
    const hex = sessionHash("L1").toString("hex");
    await writeLearned(dir, hex, "0123456789abcdef");
    expect(await readFile(join(dir, "learned", hex.slice(0, 3)), "latin1")).toBe(`${hex} 0123456789abcdef\n`);
    await writeFile(join(dir, "learned", "README"), "foreign");
    await writeFile(join(dir, "learned", ".x.tmp-1"), "0123456789abcdef\n");
    const partial = sessionHash("L2").toString("hex").slice(0, 3);
    await writeFile(join(dir, "learned", partial), "0123");
    const invalid: string[] = [];
    expect(await listLearned(dir, { onInvalid: (n) => invalid.push(n) })).toEqual([
      { name: hex.slice(0, 3), hashHex: hex, cookie: "0123456789abcdef" },
    ]);
    expect(invalid).toEqual([partial]);
    await expect(writeLearned(dir, "xyz", "0123456789abcdef")).rejects.toThrow();
    expect(await listLearned(join(dir, "missing"))).toEqual([]);
  });
  it("deletes a file only while it holds the session it was listed for", async () => {
    const a = sessionHash("L1").toString("hex");
    await writeLearned(dir, a, "0123456789abcdef", { digits: 1 });
    const name = learnedName(a, 1);
    // Another session of the same prefix replaced it meanwhile: kept.
    const other = name + "f".repeat(31);
    await writeFile(join(dir, "learned", name), `${other} 0123456789abcdef\n`);
    await deleteLearned(dir, name, { hashHex: a });
    expect((await listLearned(dir)).map((e) => e.hashHex)).toEqual([other]);
    await deleteLearned(dir, name, { hashHex: other });
    expect(await listLearned(dir)).toEqual([]);
  });
});

const batch = (over: Partial<EventBatch> = {}): EventBatch => ({
  t: 1_700_000_000_000,
  learned: [{ id: "sess-A", hash: sessionHash("sess-A").toString("hex"), cookie: "0123456789abcdef" }],
  closed: [
    { id: "sess-B", hash: sessionHash("sess-B").toString("hex"), cookie: null },
    { id: "sess-C", hash: sessionHash("sess-C").toString("hex"), cookie: "fedcba9876543210" },
  ],
  decisions: { pin: 3, pass: 10 },
  dropped: 2,
  ...over,
});

describe("event batches", () => {
  it("formats the exact text and parses it back", () => {
    const text = formatEventBatch(batch());
    const hA = sessionHash("sess-A").toString("hex");
    const hB = sessionHash("sess-B").toString("hex");
    const hC = sessionHash("sess-C").toString("hex");
    expect(text).toBe(
      `MCPAEV 1\nt 1700000000000\nl sess-A ${hA} 0123456789abcdef\nc sess-B ${hB} -\n` +
        `c sess-C ${hC} fedcba9876543210\nd pass 10\nd pin 3\nx 2\nend\n`,
    );
    expect(parseEventBatch(text)).toEqual(batch());
  });
  it("rejects malformed batches with ERR_EVENT_FORMAT", () => {
    const good = formatEventBatch(batch());
    const bad = [
      good.replace("\nend\n", "\n"), // no end
      good.slice(0, -1), // no final newline
      good.replace("MCPAEV 1", "MCPAEV 2"),
      good.replace(/^t .*\n/m, ""),
      good.replace("d pin 3", "d pin three"),
      good.replace("d pin 3", "q what"),
      good.replace(" -\n", " zz\n"),
      good.replace("l sess-A", "l sess-Z"), // hash does not match id
      "",
    ];
    for (const t of bad) {
      let err: any;
      try {
        parseEventBatch(t);
      } catch (e) {
        err = e;
      }
      expect(err?.code, JSON.stringify(t)).toBe("ERR_EVENT_FORMAT");
    }
  });
  it("lenient parse skips and counts bad lines", () => {
    const t = formatEventBatch(batch()).replace("d pin 3", "d pin three");
    const b = parseEventBatch(t, { lenient: true });
    expect(b.badLines).toBe(1);
    expect(b.learned.length).toBe(1);
    expect(b.decisions).toEqual({ pass: 10 });
  });
});
