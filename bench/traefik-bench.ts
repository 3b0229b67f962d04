// `npm run bench`: what the plugin costs, side by side with plain Traefik, on loopback.
//   (a) tools/call straight to the owner node
//   (b) through Traefik with its sticky cookie only (the client sends the cookie it got)
//   (c) through Traefik with the plugin and the sidecar, 1,000,000 sessions in the view; the client
//       sends no cookie (the plugin pins by Mcp-Session-Id), plus (c') the same with the cookie.
//   (f) through Traefik with the plugin, the sidecar and the fast path (the sidecar's routers per
//       live incarnation: requests of tokened sessions never run the plugin); no cookie.
// Also: Traefik's RSS with N open SSE streams with and without the plugin, the time from a node's
// registration to the session being in the view, and from a node restart to the first edge 404.
// Flags: --json FILE, --sessions N, --concurrency N, --duration S, --rounds N, --streams N,
//        --registrations N, --restarts N, --latency-concurrency N, --pairs N (2 s window pairs of
//        (b) and (f) per concurrency, default 40), --profile (CPU profiles of
//        Traefik during (b), (c) and (f)), --plugin-wasm FILE (another plugin build for (c)), --baseline-wasm FILE
//        (an earlier build measured beside (c) as (c0), same rounds), --sidecar-main FILE
//        (another sidecar entry, run with tsx), --no-sidecar (the plugin without a view: its
//        fail-open path; skips what needs the view).
// Logs, configs and profiles stay in .run/bench/. Each phase is one function returning its typed
// figures; main() runs them in order and fills one TraefikBenchResults.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, watch, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { readFlags } from "./lib/flags.ts";
import { bool, file, int, nonEmpty, text } from "../lib/settings/index.ts";
import { randomBytes } from "node:crypto";
import { Agent, request } from "undici";
import { Redis } from "ioredis";
import { rawInitialize, sessionHeaders } from "../dev/mcp-client.ts";
import { metricSum, scrapeMetrics } from "../dev/metrics.ts";
import { sleep, waitUntil } from "../dev/poll.ts";
import { startStack, traefikBinary, type Stack } from "../dev/stack.ts";
import { encodeSession, sessionKey, type SessionRecord } from "../lib/registry/schema.ts";
import {
  decodeShardHeader,
  listShards,
  readMeta,
  sessionHash,
  SHARD_HEADER_BYTES,
  viewPaths,
} from "../lib/view/index.ts";
import { lookupSession } from "../test/support/view-writers.ts";
import { RedisRegistry } from "../lib/registry/index.ts";
import { nodeRedisOptions } from "../node/src/index.ts";
import { endResults, progressLog, runBench, startResults, writeResults, type BenchResults } from "./lib/results.ts";
import { BenchError, counterBody, counterOf, initSession, waitSessionsInView, type BenchSession } from "./lib/mcp.ts";
import { runLoad, type LoadResult, type LoadTarget } from "./lib/load.ts";
import { cpuMicros, openStreams, rssBytes } from "./lib/sse.ts";
import { FAST_PATH_FILE } from "../dev/traefik-config.ts";
import {
  ensureBenchDeps,
  extraTraefikDynamicDir,
  localPluginDir,
  waitFastRouters,
  preparePluginTraefik,
  startBenchSidecar,
  startExtraTraefik,
  type ExtraTraefik,
} from "./lib/traefik.ts";
import { Samples, median, percentile, summarize, type LatencySummary } from "./lib/stats.ts";

// ---------------------------------------------------------------------------------------------
// Flags

interface BenchConfig {
  sessions: number;
  concurrency: number;
  /** The latency pass: few requests in flight, so the figures show the path, not the queues. */
  latencyConcurrency: number;
  durationMs: number;
  warmupMs: number;
  rounds: number;
  streams: number;
  /** Whole sessions per mode and round in the session-cycle phase. */
  cycles: number;
  registrations: number;
  restarts: number;
  /** Short (b)/(f) window pairs per concurrency, for the fast path's CPU ratio (0: none). */
  pairs: number;
  profile: boolean;
  /** No sidecar: the plugin has no view and fails open (its cheapest path); no 1M, no view timings. */
  noSidecar: boolean;
  /** Another build of plugin.wasm for (c) (e.g. to compare memory per stream of two builds). */
  pluginWasm?: string;
  /** An earlier build of plugin.wasm, measured beside (c) in the same rounds as (c0). */
  baselineWasm?: string;
  /** Another sidecar entry (a TypeScript main run with tsx), to compare sidecar changes. */
  sidecarMain?: string;
  json?: string;
}

/** The flags, checked; `--help` prints them and exits. */
function readConfig(): BenchConfig {
  const f = readFlags("traefik-bench", "npm run bench -- [--flag value ...]", {
    json: { name: "json", type: text(nonEmpty, "file"), help: "write the results to this JSON file" },
    sessions: { name: "sessions", type: int(0, 5_000_000), def: 1_000_000, help: "sessions in the view" },
    concurrency: { name: "concurrency", type: int(1, 256), def: 16, help: "requests in flight (throughput pass)" },
    latencyConcurrency: {
      name: "latency-concurrency",
      type: int(1, 256),
      def: 1,
      help: "requests in flight (latency pass)",
    },
    duration: { name: "duration", type: int(1, 120), def: 6, help: "seconds per mode and round" },
    warmup: { name: "warmup", type: int(0, 30), def: 1, help: "seconds of warm-up per mode and round" },
    rounds: { name: "rounds", type: int(1, 10), def: 3, help: "alternating rounds" },
    streams: { name: "streams", type: int(0, 5000), def: 1000, help: "open SSE streams for the memory figures" },
    cycles: {
      name: "cycles",
      type: int(0, 10_000),
      def: 200,
      help: "whole sessions (initialize to DELETE) per mode and round, for Traefik's CPU per session",
    },
    registrations: { name: "registrations", type: int(0, 5000), def: 200, help: "registrations timed into the view" },
    restarts: { name: "restarts", type: int(0, 3), def: 3, help: "node restarts timed to the first edge 404" },
    pairs: {
      name: "pairs",
      type: int(0, 200),
      def: 40,
      help: "2 s window pairs of (b) and (f) per concurrency: the fast path's CPU ratio, pair by pair",
    },
    profile: { name: "profile", type: bool, def: false, help: "CPU profiles of Traefik during (b), (c) and (f)" },
    noSidecar: {
      name: "no-sidecar",
      type: bool,
      def: false,
      help: "the plugin without a view (its fail-open path); skips what needs the view",
    },
    pluginWasm: { name: "plugin-wasm", type: file, help: "another plugin build for (c)" },
    baselineWasm: {
      name: "baseline-wasm",
      type: file,
      help: "an earlier plugin build, measured beside (c) in the same rounds as (c0)",
    },
    sidecarMain: { name: "sidecar-main", type: file, help: "another sidecar entry (TypeScript, run with tsx)" },
  });
  const noView = f.noSidecar;
  return {
    sessions: noView ? 0 : f.sessions,
    concurrency: f.concurrency,
    latencyConcurrency: f.latencyConcurrency,
    durationMs: f.duration * 1000,
    warmupMs: f.warmup * 1000,
    rounds: f.rounds,
    streams: f.streams,
    cycles: f.cycles,
    registrations: noView ? 0 : f.registrations,
    restarts: noView ? 0 : f.restarts,
    pairs: noView ? 0 : f.pairs,
    profile: f.profile,
    noSidecar: f.noSidecar,
    pluginWasm: f.pluginWasm,
    baselineWasm: f.baselineWasm,
    sidecarMain: f.sidecarMain,
    json: f.json,
  };
}

