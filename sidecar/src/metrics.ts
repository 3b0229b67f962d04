// Prometheus metrics (prom-client, one Registry per sidecar so several can live in one process).
// Names: mcp_affinity_*, base units, counters end in _total; no session id in any label.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { BODY_KINDS, DECISION_REASONS } from "../../lib/view/index.ts";
import type { Mirror } from "./mirror.ts";
import { nodeLabel } from "../../lib/registry/node-name.ts";

export const PREFIX = "mcp_affinity_";

export interface SidecarMetrics {
  registry: Registry;
  decisions: Counter<"reason">;
  postBodies: Counter<"body">;
  exposedServerIds: Counter<string>;
  eventsDropped: Counter<string>;
  eventFiles: Counter<"result">;
  eventBadLines: Counter<string>;
  eventLag: Histogram<string>;
  eventPending: Gauge<string>;
  eventQuarantine: Gauge<string>;
  deathChecks: Counter<"result">;
  edgeTouches: Counter<"result">;
  learnedFiles: Gauge<string>;
  registrations: Counter<"source">;
  closes: Counter<"origin">;
  redisErrors: Counter<"operation">;
  registryLosses: Counter<"reason">;
  restored: Counter<"result">;
  dirErrors: Counter<"operation">;
  viewPublishDuration: Histogram<"kind">;
  viewPublishErrors: Counter<string>;
  viewShardsWritten: Counter<string>;
  reconciles: Counter<"result">;
  reconcileDuration: Histogram<string>;
  learnedDeleted: Counter<"reason">;
  traefikErrors: Counter<string>;
  probes: Counter<"result">;
  apiRequests: Counter<"method" | "status">;
  fastPathRouters: Gauge<string>;
  fastPathWrites: Counter<"result">;
  fastPathRequests: Counter<string>;
}

export interface MetricsSources {
  mirror: Mirror;
  /** Wall-clock ms of the last meta written, or null before the first one. */
  lastPublished: () => number | null;
  registryUp: () => boolean;
  ready: () => boolean;
}

