// The parts every Traefik benchmark starts besides the test stack: a second Traefik (plain, or with
// the plugin and other settings), the stack's Traefik restarted with the debug API, and the sidecar
// as its CLI runs in a deployment. All of them share `shared`, the directory of the view.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { httpGet, freePort } from "../../dev/net.ts";
import { ROOT } from "../../dev/paths.ts";
import { GiveUp, waitUntil } from "../../dev/poll.ts";
import { ManagedProcess } from "../../dev/process.ts";
import { traefikBinary, type Stack } from "../../dev/stack.ts";
import {
  dynamicDirOf,
  makeCertificate,
  renderDynamic,
  renderStatic,
  type RenderVars,
} from "../../dev/traefik-config.ts";

export interface ExtraTraefik {
  proc: ManagedProcess;
  base: string;
  apiUrl: string;
}

// ---------------------------------------------------------------------------------------------
// A second Traefik: the same templates; plain (no middleware, and the plugin not even declared), or
// with the plugin and its own settings (for comparing settings side by side in one run)

/** The directory of an extra Traefik's dynamic configuration (a sidecar can write its fast path there first). */
export function extraTraefikDynamicDir(stack: Stack, name: string): string {
  const dir = join(stack.dir, name, "dynamic");
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function startExtraTraefik(
  stack: Stack,
  shared: string,
  name: string,
  plugin: { settings: Record<string, string>; pluginsLocal?: string } | null = null,
): Promise<ExtraTraefik> {
  const dir = join(stack.dir, name);
  mkdirSync(join(dir, "logs"), { recursive: true });
  const ports = { ...stack.ports, http: await freePort(), https: await freePort(), api: await freePort() };
  const { certFile, keyFile } = makeCertificate(dir);
  const vars: RenderVars = {
    bind: "127.0.0.1",
    ports,
    dir,
    shared,
    certFile,
    keyFile,
    logLevel: "ERROR",
    nodeUrls: stack.nodes.map((n) => n.url),
  };
  if (plugin) {
    // Traefik loads local plugins from ./plugins-local under its working directory: the stack's.
    rmSync(join(dir, "plugins-local"), { force: true });
    symlinkSync(plugin.pluginsLocal ?? join(stack.dir, "plugins-local"), join(dir, "plugins-local"));
  }
  writeFileSync(join(dir, "traefik.yml"), benchStatic(vars, plugin !== null));
  extraTraefikDynamicDir(stack, name);
  writeFileSync(
    join(dynamicDirOf(vars), "dynamic.yml"),
    renderDynamic(vars, {
      plugin: plugin !== null,
      pluginSettings: plugin?.settings,
      healthIntervalMs: stack.timing.healthIntervalMs,
      healthTimeoutMs: stack.timing.healthTimeoutMs,
    }),
  );
  const proc = new ManagedProcess(`traefik-${name}`, {
    cmd: traefikBinary(),
    args: [`--configFile=${join(dir, "traefik.yml")}`],
    cwd: dir,
    logFile: join(dir, "logs", "traefik.log"),
  });
  proc.start();
  const apiUrl = `http://127.0.0.1:${ports.api}`;
  await waitUntil(
    `${name} Traefik's healthy servers`,
    async () => {
      if (!proc.running) throw new GiveUp(`${name} Traefik exited:\n${proc.tail()}`, "ERR_BENCH_TRAEFIK");
      const r = await httpGet(`${apiUrl}/api/http/services/mcp@file`);
      if (!r || r.status !== 200) return false;
      const st = (JSON.parse(r.text).serverStatus ?? {}) as Record<string, string>;
      return stack.nodes.every((n) => st[n.url] === "UP");
    },
    30_000,
    100,
  );
  const base = `http://127.0.0.1:${ports.http}`;
  // One request first, so the plugin is compiled before anything is measured.
  if (plugin) await httpGet(`${base}/mcp`, 30_000);
  return { proc, base, apiUrl };
}

/** Waits until Traefik serves a fast-path router for each of `nodes` incarnations (POST and other methods). */
export async function waitFastRouters(t: ExtraTraefik, nodes: number): Promise<void> {
  await waitUntil(
    "the fast-path routers in Traefik",
    async () => {
      const r = await httpGet(`${t.apiUrl}/api/http/routers`);
      if (!r || r.status !== 200) return false;
      const names = (JSON.parse(r.text) as Array<{ name: string; status: string }>)
        .filter((x) => x.name.startsWith("mcp-fast-") && x.status === "enabled")
        .map((x) => x.name);
      return names.length >= 2 * nodes;
    },
    30_000,
    200,
  );
}

/**
 * The static configuration both Traefiks run: traefik/traefik.yml rendered as it is (no extras such
 * as the test stack's access log, which would cost one side more than the other), plus the debug
 * API (pprof, forced GC for heap figures). Without the plugin, the experimental section goes: plain
 * Traefik must not even compile the plugin.
 */
const benchStatic = (vars: RenderVars, withPlugin: boolean): string =>
  renderStatic(vars, { accessLog: false, plugin: withPlugin, debugApi: true });

/**
 * Restarts the stack's Traefik with the debug API (pprof, forced GC for heap figures) switched on,
 * and with another plugin build when one is given (to compare builds: --plugin-wasm FILE).
 */
export async function preparePluginTraefik(
  stack: Stack,
  shared: string,
  pluginWasm: string | undefined,
): Promise<void> {
  const vars: RenderVars = {
    bind: "127.0.0.1",
    ports: stack.ports,
    dir: stack.dir,
    shared,
    certFile: "",
    keyFile: "",
    logLevel: "ERROR",
    nodeUrls: stack.nodes.map((n) => n.url),
  };
  writeFileSync(join(stack.dir, "traefik.yml"), benchStatic(vars, true));
  if (pluginWasm) localPluginDir(join(stack.dir, "plugins-local"), pluginWasm);
  await stack.traefik.stop();
  stack.traefik.start();
  await stack.waitTraefikReady();
}

/**
 * Lays out `pluginsLocal` as Traefik's local plugin directory holding this build of the plugin
 * (replacing the stack's symlink to plugin/build/local, if there). Returns the directory.
 */
export function localPluginDir(pluginsLocal: string, pluginWasm: string): string {
  const dir = join(pluginsLocal, "src", "github.com", "mcp-affinity", "mcp-affinity");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(ROOT, "plugin", ".traefik.yml"), join(dir, ".traefik.yml"));
  copyFileSync(pluginWasm, join(dir, "plugin.wasm"));
  return pluginsLocal;
}

