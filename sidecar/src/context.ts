// What every sidecar component is given: settings, log, metrics, the registry and the mirror, the
// one way to report a change to the mirror (updates.ts), and the one way to say "the view must
// change" for what the mirror found out by itself (node states, expired tombstones, a scan).
import type { Logger } from "pino";
import type { Registry } from "../../lib/registry/index.ts";
import type { ViewFs } from "../../lib/view/index.ts";
import type { SidecarConfig } from "./config.ts";
import type { SidecarMetrics } from "./metrics.ts";
import type { Mirror } from "./mirror.ts";
import type { MirrorUpdates } from "./updates.ts";
import { errFields } from "../../lib/errors.ts";

export interface SidecarContext {
  readonly cfg: SidecarConfig;
  readonly log: Logger;
  readonly metrics: SidecarMetrics;
  readonly registry: Registry;
  readonly mirror: Mirror;
  /** Sessions registered or closed, heartbeats: applied, counted once, published. */
  readonly updates: MirrorUpdates;
  readonly fs: ViewFs;
  /** Logs through `fn` at most once per 5 s per kind: an outage must not flood the log. */
  throttled(kind: string, fn: () => void): void;
  /** The mirror changed: publish the view soon (coalesced). */
  changed(): void;
}

export function throttledLog(intervalMs = 5000): SidecarContext["throttled"] {
  const last = new Map<string, number>();
  return (kind, fn) => {
    const now = Date.now();
    if (now - (last.get(kind) ?? 0) < intervalMs) return;
    last.set(kind, now);
    fn();
  };
}

/** Runs tasks on intervals, one run of each at a time; stop() ends them all. */
export class Periodic {
  readonly #timers: NodeJS.Timeout[] = [];
  constructor(private readonly log: Logger) {}

  every(ms: number, fn: () => Promise<unknown> | void): void {
    let running = false;
    const t = setInterval(() => {
      if (running) return;
      running = true;
      Promise.resolve()
        .then(fn)
        .catch((err) => this.log.error({ err: errFields(err) }, "periodic task failed"))
        .finally(() => {
          running = false;
        });
    }, ms);
    this.#timers.push(t);
  }

  stop(): void {
    for (const t of this.#timers.splice(0)) clearInterval(t);
  }
}

/** Resolves when `p` settles or after `ms`, whichever comes first. */
export const settleWithin = (p: Promise<unknown>, ms: number): Promise<unknown> =>
  Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, ms).unref())]);
