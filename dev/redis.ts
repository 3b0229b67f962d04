// A real redis-server for the local stack and the tests: started on a free loopback port, stopped
// after. Supports stopping and restarting on the same port (outage tests), a one-node Cluster (all
// slots on one server) and a Sentinel, each with TLS only (a CA from dev/tls.ts) and ACL users
// (the default user switched off), as managed Redis services run them.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./net.ts";
import { GiveUp, waitUntil } from "./poll.ts";
import type { TestCa } from "./tls.ts";
import type { RedisOptions } from "ioredis";

export const REDIS_SERVER = process.env.REDIS_SERVER ?? "/usr/bin/redis-server";

/** How the helper reaches a secured server: TLS (trusting `ca`) and an ACL user. */
export interface RedisAccess {
  tls?: { ca: string };
  user?: string;
  password?: string;
}

/** Sends one inline command (after AUTH when `access` names a user) and returns the first reply line. */
export async function redisCommand(
  port: number,
  command: string,
  timeoutMs = 1000,
  access: RedisAccess = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const auth = access.password === undefined ? "" : `AUTH ${access.user ?? "default"} ${access.password}\r\n`;
    const request = auth + command + "\r\n";
    const sock: Socket = access.tls
      ? tlsConnect({ port, host: "127.0.0.1", ca: access.tls.ca }, () => sock.write(request))
      : new Socket();
    let buf = "";
    let skip = auth ? 1 : 0;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error("redis command timed out"));
    }, timeoutMs);
    sock.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on("data", (d) => {
      buf += d.toString();
      // The AUTH reply first (a simple line), then the command's.
      while (skip > 0) {
        const eol = buf.indexOf("\r\n");
        if (eol < 0) return;
        if (buf.startsWith("-")) {
          clearTimeout(timer);
          sock.destroy();
          return reject(new Error(`redis AUTH refused: ${buf.slice(0, eol)}`));
        }
        buf = buf.slice(eol + 2);
        skip--;
      }
      const eol = buf.indexOf("\r\n");
      if (eol < 0) return;
      const first = buf.slice(0, eol);
      let reply: string | null = first;
      if (first.startsWith("$")) {
        // Bulk string: wait for its body.
        const len = Number(first.slice(1));
        reply = len < 0 ? "" : buf.length >= eol + 2 + len ? buf.slice(eol + 2, eol + 2 + len) : null;
      }
      if (reply === null) return;
      clearTimeout(timer);
      sock.destroy();
      resolve(reply);
    });
    if (!access.tls) sock.connect(port, "127.0.0.1", () => sock.write(request));
  });
}

/** An ACL user a test server gets at start. */
export interface AclUser {
  user: string;
  password: string;
  /** ACL rules after `reset on >password` (keys, channels, commands). */
  rules: string;
}

/**
 * What the registry (lib/registry/redis.ts) needs, and nothing more: its keys and its change
 * channel; the commands it sends (its Lua scripts run with the same rights: GET, SET, DEL,
 * PUBLISH); what ioredis sends on connecting (INFO: the ready check; SELECT for a /db in the URL;
 * in Cluster mode CLUSTER SLOTS, CLUSTER INFO and CLIENT SETNAME). docs/redis.md prints it.
 */
export const REGISTRY_ACL =
  "resetkeys ~mcp:* resetchannels &mcp:affinity:changes -@all " +
  "+get +set +del +pexpire +mget +scan +evalsha +eval +publish +subscribe " +
  "+info +select +quit +cluster|slots +cluster|info +client|setname";

/** What a Sentinel needs on the master it monitors (Redis's Sentinel documentation). */
export const SENTINEL_ACL =
  "allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill";

export interface StartRedisOptions {
  /** One-node Cluster: cluster-enabled, every slot assigned to this server. */
  cluster?: boolean;
  port?: number;
  /** TLS only (no plain port), with this CA's server certificate; the url is rediss://. */
  tls?: TestCa;
  /** ACL users to create at every start; the default user is then switched off. */
  users?: AclUser[];
  /**
   * A replica of the server on this port at its first start (Sentinel groups). A later start comes
   * up as a master, as Sentinel leaves a promoted replica's configuration (it rewrites the file);
   * the Sentinels make it a replica again when another master is known.
   */
  replicaOf?: number;
  /**
   * A member of a multi-node Cluster (startRedisCluster): no slots assigned here, this node
   * timeout, and the same nodes.conf at every start, so a restarted server rejoins as itself.
   */
  clusterMember?: { nodeTimeoutMs: number };
}

