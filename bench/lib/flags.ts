// Command-line flags of the benchmarks: parsed strictly, checked before anything is built or
// started, and a bad value ends the run with one line naming the flag (exit code 2).
import { parseArgs, type ParseArgsConfig } from "node:util";

export type FlagValues = Record<string, string | boolean | undefined>;

export interface Flags {
  values: FlagValues;
  /** Ends the run: `<tool>: <setting>: <msg>`, exit code 2. */
  usageError(setting: string, msg: string): never;
  /** A numeric flag within [min, max] (whole numbers unless `integer` is false), or `def`. */
  num(name: string, def: number, min: number, max: number, integer?: boolean): number;
}

/** Parses argv for `tool`; `--help` prints `usage` and exits 0. */
export function readFlags(
  tool: string,
  usage: string,
  options: NonNullable<ParseArgsConfig["options"]>,
  argv = process.argv.slice(2),
): Flags {
  const usageError = (setting: string, msg: string): never => {
    process.stderr.write(`${tool}: ${setting}: ${msg}\n`);
    process.exit(2);
  };
  let values: FlagValues = {};
  try {
    values = parseArgs({ args: argv, strict: true, options: { ...options, help: { type: "boolean" } } })
      .values as FlagValues;
  } catch (err) {
    usageError("arguments", (err as Error).message.split("\n")[0]!);
  }
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  const num = (name: string, def: number, min: number, max: number, integer = true): number => {
    const raw = values[name];
    if (raw === undefined) return def;
    const n = Number(raw);
    if (
      typeof raw !== "string" ||
      raw.trim() === "" ||
      !Number.isFinite(n) ||
      (integer && !Number.isInteger(n)) ||
      n < min ||
      n > max
    ) {
      usageError(
        `--${name}`,
        `must be ${integer ? "a whole number" : "a number"} from ${min} to ${max}, got ${JSON.stringify(raw)}`,
      );
    }
    return n;
  };
  return { values, usageError, num };
}
