// Changes to the mirror as the components report them: a session registered, a session closed, a
// node's heartbeat. Each is applied to the mirror, counted once, and followed by a publish.
//
// The sidecar applies every write of its own twice. It writes to the registry itself (sessions
// registered or closed through the API, sessions learned or closed at the edge, deaths confirmed
// with their owner) and applies the write here at once, so the view shows it without waiting for
// Redis; the write's PUBLISH then comes back through the change channel (sync.ts) and is applied
// again. That is correct only because applies are idempotent and the echoes arrive in the
// registry's write order:
// - a record applied again is "same": no registration counted, no shard rewritten;
// - a close applied again returns false: counted once, under the origin that told it first;
// - an echo may briefly replay an older state (our registration's echo arriving after our own
//   close was applied), but the later write's echo follows it, so once the echoes are in, the
//   mirror is where the echoes alone would have put it.
// test/unit/view-mirror.test.ts ("own writes applied twice") holds the mirror to this; skipping
// the echo instead would need every change message to name its writer.
import type { NodeRecord, SessionRecord } from "../../lib/registry/index.ts";
import type { SidecarMetrics } from "./metrics.ts";
import type { Mirror } from "./mirror.ts";
import type { RegistryRestore } from "./restore.ts";

/** Who told this sidecar of a close first (the `origin` label of closes_total). */
export type CloseOrigin = "edge" | "owner-404" | "api" | "registry";

export class MirrorUpdates {
  constructor(
    private readonly mirror: Mirror,
    private readonly metrics: SidecarMetrics,
    /** The mirror changed: publish the view soon (coalesced). */
    private readonly changed: () => void,
    /** Keeps the records no node would put back after a registry loss. */
    private readonly restore: RegistryRestore,
  ) {}

  /** A session record written (by this sidecar or, through the change channel, by anyone). */
  session(id: string, record: SessionRecord, key?: string): void {
    // Each registration is counted once, by its source, the first time this sidecar sees it.
    if (this.mirror.applySession(id, record, false, key) === "new")
      this.metrics.registrations.inc({ source: record.source });
    this.restore.note(id, record, key);
    this.changed();
  }

  /** A session closed; `key` spares the hash when the caller has it already (an event's). */
  close(id: string, origin: CloseOrigin, key?: string): void {
    if (this.mirror.applyClose(id, key)) this.metrics.closes.inc({ origin });
    this.restore.forget(id);
    this.changed();
  }

  /** A node's heartbeat record (null: the node removed it). */
  node(cookie: string, record: NodeRecord | null): void {
    this.mirror.applyNode(cookie, record);
    this.mirror.refreshStates();
    this.changed();
  }
}