export interface TestRedis {
  port: number;
  /** redis:// or rediss:// (never with credentials). */
  url: string;
  /** How the helper reaches it: TLS and, with ACL users, an admin user of its own. */
  access: RedisAccess;
  /** ioredis options of a client with every right (a test's assertions). */
  clientOptions: RedisOptions;
  /** Stops the server (SIGKILL when `hard`); data is lost (no persistence). */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
  running(): boolean;
}

function tlsArgs(tls: TestCa): string[] {
  return [
    "--tls-cert-file",
    tls.certFile,
    "--tls-key-file",
    tls.keyFile,
    "--tls-ca-cert-file",
    tls.caFile,
    "--tls-auth-clients",
    "no",
  ];
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<TestRedis> {
  if (!existsSync(REDIS_SERVER)) {
    throw Object.assign(
      new Error(
        `redis-server not found at ${REDIS_SERVER}: install it (Debian/Ubuntu: sudo apt-get install -y redis-server) or set REDIS_SERVER`,
      ),
      { code: "ERR_NO_REDIS" },
    );
  }
  const port = opts.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), "mcpa-redis-"));
  let child: ChildProcess | null = null;
  const tls = opts.tls ? { ca: readFileSync(opts.tls.caFile, "utf8") } : undefined;
  const admin = opts.users?.length ? { user: "mcpa-admin", password: randomBytes(12).toString("hex") } : undefined;
  const access: RedisAccess = { tls, ...admin };
  let starts = 0;

  const start = async () => {
    const args = [
      ...(opts.tls ? ["--port", "0", "--tls-port", String(port), ...tlsArgs(opts.tls)] : ["--port", String(port)]),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      "--loglevel",
      "warning",
    ];
    if (opts.replicaOf !== undefined && starts++ === 0) args.push("--replicaof", "127.0.0.1", String(opts.replicaOf));
    if (opts.clusterMember || opts.cluster)
      args.push(
        "--cluster-enabled",
        "yes",
        "--cluster-announce-ip",
        "127.0.0.1",
        "--cluster-config-file",
        // A member rejoins as itself after a restart (the same file); a one-node Cluster starts afresh.
        join(dir, opts.clusterMember ? "nodes.conf" : `nodes-${Date.now()}.conf`),
        ...(opts.clusterMember ? ["--cluster-node-timeout", String(opts.clusterMember.nodeTimeoutMs)] : []),
        ...(opts.tls ? ["--tls-cluster", "yes"] : []),
      );
    const c = spawn(REDIS_SERVER, args, { stdio: ["ignore", "ignore", "pipe"] });
    child = c;
    let stderr = "";
    c.stderr?.on("data", (d) => (stderr += d));
    await waitUntil(
      `redis-server to answer PING on ${port}`,
      async () => {
        if (c.exitCode !== null) throw new GiveUp(`redis-server exited (${c.exitCode}): ${stderr}`);
        return (await redisCommand(port, "PING", 1000, { tls })) === "+PONG";
      },
      10_000,
      25,
    );
    if (admin) {
      // The users exist only in memory: every start (a restart too) creates them again.
      const set = async (rules: string) => {
        const r = await redisCommand(port, `ACL SETUSER ${rules}`, 1000, { tls });
        if (r !== "+OK") throw new Error(`ACL SETUSER ${rules.split(" ")[0]}: ${r}`);
      };
      await set(`${admin.user} reset on >${admin.password} ~* &* +@all`);
      for (const u of opts.users!) await set(`${u.user} reset on >${u.password} ${u.rules}`);
      await set("default off");
    }
    if (opts.cluster) {
      await redisCommand(port, "CLUSTER ADDSLOTSRANGE 0 16383", 1000, access);
      await waitUntil(
        "the one-node cluster to reach state ok",
        async () => (await redisCommand(port, "CLUSTER INFO", 1000, access)).includes("cluster_state:ok"),
        10_000,
        50,
      );
    }
  };

  const stop = async (hard = false) => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise<void>((r) => c.once("exit", () => r()));
    c.kill(hard ? "SIGKILL" : "SIGTERM");
    await exited;
  };

  await start();
  return {
    port,
    url: `${opts.tls ? "rediss" : "redis"}://127.0.0.1:${port}`,
    access,
    clientOptions: { host: "127.0.0.1", port, tls, username: admin?.user, password: admin?.password },
    stop,
    start,
    async close() {
      await stop(true);
      await rm(dir, { recursive: true, force: true });
    },
    running: () => child !== null && child.exitCode === null,
  };
}

/** The users of a Redis run as managed services run it: the registry's, and the Sentinels' on the master. */
export const MANAGED = {
  app: { user: "mcp-affinity", password: "app-secret-7f3a9c" },
  sentinelUser: { user: "sentinel", password: "sentinel-user-secret" },
  /** The Sentinels' own password (requirepass). */
  sentinelPassword: "sentinel-secret-51be",
};