// ---------------------------------------------------------------------------------------------
// The sidecar, as its CLI (bin/mcp-affinity-sidecar.js) runs in a deployment

export async function startBenchSidecar(
  stack: Stack,
  shared: string,
  sidecarMain?: string,
  extraArgs: string[] = [],
): Promise<{ proc: ManagedProcess; url: string; restart(): Promise<void> }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = new ManagedProcess("sidecar", {
    cmd: process.execPath,
    args: [
      ...(sidecarMain ? ["--import", "tsx", sidecarMain] : [join(ROOT, "bin", "mcp-affinity-sidecar.js")]),
      `--dir=${shared}`,
      `--port=${port}`,
      `--redis-url=${stack.redisUrl}`,
      `--traefik-api=${stack.apiUrl}`,
      "--traefik-services=mcp@file",
      "--log-level=warn",
      ...extraArgs,
    ],
    logFile: join(stack.dir, "logs", "bench-sidecar.log"),
  });
  const start = async () => {
    proc.start();
    await waitUntil(
      "the sidecar's /readyz",
      async () => {
        if (!proc.running) throw new GiveUp(`the sidecar exited:\n${proc.tail()}`, "ERR_BENCH_SIDECAR");
        return (await httpGet(`${url}/readyz`))?.status === 200;
      },
      180_000,
      200,
    );
  };
  await start();
  return {
    proc,
    url,
    async restart() {
      await proc.stop();
      await start();
    },
  };
}

/**
 * Builds or installs what a Traefik bench needs (plugin, Traefik, redis-server), after its flags
 * were checked: --help and a typo cost no build. Exits with ensure-deps' code when it cannot.
 */
export function ensureBenchDeps(): void {
  try {
    execFileSync(process.execPath, [join(ROOT, "scripts", "ensure-deps.mjs"), "--plugin", "--traefik", "--redis"], {
      stdio: "inherit",
    });
  } catch (err) {
    process.exit((err as { status?: number }).status ?? 1); // ensure-deps named what is missing
  }
}
