// Session routing tokens: lib/token (Node) and the plugin's parser (AssemblyScript, through
// plugin/build/core.wasm) against the same golden vectors, plus the Node side's minting rules.
import { describe, it, expect, beforeAll } from "vitest";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import {
  bootTag,
  mintSessionId,
  parseSessionToken,
  parseTaskHandle,
  wrapSessionId,
  wrapTaskId,
  MINTED_LENGTH,
  UNKNOWN_BOOT_TAG,
  type SessionToken,
} from "../../lib/token/index.ts";
import { isValidSessionId } from "../../lib/registry/schema.ts";

interface Vector {
  name: string;
  id: string;
  token: SessionToken | null;
}
const { vectors, taskVectors } = JSON.parse(readFileSync("test/vectors/tokens.json", "utf8")) as {
  vectors: Vector[];
  taskVectors: Vector[];
};

type Exports = {
  _start(): void;
  memory: WebAssembly.Memory;
  idBuffer(len: number): number;
  parseSessionToken(): number;
  parseTaskHandle(): number;
  resultPtr(): number;
  resultLen(): number;
};
let wasm: Exports;
beforeAll(async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync("plugin/build/core.wasm"), {});
  wasm = instance.exports as unknown as Exports;
  wasm._start();
});

/** The plugin's reading of an id (a session id, or with `task` a task handle), in lib/token's shape. */
function pluginParse(id: string, task = false): SessionToken | null {
  const bytes = Buffer.from(id, "latin1");
  const ptr = wasm.idBuffer(bytes.length);
  new Uint8Array(wasm.memory.buffer, ptr, bytes.length).set(bytes);
  const kind = task ? wasm.parseTaskHandle() : wasm.parseSessionToken();
  if (kind === 0) return null;
  const text = Buffer.from(new Uint8Array(wasm.memory.buffer, wasm.resultPtr(), wasm.resultLen())).toString("latin1");
  const [cookie, tag, start] = text.split(" ");
  return {
    kind: kind === 1 ? "minted" : kind === 2 ? "wrapped" : "task",
    cookie: cookie!,
    bootTag: tag!,
    inner: kind === 1 ? id : id.slice(Number(start)),
  };
}

describe("session token golden vectors", () => {
  it("has valid and invalid cases", () => {
    expect(vectors.filter((v) => v.token).length).toBeGreaterThan(3);
    expect(vectors.filter((v) => !v.token).length).toBeGreaterThan(3);
  });
  for (const v of vectors) {
    it(`${v.name}: lib/token and the plugin agree with the vector`, () => {
      expect(parseSessionToken(v.id)).toEqual(v.token);
      expect(pluginParse(v.id)).toEqual(v.token);
    });
  }
});

describe("task handle golden vectors", () => {
  it("has valid and invalid cases", () => {
    expect(taskVectors.filter((v) => v.token).length).toBeGreaterThan(2);
    expect(taskVectors.filter((v) => !v.token).length).toBeGreaterThan(2);
  });
  for (const v of taskVectors) {
    it(`${v.name}: lib/token and the plugin agree with the vector`, () => {
      expect(parseTaskHandle(v.id)).toEqual(v.token);
      expect(pluginParse(v.id, true)).toEqual(v.token);
    });
  }
});

describe("minting and wrapping (lib/token)", () => {
  const cookie = "0123456789abcdef";
  it("minted ids carry the token, 132 random bits, and are valid session ids", () => {
    const tag = bootTag("boot-1");
    const ids = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = mintSessionId(cookie, tag);
      expect(id).toHaveLength(MINTED_LENGTH);
      expect(isValidSessionId(id)).toBe(true);
      expect(parseSessionToken(id)).toEqual({ kind: "minted", cookie, bootTag: tag, inner: id });
      ids.add(id);
    }
    expect(ids.size).toBe(1000);
  });
  it("boot tags are 8 hex digits, differ per boot, and never claim the unknown tag", () => {
    expect(bootTag("a")).toMatch(/^[0-9a-f]{8}$/);
    expect(bootTag("a")).not.toBe(bootTag("b"));
    expect(bootTag("a")).not.toBe(UNKNOWN_BOOT_TAG);
  });
  it("refuses malformed cookies and tags with a clear error", () => {
    expect(() => mintSessionId("XYZ", "00000001")).toThrow(/cookie/);
    expect(() => mintSessionId(cookie, "1")).toThrow(/boot tag/);
  });
  it("wrap then parse gives back any visible-ASCII server id, on both sides", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[\x21-\x7e]{1,200}$/), (inner) => {
        const id = wrapSessionId(inner, cookie, "deadbeef");
        const want = { kind: "wrapped", cookie, bootTag: "deadbeef", inner };
        expect(parseSessionToken(id)).toEqual(want);
        expect(pluginParse(id)).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });
  it("wrap then parse gives back any visible-ASCII task id, on both sides; a handle is never a session token", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[\x21-\x7e]{1,200}$/), (inner) => {
        const id = wrapTaskId(inner, cookie, "deadbeef");
        const want = { kind: "task", cookie, bootTag: "deadbeef", inner };
        expect(parseTaskHandle(id)).toEqual(want);
        expect(pluginParse(id, true)).toEqual(want);
        expect(parseSessionToken(id)).toBeNull();
        expect(pluginParse(id)).toBeNull();
      }),
      { numRuns: 300 },
    );
  });
  it("random ids parse the same on both sides", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.stringMatching(/^m[awt]1\.[0-9a-f]{24}\.[\x21-\x7e]{0,30}$/),
          fc.stringMatching(/^[\x21-\x7e]{1,60}$/),
        ),
        (id) => {
          expect(pluginParse(id)).toEqual(parseSessionToken(id));
          expect(pluginParse(id, true)).toEqual(parseTaskHandle(id));
        },
      ),
      { numRuns: 500 },
    );
  });
});