/** A TLS-only server (or one-node Cluster) with the MANAGED users and the default user off. */
export function startManagedRedis(tls: TestCa, opts: { cluster?: boolean } = {}): Promise<TestRedis> {
  const users = [
    { ...MANAGED.app, rules: REGISTRY_ACL },
    { ...MANAGED.sentinelUser, rules: SENTINEL_ACL },
  ];
  return startRedis({ ...opts, tls, users });
}

/** A TLS-only Sentinel of such a server, with the MANAGED Sentinel password and user. */
export function startManagedSentinel(masterPort: number, tls: TestCa): Promise<TestSentinel> {
  return startSentinel(masterPort, { tls, masterUser: MANAGED.sentinelUser, password: MANAGED.sentinelPassword });
}

export interface TestSentinel {
  port: number;
  masterName: string;
  close(): Promise<void>;
}

export interface StartSentinelOptions {
  masterName?: string;
  /** TLS only, to clients and to the master. */
  tls?: TestCa;
  /** The ACL user it authenticates as on the master (SENTINEL_ACL). */
  masterUser?: { user: string; password: string };
  /** Its own password (requirepass): what clients give as the Sentinel password. */
  password?: string;
  /** Sentinels that must agree the master is down (default 1). */
  quorum?: number;
  /** How long the master must not answer before it counts as down (Redis's default: 30 s). */
  downAfterMs?: number;
  failoverTimeoutMs?: number;
}