const SESSIONS_PER_WORKER = 4;

const log = progressLog("bench");

/** Go heap in use after a forced collection (the debug API's heap profile with gc=1 forces one). */
async function liveHeapBytes(apiUrl: string): Promise<number> {
  const hp = await request(`${apiUrl}/debug/pprof/heap?gc=1`);
  await hp.body.dump();
  const text = await scrapeMetrics(`${apiUrl}/metrics`, 3000).catch(() => null);
  return text === null ? NaN : metricSum(text, "go_memstats_heap_alloc_bytes");
}

// ---------------------------------------------------------------------------------------------
// The view

/** Sessions in the published view: the record counts of every shard of the current epoch. */
async function viewSessionCount(shared: string): Promise<number> {
  const meta = await readMeta(shared);
  if (!meta) return 0;
  const dir = viewPaths(shared).shards;
  let total = 0;
  const head = Buffer.alloc(SHARD_HEADER_BYTES);
  for (const name of await listShards(shared)) {
    const fh = await open(join(dir, name), "r").catch(() => null);
    if (!fh) continue;
    try {
      const { bytesRead } = await fh.read(head, 0, SHARD_HEADER_BYTES, 0);
      const h = bytesRead === SHARD_HEADER_BYTES ? decodeShardHeader(head) : null;
      if (h?.epoch === meta.epoch) total += h.count;
    } catch {
      /* a shard being replaced, or not one: not counted */
    } finally {
      await fh.close();
    }
  }
  return total;
}

/** Writes `count` session records to Redis, spread over the stack's nodes (their current boots). */
async function fillRegistry(stack: Stack, count: number): Promise<number> {
  const redis = new Redis(stack.redisUrl!, { maxRetriesPerRequest: 3 });
  const boots = await Promise.all(stack.nodes.map((n) => n.boot()));
  const recs: string[] = stack.nodes.map((n, i) =>
    encodeSession({
      node: n.url,
      cookie: n.cookie,
      boot: boots[i]!,
      created: Date.now(),
      source: "node",
    } satisfies SessionRecord),
  );
  const prefix = `bench-${randomBytes(6).toString("hex")}-`;
  const t0 = performance.now();
  const BATCH = 10_000;
  for (let i = 0; i < count; i += BATCH) {
    const p = redis.pipeline();
    for (let j = i; j < Math.min(count, i + BATCH); j++)
      p.set(sessionKey(prefix + j), recs[j % recs.length]!, "PX", 3_600_000);
    const res = await p.exec();
    const bad = res?.find(([e]) => e);
    if (bad) throw new BenchError(`Redis refused a session write: ${bad[0]!.message}`, "ERR_BENCH_REDIS");
  }
  await redis.quit();
  return performance.now() - t0;
}

// ---------------------------------------------------------------------------------------------
// Registration -> visible in the view

async function measureRegistration(
  stack: Stack,
  shared: string,
  n: number,
): Promise<{ samplesMs: number[]; putMs: number[]; missing: number }> {
  const node = stack.nodes[0]!;
  const boot = await node.boot();
  // The registry exactly as the node library opens it; it queues nothing while disconnected: wait for its connection first.
  const registry = new RedisRegistry(
    nodeRedisOptions(stack.redisUrl!, {
      sessionTtlMs: 3_600_000,
      nodeTtlMs: 15_000,
      timeoutMs: 2000,
      onError: () => {},
    }),
  );
  if (registry.status() !== "ready") await new Promise<void>((r) => registry.onStatus((s) => s === "ready" && r()));
  const shards = viewPaths(shared).shards;
  let wake: (() => void) | null = null;
  // inotify on the shards directory: the sidecar renames a shard into place when it changes.
  const watcher = watch(shards, () => wake?.());
  const samplesMs: number[] = [];
  const putMs: number[] = [];
  let missing = 0;
  try {
    for (let i = 0; i < n; i++) {
      const id = `bench-reg-${randomBytes(12).toString("hex")}`;
      const hash = sessionHash(id);
      const record: SessionRecord = { node: node.url, cookie: node.cookie, boot, created: Date.now(), source: "node" };
      const t0 = performance.now();
      await registry.registerSession(id, record);
      putMs.push(performance.now() - t0);
      const deadline = t0 + 2000;
      let seen = false;
      while (performance.now() < deadline) {
        if (await lookupSession(shared, hash)) {
          seen = true;
          break;
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, 1);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
        wake = null;
      }
      if (seen) samplesMs.push(performance.now() - t0);
      else missing++;
      await sleep(10 + (i % 7)); // registrations at irregular moments, not in lockstep with a publish timer
    }
  } finally {
    watcher.close();
    await registry.close();
  }
  return { samplesMs, putMs, missing };
}

// ---------------------------------------------------------------------------------------------
// Node restart -> first edge 404

interface RestartSample {
  node: string;
  /** From the kill to the first 404 the plugin gave (Mcp-Affinity: lost). */
  edge404AfterKillMs: number | null;
  /** From the new process answering /healthz to that 404. */
  edge404AfterReadyMs: number | null;
  /** From the kill to the new process answering /healthz. */
  readyAfterKillMs: number;
  /** Answers seen while polling, by "status affinity". */
  answers: Record<string, number>;
}

async function measureRestart(stack: Stack, s: BenchSession, nodeIndex: number): Promise<RestartSample> {
  const node = stack.nodes[nodeIndex]!;
  const agent = new Agent({ connections: 2 });
  const answers: Record<string, number> = {};
  let edge404At: number | null = null;
  let stop = false;
  const t0 = performance.now();
  const poll = (async () => {
    let rpc = 1_000_000;
    while (!stop && performance.now() - t0 < 30_000) {
      try {
        const r = await agent.request({
          origin: stack.httpBase,
          path: "/mcp",
          method: "POST",
          headers: sessionHeaders(s.id),
          body: counterBody(rpc++),
          headersTimeout: 2000,
          bodyTimeout: 2000,
        });
        await r.body.dump();
        const key = `${r.statusCode} ${String(r.headers["mcp-affinity"] ?? "-")}`;
        answers[key] = (answers[key] ?? 0) + 1;
        if (r.statusCode === 404 && r.headers["mcp-affinity"] === "lost") {
          edge404At = performance.now();
          return;
        }
      } catch (err) {
        const key = `error ${(err as { code?: string }).code ?? (err as Error).message}`;
        answers[key] = (answers[key] ?? 0) + 1;
      }
      await sleep(2);
    }
  })();
  await node.restart();
  const readyAt = performance.now();
  await poll;
  stop = true;
  await agent.close();
  return {
    node: node.name,
    edge404AfterKillMs: edge404At === null ? null : edge404At - t0,
    edge404AfterReadyMs: edge404At === null ? null : edge404At - readyAt,
    readyAfterKillMs: readyAt - t0,
    answers,
  };
}

// ---------------------------------------------------------------------------------------------
// Profiling (Traefik's debug API serves net/http/pprof)

async function captureProfile(apiUrl: string, seconds: number, outFile: string): Promise<string | null> {
  try {
    const r = await request(`${apiUrl}/debug/pprof/profile?seconds=${seconds}`, {
      headersTimeout: (seconds + 10) * 1000,
      bodyTimeout: (seconds + 10) * 1000,
    });
    if (r.statusCode !== 200) {
      await r.body.dump();
      return null;
    }
    writeFileSync(outFile, Buffer.from(await r.body.arrayBuffer()));
    return outFile;
  } catch {
    return null;
  }
}

