// Node watch: what the mirror's node liveness is fed from besides the change channel. Heartbeat
// records re-read every nodePollInterval, Traefik's view of its servers (nodes without the node
// library), the sidecar's own probe of each node, and the death checks of sessions the edge saw
// answered without a session.
import { hexToKey, sessionTag } from "../../lib/registry/index.ts";
import type { Periodic, SidecarContext } from "./context.ts";
import { DeathChecker } from "./deaths.ts";
import { nodeName } from "../../lib/registry/node-name.ts";
import { probeNode, type ProbeResult } from "./probe.ts";
import { readTraefikServers } from "./traefik.ts";
import { errFields } from "../../lib/errors.ts";

export class NodeWatch {
  readonly #deaths: DeathChecker;
  #stopped = false;
  /** Nodes with a probe in flight: one at a time per node. */
  readonly #probing = new Set<string>();
  /** Nodes with a timed-out probe still open for a late answer (at most one per node). */
  readonly #awaitingLateAnswer = new Set<string>();

  constructor(private readonly ctx: SidecarContext) {
    const { cfg, registry, mirror, updates, metrics, log } = ctx;
    this.#deaths = new DeathChecker({
      urlFor: (cookie) => mirror.urlFor(cookie),
      path: cfg.mcpPath,
      log,
      onResult: (result) => metrics.deathChecks.inc({ result }),
      onDead: async (id, hash) => {
        await registry.closeSession(id);
        updates.close(id, "owner-404", hexToKey(hash));
        log.info({ session: sessionTag(id) }, "session gone on its node (404): closed at the edge");
      },
    });
  }

  /**
   * Starts the watch: node states recomputed often enough that a heartbeat's age is noticed within
   * a quarter of --node-ttl (every 50-250 ms), heartbeats re-read every nodePollInterval, the
   * nodes probed every probeInterval (unless --probe-path off), Traefik's API polled (when set).
   */
  start(ticks: Periodic): void {
    const { cfg } = this.ctx;
    ticks.every(Math.max(50, Math.min(250, Math.floor(cfg.nodeTtlMs / 4))), () => this.refresh());
    ticks.every(cfg.nodePollIntervalMs, () => this.pollHeartbeats());
    if (cfg.probePath !== "off") ticks.every(cfg.probeIntervalMs, () => this.probe());
    if (cfg.traefikApi) {
      ticks.every(cfg.traefikPollIntervalMs, () => this.pollTraefik());
      void this.pollTraefik();
    }
  }

  /** A session the edge saw answered without a session: its owner is asked (JSON-RPC ping). */
  suspect(id: string, hash: string, cookie: string): void {
    this.#deaths.suspect(id, hash, cookie);
  }

  /** Node states recomputed (heartbeats age, down turns gone). */
  private refresh(): void {
    if (this.ctx.mirror.refreshStates()) this.ctx.changed();
  }

  /** Heartbeat records of the nodes that have one, re-read (besides the change channel). */
  private async pollHeartbeats(): Promise<void> {
    const { registry, mirror } = this.ctx;
    if (registry.status() !== "ready") return;
    const cookies = [...mirror.nodes()].filter((n) => n.hb).map((n) => n.cookie);
    if (!cookies.length) return;
    try {
      const recs = await registry.getNodes(cookies);
      recs.forEach((r, i) => r && mirror.applyNode(cookies[i], r));
    } catch {
      /* counted by the registry's error hook */
    }
    this.refresh();
  }

  private async pollTraefik(): Promise<void> {
    const { cfg, mirror, metrics, log, throttled } = this.ctx;
    if (!cfg.traefikApi) return;
    try {
      mirror.applyTraefik(await readTraefikServers(cfg.traefikApi, cfg.traefikServices), true);
    } catch (err) {
      metrics.traefikErrors.inc();
      throttled("traefik", () =>
        log.warn({ err: errFields(err) }, "cannot read Traefik's API; node states from heartbeats only"),
      );
    }
    this.refresh();
  }

  // Each result is applied (and published) as soon as it comes. A timed-out probe may stay open
  // for a late answer: the first one sent, since a resumed process answers its connections in order.
  private probe(): void {
    const { cfg, mirror } = this.ctx;
    for (const { cookie, url } of mirror.probeTargets()) {
      if (this.#probing.has(cookie)) continue;
      this.#probing.add(cookie);
      const late = this.#awaitingLateAnswer.has(cookie)
        ? undefined
        : {
            maxMs: cfg.downLimitMs,
            onAnswer: (r: ProbeResult | null) => {
              this.#awaitingLateAnswer.delete(cookie);
              if (r) this.applyProbe(cookie, url, r, true);
            },
          };
      void probeNode(url, cfg.probePath, cfg.probeTimeoutMs, late).then((result) => {
        this.#probing.delete(cookie);
        if (result === "timeout" && late) this.#awaitingLateAnswer.add(cookie);
        this.applyProbe(cookie, url, result);
      });
    }
  }

  private applyProbe(cookie: string, url: string, result: ProbeResult, late = false): void {
    if (this.#stopped) return;
    const { mirror, metrics, log } = this.ctx;
    metrics.probes.inc({ result: late ? `late-${result}` : result });
    const before = mirror.node(cookie)?.state;
    if (mirror.applyProbe(cookie, result)) this.ctx.changed();
    const n = mirror.node(cookie);
    if (before !== n?.state)
      log.info({ node: n ? nodeName(n) : url, probe: result, late, from: before, to: n?.state }, "node state changed");
  }

  /** No more results applied; queued death checks dropped. */
  stop(): void {
    this.#stopped = true;
    this.#deaths.close();
  }
}
