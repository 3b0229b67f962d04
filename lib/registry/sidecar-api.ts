// A node's session store over the sidecar's sessions API (PUT/GET/DELETE /v1/sessions/:id, served
// by sidecar/src/http.ts), for nodes that do not talk to Redis. The API keeps no node records, so
// this store has no heartbeats (the sidecar learns liveness from Traefik's health checks).
import { decodeSession, type SessionRecord } from "./schema.ts";
import { RegistryError, ReadyUntilClosed, type SessionStore } from "./registry.ts";

export interface SidecarApiOptions {
  /** The sidecar's base URL. */
  url: string;
  /** Sent as `Authorization: Bearer <token>` when set. */
  token?: string;
  /** Upper bound of one API call (ms). */
  timeoutMs: number;
}

export class SidecarApiStore extends ReadyUntilClosed implements SessionStore {
  readonly kind = "sidecar-api" as const;
  private readonly base: string;

  constructor(private readonly opts: SidecarApiOptions) {
    super();
    this.base = opts.url.replace(/\/+$/, "");
  }

  private async call(op: string, method: string, id: string, body?: unknown): Promise<Response> {
    this.check(op);
    const headers: Record<string, string> = {};
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(`${this.base}/v1/sessions/${encodeURIComponent(id)}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
    } catch (err) {
      throw new RegistryError(op, `sidecar ${method} failed: ${(err as Error).message}`, "ERR_REGISTRY_SIDECAR_API", {
        cause: err,
      });
    }
    // 404 is an answer (no such session); every other 4xx/5xx is a registry error.
    if (res.status >= 400 && res.status !== 404) {
      await res.body?.cancel();
      throw new RegistryError(op, `sidecar ${method} answered ${res.status}`, "ERR_REGISTRY_SIDECAR_API");
    }
    return res;
  }

  /** The API takes the node URL and boot; the sidecar derives the rest and applies its session TTL. */
  async registerSession(id: string, record: SessionRecord): Promise<boolean> {
    const res = await this.call("register", "PUT", id, { node: record.node, boot: record.boot });
    await res.body?.cancel();
    if (res.status === 404)
      throw new RegistryError("register", "sidecar has no sessions API", "ERR_REGISTRY_SIDECAR_API");
    return true;
  }

  // The API has no touch: registering again resets the TTL on the sidecar's side.
  async touchSession(id: string, record: SessionRecord): Promise<boolean> {
    return this.registerSession(id, record);
  }

  async lookupSession(id: string): Promise<SessionRecord | null> {
    const res = await this.call("lookup", "GET", id);
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    return decodeSession(await res.text());
  }

  /** The sidecar answers `{"closed": <whether a record existed>}`. */
  async closeSession(id: string): Promise<boolean> {
    const res = await this.call("close", "DELETE", id);
    const text = await res.text();
    try {
      return (JSON.parse(text) as { closed?: unknown }).closed === true;
    } catch {
      return false;
    }
  }

  /** No connection to watch: ready until closed (each call reports its own failure). */
  async close(): Promise<void> {
    if (!this.markClosed()) return;
  }
}