/** Shares of a Traefik CPU profile: the plugin (wazero frames), GC, and the kernel (syscalls). */
function profileSummary(file: string): {
  totalMs: number;
  share: Record<string, number>;
  top: string;
  wazeroTop: string;
} {
  const bin = traefikBinary();
  const top = pprofTop(file, bin);
  const totalM = /Total samples = ([\d.]+)(ms|s)/.exec(top);
  const totalMs = totalM ? Number(totalM[1]) * (totalM[2] === "s" ? 1000 : 1) : NaN;
  const pct = (focus: string) => {
    const out = pprofTop(file, bin, [`-focus=${focus}`, "-nodecount=25"]);
    const m = /accounting for \S+, ([\d.]+)% of/.exec(out);
    return { pct: m ? Number(m[1]) : 0, out };
  };
  const wz = pct("tetratelabs/wazero");
  return {
    totalMs,
    share: {
      // The plugin's own work: guest code, the host functions it calls, new instances.
      plugin: wz.pct,
      gc: pct("runtime\\.gcBgMarkWorker|runtime\\.gcAssistAlloc|runtime\\.bgsweep|runtime\\.bgscavenge").pct,
      malloc: pct("runtime\\.mallocgc").pct,
      syscalls: pct("syscall\\.|internal/runtime/syscall").pct,
    },
    top,
    wazeroTop: wz.out,
  };
}

function pprofTop(profile: string, binary: string, extra: string[] = ["-nodecount=35"]): string {
  try {
    return execFileSync("go", ["tool", "pprof", "-top", ...extra, binary, profile], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    }).toString();
  } catch (err) {
    return `go tool pprof failed: ${(err as Error).message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Results

interface RoundFigures {
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  traefikCpuUs: number | null;
  nodesCpuUs: number;
}

interface ModeFigures {
  name: string;
  label: string;
  rps: number;
  latencyUs: LatencySummary;
  requests: number;
  errors: number;
  discontinuities: number;
  errorSamples: string[];
  rounds: RoundFigures[];
  /** CPU time per request of the Traefik serving this mode (none for the direct case). */
  traefikCpuUsPerRequest: number | null;
  /** CPU time per request of the three nodes. */
  nodesCpuUsPerRequest: number;
}

interface RegistryFigures {
  sessions: number;
  redisWriteMs: number;
  sidecarLoadToViewMs: number;
}

interface LoadFigures {
  sessions: number;
  durationMsPerRound: number;
  rounds: number;
  throughput: { concurrency: number; modes: ModeFigures[] };
  latency: { concurrency: number; modes: ModeFigures[] };
}

interface ProfileFigures {
  file: string;
  requests: number;
  totalMs: number;
  sampledUsPerRequest: number;
  sharePercent: Record<string, number>;
  usPerRequest: Record<string, number>;
  wazeroTop: string[];
}

interface StreamFigures {
  opened: number;
  failed: number;
  failures: string[];
  rssBeforeBytes: number;
  rssWithStreamsBytes: number;
  perStreamBytes: number;
  liveHeapBeforeBytes: number;
  liveHeapWithStreamsBytes: number;
  liveHeapPerStreamBytes: number;
  /** Traefik with the plugin only: its heap in use by allocation site. */
  heapTop?: string[];
}

interface RegistrationFigures {
  count: number;
  missing: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number | null;
  redisWriteP50Ms: number;
}

interface Target {
  what: string;
  value: string;
  target: string;
  /** null: reported, no target. */
  ok: boolean | null;
}

/** The JSON document of a run (--json), its sections in the order the phases fill them. */
interface TraefikBenchResults extends BenchResults {
  sharedDir?: string;
  registry?: RegistryFigures;
  viewSessions?: number;
  load?: LoadFigures;
  profile?: Record<string, ProfileFigures>;
  sessionCycles?: SessionCycleFigures[];
  pairs?: PairFigures[];
  sse?: { plain: StreamFigures; plugin: StreamFigures; fast?: StreamFigures };
  registration?: RegistrationFigures;
  restart?: { samples: RestartSample[] };
  targets?: Target[];
}

/** What every phase works on. */
interface BenchEnv {
  cfg: BenchConfig;
  /** Redis, three reference nodes and Traefik with the plugin; no sidecar of its own. */
  stack: Stack;
  /** Traefik without the plugin, in front of the same nodes. */
  plain: ExtraTraefik;
  /** Traefik with the plugin and the fast-path routers the sidecar writes (null: --no-sidecar). */
  fast: ExtraTraefik | null;
  /** Traefik with the --baseline-wasm build of the plugin (null: none given). */
  baseline: ExtraTraefik | null;
  /**
   * The directory shared by the sidecar and the plugin: a tmpfs when the machine has /dev/shm, as
   * in a deployment (an emptyDir with medium Memory), not the test stack's folder on disk.
   */
  shared: string;
}

const fmt = (n: number | null | undefined, digits = 0) =>
  n === null || n === undefined || Number.isNaN(n) ? "n/a" : n.toFixed(digits);

// ---------------------------------------------------------------------------------------------
// Phases

/** 1,000,000 sessions: written to Redis as nodes would, loaded by a fresh sidecar (its start-up reconcile). */
async function loadRegistryIntoView(env: BenchEnv, sidecar: { restart(): Promise<void> }): Promise<RegistryFigures> {
  const { cfg, stack, shared } = env;
  log(`writing ${cfg.sessions} session records to Redis`);
  const writeMs = await fillRegistry(stack, cfg.sessions);
  log(`  written in ${(writeMs / 1000).toFixed(1)} s; restarting the sidecar so it loads them`);
  const t0 = performance.now();
  await sidecar.restart();
  await waitUntil(
    "the view to hold every session",
    async () => (await viewSessionCount(shared)) >= cfg.sessions,
    180_000,
    500,
  );
  const loadMs = performance.now() - t0;
  log(`  the view holds them ${(loadMs / 1000).toFixed(1)} s after the sidecar's start`);
  return { sessions: cfg.sessions, redisWriteMs: Math.round(writeMs), sidecarLoadToViewMs: Math.round(loadMs) };
}

/** Real sessions on the nodes, initialized through plain Traefik (which hands out the sticky cookie). */
async function initSessions(env: BenchEnv): Promise<{ load: BenchSession[]; streams: BenchSession[] }> {
  const { cfg, stack, plain, shared } = env;
  const cookieToUrl = new Map(stack.nodes.map((n) => [n.cookie, n.url]));
  const nLoad = cfg.concurrency * SESSIONS_PER_WORKER;
  log(`initializing ${nLoad} load sessions and ${cfg.streams} stream sessions through Traefik`);
  const initAgent = new Agent({ connections: 16 });
  const all: BenchSession[] = [];
  let next = 0;
  const total = nLoad + cfg.streams;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < total) {
        next++;
        all.push(await initSession(initAgent, plain.base, cookieToUrl));
      }
    }),
  );
  await initAgent.close();
  const perNode = stack.nodes.map((n) => all.filter((s) => s.nodeUrl === n.url).length);
  log(`  sessions per node: ${perNode.join(" / ")}`);
  // The measured sessions must be in the view before (c) runs: the node registered each one.
  if (!cfg.noSidecar) await waitSessionsInView("the real sessions in the view", shared, all);
  return { load: all.slice(0, nLoad), streams: all.slice(nLoad) };
}

