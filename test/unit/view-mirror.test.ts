// The sidecar's registry mirror (what the view is built from): keys, owners, tombstones,
// reconcile and node states, with a fake clock; and the changes reported to it (updates.ts).
import { describe, expect, it } from "vitest";
import { pino } from "pino";
import {
  MemoryRegistry,
  cookieValueFor,
  sessionHash,
  sessionHashKey,
  type NodeRecord,
  type SessionRecord,
} from "../../lib/registry/index.ts";
import { decodeShard, encodeShard, encodeShardEntries } from "../../lib/view/index.ts";
import { createMetrics } from "../../sidecar/src/metrics.ts";
import { Mirror } from "../../sidecar/src/mirror.ts";
import { PLACEMENT_SETTLE_MS } from "../../sidecar/src/nodes.ts";
import { makeConfig } from "../../sidecar/src/config.ts";
import { RegistryRestore } from "../../sidecar/src/restore.ts";
import { MirrorUpdates } from "../../sidecar/src/updates.ts";

const URL_A = "http://10.3.0.1:3000";
const A = cookieValueFor(URL_A);
const rec = (over: Partial<SessionRecord> = {}): SessionRecord => ({
  node: URL_A,
  cookie: A,
  boot: "A1",
  created: 1000,
  source: "node",
  ...over,
});
const hb = (over: Partial<NodeRecord> = {}): NodeRecord => ({
  url: URL_A,
  cookie: A,
  boot: "A1",
  name: "a",
  state: "up",
  seen: 1000,
  ...over,
});

function mirror(over: Partial<ConstructorParameters<typeof Mirror>[0]> = {}) {
  const clock = { now: 10_000 };
  const m = new Mirror({
    shardBits: 8,
    nodeTtlMs: 100,
    downLimitMs: 500,
    tombstoneTtlMs: 1000,
    retryAfterSeconds: 7,
    probePath: "off",
    probeIntervalMs: 250,
    probeTimeoutMs: 500,
    probeFailures: 2,
    now: () => clock.now,
    ...over,
  });
  return { m, clock };
}
const state = (m: Mirror, id: string) => {
  const e = m.lookup(sessionHashKey(id));
  return e ? { state: m.ownerState(e.owner), closed: e.closed, owner: e.owner.id } : null;
};

describe("mirror keys and shards", () => {
  it("keys are the session hash, and shards match the view's prefixes", () => {
    const { m } = mirror({ shardBits: 12 });
    for (const id of ["a", "Session-123", "x".repeat(300)]) {
      const key = sessionHashKey(id);
      expect(Buffer.from(key, "latin1").equals(sessionHash(id))).toBe(true);
      expect(m.prefixOf(m.shardOf(key))).toBe(sessionHash(id).toString("hex").slice(0, 3));
    }
  });
  it("the fast shard encoder writes the same bytes as encodeShard", () => {
    const ids = Array.from({ length: 50 }, (_, i) => `s${i}`);
    const entries = ids.map((id, i) => [sessionHashKey(id), i + 1, i % 3 === 0] as [string, number, boolean]);
    const a = encodeShardEntries(9, [...entries]);
    const b = encodeShard(
      9,
      ids.map((id, i) => ({ hash: sessionHash(id), node: i + 1, closed: i % 3 === 0 })),
    );
    expect(a.equals(b)).toBe(true);
    expect(decodeShard(a).sessions).toHaveLength(50);
  });
});

