// A session id this process does not hold, explained from the registry: misroute (another live
// node holds it), stale (its owner is gone, rebooted, or it was this node's own) or unknown (no
// record). Each miss is logged once and counted; unchecked when the registry cannot be asked.
import { errFields } from "../../lib/errors.ts";
import { isValidSessionId, sessionTag, type NodeRecord, type SessionRecord } from "../../lib/registry/index.ts";
import type { NodeContext } from "./context.ts";
import type { MissReason } from "./metrics.ts";

export interface SessionCheck {
  local: boolean;
  reason?: MissReason;
  /** Owner URL from the registry record, when one exists. */
  owner?: string;
  /** misroute: the owner's heartbeat names the record's boot (the session lives there). */
  ownerLive?: boolean;
}

type Explained = SessionCheck & { detail?: string };

/** Registry lookups for misses at once; more are counted unchecked without a lookup. */
const MAX_MISS_CHECKS_IN_FLIGHT = 64;

export class MissClassifier {
  /** The lookup running for an id: the same id asked again shares it. */
  readonly #inFlight = new Map<string, Promise<Explained>>();

  constructor(private readonly ctx: NodeContext) {}

  /** Explains, logs and counts one request for a session id this process does not hold. */
  explain(id: string): Promise<SessionCheck> {
    if (!isValidSessionId(id))
      return Promise.resolve(this.count(id, { local: false, reason: "unknown" }, "malformed id"));
    const pending = this.#inFlight.get(id);
    if (pending) {
      // Same id asked again while its lookup runs: share the lookup, count the request.
      return pending.then((r) => this.count(id, r, "repeat"));
    }
    if (this.#inFlight.size >= MAX_MISS_CHECKS_IN_FLIGHT) {
      return Promise.resolve(this.count(id, { local: false, reason: "unchecked" }, "too many lookups in flight"));
    }
    const p = this.classify(id);
    this.#inFlight.set(id, p);
    return p
      .finally(() => this.#inFlight.delete(id))
      .then((r) => this.count(id, r, r.reason === "unchecked" ? "registry error" : undefined));
  }

  private count(id: string, r: Explained, note?: string): SessionCheck {
    const reason = r.reason ?? "unknown";
    this.ctx.metrics.mismatch(reason);
    const detail = r.detail ?? note;
    this.ctx.log.warn(
      { session: sessionTag(id), reason, owner: r.owner, ...(detail ? { detail } : {}) },
      "session not served by this node",
    );
    return r.ownerLive
      ? { local: false, reason, owner: r.owner, ownerLive: true }
      : { local: false, reason, owner: r.owner };
  }

  private async classify(id: string): Promise<Explained> {
    const { ctx } = this;
    let rec: SessionRecord | null;
    try {
      rec = await ctx.call(ctx.store.lookupSession(id), "lookup");
    } catch (err) {
      ctx.metrics.registryError("lookup");
      return { local: false, reason: "unchecked", detail: errFields(err).message };
    }
    if (!rec) return { local: false, reason: "unknown" };
    const owner = rec.node || undefined;
    if (rec.cookie === ctx.settings.cookie) {
      // Ours by URL, yet not in this process: a previous boot's session, or one closed without cleanup.
      return {
        local: false,
        reason: "stale",
        owner,
        detail: rec.boot === ctx.bootId ? "closed on this boot" : "previous boot",
      };
    }
    const nodes = ctx.nodes;
    if (!nodes) return { local: false, reason: "misroute", owner, detail: "owner liveness unknown (sidecar registry)" };
    let node: NodeRecord | null;
    try {
      [node = null] = await ctx.call(nodes.getNodes([rec.cookie]), "lookup");
    } catch (err) {
      ctx.metrics.registryError("lookup");
      return { local: false, reason: "unchecked", owner, detail: errFields(err).message };
    }
    if (!node) return { local: false, reason: "stale", owner, detail: "owner has no heartbeat" };
    if (rec.boot !== null && node.boot !== rec.boot)
      return { local: false, reason: "stale", owner, detail: "owner rebooted" };
    return { local: false, reason: "misroute", owner, ownerLive: true };
  }
}
