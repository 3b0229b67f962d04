// The node record: written every heartbeatMs (TTL 3 x heartbeatMs) while the node serves, naming
// its boot and whether it is up or draining; removed at stop while it still carries this boot (a
// successor on the same URL keeps its own). The sidecar's sessions API keeps no node records:
// nothing is written then.
import { errFields } from "../../lib/errors.ts";
import type { NodeRecord } from "../../lib/registry/index.ts";
import type { NodeContext } from "./context.ts";

export class Heartbeat {
  constructor(
    private readonly ctx: NodeContext,
    /** Whether the node announces itself (up, draining or drained), and as which state. */
    private readonly announce: () => "up" | "draining" | null,
  ) {}

  /** Writes the node record now. Never throws: false when not written. */
  async beat(): Promise<boolean> {
    const { ctx } = this;
    const state = this.announce();
    if (!ctx.nodes || state === null) return false;
    const { nodeUrl, cookie, nodeName } = ctx.settings;
    const record: NodeRecord = { url: nodeUrl, cookie, boot: ctx.bootId, name: nodeName, state, seen: Date.now() };
    try {
      await ctx.call(ctx.nodes.heartbeat(record), "heartbeat");
      ctx.metrics.heartbeat("ok");
      return true;
    } catch (err) {
      ctx.metrics.heartbeat("failed");
      ctx.metrics.registryError("heartbeat");
      ctx.log.debug({ err: errFields(err) }, "heartbeat failed");
      return false;
    }
  }

  /** Deletes the node record if it still carries this boot. Never throws. */
  async remove(): Promise<void> {
    const { ctx } = this;
    if (!ctx.nodes) return;
    try {
      await ctx.call(ctx.nodes.removeNode(ctx.settings.cookie, ctx.bootId), "heartbeat");
    } catch (err) {
      ctx.metrics.registryError("heartbeat");
      ctx.log.warn({ err: errFields(err) }, "could not remove node record");
    }
  }
}
