// The node's lifecycle: one state, changed in one place, along the only paths it may take. Each
// state owns what runs in it (timers, the drain and stop promises); leaving a state ends them.
//
//   up --drain()--> draining --no session left, or the grace is over--> drained
//    \                 \                                                   \
//     `-----------------`----------------------- stop() -------------------`--> stopping --> stopped
//
// up:       serving; the heartbeat ("up") and the idle sweep run; new sessions are taken.
// draining: the heartbeat announces "draining"; existing sessions are served for drainGraceMs,
//           new initializes refused (http.ts); healthy until the grace is over.
// drained:  drain() has resolved (no session left, or the grace is over): the caller stops. What
//           is left is still served.
// stopping: stop() runs: heartbeat and sweep stopped, every local session closed, the node record
//           removed, the registry connection closed. Nothing is announced any more.
// stopped:  all of that is done.
//
// drain() in draining or drained is the same drain; stop() in stopping or stopped is the same stop.
// drain() once stopping or stopped is refused: AffinityLifecycleError (ERR_AFFINITY_LIFECYCLE).
import { McpAffinityError } from "../../lib/errors.ts";

export type AffinityState = "up" | "draining" | "drained" | "stopping" | "stopped";

export const AFFINITY_STATES: readonly AffinityState[] = ["up", "draining", "drained", "stopping", "stopped"];

const NEXT: Readonly<Record<AffinityState, readonly AffinityState[]>> = {
  up: ["draining", "stopping"],
  draining: ["drained", "stopping"],
  drained: ["stopping"],
  stopping: ["stopped"],
  stopped: [],
};

export class AffinityLifecycleError extends McpAffinityError {
  constructor(
    readonly from: AffinityState,
    readonly to: AffinityState,
  ) {
    super("ERR_AFFINITY_LIFECYCLE", `the node cannot go from ${from} to ${to}`);
  }
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Each state with what it owns. */
type Phase =
  | { state: "up"; background: NodeJS.Timeout[] }
  | { state: "draining"; background: NodeJS.Timeout[]; deadline: number; poll: NodeJS.Timeout; drain: Deferred }
  | { state: "drained"; background: NodeJS.Timeout[]; drain: Promise<void> }
  | { state: "stopping"; stop: Deferred }
  | { state: "stopped"; stop: Promise<void> };

export interface LifecycleOptions {
  drainGraceMs: number;
  /** Work that runs every `everyMs` while the node serves (up, draining, drained). */
  background?: ReadonlyArray<{ everyMs: number; run: () => void }>;
  /** True once no session is left: the drain ends before its grace. */
  idle: () => boolean;
  /** Called after each step (logs, the heartbeat that announces draining). */
  onStep?: (from: AffinityState, to: AffinityState) => void;
}

export class NodeLifecycle {
  #phase: Phase;

  constructor(private readonly o: LifecycleOptions) {
    const background = (o.background ?? []).map(({ everyMs, run }) => setInterval(run, everyMs).unref());
    this.#phase = { state: "up", background };
  }

  get state(): AffinityState {
    return this.#phase.state;
  }

  /** Up, draining or drained: the node announces itself and its timers run. */
  get serving(): boolean {
    const s = this.#phase.state;
    return s === "up" || s === "draining" || s === "drained";
  }

  /** Up, or draining within the grace period: Traefik must keep routing the sessions served here. */
  get healthy(): boolean {
    const p = this.#phase;
    return p.state === "up" || (p.state === "draining" && Date.now() < p.deadline);
  }

  /** Moves to `next`; any step the diagram above does not draw throws AffinityLifecycleError. */
  to(next: AffinityState): void {
    const from = this.#phase;
    if (!NEXT[from.state].includes(next)) throw new AffinityLifecycleError(from.state, next);
    this.#phase = this.enter(from, next);
    this.leave(from);
    this.o.onStep?.(from.state, next);
  }

  /**
   * up → draining, resolved once drained (or stopped meanwhile). In draining or drained, the same
   * drain; once stopping or stopped, a rejection with AffinityLifecycleError.
   */
  drain(): Promise<void> {
    const p = this.#phase;
    if (p.state === "draining") return p.drain.promise;
    if (p.state === "drained") return p.drain;
    try {
      this.to("draining");
    } catch (err) {
      return Promise.reject(err);
    }
    const draining = this.#phase as Extract<Phase, { state: "draining" }>;
    this.checkDrain();
    return draining.drain.promise;
  }

  /** Any serving state → stopping, runs `work`, → stopped. Once stopping or stopped, the same stop. */
  stop(work: () => Promise<void>): Promise<void> {
    const p = this.#phase;
    if (p.state === "stopping") return p.stop.promise;
    if (p.state === "stopped") return p.stop;
    this.to("stopping");
    const { stop } = this.#phase as Extract<Phase, { state: "stopping" }>;
    work().then(
      () => {
        this.to("stopped");
        stop.resolve();
      },
      (err: unknown) => {
        this.to("stopped");
        stop.reject(err);
      },
    );
    return stop.promise;
  }

  private checkDrain(): void {
    const p = this.#phase;
    if (p.state === "draining" && (this.o.idle() || Date.now() >= p.deadline)) this.to("drained");
  }

  /** The next state with what it owns, built from the one it leaves. */
  private enter(from: Phase, next: AffinityState): Phase {
    const background = "background" in from ? from.background : [];
    switch (next) {
      case "draining": {
        const grace = this.o.drainGraceMs;
        // Not unref'd: a draining process stays up for its grace period.
        const poll = setInterval(() => this.checkDrain(), Math.min(100, Math.max(10, grace)));
        return { state: "draining", background, deadline: Date.now() + grace, poll, drain: deferred() };
      }
      case "drained":
        return { state: "drained", background, drain: (from as Extract<Phase, { state: "draining" }>).drain.promise };
      case "stopping":
        return { state: "stopping", stop: deferred() };
      case "stopped":
        return { state: "stopped", stop: (from as Extract<Phase, { state: "stopping" }>).stop.promise };
      case "up":
        // No step leads back to up (NEXT); kept for the exhaustive switch.
        return { state: "up", background };
    }
  }

  /** Ends what the state left behind owned and the next one does not take over. */
  private leave(from: Phase): void {
    if (from.state === "draining") {
      clearInterval(from.poll);
      from.drain.resolve();
    }
    if ("background" in from && !this.serving) for (const t of from.background) clearInterval(t);
  }
}