describe("mirror sessions", () => {
  it("counts per owner, marks shards dirty, tombstones closes, and drops unreferenced owners", () => {
    const { m, clock } = mirror();
    expect(m.applySession("s1", rec())).toBe("new");
    expect(m.applySession("s1", rec())).toBe("same");
    expect(m.applySession("s2", rec({ boot: null }))).toBe("new");
    expect(m.liveCount).toBe(2);
    expect(m.dirtyShards().size).toBeGreaterThan(0);
    const owners = m.viewNodes();
    expect(owners).toHaveLength(2); // (A, A1) and (A, unknown boot)
    m.takeDirtyShards();
    expect(m.applyClose("s1")).toBe(true);
    expect(m.applyClose("s1")).toBe(false); // an echo is not a second close
    expect(state(m, "s1")).toMatchObject({ closed: true });
    expect(m.liveCount).toBe(1);
    expect(m.closedCount).toBe(1);
    expect(m.dirtyShards().size).toBe(1);
    // The tombstone keeps its owner in the table until it expires.
    expect(m.viewNodes()).toHaveLength(2);
    clock.now += 1001;
    expect(m.expireTombstones()).toBe(1);
    expect(state(m, "s1")).toBeNull();
    expect(m.viewNodes()).toHaveLength(1);
    // Ids are never reused within an epoch.
    m.applySession("s3", rec({ boot: "A9" }));
    expect(Math.max(...m.viewNodes().map((n) => n.id))).toBe(3);
  });
  it("counts live sessions per node once: closed ones and those of gone incarnations do not count", () => {
    const { m, clock } = mirror();
    const B = "http://10.3.0.2:3000";
    m.applyNode(A, hb({ boot: "A1", seen: 1000 }));
    m.applySession("a1", rec());
    m.applySession("a-noboot", rec({ boot: null }));
    m.applySession("closed", rec());
    m.applyClose("closed");
    m.applySession("b1", rec({ node: B, cookie: cookieValueFor(B), boot: null }));
    expect(m.liveSessionsByNode()).toEqual(
      new Map([
        [A, 2],
        [cookieValueFor(B), 1],
      ]),
    );
    m.applyNode(A, hb({ boot: "A2", seen: 2000 })); // A1 is over: its session is gone, the boot-less one follows A2
    clock.now += 1;
    m.refreshStates();
    expect(m.liveSessionsByNode().get(A)).toBe(1);
    expect(m.liveCount).toBe(3); // the mirror still holds it (the edge answers 404 from its record)
  });
  it("own writes applied twice (locally, then their echo) leave the mirror as the echoes alone do", () => {
    // The sidecar applies its own registry writes at once, then again when their PUBLISH comes back
    // (sidecar/src/updates.ts): correct only because applies are idempotent.
    const { m } = mirror();
    expect(m.applySession("s", rec())).toBe("new");
    m.takeDirtyShards();
    const before = { nodes: m.viewNodes(), meta: m.metaVersion, live: m.liveCount };
    expect(m.applySession("s", rec()), "the echo of a registration").toBe("same");
    expect(m.dirtyShards().size, "no shard to rewrite").toBe(0);
    expect({ nodes: m.viewNodes(), meta: m.metaVersion, live: m.liveCount }).toEqual(before);
    expect(m.applyClose("s")).toBe(true);
    m.takeDirtyShards();
    expect(m.applyClose("s"), "the echo of a close: not a second close").toBe(false);
    expect(m.dirtyShards().size).toBe(0);
    expect(m.closedCount).toBe(1);

    // Interleaved: a register and a close applied locally, their echoes after both (in write order).
    const B = "http://10.3.0.2:3000";
    const moved = rec({ node: B, cookie: cookieValueFor(B), boot: "B1" });
    const local = mirror().m;
    const echoes = mirror().m;
    local.applySession("x", rec());
    local.applySession("y", rec());
    local.applySession("y", moved); // a re-registration on another node
    local.applyClose("x");
    for (const m2 of [local, echoes]) {
      m2.applySession("x", rec());
      m2.applySession("y", rec());
      m2.applySession("y", moved);
      m2.applyClose("x");
    }
    // Owner ids may differ (an id dropped meanwhile is never reused); what they stand for may not.
    const session = (m2: Mirror, id: string) => {
      const e = m2.lookup(sessionHashKey(id))!;
      return { cookie: e.owner.cookie, boot: e.owner.boot, closed: e.closed, state: m2.ownerState(e.owner) };
    };
    const seen = (m2: Mirror) => ({
      x: session(m2, "x"),
      y: session(m2, "y"),
      live: m2.liveCount,
      closed: m2.closedCount,
      perNode: m2.liveSessionsByNode(),
      owners: m2.viewNodes().map((n) => [n.cookie, n.state]),
    });
    expect(seen(local)).toEqual(seen(echoes));
  });
  it("a re-registration moves a session to its new owner", () => {
    const { m } = mirror();
    m.applySession("s", rec());
    const before = state(m, "s")!.owner;
    expect(
      m.applySession("s", rec({ node: "http://10.3.0.2:3000", cookie: cookieValueFor("http://10.3.0.2:3000") })),
    ).toBe("changed");
    expect(state(m, "s")!.owner).not.toBe(before);
    expect(m.viewNodes().some((n) => n.id === before)).toBe(false);
    expect(m.liveCount).toBe(1);
  });
  it("reconcile drops live entries the scan missed, keeps tombstones, and never lets a scan undo a newer change", () => {
    const { m } = mirror();
    m.applySession("kept", rec());
    m.applySession("vanished", rec());
    m.applySession("closed-during", rec());
    m.beginReconcile();
    m.applySession("kept", rec(), true);
    m.applyClose("closed-during"); // a live change during the scan...
    expect(m.applySession("closed-during", rec(), true)).toBe("same"); // ...which the (older) scan result must not undo
    m.applySession("moved", rec({ boot: "A2" })); // live change
    expect(m.applySession("moved", rec({ boot: "A1" }), true)).toBe("same");
    expect(m.endReconcile(true)).toBe(1);
    expect(state(m, "vanished")).toBeNull();
    expect(state(m, "kept")).not.toBeNull();
    expect(state(m, "closed-during")?.closed).toBe(true);
    expect(m.lookup(sessionHashKey("moved"))?.owner.boot).toBe("A2");
    // An incomplete reconcile drops nothing.
    m.beginReconcile();
    expect(m.endReconcile(false)).toBe(0);
    expect(state(m, "kept")).not.toBeNull();
  });
});

