// Redis registry (ioredis): one server, Sentinel or Cluster, chosen by configuration. Each write
// and its PUBLISH on CHANGE_CHANNEL run in one Lua script: atomic, one round trip, and valid in
// Cluster (PUBLISH takes no key, the script touches one key).
import { randomBytes } from "node:crypto";
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from "ioredis";
import {
  CHANGE_CHANNEL,
  DEFAULT_NODE_TTL_MS,
  DEFAULT_SESSION_TTL_MS,
  MARKER_KEY,
  NODE_KEY_PREFIX,
  SESSION_KEY_PREFIX,
  decodeChange,
  decodeNode,
  decodeSession,
  encodeChange,
  encodeNode,
  encodeSession,
  isCookieValue,
  isValidSessionId,
  nodeKey,
  sessionKey,
  type NodeRecord,
  type RegistryChange,
  type SessionRecord,
} from "./schema.ts";
import {
  RegistryError,
  StatusListeners,
  type ChangeListener,
  type LossListener,
  type RegistryLoss,
  type RegisterOptions,
  type Registry,
  type RegistryStatus,
  type ScanOptions,
} from "./registry.ts";

export interface HostPort {
  host: string;
  port: number;
}

export interface RedisSentinel {
  nodes: HostPort[];
  /** The monitored master's name. */
  name: string;
  password?: string;
}

export interface RedisConnectionConfig {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`) for a single server. */
  url?: string;
  /**
   * Sentinel mode: the Sentinels' addresses and the name of the master they monitor. The name is
   * part of the type, not checked here: options are validated where they are made (the sidecar's
   * settings: --redis-sentinels needs --redis-sentinel-name, sidecar/src/config.ts).
   */
  sentinel?: RedisSentinel;
  /** Cluster seed nodes. */
  cluster?: HostPort[];
  username?: string;
  password?: string;
  /** TLS to every server and Sentinel; `ca`: the CA that signed their certificates (PEM). */
  tls?: boolean | { ca?: string };
}

export interface RedisRegistryOptions extends RedisConnectionConfig {
  sessionTtlMs?: number;
  nodeTtlMs?: number;
  /** Per-command timeout (ms). */
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Upper bound of the reconnect backoff (ms). */
  maxBackoffMs?: number;
  /** Every failed Redis operation, by operation name (for metrics and logs). */
  onError?: (op: string, err: Error) => void;
  /** A message on the change channel that is not a valid change. */
  onBadChange?: (err: Error) => void;
  /**
   * How often (ms) to check that Redis kept its data (the marker key and every master's run_id);
   * the check also runs at every (re)connection. 0 or absent: only at (re)connections.
   */
  lossCheckMs?: number;
}

/** The reconnect backoff's upper bound unless maxBackoffMs says otherwise (the sidecar's). */
export const DEFAULT_MAX_BACKOFF_MS = 5000;
/** The per-command timeout unless commandTimeoutMs says otherwise. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2000;

/** Master run ids remembered (a few restarts and failovers; older ones cannot come back). */
const RUN_IDS_KEPT = 64;

// KEYS[1] key; ARGV: value, ttl ms, channel, change, nx ("1" = only if absent)
const SET_AND_PUBLISH = `
local ok
if ARGV[5] == '1' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if ok then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0`;

// KEYS[1] key; ARGV: channel, change
const DEL_AND_PUBLISH = `
local n = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n`;

// KEYS[1] key; ARGV: boot, channel, change. Deletes a node record only while it carries this boot.
const DEL_NODE_IF_BOOT = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or rec.boot ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;

// KEYS[1] key; ARGV: ttl ms, max age ms, now ms. Only records with source "edge". The record is
// read with cjson (as DEL_NODE_IF_BOOT reads a node's), so nothing depends on how encodeSession
// lays the JSON out; an unreadable value is left alone.
const TOUCH_EDGE = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, rec = pcall(cjson.decode, v)
if not ok or type(rec) ~= 'table' or rec.source ~= 'edge' then return 0 end
local created = tonumber(rec.created) or 0
local ttl = math.min(tonumber(ARGV[1]), created + tonumber(ARGV[2]) - tonumber(ARGV[3]))
if ttl <= 0 then redis.call('DEL', KEYS[1]) return 0 end
return redis.call('PEXPIRE', KEYS[1], ttl)`;

type Client = Redis | Cluster;
type ScriptClient = Client & {
  mcpaSet(key: string, value: string, ttl: number, channel: string, change: string, nx: string): Promise<number>;
  mcpaDel(key: string, channel: string, change: string): Promise<number>;
  mcpaTouchEdge(key: string, ttl: number, maxAge: number, now: number): Promise<number>;
  mcpaDelNodeIfBoot(key: string, boot: string, channel: string, change: string): Promise<number>;
};

export function describeRedis(c: RedisConnectionConfig): string {
  if (c.cluster?.length) return `cluster ${c.cluster.map((h) => `${h.host}:${h.port}`).join(",")}`;
  if (c.sentinel?.nodes.length)
    return `sentinel ${c.sentinel.name} via ${c.sentinel.nodes.map((h) => `${h.host}:${h.port}`).join(",")}`;
  if (c.url) {
    try {
      const u = new URL(c.url);
      return `${u.protocol}//${u.host}${u.pathname === "/" ? "" : u.pathname}`; // never the password
    } catch {
      return "redis (unparsable url)";
    }
  }
  return "redis";
}

export class RedisRegistry implements Registry {
  readonly kind = "redis" as const;
  readonly sessionTtlMs: number;
  readonly nodeTtlMs: number;
  private readonly client: ScriptClient;
  private sub: Client | null = null;
  private subReady: Promise<void> | null = null;
  private readonly listeners = new Set<ChangeListener>();
  private readonly statusListeners = new StatusListeners();
  private readonly opts: RedisRegistryOptions;
  private current: RegistryStatus = "connecting";
  private closed = false;
  private everReady = false;
  private firstReady: Promise<void> | null = null;
  private readonly lossListeners = new Set<LossListener>();
  /** The marker value and the masters' run ids seen so far (null / empty: nothing seen yet). */
  private seenMarker: string | null = null;
  private readonly seenRunIds = new Set<string>();
  private checking: Promise<RegistryLoss | null> | null = null;
  private lossTimer: NodeJS.Timeout | null = null;

