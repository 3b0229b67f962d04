// Closing a session: the local close (application hook, transport, server) is attempted, then the
// registry record is deleted and the close announced whatever the local close did, also for
// sessions this process never held (another node's, or a previous boot's). Never throws.
import { errFields } from "../../lib/errors.ts";
import { sessionTag } from "../../lib/registry/index.ts";
import type { NodeContext } from "./context.ts";
import type { SessionTable } from "./sessions.ts";

export interface CloseResult {
  /** closed: local close ran cleanly; failed: it threw; unknown: no such session in this process. */
  local: "closed" | "failed" | "unknown";
  registry: "deleted" | "failed";
  error?: unknown;
}

export class SessionCloser {
  /** One close per session at a time: a second call while one runs gets the same result. */
  readonly #closing = new Map<string, Promise<CloseResult>>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly table: SessionTable,
  ) {}

  close(id: string): Promise<CloseResult> {
    const running = this.#closing.get(id);
    if (running) return running;
    const p = this.run(id).finally(() => this.#closing.delete(id));
    this.#closing.set(id, p);
    return p;
  }

  private async run(id: string): Promise<CloseResult> {
    const { ctx } = this;
    // Out of the table first: the transport's onclose must not start a second close.
    const entry = this.table.remove(id);
    let local: CloseResult["local"] = entry ? "closed" : "unknown";
    let error: unknown;
    if (entry) {
      const hook = ctx.settings.onSessionClosed;
      const steps: Array<() => unknown> = [];
      if (hook) steps.push(() => hook(id));
      steps.push(() => entry.transport.close());
      if (entry.server) steps.push(() => entry.server!.close());
      for (const step of steps) {
        try {
          await step();
        } catch (err) {
          local = "failed";
          error ??= err;
        }
      }
      if (local === "failed")
        ctx.log.warn(
          { session: sessionTag(id), err: errFields(error) },
          "local session close failed; cleaning registry anyway",
        );
    }
    let registry: CloseResult["registry"] = "deleted";
    try {
      await ctx.call(ctx.store.closeSession(id), "close");
    } catch (err) {
      registry = "failed";
      ctx.metrics.registryError("close");
      ctx.log.warn({ session: sessionTag(id), err: errFields(err) }, "registry cleanup failed on close");
    }
    ctx.metrics.close(local);
    ctx.log.info({ session: sessionTag(id), local, registry }, "session closed");
    return error === undefined ? { local, registry } : { local, registry, error };
  }
}
