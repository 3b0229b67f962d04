// `npm run bench:cuts`: cut answers through plain sticky Traefik and through the plugin, side by
// side in one run, and what buffering the request bodies costs.
//   plain      Traefik with its sticky cookie only (the client sends the cookie it got)
//   plugin     Traefik + the plugin, defaults (bodies up to 64 KiB copied into memory); no cookie
//   unbuffered Traefik + the plugin with maxBufferedBodyBytes 0 (bodies stream, as before); no cookie
//   fast       Traefik + the plugin + the fast path (the sidecar's routers: tokened sessions never
//              run the plugin; POST bodies read into memory by a Traefik failover service); no cookie
// The same `tools/call counter` POSTs on existing sessions at concurrency 16 and 1, in rounds that
// alternate the sides (order reversed every other round). A cut answer: a call that got a 200 without
// its answer, or whose connection ended before the answer. Figures: cuts per 100,000 calls (summed
// over the rounds); Traefik CPU per call (from /proc) and latency as medians of the rounds.
// Flags: --calls N (per side, default 100000, split over rounds and both concurrencies),
//        --rounds N (default 4), --unbuffered-share F (calls of the unbuffered side relative to the
//        others, default 0.25: it is there for the cost, not the cut rate), --fast-share F (calls
//        of the fast side relative to the others, default 1), --json FILE.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Agent } from "undici";
import { startStack, type Stack } from "../dev/stack.ts";
import { endResults, progressLog, runBench, startResults, writeResults, type BenchResults } from "./lib/results.ts";
import { initSession, waitSessionsInView, type BenchSession } from "./lib/mcp.ts";
import { readFlags } from "./lib/flags.ts";
import { int, nonEmpty, num, text } from "../lib/settings/index.ts";
import { runLoad, type LoadTarget } from "./lib/load.ts";
import { cpuMicros } from "./lib/sse.ts";
import { median, percentile } from "./lib/stats.ts";
import { FAST_PATH_FILE } from "../dev/traefik-config.ts";
import {
  ensureBenchDeps,
  extraTraefikDynamicDir,
  waitFastRouters,
  startBenchSidecar,
  startExtraTraefik,
  preparePluginTraefik,
  type ExtraTraefik,
} from "./lib/traefik.ts";

const cfg = readFlags("cut-bench", "npm run bench:cuts -- [--flag value ...]", {
  calls: {
    name: "calls",
    type: int(1_000, 2_000_000),
    def: 100_000,
    help: "calls per side, split over rounds and both concurrencies",
  },
  rounds: { name: "rounds", type: int(1, 20), def: 4, help: "alternating rounds" },
  unbufferedShare: {
    name: "unbuffered-share",
    type: num(0, 1, false),
    def: 0.25,
    help: "calls of the unbuffered side relative to the others",
  },
  fastShare: {
    name: "fast-share",
    type: num(0, 10, false),
    def: 1,
    help: "calls of the fast-path side relative to the others",
  },
  json: { name: "json", type: text(nonEmpty, "file"), help: "write the results to this JSON file" },
});
// The flags are checked when the module loads (--help and a typo cost nothing); main() installs what a run needs.
const CONCURRENCIES = [16, 1];
const SESSIONS_PER_WORKER = 4;

const log = progressLog("cuts");

interface Side extends LoadTarget {
  label: string;
  traefik: () => ExtraTraefik;
  share: number;
}
interface RoundFigures {
  calls: number;
  cuts: number;
  errors: number;
  discontinuities: number;
  rps: number;
  p50: number;
  p99: number;
  cpuUsPerCall: number;
  errorSamples: string[];
}

/** One side at one concurrency over every round: cuts summed, everything else the median of the rounds. */
interface ConcurrencyFigures {
  calls: number;
  cuts: number;
  otherFailures: number;
  misroutes: number;
  cutsPer100k: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  traefikCpuUsPerCall: number;
  rounds: RoundFigures[];
}

