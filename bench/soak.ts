// `npm run soak`: does anything grow over hours of churn? Two Traefik replicas (each with its
// sidecar), three reference nodes and one redis-server (the local stack), and a steady churn of
// sessions through both replicas: initialize, counter calls, SSE streams opened on the other
// replica, closes, and abandoned sessions (never closed: the nodes' idle sweep ends them). A node
// is restarted gracefully (drain, stop, start: a rolling deploy) every tenth of the run (ten
// minutes of an hour). Every --sample-seconds: RSS and open fds of every Traefik, sidecar and node,
// files in each shared directory, Redis keys and memory, live sessions on the nodes, and the
// edge's decision counts. At the end: each series' slope per hour with its standard error, and a
// pass/fail against the bounds docs/operations.md ("Soak") justifies. Exit code 1 on a fail.
// Flags: --minutes N (60), --sample-seconds N (30), --workers N (6), --idle-timeout-seconds N (60),
//        --tombstone-seconds N (600), --json FILE. Logs and configs stay in .run/soak/.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomInt } from "node:crypto";
import { Redis } from "ioredis";
import { readFlags } from "./lib/flags.ts";
import { int, nonEmpty, text } from "../lib/settings/index.ts";
import { rssBytes } from "./lib/sse.ts";
import { openSse, raw, rawCall, rawInitialize, sessionHeaders } from "../dev/mcp-client.ts";
import { metricValues, scrapeMetrics } from "../dev/metrics.ts";
import { sleep } from "../dev/poll.ts";
import { startStack } from "../dev/stack.ts";
import { viewPaths } from "../lib/view/index.ts";

const f = readFlags("soak", "npm run soak -- [--minutes N] [--sample-seconds N] ...", {
  minutes: { name: "minutes", type: int(1, 24 * 60), def: 60, help: "how long the churn runs" },
  sampleSeconds: { name: "sample-seconds", type: int(5, 600), def: 30, help: "seconds between samples" },
  workers: { name: "workers", type: int(1, 64), def: 6, help: "sessions in flight at once (one per worker)" },
  idleTimeoutSeconds: {
    name: "idle-timeout-seconds",
    type: int(10, 3600),
    def: 60,
    help: "the nodes close sessions idle this long (abandoned sessions end this way)",
  },
  tombstoneSeconds: {
    name: "tombstone-seconds",
    type: int(0, 86_400),
    def: 600,
    help: "the sidecars' --tombstone-ttl (their default): closed sessions stay in the view this long",
  },
  json: { name: "json", type: text(nonEmpty, "file"), help: "write the samples and the verdicts to this JSON file" },
  judge: {
    name: "judge",
    type: text(nonEmpty, "file"),
    help: "judge the samples of a run's --json file again (with the bounds of this version), running nothing",
  },
});

/** Share of sessions left open without a DELETE, and share that open an SSE stream. */
const ABANDON_SHARE = 0.2;
const SSE_SHARE = 0.3;
/** The plugin's and the sidecar's own bounds (plugin/assembly/config.ts, sidecar/src/drain.ts, 12 shard bits). */
const MAX_SHARDS = 4096;
const MAX_LEARNED = 4096;
const MAX_EVENT_FILES = 2 * 4096;
const MAX_QUARANTINE = 64;
/** Growth per hour a series may show beyond its noise (2 standard errors), as a share of its median. */
const GROWTH_SHARE_PER_HOUR = 0.05;
/** RSS is judged by its peak in each window this long: the garbage collectors' troughs left out. */
const RSS_WINDOW_MS = 5 * 60_000;
/**
 * Beyond idle timeout + sweep period, the bound on live sessions waits this much longer: a node's
 * idle clock starts when it sees the session's last request end (an SSE stream closing through
 * Traefik ends after the worker let it go) and its sweep timer fires late on a loaded machine.
 */
const LIVE_BOUND_SLACK_MS = 5000;

