// Deaths learned at the edge, confirmed with the owner. The plugin reports a session whose owner
// may have answered 404 (`v` events: it cannot read the status of an unbuffered response); this
// asks the owner itself with a JSON-RPC ping in that session and records the death only on the
// spec's answer for a terminated session, a 404. Any other answer (or none) leaves it alone: a
// false death would be a false 404 at the edge.
import type { Logger } from "pino";
import { errFields } from "../../lib/errors.ts";
import { serverSessionId } from "../../lib/token/index.ts";

export interface DeathCheckOptions {
  /** The owner's server URL for a cookie ("" when unknown). */
  urlFor: (cookie: string) => string;
  /** MCP endpoint path on the nodes. */
  path: string;
  /** Records the death: registry delete + tombstone. */
  onDead: (id: string, hash: string) => Promise<void>;
  onResult: (result: "dead" | "alive" | "error" | "skipped") => void;
  log: Logger;
  timeoutMs?: number;
  /** A session is checked at most once per this period. */
  recheckMs?: number;
  /** Queue bound: suspects beyond it are skipped (counted); the plugin reports again later. */
  maxQueue?: number;
  concurrency?: number;
}

const PING = JSON.stringify({ jsonrpc: "2.0", id: "mcp-affinity-liveness", method: "ping" });

export class DeathChecker {
  private queue: Array<{ id: string; hash: string; cookie: string }> = [];
  private checked = new Map<string, number>();
  private running = 0;
  private closed = false;

  constructor(private readonly o: DeathCheckOptions) {}

  suspect(id: string, hash: string, cookie: string): void {
    const now = Date.now();
    const last = this.checked.get(hash);
    if (this.closed || (last !== undefined && now - last < (this.o.recheckMs ?? 30_000))) return;
    if (this.queue.length >= (this.o.maxQueue ?? 1024)) return this.o.onResult("skipped");
    this.remember(hash, now);
    this.queue.push({ id, hash, cookie });
    this.pump();
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
  }

  private remember(hash: string, now: number): void {
    this.checked.set(hash, now);
    if (this.checked.size <= 10_000) return;
    // Bounded memory: forget the oldest entries (Map keeps insertion order).
    const cutoff = now - (this.o.recheckMs ?? 30_000);
    for (const [h, t] of this.checked) {
      if (t >= cutoff && this.checked.size <= 10_000) break;
      this.checked.delete(h);
    }
  }

  private pump(): void {
    while (!this.closed && this.running < (this.o.concurrency ?? 4) && this.queue.length) {
      const s = this.queue.shift()!;
      this.running++;
      void this.check(s).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private async check(s: { id: string; hash: string; cookie: string }): Promise<void> {
    const base = this.o.urlFor(s.cookie);
    if (!base) return this.o.onResult("skipped");
    let status: number;
    try {
      const res = await fetch(new URL(this.o.path, base), {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          // Straight to the node, past the plugin: the node knows a wrapped session by its own id
          // (asked with the wrapped one, it would answer 404 for a live session).
          "mcp-session-id": serverSessionId(s.id),
        },
        body: PING,
        signal: AbortSignal.timeout(this.o.timeoutMs ?? 2000),
      });
      status = res.status;
      await res.body?.cancel().catch(() => undefined);
    } catch (err) {
      this.o.log.debug({ err: errFields(err) }, "liveness check of a session failed");
      return this.o.onResult("error");
    }
    if (status !== 404) return this.o.onResult("alive");
    try {
      await this.o.onDead(s.id, s.hash);
      this.o.onResult("dead");
    } catch (err) {
      // Registry down: the next report checks again.
      this.checked.delete(s.hash);
      this.o.onResult("error");
      this.o.log.debug({ err: errFields(err) }, "session death not recorded yet");
    }
  }
}