/** One side: its figures per concurrency (`c16`, `c1`), then its totals. */
type SideFigures = {
  label: string;
  calls: number;
  cuts: number;
  otherFailures: number;
  cutsPer100k: number;
} & { [concurrency: `c${number}`]: ConcurrencyFigures };

/** The JSON document of a run (--json). */
interface CutBenchResults extends BenchResults {
  sides?: Record<string, SideFigures>;
}

async function main(): Promise<void> {
  ensureBenchDeps();
  const results: CutBenchResults = startResults(cfg, log);
  log(
    "starting the stack: redis, sidecar, 3 reference nodes, Traefik with the plugin, plain Traefik, Traefik with the plugin not buffering bodies",
  );
  const stack = await startStack({
    name: "bench-cuts",
    nodes: 3,
    plugin: true,
    sidecar: false,
    traefikLogLevel: "ERROR",
    pluginSettings: { staleAfterMs: "5000" },
  });
  const shared = existsSync("/dev/shm") ? mkdtempSync("/dev/shm/mcpa-cuts-") : join(stack.dir, "shared");
  const extra: ExtraTraefik[] = [];
  let sidecar: Awaited<ReturnType<typeof startBenchSidecar>> | null = null;
  try {
    sidecar = await startBenchSidecar(stack, shared, undefined, [
      `--fast-path-file=${join(extraTraefikDynamicDir(stack, "fast"), FAST_PATH_FILE)}`,
    ]);
    await preparePluginTraefik(stack, shared, undefined);
    const sides = await startSides(stack, shared, extra);
    const sessions = await initCutSessions(stack, shared, sides[0]!.traefik().base);
    log(
      `${sessions.length} sessions; ${cfg.rounds} rounds x ${CONCURRENCIES.length} concurrencies x ${sides.length} sides, ${cfg.calls} calls per side`,
    );
    const figures = await runRounds(sides, sessions);
    const summary = summarizeSides(sides, figures);
    results.sides = summary;
    endResults(results);
    printReport(summary, sides);
    writeResults(results, cfg.json, log);
  } finally {
    for (const t of extra.reverse()) await t.proc.stop().catch(() => {});
    await sidecar?.proc.stop().catch(() => {});
    await stack.stop();
    if (shared.startsWith("/dev/shm/")) rmSync(shared, { recursive: true, force: true });
  }
}

/** The sides, plain first (its Traefik hands out the sticky cookies); the extra Traefiks started go into `extra`. */
async function startSides(stack: Stack, shared: string, extra: ExtraTraefik[]): Promise<Side[]> {
  const plugin: ExtraTraefik = { proc: stack.traefik, base: stack.httpBase, apiUrl: stack.apiUrl };
  const plain = await startExtraTraefik(stack, shared, "plain");
  extra.push(plain);
  const unbuffered = await startExtraTraefik(stack, shared, "unbuffered", {
    settings: { staleAfterMs: "5000", maxBufferedBodyBytes: "0" },
  });
  extra.push(unbuffered);
  const fast = await startExtraTraefik(stack, shared, "fast", { settings: { staleAfterMs: "5000" } });
  extra.push(fast);
  await waitFastRouters(fast, stack.nodes.length);
  const sides: Side[] = [
    {
      name: "plain",
      label: "plain sticky Traefik (cookie)",
      traefik: () => plain,
      originOf: () => plain.base,
      withCookie: true,
      share: 1,
    },
    {
      name: "plugin",
      label: "Traefik + plugin (bodies buffered)",
      traefik: () => plugin,
      originOf: () => plugin.base,
      withCookie: false,
      share: 1,
    },
    {
      name: "unbuffered",
      label: "Traefik + plugin, maxBufferedBodyBytes 0",
      traefik: () => unbuffered,
      originOf: () => unbuffered.base,
      withCookie: false,
      share: cfg.unbufferedShare,
    },
    {
      name: "fast",
      label: "Traefik + plugin + fast path",
      traefik: () => fast,
      originOf: () => fast.base,
      withCookie: false,
      share: cfg.fastShare,
    },
  ];
  return sides.filter((s) => s.share > 0);
}