interface Tally {
  sessions: number;
  abandoned: number;
  closed: number;
  calls: number;
  sse: number;
  /** Sessions a node restart ended (their node restarted while they lived): expected, counted. */
  endedByRestart: number;
  failures: string[];
}

/** The node cookie inside a routing token (`ma1.<cookie 16><boot 8>.<...>`). */
const cookieOfId = (id: string): string => id.slice(4, 20);

async function main(): Promise<void> {
  const minutes = f.minutes;
  const runMs = minutes * 60_000;
  const restartEveryMs = runMs / 6;
  const idleMs = f.idleTimeoutSeconds * 1000;
  console.log(
    `soak: ${minutes} min, ${f.workers} workers, a node restart every ${(restartEveryMs / 60_000).toFixed(1)} min, a sample every ${f.sampleSeconds} s`,
  );
  const stack = await startStack({
    name: "soak",
    replicas: 2,
    nodes: 3,
    nodeArgs: () => ["--idle-timeout-ms", String(idleMs), "--log-level", "warn"],
    sidecarArgs: ["--tombstone-ttl", `${f.tombstoneSeconds}s`],
  });
  const redis = new Redis(stack.redisUrl!);
  const tally: Tally = { sessions: 0, abandoned: 0, closed: 0, calls: 0, sse: 0, endedByRestart: 0, failures: [] };
  /** When each node (by cookie) was last restarted: [stop started, start done]. */
  const restarts: Array<{ cookie: string; from: number; to: number }> = [];
  const restartedDuring = (cookie: string, from: number, to: number) =>
    restarts.some((r) => r.cookie === cookie && r.from <= to && r.to >= from);
  /** When each abandoned session was left (the bound on live sessions counts them). */
  const abandonedAt: number[] = [];
  let stopping = false;

  const worker = async (w: number) => {
    let k = w;
    while (!stopping) {
      const base = stack.replicas[k++ % 2]!.httpBase;
      const other = stack.replicas[k % 2]!.httpBase;
      const t0 = Date.now();
      let sid: string;
      try {
        sid = (await rawInitialize(base, { clientName: "soak" })).sessionId;
      } catch (err) {
        // An initialize never reaches a stopped node (the plugin steers away from draining ones).
        tally.failures.push(`initialize: ${(err as Error).message.slice(0, 120)}`);
        await sleep(500);
        continue;
      }
      tally.sessions++;
      const fail = (what: string) => {
        if (restartedDuring(cookieOfId(sid), t0, Date.now())) tally.endedByRestart++;
        else tally.failures.push(what);
      };
      const sse = Math.random() < SSE_SHARE ? await openSse(other, sid).catch(() => null) : null;
      if (sse) {
        tally.sse++;
        if (sse.status !== 200) fail(`SSE answered ${sse.status}`);
      }
      let ended = false;
      const calls = 2 + randomInt(4);
      for (let i = 1; i <= calls && !ended; i++) {
        const r = await rawCall(i % 2 ? base : other, sid, "counter").catch((err: Error) => ({
          status: 0,
          text: err.message,
        }));
        tally.calls++;
        if (r.status !== 200 || r.text !== String(i)) {
          fail(`call ${i}: ${r.status} ${String(r.text).slice(0, 80)}`);
          ended = true;
        }
        await sleep(100 + randomInt(200));
      }
      sse?.close();
      if (ended) continue;
      if (Math.random() < ABANDON_SHARE) {
        tally.abandoned++;
        abandonedAt.push(Date.now());
        continue;
      }
      const d = await raw(`${base}/mcp`, { method: "DELETE", headers: sessionHeaders(sid) }).catch(() => null);
      if (!d || (d.status !== 200 && d.status !== 204)) fail(`DELETE: ${d?.status ?? "no answer"}`);
      else tally.closed++;
    }
  };

  // --- sampling ------------------------------------------------------------------------------
  type Sample = Record<string, number>;
  const samples: Array<{ t: number; v: Sample; pids: Record<string, number> }> = [];
  const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
  const files = (dir: string) => {
    try {
      return readdirSync(dir).filter((n) => !n.startsWith(".")).length;
    } catch {
      return 0;
    }
  };
  const take = async () => {
    const v: Sample = {};
    const pids: Record<string, number> = {};
    const procs: Array<[string, number | undefined]> = [
      ...stack.replicas.map((r): [string, number | undefined] => [r.name, r.traefik.pid]),
      ...stack.replicas.map((r, i): [string, number | undefined] => [`sidecar-${i + 1}`, r.sidecar?.pid]),
      ...stack.nodes.map((n): [string, number | undefined] => [n.name, n.proc.pid]),
    ];
    for (const [name, pid] of procs) {
      if (!pid) continue;
      try {
        v[`${name} rss MiB`] = rssBytes(pid) / 2 ** 20;
        v[`${name} fds`] = fds(pid);
        pids[name] = pid;
      } catch {
        /* restarting */
      }
    }
    for (const r of stack.replicas) {
      const p = viewPaths(r.shared);
      v[`${r.name} shards`] = files(p.shards);
      v[`${r.name} learned`] = files(p.learned);
      v[`${r.name} events`] = files(p.events);
      v[`${r.name} quarantine`] = files(p.quarantine);
    }
    const health = await Promise.all(stack.nodes.map((n) => n.health(2000)));
    v["node sessions"] = health.reduce((a, h) => a + (h?.sessions ?? 0), 0);
    // A session left idle at T is closed by the first sweep after T + idle timeout (the sweep runs
    // every min(idle timeout, 60 s)): at most the ones abandoned since then are still live, plus
    // one in flight per worker and the sessions a failure left behind.
    const sweepMs = Math.min(idleMs, 60_000);
    v["live bound"] =
      f.workers +
      abandonedAt.filter((t) => t >= Date.now() - idleMs - sweepMs - LIVE_BOUND_SLACK_MS).length +
      tally.failures.length;
    v["redis keys"] = await redis.dbsize();
    const memory = await redis.info("memory");
    const infoField = (text: string, field: string) => Number(new RegExp(`^${field}:(\\d+)`, "m").exec(text)?.[1] ?? 0);
    v["redis used MiB"] = infoField(memory, "used_memory") / 2 ** 20;
    // Shown beside it to tell a leak from buffers: Redis's own overhead (client buffers, dictionaries,
    // scripts) and its connected clients (each process holds a few; a restart must not leave any).
    v["redis overhead MiB"] = infoField(memory, "used_memory_overhead") / 2 ** 20;
    v["redis clients"] = infoField(await redis.info("clients"), "connected_clients");
    for (const r of stack.replicas) {
      const text = await scrapeMetrics(`${r.sidecarUrl}/metrics`).catch(() => "");
      for (const line of text.split("\n")) {
        const m = /^mcp_affinity_edge_decisions_total\{reason="([^"]+)"\}/.exec(line);
        if (m)
          v[`decisions ${m[1]}`] =
            (v[`decisions ${m[1]}`] ?? 0) + metricValues(line, "mcp_affinity_edge_decisions_total")[0]!;
      }
    }
    samples.push({ t: Date.now(), v, pids });
    const s = samples.length;
    console.log(
      `sample ${s}: ${Math.round((Date.now() - start) / 1000)} s, sessions ${tally.sessions}, calls ${tally.calls}, failures ${tally.failures.length}, node sessions ${v["node sessions"]}, redis keys ${v["redis keys"]}`,
    );
  };

  const start = Date.now();
  /** When each node's current process started (its series count from then on). */
  const startedAt = new Map<string, number>();
  const workers = Array.from({ length: f.workers }, (_, w) => worker(w));
  const restarter = (async () => {
    let i = 0;
    for (let at = start + restartEveryMs; at < start + runMs - 1000; at += restartEveryMs) {
      await sleep(Math.max(0, at - Date.now()));
      if (stopping) break;
      const node = stack.nodes[i++ % stack.nodes.length]!;
      const entry = { cookie: node.cookie, from: Date.now(), to: Infinity };
      restarts.push(entry);
      await node.proc.stop(stack.timing.drainGraceMs + 2000); // SIGTERM: drain, then exit
      await node.start();
      entry.to = Date.now();
      startedAt.set(node.name, entry.to);
      console.log(`restarted ${node.name}`);
    }
  })();
  while (Date.now() - start < runMs) {
    await sleep(Math.min(f.sampleSeconds * 1000, start + runMs - Date.now()));
    await take();
  }
  stopping = true;
  await Promise.all([...workers, restarter]);
  await take();

  // --- verdicts ------------------------------------------------------------------------------
  const run: Run = {
    minutes,
    start,
    tally,
    restarts,
    samples,
    settings: { idleMs, tombstoneMs: f.tombstoneSeconds * 1000, workers: f.workers, nodes: stack.nodes.length },
  };
  const pass = report(run, startedAt);
  if (f.json)
    writeFileSync(f.json, JSON.stringify({ ...run, verdicts: judge(run, startedAt).verdicts, pass }, null, 2));
  redis.disconnect();
  await stack.stop();
  process.exit(pass ? 0 : 1);
}