describe("mirror node states", () => {
  it("up -> down (stale heartbeat) -> gone (past the limit); draining; removal; retry hint", () => {
    const { m, clock } = mirror();
    m.applySession("s", rec());
    m.applyNode(A, hb({ seen: clock.now }));
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("up");
    m.applyNode(A, hb({ seen: clock.now + 1, state: "draining" }));
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("draining");
    clock.now += 150;
    expect(m.refreshStates()).toBe(true);
    expect(state(m, "s")?.state).toBe("down");
    expect(m.viewNodes()[0].retryAfterSeconds).toBe(7);
    clock.now += 600;
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("gone");
    m.applyNode(A, hb({ seen: clock.now }));
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("up"); // same boot answering again
    m.applyNode(A, null);
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("gone");
  });
  it("a session created after Traefik's last DOWN poll proves the node serves; the next DOWN poll wins again", () => {
    const { m, clock } = mirror();
    m.applyNode(A, hb({ boot: "A2", seen: clock.now }));
    m.applyTraefik([{ url: URL_A, up: false }], true); // polled while the node restarted
    m.refreshStates();
    m.applySession("old", rec({ boot: "A2" }), true); // a scan proves nothing new
    expect(state(m, "old")?.state).toBe("down");
    clock.now += 10;
    m.applySession("fresh", rec({ boot: "A2", created: clock.now })); // Traefik already routed an initialize to it
    expect(state(m, "fresh")?.state).toBe("up");
    expect(state(m, "old")?.state).toBe("up");
    clock.now += 10;
    m.applyTraefik([{ url: URL_A, up: false }], true); // Traefik still says DOWN after that: believe it
    m.refreshStates();
    expect(state(m, "fresh")?.state).toBe("down");
    m.applySession("other-boot", rec({ boot: "A1", created: clock.now })); // another boot proves nothing for A2
    m.refreshStates();
    expect(state(m, "fresh")?.state).toBe("down");
  });
  it("heartbeats do not age while the registry is unreachable", () => {
    const { m, clock } = mirror();
    m.applySession("s", rec());
    m.applyNode(A, hb({ seen: clock.now }));
    m.setHeartbeatsTrusted(false);
    clock.now += 10_000;
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("up");
    m.setHeartbeatsTrusted(true);
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("up"); // a fresh window after the outage
    clock.now += 150;
    m.refreshStates();
    expect(state(m, "s")?.state).toBe("down");
  });
  it("a new boot retires the old incarnation; a late old heartbeat does not bring it back", () => {
    const { m, clock } = mirror();
    m.applyNode(A, hb({ boot: "A1", seen: 1000 }));
    m.applySession("old", rec({ boot: "A1" }));
    m.applySession("nob", rec({ boot: null }));
    m.applyNode(A, hb({ boot: "A2", seen: 2000 }));
    m.applySession("new", rec({ boot: "A2", created: 2500 }));
    m.applyNode(A, hb({ boot: "A1", seen: 1500 })); // delayed message from the old process
    clock.now += 1;
    m.refreshStates();
    expect(state(m, "old")?.state).toBe("gone");
    expect(state(m, "new")?.state).toBe("up");
    expect(state(m, "nob")?.state).toBe("up");
    // A session of a boot we never saw, newer than the last heartbeat: provisional, not gone.
    m.applySession("future", rec({ boot: "A3", created: 9999 }));
    expect(state(m, "future")?.state).toBe("up");
    // One older than the current heartbeat: that boot is over.
    m.applySession("stale", rec({ boot: "A0", created: 500 }));
    expect(state(m, "stale")?.state).toBe("gone");
  });
  it("Traefik's view: down, removed (gone), and a heartbeat wins over a removal", () => {
    const { m } = mirror();
    const B = "http://10.3.0.2:3000";
    m.applySession("a", rec({ boot: null }));
    m.applySession("b", rec({ node: B, cookie: cookieValueFor(B), boot: null }));
    m.applyTraefik(
      [
        { url: URL_A, up: false },
        { url: B, up: true },
      ],
      true,
    );
    m.refreshStates();
    expect(state(m, "a")?.state).toBe("down");
    expect(state(m, "b")?.state).toBe("up");
    m.applyTraefik([{ url: URL_A, up: true }], true);
    m.refreshStates();
    expect(state(m, "b")?.state).toBe("gone");
    expect(state(m, "a")?.state).toBe("up");
    m.applyNode(cookieValueFor(B), hb({ url: B, cookie: cookieValueFor(B), seen: 20_000 }));
    m.refreshStates();
    expect(state(m, "b")?.state).toBe("up");
    expect(m.urlFor(cookieValueFor(B))).toBe(B);
  });
  it("a server that joins Traefik's service later gets new sessions only after the placement settle time; its sessions stay pinned", () => {
    const { m, clock } = mirror();
    const B = "http://10.3.0.2:3000";
    const C = "http://10.3.0.3:3000";
    const bootOf = (url: string) => m.viewBoots().find((b) => b.cookie === cookieValueFor(url));
    // The first complete reading is the baseline: servers there from the start are placeable at once.
    m.applyTraefik([{ url: URL_A, up: true }], true);
    m.refreshStates();
    expect(bootOf(URL_A)?.state).toBe("up");
    // B joins (a server without the node library), C too (one with a heartbeat, which comes first:
    // no Traefik routes to C yet, so no new session goes there either).
    clock.now += 1000;
    m.applyNode(cookieValueFor(C), hb({ url: C, cookie: cookieValueFor(C), boot: "C1", seen: clock.now }));
    m.refreshStates();
    expect(bootOf(C)?.state).toBe("draining");
    m.applyTraefik(
      [
        { url: URL_A, up: true },
        { url: B, up: true },
        { url: C, up: true },
      ],
      true,
    );
    m.refreshStates();
    // Live (a token of theirs is pinned), not yet offered for new sessions.
    expect([bootOf(B)?.state, bootOf(C)?.state]).toEqual(["draining", "draining"]);
    const v = m.metaVersion;
    clock.now += PLACEMENT_SETTLE_MS - 1;
    m.applyNode(cookieValueFor(C), hb({ url: C, cookie: cookieValueFor(C), boot: "C1", seen: clock.now }));
    m.refreshStates();
    expect(bootOf(B)?.state).toBe("draining");
    clock.now += 1;
    expect(m.refreshStates()).toBe(true); // the meta is republished
    expect(m.metaVersion).toBeGreaterThan(v);
    expect([bootOf(B)?.state, bootOf(C)?.state]).toEqual(["up", "up"]);
    // Removed and back (a new endpoint in Kubernetes): joining again.
    m.applyTraefik([{ url: URL_A, up: true }], true);
    m.applyTraefik(
      [
        { url: URL_A, up: true },
        { url: B, up: true },
      ],
      true,
    );
    m.refreshStates();
    expect(bootOf(B)?.state).toBe("draining");
  });
});

