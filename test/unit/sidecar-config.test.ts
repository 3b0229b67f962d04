// Sidecar settings: the programmatic config goes through the same validation as the CLI.
import { describe, expect, it } from "vitest";
import { ConfigError, makeConfig, parseConfig, type SidecarConfig } from "../../sidecar/src/config.ts";

const thrown = (fn: () => unknown): ConfigError => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("no ConfigError thrown");
};

describe("makeConfig validates like the CLI", () => {
  const cases: Array<[Partial<SidecarConfig>, string[]]> = [
    [{ shardBits: 5 as never }, ["--shard-bits", "5"]],
    [{ port: -3 }, ["--port=-3"]],
    [{ port: 70_000 }, ["--port", "70000"]],
    [{ nodeTtlMs: 10 }, ["--node-ttl", "10"]],
    [{ nodeTtlMs: 5000, downLimitMs: 1000 }, ["--node-ttl", "5000", "--down-limit", "1000"]],
    [{ host: "0.0.0.0" }, ["--host", "0.0.0.0"]],
    [{ apiToken: "short" }, ["--api-token", "short"]],
    [{ redisUrl: "http://x" }, ["--redis-url", "http://x"]],
    [{ redisSentinels: [{ host: "a", port: 26379 }] }, ["--redis-sentinels", "a:26379"]],
    [{ traefikApi: "http://127.0.0.1:8080" }, ["--traefik-api", "http://127.0.0.1:8080"]],
    [{ probePath: "healthz" }, ["--probe-path", "healthz"]],
    [{ logLevel: "loud" as never }, ["--log-level", "loud"]],
    [{ fastPathFile: "dynamic/fast.yml" }, ["--fast-path-file", "dynamic/fast.yml"]],
    [{ fastPathFile: "/etc/traefik/fast.json" }, ["--fast-path-file", "/etc/traefik/fast.json"]],
    [{ fastPathPriority: 1 }, ["--fast-path-priority", "1"]],
    [{ fastPathFile: "/etc/traefik/dynamic/fast.yml" }, ["--fast-path-file", "/etc/traefik/dynamic/fast.yml"]],
    [{ redisTls: true }, ["--redis-tls"]],
    [
      { redisUrl: "redis://r:6379", redisTlsCaFile: "package.json" },
      ["--redis-url=redis://r:6379", "--redis-tls-ca-file", "package.json"],
    ],
    [
      { redisUrl: "redis://r:6379", redisTlsCaFile: "no/such.pem" },
      ["--redis-url=redis://r:6379", "--redis-tls-ca-file", "no/such.pem"],
    ],
    [
      { redisCluster: [{ host: "a", port: 1 }], redisUsername: "u" },
      ["--redis-cluster", "a:1", "--redis-username", "u"],
    ],
    [
      { redisUrl: "redis://u:p@r:6379", redisPassword: "p2" },
      ["--redis-url", "redis://u:p@r:6379", "--redis-password", "p2"],
    ],
    [
      { redisUrl: "redis://r:6379", redisSentinelPassword: "p" },
      ["--redis-url", "redis://r:6379", "--redis-sentinel-password", "p"],
    ],
    [
      { redisUrl: "redis://r:6379", redisCluster: [{ host: "a", port: 1 }] },
      ["--redis-url", "redis://r:6379", "--redis-cluster", "a:1"],
    ],
  ];
  for (const [over, argv] of cases) {
    it(`${JSON.stringify(over)} fails like ${argv.join(" ")}`, () => {
      const cli = thrown(() => parseConfig(argv, {}));
      const api = thrown(() => makeConfig(over));
      expect(api.code).toBe("ERR_SIDECAR_CONFIG");
      expect(api.setting).toBe(cli.setting);
      expect(api.message).toBe(cli.message);
    });
  }

  it("good values give the same config as the CLI, typed values round-trip", () => {
    const over: Partial<SidecarConfig> = {
      port: 0,
      shardBits: 8,
      nodeTtlMs: 300,
      downLimitMs: 600,
      redisCluster: [
        { host: "::1", port: 7000 },
        { host: "10.0.0.2", port: 7001 },
      ],
      traefikApi: "http://127.0.0.1:8080",
      traefikServices: ["mcp@file", "other@file"],
      apiToken: null,
      redisTls: true,
      redisUsername: "mcp-affinity",
      redisPassword: "secret",
      redisTlsCaFile: "package.json",
    };
    const argv = [
      "--port",
      "0",
      "--shard-bits",
      "8",
      "--node-ttl",
      "300",
      "--down-limit",
      "600",
      "--redis-cluster",
      "[::1]:7000,10.0.0.2:7001",
    ];
    argv.push("--traefik-api", "http://127.0.0.1:8080", "--traefik-services", "mcp@file,other@file");
    argv.push("--redis-tls", "--redis-username=mcp-affinity", "--redis-tls-ca-file", "package.json");
    expect(makeConfig(over)).toEqual(parseConfig(argv, { MCP_AFFINITY_REDIS_PASSWORD: "secret" }));
    expect(makeConfig()).toEqual(parseConfig([], {}));
  });

  it("an unknown key is refused", () => {
    expect(thrown(() => makeConfig({ nope: 1 } as never)).setting).toBe("nope");
  });
});
