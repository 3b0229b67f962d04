// What the fast path routed, counted as the plugin counts what it pins: Traefik counts the requests
// of each fast-path service (one per incarnation), and every poll adds what each count grew by to
// the edge's `pin` decisions and to the fast path's own counter. Counts are taken from this
// sidecar's first reading on: a service already counted then is a baseline; one that appears later
// counts from zero; a count that went down is a restarted Traefik (counted from zero again).
import type { Periodic, SidecarContext } from "./context.ts";
import { FAST_PATH_SERVICE_PREFIX } from "./fast-path.ts";
import { readTraefikServiceRequests } from "./traefik.ts";
import { traefikMetricsUrl } from "./config.ts";
import { errFields } from "../../lib/errors.ts";

export class FastPathCounts {
  /** Each service's count at the last reading; null before the first. */
  #last: Map<string, number> | null = null;

  constructor(private readonly ctx: Pick<SidecarContext, "cfg" | "metrics" | "log" | "throttled">) {}

  start(ticks: Periodic): void {
    ticks.every(this.ctx.cfg.traefikPollIntervalMs, () => this.poll());
    void this.poll();
  }

  /** One reading; resolves with the requests it added (0 on the first reading or on an error). */
  async poll(): Promise<number> {
    const { cfg, metrics, log, throttled } = this.ctx;
    const url = traefikMetricsUrl(cfg);
    if (!url) return 0;
    let counts: Map<string, number>;
    try {
      counts = await readTraefikServiceRequests(url, FAST_PATH_SERVICE_PREFIX);
    } catch (err) {
      metrics.traefikErrors.inc();
      throttled("fast-path-counts", () =>
        log.warn({ err: errFields(err) }, "fast path: Traefik's request counts unreadable"),
      );
      return 0;
    }
    const last = this.#last;
    this.#last = counts;
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