type Sample = { t: number; v: Record<string, number>; pids: Record<string, number> };

/** What a run leaves to be judged (its --json file). */
interface Run {
  minutes: number;
  start: number;
  tally: Tally;
  restarts: Array<{ cookie: string; from: number; to: number }>;
  samples: Sample[];
  settings: { idleMs: number; tombstoneMs: number; workers: number; nodes: number };
}

interface Verdict {
  series: string;
  first: number;
  last: number;
  max: number;
  slope: number;
  se: number;
  bound: string;
  pass: boolean;
}

/**
 * Every series against its bound (docs/operations.md, "Soak"). `startedAt`: when each node's
 * current process started (its series count from then on).
 */
function judge(run: Run, startedAt: Map<string, number>): { verdicts: Verdict[]; warmupMs: number } {
  const { samples, start, settings } = run;
  const runMs = run.minutes * 60_000;
  const { idleMs } = settings;
  const verdicts: Verdict[] = [];
  const seriesNames = [...new Set(samples.flatMap((s) => Object.keys(s.v)))];
  // Warm-up, left out of the slopes: a process's first allocations (Traefik's Wasm instance pool,
  // V8's heap), the abandoned sessions piling up to their steady number (one idle timeout and one
  // sweep), and the sidecars' tombstones of closed sessions (kept --tombstone-ttl); at least the
  // first sixth of the run. A node's series restart with its process: only its current process's
  // samples count, from its own warm-up on.
  const warmupMs = Math.max(runMs / 6, idleMs + Math.min(idleMs, 60_000), settings.tombstoneMs);
  for (const name of seriesNames) {
    const proc = name.split(" ")[0]!;
    const lastPid = samples.at(-1)!.pids[proc];
    const from = (startedAt.get(proc) ?? start) + warmupMs;
    let points = samples
      .filter((s) => s.t >= from && s.v[name] !== undefined && (lastPid === undefined || s.pids[proc] === lastPid))
      .map((s) => [(s.t - start) / 3_600_000, s.v[name]!] as [number, number]);
    const all = samples.map((s) => s.v[name]).filter((x): x is number => x !== undefined);
    const median = medianOf(points.map((p) => p[1]));
    // RSS: the peak of each window (a leak raises the peaks; a collection only lowers the troughs,
    // and a fit through a few early troughs reads as growth).
    if (/ rss MiB$/.test(name) && points.length >= 3) points = windowPeaks(points, RSS_WINDOW_MS / 3_600_000);
    let { slope, se } = fitSlope(points);
    const last = all.at(-1) ?? 0;
    const max = Math.max(...all);
    let bound: string;
    let pass: boolean;
    if (name === "redis used MiB") {
      // Redis's memory follows its keys (live sessions rise and fall with restarts and abandoned
      // sessions, each within its own bound below): judged is the growth over time that the number
      // of keys does not explain (used = a + b * keys + c * hours; c is the slope shown).
      const fit = fitTimeSlopeBeyondKeys(
        samples
          .filter((s) => s.t >= start + warmupMs)
          .map((s) => [(s.t - start) / 3_600_000, s.v["redis keys"]!, s.v[name]!] as [number, number, number]),
      );
      ({ slope, se } = fit);
      const allowed = GROWTH_SHARE_PER_HOUR * median;
      bound = `slope beyond keys <= ${allowed.toFixed(2)}/h + 2 SE`;
      pass = fit.n < 4 || slope <= allowed + 2 * se;
    } else if (/ (rss MiB|fds)$/.test(name)) {
      const allowed = GROWTH_SHARE_PER_HOUR * median;
      const of = / rss MiB$/.test(name) ? "slope of 5-min peaks" : "slope";
      bound =
        points.length < 3
          ? "too few samples after warm-up (shown, not judged)"
          : `${of} <= ${allowed.toFixed(2)}/h + 2 SE`;
      pass = points.length < 3 || slope <= allowed + 2 * se;
    } else if (/ shards$/.test(name)) [bound, pass] = [`<= ${MAX_SHARDS}`, max <= MAX_SHARDS];
    else if (/ learned$/.test(name)) [bound, pass] = [`<= ${MAX_LEARNED}`, max <= MAX_LEARNED];
    else if (/ events$/.test(name)) [bound, pass] = [`<= ${MAX_EVENT_FILES}`, max <= MAX_EVENT_FILES];
    else if (/ quarantine$/.test(name)) [bound, pass] = [`<= ${MAX_QUARANTINE}`, max <= MAX_QUARANTINE];
    else if (name === "redis keys") {
      // Every key is a live session's, a node's, or the marker; sessions opening or closing between
      // the two reads are at most one per worker.
      const worst = Math.max(...samples.map((s) => s.v["redis keys"]! - s.v["node sessions"]!));
      bound = `keys - node sessions <= ${settings.nodes + 1 + settings.workers}`;
      pass = worst <= settings.nodes + 1 + settings.workers;
    } else if (name === "node sessions") {
      bound = "<= live bound (each sample)";
      pass = samples.every((s) => s.v["node sessions"]! <= s.v["live bound"]!);
    } else [bound, pass] = ["(counted)", true];
    verdicts.push({ series: name, first: all[0] ?? 0, last, max, slope, se, bound, pass });
  }
  return { verdicts, warmupMs };
}

