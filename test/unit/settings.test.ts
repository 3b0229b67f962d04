// The one settings module (lib/settings): names derived from specs, the same Redis settings for
// every tool, the rules between them, redaction, and the docs listing every setting.
import { readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { envOf, flagOf, logRedaction, redactSettings, type Setting } from "../../lib/settings/index.ts";
import { REDIS_SETTINGS } from "../../lib/settings/redis.ts";
import { ENV_PREFIX, SIDECAR_SETTINGS, makeConfig, parseConfig } from "../../sidecar/src/config.ts";
import { NODE_SETTINGS, ConfigError as NodeConfigError, parseNodeConfig } from "../../node/reference/config.ts";
import { AffinityConfigError, nodeRedisOptions } from "../../node/src/index.ts";
import { REGISTRY_ACL } from "../../dev/redis.ts";

const doc = (name: string) => readFileSync(new URL(`../../docs/${name}`, import.meta.url), "utf8");
const specs = (o: object) => Object.values(o) as Array<Setting<unknown>>;
const NODE_LIB = { sessionTtlMs: 60_000, nodeTtlMs: 15_000, timeoutMs: 1000, onError: () => {} };

describe("names", () => {
  it("an environment variable is the prefix and the flag in upper case (one exception kept: MCP_NODE_URL)", () => {
    for (const s of specs(SIDECAR_SETTINGS)) {
      expect(s.env).toBeUndefined();
      expect(envOf({ envPrefix: ENV_PREFIX }, s)).toBe(ENV_PREFIX + s.name.toUpperCase().replace(/-/g, "_"));
    }
    const exceptions = specs(NODE_SETTINGS).filter((s) => s.env);
    expect(exceptions.map((s) => [s.name, s.env])).toEqual([["node-url", "MCP_NODE_URL"]]);
  });

  it("the sidecar and the reference node take the same Redis settings under the same names", () => {
    for (const [key, s] of Object.entries(REDIS_SETTINGS)) {
      expect(SIDECAR_SETTINGS[key as keyof typeof SIDECAR_SETTINGS]).toBe(s);
      expect(NODE_SETTINGS[key as keyof typeof NODE_SETTINGS]).toBe(s);
    }
  });

  it("the docs list every setting with its variable, and the registry's ACL", () => {
    const sidecar = doc("sidecar.md") + doc("redis.md");
    for (const s of specs(SIDECAR_SETTINGS)) {
      expect(sidecar).toContain(`\`${flagOf(s)}\``);
      expect(sidecar).toContain(`\`${envOf({ envPrefix: ENV_PREFIX }, s)}\``);
    }
    const node = doc("node-library.md") + doc("redis.md");
    for (const s of specs(NODE_SETTINGS)) expect(node).toContain(`\`${flagOf(s)}\``);
    expect(doc("redis.md").replace(/\s+/g, " ")).toContain(REGISTRY_ACL);
  });
});

describe("reading", () => {
  it("an on/off flag stands alone or takes a value; the environment takes 1/true/0/false", () => {
    const url = ["--redis-url", "redis://r:6379"];
    expect(parseConfig([...url, "--redis-tls"], {})!.redisTls).toBe(true);
    expect(parseConfig([...url, "--redis-tls=false"], { MCP_AFFINITY_REDIS_TLS: "1" })!.redisTls).toBe(false);
    expect(parseConfig(url, { MCP_AFFINITY_REDIS_TLS: "true" })!.redisTls).toBe(true);
    expect(parseConfig(url, { MCP_AFFINITY_REDIS_TLS: "" })!.redisTls).toBe(false);
    expect(() => parseConfig(url, { MCP_AFFINITY_REDIS_TLS: "maybe" })).toThrow(
      'invalid --redis-tls (MCP_AFFINITY_REDIS_TLS): "maybe" is not 1, true, 0 or false',
    );
    expect(parseConfig(["--port", "1", "--help"], {})).toBeNull();
  });

  it("a bad value names the flag and the variable, whichever was given", () => {
    for (const [argv, env, setting] of [
      [["--port", "x"], {}, "--port"],
      [[], { MCP_AFFINITY_PORT: "x" }, "MCP_AFFINITY_PORT"],
    ] as Array<[string[], Record<string, string>, string]>) {
      expect(() => parseConfig(argv, env)).toThrow(
        expect.objectContaining({
          setting,
          code: "ERR_SIDECAR_CONFIG",
          message: 'invalid --port (MCP_AFFINITY_PORT): "x" is not a whole number',
        }),
      );
    }
  });

  it("the reference node: Redis in any mode, or the sidecar, never both", () => {
    const base = ["--port", "7100"];
    const cfg = parseNodeConfig([...base, "--redis-cluster", "10.0.0.1:7000", "--redis-tls"], {})!;
    expect(cfg).toMatchObject({ redisCluster: [{ host: "10.0.0.1", port: 7000 }], redisTls: true, name: "node-7100" });
    const both = () => parseNodeConfig([...base, "--redis-sentinels", "s:1", "--sidecar-url", "http://s:1"], {});
    expect(both).toThrow(NodeConfigError);
    expect(both).toThrow("--redis-sentinels and --sidecar-url exclude each other");
  });
});

describe("the node library's registry option", () => {
  it("takes the same Redis settings and rules, naming the option", () => {
    const opts = nodeRedisOptions(
      { redisCluster: [{ host: "10.0.0.1", port: 7000 }], redisTls: true, redisUsername: "u", redisPassword: "p" },
      NODE_LIB,
    );
    expect(opts).toMatchObject({
      cluster: [{ host: "10.0.0.1", port: 7000 }],
      tls: true,
      username: "u",
      password: "p",
    });
    expect(nodeRedisOptions({ redisUrl: "rediss://r:6380", redisTlsCaFile: "package.json" }, NODE_LIB).tls).toEqual({
      ca: readFileSync("package.json", "utf8"),
    });
    for (const [registry, message] of [
      [{ redisSentinels: [{ host: "s", port: 1 }] }, "registry.redisSentinels needs registry.redisSentinelName"],
      [{ redisUrl: "http://r" }, "invalid registry.redisUrl: protocol must be redis: or rediss:"],
      [
        { redisUrl: "redis://r", redisTlsCaFile: "no/such.pem" },
        'invalid registry.redisTlsCaFile: no such file "no/such.pem"',
      ],
      [{ redisUrl: "redis://r", sidecarUrl: "http://s" }, "unknown setting registry.sidecarUrl"],
    ] as const) {
      expect(() => nodeRedisOptions(registry as never, NODE_LIB)).toThrow(
        expect.objectContaining({ code: "ERR_AFFINITY_CONFIG", message }),
      );
      expect(() => nodeRedisOptions(registry as never, NODE_LIB)).toThrow(AffinityConfigError);
    }
  });
});

describe("secrets", () => {
  const cfg = makeConfig({
    redisUrl: "rediss://mcpa:url-secret@r:6380/0",
    redisTls: true,
    apiToken: "token-secret-0123456789",
    traefikApi: "http://admin:traefik-secret@t:8080",
    traefikServices: ["mcp@file"],
  });

  it("redactSettings masks every secret setting; a URL keeps all but its password", () => {
    const shown = redactSettings(SIDECAR_SETTINGS, cfg);
    expect(shown).toMatchObject({
      redisUrl: "rediss://mcpa:***@r:6380/0",
      apiToken: "***",
      traefikApi: "http://admin:***@t:8080",
      redisTls: true,
      dir: cfg.dir,
    });
    expect(JSON.stringify(shown)).not.toMatch(/secret/);
  });

  it("the loggers mask the same settings wherever they appear in a log line", () => {
    const lines: string[] = [];
    const log = pino(
      { redact: logRedaction(SIDECAR_SETTINGS, ["password"]) },
      new Writable({
        write(chunk, _e, cb) {
          lines.push(chunk.toString());
          cb();
        },
      }),
    );
    log.info({ redisUrl: cfg.redisUrl, conn: { redisPassword: "pw-secret", password: "x-secret" } }, "hello");
    expect(lines.join("")).not.toMatch(/secret/);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      redisUrl: "rediss://mcpa:***@r:6380/0",
      conn: { redisPassword: "***", password: "***" },
    });
  });
});
