// One contract, every store: in-memory, Redis (single server), Redis Sentinel, Redis Cluster
// (one node holding every slot). Redis runs are against a real redis-server. Each Redis mode runs
// again as managed Redis services run it, TLS only and an ACL user (the default user off), opened
// through the settings of the sidecar (its flags) and of the node library (its registry option).
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { Redis } from "ioredis";
import {
  CHANGE_CHANNEL,
  MemoryRegistry,
  RedisRegistry,
  cookieValueFor,
  createRegistry,
  type NodeRecord,
  type Registry,
  type RegistryChange,
  type SessionRecord,
  type RedisConnectionConfig,
  type SessionStore,
} from "../../lib/registry/index.ts";
import { DEFAULT_NODE_TTL_MS, DEFAULT_SESSION_TTL_MS } from "../../lib/registry/schema.ts";
import { nodeRedisOptions, openNodeRegistry } from "../../node/src/index.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import {
  MANAGED,
  startManagedRedis,
  startManagedSentinel,
  startRedis,
  startSentinel,
  type TestRedis,
  type TestSentinel,
} from "../../dev/redis.ts";
import { makeTestCa, type TestCa } from "../../dev/tls.ts";
import { parseConfig } from "../../sidecar/src/config.ts";
import { redisConnection, type RedisSettings } from "../../lib/settings/redis.ts";

const URL_A = "http://10.0.0.1:3000";
const URL_B = "http://10.0.0.2:3000";
const rec = (over: Partial<SessionRecord> = {}): SessionRecord => ({
  node: URL_A,
  cookie: cookieValueFor(URL_A),
  boot: "boot-1",
  created: 1_700_000_000_000,
  source: "node",
  ...over,
});
const nodeRec = (over: Partial<NodeRecord> = {}): NodeRecord => ({
  url: URL_A,
  cookie: cookieValueFor(URL_A),
  boot: "boot-1",
  name: "a",
  state: "up",
  seen: 1_700_000_000_000,
  ...over,
});
let redis: TestRedis;
let cluster: TestRedis;
let sentinel: TestSentinel;
// The same three modes, TLS only and with ACL users.
let secure: TestRedis;
let secureCluster: TestRedis;
let secureSentinel: TestSentinel;
let caDir: string;
let ca: TestCa;
let seq = 0;
/** A fresh id per test so stores shared by the suite never collide. */
const sid = (name: string) => `t${++seq}-${name}`;

const { app: APP, sentinelPassword: SENTINEL_PASSWORD } = MANAGED;

beforeAll(async () => {
  caDir = await mkdtemp(join(tmpdir(), "mcpa-ca-"));
  ca = makeTestCa(caDir);
  [redis, cluster, secure, secureCluster] = await Promise.all([
    startRedis(),
    startRedis({ cluster: true }),
    startManagedRedis(ca),
    startManagedRedis(ca, { cluster: true }),
  ]);
  [sentinel, secureSentinel] = await Promise.all([startSentinel(redis.port), startManagedSentinel(secure.port, ca)]);
});
afterAll(async () => {
  await Promise.all([sentinel?.close(), secureSentinel?.close()]);
  await Promise.all([redis?.close(), cluster?.close(), secure?.close(), secureCluster?.close()]);
  await rm(caDir, { recursive: true, force: true });
});

/** The secured modes: the sidecar's flags and the node library's registry option for each. */
const secured = () => {
  const auth = ["--redis-username", APP.user, "--redis-password", APP.password, "--redis-tls-ca-file", ca.caFile];
  const sentinels = `127.0.0.1:${secureSentinel.port}`;
  const sentinelFlags = ["--redis-sentinels", sentinels, "--redis-sentinel-name", secureSentinel.masterName];
  const library = { redisUsername: APP.user, redisPassword: APP.password, redisTlsCaFile: ca.caFile };
  return {
    single: {
      flags: ["--redis-url", secure.url, ...auth],
      library: { redisUrl: secure.url, ...library },
    },
    sentinel: {
      flags: [...sentinelFlags, "--redis-sentinel-password", SENTINEL_PASSWORD, "--redis-tls", ...auth],
      library: {
        redisSentinels: [{ host: "127.0.0.1", port: secureSentinel.port }],
        redisSentinelName: secureSentinel.masterName,
        redisSentinelPassword: SENTINEL_PASSWORD,
        redisTls: true,
        ...library,
      },
    },
    cluster: {
      flags: ["--redis-cluster", `127.0.0.1:${secureCluster.port}`, "--redis-tls", ...auth],
      library: { redisCluster: [{ host: "127.0.0.1", port: secureCluster.port }], redisTls: true, ...library },
    },
  } satisfies Record<string, { flags: string[]; library: RedisSettings }>;
};