/** Prints the run's figures and verdicts; returns whether it passed. */
function report(run: Run, startedAt: Map<string, number>): boolean {
  const { tally, start, samples } = run;
  const { verdicts, warmupMs } = judge(run, startedAt);
  const failuresOk = tally.failures.length === 0;
  console.log(`\nslopes from ${Math.round(warmupMs / 1000)} s into each process (warm-up left out)`);
  console.log(
    `\nsoak: ${((samples.at(-1)!.t - start) / 60_000).toFixed(1)} min, ${tally.sessions} sessions (${tally.closed} closed, ${tally.abandoned} abandoned, ${tally.sse} with SSE), ${tally.calls} calls, ${run.restarts.length} node restarts, ${tally.endedByRestart} sessions ended by a restart, ${tally.failures.length} failures`,
  );
  for (const x of tally.failures.slice(0, 20)) console.log(`  failure: ${x}`);
  console.log(
    `\n${"series".padEnd(26)} ${"first".padStart(9)} ${"last".padStart(9)} ${"max".padStart(9)} ${"slope/h".padStart(10)} ${"± 2 SE".padStart(9)}  bound`,
  );
  for (const v of verdicts)
    console.log(
      `${v.series.padEnd(26)} ${fmt(v.first)} ${fmt(v.last)} ${fmt(v.max)} ${fmt(v.slope, 10)} ${fmt(2 * v.se)}  ${v.bound} ${v.pass ? "pass" : "FAIL"}`,
    );
  const pass = failuresOk && verdicts.every((v) => v.pass);
  console.log(`\nsoak: ${pass ? "PASS" : "FAIL"}`);
  return pass;
}

