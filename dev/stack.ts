// The local stack of `npm start`, the benchmarks and the end-to-end tests: redis-server (or the
// sidecar's in-memory store), a sidecar per Traefik replica, N MCP nodes and the real Traefik with
// the plugin, all on loopback. Every part can be stopped, killed, paused and restarted
// (dev/process.ts); each part logs into `.run/<name>/logs/<part>.log`.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { cookieValueFor } from "../lib/registry/schema.ts";
import { readMeta, type NodeViewState, type ViewMeta } from "../lib/view/index.ts";
import { isProxyCut, readAccessLog, type AccessLogRow } from "./access-log.ts";
import { freePort, httpGet } from "./net.ts";
import {
  BUILD_CLIENTS_SCRIPT,
  PYTHON_NODE_SCRIPT,
  PYTHON_REQUEST_STATE_SERVER_SCRIPT,
  ROOT,
  VENV_MCP2_PYTHON,
  VENV_PYTHON,
} from "./paths.ts";
import { GiveUp, sleep, waitUntil } from "./poll.ts";
import { ManagedProcess, StackError, killOnExit } from "./process.ts";
import { redisCommand, startRedis, type TestRedis } from "./redis.ts";
import {
  dynamicDirOf,
  FAST_PATH_FILE,
  makeCertificate,
  renderDynamic,
  renderStatic,
  type DynamicOptions,
  type RenderVars,
  type StackPorts,
} from "./traefik-config.ts";

const PLUGIN_MODULE = "github.com/mcp-affinity/mcp-affinity";

/** Short windows so failure scenarios finish in seconds (docs/e2e.md lists them). */
export interface StackTiming {
  /** Node heartbeat period; its record lives 3x as long. */
  heartbeatMs: number;
  /** Node drain grace after SIGTERM. */
  drainGraceMs: number;
  /** Traefik's health check of the /mcp service. */
  healthIntervalMs: number;
  healthTimeoutMs: number;
  /** Sidecar: a node whose heartbeat is older than this is down (--node-ttl). */
  nodeTtlMs: number;
  /** Sidecar: a node down longer than this counts as gone (--down-limit). */
  downLimitMs: number;
  /** Sidecar: the view's freshness stamp is rewritten this often (--meta-interval). */
  metaIntervalMs: number;
  /** Sidecar: Traefik API poll (--traefik-poll-interval) and node record re-read (--node-poll-interval). */
  traefikPollIntervalMs: number;
  nodePollIntervalMs: number;
  /** Plugin: a view older than this is stale. */
  staleAfterMs: number;
  /** Sidecar: its own probe of each node (--probe-interval, --probe-timeout). */
  probeIntervalMs: number;
  probeTimeoutMs: number;
}

export const TEST_TIMING: StackTiming = {
  heartbeatMs: 200,
  drainGraceMs: 300,
  // A health check that times out marks the server DOWN at once (Traefik has no failure
  // threshold): under a saturated 2-core machine a short timeout breaks sessions spuriously.
  healthIntervalMs: 1000,
  healthTimeoutMs: 2000,
  nodeTtlMs: 1000,
  downLimitMs: 5000,
  metaIntervalMs: 500,
  traefikPollIntervalMs: 500,
  nodePollIntervalMs: 250,
  staleAfterMs: 3000,
  // Generous for the same reason as the health check: a busy machine must not fake a stall.
  probeIntervalMs: 250,
  probeTimeoutMs: 1500,
};

/** What `npm start` uses: the templates' own values, comfortable for a person at a terminal. */
export const DEMO_TIMING: StackTiming = {
  heartbeatMs: 2000,
  drainGraceMs: 1000,
  healthIntervalMs: 1000,
  healthTimeoutMs: 1000,
  nodeTtlMs: 6000,
  downLimitMs: 30_000,
  metaIntervalMs: 1000,
  traefikPollIntervalMs: 2000,
  nodePollIntervalMs: 2000,
  staleAfterMs: 5000,
  probeIntervalMs: 250,
  probeTimeoutMs: 1000,
};

// ---------------------------------------------------------------------------------------------
// Binaries

export function traefikBinary(): string {
  try {
    return execFileSync("bash", [join(ROOT, "scripts", "install-traefik.sh")], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    })
      .toString()
      .trim();
  } catch (err) {
    throw new StackError(
      `no Traefik binary: ${(err as { stderr?: Buffer }).stderr?.toString().trim() ?? err} (run: bash scripts/install-traefik.sh)`,
      "ERR_STACK_TRAEFIK",
    );
  }
}