  constructor(opts: RedisRegistryOptions) {
    this.opts = opts;
    this.sessionTtlMs = opts.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.nodeTtlMs = opts.nodeTtlMs ?? DEFAULT_NODE_TTL_MS;
    this.client = this.connect() as ScriptClient;
    this.client.defineCommand("mcpaSet", { numberOfKeys: 1, lua: SET_AND_PUBLISH });
    this.client.defineCommand("mcpaDel", { numberOfKeys: 1, lua: DEL_AND_PUBLISH });
    this.client.defineCommand("mcpaTouchEdge", { numberOfKeys: 1, lua: TOUCH_EDGE });
    this.client.defineCommand("mcpaDelNodeIfBoot", { numberOfKeys: 1, lua: DEL_NODE_IF_BOOT });
    this.watch(this.client);
    this.client.on("ready", () => {
      this.everReady = true;
      void this.checkForLoss();
    });
    if (opts.lossCheckMs) {
      this.lossTimer = setInterval(() => void this.checkForLoss(), opts.lossCheckMs);
      this.lossTimer.unref?.();
    }
  }

  onLoss(listener: LossListener): () => void {
    this.lossListeners.add(listener);
    return () => {
      this.lossListeners.delete(listener);
    };
  }

  /**
   * Whether Redis lost data since the last check: the marker gone or replaced (a restart without
   * persistence, a flush), or a master that is not one seen before (a failover or a restart: the
   * writes it had not replicated are gone). The first check only remembers. Loss listeners are told
   * here; a check that cannot read (Redis down, a master unreachable) decides on what it read.
   * One check at a time (a second call joins it).
   */
  checkForLoss(): Promise<RegistryLoss | null> {
    this.checking ??= this.readContinuity()
      .catch((err: unknown) => {
        this.opts.onError?.("check", err as Error);
        return null;
      })
      .then((loss) => {
        if (loss && !this.closed) for (const l of [...this.lossListeners]) l(loss);
        return loss;
      })
      .finally(() => {
        this.checking = null;
      });
    return this.checking;
  }