/** The sidecar's registry connection from its command line. */
const sidecarConnection = (flags: string[]) => redisConnection(parseConfig(flags, {})!);

const nodeSettings = (o?: { sessionTtlMs?: number; nodeTtlMs?: number }) => ({
  sessionTtlMs: o?.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS,
  nodeTtlMs: o?.nodeTtlMs ?? DEFAULT_NODE_TTL_MS,
  timeoutMs: 1000,
  onError: () => {},
});

interface Store {
  name: string;
  make: (o?: { sessionTtlMs?: number; nodeTtlMs?: number }) => Registry;
  /** A raw client to inspect keys (Redis stores only). */
  raw?: () => Redis;
  /** The store's connection (Redis stores only). */
  connection?: () => RedisConnectionConfig;
  shared: boolean;
}

const securedStores = (["single", "sentinel", "cluster"] as const).flatMap((mode): Store[] => {
  const server = () => (mode === "cluster" ? secureCluster : secure);
  return [
    {
      name: `${mode}, TLS + ACL user (sidecar settings)`,
      make: (o) => createRegistry({ ...sidecarConnection(secured()[mode].flags), ...o }),
      raw: () => new Redis(server().clientOptions),
      connection: () => sidecarConnection(secured()[mode].flags),
      shared: true,
    },
    {
      name: `${mode}, TLS + ACL user (node library settings)`,
      make: (o) => new RedisRegistry(nodeRedisOptions(secured()[mode].library, nodeSettings(o))),
      raw: () => new Redis(server().clientOptions),
      connection: () => nodeRedisOptions(secured()[mode].library, nodeSettings()),
      shared: true,
    },
  ];
});
const stores: Store[] = [
  { name: "memory", make: (o) => new MemoryRegistry(o), shared: false },
  {
    name: "redis",
    make: (o) => createRegistry({ url: redis.url, ...o }),
    raw: () => new Redis(redis.url),
    connection: () => ({ url: redis.url }),
    shared: true,
  },
  {
    // The node library's registry: the same class with the node's connection settings.
    name: "redis (node library settings)",
    make: (o) => new RedisRegistry(nodeRedisOptions(redis.url, nodeSettings(o))),
    raw: () => new Redis(redis.url),
    connection: () => ({ url: redis.url }),
    shared: true,
  },
  {
    name: "sentinel",
    make: (o) =>
      new RedisRegistry({
        sentinel: { nodes: [{ host: "127.0.0.1", port: sentinel.port }], name: sentinel.masterName },
        ...o,
      }),
    raw: () => new Redis(redis.url),
    connection: () => ({
      sentinel: { nodes: [{ host: "127.0.0.1", port: sentinel.port }], name: sentinel.masterName },
    }),
    shared: true,
  },
  {
    name: "cluster",
    make: (o) => new RedisRegistry({ cluster: [{ host: "127.0.0.1", port: cluster.port }], ...o }),
    raw: () => new Redis(cluster.url),
    connection: () => ({ cluster: [{ host: "127.0.0.1", port: cluster.port }] }),
    shared: true,
  },
  ...securedStores,
];

