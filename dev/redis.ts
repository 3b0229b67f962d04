// A real redis-server for the local stack and the tests: started on a free loopback port, stopped
// after. Supports stopping and restarting on the same port (outage tests), a one-node Cluster (all
// slots on one server) and a Sentinel.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./net.ts";
import { GiveUp, waitUntil } from "./poll.ts";

export const REDIS_SERVER = process.env.REDIS_SERVER ?? "/usr/bin/redis-server";

/** Sends one inline command and returns the first reply line. */
export async function redisCommand(port: number, command: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = new Socket();
    let buf = "";
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
    sock.connect(port, "127.0.0.1", () => sock.write(command + "\r\n"));
  });
}

export interface TestRedis {
  port: number;
  url: string;
  /** Stops the server (SIGKILL when `hard`); data is lost (no persistence). */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
  running(): boolean;
}

export interface StartRedisOptions {
  /** One-node Cluster: cluster-enabled, every slot assigned to this server. */
  cluster?: boolean;
  port?: number;
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

  const start = async () => {
    const args = [
      "--port",
      String(port),
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
    if (opts.cluster)
      args.push(
        "--cluster-enabled",
        "yes",
        "--cluster-announce-ip",
        "127.0.0.1",
        "--cluster-config-file",
        join(dir, `nodes-${Date.now()}.conf`),
      );
    const c = spawn(REDIS_SERVER, args, { stdio: ["ignore", "ignore", "pipe"] });
    child = c;
    let stderr = "";
    c.stderr?.on("data", (d) => (stderr += d));
    await waitUntil(
      `redis-server to answer PING on ${port}`,
      async () => {
        if (c.exitCode !== null) throw new GiveUp(`redis-server exited (${c.exitCode}): ${stderr}`);
        return (await redisCommand(port, "PING")) === "+PONG";
      },
      10_000,
      25,
    );
    if (opts.cluster) {
      await redisCommand(port, "CLUSTER ADDSLOTSRANGE 0 16383");
      await waitUntil(
        "the one-node cluster to reach state ok",
        async () => (await redisCommand(port, "CLUSTER INFO")).includes("cluster_state:ok"),
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
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    async close() {
      await stop(true);
      await rm(dir, { recursive: true, force: true });
    },
    running: () => child !== null && child.exitCode === null,
  };
}

export interface TestSentinel {
  port: number;
  masterName: string;
  close(): Promise<void>;
}

/** A Sentinel monitoring `masterPort` (quorum 1), for the Sentinel run of the contract suite. */
export async function startSentinel(masterPort: number, masterName = "mcpa"): Promise<TestSentinel> {
  const { writeFile } = await import("node:fs/promises");
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "mcpa-sentinel-"));
  const conf = join(dir, "sentinel.conf");
  await writeFile(
    conf,
    [
      `port ${port}`,
      "bind 127.0.0.1",
      `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 1`,
      "",
    ].join("\n"),
  );
  const c = spawn(REDIS_SERVER, [conf, "--sentinel", "--loglevel", "warning"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  c.stderr?.on("data", (d) => (stderr += d));
  await waitUntil(
    `redis sentinel to start on ${port}`,
    async () => {
      if (c.exitCode !== null) throw new GiveUp(`redis sentinel exited (${c.exitCode}): ${stderr}`);
      return (await redisCommand(port, `SENTINEL get-master-addr-by-name ${masterName}`)).startsWith("*2");
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
