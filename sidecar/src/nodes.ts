// Node liveness: what this sidecar knows of each node (by cookie) from its heartbeats, Traefik's
// view and its own probes, and the state the view gives it (up, draining, down, gone). It also
// tells which boots of a node are over, for the owner table to retire.
import { cookieValueFor, type NodeRecord, type SessionRecord } from "../../lib/registry/index.ts";
import type { NodeViewState, ViewBoot } from "../../lib/view/index.ts";
import { bootTag, UNKNOWN_BOOT_TAG } from "../../lib/token/index.ts";
import type { ProbeResult } from "./probe.ts";

export type TraefikState = "up" | "down" | "removed";

export interface Heartbeat {
  readonly boot: string;
  readonly state: "up" | "draining";
  readonly seen: number;
  /** When this sidecar heard it (its own clock). */
  readonly heardAt: number;
}

export interface NodeInfo {
  readonly cookie: string;
  readonly url: string;
  readonly name: string;
  /** Last heartbeat record. */
  readonly hb: Heartbeat | null;
  /** The node deleted its own record (clean shutdown). */
  readonly hbRemoved: boolean;
  readonly traefik: TraefikState | null;
  /** When Traefik's state was last polled, and when this node last proved it serves (a new session). */
  readonly traefikAt: number;
  readonly servedAt: number;
  readonly downSince: number | null;
  readonly state: NodeViewState;
  /** Boots this sidecar has seen in this node's heartbeats (or proven over): any but the current one is gone. */
  readonly hbBootsSeen: ReadonlySet<string>;
  /** The sidecar's own probe of the node: last result and when it came. */
  readonly probe: ProbeResult | null;
  readonly probedAt: number;
  /** Probes in a row that got no healthy answer (timeout or unhealthy). */
  readonly probeFailures: number;
  /** The boot that was current when a probe was refused (that process is over). */
  readonly refusedBoot: string | null;
  /**
   * When this node appeared in Traefik's service after the sidecar's first complete reading of it
   * (0: it was there from the start). New sessions go there only after the placement settle time.
   */
  readonly joinedAt: number;
}

type NodeEntry = { -readonly [K in keyof NodeInfo]: NodeInfo[K] } & { hb: Heartbeat | null; hbBootsSeen: Set<string> };

/** The sidecar's own probes (--probe-interval, --probe-timeout, --probe-failures). */
export interface ProbeSettings {
  intervalMs: number;
  timeoutMs: number;
  /** Failed probes in a row before a node counts as down (a busy machine must not fake a stall). */
  failures: number;
}

export interface NodeLivenessOptions {
  nodeTtlMs: number;
  downLimitMs: number;
  /** null: no probes (liveness from heartbeats and Traefik's API only). */
  probe: ProbeSettings | null;
  /**
   * A server that joins Traefik's service gets new sessions only this long after this sidecar first
   * saw it there (default PLACEMENT_SETTLE_MS): every Traefik replica applies a new configuration on
   * its own schedule, and one that does not know the server yet ignores a cookie naming it.
   */
  placementSettleMs?: number;
  now: () => number;
  /** That boot of the node is over (a newer boot, a clean shutdown, a refused probe). */
  onBootOver: (cookie: string, boot: string) => void;
}

/** Previous boots of a node the meta lists as gone (a token of an older one is pinned: the node answers). */
const BOOTS_LISTED = 8;
/** Boots remembered per node. */
const BOOTS_KEPT = 64;
/**
 * Traefik applies a changed configuration at once, or up to its providersThrottleDuration (2 s by
 * default) later when another change came just before; each replica on its own. One more second
 * of margin for the provider's own watch (a file event, a Kubernetes endpoint update).
 */
export const PLACEMENT_SETTLE_MS = 3000;

/**
 * How long a probe result counts: a few missed rounds (a busy event loop) keep the last result; a
 * prober that stopped or fell behind loses its say (Traefik's view and heartbeats decide again).
 */
export const probeValidMs = (p: ProbeSettings): number => 4 * p.intervalMs + p.failures * p.timeoutMs;

