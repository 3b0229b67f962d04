// The sidecar's drain of events/ (sidecar/src/drain.ts): write order, waiting, corrupt files and
// the bounded quarantine, over the batch format of lib/view.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdtemp, readdir, rm, writeFile, mkdir, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sessionHash, viewPaths, type EventBatch } from "../../lib/view/index.ts";
import { drainEvents } from "../../sidecar/src/drain.ts";
import { formatEventBatch } from "../support/view-writers.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "mcpa-drain-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const batch = (over: Partial<EventBatch> = {}): EventBatch => ({
  t: 1_700_000_000_000,
  learned: [{ id: "sess-A", hash: sessionHash("sess-A").toString("hex"), cookie: "0123456789abcdef" }],
  closed: [],
  decisions: { pin: 3, pass: 10 },
  dropped: 0,
  ...over,
});

describe("drainEvents", () => {
  const evDir = () => join(dir, "events");
  const put = async (name: string, text: string, ageMs = 0) => {
    await mkdir(evDir(), { recursive: true });
    await writeFile(join(evDir(), name), text);
    if (ageMs) {
      const t = (Date.now() - ageMs) / 1000;
      await utimes(join(evDir(), name), t, t);
    }
  };
  it("applies complete session batches oldest first, deletes them, and leaves young incomplete ones", async () => {
    await put("s-2.evt", formatEventBatch(batch({ t: 200 })));
    await put("s-1.evt", formatEventBatch(batch({ t: 100 })));
    await put("e-3.evt", "MCPAEV 1\nt 300\nd pin 1\n"); // being written
    await put("README", "foreign");
    const seen: number[] = [];
    const r = await drainEvents(dir, async (b) => {
      seen.push(b.t);
    });
    expect(seen).toEqual([100, 200]);
    expect(r).toMatchObject({ applied: 2, corrupt: 0, pending: 1, failed: 0, foreign: 1 });
    expect((await readdir(evDir())).sort()).toEqual(["README", "e-3.evt"]);
  });
  it("counts and deletes corrupt files and old incomplete ones", async () => {
    await put("e-1.evt", "garbage\nend\n");
    await put("e-2.evt", "MCPAEV 1\nt 300\nd pin 1\n", 6000);
    await put("e-3.evt", formatEventBatch(batch()));
    const corrupt: string[] = [];
    const r = await drainEvents(dir, async () => undefined, { onCorrupt: (f) => corrupt.push(f) });
    expect(r).toMatchObject({ applied: 1, corrupt: 2, pending: 0 });
    expect(corrupt.sort()).toEqual(["e-1.evt", "e-2.evt"]);
    expect(await readdir(evDir())).toEqual([]);
  });
  it("keeps a session batch whose apply fails, and every later one, for the next drain", async () => {
    await put("s-1.evt", formatEventBatch(batch({ t: 1 })));
    await put("s-2.evt", formatEventBatch(batch({ t: 2 })));
    const errors: string[] = [];
    const r = await drainEvents(
      dir,
      async () => {
        throw new Error("redis down");
      },
      { onError: (f) => errors.push(f) },
    );
    expect(r).toMatchObject({ applied: 0, failed: 1, pending: 1 });
    expect(errors).toEqual(["s-1.evt"]);
    expect((await readdir(evDir())).sort()).toEqual(["s-1.evt", "s-2.evt"]);
    const seen: number[] = [];
    const r2 = await drainEvents(dir, async (b) => {
      seen.push(b.t);
    });
    expect(r2.applied).toBe(2);
    expect(seen).toEqual([1, 2]);
  });
  it("applies a batch with one unreadable line and counts the line", async () => {
    await put("e-1.evt", formatEventBatch(batch()).replace("d pass 10", "d pass ???"));
    const got: EventBatch[] = [];
    const r = await drainEvents(dir, async (b) => {
      got.push(b);
    });
    expect(r).toMatchObject({ applied: 1, badLines: 1, corrupt: 0 });
    expect(got[0].learned[0].id).toBe("sess-A");
    expect(got[0].decisions).toEqual({ pin: 3 });
  });
  it("applies learns and closes in write order whatever the backlog (1,200 files, names not in time order)", async () => {
    // Slot numbers are unrelated to time; readdir order is alphabetical (s-0, s-1, s-10, ...).
    const n = 1200;
    const order: number[] = [];
    for (let i = 0; i < n; i++) {
      const slot = (i * 7919) % 4096;
      const id = `o-${Math.floor(i / 2)}`;
      const hash = sessionHash(id).toString("hex");
      const b: EventBatch =
        i % 2 === 0
          ? { t: 1_000 + i, learned: [{ id, hash, cookie: "0123456789abcdef" }], closed: [], decisions: {}, dropped: 0 }
          : {
              t: 1_000 + i,
              learned: [],
              closed: [{ id, hash, cookie: "0123456789abcdef" }],
              decisions: {},
              dropped: 0,
            };
      await put(`s-${slot}.evt`, formatEventBatch(b));
      order.push(1_000 + i);
    }
    const seen: number[] = [];
    const state = new Map<string, string>();
    const r = await drainEvents(dir, async (b) => {
      seen.push(b.t);
      for (const l of b.learned) state.set(l.id, "learned");
      for (const c of b.closed) {
        expect(state.get(c.id), `close of ${c.id} before its learn`).toBe("learned");
        state.set(c.id, "closed");
      }
    });
    expect(r).toMatchObject({ applied: n, pending: 0, failed: 0 });
    expect(seen).toEqual(order);
  });
  it("a session batch still being written holds back the batches written after it", async () => {
    const now = Date.now();
    await put("s-1.evt", formatEventBatch(batch({ t: now - 60_000 })));
    await put("s-2.evt", "MCPAEV 1\nt 0\n"); // mid-write, mtime now
    await put("s-3.evt", formatEventBatch(batch({ t: now })));
    const seen: number[] = [];
    const r = await drainEvents(dir, async (b) => void seen.push(b.t));
    expect(seen).toEqual([now - 60_000]);
    expect(r).toMatchObject({ applied: 1, pending: 2 });
  });
  it("a batch failing for a permanent reason is moved to events-quarantine/ (bounded) and the next ones go on", async () => {
    for (let i = 1; i <= 5; i++) await put(`s-${i}.evt`, formatEventBatch(batch({ t: i })));
    await put("s-9.evt", formatEventBatch(batch({ t: 9 })));
    const quarantined: string[] = [];
    const seen: number[] = [];
    const r = await drainEvents(
      dir,
      async (b) => {
        if (b.t <= 5) throw Object.assign(new Error("refused"), { code: "ERR_REGISTRY_SCHEMA" });
        seen.push(b.t);
      },
      {
        isPermanent: (e: any) => e.code === "ERR_REGISTRY_SCHEMA",
        onQuarantine: (f) => quarantined.push(f),
        maxQuarantine: 3,
      },
    );
    expect(seen).toEqual([9]);
    expect(r).toMatchObject({ applied: 1, quarantined: 5, failed: 0, pending: 0 });
    expect(quarantined).toEqual(["s-1.evt", "s-2.evt", "s-3.evt", "s-4.evt", "s-5.evt"]);
    const kept = (await readdir(viewPaths(dir).quarantine)).sort();
    expect(kept).toHaveLength(3);
    expect(kept.map((k) => k.replace(/^q-\d+-/, ""))).toEqual(["s-3.evt", "s-4.evt", "s-5.evt"]);
    expect(await readdir(evDir())).toEqual([]);
  });
  it("count batches are read at most maxFiles per drain; session batches are all read", async () => {
    for (let i = 0; i < 30; i++) await put(`e-${i}.evt`, formatEventBatch(batch({ t: i, learned: [] })));
    for (let i = 0; i < 30; i++) await put(`s-${i}.evt`, formatEventBatch(batch({ t: 100 + i })));
    const r = await drainEvents(dir, async () => undefined, { maxFiles: 10 });
    expect(r).toMatchObject({ applied: 40, pending: 20 });
  });
  it("is a no-op without an events directory", async () => {
    expect(await drainEvents(dir, async () => undefined)).toMatchObject({ applied: 0, corrupt: 0, pending: 0 });
  });
});
