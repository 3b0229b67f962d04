// CLI entry point: mcp-affinity-sidecar [--setting value ...] (see --help).
import { ConfigError, helpText, parseConfig } from "./config.ts";
import { SidecarError, startSidecar } from "./sidecar.ts";
import { errFields } from "../../lib/errors.ts";

const NAME = "mcp-affinity-sidecar";

export async function main(
  argv: string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): Promise<void> {
  let sidecar;
  try {
    const cfg = parseConfig(argv, env);
    if (cfg === null) {
      process.stdout.write(helpText());
      return;
    }
    sidecar = await startSidecar(cfg);
  } catch (err) {
    // A bad setting: one line naming it, exit code 2, no stack trace.
    if (err instanceof ConfigError || (err instanceof SidecarError && err.setting)) {
      process.stderr.write(`${NAME}: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`${NAME}: ${errFields(err).message ?? String(err)}\n`);
    process.exitCode = 1;
    return;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    sidecar.log.info({ signal }, "stopping");
    sidecar.close().then(
      () => process.exit(0),
      (err) => {
        sidecar.log.error({ err: errFields(err) }, "stop failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

await main();