/** A Sentinel monitoring `masterPort` (quorum 1), for the Sentinel runs of the contract suite. */
export async function startSentinel(masterPort: number, opts: StartSentinelOptions = {}): Promise<TestSentinel> {
  const { writeFile } = await import("node:fs/promises");
  const masterName = opts.masterName ?? "mcpa";
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "mcpa-sentinel-"));
  const conf = join(dir, "sentinel.conf");
  const tlsConf = opts.tls
    ? [
        "port 0",
        `tls-port ${port}`,
        `tls-cert-file ${opts.tls.certFile}`,
        `tls-key-file ${opts.tls.keyFile}`,
        `tls-ca-cert-file ${opts.tls.caFile}`,
        "tls-auth-clients no",
        "tls-replication yes",
      ]
    : [`port ${port}`];
  await writeFile(
    conf,
    [
      ...tlsConf,
      "bind 127.0.0.1",
      `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${opts.quorum ?? 1}`,
      ...(opts.downAfterMs ? [`sentinel down-after-milliseconds ${masterName} ${opts.downAfterMs}`] : []),
      ...(opts.failoverTimeoutMs ? [`sentinel failover-timeout ${masterName} ${opts.failoverTimeoutMs}`] : []),
      ...(opts.masterUser
        ? [
            `sentinel auth-user ${masterName} ${opts.masterUser.user}`,
            `sentinel auth-pass ${masterName} ${opts.masterUser.password}`,
          ]
        : []),
      ...(opts.password ? [`requirepass ${opts.password}`] : []),
      "",
    ].join("\n"),
  );
  const access: RedisAccess = {
    tls: opts.tls ? { ca: readFileSync(opts.tls.caFile, "utf8") } : undefined,
    password: opts.password,
  };
  const c = spawn(REDIS_SERVER, [conf, "--sentinel", "--loglevel", "warning"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  c.stderr?.on("data", (d) => (stderr += d));
  await waitUntil(
    `redis sentinel to start on ${port}`,
    async () => {
      if (c.exitCode !== null) throw new GiveUp(`redis sentinel exited (${c.exitCode}): ${stderr}`);
      return (await redisCommand(port, `SENTINEL get-master-addr-by-name ${masterName}`, 1000, access)).startsWith(
        "*2",
      );
    },
    10_000,
    25,
  );
  return {
    port,
    masterName,
    async close() {
      if (c.exitCode === null) {
        const exited = new Promise<void>((r) => c.once("exit", () => r()));
        c.kill("SIGKILL");
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A Sentinel group: a master, one replica and three Sentinels (quorum 2), as a failover needs. */
export interface SentinelGroup {
  servers: TestRedis[];
  sentinels: TestSentinel[];
  masterName: string;
  /** The port the Sentinels name as the master now. */
  masterPort(): Promise<number>;
  /** The sidecar's and the reference node's Redis flags for this group. */
  flags: string[];
  close(): Promise<void>;
}

/** Master + replica + 3 Sentinels, plain TCP, timings short enough for a test (down after `downAfterMs`). */
export async function startSentinelGroup(o: {
  downAfterMs: number;
  failoverTimeoutMs: number;
}): Promise<SentinelGroup> {
  const master = await startRedis();
  const replica = await startRedis({ replicaOf: master.port });
  await waitUntil("the replica to sync", () => replicaInSync(replica.port), 10_000, 50);
  const sentinels = await Promise.all(
    [0, 1, 2].map(() =>
      startSentinel(master.port, { quorum: 2, downAfterMs: o.downAfterMs, failoverTimeoutMs: o.failoverTimeoutMs }),
    ),
  );
  const masterName = sentinels[0]!.masterName;
  return {
    servers: [master, replica],
    sentinels,
    masterName,
    async masterPort() {
      // INFO sentinel: "master0:name=<name>,status=ok,address=127.0.0.1:<port>,...".
      for (const s of sentinels) {
        try {
          const m = /address=[^:,]+:(\d+)/.exec(await redisCommand(s.port, "INFO sentinel"));
          if (m) return Number(m[1]);
        } catch {
          /* the next Sentinel */
        }
      }
      throw new Error("no Sentinel answers");
    },
    flags: [
      "--redis-sentinels",
      sentinels.map((s) => `127.0.0.1:${s.port}`).join(","),
      "--redis-sentinel-name",
      masterName,
    ],
    async close() {
      await Promise.all(sentinels.map((s) => s.close()));
      await Promise.all([master.close(), replica.close()]);
    },
  };
}

async function replicaInSync(port: number): Promise<boolean> {
  const info = await redisCommand(port, "INFO replication");
  return /master_link_status:up/.test(info);
}

/** A Cluster of `masters` masters with one replica each. */
export interface TestCluster {
  /** masters first (in slot order), then their replicas in the same order. */
  servers: TestRedis[];
  /** The sidecar's and the reference node's Redis flags (seed nodes). */
  flags: string[];
  /** The server's role now, from its own INFO. */
  role(server: TestRedis): Promise<"master" | "slave" | null>;
  /** Waits until every slot is served (cluster_state:ok on every running server). */
  waitOk(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export async function startRedisCluster(o: { masters: number; nodeTimeoutMs: number }): Promise<TestCluster> {
  const servers = await Promise.all(
    Array.from({ length: 2 * o.masters }, () => startRedis({ clusterMember: { nodeTimeoutMs: o.nodeTimeoutMs } })),
  );
  const [first] = servers;
  for (const s of servers.slice(1)) await redisCommand(first!.port, `CLUSTER MEET 127.0.0.1 ${s.port}`);
  const per = Math.floor(16384 / o.masters);
  for (let i = 0; i < o.masters; i++) {
    const from = i * per;
    const to = i === o.masters - 1 ? 16383 : from + per - 1;
    const r = await redisCommand(servers[i]!.port, `CLUSTER ADDSLOTSRANGE ${from} ${to}`);
    if (r !== "+OK") throw new Error(`CLUSTER ADDSLOTSRANGE: ${r}`);
  }
  const ids = await Promise.all(servers.map((s) => redisCommand(s.port, "CLUSTER MYID")));
  const role = async (s: TestRedis) => {
    try {
      return /role:(master|slave)/.exec(await redisCommand(s.port, "INFO replication"))?.[1] as "master" | "slave";
    } catch {
      return null;
    }
  };
  const waitOk = async (timeoutMs: number): Promise<void> => {
    await waitUntil(
      "every running Cluster server in state ok",
      async () => {
        for (const s of servers.filter((x) => x.running()))
          if (!(await redisCommand(s.port, "CLUSTER INFO")).includes("cluster_state:ok")) return false;
        return true;
      },
      timeoutMs,
      100,
    );
  };
  for (let i = 0; i < o.masters; i++) {
    const replica = servers[o.masters + i]!;
    // The replica must know the master's id first (gossip after MEET).
    await waitUntil(
      "the Cluster's gossip to reach every server",
      async () => (await redisCommand(replica.port, "CLUSTER NODES")).includes(ids[i]!),
      10_000,
      50,
    );
    const r = await redisCommand(replica.port, `CLUSTER REPLICATE ${ids[i]}`);
    if (r !== "+OK") throw new Error(`CLUSTER REPLICATE: ${r}`);
  }
  await waitOk(20_000);
  await waitUntil(
    "every replica in sync",
    async () => (await Promise.all(servers.slice(o.masters).map((s) => replicaInSync(s.port)))).every(Boolean),
    20_000,
    100,
  );
  return {
    servers,
    flags: ["--redis-cluster", servers.map((s) => `127.0.0.1:${s.port}`).join(",")],
    role,
    waitOk,
    async close() {
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}
