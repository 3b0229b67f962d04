// Command-line flags of the benchmarks, read by the one settings module (lib/settings): parsed
// strictly, checked before anything is built or started, and a bad value ends the run with one
// line naming the flag (exit code 2). Benchmarks take flags only, no environment variables.
import { SettingError, helpText, parseSettings, type Schema, type SettingsSpec } from "../../lib/settings/index.ts";

export class BenchConfigError extends SettingError {
  constructor(setting: string, message: string) {
    super("ERR_BENCH_CONFIG", setting, message);
  }
}

/** Parses argv for `tool`; `--help` prints the usage line and every flag, and exits 0. */
export function readFlags<C>(tool: string, usage: string, specs: SettingsSpec<C>, argv = process.argv.slice(2)): C {
  const schema: Schema<C> = {
    specs,
    envPrefix: null,
    error: (setting, message) => new BenchConfigError(setting, message),
    unset: undefined,
  };
  let values: C | null;
  try {
    values = parseSettings(schema, argv);
  } catch (err) {
    if (!(err instanceof BenchConfigError)) throw err;
    process.stderr.write(`${tool}: ${err.message}\n`);
    process.exit(2);
  }
  if (values === null) {
    process.stdout.write(helpText(schema, [`Usage: ${usage}`, ""]));
    process.exit(0);
  }
  return values;
}