describe.each(stores)("registry contract: $name", (store) => {
  const open: Registry[] = [];
  const raws: Redis[] = [];
  const make = (o?: { sessionTtlMs?: number; nodeTtlMs?: number }) => {
    const r = store.make(o);
    open.push(r);
    return r;
  };
  const raw = () => {
    const r = store.raw!();
    raws.push(r);
    return r;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    raws.splice(0).forEach((r) => r.disconnect());
  });

  it("registers, looks up and closes a session", async () => {
    const reg = make();
    const id = sid("a");
    expect(await reg.lookupSession(id)).toBeNull();
    expect(await reg.registerSession(id, rec())).toBe(true);
    expect(await reg.lookupSession(id)).toEqual(rec());
    expect(await reg.closeSession(id)).toBe(true);
    expect(await reg.lookupSession(id)).toBeNull();
    expect(await reg.closeSession(id)).toBe(false);
  });

  it("ifAbsent never overwrites an existing record; a plain register does", async () => {
    const reg = make();
    const id = sid("nx");
    expect(await reg.registerSession(id, rec({ source: "node" }))).toBe(true);
    expect(await reg.registerSession(id, rec({ source: "edge", node: "", boot: null }), { ifAbsent: true })).toBe(
      false,
    );
    expect((await reg.lookupSession(id))?.source).toBe("node");
    expect(await reg.registerSession(id, rec({ node: URL_B, cookie: cookieValueFor(URL_B) }))).toBe(true);
    expect((await reg.lookupSession(id))?.node).toBe(URL_B);
  });

  it("expires sessions after their TTL and touch renews it", async () => {
    // a expires at 1500 ms; b, touched at about 750 ms, at about 2250 ms: checked at about 1900 ms
    // (margins of about 400 ms either side: a loaded machine delays each step).
    const reg = make({ sessionTtlMs: 1500 });
    const a = sid("ttl-a");
    const b = sid("ttl-b");
    await reg.registerSession(a, rec());
    await reg.registerSession(b, rec());
    await sleep(750);
    expect(await reg.touchSession(b, rec())).toBe(true);
    await sleep(1150);
    expect(await reg.lookupSession(a)).toBeNull();
    expect(await reg.lookupSession(b)).not.toBeNull();
    expect(await reg.touchSession(a, rec())).toBe(false);
  });

  it("renews edge records only, never past their maximum age", async () => {
    const reg = make({ sessionTtlMs: 60_000 });
    const edge = sid("edge-touch");
    const old = sid("edge-old");
    const node = sid("node-touch");
    // Records live 1 s; the edge renews to 3 s. Checked at about 1.9 s: the renewed one lives, the
    // node's (not renewable here) and the one capped by its maximum age (1.3 s) are gone.
    await reg.registerSession(edge, rec({ source: "edge", created: Date.now() }), { ttlMs: 1000 });
    await reg.registerSession(old, rec({ source: "edge", created: Date.now() - 10_000 }), { ttlMs: 1000 });
    await reg.registerSession(node, rec(), { ttlMs: 1000 });
    await sleep(50);
    expect(await reg.touchEdgeSession(edge, 3000, 60_000)).toBe(true);
    expect(await reg.touchEdgeSession(node, 3000, 60_000)).toBe(false); // a node's record: its node renews it
    // Created 10 s ago, maximum age 11.3 s: renewed only up to that age (about 1.3 s from now).
    expect(await reg.touchEdgeSession(old, 3000, 11_300)).toBe(true);
    await sleep(1850);
    expect(await reg.lookupSession(edge)).not.toBeNull();
    expect(await reg.lookupSession(node)).toBeNull();
    expect(await reg.lookupSession(old)).toBeNull();
    expect(await reg.touchEdgeSession(old, 2000, 60_000)).toBe(false);
  });

  it("keeps node heartbeats with a TTL, lists and removes them", async () => {
    const reg = make({ nodeTtlMs: 200 });
    const a = nodeRec();
    const b = nodeRec({ url: URL_B, cookie: cookieValueFor(URL_B), boot: "boot-b", state: "draining" });
    await reg.heartbeat(a);
    await reg.heartbeat(b, 5000);
    expect(await reg.getNodes([b.cookie, a.cookie, cookieValueFor("http://10.0.0.3:3000")])).toEqual([b, a, null]);
    expect(await reg.getNodes([])).toEqual([]);
    const listed = (await reg.listNodes()).filter((n) => n.cookie === a.cookie || n.cookie === b.cookie);
    expect(listed.sort((x, y) => x.url.localeCompare(y.url))).toEqual([a, b]);
    await sleep(250);
    expect(await reg.getNodes([a.cookie])).toEqual([null]);
    // Removed only while it carries the given boot: a successor on the same URL keeps its record.
    expect(await reg.removeNode(b.cookie, "boot-other")).toBe(false);
    expect(await reg.getNodes([b.cookie])).toEqual([b]);
    expect(await reg.removeNode(b.cookie, "boot-b")).toBe(true);
    expect(await reg.getNodes([b.cookie])).toEqual([null]);
    expect(await reg.removeNode(b.cookie, "boot-b")).toBe(false);
  });

  it("iterates every session for reconcile", async () => {
    const reg = make();
    const prefix = sid("scan");
    const ids = Array.from({ length: 2500 }, (_, i) => `${prefix}-${i}`);
    for (let i = 0; i < ids.length; i += 250)
      await Promise.all(ids.slice(i, i + 250).map((id) => reg.registerSession(id, rec())));
    const seen = new Set<string>();
    for await (const batch of reg.scanSessions({ batch: 500 })) {
      for (const { id, record } of batch) {
        if (id.startsWith(prefix + "-")) {
          expect(record).toEqual(rec());
          seen.add(id);
        }
      }
    }
    expect(seen.size).toBe(ids.length);
  });

  it("announces every write to subscribers, in order, and nothing for no-ops", async () => {
    const reg = make();
    const got: RegistryChange[] = [];
    const unsub = await reg.subscribe((c) => got.push(c));
    const id = sid("sub");
    await reg.registerSession(id, rec());
    await reg.registerSession(id, rec({ source: "edge" }), { ifAbsent: true }); // no write, no change
    await reg.touchSession(id, rec()); // no change
    await reg.heartbeat(nodeRec({ boot: id }));
    await reg.removeNode(nodeRec().cookie, `not-${id}`); // another boot's record: no write, no change
    await reg.closeSession(id);
    await reg.removeNode(nodeRec().cookie, id);
    await waitUntil(
      "4 changes of this node received",
      () => got.filter((c) => c.op !== "node" || c.record === null || c.record.boot === id).length >= 4,
    );
    const mine = got.filter((c) => (c.op === "node" ? c.record === null || c.record.boot === id : c.id === id));
    expect(mine).toEqual([
      { op: "session", id, record: rec() },
      { op: "node", cookie: nodeRec().cookie, record: nodeRec({ boot: id }) },
      { op: "close", id },
      { op: "node", cookie: nodeRec().cookie, record: null },
    ]);
    await unsub();
    const before = got.length;
    await reg.registerSession(sid("after-unsub"), rec());
    await sleep(50);
    expect(got.length).toBe(before);
  });

  it("rejects invalid ids and use after close with a code", async () => {
    const reg = make();
    await expect(reg.registerSession("has space", rec())).rejects.toMatchObject({ code: "ERR_REGISTRY_SCHEMA" });
    await reg.close();
    await expect(reg.lookupSession("x")).rejects.toMatchObject({ code: "ERR_REGISTRY_CLOSED" });
    expect(reg.status()).toBe("closed");
  });

  if (store.shared) {
    it("keeps ADR-0066 keys: mcp:session:{id} with a 30-day TTL by default", async () => {
      const reg = make();
      const id = sid("adr");
      await reg.registerSession(id, rec());
      const r = raw();
      const pttl = await r.pttl(`mcp:session:${id}`);
      expect(pttl).toBeGreaterThan(30 * 24 * 3600 * 1000 - 60_000);
      expect(pttl).toBeLessThanOrEqual(30 * 24 * 3600 * 1000);
      expect(JSON.parse((await r.get(`mcp:session:${id}`))!)).toMatchObject({ node: URL_A, source: "node" });
    });

    it("renews an edge record whatever its JSON layout, and leaves a foreign value alone", async () => {
      const reg = make();
      const r = raw();
      const spaced = sid("edge-spaced");
      const record = { source: "edge", created: Date.now(), v: 1, node: URL_A, cookie: rec().cookie, boot: null };
      // Another key order and spaces after the colons: the script reads the record, not its bytes.
      await r.set(`mcp:session:${spaced}`, JSON.stringify(record, null, 1), "PX", 1000);
      expect(await reg.touchEdgeSession(spaced, 60_000, 3_600_000)).toBe(true);
      expect(await r.pttl(`mcp:session:${spaced}`)).toBeGreaterThan(50_000);
      const foreign = sid("edge-foreign");
      await r.set(`mcp:session:${foreign}`, 'not json "source":"edge"', "PX", 1000);
      expect(await reg.touchEdgeSession(foreign, 60_000, 3_600_000)).toBe(false);
      expect(await r.pttl(`mcp:session:${foreign}`)).toBeLessThanOrEqual(1000);
      for (const id of [spaced, foreign]) await r.del(`mcp:session:${id}`); // one key per command: Cluster
    });

    it("changes written by one sidecar reach another, in the order they were written", async () => {
      // How fast is a benchmark's question (bench/view-publish.ts); the contract is that every
      // change arrives, whole and in order.
      const a = make();
      const b = make();
      const got: RegistryChange[] = [];
      await b.subscribe((c) => got.push(c));
      const id = sid("x");
      await a.registerSession(id, rec());
      await a.closeSession(id);
      await waitUntil("both changes received", () => got.filter((c) => "id" in c && c.id === id).length >= 2);
      expect(got.filter((c) => "id" in c && c.id === id)).toEqual([
        { op: "session", id, record: rec() },
        { op: "close", id },
      ]);
    });

    it("skips foreign values in scans and bad messages on the channel", async () => {
      const bad: string[] = [];
      const badChanges: Error[] = [];
      const reg = new RedisRegistry({ ...store.connection!(), onBadChange: (e) => badChanges.push(e) });
      open.push(reg);
      const r = raw();
      const key = `mcp:session:${sid("garbage")}`;
      await r.set(key, "not json");
      const got: RegistryChange[] = [];
      await reg.subscribe((c) => got.push(c));
      await r.publish(CHANGE_CHANNEL, "{broken");
      const id = sid("good");
      await reg.registerSession(id, rec());
      for await (const _ of reg.scanSessions({ onInvalid: (k) => bad.push(k) })) {
        /* drain */
      }
      expect(bad).toContain(key);
      await waitUntil("session change received", () => got.some((c) => c.op === "session" && c.id === id));
      expect(badChanges.length).toBe(1);
      await r.del(key);
    });
  }
});

