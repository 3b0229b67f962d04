// What every Traefik benchmark records around its figures: the settings, the machine and its load
// at start and end, the JSON file of --json (written whole or not at all), and how a run ends.
import { cpus, loadavg } from "node:os";
import { renameSync, writeFileSync } from "node:fs";

/** A progress line on stdout, stamped with the seconds since start: `[tag  12s] msg`. */
export const progressLog =
  (tag: string) =>
  (msg: string): void => {
    process.stdout.write(`[${tag} ${((performance.now() / 1000) | 0).toString().padStart(3)}s] ${msg}\n`);
  };

export interface BenchResults {
  startedAt: string;
  config: unknown;
  machine: { cpus: number; node: string; loadAvgAtStart: number[]; loadAvgAtEnd?: number[] };
  [section: string]: unknown;
}

/** The results of a run starting now; warns when other work already loads the machine. */
export function startResults(config: unknown, log: (msg: string) => void): BenchResults {
  const n = cpus().length;
  // Everything shares the machine's cores: other work running now shows up as noise in every figure.
  if (loadavg()[0]! > 0.5 * n)
    log(
      `warning: load average ${loadavg()[0]!.toFixed(2)} on ${n} cores: other work is running, figures will be noisy`,
    );
  return {
    startedAt: new Date().toISOString(),
    config,
    machine: { cpus: n, node: process.version, loadAvgAtStart: loadavg() },
  };
}

/** Notes the load at the end of the run. */
export function endResults(results: BenchResults): void {
  results.machine.loadAvgAtEnd = loadavg();
}

/** Writes the results to `file` (--json) through a temporary file; nothing when no file was asked for. */
export function writeResults(results: BenchResults, file: string | undefined, log: (msg: string) => void): void {
  if (!file) return;
  writeFileSync(file + ".tmp", JSON.stringify(results, null, 2) + "\n");
  renameSync(file + ".tmp", file);
  log(`JSON written to ${file}`);
}

/** Runs a benchmark's main: exit 0 when it ends, 1 with one line `<tool>: <message> (<code>)` when it fails. */
export function runBench(tool: string, main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`${tool}: ${(err as Error).message} (${(err as { code?: string }).code ?? "ERR_BENCH"})\n`);
      process.exit(1);
    },
  );
}