/** Sessions for the largest concurrency, initialized through plain Traefik, and in the view. */
async function initCutSessions(stack: Stack, shared: string, plainBase: string): Promise<BenchSession[]> {
  const cookieToUrl = new Map(stack.nodes.map((n) => [n.cookie, n.url]));
  const nSessions = Math.max(...CONCURRENCIES) * SESSIONS_PER_WORKER;
  const initAgent = new Agent({ connections: 8 });
  const sessions: BenchSession[] = [];
  for (let i = 0; i < nSessions; i++) sessions.push(await initSession(initAgent, plainBase, cookieToUrl));
  await initAgent.close();
  await waitSessionsInView("the sessions in the view", shared, sessions);
  return sessions;
}

/** Every round at every concurrency for every side; the figures by `side@concurrency`. */
async function runRounds(sides: Side[], sessions: BenchSession[]): Promise<Map<string, RoundFigures[]>> {
  const figures = new Map<string, RoundFigures[]>();
  const perRound = (side: Side) =>
    Math.max(100, Math.round((cfg.calls * side.share) / cfg.rounds / CONCURRENCIES.length));
  for (let round = 0; round < cfg.rounds; round++) {
    for (const c of CONCURRENCIES) {
      const order = round % 2 === 0 ? sides : [...sides].reverse();
      for (const side of order) {
        const f = await measureSide(side, sessions.slice(0, c * SESSIONS_PER_WORKER), c, perRound(side));
        const key = `${side.name}@${c}`;
        figures.set(key, [...(figures.get(key) ?? []), f]);
        log(
          `  round ${round + 1} c=${String(c).padEnd(2)} ${side.name.padEnd(10)}: ${f.calls} calls, ${f.cuts} cut, ${f.errors - f.cuts} other failures, ${f.discontinuities} misroutes, ${f.rps.toFixed(0)} calls/s, p50 ${f.p50.toFixed(0)} us, p99 ${f.p99.toFixed(0)} us, Traefik ${f.cpuUsPerCall.toFixed(0)} us CPU/call${f.errorSamples.length ? ` (${f.errorSamples.join("; ")})` : ""}`,
        );
      }
    }
  }
  return figures;
}

/** One side at one concurrency for `calls` measured calls, with its Traefik's CPU time over the window. */
async function measureSide(side: Side, sessions: BenchSession[], c: number, calls: number): Promise<RoundFigures> {
  const pid = side.traefik().proc.pid!;
  let cpu0 = 0;
  let cpu1 = 0;
  const r = await runLoad(side, sessions, {
    concurrency: c,
    warmupMs: 300,
    durationMs: 600_000,
    calls,
    onWindowStart: () => (cpu0 = cpuMicros(pid)),
    onWindowEnd: () => (cpu1 = cpuMicros(pid)),
  });
  const v = r.latencyUs.sorted();
  const made = r.requests + r.errors;
  return {
    calls: made,
    cuts: r.cuts,
    errors: r.errors,
    discontinuities: r.discontinuities,
    rps: r.requests / r.seconds,
    p50: percentile(v, 50),
    p99: percentile(v, 99),
    cpuUsPerCall: (cpu1 - cpu0) / made,
    errorSamples: r.errorSamples,
  };
}

