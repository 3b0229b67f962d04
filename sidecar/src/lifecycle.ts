// The sidecar's lifecycle: one state, changed in one place, along the only paths it may take.
//
//   starting --listen--> syncing --first synced view on disk--> ready
//       \                   \                                     \
//        `------------------`-------------> closing <------------'
//                                              |
//                                           closed
//
// starting: the HTTP port is being opened; nothing runs yet.
// syncing:  the components run; the registry is not mirrored yet, or the view built from the first
//           full sync is not on disk yet (/readyz answers 503).
// ready:    a view built from a synced mirror is on disk. A later registry outage does not leave
//           this state: the view stays fresh and the edge keeps deciding from what it holds.
// closing:  no new work is taken; the events already written are applied once more, the view
//           is written a last time, the registry connection is closed.
// closed:   everything is stopped; the last view stays in place for the plugin.
import { McpAffinityError } from "../../lib/errors.ts";

export type SidecarState = "starting" | "syncing" | "ready" | "closing" | "closed";

const NEXT: Readonly<Record<SidecarState, readonly SidecarState[]>> = {
  starting: ["syncing", "closing"],
  syncing: ["ready", "closing"],
  ready: ["closing"],
  closing: ["closed"],
  closed: [],
};

export class LifecycleError extends McpAffinityError {
  constructor(
    readonly from: SidecarState,
    readonly to: SidecarState,
  ) {
    super("ERR_SIDECAR_LIFECYCLE", `the sidecar cannot go from ${from} to ${to}`);
  }
}

export class Lifecycle {
  #state: SidecarState = "starting";

  get state(): SidecarState {
    return this.#state;
  }

  /** Moves to `next`; any step the diagram above does not draw throws LifecycleError. */
  to(next: SidecarState): void {
    if (!NEXT[this.#state].includes(next)) throw new LifecycleError(this.#state, next);
    this.#state = next;
  }

  /** Takes work (changes, events, probes, publishes): starting, syncing or ready. */
  get running(): boolean {
    return this.#state === "starting" || this.#state === "syncing" || this.#state === "ready";
  }
}