type ModeTarget = LoadTarget & { label: string };

/** The modes of the tool-call load: a, b, c (only with a view) and c'. */
function loadTargets(env: BenchEnv): ModeTarget[] {
  const { cfg, stack, plain } = env;
  return [
    { name: "a", label: "(a) straight to the node", originOf: (s) => s.nodeUrl, withCookie: false },
    { name: "b", label: "(b) Traefik, sticky cookie only", originOf: () => plain.base, withCookie: true },
    ...(cfg.noSidecar
      ? []
      : [
          {
            name: "c",
            label: "(c) Traefik + plugin, no cookie (pinned by session id)",
            originOf: () => stack.httpBase,
            withCookie: false,
          },
        ]),
    ...(env.baseline
      ? [
          {
            name: "c0",
            label: "(c0) Traefik + the baseline plugin build, no cookie",
            originOf: () => env.baseline!.base,
            withCookie: false,
          },
        ]
      : []),
    {
      name: "c2",
      label: "(c') Traefik + plugin, client sends the cookie",
      originOf: () => stack.httpBase,
      withCookie: true,
    },
    ...(env.fast
      ? [
          {
            name: "f",
            label: "(f) Traefik + plugin + fast path, no cookie",
            originOf: () => env.fast!.base,
            withCookie: false,
          },
        ]
      : []),
  ];
}

interface Pass {
  name: "throughput" | "latency";
  concurrency: number;
}

/** A CPU profile of the serving Traefik over one measured window, and the requests it covers. */
interface ProfileCapture {
  file: string;
  requests: number;
}

/**
 * Tool-call load in two passes: throughput at `concurrency` (every core busy: the plugin's CPU
 * competes with the node's), latency at `latencyConcurrency` (nothing queues: the figures are the
 * path itself).
 */
async function measureLoad(
  env: BenchEnv,
  loadSessions: BenchSession[],
): Promise<{ figures: LoadFigures; profiles: Record<string, ProfileCapture> }> {
  const { cfg } = env;
  const targets = loadTargets(env);
  const profiles: Record<string, ProfileCapture> = {};
  const pass = (p: Pass) => runPass(env, targets, loadSessions, p, profiles);
  const throughput = await pass({ name: "throughput", concurrency: cfg.concurrency });
  const latency = await pass({ name: "latency", concurrency: cfg.latencyConcurrency });
  return {
    figures: {
      sessions: cfg.concurrency * SESSIONS_PER_WORKER,
      durationMsPerRound: cfg.durationMs,
      rounds: cfg.rounds,
      throughput: { concurrency: cfg.concurrency, modes: throughput },
      latency: { concurrency: cfg.latencyConcurrency, modes: latency },
    },
    profiles,
  };
}

/** One mode's rounds so far. */
interface ModeTotals {
  samples: Samples;
  requests: number;
  errors: number;
  disc: number;
  errorSamples: string[];
  rounds: RoundFigures[];
}

/** Rounds of every mode, the order reversed every other round to cancel drift. */
async function runPass(
  env: BenchEnv,
  targets: ModeTarget[],
  loadSessions: BenchSession[],
  pass: Pass,
  profiles: Record<string, ProfileCapture>,
): Promise<ModeFigures[]> {
  const { cfg } = env;
  const byMode = new Map<string, ModeTotals>(
    targets.map((t) => [
      t.name,
      { samples: new Samples(), requests: 0, errors: 0, disc: 0, errorSamples: [], rounds: [] },
    ]),
  );
  const sessions = loadSessions.slice(0, pass.concurrency * SESSIONS_PER_WORKER);
  for (let round = 0; round < cfg.rounds; round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      // --profile: CPU profiles of the serving Traefik in the first throughput round of (b), (c) and (f).
      const profTarget = cfg.noSidecar ? "c2" : "c";
      const profileThis =
        cfg.profile && pass.name === "throughput" && round === 0 && ["b", profTarget, "f"].includes(t.name);
      const { r, figures, profile } = await measureRound(env, t, sessions, pass, profileThis);
      if (profile) profiles[t.name] = { file: profile, requests: r.requests };
      const m = byMode.get(t.name)!;
      m.samples.merge(r.latencyUs);
      m.requests += r.requests;
      m.errors += r.errors;
      m.disc += r.discontinuities;
      m.errorSamples.push(...r.errorSamples.slice(0, 5 - m.errorSamples.length));
      m.rounds.push(figures);
      log(
        `  ${pass.name} c=${pass.concurrency} round ${round + 1} ${t.name.padEnd(2)}: ${figures.rps.toFixed(0)} req/s, p50 ${figures.p50.toFixed(0)} us, p99 ${figures.p99.toFixed(0)} us, errors ${r.errors}, discontinuities ${r.discontinuities}${r.errorSamples.length ? ` (${r.errorSamples.join("; ")})` : ""}`,
      );
    }
  }
  return targets.map((t) => modeFigures(t, byMode.get(t.name)!));
}

/**
 * One mode for one round, with the CPU time of the serving Traefik and of the nodes during the
 * measured window (a figure that other work on the machine disturbs far less than latency), and
 * a CPU profile of that window when asked: its samples can be divided by its requests.
 */
async function measureRound(
  env: BenchEnv,
  t: ModeTarget,
  sessions: BenchSession[],
  pass: Pass,
  profileThis: boolean,
  window: { warmupMs: number; durationMs: number } = env.cfg,
): Promise<{ r: LoadResult; figures: RoundFigures; profile: string | null }> {
  const { cfg, stack } = env;
  const serving = servingTraefik(env, t.name);
  const traefikPid = serving?.pid ?? null;
  const nodePids = stack.nodes.map((n) => n.proc.pid!);
  const cpuNow = () => ({
    traefik: traefikPid ? cpuMicros(traefikPid) : 0,
    nodes: nodePids.reduce((a, p) => a + cpuMicros(p), 0),
  });
  let cpu0 = { traefik: 0, nodes: 0 };
  let cpu1 = { traefik: 0, nodes: 0 };
  let profiling: Promise<string | null> | null = null;
  const r = await runLoad(t, sessions, {
    concurrency: pass.concurrency,
    warmupMs: window.warmupMs,
    durationMs: window.durationMs,
    onWindowStart: () => {
      cpu0 = cpuNow();
      if (profileThis)
        profiling = captureProfile(
          serving!.apiUrl,
          Math.max(1, Math.round(cfg.durationMs / 1000)),
          join(stack.dir, `traefik-${t.name}.cpu.pprof`),
        );
    },
    onWindowEnd: () => (cpu1 = cpuNow()),
  });
  const profile = profiling ? await (profiling as Promise<string | null>) : null;
  const v = r.latencyUs.sorted();
  return {
    r,
    figures: {
      rps: r.requests / r.seconds,
      p50: percentile(v, 50),
      p99: percentile(v, 99),
      p999: percentile(v, 99.9),
      traefikCpuUs: t.name === "a" ? null : (cpu1.traefik - cpu0.traefik) / r.requests,
      nodesCpuUs: (cpu1.nodes - cpu0.nodes) / r.requests,
    },
    profile,
  };
}

/** The Traefik a mode's requests go through (none for the direct case). */
function servingTraefik(env: BenchEnv, mode: string): { pid: number; apiUrl: string } | null {
  if (mode === "a") return null;
  if (mode === "b") return { pid: env.plain.proc.pid!, apiUrl: env.plain.apiUrl };
  if (mode === "f") return { pid: env.fast!.proc.pid!, apiUrl: env.fast!.apiUrl };
  if (mode === "c0") return { pid: env.baseline!.proc.pid!, apiUrl: env.baseline!.apiUrl };
  return { pid: env.stack.traefik.pid!, apiUrl: env.stack.apiUrl };
}