/** Judges a saved run again (--judge FILE): node processes start at the first sample of their pid. */
function judgeSaved(file: string): never {
  const run = JSON.parse(readFileSync(file, "utf8")) as Run;
  run.settings ??= {
    idleMs: f.idleTimeoutSeconds * 1000,
    tombstoneMs: f.tombstoneSeconds * 1000,
    workers: f.workers,
    nodes: 3,
  };
  const startedAt = new Map<string, number>();
  const seenPid = new Map<string, number>();
  for (const smp of run.samples)
    for (const [proc, pid] of Object.entries(smp.pids)) {
      if (seenPid.has(proc) && seenPid.get(proc) !== pid) startedAt.set(proc, smp.t);
      seenPid.set(proc, pid);
    }
  process.exit(report(run, startedAt) ? 0 : 1);
}

const fmt = (x: number, w = 9) => (Number.isFinite(x) ? x.toFixed(1) : "-").padStart(w);

function medianOf(xs: number[]): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * Least squares of y = a + b * k + c * t over [t, k, y] points: c (the growth over time that k does
 * not explain) and its standard error.
 */
function fitTimeSlopeBeyondKeys(points: Array<[number, number, number]>): { slope: number; se: number; n: number } {
  const n = points.length;
  if (n < 4) return { slope: 0, se: 0, n };
  // Normal equations on centred columns (the intercept drops out).
  const mean = (i: 0 | 1 | 2) => points.reduce((a, p) => a + p[i], 0) / n;
  const [mt, mk, my] = [mean(0), mean(1), mean(2)];
  let stt = 0;
  let skk = 0;
  let stk = 0;
  let sty = 0;
  let sky = 0;
  for (const [t, k, y] of points) {
    const [dt, dk, dy] = [t - mt, k - mk, y - my];
    stt += dt * dt;
    skk += dk * dk;
    stk += dt * dk;
    sty += dt * dy;
    sky += dk * dy;
  }
  const det = stt * skk - stk * stk;
  if (det === 0) return { slope: 0, se: 0, n };
  const c = (skk * sty - stk * sky) / det;
  const b = (stt * sky - stk * sty) / det;
  const rss = points.reduce((a, [t, k, y]) => a + (y - my - b * (k - mk) - c * (t - mt)) ** 2, 0);
  return { slope: c, se: Math.sqrt((rss / (n - 3)) * (skk / det)), n };
}

