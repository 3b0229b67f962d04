// What the fast path routed, counted as the plugin counts what it pins: Traefik counts the requests
// of each fast-path service (one per incarnation), and every poll adds what each count grew by to
// the edge's `pin` decisions and to the fast path's own counter. Counts are taken from this
// sidecar's start on: at the first reading, the counts of a Traefik that started before this
// sidecar are a baseline (a previous sidecar counted them), those of a Traefik that started since
// are all new (Traefik and the sidecar start together, and the first readings fail until Traefik
// listens); a service that appears later counts from zero; a Traefik whose process start time
// changed, or whose count went down, restarted (counted from zero again).
import type { Periodic, SidecarContext } from "./context.ts";
import { FAST_PATH_SERVICE_PREFIX } from "./fast-path.ts";
import { readTraefikServiceRequests } from "./traefik.ts";
import { traefikMetricsUrl } from "./config.ts";
import { errFields } from "../../lib/errors.ts";

export class FastPathCounts {
  /** Each service's count at the last reading; null before the first. */
  #last: Map<string, number> | null = null;
  /** Traefik's process start time at the last reading. */
  #traefikStartedAt: number | null = null;
  readonly #startedAt = Date.now();

  constructor(private readonly ctx: Pick<SidecarContext, "cfg" | "metrics" | "log" | "throttled">) {}

  start(ticks: Periodic): void {
    ticks.every(this.ctx.cfg.traefikPollIntervalMs, () => this.poll());
    void this.poll();
  }

  /** One reading; resolves with the requests it added (0 on an error, and on a baseline). */
  async poll(): Promise<number> {
    const { cfg, metrics, log, throttled } = this.ctx;
    const url = traefikMetricsUrl(cfg);
    if (!url) return 0;
    let counts: Map<string, number>;
    let startedAtMs: number | null;
    try {
      ({ counts, startedAtMs } = await readTraefikServiceRequests(url, FAST_PATH_SERVICE_PREFIX));
    } catch (err) {
      metrics.traefikErrors.inc();
      throttled("fast-path-counts", () =>
        log.warn({ err: errFields(err) }, "fast path: Traefik's request counts unreadable"),
      );
      return 0;
    }
    const restarted = startedAtMs !== null && this.#traefikStartedAt !== null && startedAtMs !== this.#traefikStartedAt;
    const newerThanUs = startedAtMs !== null && startedAtMs >= this.#startedAt;
    const last = restarted || (this.#last === null && newerThanUs) ? new Map<string, number>() : this.#last;
    this.#last = counts;
    this.#traefikStartedAt = startedAtMs;
    if (!last) return 0;
    let added = 0;
    for (const [service, n] of counts) {
      const before = last.get(service) ?? 0;
      added += n >= before ? n - before : n;
    }
    if (added > 0) {
      metrics.decisions.inc({ reason: "pin" }, added);
      metrics.fastPathRequests.inc(added);
    }
    return added;
  }
}
