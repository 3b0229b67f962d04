// The session hash (lib/registry/session-hash.ts): one function, three representations.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  hashToHex,
  hashToKey,
  hexToKey,
  sessionHash,
  sessionHashHex,
  sessionHashKey,
  sessionTag,
} from "../../lib/registry/session-hash.ts";

const reference = (id: string) => createHash("sha256").update(id, "latin1").digest().subarray(0, 16);

describe("session hash", () => {
  it("is the first 16 bytes of SHA-256 over the id's latin1 bytes, on the fast path and off it", () => {
    // Visible ASCII takes crypto.hash; anything else (never a valid id) the Hash object.
    for (const id of ["abc", "ma1.0123456789abcdef01234567.AAAAAAAAAAAAAAAAAAAAAA", "x".repeat(1024), "", "é ü"]) {
      expect(sessionHash(id).equals(reference(id)), id).toBe(true);
      expect(sessionHash(id)).toHaveLength(16);
    }
  });
  it("converts between its representations without loss", () => {
    const id = "Session-123";
    const h = sessionHash(id);
    expect(sessionHashHex(id)).toBe(hashToHex(h));
    expect(sessionHashHex(id)).toMatch(/^[0-9a-f]{32}$/);
    expect(sessionHashKey(id)).toBe(hashToKey(h));
    expect(sessionHashKey(id)).toHaveLength(16);
    expect(hexToKey(sessionHashHex(id))).toBe(sessionHashKey(id));
    expect(Buffer.from(sessionHashKey(id), "latin1").equals(h)).toBe(true);
    expect(sessionTag(id)).toBe(sessionHashHex(id).slice(0, 12));
  });
  it("keys sort as their bytes do (the mirror's shards are encoded in key order)", () => {
    const ids = Array.from({ length: 200 }, (_, i) => `s${i}`);
    const byKey = [...ids].sort((a, b) => (sessionHashKey(a) < sessionHashKey(b) ? -1 : 1));
    const byBytes = [...ids].sort((a, b) => Buffer.compare(sessionHash(a), sessionHash(b)));
    expect(byKey).toEqual(byBytes);
  });
});