/** Every figure is the median of the rounds' own figures: one noisy round cannot decide a ratio. */
function modeFigures(t: ModeTarget, m: ModeTotals): ModeFigures {
  const med = (k: "rps" | "p50" | "p99" | "p999" | "nodesCpuUs") => median(m.rounds.map((x) => x[k]));
  const pooled = summarize(m.samples);
  return {
    name: t.name,
    label: t.label,
    rps: med("rps"),
    latencyUs: { ...pooled, p50: med("p50"), p99: med("p99"), p999: med("p999") },
    requests: m.requests,
    errors: m.errors,
    discontinuities: m.disc,
    errorSamples: m.errorSamples,
    rounds: m.rounds,
    traefikCpuUsPerRequest: t.name === "a" ? null : median(m.rounds.map((x) => x.traefikCpuUs!)),
    nodesCpuUsPerRequest: med("nodesCpuUs"),
  };
}

/** One window of a (b)/(f) pair. */
const PAIR_WINDOW = { warmupMs: 300, durationMs: 2000 };

/** The fast path against plain Traefik in short windows, pair by pair, at one concurrency. */
interface PairFigures {
  concurrency: number;
  pairs: number;
  /** Each pair's (f)/(b) Traefik CPU per call, in the order measured. */
  ratios: number[];
  median: number;
  /** The middle half of the ratios: how far one pair's noise reaches. */
  quartiles: [number, number];
  errors: { b: number; f: number };
}

/**
 * (b) and (f) alternate in 2 s windows, `pairs` times per concurrency (who goes first alternates
 * too), and each pair gives one ratio of Traefik CPU per call. Seconds apart, the two windows of a
 * pair meet the same machine: many short pairs resolve a few percent where a few long rounds, each
 * disturbed differently, scatter by more than that.
 */
async function measurePairs(env: BenchEnv, loadSessions: BenchSession[]): Promise<PairFigures[]> {
  const { cfg } = env;
  const targets = loadTargets(env).filter((t) => t.name === "b" || t.name === "f");
  const out: PairFigures[] = [];
  for (const concurrency of [cfg.concurrency, cfg.latencyConcurrency]) {
    log(`(b)/(f) in ${cfg.pairs} pairs of 2 s windows, concurrency ${concurrency}`);
    const sessions = loadSessions.slice(0, concurrency * SESSIONS_PER_WORKER);
    const pass: Pass = { name: concurrency === cfg.concurrency ? "throughput" : "latency", concurrency };
    const ratios: number[] = [];
    const errors = { b: 0, f: 0 };
    for (let i = 0; i < cfg.pairs; i++) {
      const cpu: Record<string, number> = {};
      for (const t of i % 2 === 0 ? targets : [...targets].reverse()) {
        const { r, figures } = await measureRound(env, t, sessions, pass, false, PAIR_WINDOW);
        cpu[t.name] = figures.traefikCpuUs!;
        errors[t.name as "b" | "f"] += r.errors;
      }
      ratios.push(cpu.f! / cpu.b!);
    }
    const sorted = Float64Array.from(ratios).sort();
    const q = (p: number) => percentile(sorted, p);
    out.push({ concurrency, pairs: cfg.pairs, ratios, median: median(ratios), quartiles: [q(25), q(75)], errors });
    log(`  median (f)/(b) ${median(ratios).toFixed(3)}, middle half ${q(25).toFixed(2)}-${q(75).toFixed(2)}`);
  }
  return out;
}

/** The CPU profiles' shares, per request; the pprof listings are written beside each profile. */
function summarizeProfiles(profiles: Record<string, ProfileCapture>): Record<string, ProfileFigures> {
  const out: Record<string, ProfileFigures> = {};
  for (const [mode, { file, requests }] of Object.entries(profiles)) {
    const sum = profileSummary(file);
    writeFileSync(file.replace(/\.pprof$/, ".txt"), sum.top);
    writeFileSync(file.replace(/\.pprof$/, ".wazero.txt"), sum.wazeroTop);
    const usPerRequest = (pct: number) => (sum.totalMs * 1000 * pct) / 100 / requests;
    const perRequest = Object.fromEntries(Object.entries(sum.share).map(([k, v]) => [k, usPerRequest(v)]));
    out[mode] = {
      file,
      requests,
      totalMs: sum.totalMs,
      sampledUsPerRequest: usPerRequest(100),
      sharePercent: sum.share,
      usPerRequest: perRequest,
      wazeroTop: sum.wazeroTop.split("\n").slice(0, 35),
    };
    log(
      `  CPU profile of Traefik during (${mode}): ${sum.totalMs} ms sampled over ${requests} requests = ${usPerRequest(100).toFixed(0)} us/request; ` +
        Object.entries(sum.share)
          .map(([k, v]) => `${k} ${v.toFixed(1)}% (${usPerRequest(v).toFixed(1)} us)`)
          .join(", "),
    );
  }
  return out;
}

/**
 * SSE streams and Traefik's memory, after the load: 1,000 streams leave 1,000 plugin instances
 * and a larger heap behind, which would slow the load phases that followed.
 */
async function measureStreams(
  env: BenchEnv,
  streamSessions: BenchSession[],
): Promise<{ plain: StreamFigures; plugin: StreamFigures; fast?: StreamFigures }> {
  const { cfg, stack, plain, fast } = env;
  const plainFigures = await measureStreamsOn("plain", plain.base, plain.proc.pid!, plain.apiUrl, true, streamSessions);
  const pluginFigures = await measureStreamsOn(
    "plugin",
    stack.httpBase,
    stack.traefik.pid!,
    stack.apiUrl,
    cfg.noSidecar,
    streamSessions,
    join(stack.dir, "traefik-plugin-streams.heap.pprof"),
  );
  const fastFigures = fast
    ? await measureStreamsOn("fast", fast.base, fast.proc.pid!, fast.apiUrl, false, streamSessions)
    : undefined;
  return { plain: plainFigures, plugin: pluginFigures, ...(fastFigures ? { fast: fastFigures } : {}) };
}

/** One Traefik's RSS and live Go heap before and with a stream open per session; `heapFile`: keep its heap profile. */
async function measureStreamsOn(
  name: "plain" | "plugin" | "fast",
  base: string,
  pid: number,
  apiUrl: string,
  withCookie: boolean,
  sessions: BenchSession[],
  heapFile?: string,
): Promise<StreamFigures> {
  await sleep(1500);
  const heapBefore = await liveHeapBytes(apiUrl);
  const before = rssBytes(pid);
  const st = await openStreams(base, sessions, withCookie);
  await sleep(2000);
  const after = rssBytes(pid);
  const heapAfter = await liveHeapBytes(apiUrl);
  let heapTop: string[] | undefined;
  if (heapFile) {
    // What the plugin's streams hold, by allocation site (wazero memory, call stacks, ...).
    const hp = await request(`${apiUrl}/debug/pprof/heap`);
    writeFileSync(heapFile, Buffer.from(await hp.body.arrayBuffer()));
    heapTop = pprofTop(heapFile, traefikBinary(), ["-sample_index=inuse_space", "-nodecount=12"])
      .split("\n")
      .filter((l) => /^\s+[\d.]+[kMG]?B/.test(l));
  }
  await st.close();
  const perStream = st.opened > 0 ? (after - before) / st.opened : NaN;
  const heapPerStream = st.opened > 0 ? (heapAfter - heapBefore) / st.opened : NaN;
  log(
    `  ${name}: ${st.opened} streams open (${st.failed} failed${st.failures.length ? `: ${st.failures.join("; ")}` : ""}), RSS ${(before / 2 ** 20).toFixed(1)} -> ${(after / 2 ** 20).toFixed(1)} MiB, ${(perStream / 1024).toFixed(1)} KiB RSS and ${(heapPerStream / 1024).toFixed(1)} KiB live Go heap per stream`,
  );
  await sleep(1000);
  return {
    opened: st.opened,
    failed: st.failed,
    failures: st.failures,
    rssBeforeBytes: before,
    rssWithStreamsBytes: after,
    perStreamBytes: Math.round(perStream),
    liveHeapBeforeBytes: heapBefore,
    liveHeapWithStreamsBytes: heapAfter,
    liveHeapPerStreamBytes: Math.round(heapPerStream),
    heapTop,
  };
}

