// clusterRequestStateCodec: a state minted on one node is accepted by every node holding its key,
// through a rotation (new key accepted first, then minting), and refused once its key is gone.
import { describe, expect, it } from "vitest";
import type { ServerContext } from "@modelcontextprotocol/server";
import { clusterRequestStateCodec } from "../../node/src/v2.ts";

const OLD = "o".repeat(32);
const NEW = "n".repeat(32);
const ctx = {} as ServerContext;

describe("clusterRequestStateCodec", () => {
  it("mints with the first key and accepts a state of any listed key", async () => {
    const before = clusterRequestStateCodec<{ step: number }>({ keys: [OLD] });
    const rotating = clusterRequestStateCodec<{ step: number }>({ keys: [OLD, NEW] });
    const after = clusterRequestStateCodec<{ step: number }>({ keys: [NEW, OLD] });
    const done = clusterRequestStateCodec<{ step: number }>({ keys: [NEW] });
    const fromOld = await before.mint({ step: 1 });
    const fromNew = await after.mint({ step: 2 });
    // Every step of the rotation accepts what a node one step behind or ahead mints.
    expect(await rotating.verify(fromOld, ctx)).toEqual({ step: 1 });
    expect(await rotating.verify(fromNew, ctx)).toEqual({ step: 2 });
    expect(await after.verify(fromOld, ctx)).toEqual({ step: 1 });
    expect(await done.verify(fromNew, ctx)).toEqual({ step: 2 });
    // A key removed: its states are refused as the SDK's codec refuses them.
    await expect(done.verify(fromOld, ctx)).rejects.toThrow("mac");
    await expect(before.verify(fromNew, ctx)).rejects.toThrow("mac");
  });

  it("an expired state is refused as expired, not retried with the other keys", async () => {
    const codec = clusterRequestStateCodec({ keys: [NEW, OLD], ttlSeconds: -1 });
    await expect(codec.verify(await codec.mint({}), ctx)).rejects.toThrow("expired");
  });

  it("refuses an empty key list and a short key at start", () => {
    expect(() => clusterRequestStateCodec({ keys: [] })).toThrow(RangeError);
    expect(() => clusterRequestStateCodec({ keys: ["short"] })).toThrow(RangeError);
  });
});
