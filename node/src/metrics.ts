// In-memory counters (always) mirrored into an optional prom-client registry. No session id in any label.
import { Counter, Gauge, type Registry } from "prom-client";

/** Why a session id that reached this node is not served here. */
export type MissReason = "misroute" | "stale" | "unknown" | "unchecked";
export const MISS_REASONS: readonly MissReason[] = ["misroute", "stale", "unknown", "unchecked"];

export type RegistryOp = "register" | "refresh" | "lookup" | "close" | "heartbeat" | "connection";

export interface AffinityStats {
  node: { url: string; cookie: string; name: string; boot: string; state: string };
  sessions: number;
  registrations: { ok: number; failed: number };
  refreshes: { ok: number; missing: number; failed: number };
  mismatches: Record<MissReason, number>;
  closes: { closed: number; failed: number; unknown: number };
  heartbeats: { ok: number; failed: number };
  registryErrors: Record<RegistryOp, number>;
}

export class AffinityMetrics {
  private readonly c = {
    registrations: { ok: 0, failed: 0 },
    refreshes: { ok: 0, missing: 0, failed: 0 },
    mismatches: { misroute: 0, stale: 0, unknown: 0, unchecked: 0 } as Record<MissReason, number>,
    closes: { closed: 0, failed: 0, unknown: 0 },
    heartbeats: { ok: 0, failed: 0 },
    registryErrors: { register: 0, refresh: 0, lookup: 0, close: 0, heartbeat: 0, connection: 0 } as Record<
      RegistryOp,
      number
    >,
  };
  private readonly prom?: {
    registrations: Counter<"result">;
    refreshes: Counter<"result">;
    mismatches: Counter<"reason">;
    closes: Counter<"local">;
    heartbeats: Counter<"result">;
    registryErrors: Counter<"op">;
  };

  constructor(registry: Registry | undefined, sessions: () => number, state: () => string) {
    if (!registry) return;
    const registers = [registry];
    this.prom = {
      registrations: new Counter({
        name: "mcp_affinity_node_registrations_total",
        help: "Session registrations by result",
        labelNames: ["result"],
        registers,
      }),
      refreshes: new Counter({
        name: "mcp_affinity_node_ttl_refreshes_total",
        help: "Session TTL refreshes by result",
        labelNames: ["result"],
        registers,
      }),
      mismatches: new Counter({
        name: "mcp_affinity_node_session_mismatches_total",
        help: "Requests for sessions not held by this node, by reason",
        labelNames: ["reason"],
        registers,
      }),
      closes: new Counter({
        name: "mcp_affinity_node_closes_total",
        help: "Session closes by local outcome",
        labelNames: ["local"],
        registers,
      }),
      heartbeats: new Counter({
        name: "mcp_affinity_node_heartbeats_total",
        help: "Heartbeat writes by result",
        labelNames: ["result"],
        registers,
      }),
      registryErrors: new Counter({
        name: "mcp_affinity_node_registry_errors_total",
        help: "Registry errors by operation",
        labelNames: ["op"],
        registers,
      }),
    };
    new Gauge({
      name: "mcp_affinity_node_sessions",
      help: "Sessions held by this process",
      registers,
      collect() {
        this.set(sessions());
      },
    });
    new Gauge({
      name: "mcp_affinity_node_draining",
      help: "1 while the node is draining or drained",
      registers,
      collect() {
        this.set(state() === "up" ? 0 : 1);
      },
    });
    for (const r of MISS_REASONS) this.prom.mismatches.inc({ reason: r }, 0);
  }

  registration(result: "ok" | "failed"): void {
    this.c.registrations[result]++;
    this.prom?.registrations.inc({ result });
  }
  refresh(result: "ok" | "missing" | "failed"): void {
    this.c.refreshes[result]++;
    this.prom?.refreshes.inc({ result });
  }
  mismatch(reason: MissReason): void {
    this.c.mismatches[reason]++;
    this.prom?.mismatches.inc({ reason });
  }
  close(local: "closed" | "failed" | "unknown"): void {
    this.c.closes[local]++;
    this.prom?.closes.inc({ local });
  }
  heartbeat(result: "ok" | "failed"): void {
    this.c.heartbeats[result]++;
    this.prom?.heartbeats.inc({ result });
  }
  registryError(op: RegistryOp): void {
    this.c.registryErrors[op]++;
    this.prom?.registryErrors.inc({ op });
  }

  snapshot(node: AffinityStats["node"] & { sessions: number }): AffinityStats {
    const { sessions, ...n } = node;
    return structuredClone({ node: n, sessions, ...this.c });
  }
}