/** Whole sessions through one Traefik: what a session costs Traefik, initialize and close included. */
interface SessionCycleFigures {
  name: string;
  label: string;
  sessions: number;
  errors: number;
  errorSamples: string[];
  /** Median over the rounds of the serving Traefik's CPU per session. */
  traefikCpuUsPerSession: number;
}

/** Calls per session in the session-cycle phase (besides initialize, initialized and DELETE). */
const CYCLE_CALLS = 3;

/**
 * Sessions from start to end (initialize, initialized, CYCLE_CALLS counter calls, DELETE) through
 * plain Traefik (with its cookie), the plugin and the fast path (no cookie), in alternating rounds:
 * the fast path runs the plugin for the initialize, so its saving depends on a session's length.
 */
async function measureSessionCycles(env: BenchEnv): Promise<SessionCycleFigures[]> {
  const { cfg, stack, plain, fast } = env;
  const modes = [
    { name: "b", label: "(b) Traefik, sticky cookie only", base: plain.base, withCookie: true },
    { name: "c", label: "(c) Traefik + plugin, no cookie", base: stack.httpBase, withCookie: false },
    ...(fast ? [{ name: "f", label: "(f) Traefik + plugin + fast path", base: fast.base, withCookie: false }] : []),
  ];
  const perRound = cfg.cycles;
  const concurrency = 4;
  const byMode = new Map(
    modes.map((m) => [m.name, { cpu: [] as number[], sessions: 0, errors: 0, samples: [] as string[] }]),
  );
  log(
    `session cycles: ${perRound} sessions per mode and round (initialize, ${CYCLE_CALLS} calls, DELETE), concurrency ${concurrency}`,
  );
  for (let round = 0; round < cfg.rounds; round++) {
    for (const m of round % 2 === 0 ? modes : [...modes].reverse()) {
      const agent = new Agent({ connections: concurrency });
      const pid = servingTraefik(env, m.name)!.pid;
      const acc = byMode.get(m.name)!;
      const fail = (what: string) => {
        acc.errors++;
        if (acc.samples.length < 5) acc.samples.push(what.slice(0, 200));
      };
      let next = 0;
      const cpu0 = cpuMicros(pid);
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < perRound) {
            next++;
            try {
              const s = await rawInitialize(m.base, {
                dispatcher: agent,
                withCookie: m.withCookie,
                clientName: "bench-cycle",
              });
              const headers = sessionHeaders(s.sessionId, m.withCookie ? s.cookie : undefined);
              for (let k = 0; k < CYCLE_CALLS; k++) {
                const r = await request(`${m.base}/mcp`, {
                  method: "POST",
                  headers,
                  body: counterBody(k + 2),
                  dispatcher: agent,
                });
                const text = await r.body.text();
                if (r.statusCode !== 200 || counterOf(text) !== k + 1) fail(`call ${k + 1}: ${r.statusCode} ${text}`);
              }
              const d = await request(`${m.base}/mcp`, { method: "DELETE", headers, dispatcher: agent });
              await d.body.dump();
              if (d.statusCode !== 200) fail(`DELETE: ${d.statusCode}`);
              acc.sessions++;
            } catch (err) {
              fail((err as Error).message);
            }
          }
        }),
      );
      acc.cpu.push((cpuMicros(pid) - cpu0) / perRound);
      await agent.close();
      log(
        `  round ${round + 1} ${m.name.padEnd(2)}: ${fmt(acc.cpu.at(-1))} us of Traefik CPU per session, errors ${acc.errors}`,
      );
    }
  }
  return modes.map((m) => {
    const acc = byMode.get(m.name)!;
    return {
      name: m.name,
      label: m.label,
      sessions: acc.sessions,
      errors: acc.errors,
      errorSamples: acc.samples,
      traefikCpuUsPerSession: median(acc.cpu),
    };
  });
}

/** Registration -> view: sessions registered as a node does, timed into the view. */
async function registrationFigures(env: BenchEnv): Promise<RegistrationFigures> {
  const { cfg, stack, shared } = env;
  log(`registering ${cfg.registrations} sessions as a node does and timing their arrival in the view`);
  const reg = await measureRegistration(stack, shared, cfg.registrations);
  const v = Float64Array.from(reg.samplesMs).sort();
  return {
    count: reg.samplesMs.length,
    missing: reg.missing,
    p50Ms: percentile(v, 50),
    p99Ms: percentile(v, 99),
    maxMs: v.length ? v[v.length - 1]! : null,
    redisWriteP50Ms: median(reg.putMs),
  };
}

