// Changes reported to the mirror (sidecar/src/updates.ts): each applied, counted once whatever
// path reports it first, and followed by a publish.
import { describe, expect, it } from "vitest";
import { cookieValueFor, type SessionRecord } from "../../lib/registry/index.ts";
import { createMetrics } from "../../sidecar/src/metrics.ts";
import { Mirror } from "../../sidecar/src/mirror.ts";
import { MirrorUpdates } from "../../sidecar/src/updates.ts";

const URL_A = "http://10.3.0.1:3000";
const rec = (over: Partial<SessionRecord> = {}): SessionRecord => ({
  node: URL_A,
  cookie: cookieValueFor(URL_A),
  boot: "A1",
  created: 1000,
  source: "node",
  ...over,
});

function setup() {
  const mirror = new Mirror({
    shardBits: 8,
    nodeTtlMs: 100,
    downLimitMs: 500,
    tombstoneTtlMs: 1000,
    retryAfterSeconds: 0,
    probePath: "off",
    probeIntervalMs: 250,
    probeTimeoutMs: 500,
    probeFailures: 2,
  });
  const metrics = createMetrics();
  let publishes = 0;
  const updates = new MirrorUpdates(mirror, metrics, () => void publishes++);
  const count = async (name: "registrations" | "closes") =>
    Object.fromEntries(
      (await metrics[name].get()).values.filter((v) => v.value).map((v) => [Object.values(v.labels)[0], v.value]),
    );
  return { mirror, updates, count, publishes: () => publishes };
}

describe("mirror updates", () => {
  it("an own write and its echo: one registration, one close, under the origin that came first", async () => {
    const { mirror, updates, count, publishes } = setup();
    updates.session("s", rec({ source: "edge" })); // learned at the edge, applied at once
    updates.session("s", rec({ source: "edge" })); // its PUBLISH, back through the change channel
    updates.close("s", "api");
    updates.close("s", "registry");
    expect(await count("registrations")).toEqual({ edge: 1 });
    expect(await count("closes")).toEqual({ api: 1 });
    expect(mirror.closedCount).toBe(1);
    expect(publishes()).toBe(4); // each report asks; the schedule coalesces
  });
  it("a heartbeat recomputes node states", () => {
    const { mirror, updates } = setup();
    updates.session("s", rec());
    updates.node(cookieValueFor(URL_A), {
      url: URL_A,
      cookie: cookieValueFor(URL_A),
      boot: "A1",
      name: "a",
      state: "draining",
      seen: 1,
    });
    expect(mirror.nodeState(cookieValueFor(URL_A))).toBe("draining");
    updates.node(cookieValueFor(URL_A), null);
    expect(mirror.nodeState(cookieValueFor(URL_A))).toBe("gone");
  });
});