describe("redis registry: outage", () => {
  it("fails fast with a code while Redis is down, reports status, and resumes (subscription too) after", async () => {
    const own = await startRedis();
    const errors: string[] = [];
    const reg = new RedisRegistry({ url: own.url, maxBackoffMs: 100, onError: (op) => errors.push(op) });
    const statuses: string[] = [];
    reg.onStatus((s) => statuses.push(s));
    const got: RegistryChange[] = [];
    try {
      await reg.subscribe((c) => got.push(c));
      await waitUntil("registry ready", () => reg.status() === "ready");
      await own.stop(true);
      await waitUntil("registry down", () => reg.status() === "down");
      // Fails fast: the call is refused before the client's next reconnection attempt ends (every
      // attempt while Redis is down is one "connect" error, at most maxBackoffMs apart), so it was
      // not queued until a reconnection or a timeout.
      const connectErrors = () => errors.filter((op) => op === "connect").length;
      const attemptsBefore = connectErrors();
      await expect(reg.registerSession("during-outage", rec())).rejects.toMatchObject({
        code: "ERR_REGISTRY_UNAVAILABLE",
        op: "register",
      });
      expect(connectErrors()).toBe(attemptsBefore);
      expect(errors.at(-1)).toBe("register");
      // The attempts go on: had the call waited, they would have been counted in between.
      await waitUntil("another reconnection attempt", () => connectErrors() > attemptsBefore);
      await own.start();
      await waitUntil("registry ready", () => reg.status() === "ready", 5000);
      expect(statuses).toEqual(expect.arrayContaining(["down", "ready"]));
      await waitUntil(
        "after-outage registered and announced",
        async () => {
          await reg.registerSession("after-outage", rec()).catch(() => undefined);
          return got.some((c) => c.op === "session" && c.id === "after-outage");
        },
        5000,
      );
    } finally {
      await reg.close();
      await own.close();
    }
  });

  it("can be created while Redis is down and connects once it is up", async () => {
    const own = await startRedis();
    await own.stop(true);
    const reg = new RedisRegistry({ url: own.url, maxBackoffMs: 100, connectTimeoutMs: 300 });
    try {
      await expect(reg.lookupSession("x")).rejects.toMatchObject({ code: "ERR_REGISTRY_UNAVAILABLE" });
      expect(reg.status()).not.toBe("ready");
      await own.start();
      await waitUntil("registry ready", () => reg.status() === "ready", 5000);
      expect(await reg.registerSession("late", rec())).toBe(true);
    } finally {
      await reg.close();
      await own.close();
    }
  });
});