/** Summary: cuts summed over rounds, everything else the median of the rounds. */
function summarizeSides(sides: Side[], figures: Map<string, RoundFigures[]>): Record<string, SideFigures> {
  const summary: Record<string, SideFigures> = {};
  for (const side of sides) {
    const byConcurrency: Record<`c${number}`, ConcurrencyFigures> = {};
    let calls = 0;
    let cuts = 0;
    let other = 0;
    for (const c of CONCURRENCIES) {
      const rs = figures.get(`${side.name}@${c}`)!;
      const sum = (k: "calls" | "cuts" | "errors" | "discontinuities") => rs.reduce((a, x) => a + x[k], 0);
      const s: ConcurrencyFigures = {
        calls: sum("calls"),
        cuts: sum("cuts"),
        otherFailures: sum("errors") - sum("cuts"),
        misroutes: sum("discontinuities"),
        cutsPer100k: (sum("cuts") / sum("calls")) * 100_000,
        rps: median(rs.map((x) => x.rps)),
        p50Us: median(rs.map((x) => x.p50)),
        p99Us: median(rs.map((x) => x.p99)),
        traefikCpuUsPerCall: median(rs.map((x) => x.cpuUsPerCall)),
        rounds: rs,
      };
      byConcurrency[`c${c}`] = s;
      calls += s.calls;
      cuts += s.cuts;
      other += s.otherFailures;
    }
    summary[side.name] = {
      label: side.label,
      ...byConcurrency,
      calls,
      cuts,
      otherFailures: other,
      cutsPer100k: (cuts / calls) * 100_000,
    };
  }
  return summary;
}

function printReport(summary: Record<string, SideFigures>, sides: Side[]): void {
  const out: string[] = [];
  const line = (s = "") => out.push(s);
  const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : "n/a");
  const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "n/a");
  line();
  line(
    `Cut answers (calls that got no complete answer), ${cfg.rounds} alternating rounds; cuts summed, other figures medians of the rounds`,
  );
  line(
    `${"side".padEnd(42)} ${"conc".padStart(4)} ${"calls".padStart(8)} ${"cut".padStart(5)} ${"cut/100k".padStart(9)} ${"other fail".padStart(10)} ${"calls/s".padStart(8)} ${"p50 us".padStart(7)} ${"p99 us".padStart(7)} ${"CPU us/call".padStart(11)}`,
  );
  for (const side of sides) {
    for (const c of CONCURRENCIES) {
      const s = summary[side.name][`c${c}`];
      line(
        `${side.label.padEnd(42)} ${String(c).padStart(4)} ${String(s.calls).padStart(8)} ${String(s.cuts).padStart(5)} ${f1(s.cutsPer100k).padStart(9)} ${String(s.otherFailures).padStart(10)} ${f0(s.rps).padStart(8)} ${f0(s.p50Us).padStart(7)} ${f0(s.p99Us).padStart(7)} ${f0(s.traefikCpuUsPerCall).padStart(11)}`,
      );
    }
    const t = summary[side.name];
    line(
      `${"".padEnd(42)} ${"all".padStart(4)} ${String(t.calls).padStart(8)} ${String(t.cuts).padStart(5)} ${f1(t.cutsPer100k).padStart(9)} ${String(t.otherFailures).padStart(10)}`,
    );
  }
  const cost = (a: string, b: string, what: string) => {
    if (!summary[a] || !summary[b]) return;
    line(`${what}:`);
    for (const c of CONCURRENCIES) {
      const x = summary[a][`c${c}`];
      const y = summary[b][`c${c}`];
      line(
        `  c=${String(c).padEnd(2)} Traefik CPU ${f0(x.traefikCpuUsPerCall - y.traefikCpuUsPerCall).padStart(5)} us/call, p50 ${f0(x.p50Us - y.p50Us).padStart(5)} us, p99 ${f0(x.p99Us - y.p99Us).padStart(6)} us, calls/s x${(x.rps / y.rps).toFixed(3)}`,
      );
    }
  };
  line();
  cost("plugin", "unbuffered", "Cost of buffering bodies (plugin minus plugin with maxBufferedBodyBytes 0)");
  cost("plugin", "plain", "Cost of the plugin with buffering (plugin minus plain sticky Traefik)");
  process.stdout.write(out.join("\n") + "\n");
}

runBench("cut-bench", main);
