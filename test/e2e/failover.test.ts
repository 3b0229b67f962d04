// Redis fails over under load, end to end through the real Traefik: a Sentinel group (master,
// replica, 3 Sentinels) and a 3-master/3-replica Cluster, both from Debian's redis-server. Three
// nodes: a reference node on Redis directly, a reference node on the sidecar's sessions API, and
// the Python SDK server without the library (its sessions learned at the edge). The official
// TypeScript client keeps sessions calling every 200 ms and opens a new one every 500 ms; the
// Python SDK client runs sessions of its own. Then a master is SIGKILLed (its replica promoted),
// and later the master is restarted empty. Asserted: no failed call, no lost session, no failed
// new session, no edge 404/503, and every live session's record back in Redis within a bound
// derived from the writers' timings.
import { afterEach, describe, expect, it } from "vitest";
import { Cluster, Redis } from "ioredis";
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_MAX_BACKOFF_MS,
  SESSION_KEY_PREFIX,
  sessionKey,
} from "../../lib/registry/index.ts";
import { RETRY_MS } from "../../node/src/sessions.ts";
import { startRedisCluster, startSentinelGroup, type TestRedis } from "../../dev/redis.ts";
import { startStack, type Stack } from "../../dev/stack.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { connectSdk, newTally, report, runSdkClientProcess, type ClientEvent, type SdkSession } from "./helpers.ts";

/** The sidecar's --loss-check-interval default. */
const SIDECAR_LOSS_CHECK_MS = 2000;
/**
 * Every live record is back this long after the new master serves: the sidecar reconnects within
 * its backoff cap and checks at once (then every loss-check interval); a node on Redis within its
 * own, shorter cap and at each heartbeat; a node on the sessions API retries a registration the
 * sidecar refused during the outage at its next RETRY_MS tick after RETRY_MS; each then writes
 * with one command (bounded by the command timeout).
 */
const RECORDS_BACK_MS =
  Math.max(DEFAULT_MAX_BACKOFF_MS + SIDECAR_LOSS_CHECK_MS, 2 * RETRY_MS) + DEFAULT_COMMAND_TIMEOUT_MS;
const STEADY_SESSIONS = 10;
const PYTHON_SESSIONS = 6;

interface Load {
  steady: SdkSession[];
  fresh: SdkSession[];
  failedCalls: string[];
  failedNew: string[];
  calls: number;
  stop(): Promise<void>;
}

/** Steady sessions calling every 200 ms, and a new session every 500 ms (one call, then idle). */
async function startLoad(url: string): Promise<Load> {
  const tally = newTally();
  const steady = await Promise.all(Array.from({ length: STEADY_SESSIONS }, () => connectSdk(url, tally)));
  const load: Load = { steady, fresh: [], failedCalls: [], failedNew: [], calls: 0, stop: async () => {} };
  let running = true;
  const loops = steady.map(async (s, i) => {
    let expected = 1;
    while (running) {
      try {
        const v = Number(await s.call("counter"));
        load.calls++;
        if (v !== expected) load.failedCalls.push(`steady ${i}: counter ${v}, expected ${expected} (session lost)`);
        expected = v + 1;
      } catch (err) {
        load.failedCalls.push(`steady ${i}: ${(err as Error).message}`);
      }
      await sleep(200);
    }
  });
  const fresh = (async () => {
    while (running) {
      try {
        const s = await connectSdk(url, tally);
        if (Number(await s.call("counter")) !== 1) load.failedNew.push("new session: first counter not 1");
        load.fresh.push(s);
      } catch (err) {
        load.failedNew.push(`new session: ${(err as Error).message}`);
      }
      await sleep(500);
    }
  })();
  load.stop = async () => {
    running = false;
    await Promise.all([...loops, fresh]);
  };
  return load;
}

/** The ids of every session record in Redis (every master). */
async function recordIds(client: Redis | Cluster): Promise<Set<string>> {
  const ids = new Set<string>();
  const masters = client instanceof Cluster ? client.nodes("master") : [client];
  for (const m of masters) {
    let cursor = "0";
    do {
      const [next, keys] = await m.scan(cursor, "MATCH", `${SESSION_KEY_PREFIX}*`, "COUNT", 1000);
      cursor = next;
      for (const k of keys) ids.add(k.slice(SESSION_KEY_PREFIX.length));
    } while (cursor !== "0");
  }
  return ids;
}