describe("mirror node states from the sidecar's own probe", () => {
  // Results count for 4 rounds plus the failures' timeouts: 4 * 250 + 2 * 500 = 2000 ms.
  const probed = () => mirror({ probePath: "/healthz" });

  it("a timeout is down (503), an answer brings the node back at once, down past the limit is gone", () => {
    const { m, clock } = probed();
    m.applyNode(A, hb());
    m.applySession("s1", rec());
    m.applyProbe(A, "ok");
    expect(state(m, "s1")!.state).toBe("up");
    m.applyProbe(A, "timeout");
    expect(state(m, "s1")!.state, "one failed probe is no verdict").toBe("up");
    expect(m.applyProbe(A, "timeout")).toBe(true);
    expect(state(m, "s1")!.state).toBe("down");
    clock.now += 300;
    m.applyProbe(A, "ok"); // resumed: the same boot, its sessions intact
    expect(state(m, "s1")!.state).toBe("up");
    m.applyProbe(A, "timeout");
    m.applyProbe(A, "timeout");
    clock.now += 501;
    m.applyProbe(A, "timeout");
    expect(state(m, "s1")!.state).toBe("gone");
  });

  it("a refused connection proves the boot over: gone at once, and a new boot does not bring its sessions back", () => {
    const { m, clock } = probed();
    m.applyNode(A, hb());
    m.applySession("s1", rec());
    m.applyProbe(A, "refused");
    expect(state(m, "s1")!.state).toBe("gone");
    expect(m.viewNodes().find((n) => n.cookie === A)!.state).toBe("gone");
    clock.now += 100;
    m.applyProbe(A, "ok"); // the process is back (a new boot), its heartbeat not yet
    m.applyNode(A, hb({ boot: "A2", seen: 2000 }));
    m.applySession("s2", rec({ boot: "A2", created: 2100 }));
    expect(state(m, "s1")!.state).toBe("gone");
    expect(state(m, "s2")!.state).toBe("up");
  });

  it("an unhealthy answer is down, not gone; a probe result too old no longer counts", () => {
    const { m, clock } = probed();
    m.applyNode(A, hb());
    m.applySession("s1", rec());
    m.applyProbe(A, "unhealthy");
    m.applyProbe(A, "unhealthy");
    expect(state(m, "s1")!.state).toBe("down");
    clock.now += 2001;
    m.applyNode(A, hb({ seen: 1500 })); // the heartbeat is fresh; the probe is not
    m.refreshStates();
    expect(state(m, "s1")!.state).toBe("up");
  });

  it("nodes without the library: refused is gone, timeout down, ok up (edge-learned sessions follow)", () => {
    const { m } = probed();
    m.applyTraefik([{ url: URL_A, up: true }], true);
    m.applySession("e1", rec({ boot: null, source: "edge" }));
    m.applyProbe(A, "timeout");
    m.applyProbe(A, "timeout");
    expect(state(m, "e1")!.state).toBe("down");
    m.applyProbe(A, "refused");
    expect(state(m, "e1")!.state).toBe("gone");
    m.applyProbe(A, "ok");
    expect(state(m, "e1")!.state).toBe("up"); // a new process answers for itself (its own 404)
    expect(m.probeTargets()).toEqual([{ cookie: A, url: URL_A }]);
  });
});