/** The counters and histograms the components record into (no state gauges yet: see addStateGauges). */
export function createMetrics(): SidecarMetrics {
  const registry = new Registry();
  const r = [registry];
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  // Gauges named like counters (`promtool check metrics` refuses them); the same figures are the
  // sums of nodejs_active_{handles,requests,resources} by type.
  for (const kind of ["handles", "requests", "resources"])
    registry.removeSingleMetric(`${PREFIX}nodejs_active_${kind}_total`);

  const decisions = new Counter({
    name: `${PREFIX}edge_decisions_total`,
    help: "Edge (plugin) decisions by reason, from the plugin's event batches",
    labelNames: ["reason"],
    registers: r,
  });
  // Pre-create the documented reasons so dashboards see zeros rather than gaps.
  for (const reason of DECISION_REASONS) decisions.inc({ reason }, 0);
  const postBodies = new Counter({
    name: `${PREFIX}edge_post_bodies_total`,
    help: "POSTs with a body passed on by the plugin, by body handling: buffered (copied into Traefik's memory first) or streamed (chunked, or above maxBufferedBodyBytes: its answer can be cut by the proxy)",
    labelNames: ["body"],
    registers: r,
  });
  for (const body of BODY_KINDS) postBodies.inc({ body }, 0);
  const m: SidecarMetrics = {
    registry,
    decisions,
    postBodies,
    exposedServerIds: new Counter({
      name: `${PREFIX}edge_exposed_server_ids_total`,
      help: "Answers of wrapped sessions that showed the client the server's own Mcp-Session-Id (clients may adopt it and lose their routing token): the router that strips it is missing",
      registers: r,
    }),
    eventsDropped: new Counter({
      name: `${PREFIX}edge_session_events_lost_total`,
      help: "Learn and close events the plugin could not write (no free slot in events/ for session batches)",
      registers: r,
    }),
    eventFiles: new Counter({
      name: `${PREFIX}event_files_total`,
      help: "Event files handled, by result (applied, corrupt, quarantined)",
      labelNames: ["result"],
      registers: r,
    }),
    eventQuarantine: new Gauge({
      name: `${PREFIX}event_quarantine_files`,
      help: "Event batches kept in events-quarantine/ (could not be applied; bounded)",
      registers: r,
    }),
    deathChecks: new Counter({
      name: `${PREFIX}death_checks_total`,
      help: "Sessions the edge saw answered without a session (possible 404), checked with their owner, by result (dead, alive, error, skipped)",
      labelNames: ["result"],
      registers: r,
    }),
    edgeTouches: new Counter({
      name: `${PREFIX}edge_session_touches_total`,
      help: "Activity of edge-learned sessions written to Redis (TTL renewed), by result (renewed, skipped: not an edge record or gone, dropped: queue full, error)",
      labelNames: ["result"],
      registers: r,
    }),
    learnedFiles: new Gauge({
      name: `${PREFIX}learned_files`,
      help: "Files in learned/ (bounded by the plugin's maxLearnedFiles)",
      registers: r,
    }),
    fastPathRouters: new Gauge({
      name: `${PREFIX}fast_path_routers`,
      help: "Routers in the fast-path file: one per live node incarnation whose sessions Traefik routes without the plugin",
      registers: r,
    }),
    fastPathWrites: new Counter({
      name: `${PREFIX}fast_path_writes_total`,
      help: "Writes of the fast-path file (each makes Traefik reload its dynamic configuration), by result (ok, error)",
      labelNames: ["result"],
      registers: r,
    }),
    fastPathRequests: new Counter({
      name: `${PREFIX}fast_path_requests_total`,
      help: 'Requests Traefik routed by the fast-path routers, without the plugin (also counted in edge_decisions_total{reason="pin"}), from Traefik\'s own service counts',
      registers: r,
    }),
    eventBadLines: new Counter({
      name: `${PREFIX}event_bad_lines_total`,
      help: "Unreadable event lines skipped",
      registers: r,
    }),
    eventLag: new Histogram({
      name: `${PREFIX}event_lag_seconds`,
      help: "Time from the plugin writing a batch to the sidecar applying it",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: r,
    }),
    eventPending: new Gauge({
      name: `${PREFIX}event_files_pending`,
      help: "Event files waiting (incomplete, or held back by a failed apply)",
      registers: r,
    }),
    registrations: new Counter({
      name: `${PREFIX}registrations_total`,
      help: "New session registrations seen by this sidecar, by source (node, edge); every sidecar sees every registration",
      labelNames: ["source"],
      registers: r,
    }),
    closes: new Counter({
      name: `${PREFIX}closes_total`,
      help: "Sessions this sidecar saw closed, each once, by the path that told it first (edge: a DELETE seen by this Traefik, api: the sessions API, registry: other writers); every sidecar sees every close",
      labelNames: ["origin"],
      registers: r,
    }),
    redisErrors: new Counter({
      name: `${PREFIX}redis_errors_total`,
      help: "Failed Redis operations, by operation",
      labelNames: ["operation"],
      registers: r,
    }),
    registryLosses: new Counter({
      name: `${PREFIX}registry_losses_total`,
      help: "Times this sidecar found that Redis lost data, by reason (marker: the marker key gone or replaced, a restart without persistence or a flush; master: a master it had not seen before, a failover or a restart)",
      labelNames: ["reason"],
      registers: r,
    }),
    restored: new Counter({
      name: `${PREFIX}sessions_restored_total`,
      help: "Kept session records (sessions API, edge-learned) this sidecar put back after a registry loss, by result (put, present: another writer was first, failed: retried)",
      labelNames: ["result"],
      registers: r,
    }),
    dirErrors: new Counter({
      name: `${PREFIX}shared_dir_errors_total`,
      help: "Failed file operations in the shared directory, by operation",
      labelNames: ["operation"],
      registers: r,
    }),
    viewPublishDuration: new Histogram({
      name: `${PREFIX}view_publish_duration_seconds`,
      help: "Time to publish the view, by kind (full, incremental, meta)",
      labelNames: ["kind"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    }),
    viewPublishErrors: new Counter({
      name: `${PREFIX}view_publish_errors_total`,
      help: "View publishes that failed (the previous view stays)",
      registers: r,
    }),
    viewShardsWritten: new Counter({
      name: `${PREFIX}view_shards_written_total`,
      help: "Shard files written or removed",
      registers: r,
    }),
    reconciles: new Counter({
      name: `${PREFIX}reconciles_total`,
      help: "Full resyncs with the registry, by result (ok, error)",
      labelNames: ["result"],
      registers: r,
    }),
    reconcileDuration: new Histogram({
      name: `${PREFIX}reconcile_duration_seconds`,
      help: "Duration of a full resync",
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: r,
    }),
    learnedDeleted: new Counter({
      name: `${PREFIX}learned_files_deleted_total`,
      help: "learned/ files deleted, by reason (published, expired, invalid)",
      labelNames: ["reason"],
      registers: r,
    }),
    traefikErrors: new Counter({
      name: `${PREFIX}traefik_api_errors_total`,
      help: "Failed polls of the Traefik API",
      registers: r,
    }),
    probes: new Counter({
      name: `${PREFIX}node_probes_total`,
      help: "Health probes of the nodes by the sidecar, by result (ok, unhealthy, timeout, refused; late-ok, late-unhealthy: a timed-out probe answered later)",
      labelNames: ["result"],
      registers: r,
    }),
    apiRequests: new Counter({
      name: `${PREFIX}api_requests_total`,
      help: "Sessions API requests, by method and status",
      labelNames: ["method", "status"],
      registers: r,
    }),
  };
  return m;
}

/** The gauges read from the sidecar's state at each scrape, once that state exists. */
export function addStateGauges(m: SidecarMetrics, src: MetricsSources): void {
  const r = [m.registry];
  new Gauge({
    name: `${PREFIX}sessions`,
    help: "Live sessions in the registry mirror (not those of gone nodes), by node (server URL, or cookie when unknown) and node state",
    labelNames: ["node", "state"],
    registers: r,
    collect() {
      this.reset();
      // Sessions of a gone incarnation are dead (the edge answers 404): the mirror does not count them.
      for (const [cookie, n] of src.mirror.liveSessionsByNode()) {
        const node = nodeLabel(src.mirror.node(cookie) ?? { url: "", cookie });
        this.set({ node, state: src.mirror.nodeState(cookie) }, n);
      }
    },
  });
  new Gauge({
    name: `${PREFIX}sessions_closed`,
    help: "Closed sessions kept in the view as tombstones (edge answers 404)",
    registers: r,
    collect() {
      this.set(src.mirror.closedCount);
    },
  });
  new Gauge({
    name: `${PREFIX}nodes`,
    help: "Known nodes by state (up, draining, down, gone)",
    labelNames: ["state"],
    registers: r,
    collect() {
      const counts: Record<string, number> = { up: 0, draining: 0, down: 0, gone: 0 };
      for (const n of src.mirror.nodes()) counts[n.state]++;
      for (const [state, v] of Object.entries(counts)) this.set({ state }, v);
    },
  });
  new Gauge({
    name: `${PREFIX}node_state`,
    help: "1 for each node's current state (node = server URL, or cookie when unknown)",
    labelNames: ["node", "state"],
    registers: r,
    collect() {
      this.reset();
      for (const n of src.mirror.nodes()) this.set({ node: nodeLabel(n), state: n.state }, 1);
    },
  });
  new Gauge({
    name: `${PREFIX}node_info`,
    help: "1 per known node: its name from its heartbeat (node = server URL, or cookie when unknown)",
    labelNames: ["node", "name"],
    registers: r,
    collect() {
      this.reset();
      for (const n of src.mirror.nodes()) if (n.name) this.set({ node: nodeLabel(n), name: n.name }, 1);
    },
  });
  new Gauge({
    name: `${PREFIX}view_age_seconds`,
    help: "Age of the published view's freshness stamp (-1 before the first publish)",
    registers: r,
    collect() {
      const p = src.lastPublished();
      this.set(p === null ? -1 : Math.max(0, (Date.now() - p) / 1000));
    },
  });
  new Gauge({
    name: `${PREFIX}registry_up`,
    help: "1 when the registry (Redis) connection is ready",
    registers: r,
    collect() {
      this.set(src.registryUp() ? 1 : 0);
    },
  });
  new Gauge({
    name: `${PREFIX}ready`,
    help: "1 once the first view is published and the registry synced",
    registers: r,
    collect() {
      this.set(src.ready() ? 1 : 0);
    },
  });
}