/** Least-squares slope of [x, y] points and its standard error (0, 0 with fewer than 3 points). */
function fitSlope(points: Array<[number, number]>): { slope: number; se: number } {
  const n = points.length;
  if (n < 3) return { slope: 0, se: 0 };
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const [x, y] of points) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
  }
  if (sxx === 0) return { slope: 0, se: 0 };
  const slope = sxy / sxx;
  const rss = points.reduce((a, [x, y]) => a + (y - (my + slope * (x - mx))) ** 2, 0);
  return { slope, se: Math.sqrt(rss / (n - 2) / sxx) };
}

/** The highest point of each window of `width` (hours), at the window's middle. */
function windowPeaks(points: Array<[number, number]>, width: number): Array<[number, number]> {
  const peaks = new Map<number, number>();
  for (const [x, y] of points) {
    const k = Math.floor(x / width);
    peaks.set(k, Math.max(peaks.get(k) ?? -Infinity, y));
  }
  return [...peaks].sort((a, b) => a[0] - b[0]).map(([k, y]) => [(k + 0.5) * width, y]);
}

(f.judge ? Promise.resolve(judgeSaved(f.judge)) : main()).catch((err: unknown) => {
  console.error(`soak: ${(err as Error).stack ?? err}`);
  process.exit(2);
});