/** What scripts/build-clients.mjs builds: the SDK test clients and test servers. */
export type BuiltBinary = "go" | "rust" | "goServer" | "rustServer" | "rustTasksClient";

/**
 * A test client or server binary: scripts/build-clients.mjs builds it once per source hash into
 * .cache/clients/ (`what` names it in errors).
 */
export function builtBinary(name: BuiltBinary, what: string): string {
  let path: string | undefined;
  try {
    const out = execFileSync(process.execPath, [BUILD_CLIENTS_SCRIPT, name], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    path = (JSON.parse(out.toString()) as Partial<Record<BuiltBinary, string>>)[name];
  } catch (err) {
    throw new StackError(
      `no ${what}: ${(err as { stderr?: Buffer }).stderr?.toString().trim() || err} (run: node scripts/build-clients.mjs ${name})`,
      "ERR_STACK_NODE",
    );
  }
  if (!path || !existsSync(path))
    throw new StackError(`the ${what} binary is missing (${path ?? "no path"})`, "ERR_STACK_NODE");
  return path;
}

/** The Go SDK test server (test/servers/go). */
export const goServerBinary = (): string => builtBinary("goServer", "Go MCP test server");

/** The sidecar's entry: the npm bin when it exists, else its TypeScript main. */
export function sidecarCommand(): { cmd: string; args: string[] } {
  const bin = join(ROOT, "bin", "mcp-affinity-sidecar.js");
  if (existsSync(bin)) return { cmd: process.execPath, args: [bin] };
  for (const f of ["sidecar/src/main.ts", "sidecar/main.ts"]) {
    if (existsSync(join(ROOT, f))) return { cmd: process.execPath, args: ["--import", "tsx", join(ROOT, f)] };
  }
  throw new StackError("the sidecar is not built yet: bin/mcp-affinity-sidecar.js is missing", "ERR_STACK_SIDECAR");
}

// ---------------------------------------------------------------------------------------------
// The stack

export interface StackOptions {
  /** Folder name under .run/ for configs, shared directory and logs. */
  name: string;
  nodes?: number;
  /**
   * "reference" (default): node/reference on the node library, registering in Redis (or through the
   * sidecar). "python": test/servers/python_mcp_server.py, an MCP server on the official Python SDK
   * that knows nothing of mcp-affinity (the edge is its only source of truth). "go": the same on the
   * official Go SDK (test/servers/go, built by scripts/build-clients.mjs). "rust-tasks": a 2026-07-28
   * server on the Rust SDK whose tasks live in its process memory (test/servers/rust); "python-mrtr":
   * a 2026-07-28 server on the Python SDK 2.x whose requestState is sealed with a per-process key
   * (test/servers/python_request_state_server.py).
   */
  nodeKind?: NodeKind;
  /**
   * Traefik replicas (default 1), each with its own sidecar, shared directory and ports, all on the
   * same Redis and the same nodes, like Traefik pods behind a Kubernetes Service. More than one
   * needs Redis: sidecars do not share an in-memory store.
   */
  replicas?: number;
  /** true (default): a real redis-server; false: the sidecar's in-memory store (nodes register through it). */
  redis?: boolean;
  /** Use this Redis instead of starting one (npm start with MCPA_REDIS_URL). */
  redisUrl?: string;
  /**
   * Use this Redis, given as the Redis flags the sidecar and the reference node share
   * (`--redis-sentinels ... --redis-sentinel-name ...`, `--redis-cluster ...`): none is started.
   */
  redisFlags?: string[];
  /** Node i's kind, when the nodes are not all of `nodeKind`. */
  nodeKinds?: NodeKind[];
  /** Reference node i registers through the first sidecar's sessions API instead of Redis. */
  onSessionsApi?: (i: number) => boolean;
  /** false: Traefik without the middleware on /mcp (plain sticky cookie). */
  plugin?: boolean;
  /** false: no sidecar process (the plugin then has no view: fail open). */
  sidecar?: boolean;
  /**
   * true: each sidecar writes the fast-path routers into its Traefik's dynamic directory. Default:
   * the environment's MCPA_E2E_FAST_PATH=1 (to run any suite with the fast path on), else off.
   */
  fastPath?: boolean;
  /** Ports of the first replica, Redis and the nodes. */
  ports?: Partial<StackPorts>;
  /** Ports of replicas 2..N, in order (free ports when not given). */
  replicaPorts?: Array<Partial<ReplicaPorts>>;
  timing?: Partial<StackTiming>;
  /**
   * false: return as soon as every Traefik serves /mcp, without waiting for the sidecars' views to
   * list every node (sessions opened in the first second after start-up). Default true.
   */
  waitForView?: boolean;
  pluginSettings?: Record<string, string>;
  /** Extra flags for node i (e.g. ["--fail-close"]). */
  nodeArgs?: (i: number) => string[];
  /** Extra flags for every sidecar (after the stack's own). */
  sidecarArgs?: string[];
  bind?: string;
  traefikLogLevel?: string;
  /** Run directory (default .run/<name>); wiped at start. */
  dir?: string;
  /** Local plugin folder (.traefik.yml + plugin.wasm); default plugin/build/local. */
  pluginDir?: string;
}

export type NodeKind = "reference" | "python" | "go" | "rust-tasks" | "python-mrtr";

export const MAX_REPLICAS = 8;

export interface NodePart {
  index: number;
  name: string;
  port: number;
  /** Server URL exactly as in Traefik's service. */
  url: string;
  /** Traefik's sticky cookie value for it. */
  cookie: string;
  proc: ManagedProcess;
  /** /healthz of the process, or null when it does not answer. */
  health(timeoutMs?: number): Promise<{ status: string; node: string; boot: string; sessions?: number } | null>;
  /** Boot id of the running process. */
  boot(): Promise<string>;
  /** Starts the process (after kill or stop) and waits for /healthz. */
  start(): Promise<void>;
  /** Kill, then start: same URL, new process, new boot id. */
  restart(): Promise<void>;
  kill(): Promise<void>;
  pause(): void;
  resume(): void;
}

/** The ports one Traefik replica and its sidecar listen on. */
export interface ReplicaPorts {
  http: number;
  https: number;
  api: number;
  sidecar: number;
}

/** One Traefik with its own sidecar and shared directory (a Traefik pod). */
export interface ReplicaPart {
  /** 0 for the first replica. */
  index: number;
  /** "traefik" for the first replica, "traefik-2", "traefik-3" ... for the others. */
  name: string;
  ports: ReplicaPorts;
  /** http://127.0.0.1:<http>/mcp */
  mcpUrl: string;
  /** https://127.0.0.1:<https>/mcp (self-signed: trust the stack's caFile) */
  mcpsUrl: string;
  httpBase: string;
  httpsBase: string;
  apiUrl: string;
  traefikMetricsUrl: string;
  sidecarUrl: string | null;
  /** This replica's shared directory (its sidecar's view, its plugin's learned/ and events/). */
  shared: string;
  /** Traefik's JSON access log file. */
  accessLogFile: string;
  traefik: ManagedProcess;
  sidecar: ManagedProcess | null;
  /** Starts this replica's sidecar again after a kill and waits for /readyz. */
  startSidecar(): Promise<void>;
  /** The view's meta in this replica's shared directory, or null. */
  viewMeta(): Promise<ViewMeta | null>;
  /** State of node i's current incarnation in this replica's view (by cookie; the newest id wins). */
  viewNodeState(i: number): Promise<NodeViewState | null>;
  waitViewNodeState(i: number, states: NodeViewState[], timeoutMs: number): Promise<NodeViewState>;
  /** This Traefik's health status of node i in the mcp service ("UP"/"DOWN"/null). */
  traefikServerStatus(i: number): Promise<string | null>;
  waitTraefikReady(timeoutMs?: number): Promise<void>;
  /** Waits until this Traefik serves the /mcp router with (or without) the plugin middleware. */
  waitMiddleware(on: boolean, timeoutMs?: number): Promise<void>;
  /** This Traefik's access log lines (JSON), parsed. */
  accessLog(): AccessLogRow[];
  /** /mcp requests whose upstream response this Traefik's proxy cut (see isProxyCut) that started in [fromMs, toMs]. */
  proxyCuts(fromMs: number, toMs?: number): AccessLogRow[];
}

/** What a replica has that the stack does not repeat from its first replica. */
type ReplicaOnly = "index" | "name" | "ports" | "accessLogFile" | "proxyCuts";

/** The stack. Its Traefik, sidecar, URL and view fields are the first replica's. */
export interface Stack extends Omit<ReplicaPart, ReplicaOnly> {
  name: string;
  dir: string;
  ports: StackPorts;
  timing: StackTiming;
  /** The self-signed certificate every replica serves TLS with (trust it as a CA). */
  caFile: string;
  redisUrl: string | null;
  redis: TestRedis | null;
  nodeKind: NodeKind;
  nodes: NodePart[];
  /** Every Traefik replica; replicas[0] is the one the fields above describe. */
  replicas: ReplicaPart[];
  plugin: boolean;
  /**
   * Whether the sidecars write the fast-path routers (the `fastPath` option, or MCPA_E2E_FAST_PATH=1):
   * then Traefik routes minted ids of live incarnations itself, with or without the plugin on /mcp.
   */
  fastPath: boolean;
  /** Rewrites dynamic.yml, which every replica reads (Traefik's file provider picks it up). */
  writeDynamic(o?: Partial<DynamicOptions>): void;
  /**
   * Starts one more node of the stack's kind and adds it to both services of dynamic.yml: a server
   * joining a running cluster. The sidecars learn of it from their Traefik's API (and a reference
   * node's heartbeats) on their own schedule.
   */
  addNode(): Promise<NodePart>;
  /** Waits until every replica serves the /mcp router with (or without) the plugin middleware. */
  waitMiddleware(on: boolean, timeoutMs?: number): Promise<void>;
  /** Waits until every replica's view lists every node with an up incarnation (after a node came back). */
  waitViewsUp(): Promise<void>;
  stop(): Promise<void>;
}

async function allocatePorts(
  n: number,
  fixed: Partial<StackPorts> = {},
  extraReplicas: Array<Partial<ReplicaPorts>> = [],
): Promise<{ ports: StackPorts; replicaPorts: ReplicaPorts[] }> {
  const seen = new Set<number>();
  const pick = async (p?: number) => {
    if (p !== undefined) return p;
    for (;;) {
      const q = await freePort();
      if (!seen.has(q)) {
        seen.add(q);
        return q;
      }
    }
  };
  const nodes: number[] = [];
  for (let i = 0; i < n; i++) nodes.push(await pick(fixed.nodes?.[i]));
  const ports: StackPorts = {
    redis: await pick(fixed.redis),
    sidecar: await pick(fixed.sidecar),
    http: await pick(fixed.http),
    https: await pick(fixed.https),
    api: await pick(fixed.api),
    nodes,
  };
  const replicaPorts: ReplicaPorts[] = [
    { http: ports.http, https: ports.https, api: ports.api, sidecar: ports.sidecar },
  ];
  for (const f of extraReplicas) {
    replicaPorts.push({
      http: await pick(f.http),
      https: await pick(f.https),
      api: await pick(f.api),
      sidecar: await pick(f.sidecar),
    });
  }
  return { ports, replicaPorts };
}

async function redisPid(port: number): Promise<number | null> {
  try {
    const info = await redisCommand(port, "INFO server");
    const m = /process_id:(\d+)/.exec(info);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Replica 1 keeps the single-Traefik layout; replica k adds "-k" to its files. */
const replicaSuffix = (k: number) => (k === 0 ? "" : `-${k + 1}`);

/** Something startStack started and stopAll stops (in reverse order). */
interface StackPartHandle {
  stop(): Promise<unknown>;
}

/** What every part of a stack is made from. */
interface PartContext {
  opts: StackOptions;
  bind: string;
  timing: StackTiming;
  dir: string;
  logs: string;
  /** Registered stoppers. */
  parts: StackPartHandle[];
  /** Every node's server URL (both services list them; addNode appends). */
  nodeUrls: string[];
}

interface SidecarPart {
  apiUrl: string;
  url: string | null;
  proc: ManagedProcess | null;
  start(): Promise<void>;
}

/** Replica k's sidecar (none with `sidecar: false`): its process, API URLs and a start that waits for /readyz. */
function makeSidecar(ctx: PartContext, v: RenderVars, k: number, redisFlags: string[]): SidecarPart {
  const { bind, timing, logs, parts, nodeUrls } = ctx;
  const useSidecar = ctx.opts.sidecar ?? true;
  const suffix = replicaSuffix;
  const apiUrl = `http://${bind}:${v.ports.api}`;
  const url = useSidecar ? `http://${bind}:${v.ports.sidecar}` : null;
  let proc: ManagedProcess | null = null;
  if (useSidecar) {
    const { cmd, args } = sidecarCommand();
    proc = new ManagedProcess(`sidecar${suffix(k)}`, {
      cmd,
      args: [
        ...args,
        ...sidecarArgs({ bind, ports: v.ports, shared: v.shared, apiUrl, redisFlags, timing, nodeUrls }),
        ...(fastPathOn(ctx.opts) ? ["--fast-path-file", join(dynamicDirOf(v), FAST_PATH_FILE)] : []),
        ...(ctx.opts.sidecarArgs ?? []),
      ],
      logFile: join(logs, `sidecar${suffix(k)}.log`),
    });
    const p = proc;
    parts.push({ stop: () => p.stop() });
  }
  const start = async () => {
    if (!proc) throw new StackError("this stack has no sidecar", "ERR_STACK_STATE");
    const p = proc;
    p.start();
    await waitUntil(
      `${p.name}'s /readyz`,
      async () => {
        if (!p.running) throw new GiveUp(`${p.name} exited:\n${p.tail()}`, "ERR_STACK_SIDECAR");
        return (await httpGet(`${url}/readyz`))?.status === 200;
      },
      20_000,
    );
  };
  return { apiUrl, url, proc, start };
}

/** Node i of the stack's kind on `port` (not started). */
function makeNode(ctx: PartContext, i: number, port: number, registry: string[], sdkServer: string[] | null): NodePart {
  const { bind, timing, logs, opts } = ctx;
  const url = `http://${bind}:${port}`;
  const name = `node-${i + 1}`;
  // Every kind takes the same address and name flags; the reference node also joins the registry.
  const common = ["--port", String(port), "--host", bind, "--name", name];
  const extra = opts.nodeArgs?.(i) ?? [];
  const reference = [join(ROOT, "node", "reference", "main.ts"), ...common, "--node-url", url, ...registry];
  const timingArgs = ["--heartbeat-ms", String(timing.heartbeatMs), "--drain-grace-ms", String(timing.drainGraceMs)];
  const spec =
    sdkServer !== null
      ? { cmd: sdkServer[0]!, args: [...sdkServer.slice(1), ...common, ...extra] }
      : { cmd: process.execPath, args: ["--import", "tsx", ...reference, ...timingArgs, ...extra] };
  const proc = new ManagedProcess(name, { ...spec, logFile: join(logs, `${name}.log`) });
  const health = async (timeoutMs = 500) => {
    const r = await httpGet(`${url}/healthz`, timeoutMs);
    if (!r || r.status !== 200) return null;
    return JSON.parse(r.text);
  };
  const start = async () => {
    proc.start();
    await waitUntil(
      `${name}'s /healthz`,
      async () => {
        if (!proc.running) throw new GiveUp(`${name} exited:\n${proc.tail()}`, "ERR_STACK_NODE");
        return health();
      },
      20_000,
    );
  };
  return {
    index: i,
    name,
    port,
    url,
    cookie: cookieValueFor(url),
    proc,
    health,
    async boot() {
      const h = await health(2000);
      if (!h) throw new StackError(`${name} does not answer /healthz`, "ERR_STACK_NODE");
      return h.boot;
    },
    start,
    async restart() {
      await proc.kill();
      await start();
    },
    kill: () => proc.kill(),
    pause: () => proc.pause(),
    resume: () => proc.resume(),
  };
}

/** Replica k: its Traefik (not started) with what tests read of it (view, access log, API). */
function makeReplica(ctx: PartContext, v: RenderVars, k: number, sc: SidecarPart, nodes: NodePart[]): ReplicaPart {
  const { bind, dir, logs, parts, nodeUrls } = ctx;
  const suffix = replicaSuffix;
  const traefikBin = traefikBinary();
  const name = `traefik${suffix(k)}`;
  const { apiUrl, url: sidecarUrl, proc: sidecar, start: startSidecar } = sc;
  const traefik = new ManagedProcess(name, {
    cmd: traefikBin,
    args: [`--configFile=${join(dir, `traefik${suffix(k)}.yml`)}`],
    cwd: dir,
    logFile: join(logs, `${name}.log`),
  });
  // Traefik waits up to its graceTimeOut (10 s) for open SSE streams; the stack does not.
  parts.push({ stop: () => traefik.stop(3000) });
  const httpBase = `http://${bind}:${v.ports.http}`;
  const serviceStatus = async (): Promise<Record<string, string> | null> => {
    const r = await httpGet(`${apiUrl}/api/http/services/mcp@file`);
    if (!r || r.status !== 200) return null;
    return (JSON.parse(r.text).serverStatus ?? {}) as Record<string, string>;
  };
  const waitTraefikReady = async (timeoutMs = 30_000) => {
    await waitUntil(
      `${name}'s routers and healthy servers`,
      async () => {
        if (!traefik.running) throw new GiveUp(`${name} exited:\n${traefik.tail()}`, "ERR_STACK_TRAEFIK");
        const st = await serviceStatus();
        // No status entry: the service has no health check (plugin on), and Traefik routes to it.
        if (!st || nodeUrls.some((u) => st[u] !== undefined && st[u] !== "UP")) return false;
        const router = await httpGet(`${apiUrl}/api/http/routers/mcp@file`);
        if (!router || router.status !== 200 || JSON.parse(router.text).status !== "enabled") return false;
        // The plugin compiles lazily on its first request: make that happen here, not in a test.
        const probe = await httpGet(`${httpBase}/mcp`, 5000);
        return probe !== null && probe.status !== 500;
      },
      timeoutMs,
      100,
    );
  };
  const accessLog = () => readAccessLog(v.accessLogFile!);
  const viewMeta = () => readMeta(v.shared).catch(() => null);
  const viewNodeState = async (i: number): Promise<NodeViewState | null> => {
    const meta = await viewMeta();
    if (!meta) return null;
    const mine = meta.nodes.filter((n) => n.cookie === nodes[i]!.cookie);
    if (mine.length === 0) return null;
    return mine.reduce((a, b) => (b.id > a.id ? b : a)).state;
  };
  return {
    index: k,
    name,
    ports: { http: v.ports.http, https: v.ports.https, api: v.ports.api, sidecar: v.ports.sidecar },
    mcpUrl: `${httpBase}/mcp`,
    mcpsUrl: `https://${bind}:${v.ports.https}/mcp`,
    httpBase,
    httpsBase: `https://${bind}:${v.ports.https}`,
    apiUrl,
    traefikMetricsUrl: `${apiUrl}/metrics`,
    sidecarUrl,
    shared: v.shared,
    accessLogFile: v.accessLogFile!,
    traefik,
    sidecar,
    startSidecar,
    viewMeta,
    viewNodeState,
    waitViewNodeState: (i, states, timeoutMs) =>
      waitUntil(
        `node ${i + 1} in state ${states.join("|")} in ${name}'s view`,
        async () => {
          const s = await viewNodeState(i);
          return s && states.includes(s) ? s : null;
        },
        timeoutMs,
      ),
    traefikServerStatus: async (i) => (await serviceStatus())?.[nodeUrls[i]!] ?? null,
    waitTraefikReady,
    async waitMiddleware(on, timeoutMs = 15_000) {
      await waitUntil(
        `${name}'s mcp router ${on ? "with" : "without"} the plugin`,
        async () => {
          const r = await httpGet(`${apiUrl}/api/http/routers/mcp@file`);
          if (!r || r.status !== 200) return false;
          const mws: string[] = JSON.parse(r.text).middlewares ?? [];
          return mws.includes("mcp-affinity@file") === on;
        },
        timeoutMs,
      );
    },
    accessLog,
    proxyCuts: (fromMs, toMs = Date.now()) =>
      accessLog().filter((r) => {
        const t = Date.parse(r.StartUTC);
        return isProxyCut(r) && t >= fromMs && t <= toMs;
      }),
  };
}

/** Waits until every replica's view lists every node with an up incarnation (`boot` line). */
async function waitViewsListNodes(replicas: ReplicaPart[], nodes: NodePart[]): Promise<void> {
  await Promise.all(
    replicas.map((r) =>
      waitUntil(
        `${r.name}'s view to list every node up`,
        async () => {
          // Every node has an incarnation (`boot` line) the view calls up.
          const boots = (await r.viewMeta())?.boots ?? [];
          const missing = nodes.filter((n) => !boots.some((b) => b.cookie === n.cookie && b.state === "up"));
          if (missing.length === 0) return true;
          throw new StackError(`not up in the view: ${missing.map((n) => n.name).join(", ")}`, "ERR_STACK_VIEW");
        },
        20_000,
      ),
    ),
  );
}

/** The command line's start of a node of an SDK server kind (null: the reference node). */
function sdkServerCommand(kind: NodeKind): string[] | null {
  const python = (venv: string, flag: string, script: string) => {
    if (!existsSync(venv))
      throw new StackError(`${venv} is missing: run \`node scripts/ensure-deps.mjs ${flag}\``, "ERR_STACK_NODE");
    return [venv, script];
  };
  if (kind === "python") return python(VENV_PYTHON, "--python", PYTHON_NODE_SCRIPT);
  if (kind === "python-mrtr") return python(VENV_MCP2_PYTHON, "--python-mcp2", PYTHON_REQUEST_STATE_SERVER_SCRIPT);
  if (kind === "go") return [goServerBinary()];
  if (kind === "rust-tasks") return [builtBinary("rustServer", "Rust MCP task server")];
  return null;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const nNodes = opts.nodes ?? 3;
  const nReplicas = opts.replicas ?? 1;
  const nodeKind = opts.nodeKind ?? "reference";
  const bind = opts.bind ?? "127.0.0.1";
  const timing = { ...TEST_TIMING, ...opts.timing };
  const usePlugin = opts.plugin ?? true;
  const useSidecar = opts.sidecar ?? true;
  if (!Number.isInteger(nReplicas) || nReplicas < 1 || nReplicas > MAX_REPLICAS) {
    throw new StackError(`replicas must be an integer from 1 to ${MAX_REPLICAS}, got ${nReplicas}`, "ERR_STACK_CONFIG");
  }
  if (nReplicas > 1 && !opts.redisUrl && !opts.redisFlags && opts.redis === false) {
    throw new StackError(
      "replicas > 1 needs Redis: each sidecar's in-memory store would be a registry of its own",
      "ERR_STACK_CONFIG",
    );
  }
  // The SDK servers know nothing of the registry and take the same flags: their command line's start.
  const kindOf = (i: number) => opts.nodeKinds?.[i] ?? nodeKind;
  const dir = resolve(opts.dir ?? join(ROOT, ".run", opts.name));
  rmSync(dir, { recursive: true, force: true });
  const logs = join(dir, "logs");
  mkdirSync(logs, { recursive: true });

  const { ports, replicaPorts } = await allocatePorts(
    nNodes,
    opts.ports,
    Array.from({ length: nReplicas - 1 }, (_, k) => opts.replicaPorts?.[k] ?? {}),
  );
  const nodeUrls = ports.nodes.map((p) => `http://${bind}:${p}`);
  const { certFile, keyFile } = makeCertificate(dir);
  // Replica 1 keeps the single-Traefik layout; replica k adds "-k" to its files.
  const suffix = replicaSuffix;
  const replicaVars: RenderVars[] = replicaPorts.map((rp, k) => ({
    bind,
    ports: { ...ports, ...rp },
    dir,
    shared: join(dir, `shared${suffix(k)}`),
    certFile,
    keyFile,
    logLevel: opts.traefikLogLevel ?? "INFO",
    nodeUrls,
    accessLogFile: join(logs, `access${suffix(k)}.log`),
    dynamicDir: join(dir, `dynamic${suffix(k)}`),
  }));
  for (const v of replicaVars) for (const d of [v.shared, dynamicDirOf(v)]) mkdirSync(d, { recursive: true });
  const vars = replicaVars[0]!;
  const pluginSettings = { staleAfterMs: String(timing.staleAfterMs), ...opts.pluginSettings };
  let dynamicOpts: DynamicOptions = {
    plugin: usePlugin,
    pluginSettings,
    healthIntervalMs: timing.healthIntervalMs,
    healthTimeoutMs: timing.healthTimeoutMs,
  };
  // Each replica reads its own directory (its sidecar's fast-path file goes there too).
  const writeDynamic = (o: Partial<DynamicOptions> = {}) => {
    dynamicOpts = { ...dynamicOpts, ...o };
    const text = renderDynamic(vars, dynamicOpts);
    for (const v of replicaVars) {
      // Write then rename: Traefik never reads half a file.
      const file = join(dynamicDirOf(v), "dynamic.yml");
      writeFileSync(`${file}.tmp`, text);
      renameSync(`${file}.tmp`, file);
    }
  };
  replicaVars.forEach((v, k) => writeFileSync(join(dir, `traefik${suffix(k)}.yml`), renderStatic(v)));
  writeDynamic();
  // Traefik loads local plugins from ./plugins-local/src/<moduleName>/ under its working directory.
  const pluginDir = join(dir, "plugins-local", "src", PLUGIN_MODULE);
  mkdirSync(dirname(pluginDir), { recursive: true });
  const built = opts.pluginDir ?? join(ROOT, "plugin", "build", "local");
  if (!existsSync(join(built, "plugin.wasm")))
    throw new StackError("plugin/build/local/plugin.wasm is missing: run `npm run build`", "ERR_STACK_PLUGIN");
  symlinkSync(built, pluginDir);

  const parts: StackPartHandle[] = [];
  const ctx: PartContext = { opts, bind, timing, dir, logs, parts, nodeUrls };
  const stopAll = async () => {
    for (const p of parts.reverse()) await p.stop().catch(() => {});
    parts.length = 0;
  };

  try {
    // Redis
    let redis: TestRedis | null = null;
    let redisUrl: string | null = opts.redisUrl ?? null;
    if (!redisUrl && !opts.redisFlags && opts.redis !== false) {
      redis = await startRedis({ port: ports.redis });
      redisUrl = redis.url;
      const pid = await redisPid(redis.port);
      if (pid) killOnExit(pid);
      const r = redis;
      parts.push({ stop: () => r.close() });
    }

    // Sidecars: one per replica, each publishing into its replica's shared directory.
    const redisFlags = opts.redisFlags ?? (redisUrl ? ["--redis-url", redisUrl] : []);
    const sidecars = replicaVars.map((v, k) => makeSidecar(ctx, v, k, redisFlags));
    if (useSidecar) await Promise.all(sidecars.map((s) => s.start()));

    // Nodes (shared by every replica)
    const firstSidecarUrl = sidecars[0]!.url;
    const apiRegistry = firstSidecarUrl ? ["--sidecar-url", firstSidecarUrl] : [];
    const registryOf = (i: number) => (redisFlags.length && !opts.onSessionsApi?.(i) ? redisFlags : apiRegistry);
    const makeNodeAt = (i: number, port: number) => makeNode(ctx, i, port, registryOf(i), sdkServerCommand(kindOf(i)));
    const nodes: NodePart[] = ports.nodes.map((port, i) => makeNodeAt(i, port));
    parts.push({ stop: () => Promise.all(nodes.map((n) => n.proc.stop(timing.drainGraceMs + 2000))) });
    const addNode = async (): Promise<NodePart> => {
      const port = await freePort();
      const node = makeNodeAt(nodes.length, port);
      nodes.push(node);
      await node.start();
      // Both services list it from now on (Traefik's file provider picks the file up).
      nodeUrls.push(node.url);
      writeDynamic();
      return node;
    };
    // Start the nodes in parallel: each tsx start costs about a second of CPU.
    await Promise.all(nodes.map((n) => n.start()));

    // Traefik replicas
    const replicas: ReplicaPart[] = replicaVars.map((v, k) => makeReplica(ctx, v, k, sidecars[k]!, nodes));
    for (const r of replicas) r.traefik.start();
    await Promise.all(replicas.map((r) => r.waitTraefikReady()));
    // A sidecar lists nodes that do not heartbeat (servers without the node library) once it has
    // read its Traefik's API. Session ids name their node, so nothing depends on it; steering new
    // sessions over every node does, and most tests want that from their first request.
    if (useSidecar && opts.waitForView !== false) await waitViewsListNodes(replicas, nodes);

    // The stack's own fields are its first replica's, except what only a replica has.
    const { index: _index, name: _name, ports: _ports, accessLogFile: _log, proxyCuts: _cuts, ...first } = replicas[0]!;
    const stack: Stack = {
      ...first,
      name: opts.name,
      dir,
      ports,
      timing,
      caFile: certFile,
      redisUrl,
      redis,
      nodeKind,
      nodes,
      replicas,
      plugin: usePlugin,
      fastPath: useSidecar && fastPathOn(opts),
      writeDynamic,
      addNode,
      async waitMiddleware(on, timeoutMs) {
        await Promise.all(replicas.map((r) => r.waitMiddleware(on, timeoutMs)));
        // The router object changes before every entrypoint has switched handlers: let it settle.
        await sleep(1000);
      },
      waitViewsUp: () => waitViewsListNodes(replicas, nodes),
      stop: stopAll,
    };
    return stack;
  } catch (err) {
    await stopAll();
    throw err;
  }
}

interface SidecarArgInput {
  bind: string;
  ports: StackPorts;
  shared: string;
  apiUrl: string;
  redisFlags: string[];
  timing: StackTiming;
  nodeUrls: string[];
}

/** Whether the sidecars write the fast path (only with the plugin: without it every request is plain). */
const fastPathOn = (o: StackOptions) => (o.plugin ?? true) && (o.fastPath ?? process.env.MCPA_E2E_FAST_PATH === "1");

/** The sidecar's command line (flags from docs/sidecar.md). */
function sidecarArgs(v: SidecarArgInput): string[] {
  return [
    "--dir",
    v.shared,
    "--host",
    v.bind,
    "--port",
    String(v.ports.sidecar),
    ...v.redisFlags,
    "--node-ttl",
    `${v.timing.nodeTtlMs}ms`,
    "--down-limit",
    `${v.timing.downLimitMs}ms`,
    "--meta-interval",
    `${v.timing.metaIntervalMs}ms`,
    "--traefik-api",
    v.apiUrl,
    "--traefik-services",
    "mcp@file",
    "--traefik-poll-interval",
    `${v.timing.traefikPollIntervalMs}ms`,
    "--node-poll-interval",
    `${v.timing.nodePollIntervalMs}ms`,
    "--probe-interval",
    `${v.timing.probeIntervalMs}ms`,
    "--probe-timeout",
    `${v.timing.probeTimeoutMs}ms`,
  ];
}