  private async readContinuity(): Promise<RegistryLoss | null> {
    if (this.closed || this.client.status !== "ready") return null;
    let marker = await this.client.get(MARKER_KEY);
    if (marker === null) {
      await this.client.set(MARKER_KEY, randomBytes(12).toString("hex"), "NX");
      marker = await this.client.get(MARKER_KEY);
    }
    if (this.client instanceof Cluster) {
      // Learn a promoted replica now rather than at the next MOVED answer.
      const cluster = this.client;
      await new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve()));
    }
    const runIds = await Promise.all(
      this.masters().map((m) =>
        m.info("server").then(
          (text) => /^run_id:([0-9a-f]+)/m.exec(text)?.[1] ?? null,
          () => null, // unreachable now (a killed master before its replica is promoted)
        ),
      ),
    );
    let loss: RegistryLoss | null = null;
    if (marker !== null) {
      if (this.seenMarker !== null && marker !== this.seenMarker) loss = "marker";
      this.seenMarker = marker;
    }
    const firstRead = this.seenRunIds.size === 0;
    for (const id of runIds) {
      if (id === null || this.seenRunIds.has(id)) continue;
      if (!firstRead) loss ??= "master";
      this.seenRunIds.add(id);
    }
    while (this.seenRunIds.size > RUN_IDS_KEPT) this.seenRunIds.delete(this.seenRunIds.values().next().value!);
    return loss;
  }

  private baseOptions(): RedisOptions {
    const maxBackoff = this.opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    return {
      // Fail fast while disconnected (callers retry; events stay on disk) instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      connectTimeout: this.opts.connectTimeoutMs ?? 2000,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), maxBackoff),
      username: this.opts.username,
      password: this.opts.password,
      tls: this.opts.tls ? { ...(this.opts.tls === true ? {} : this.opts.tls) } : undefined,
    };
  }

  private connect(): Client {
    const o = this.opts;
    const base = this.baseOptions();
    if (o.cluster?.length) {
      const copts: ClusterOptions = {
        enableOfflineQueue: false,
        clusterRetryStrategy: base.retryStrategy,
        redisOptions: {
          username: base.username,
          password: base.password,
          tls: base.tls,
          connectTimeout: base.connectTimeout,
          commandTimeout: base.commandTimeout,
          maxRetriesPerRequest: 1,
        },
      };
      return new Cluster(o.cluster, copts);
    }
    if (o.sentinel?.nodes.length) {
      return new Redis({
        ...base,
        sentinels: o.sentinel.nodes,
        name: o.sentinel.name,
        sentinelPassword: o.sentinel.password,
        sentinelRetryStrategy: base.retryStrategy,
        ...(base.tls ? { enableTLSForSentinelMode: true, sentinelTLS: base.tls } : {}),
      });
    }
    if (!o.url)
      throw new RegistryError("connect", "redis needs a url, a sentinel or cluster nodes", "ERR_REGISTRY_CONFIG");
    return new Redis(o.url, base);
  }

  private watch(c: Client): void {
    // ioredis emits "error" on every failed (re)connect: without a listener it would crash the process.
    c.on("error", (err: Error) => this.opts.onError?.("connect", err));
    c.on("ready", () => this.recomputeStatus());
    c.on("close", () => this.recomputeStatus());
    c.on("end", () => this.recomputeStatus());
    c.on("reconnecting", () => this.recomputeStatus());
  }

  private recomputeStatus(): void {
    if (this.closed) return;
    const ok = (c: Client | null) => c === null || c.status === "ready";
    const next: RegistryStatus =
      ok(this.client) && ok(this.sub) ? "ready" : this.current === "connecting" ? "connecting" : "down";
    if (next !== this.current) {
      this.current = next;
      this.statusListeners.emit(next);
    }
  }

  private fail(op: string, err: unknown): never {
    const e = err as Error;
    this.opts.onError?.(op, e);
    if (e instanceof RegistryError) throw e;
    throw new RegistryError(op, `redis ${op} failed: ${e?.message ?? e}`, "ERR_REGISTRY_UNAVAILABLE", { cause: e });
  }

  /**
   * Until the first connection, a command waits for it (up to the connect timeout); after that,
   * while Redis is down, commands fail at once (offline queue off).
   */
  private firstConnect(): Promise<void> {
    if (this.everReady || this.client.status === "ready") return Promise.resolve();
    this.firstReady ??= new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.client.off("ready", done);
        resolve();
      };
      const timer = setTimeout(done, this.opts.connectTimeoutMs ?? 2000);
      timer.unref?.();
      this.client.on("ready", done);
    }).finally(() => {
      this.firstReady = null;
    });
    return this.firstReady;
  }

  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new RegistryError(op, "registry is closed", "ERR_REGISTRY_CLOSED");
    try {
      await this.firstConnect();
      return await fn();
    } catch (err) {
      this.fail(op, err);
    }
  }

  async registerSession(id: string, record: SessionRecord, opts: RegisterOptions = {}): Promise<boolean> {
    if (!isValidSessionId(id)) throw new RegistryError("register", "invalid session id", "ERR_REGISTRY_SCHEMA");
    const value = encodeSession(record);
    const change = encodeChange({ op: "session", id, record });
    const ttl = opts.ttlMs ?? this.sessionTtlMs;
    return this.run(
      "register",
      async () =>
        (await this.client.mcpaSet(sessionKey(id), value, ttl, CHANGE_CHANNEL, change, opts.ifAbsent ? "1" : "0")) ===
        1,
    );
  }

  async lookupSession(id: string): Promise<SessionRecord | null> {
    if (!isValidSessionId(id)) return null;
    const raw = await this.run("lookup", () => this.client.get(sessionKey(id)));
    return raw === null ? null : decodeSession(raw);
  }

  async closeSession(id: string): Promise<boolean> {
    if (!isValidSessionId(id)) throw new RegistryError("close", "invalid session id", "ERR_REGISTRY_SCHEMA");
    const change = encodeChange({ op: "close", id });
    return this.run("close", async () => (await this.client.mcpaDel(sessionKey(id), CHANGE_CHANNEL, change)) > 0);
  }

  async touchSession(id: string, _record?: SessionRecord): Promise<boolean> {
    if (!isValidSessionId(id)) return false;
    return this.run("touch", async () => (await this.client.pexpire(sessionKey(id), this.sessionTtlMs)) === 1);
  }

  async touchEdgeSession(id: string, ttlMs: number, maxAgeMs: number): Promise<boolean> {
    if (!isValidSessionId(id)) return false;
    return this.run(
      "touch",
      async () => (await this.client.mcpaTouchEdge(sessionKey(id), ttlMs, maxAgeMs, Date.now())) === 1,
    );
  }

  async heartbeat(record: NodeRecord, ttlMs?: number): Promise<void> {
    if (!isCookieValue(record.cookie))
      throw new RegistryError("heartbeat", "invalid node cookie", "ERR_REGISTRY_SCHEMA");
    const change = encodeChange({ op: "node", cookie: record.cookie, record });
    await this.run("heartbeat", () =>
      this.client.mcpaSet(
        nodeKey(record.cookie),
        encodeNode(record),
        ttlMs ?? this.nodeTtlMs,
        CHANGE_CHANNEL,
        change,
        "0",
      ),
    );
  }

  /** One pipeline (one round trip per Redis node); an unreadable record reads as null. */
  async getNodes(cookies: string[]): Promise<Array<NodeRecord | null>> {
    if (!cookies.length) return [];
    const raws = await this.run("node", async () => {
      const p = this.client.pipeline();
      for (const c of cookies) p.get(nodeKey(c));
      const res = (await p.exec()) ?? [];
      return res.map(([err, v]) => {
        if (err) throw err;
        return v as string | null;
      });
    });
    return raws.map((raw) => {
      if (raw === null) return null;
      try {
        return decodeNode(raw);
      } catch {
        return null;
      }
    });
  }

  async removeNode(cookie: string, boot: string): Promise<boolean> {
    if (!isCookieValue(cookie)) return false;
    const change = encodeChange({ op: "node", cookie, record: null });
    return this.run(
      "node",
      async () => (await this.client.mcpaDelNodeIfBoot(nodeKey(cookie), boot, CHANGE_CHANNEL, change)) === 1,
    );
  }

  private masters(): Redis[] {
    return this.client instanceof Cluster ? this.client.nodes("master") : [this.client as Redis];
  }

  /** SCAN one prefix on every master, then read the values with one pipeline per batch. */
  private async *scanPrefix(op: string, prefix: string, opts: ScanOptions): AsyncIterable<Array<[string, string]>> {
    const count = opts.batch ?? 1000;
    for (const node of this.masters()) {
      let cursor = "0";
      do {
        const [next, keys] = await this.run(op, () => node.scan(cursor, "MATCH", prefix + "*", "COUNT", count));
        cursor = next;
        if (!keys.length) continue;
        // One MGET per batch; in a Cluster, GETs on the node that holds the keys (MGET fails across slots).
        const values: Array<string | null> = await this.run(op, async () => {
          if (!(this.client instanceof Cluster)) return node.mget(keys);
          const p = node.pipeline();
          for (const k of keys) p.get(k);
          return ((await p.exec()) ?? []).map(([err, v]) => (err || typeof v !== "string" ? null : v));
        });
        const out: Array<[string, string]> = [];
        values.forEach((v, i) => {
          if (typeof v === "string") out.push([keys[i], v]);
        });
        if (out.length) yield out;
      } while (cursor !== "0");
    }
  }

  async listNodes(opts: ScanOptions = {}): Promise<NodeRecord[]> {
    const out: NodeRecord[] = [];
    for await (const batch of this.scanPrefix("nodes", NODE_KEY_PREFIX, opts)) {
      for (const [key, raw] of batch) {
        try {
          out.push(decodeNode(raw));
        } catch (err) {
          opts.onInvalid?.(key, err as Error);
        }
      }
    }
    return out;
  }

  async *scanSessions(opts: ScanOptions = {}): AsyncIterable<Array<{ id: string; record: SessionRecord }>> {
    for await (const batch of this.scanPrefix("scan", SESSION_KEY_PREFIX, opts)) {
      const out: Array<{ id: string; record: SessionRecord }> = [];
      for (const [key, raw] of batch) {
        const id = key.slice(SESSION_KEY_PREFIX.length);
        try {
          if (!isValidSessionId(id))
            throw new RegistryError("scan", "key does not hold a valid session id", "ERR_REGISTRY_SCHEMA");
          out.push({ id, record: decodeSession(raw) });
        } catch (err) {
          opts.onInvalid?.(key, err as Error);
        }
      }
      if (out.length) yield out;
    }
  }

  async subscribe(listener: ChangeListener): Promise<() => Promise<void>> {
    if (this.closed) throw new RegistryError("subscribe", "registry is closed", "ERR_REGISTRY_CLOSED");
    this.listeners.add(listener);
    if (!this.sub) {
      // A dedicated connection: a subscribed connection cannot run other commands.
      // The offline queue is on here: SUBSCRIBE waits for the connection instead of failing.
      const sub =
        this.client instanceof Cluster
          ? this.client.duplicate(undefined, { enableOfflineQueue: true })
          : (this.client as Redis).duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
      this.sub = sub;
      this.watch(sub);
      sub.on("message", (channel: string, message: string) => {
        if (channel !== CHANGE_CHANNEL) return;
        let change: RegistryChange;
        try {
          change = decodeChange(message);
        } catch (err) {
          this.opts.onBadChange?.(err as Error);
          return;
        }
        for (const l of this.listeners) l(change);
      });
      // ioredis resubscribes by itself after a reconnect (autoResubscribe).
      this.subReady = sub.subscribe(CHANGE_CHANNEL).then(
        () => this.recomputeStatus(),
        (err: Error) => {
          this.opts.onError?.("subscribe", err);
        },
      );
    }
    await this.subReady;
    return async () => {
      this.listeners.delete(listener);
    };
  }

  status(): RegistryStatus {
    return this.closed ? "closed" : this.current;
  }

  onStatus(listener: (s: RegistryStatus) => void): () => void {
    return this.statusListeners.add(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.lossTimer) clearInterval(this.lossTimer);
    this.current = "closed";
    this.statusListeners.emit("closed");
    this.listeners.clear();
    this.lossListeners.clear();
    for (const c of [this.sub, this.client]) {
      if (!c) continue;
      try {
        if (c.status === "ready") await c.quit();
        else c.disconnect();
      } catch {
        c.disconnect();
      }
    }
  }
}