/** Waits until every id has its record; returns how long it took (ms). */
async function recordsBack(client: Redis | Cluster, ids: string[], from: number): Promise<number> {
  let left = ids.length;
  try {
    await waitUntil(
      `${ids.length} session records back`,
      async () => {
        const present = await Promise.all(ids.map((id) => client.exists(sessionKey(id)).catch(() => 0)));
        left = present.filter((p) => p !== 1).length;
        return left === 0;
      },
      RECORDS_BACK_MS - (Date.now() - from),
      100,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${left} of ${ids.length} still missing`, { cause: err });
  }
  return Date.now() - from;
}

/** Edge answers (no node involved) of 404 or 503 on /mcp, over every replica's access log. */
function edgeRefusals(stack: Stack): string[] {
  return stack.replicas.flatMap((r) =>
    r
      .accessLog()
      .filter((row) => (row.RouterName ?? "").includes("mcp") && !row.OriginStatus)
      .filter((row) => row.DownstreamStatus === 404 || row.DownstreamStatus === 503)
      .map((row) => `${r.name} ${row.StartUTC} ${row.RequestMethod} ${row.DownstreamStatus}`),
  );
}

interface Topology {
  flags: string[];
  client(): Redis | Cluster;
  /** SIGKILLs a master holding live sessions; resolves once its replica serves as master. */
  killMaster(): Promise<{ killed: TestRedis; heldRecords: number }>;
  /** The master holding live sessions now, restarted empty (faster than a failover would start). */
  restartEmpty(): Promise<{ heldRecords: number }>;
  close(): Promise<void>;
}

async function sentinelTopology(): Promise<Topology> {
  const g = await startSentinelGroup({ downAfterMs: 2000, failoverTimeoutMs: 4000 });
  const [a, b] = g.servers as [TestRedis, TestRedis];
  const byPort = (port: number) => (port === a.port ? a : b);
  const sentinels = g.sentinels.map((s) => ({ host: "127.0.0.1", port: s.port }));
  const clients: Redis[] = [];
  return {
    flags: g.flags,
    client() {
      const c = new Redis({ sentinels, name: g.masterName, maxRetriesPerRequest: 1 });
      c.on("error", () => undefined);
      clients.push(c);
      return c;
    },
    async killMaster() {
      const old = byPort(await g.masterPort());
      const heldRecords = (await recordIds(clients[0]!)).size;
      await old.stop(true);
      await waitUntil(
        "the Sentinels to promote the replica",
        async () => (await g.masterPort()) !== old.port,
        30_000,
        50,
      );
      return { killed: old, heldRecords };
    },
    async restartEmpty() {
      const master = byPort(await g.masterPort());
      const heldRecords = (await recordIds(clients[0]!)).size;
      await master.stop(true);
      await master.start();
      return { heldRecords };
    },
    async close() {
      for (const c of clients) c.disconnect();
      await g.close();
    },
  };
}

async function clusterTopology(): Promise<Topology> {
  const c = await startRedisCluster({ masters: 3, nodeTimeoutMs: 2000 });
  const clients: Cluster[] = [];
  const heldBy = async (s: TestRedis) => {
    const r = new Redis(s.port, "127.0.0.1");
    try {
      return (await recordIds(r)).size;
    } finally {
      r.disconnect();
    }
  };
  let promoted: TestRedis | null = null;
  return {
    flags: c.flags,
    client() {
      const cl = new Cluster(
        c.servers.map((s) => ({ host: "127.0.0.1", port: s.port })),
        { redisOptions: { maxRetriesPerRequest: 1 } },
      );
      cl.on("error", () => undefined);
      clients.push(cl);
      return cl;
    },
    async killMaster() {
      const [master] = c.servers;
      const replica = c.servers[3]!;
      const heldRecords = await heldBy(master!);
      await master!.stop(true);
      await waitUntil(
        "the Cluster to promote the replica",
        async () => (await c.role(replica)) === "master",
        30_000,
        50,
      );
      await c.waitOk(30_000);
      promoted = replica;
      return { killed: master!, heldRecords };
    },
    async restartEmpty() {
      const master = promoted ?? c.servers[0]!;
      const heldRecords = await heldBy(master);
      await master.stop(true);
      await master.start();
      await c.waitOk(30_000);
      return { heldRecords };
    },
    async close() {
      for (const cl of clients) cl.disconnect();
      await c.close();
    },
  };
}

let cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => undefined);
  cleanup = [];
});

describe("Redis fails over under load", () => {
  for (const kind of ["sentinel", "cluster"] as const) {
    it(`${kind}: a master killed, then restarted empty: nothing fails, nothing is lost, every record comes back`, async () => {
      const topo = kind === "sentinel" ? await sentinelTopology() : await clusterTopology();
      cleanup.push(() => topo.close());
      const stack = await startStack({
        name: `failover-${kind}`,
        nodes: 3,
        nodeKinds: ["reference", "reference", "python"],
        onSessionsApi: (i) => i === 1,
        redisFlags: topo.flags,
      });
      cleanup.push(() => stack.stop());
      const raw = topo.client();
      const t0 = Date.now();
      const load = await startLoad(stack.mcpUrl);
      const python: ClientEvent[] = [];
      // 300 calls 200 ms apart outlast the scenario: its sessions stay live until the checks are done.
      const pythonRun = runSdkClientProcess(
        "py",
        { go: "", rust: "" },
        stack.mcpUrl,
        { sessions: PYTHON_SESSIONS, calls: 300, pauseMs: 200 },
        python,
      );
      await sleep(4000);

      // 1. A master SIGKILLed; its replica promoted.
      const before = await recordIds(raw);
      const liveIds = () => [...new Set([...before, ...[...load.steady, ...load.fresh].map((s) => s.sessionId)])];
      const { killed, heldRecords: heldAtKill } = await topo.killMaster();
      const promotedAt = Date.now();
      const afterKill = liveIds();
      const backAfterKillMs = await recordsBack(raw, afterKill, promotedAt);
      await killed.start(); // back as a replica of the new master

      // 2. The master holding the sessions restarted empty.
      await sleep(2000);
      const restart = await topo.restartEmpty();
      const restartedAt = Date.now();
      const afterRestart = liveIds();
      const backAfterRestartMs = await recordsBack(raw, afterRestart, restartedAt);
      await sleep(1000);
      await load.stop();
      const events = await pythonRun;

      const pythonErrors = events.filter((e) => e.error).map((e) => `${e.s} ${e.ev}: ${e.error}`);
      const pythonSessions = new Set(events.filter((e) => e.ev === "init" && !e.error).map((e) => e.s));
      report(`failover ${kind}`, {
        seconds: Math.round((Date.now() - t0) / 1000),
        tsCalls: load.calls,
        tsNewSessions: load.fresh.length,
        pythonCalls: events.filter((e) => e.ev === "call").length,
        recordsBeforeKill: before.size,
        heldByKilledMaster: heldAtKill,
        liveAfterKill: afterKill.length,
        backAfterPromotionMs: backAfterKillMs,
        heldByRestartedMaster: restart.heldRecords,
        liveAtRestart: afterRestart.length,
        backAfterRestartMs: backAfterRestartMs,
        boundMs: RECORDS_BACK_MS,
      });
      expect(load.failedCalls).toEqual([]);
      expect(load.failedNew).toEqual([]);
      expect(pythonErrors).toEqual([]);
      expect(pythonSessions.size).toBe(PYTHON_SESSIONS);
      expect(edgeRefusals(stack)).toEqual([]);
      // The Python sessions' records were among those before the kill (learned at the edge).
      expect(before.size).toBeGreaterThanOrEqual(STEADY_SESSIONS + PYTHON_SESSIONS);
      expect(heldAtKill).toBeGreaterThan(0);
      expect(restart.heldRecords).toBeGreaterThan(0);
      for (const s of [...load.steady, ...load.fresh]) await s.end();
    }, 240_000);
  }
});
