// The node library's lifecycle: one state, the only legal steps, drain() and stop() idempotent, and
// drain() refused once the node stops.
import { createServer } from "node:http";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  AffinityLifecycleError,
  NodeLifecycle,
  type AffinityState,
  type LifecycleOptions,
} from "../../node/src/lifecycle.ts";
import { AFFINITY_STATES, createAffinity, mountMcp, type Affinity } from "../../node/src/index.ts";
import { sleep } from "../../dev/poll.ts";
import { itStepsOnlyAlongTheTable } from "../support/lifecycle-pairs.ts";

const LEGAL = new Set([
  "up>draining",
  "up>stopping",
  "draining>drained",
  "draining>stopping",
  "drained>stopping",
  "stopping>stopped",
]);

const made: NodeLifecycle[] = [];
afterEach(() => {
  // Leave nothing running: a draining lifecycle polls until it leaves draining.
  for (const l of made.splice(0)) {
    if (l.serving) l.to("stopping");
    if (l.state === "stopping") l.to("stopped");
  }
});

function lifecycle(o: Partial<LifecycleOptions> = {}): NodeLifecycle {
  const l = new NodeLifecycle({ drainGraceMs: 60_000, idle: () => false, ...o });
  made.push(l);
  return l;
}

/** A lifecycle walked to `state` along legal steps. */
function at(state: AffinityState): NodeLifecycle {
  const path: Record<AffinityState, AffinityState[]> = {
    up: [],
    draining: ["draining"],
    drained: ["draining", "drained"],
    stopping: ["stopping"],
    stopped: ["stopping", "stopped"],
  };
  const l = lifecycle();
  for (const s of path[state]) l.to(s);
  expect(l.state).toBe(state);
  return l;
}

describe("lifecycle transitions", () => {
  itStepsOnlyAlongTheTable({
    states: AFFINITY_STATES,
    legal: LEGAL,
    at,
    error: AffinityLifecycleError,
    code: "ERR_AFFINITY_LIFECYCLE",
  });

  it("serves (heartbeat, sweep) while up, draining or drained; healthy while up or draining within the grace", () => {
    expect(AFFINITY_STATES.filter((s) => at(s).serving)).toEqual(["up", "draining", "drained"]);
    expect(AFFINITY_STATES.filter((s) => at(s).healthy)).toEqual(["up", "draining"]);
  });

  it("each step is reported once, in order", () => {
    const steps: string[] = [];
    const l = lifecycle({ onStep: (from, to) => steps.push(`${from}>${to}`) });
    l.to("draining");
    l.to("drained");
    l.to("stopping");
    l.to("stopped");
    expect(steps).toEqual(["up>draining", "draining>drained", "drained>stopping", "stopping>stopped"]);
  });
});

describe("drain() and stop()", () => {
  it("drain() ends once no session is left; a second drain() is the same drain, also once drained", async () => {
    let sessions = 2;
    const l = lifecycle({ idle: () => sessions === 0 });
    const first = l.drain();
    expect(l.state).toBe("draining");
    expect(l.drain()).toBe(first);
    sessions = 0;
    await first;
    expect(l.state).toBe("drained");
    expect(l.drain()).toBe(first);
  });

  it("drain() ends when the grace is over, and at once with a grace of 0", async () => {
    const l = lifecycle({ drainGraceMs: 30 });
    const t0 = Date.now();
    await l.drain();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    expect(l.state).toBe("drained");
    expect(l.healthy).toBe(false);
    const now = lifecycle({ drainGraceMs: 0 });
    void now.drain();
    expect(now.state).toBe("drained");
  });

  it("stop() during the grace ends the drain; a second stop() is the same stop", async () => {
    const l = lifecycle();
    const drained = l.drain();
    let release!: () => void;
    const work = new Promise<void>((r) => (release = r));
    const first = l.stop(() => work);
    expect(l.state).toBe("stopping");
    await drained;
    expect(l.stop(async () => expect.unreachable("a second stop runs nothing"))).toBe(first);
    release();
    await first;
    expect(l.state).toBe("stopped");
    expect(l.stop(async () => expect.unreachable("a stop after stopped runs nothing"))).toBe(first);
  });

  it("drain() once stopping or stopped is refused and changes nothing", async () => {
    const l = lifecycle();
    let release!: () => void;
    const stopped = l.stop(() => new Promise<void>((r) => (release = r)));
    await expect(l.drain()).rejects.toMatchObject({ code: "ERR_AFFINITY_LIFECYCLE", from: "stopping", to: "draining" });
    expect(l.state).toBe("stopping");
    release();
    await stopped;
    await expect(l.drain()).rejects.toBeInstanceOf(AffinityLifecycleError);
    expect(l.state).toBe("stopped");
  });

  it("a failing stop still ends stopped, and every stop() gives its error", async () => {
    const l = lifecycle();
    const boom = new Error("close failed");
    const first = l.stop(async () => {
      throw boom;
    });
    await expect(first).rejects.toBe(boom);
    expect(l.state).toBe("stopped");
    await expect(l.stop(async () => {})).rejects.toBe(boom);
  });

  it("the background work runs while serving and ends with the stop", async () => {
    let runs = 0;
    const l = lifecycle({ background: [{ everyMs: 5, run: () => runs++ }], drainGraceMs: 0 });
    await sleep(40);
    expect(runs).toBeGreaterThan(0);
    await l.drain();
    const drained = runs;
    await sleep(40);
    expect(runs, "still running once drained").toBeGreaterThan(drained);
    await l.stop(async () => {});
    const stopped = runs;
    await sleep(40);
    expect(runs).toBe(stopped);
  });
});

describe("Affinity lifecycle (public API)", () => {
  const quiet = pino({ level: "silent" });
  const nodes: Affinity[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((a) => a.stop()));
  });
  // The sessions API store makes no call before a session exists: no server needed.
  const affinity = (drainGraceMs = 60_000) => {
    const a = createAffinity({
      nodeUrl: "http://127.0.0.1:7999",
      registry: { sidecarUrl: "http://127.0.0.1:1" },
      drainGraceMs,
      logger: quiet,
    });
    nodes.push(a);
    return a;
  };

  it("up -> drained -> stopped; drain and stop twice are harmless; drain after stop is refused", async () => {
    const a = affinity();
    expect([a.state, a.healthy]).toEqual(["up", true]);
    const drained = a.drain();
    expect(a.drain()).toBe(drained);
    await drained;
    expect([a.state, a.healthy, a.stats().node.state]).toEqual(["drained", false, "drained"]);
    const stopped = a.stop();
    expect(a.state).toBe("stopping");
    expect(a.stop()).toBe(stopped);
    await stopped;
    expect(a.state).toBe("stopped");
    await a.stop();
    await expect(a.drain()).rejects.toMatchObject({ code: "ERR_AFFINITY_LIFECYCLE", from: "stopped", to: "draining" });
    expect(a.state).toBe("stopped");
    expect(await a.heartbeat()).toBe(false);
  });

  it("mountMcp's shutdown is one shutdown, and skips the drain after the affinity's own stop", async () => {
    const a = affinity();
    const mounted = mountMcp(createServer(), a, { createServer: () => expect.unreachable("no session here") });
    const first = mounted.shutdown();
    expect(mounted.shutdown()).toBe(first);
    await first;
    expect(a.state).toBe("stopped");

    const b = affinity();
    await b.stop();
    await mountMcp(createServer(), b, { createServer: () => expect.unreachable("no session here") }).shutdown();
    expect(b.state).toBe("stopped");
  });
});