export class NodeLiveness {
  readonly #nodes = new Map<string, NodeEntry>();
  /** While false (registry unreachable), heartbeats do not age: an outage must not turn nodes down. */
  #heartbeatsTrusted = true;
  /** Traefik's service has been read completely once: servers that appear later are joining. */
  #traefikBaseline = false;
  /** Bumped whenever what the meta says about nodes changes (a node, a boot, a state). */
  #version = 0;

  readonly #probeValidMs: number;

  constructor(private readonly opts: NodeLivenessOptions) {
    this.#probeValidMs = opts.probe ? probeValidMs(opts.probe) : 0;
  }

  // --- queries -------------------------------------------------------------------------------

  get version(): number {
    return this.#version;
  }
  get size(): number {
    return this.#nodes.size;
  }
  get(cookie: string): NodeInfo | undefined {
    return this.#nodes.get(cookie);
  }
  values(): IterableIterator<NodeInfo> {
    return this.#nodes.values();
  }
  /** The state the view gives a node; a node never heard of is up (pin, and let Traefik decide). */
  stateOf(cookie: string): NodeViewState {
    return this.#nodes.get(cookie)?.state ?? "up";
  }
  /** Server URL for a cookie when known (for edge-learned records). */
  urlFor(cookie: string): string {
    return this.#nodes.get(cookie)?.url ?? "";
  }
  /** A boot the node no longer runs (the heartbeat shows a different one it has seen before). */
  isPastBoot(cookie: string, boot: string): boolean {
    const n = this.#nodes.get(cookie);
    return !!n?.hb && n.hb.boot !== boot && n.hbBootsSeen.has(boot);
  }
  /** Nodes worth probing: every node with a known URL. */
  probeTargets(): Array<{ cookie: string; url: string }> {
    const out: Array<{ cookie: string; url: string }> = [];
    for (const n of this.#nodes.values()) if (n.url && !n.hbRemoved) out.push({ cookie: n.cookie, url: n.url });
    return out;
  }

  /**
   * The meta's incarnation table for session tokens: each node's running boot in the node's state,
   * its previous boots (the last BOOTS_LISTED) as gone, and nodes whose boot nobody reports (servers
   * without the node library) under the unknown tag.
   */
  viewBoots(retry: (state: NodeViewState) => number): ViewBoot[] {
    const out: ViewBoot[] = [];
    const now = this.opts.now();
    for (const n of this.#nodes.values()) {
      const current = n.hb?.boot ?? null;
      // A joining server is listed `draining` until it settled: its sessions are pinned (a live
      // incarnation), but the plugin places no new session there yet (boot lines in `up` only).
      const state = n.state === "up" && !this.placeable(n, now) ? "draining" : n.state;
      if (current !== null)
        out.push({ cookie: n.cookie, bootTag: bootTag(current), state, retryAfterSeconds: retry(state) });
      else if (n.hbBootsSeen.size === 0)
        out.push({ cookie: n.cookie, bootTag: UNKNOWN_BOOT_TAG, state, retryAfterSeconds: retry(state) });
      const old = [...n.hbBootsSeen].filter((b) => b !== current).slice(-BOOTS_LISTED);
      for (const b of old) out.push({ cookie: n.cookie, bootTag: bootTag(b), state: "gone", retryAfterSeconds: 0 });
    }
    return out;
  }

  /**
   * The incarnations whose sessions Traefik may route without the plugin: live in the view (up or
   * draining) with a known boot (only the node library mints tokens with a boot tag) and an address.
   */
  liveIncarnations(): Array<{ cookie: string; bootTag: string; url: string }> {
    const out: Array<{ cookie: string; bootTag: string; url: string }> = [];
    for (const n of this.#nodes.values()) {
      const boot = n.hb?.boot;
      // The address must be the one the cookie names (a heartbeat reports its own URL).
      if (boot && n.url && cookieValueFor(n.url) === n.cookie && (n.state === "up" || n.state === "draining"))
        out.push({ cookie: n.cookie, bootTag: bootTag(boot), url: n.url });
    }
    return out;
  }

  // --- what sessions tell about nodes ----------------------------------------------------------

  /**
   * A session record seen. One that names a boot other than the node's current one and is older
   * than its last heartbeat proves that boot over. One that reaches us live (`live`: not from a
   * scan) was just created on its node: the node serves, whatever an older poll of Traefik said
   * (a restarted node is back in Traefik before our next poll).
   */
  noteSession(r: SessionRecord, live: boolean): void {
    const n = this.#nodes.get(r.cookie);
    if (!n) return;
    if (r.boot && n.hb && n.hb.boot !== r.boot && r.created <= n.hb.seen) this.bootOver(n, r.boot);
    if (!live || (r.boot && n.hb && n.hb.boot !== r.boot)) return;
    const now = this.opts.now();
    n.servedAt = now;
    if (n.state === "down" && this.computeState(n, now) !== "down") this.refreshStates();
  }

  // --- heartbeats, Traefik, probes -------------------------------------------------------------

  /** A heartbeat record (or its deletion: null). */
  applyHeartbeat(cookie: string, rec: NodeRecord | null): void {
    const n = this.entry(cookie);
    const now = this.opts.now();
    if (!rec) {
      if (n.hb) this.bootOver(n, n.hb.boot);
      n.hb = null;
      n.hbRemoved = true;
      this.#version++;
      return;
    }
    n.url = rec.url || n.url;
    n.name = rec.name || n.name;
    n.hbRemoved = false;
    const prev = n.hb;
    if (prev && prev.boot !== rec.boot) {
      if (rec.seen >= prev.seen) {
        // A new boot of the same server URL: the old incarnation is gone.
        this.bootOver(n, prev.boot);
      } else {
        return; // an older record arriving late
      }
    }
    this.seeBoot(n, rec.boot);
    // A boot the view's token table does not list yet (or one it must now list as gone).
    if (!prev || prev.boot !== rec.boot) this.#version++;
    if (!prev || prev.seen !== rec.seen || prev.boot !== rec.boot || prev.state !== rec.state) {
      n.hb = { boot: rec.boot, state: rec.state, seen: rec.seen, heardAt: now };
    }
  }

  applyTraefik(servers: Array<{ url: string; up: boolean }>, complete: boolean): void {
    const seen = new Set<string>();
    const now = this.opts.now();
    for (const s of servers) {
      const cookie = cookieValueFor(s.url);
      seen.add(cookie);
      const n = this.entry(cookie);
      n.url = n.url || s.url;
      // Joining: new in the service (or back after a removal) since the first complete reading.
      if (this.#traefikBaseline && (n.traefik === null || n.traefik === "removed")) {
        n.joinedAt = now;
        this.#version++;
      }
      n.traefik = s.up ? "up" : "down";
      n.traefikAt = now;
    }
    if (complete) {
      for (const n of this.#nodes.values()) if (n.traefik !== null && !seen.has(n.cookie)) n.traefik = "removed";
      this.#traefikBaseline = true;
    }
  }

  /**
   * New sessions may go to this node: Traefik's service has it (once this sidecar reads Traefik: a
   * node can heartbeat before any Traefik routes to it) and it is not joining, or joined long enough ago.
   */
  private placeable(n: NodeEntry, now: number): boolean {
    if (this.#traefikBaseline && (n.traefik === null || n.traefik === "removed")) return false;
    return n.joinedAt === 0 || now - n.joinedAt >= (this.opts.placementSettleMs ?? PLACEMENT_SETTLE_MS);
  }

  /**
   * A probe result. A refused connection proves the running process is over: its boot is retired
   * at once (its sessions: edge 404). Returns true when the view must change.
   */
  applyProbe(cookie: string, result: ProbeResult): boolean {
    const n = this.#nodes.get(cookie);
    if (!n) return false;
    n.probe = result;
    n.probedAt = this.opts.now();
    n.probeFailures = result === "timeout" || result === "unhealthy" ? n.probeFailures + 1 : 0;
    if (result === "refused" && n.hb && n.refusedBoot !== n.hb.boot) {
      n.refusedBoot = n.hb.boot;
      this.bootOver(n, n.hb.boot);
    }
    return this.refreshStates();
  }

  setHeartbeatsTrusted(trusted: boolean): void {
    if (trusted && !this.#heartbeatsTrusted) {
      // Back from an outage: every node gets a fresh TTL window to show its heartbeat again.
      const now = this.opts.now();
      for (const n of this.#nodes.values()) if (n.hb) n.hb = { ...n.hb, heardAt: now };
    }
    this.#heartbeatsTrusted = trusted;
  }

  /** Recomputes node states; returns true when any changed (the meta must be republished). */
  refreshStates(): boolean {
    const now = this.opts.now();
    let changed = false;
    for (const n of this.#nodes.values()) {
      const s = this.computeState(n, now);
      if (s !== n.state) {
        n.state = s;
        changed = true;
      }
      // A joining node settled: its boot line turns up (new sessions may go there).
      if (n.joinedAt !== 0 && this.placeable(n, now)) {
        n.joinedAt = 0;
        changed = true;
      }
    }
    if (changed) this.#version++;
    return changed;
  }

  // --- internals -------------------------------------------------------------------------------

  private entry(cookie: string): NodeEntry {
    let n = this.#nodes.get(cookie);
    if (!n) {
      n = {
        cookie,
        url: "",
        name: "",
        hb: null,
        hbRemoved: false,
        traefik: null,
        traefikAt: 0,
        servedAt: 0,
        downSince: null,
        state: "up",
        hbBootsSeen: new Set(),
        probe: null,
        probedAt: 0,
        probeFailures: 0,
        refusedBoot: null,
        joinedAt: 0,
      };
      this.#nodes.set(cookie, n);
      this.#version++;
    }
    return n;
  }

  private seeBoot(n: NodeEntry, boot: string): void {
    n.hbBootsSeen.add(boot);
    if (n.hbBootsSeen.size > BOOTS_KEPT) n.hbBootsSeen.delete(n.hbBootsSeen.values().next().value!); // oldest first
  }

  private bootOver(n: NodeEntry, boot: string): void {
    this.seeBoot(n, boot);
    this.opts.onBootOver(n.cookie, boot);
  }

  /** The sidecar's own probe, when recent: "up", "down" (no answer or unhealthy), "refused" or null. */
  private probeVerdict(n: NodeEntry, now: number): "up" | "down" | "refused" | null {
    const settings = this.opts.probe;
    if (!settings || !n.probe || now - n.probedAt > this.#probeValidMs) return null;
    if (n.probe === "ok") return "up";
    if (n.probe === "refused") return "refused";
    // One failure is no verdict (heartbeats decide meanwhile); a session created after the failed
    // probe proves the node serves (it answered since).
    if (n.probeFailures < settings.failures) return null;
    return n.servedAt > n.probedAt ? "up" : "down";
  }

  private computeState(n: NodeEntry, now: number): NodeViewState {
    let s: NodeViewState;
    const probe = this.probeVerdict(n, now);
    // The own probe, when there is one, is the one liveness decider; Traefik's view is a fallback.
    const traefikDown = probe !== null ? probe === "down" : n.traefik === "down" && n.servedAt <= n.traefikAt;
    const traefikUp = probe !== null ? probe === "up" : n.traefik === "up";
    if (n.hb && probe === "refused" && n.refusedBoot === n.hb.boot) {
      s = "gone"; // this boot's process is over; a new boot's heartbeat brings the node back
    } else if (n.hb) {
      const live = !this.#heartbeatsTrusted || now - n.hb.heardAt <= this.opts.nodeTtlMs;
      if (!live) s = traefikUp ? "up" : "down";
      else s = traefikDown ? "down" : n.hb.state;
    } else if (n.hbRemoved || probe === "refused") {
      s = "gone";
    } else if (traefikDown) {
      s = "down";
    } else if (n.traefik === "removed") {
      s = "gone";
    } else {
      s = "up"; // nothing known against it: pin and let Traefik decide
    }
    if (s === "down") {
      n.downSince ??= now;
      if (now - n.downSince > this.opts.downLimitMs) s = "gone";
    } else {
      n.downSince = null;
    }
    return s;
  }
}