describe("mirror updates (changes the components report)", () => {
  function updated() {
    const { m } = mirror();
    const metrics = createMetrics();
    let publishes = 0;
    const registry = new MemoryRegistry();
    const restore = new RegistryRestore({
      cfg: makeConfig({}),
      registry,
      metrics,
      log: pino({ level: "silent" }),
      mirror: m,
    });
    const updates = new MirrorUpdates(m, metrics, () => void publishes++, restore);
    const count = async (name: "registrations" | "closes") =>
      Object.fromEntries(
        (await metrics[name].get()).values.filter((v) => v.value).map((v) => [Object.values(v.labels)[0], v.value]),
      );
    return { m, updates, count, publishes: () => publishes, restore, registry, metrics };
  }

  it("an own write and its echo: one registration, one close, under the origin that came first", async () => {
    const { m, updates, count, publishes } = updated();
    updates.session("s", rec({ source: "edge" })); // learned at the edge, applied at once
    updates.session("s", rec({ source: "edge" })); // its PUBLISH, back through the change channel
    updates.close("s", "api");
    updates.close("s", "registry");
    expect(await count("registrations")).toEqual({ edge: 1 });
    expect(await count("closes")).toEqual({ api: 1 });
    expect(m.closedCount).toBe(1);
    expect(publishes()).toBe(4); // each report asks; the schedule coalesces
  });
  it("a heartbeat recomputes node states", () => {
    const { m, updates } = updated();
    updates.session("s", rec());
    updates.node(A, hb({ state: "draining" }));
    expect(m.nodeState(A)).toBe("draining");
    updates.node(A, null);
    expect(m.nodeState(A)).toBe("gone");
  });
  it("keeps the records no node puts back, and after a loss puts back the live ones only where absent", async () => {
    const { m, updates, restore, registry, metrics } = updated();
    const B = cookieValueFor("http://b:1"); // a node without heartbeats (the sessions API)
    updates.node(A, hb()); // a node with heartbeats: it puts its own sessions back
    updates.session("own", rec());
    updates.session("api", rec({ node: "http://b:1", cookie: B, boot: "B1" }));
    updates.session("edge", rec({ source: "edge", boot: null }));
    updates.session("closed", rec({ node: "http://b:1", cookie: B, boot: "B1" }));
    updates.close("closed", "api");
    expect(restore.size).toBe(2);
    // Redis came back empty except for the API session, which its node wrote again first.
    const newer = rec({ node: "http://b:1", cookie: B, boot: "B1", created: 5000 });
    await registry.registerSession("api", newer);
    await restore.restore();
    expect(await registry.lookupSession("api")).toEqual(newer); // never overwritten
    expect(await registry.lookupSession("edge")).toEqual(rec({ source: "edge", boot: null }));
    expect(await registry.lookupSession("own")).toBeNull(); // its node's job
    expect(await registry.lookupSession("closed")).toBeNull();
    const restored = Object.fromEntries((await metrics.restored.get()).values.map((v) => [v.labels.result, v.value]));
    expect(restored).toEqual({ put: 1, present: 1 });
    // A session the mirror no longer holds (its record expired, unseen by a scan) is dropped.
    m.beginReconcile();
    m.applySession("api", newer, true);
    m.applySession("own", rec(), true);
    m.endReconcile(true);
    restore.prune();
    expect(restore.size).toBe(1);
  });
});
