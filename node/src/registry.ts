// Registry backends for the node library: Redis directly (ioredis), or the sidecar's sessions API.
// Both speak the shared schema in lib/registry/schema.ts; nothing here invents its own format.
import { Redis } from "ioredis";
import {
  CHANGE_CHANNEL,
  decodeNode,
  decodeSession,
  encodeChange,
  encodeNode,
  encodeSession,
  nodeKey,
  sessionKey,
  type NodeRecord,
  type RegistryChange,
  type SessionRecord,
} from "../../lib/registry/schema.ts";

export type RegistryOptions = { redisUrl: string } | { sidecarUrl: string; token?: string };

/** What the library needs from a registry. Every call may reject; callers never let that break a session. */
export interface RegistryBackend {
  readonly kind: "redis" | "sidecar";
  /** Whether node heartbeats (and therefore misroute-vs-stale checks) are available. */
  readonly hasNodes: boolean;
  putSession(id: string, record: SessionRecord, ttlMs: number): Promise<void>;
  /** Extends a session's TTL; false when the record no longer exists (the caller re-registers). */
  touchSession(id: string, record: SessionRecord, ttlMs: number): Promise<boolean>;
  getSession(id: string): Promise<SessionRecord | null>;
  deleteSession(id: string): Promise<void>;
  putNode(record: NodeRecord, ttlMs: number): Promise<void>;
  getNode(cookie: string): Promise<NodeRecord | null>;
  /** Deletes the node record only while it still carries this boot (a successor may own the URL now). */
  deleteNode(cookie: string, boot: string): Promise<void>;
  close(): Promise<void>;
}

export class RegistryError extends Error {
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface BackendSettings {
  /** Upper bound for one registry call, so a hung Redis cannot hold an initialize response forever. */
  timeoutMs: number;
  onConnectionError: (err: Error) => void;
}

export function createBackend(opts: RegistryOptions, settings: BackendSettings): RegistryBackend {
  if ("redisUrl" in opts && opts.redisUrl) return new RedisBackend(opts.redisUrl, settings);
  if ("sidecarUrl" in opts && opts.sidecarUrl) return new SidecarBackend(opts.sidecarUrl, opts.token, settings);
  throw new RegistryError("registry needs redisUrl or sidecarUrl", "ERR_AFFINITY_CONFIG");
}

// Deletes the node key only when it still holds our boot: a restarted process on the same URL keeps its record.
const DELETE_NODE_IF_BOOT = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if ok and type(rec) == 'table' and rec.boot == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0`;

export class RedisBackend implements RegistryBackend {
  readonly kind = "redis" as const;
  readonly hasNodes = true;
  readonly redis: Redis;

  constructor(url: string, settings: BackendSettings) {
    this.redis = new Redis(url, {
      // Fail fast while disconnected instead of queueing: a live session must never wait on Redis.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: settings.timeoutMs,
      connectTimeout: Math.max(1000, settings.timeoutMs),
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 2000),
      lazyConnect: false,
    });
    this.redis.on("error", settings.onConnectionError);
  }

  private async exec(m: ReturnType<Redis["multi"]>): Promise<unknown[]> {
    const res = await m.exec();
    if (!res) throw new RegistryError("redis transaction aborted", "ERR_AFFINITY_REDIS");
    const out: unknown[] = [];
    for (const [err, v] of res) {
      if (err) throw new RegistryError(err.message, "ERR_AFFINITY_REDIS", { cause: err });
      out.push(v);
    }
    return out;
  }

  async putSession(id: string, record: SessionRecord, ttlMs: number): Promise<void> {
    const change: RegistryChange = { op: "session", id, record };
    await this.exec(
      this.redis
        .multi()
        .set(sessionKey(id), encodeSession(record), "PX", ttlMs)
        .publish(CHANGE_CHANNEL, encodeChange(change)),
    );
  }

  async touchSession(id: string, _record: SessionRecord, ttlMs: number): Promise<boolean> {
    return (await this.redis.pexpire(sessionKey(id), ttlMs)) === 1;
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const raw = await this.redis.get(sessionKey(id));
    return raw === null ? null : decodeSession(raw);
  }

  async deleteSession(id: string): Promise<void> {
    const change: RegistryChange = { op: "close", id };
    await this.exec(this.redis.multi().del(sessionKey(id)).publish(CHANGE_CHANNEL, encodeChange(change)));
  }

  async putNode(record: NodeRecord, ttlMs: number): Promise<void> {
    const change: RegistryChange = { op: "node", cookie: record.cookie, record };
    await this.exec(
      this.redis
        .multi()
        .set(nodeKey(record.cookie), encodeNode(record), "PX", ttlMs)
        .publish(CHANGE_CHANNEL, encodeChange(change)),
    );
  }

  async getNode(cookie: string): Promise<NodeRecord | null> {
    const raw = await this.redis.get(nodeKey(cookie));
    return raw === null ? null : decodeNode(raw);
  }

  async deleteNode(cookie: string, boot: string): Promise<void> {
    const change: RegistryChange = { op: "node", cookie, record: null };
    await this.redis.eval(DELETE_NODE_IF_BOOT, 1, nodeKey(cookie), boot, CHANGE_CHANNEL, encodeChange(change));
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}

/**
 * The sidecar's sessions API, for nodes that prefer not to talk to Redis. It has no node API, so
 * heartbeats are off in this mode (the sidecar learns liveness from Traefik's health checks).
 */
export class SidecarBackend implements RegistryBackend {
  readonly kind = "sidecar" as const;
  readonly hasNodes = false;
  private readonly base: string;

  constructor(
    url: string,
    private readonly token: string | undefined,
    private readonly settings: BackendSettings,
  ) {
    this.base = url.replace(/\/+$/, "");
  }

  private async call(method: string, id: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(`${this.base}/v1/sessions/${encodeURIComponent(id)}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.settings.timeoutMs),
      });
    } catch (err) {
      throw new RegistryError(`sidecar ${method} failed: ${(err as Error).message}`, "ERR_AFFINITY_SIDECAR", { cause: err });
    }
    // 404 is an answer (no such session); every other 4xx/5xx is a registry error.
    if (res.status >= 400 && res.status !== 404) {
      await res.body?.cancel();
      throw new RegistryError(`sidecar ${method} answered ${res.status}`, "ERR_AFFINITY_SIDECAR");
    }
    return res;
  }

  async putSession(id: string, record: SessionRecord): Promise<void> {
    const res = await this.call("PUT", id, { node: record.node, boot: record.boot });
    await res.body?.cancel();
    if (res.status === 404) throw new RegistryError("sidecar has no sessions API", "ERR_AFFINITY_SIDECAR");
  }

  // The API has no touch: registering again resets the TTL on the sidecar's side.
  async touchSession(id: string, record: SessionRecord): Promise<boolean> {
    await this.putSession(id, record);
    return true;
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const res = await this.call("GET", id);
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    const body = await res.text();
    return decodeSession(body);
  }

  async deleteSession(id: string): Promise<void> {
    const res = await this.call("DELETE", id);
    await res.body?.cancel();
  }

  async putNode(): Promise<void> {}
  async getNode(): Promise<NodeRecord | null> {
    return null;
  }
  async deleteNode(): Promise<void> {}
  async close(): Promise<void> {}
}
