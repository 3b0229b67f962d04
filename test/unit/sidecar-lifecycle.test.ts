// The sidecar's lifecycle: one state, the only legal steps, and close() from any running state.
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { readMeta } from "../../lib/view/index.ts";
import { Lifecycle, LifecycleError, type SidecarState } from "../../sidecar/src/lifecycle.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/sidecar.ts";
import { freePort } from "../../dev/net.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { itStepsOnlyAlongTheTable } from "../support/lifecycle-pairs.ts";

const STATES: SidecarState[] = ["starting", "syncing", "ready", "closing", "closed"];
const LEGAL = new Set([
  "starting>syncing",
  "starting>closing",
  "syncing>ready",
  "syncing>closing",
  "ready>closing",
  "closing>closed",
]);

/** A lifecycle walked to `state` along legal steps. */
function at(state: SidecarState): Lifecycle {
  const path: Record<SidecarState, SidecarState[]> = {
    starting: [],
    syncing: ["syncing"],
    ready: ["syncing", "ready"],
    closing: ["closing"],
    closed: ["closing", "closed"],
  };
  const l = new Lifecycle();
  for (const s of path[state]) l.to(s);
  expect(l.state).toBe(state);
  return l;
}

describe("lifecycle transitions", () => {
  itStepsOnlyAlongTheTable({ states: STATES, legal: LEGAL, at, error: LifecycleError, code: "ERR_SIDECAR_LIFECYCLE" });
  it("takes work only while starting, syncing or ready", () => {
    expect(STATES.filter((s) => at(s).running)).toEqual(["starting", "syncing", "ready"]);
  });
});

/** Whether a full registry sync has completed, as /healthz says. */
const synced = async (sc: Sidecar): Promise<boolean> =>
  ((await (await fetch(`${sc.url}/healthz`)).json()) as { synced: boolean }).synced;

describe("sidecar lifecycle", () => {
  const quiet = pino({ level: "silent" });
  const dirs: string[] = [];
  const running: Sidecar[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((s) => s.close()));
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });
  const tempDir = async () => {
    const d = await mkdtemp(join(tmpdir(), "mcpa-life-"));
    dirs.push(d);
    return d;
  };

  it("syncing -> ready once a synced view is on disk; close twice is one close", async () => {
    const sc = await startSidecar({ dir: await tempDir(), port: 0 }, { logger: quiet });
    running.push(sc);
    expect(["syncing", "ready"]).toContain(sc.state());
    await waitUntil("ready", () => sc.ready(), 3000);
    expect(sc.state()).toBe("ready");
    expect(await synced(sc)).toBe(true);
    const first = sc.close();
    expect(sc.state()).toBe("closing");
    expect(sc.ready()).toBe(false);
    const second = sc.close();
    expect(second).toBe(first);
    await Promise.all([first, second]);
    expect(sc.state()).toBe("closed");
    await sc.close(); // after closed: still the same, settled close
    expect(sc.state()).toBe("closed");
    expect(await fetch(`${sc.url}/healthz`).catch(() => null)).toBeNull();
  });

  it("the registry unreachable: stays syncing (a first view with what is known is not ready); close during syncing", async () => {
    // Nothing listens on this port: the registry never connects, the sync keeps retrying.
    const nobody = await freePort();
    const dir = await tempDir();
    const sc = await startSidecar({ dir, port: 0, redisUrl: `redis://127.0.0.1:${nobody}` }, { logger: quiet });
    running.push(sc);
    expect(sc.state()).toBe("syncing");
    await waitUntil("the first view published after the first wait", async () => await readMeta(dir), 4000);
    expect(sc.state()).toBe("syncing");
    expect(sc.ready()).toBe(false);
    expect((await fetch(`${sc.url}/readyz`)).status).toBe(503);
    expect(await synced(sc)).toBe(false);
    await sc.close();
    expect(sc.state()).toBe("closed");
  });

  it("close during syncing, before any view", async () => {
    const nobody = await freePort();
    const dir = await tempDir();
    const sc = await startSidecar({ dir, port: 0, redisUrl: `redis://127.0.0.1:${nobody}` }, { logger: quiet });
    expect(sc.state()).toBe("syncing");
    await sc.close();
    expect(sc.state()).toBe("closed");
    await sleep(1200); // past the first wait: nothing is published after the close
    expect(await readMeta(dir)).toBeNull();
  });

  it("a port in use: the start fails naming --port, and nothing keeps running", async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(startSidecar({ dir: await tempDir(), port }, { logger: quiet })).rejects.toMatchObject({
        code: "ERR_SIDECAR_LISTEN",
        setting: "--port",
      });
    } finally {
      blocker.close();
    }
  });
});