// The part a node uses (SessionStore), over both stores the node library opens: Redis with the
// node's settings, and the sidecar's sessions API served by a real sidecar (on that Redis).
describe("session store contract (what a node uses)", () => {
  const TOKEN = "contract-token-0123456789";
  let sidecar: Sidecar;
  let dir: string;
  const open: SessionStore[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mcpa-contract-"));
    sidecar = await startSidecar(
      { dir, port: 0, redisUrl: redis.url, apiToken: TOKEN, probePath: "off" },
      { logger: pino({ level: "silent" }) },
    );
  });
  afterAll(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
    await sidecar?.close();
    await rm(dir, { recursive: true, force: true });
  });
  const settings = nodeSettings();
  const stores: Array<{ name: string; make: (token?: string) => SessionStore; raw: () => Redis }> = [
    {
      name: "redis",
      make: () => openNodeRegistry({ redisUrl: redis.url }, settings).sessions,
      raw: () => new Redis(redis.url),
    },
    {
      name: "redis, TLS + ACL user",
      make: () => openNodeRegistry(secured().single.library, settings).sessions,
      raw: () => new Redis(secure.clientOptions),
    },
    {
      name: "sidecar sessions API",
      make: (token = TOKEN) => openNodeRegistry({ sidecarUrl: sidecar.url, token }, settings).sessions,
      raw: () => new Redis(redis.url),
    },
  ];

  describe.each(stores)("$name", (store) => {
    const make = (token?: string) => {
      const s = store.make(token);
      open.push(s);
      return s;
    };

    it("registers, looks up, renews and closes a session, and says whether one existed", async () => {
      const s = make();
      await waitUntil("store ready", () => s.status() === "ready");
      const id = sid("node-store");
      expect(await s.lookupSession(id)).toBeNull();
      expect(await s.registerSession(id, rec())).toBe(true);
      expect(await s.lookupSession(id)).toMatchObject({
        node: URL_A,
        cookie: cookieValueFor(URL_A),
        boot: "boot-1",
        source: "node",
      });
      expect(await s.touchSession(id, rec())).toBe(true);
      const r = store.raw();
      try {
        expect(await r.pttl(`mcp:session:${id}`)).toBeGreaterThan(DEFAULT_SESSION_TTL_MS - 60_000);
      } finally {
        r.disconnect();
      }
      expect(await s.closeSession(id)).toBe(true);
      expect(await s.lookupSession(id)).toBeNull();
      expect(await s.closeSession(id)).toBe(false);
    });

    it("fails with a code after close, and reports closed", async () => {
      const s = make();
      await s.close();
      expect(s.status()).toBe("closed");
      await expect(s.registerSession(sid("closed"), rec())).rejects.toMatchObject({ code: "ERR_REGISTRY_CLOSED" });
    });
  });

  it("a refused call of the sessions API is an ERR_REGISTRY_SIDECAR_API error", async () => {
    const s = stores.find((x) => x.name === "sidecar sessions API")!.make("wrong-token-0123456789");
    open.push(s);
    await expect(s.registerSession(sid("refused"), rec())).rejects.toMatchObject({
      code: "ERR_REGISTRY_SIDECAR_API",
      op: "register",
    });
    await expect(s.lookupSession(sid("refused"))).rejects.toMatchObject({
      code: "ERR_REGISTRY_SIDECAR_API",
      op: "lookup",
    });
  });

  it("node heartbeats come only with Redis (the sessions API keeps no node records)", () => {
    const redisStores = openNodeRegistry({ redisUrl: redis.url }, settings);
    const apiStores = openNodeRegistry({ sidecarUrl: sidecar.url, token: TOKEN }, settings);
    open.push(redisStores.sessions, apiStores.sessions);
    expect(redisStores.nodes).toBe(redisStores.sessions);
    expect(apiStores.nodes).toBeNull();
  });
});