/** Node restart -> first edge 404, for the first `restarts` nodes (last: it ends their sessions). */
async function measureRestarts(env: BenchEnv, loadSessions: BenchSession[]): Promise<RestartSample[]> {
  const { cfg, stack } = env;
  log(`restarting ${cfg.restarts} node(s) and timing the first edge 404 for their sessions`);
  const samples: RestartSample[] = [];
  for (let i = 0; i < cfg.restarts; i++) {
    const s = loadSessions.find((x) => x.nodeUrl === stack.nodes[i]!.url);
    if (!s) continue;
    const r = await measureRestart(stack, s, i);
    samples.push(r);
    log(
      `  ${r.node}: edge 404 ${fmt(r.edge404AfterKillMs, 1)} ms after the kill, ${fmt(r.edge404AfterReadyMs, 1)} ms after the new process was ready; answers ${JSON.stringify(r.answers)}`,
    );
    await stack.waitTraefikReady();
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const cfg = readConfig();
  // Flags are checked first, before the builds: --help and a typo cost nothing.
  ensureBenchDeps();
  const results: TraefikBenchResults = startResults(cfg, log);
  log(`starting the stack: redis, sidecar, 3 reference nodes, Traefik with the plugin`);
  // The stack without its own sidecar: the bench runs the sidecar's CLI itself, with the settings a
  // deployment would use (defaults, plus Traefik's API for server health).
  const stack = await startStack({
    name: "bench",
    nodes: 3,
    plugin: true,
    sidecar: false,
    traefikLogLevel: "ERROR",
    pluginSettings: { staleAfterMs: "5000" },
  });
  const shared = existsSync("/dev/shm") ? mkdtempSync("/dev/shm/mcpa-bench-") : join(stack.dir, "shared");
  results.sharedDir = shared;
  let sidecar: Awaited<ReturnType<typeof startBenchSidecar>> | null = null;
  let plain: ExtraTraefik | null = null;
  let fast: ExtraTraefik | null = null;
  let baseline: ExtraTraefik | null = null;
  try {
    // The fast-path Traefik's dynamic directory, where the sidecar writes its routers.
    const fastDynamic = extraTraefikDynamicDir(stack, "fast");
    if (!cfg.noSidecar)
      sidecar = await startBenchSidecar(stack, shared, cfg.sidecarMain, [
        `--fast-path-file=${join(fastDynamic, FAST_PATH_FILE)}`,
      ]);
    await preparePluginTraefik(stack, shared, cfg.pluginWasm);
    plain = await startExtraTraefik(stack, shared, "plain");
    if (!cfg.noSidecar) {
      fast = await startExtraTraefik(stack, shared, "fast", { settings: { staleAfterMs: "5000" } });
      await waitFastRouters(fast, stack.nodes.length);
    }
    if (cfg.baselineWasm)
      baseline = await startExtraTraefik(stack, shared, "baseline", {
        settings: { staleAfterMs: "5000" },
        pluginsLocal: localPluginDir(join(stack.dir, "baseline-plugins"), cfg.baselineWasm),
      });
    log(
      `plain Traefik at ${plain.base}, Traefik with the plugin at ${stack.httpBase}${fast ? `, with the fast path at ${fast.base}` : ""}`,
    );
    const env: BenchEnv = { cfg, stack, plain, fast, baseline, shared };

    if (cfg.sessions > 0) results.registry = await loadRegistryIntoView(env, sidecar!);
    const sessions = await initSessions(env);
    results.viewSessions = await viewSessionCount(shared);
    const load = await measureLoad(env, sessions.load);
    results.load = load.figures;
    if (Object.keys(load.profiles).length) results.profile = summarizeProfiles(load.profiles);
    if (cfg.pairs > 0 && env.fast) results.pairs = await measurePairs(env, sessions.load);
    if (cfg.cycles > 0) results.sessionCycles = await measureSessionCycles(env);
    if (cfg.streams > 0) results.sse = await measureStreams(env, sessions.streams);
    if (cfg.registrations > 0) results.registration = await registrationFigures(env);
    if (cfg.restarts > 0) results.restart = { samples: await measureRestarts(env, sessions.load) };

    endResults(results);
    results.targets = benchTargets(results);
    printReport(results, cfg);
    writeResults(results, cfg.json, log);
  } finally {
    await plain?.proc.stop().catch(() => {});
    await fast?.proc.stop().catch(() => {});
    await baseline?.proc.stop().catch(() => {});
    await sidecar?.proc.stop().catch(() => {});
    await stack.stop();
    if (shared.startsWith("/dev/shm/")) rmSync(shared, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Report

/** The targets the figures are held to, in the order the report lists them. */
function benchTargets(results: TraefikBenchResults): Target[] {
  const targets: Target[] = [];
  const thr = results.load!.throughput.modes;
  const lat = results.load!.latency.modes;
  const bT = thr.find((m) => m.name === "b")!;
  const bL = lat.find((m) => m.name === "b")!;
  for (const cName of ["c", "c2"]) {
    const cT = thr.find((m) => m.name === cName);
    const cL = lat.find((m) => m.name === cName);
    if (!cT || !cL) continue;
    const tag = cName === "c" ? "(c)" : "(c')";
    const ratio = cT.rps / bT.rps;
    const add50 = cL.latencyUs.p50 - bL.latencyUs.p50;
    const add99 = cL.latencyUs.p99 - bL.latencyUs.p99;
    targets.push({ what: `throughput ${tag}/(b)`, value: ratio.toFixed(3), target: ">= 0.9", ok: ratio >= 0.9 });
    targets.push({
      what: `added p50 ${tag}-(b), latency pass`,
      value: `${add50.toFixed(0)} us`,
      target: "<= 50 us",
      ok: add50 <= 50,
    });
    targets.push({
      what: `added p99 ${tag}-(b), latency pass`,
      value: `${add99.toFixed(0)} us`,
      target: "<= 250 us",
      ok: add99 <= 250,
    });
    targets.push({
      what: `added p99.9 ${tag}-(b), latency pass`,
      value: `${(cL.latencyUs.p999 - bL.latencyUs.p999).toFixed(0)} us`,
      target: "(reported)",
      ok: null,
    });
    targets.push({
      what: `added Traefik CPU per request ${tag}-(b)`,
      value: `${((cT.traefikCpuUsPerRequest ?? NaN) - (bT.traefikCpuUsPerRequest ?? NaN)).toFixed(0)} us`,
      target: "(reported)",
      ok: null,
    });
    targets.push({
      what: `added p50 ${tag}-(b), throughput pass`,
      value: `${(cT.latencyUs.p50 - bT.latencyUs.p50).toFixed(0)} us`,
      target: "(reported)",
      ok: null,
    });
    targets.push({
      what: `added p99 ${tag}-(b), throughput pass`,
      value: `${(cT.latencyUs.p99 - bT.latencyUs.p99).toFixed(0)} us`,
      target: "(reported)",
      ok: null,
    });
  }
  if (results.sse) {
    const { plain: p, plugin: q } = results.sse;
    const extra = q.perStreamBytes - p.perStreamBytes;
    targets.push({
      what: "extra memory per SSE stream (RSS)",
      value: `${(extra / 1024).toFixed(1)} KiB`,
      target: "<= 64 KiB",
      ok: extra <= 64 * 1024,
    });
    targets.push({
      what: "extra Go live heap per SSE stream",
      value: `${((q.liveHeapPerStreamBytes - p.liveHeapPerStreamBytes) / 1024).toFixed(1)} KiB`,
      target: "(reported)",
      ok: null,
    });
  }
  // This build against the baseline build, per request (the same sessions, rounds and load).
  for (const [pass, modes] of [
    ["throughput", thr],
    ["latency", lat],
  ] as const) {
    const c = modes.find((m) => m.name === "c");
    const c0 = modes.find((m) => m.name === "c0");
    const b = modes.find((m) => m.name === "b");
    if (!c || !c0 || !b) continue;
    const added = (m: ModeFigures) => (m.traefikCpuUsPerRequest ?? NaN) - (b.traefikCpuUsPerRequest ?? NaN);
    targets.push({
      what: `Traefik CPU per request (c)/(c0), ${pass} pass; added over (b): ${added(c).toFixed(0)} vs ${added(c0).toFixed(0)} us`,
      value: ((c.traefikCpuUsPerRequest ?? NaN) / (c0.traefikCpuUsPerRequest ?? NaN)).toFixed(3),
      target: "(reported)",
      ok: null,
    });
  }
  // The fast path against plain Traefik: what the sidecar's routers leave of the plugin's cost.
  const fT = thr.find((m) => m.name === "f");
  const fL = lat.find((m) => m.name === "f");
  if (fT && fL) {
    for (const [pass, f, b] of [
      ["throughput", fT, bT],
      ["latency", fL, bL],
    ] as const) {
      const ratio = (f.traefikCpuUsPerRequest ?? NaN) / (b.traefikCpuUsPerRequest ?? NaN);
      targets.push({
        what: `Traefik CPU per request (f)/(b), ${pass} pass`,
        value: ratio.toFixed(3),
        target: "<= 1.05",
        ok: ratio <= 1.05,
      });
      // The same ratio round by round (each round runs both modes within seconds of each other):
      // its spread shows how much of a difference the machine's noise alone can make.
      const perRound = f.rounds.map((x, i) => (x.traefikCpuUs ?? NaN) / (b.rounds[i]?.traefikCpuUs ?? NaN));
      targets.push({
        what: `  the same, median of the rounds' own ratios [lowest, highest]`,
        value: `${median(perRound).toFixed(3)} [${Math.min(...perRound).toFixed(2)}, ${Math.max(...perRound).toFixed(2)}]`,
        target: "(reported)",
        ok: null,
      });
    }
    targets.push({
      what: "throughput (f)/(b)",
      value: (fT.rps / bT.rps).toFixed(3),
      target: "(reported)",
      ok: null,
    });
  }
  for (const p of results.pairs ?? [])
    targets.push({
      what: `Traefik CPU per request (f)/(b), ${p.pairs} pairs of 2 s windows, c=${p.concurrency} [middle half]`,
      value: `${p.median.toFixed(3)} [${p.quartiles[0].toFixed(2)}, ${p.quartiles[1].toFixed(2)}]`,
      target: "<= 1.05",
      ok: p.median <= 1.05,
    });
  const cycles = results.sessionCycles;
  const cycleOf = (n: string) => cycles?.find((m) => m.name === n)?.traefikCpuUsPerSession;
  for (const n of ["c", "f"])
    if (cycleOf(n) !== undefined && cycleOf("b") !== undefined)
      targets.push({
        what: `Traefik CPU per whole session (${n})/(b)`,
        value: (cycleOf(n)! / cycleOf("b")!).toFixed(3),
        target: "(reported)",
        ok: null,
      });
  if (results.sse?.fast) {
    const ratio = results.sse.fast.perStreamBytes / results.sse.plain.perStreamBytes;
    targets.push({
      what: "memory per SSE stream (RSS) fast path / plain",
      value: ratio.toFixed(3),
      target: "<= 1.10",
      ok: ratio <= 1.1,
    });
  }
  if (results.registration) {
    const r = results.registration;
    targets.push({
      what: "registration visible p99",
      value: `${fmt(r.p99Ms, 2)} ms`,
      target: "<= 5 ms",
      ok: r.missing === 0 && r.p99Ms <= 5,
    });
  }
  return targets;
}

function printReport(results: TraefikBenchResults, cfg: BenchConfig): void {
  const out: string[] = [];
  const line = (s = "") => out.push(s);
  const table = (title: string, modes: ModeFigures[]) => {
    line();
    line(title);
    line(
      `${"mode".padEnd(56)} ${"req/s".padStart(8)} ${"p50 us".padStart(8)} ${"p99 us".padStart(8)} ${"p99.9 us".padStart(9)} ${"errors".padStart(7)} ${"misroutes".padStart(9)} ${"Traefik CPU us/req".padStart(19)}`,
    );
    for (const m of modes) {
      line(
        `${m.label.padEnd(56)} ${fmt(m.rps).padStart(8)} ${fmt(m.latencyUs.p50).padStart(8)} ${fmt(m.latencyUs.p99).padStart(8)} ${fmt(m.latencyUs.p999).padStart(9)} ${String(m.errors).padStart(7)} ${String(m.discontinuities).padStart(9)} ${fmt(m.traefikCpuUsPerRequest).padStart(19)}`,
      );
    }
  };
  const per = `medians of ${cfg.rounds} alternating rounds x ${cfg.durationMs / 1000} s per mode (p99.9 of each round), ${results.viewSessions ?? "?"} sessions in the view`;
  table(
    `Tool calls on existing sessions, throughput pass: concurrency ${cfg.concurrency}, ${per}`,
    results.load!.throughput.modes,
  );
  table(
    `Tool calls on existing sessions, latency pass: concurrency ${cfg.latencyConcurrency}, ${per}`,
    results.load!.latency.modes,
  );
  if (results.sessionCycles) {
    line();
    line(
      `Whole sessions (initialize, notifications/initialized, ${CYCLE_CALLS} tools/call, DELETE), concurrency 4, medians of ${cfg.rounds} alternating rounds x ${cfg.cycles} sessions`,
    );
    line(
      `${"mode".padEnd(56)} ${"sessions".padStart(8)} ${"errors".padStart(7)} ${"Traefik CPU us/session".padStart(23)}`,
    );
    for (const m of results.sessionCycles)
      line(
        `${m.label.padEnd(56)} ${String(m.sessions).padStart(8)} ${String(m.errors).padStart(7)} ${fmt(m.traefikCpuUsPerSession).padStart(23)}${m.errorSamples.length ? `  (${m.errorSamples.join("; ")})` : ""}`,
      );
  }
  if (results.sse) {
    const { plain: p, plugin: q } = results.sse;
    line();
    line(`Traefik RSS with ${cfg.streams} open SSE streams`);
    line(
      `${"".padEnd(24)} ${"opened".padStart(7)} ${"RSS before".padStart(11)} ${"RSS open".padStart(10)} ${"RSS/stream".padStart(11)} ${"Go live heap/stream".padStart(20)}`,
    );
    const rows: Array<[string, StreamFigures]> = [
      ["plain Traefik", p],
      ["Traefik + plugin", q],
    ];
    if (results.sse.fast) rows.push(["Traefik + fast path", results.sse.fast]);
    for (const [n, v] of rows) {
      line(
        `${n.padEnd(24)} ${String(v.opened).padStart(7)} ${((v.rssBeforeBytes / 2 ** 20).toFixed(1) + " MiB").padStart(11)} ${((v.rssWithStreamsBytes / 2 ** 20).toFixed(1) + " MiB").padStart(10)} ${((v.perStreamBytes / 1024).toFixed(1) + " KiB").padStart(11)} ${((v.liveHeapPerStreamBytes / 1024).toFixed(1) + " KiB").padStart(20)}`,
      );
    }
    if (q.heapTop?.length) {
      line("  Traefik + plugin heap in use with the streams open (go tool pprof -top):");
      for (const l of q.heapTop.slice(0, 8)) line(`  ${l}`);
    }
  }
  if (results.registration) {
    const r = results.registration;
    line();
    line(
      `Registration -> in the view: ${r.count} sessions, p50 ${fmt(r.p50Ms, 2)} ms, p99 ${fmt(r.p99Ms, 2)} ms, max ${fmt(r.maxMs, 2)} ms (Redis write p50 ${fmt(r.redisWriteP50Ms, 2)} ms), ${r.missing} not seen within 2 s`,
    );
  }
  if (results.restart) {
    const s = results.restart.samples;
    const k = s.map((x) => x.edge404AfterKillMs).filter((x): x is number => x !== null);
    const rd = s.map((x) => x.edge404AfterReadyMs).filter((x): x is number => x !== null);
    line(
      `Node restart -> first edge 404: ${s.length} restarts, median ${fmt(median(k), 0)} ms after the kill, ${fmt(median(rd), 0)} ms after the new process answered /healthz (each: ${s.map((x) => fmt(x.edge404AfterKillMs, 0)).join(", ")} ms)`,
    );
  }
  if (results.registry)
    line(
      `1M setup: Redis write ${(results.registry.redisWriteMs / 1000).toFixed(1)} s, sidecar start to full view ${(results.registry.sidecarLoadToViewMs / 1000).toFixed(1)} s`,
    );
  line();
  line("Targets");
  for (const t of results.targets ?? [])
    line(
      `  ${t.what.padEnd(44)} ${t.value.padStart(10)}  ${t.target.padEnd(10)} ${t.ok === null ? "" : t.ok ? "met" : "MISSED"}`,
    );
  process.stdout.write(out.join("\n") + "\n");
}

runBench("traefik-bench", main);
