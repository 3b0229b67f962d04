// The Redis settings of the registry, one group for every tool that opens it: the sidecar
// (MCP_AFFINITY_REDIS_*), the reference node (MCP_NODE_REDIS_*) and the node library's `registry`
// option (the same keys). One server, Sentinel or Cluster; TLS with an optional CA file; an ACL
// user and password. docs/redis.md documents them.
import { readFileSync } from "node:fs";
import { McpAffinityError } from "../errors.ts";
import type { HostPort, RedisConnectionConfig } from "../registry/index.ts";
import { checkSettings, type RuleContext, type SettingsSpec } from "./index.ts";
import { bool, file, hostPorts, nonEmpty, text, url } from "./types.ts";

/** The Redis settings as the sidecar's config and the reference node's hold them (null or absent: not set). */
export interface RedisSettings {
  redisUrl?: string | null;
  redisSentinels?: HostPort[] | null;
  redisSentinelName?: string | null;
  redisSentinelPassword?: string | null;
  redisCluster?: HostPort[] | null;
  redisUsername?: string | null;
  redisPassword?: string | null;
  redisTls?: boolean | null;
  redisTlsCaFile?: string | null;
}

export const REDIS_SETTINGS: SettingsSpec<RedisSettings> = {
  redisUrl: {
    name: "redis-url",
    type: url(["redis:", "rediss:"]),
    help: "one Redis server: redis://[user:password@]host:port[/db] (rediss:// for TLS)",
    secret: true,
  },
  redisSentinels: {
    name: "redis-sentinels",
    type: hostPorts,
    help: "Sentinel mode: the Sentinels' host:port,host:port (with --redis-sentinel-name)",
  },
  redisSentinelName: {
    name: "redis-sentinel-name",
    type: text(nonEmpty, "name"),
    help: "Sentinel mode: the name of the master the Sentinels monitor",
  },
  redisSentinelPassword: {
    name: "redis-sentinel-password",
    type: text(nonEmpty, "password"),
    help: "Sentinel mode: the Sentinels' own password (their requirepass)",
    secret: true,
  },
  redisCluster: {
    name: "redis-cluster",
    type: hostPorts,
    help: "Cluster mode: seed nodes host:port,host:port",
  },
  redisUsername: {
    name: "redis-username",
    type: text(nonEmpty, "user"),
    help: "ACL user (with --redis-password); any mode",
  },
  redisPassword: {
    name: "redis-password",
    type: text(nonEmpty, "password"),
    help: "password of the ACL user (or of the default user); any mode",
    secret: true,
  },
  redisTls: {
    name: "redis-tls",
    type: bool,
    help: "TLS to every Redis server and Sentinel (a rediss:// URL turns it on by itself)",
    def: false,
  },
  redisTlsCaFile: {
    name: "redis-tls-ca-file",
    type: file,
    help: "PEM file of the CA that signed the Redis servers' certificates (default: the system's CAs)",
  },
};

const MODES = ["redisUrl", "redisSentinels", "redisCluster"] as const;

export function hasRedis(c: RedisSettings): boolean {
  return MODES.some((k) => c[k] !== null && c[k] !== undefined);
}

/** The rules between the Redis settings, run by every schema that holds them. */
export function redisRules<C extends RedisSettings>(c: C, { fail, flag }: RuleContext<C>): void {
  const modes = MODES.filter((k) => c[k] !== null && c[k] !== undefined);
  if (modes.length > 1) fail(modes[1], `${modes.map(flag).join(" and ")} exclude each other: choose one Redis mode`);
  const set = (k: keyof RedisSettings) => c[k] !== null && c[k] !== undefined && c[k] !== false;
  if (!modes.length) {
    for (const k of Object.keys(REDIS_SETTINGS) as Array<keyof RedisSettings>)
      if (set(k)) fail(k, `${flag(k)} needs a Redis: ${MODES.map(flag).join(", ")}`);
    return;
  }
  if (set("redisSentinels") && !set("redisSentinelName"))
    fail("redisSentinelName", `${flag("redisSentinels")} needs ${flag("redisSentinelName")}`);
  for (const k of ["redisSentinelName", "redisSentinelPassword"] as const)
    if (set(k) && !set("redisSentinels")) fail(k, `${flag(k)} is for Sentinel mode (${flag("redisSentinels")})`);
  if (set("redisUsername") && !set("redisPassword"))
    fail("redisUsername", `${flag("redisUsername")} needs ${flag("redisPassword")}`);
  if (set("redisUrl") && /^[a-z]+:\/\/[^/]*@/i.test(c.redisUrl!) && (set("redisUsername") || set("redisPassword")))
    fail(
      set("redisUsername") ? "redisUsername" : "redisPassword",
      `${flag("redisUrl")} already carries credentials: give them there or in ${flag("redisUsername")}/${flag("redisPassword")}, not both`,
    );
  if (set("redisTlsCaFile") && !set("redisTls") && !c.redisUrl?.startsWith("rediss:"))
    fail("redisTlsCaFile", `${flag("redisTlsCaFile")} needs ${flag("redisTls")} (or a rediss:// ${flag("redisUrl")})`);
}

/** Only the Redis settings of a larger settings object (what the node library's `registry` option takes). */
export function redisSettingsOf(c: RedisSettings): RedisSettings {
  return Object.fromEntries(
    Object.keys(REDIS_SETTINGS).flatMap((k) => {
      const v = c[k as keyof RedisSettings];
      return v === null || v === undefined || v === false ? [] : [[k, v]];
    }),
  );
}

const or = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);

/** The registry's connection from checked settings (reads the CA file). */
export function redisConnection(c: RedisSettings): RedisConnectionConfig {
  let tls: RedisConnectionConfig["tls"] = c.redisTls ? true : undefined;
  if (c.redisTlsCaFile) {
    try {
      tls = { ca: readFileSync(c.redisTlsCaFile, "utf8") };
    } catch (err) {
      throw new McpAffinityError(
        "ERR_REGISTRY_CONFIG",
        `cannot read --redis-tls-ca-file ${c.redisTlsCaFile}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return {
    url: or(c.redisUrl),
    // The rules checked that --redis-sentinels comes with --redis-sentinel-name.
    sentinel: c.redisSentinels
      ? { nodes: c.redisSentinels, name: c.redisSentinelName!, password: or(c.redisSentinelPassword) }
      : undefined,
    cluster: or(c.redisCluster),
    username: or(c.redisUsername),
    password: or(c.redisPassword),
    tls,
  };
}

/**
 * Typed Redis settings (an API without flags, such as the node library's `registry` option) checked
 * like the flags, then the connection: a bad value is `error(message)`, naming `keyPrefix + key`.
 */
export function checkedRedisConnection(
  values: RedisSettings,
  error: (setting: string, message: string) => Error,
  keyPrefix = "",
): RedisConnectionConfig {
  return redisConnection(
    checkSettings({ specs: REDIS_SETTINGS, envPrefix: null, error, rules: redisRules }, values, keyPrefix),
  );
}
