// The fast-path file: per live incarnation a POST router (bodies within the bound read into memory
// first, by a body service) and a router for other methods, both matching exactly its routing token, to a service holding only its node;
// retired incarnations keep their service (their request counts); the same table gives the same
// bytes, and only a change is written.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import {
  FAST_PATH_NOWHERE,
  FAST_PATH_SERVICE_PREFIX,
  FastPathWriter,
  decimalAtMost,
  fastPathBodyName,
  fastPathName,
  renderFastPath,
  type FastPathTarget,
} from "../../sidecar/src/fast-path.ts";
import { createMetrics } from "../../sidecar/src/metrics.ts";
import { FastPathCounts } from "../../sidecar/src/fast-path-counts.ts";
import { serviceRequestCounts } from "../../sidecar/src/traefik.ts";
import { makeConfig, traefikMetricsUrl } from "../../sidecar/src/config.ts";
import { defaultViewFs, type ViewFs } from "../../lib/view/index.ts";
import { mintSessionId, wrapSessionId } from "../../lib/token/index.ts";

const settings = {
  pathPrefix: "/mcp",
  entryPoints: ["web", "websecure"],
  middlewares: ["auth@file"],
  priority: 1010,
  maxBodyBytes: 65536,
};
const a: FastPathTarget = { cookie: "0123456789abcdef", bootTag: "89abcdef", url: "http://127.0.0.1:7001" };
const b: FastPathTarget = { cookie: "fedcba9876543210", bootTag: "01234567", url: "http://127.0.0.1:7002" };

interface Doc {
  http: {
    routers?: Record<string, { rule: string; priority: number; middlewares?: string[]; service: string }>;
    services?: Record<string, unknown>;
  };
}
const render = (...args: Parameters<typeof renderFastPath>) => parse(renderFastPath(...args)) as Doc;
/** The router's header pattern (Go's RE2 reads this pattern as JavaScript does). */
const patternOf = (rule: string) => new RegExp(/HeaderRegexp\(`Mcp-Session-Id`, `([^`]+)`\)/.exec(rule)![1]!);

describe("renderFastPath", () => {
  it("a POST router and a router for other methods per incarnation, matching exactly its minted ids, to its node alone", () => {
    const doc = render([b, a], settings);
    const name = fastPathName(a);
    expect(Object.keys(doc.http.routers!)).toEqual([`${name}-post`, name, `${fastPathName(b)}-post`, fastPathName(b)]);
    const post = doc.http.routers![`${name}-post`]!;
    const other = doc.http.routers![name]!;
    expect(post).toMatchObject({ priority: 1011, middlewares: ["auth@file"], service: fastPathBodyName(a) });
    expect(other).toMatchObject({ priority: 1010, middlewares: ["auth@file"], service: name });
    // Disjoint: a POST the POST router does not take (too large, chunked) is the plugin's.
    const match = other.rule.replace(/^!Method\(`POST`\) && /, "");
    expect(other.rule).toBe(`!Method(\`POST\`) && ${match}`);
    expect(post.rule).toBe(
      `Method(\`POST\`) && ${match} && HeaderRegexp(\`Content-Length\`, \`${decimalAtMost(65536)}\`)`,
    );
    expect(match).toMatch(/^PathPrefix\(`\/mcp`\) && HeaderRegexp/);
    // A long Cookie line goes through the plugin (431 with a JSON-RPC body past what it reads).
    const cookie = new RegExp(
      /!HeaderRegexp\(`Cookie`, `\^\(\?s:(.+)\)`\)/.exec(other.rule)![1]!.replace(/^/, "^"),
      "s",
    );
    expect(cookie.test("x".repeat(1024))).toBe(false);
    expect(cookie.test("é".repeat(1025))).toBe(true);
    expect(doc.http.services![name]).toEqual({ loadBalancer: { servers: [{ url: a.url }] } });
    const re = patternOf(other.rule);
    const mine = mintSessionId(a.cookie, a.bootTag);
    expect(re.test(mine)).toBe(true);
    // Not: another node's id, another boot of the same node, a wrapped id (the plugin unwraps those).
    expect(re.test(mintSessionId(b.cookie, b.bootTag))).toBe(false);
    expect(re.test(mintSessionId(a.cookie, "00000001"))).toBe(false);
    expect(re.test(wrapSessionId("server-id", a.cookie, a.bootTag))).toBe(false);
    expect(re.test(`x${mine}`)).toBe(false);
    // The whole id, not a prefix: a longer or shorter one is the plugin's to refuse.
    expect(re.test(`${mine}x`)).toBe(false);
    expect(re.test(mine.slice(0, -1))).toBe(false);
  });

  it("the body service reads a POST body into memory and can never send it twice; without a bound, bodies stream", () => {
    const doc = render([a], settings);
    expect(doc.http.services![fastPathBodyName(a)]).toEqual({
      failover: {
        service: fastPathName(a),
        // No server: were a node's answer ever status 0, the client gets a 503, never a second send.
        fallback: FAST_PATH_NOWHERE,
        // Unbounded here: the router's Content-Length rule bounds what reaches it.
        errors: { status: ["0"], maxRequestBodyBytes: -1 },
      },
    });
    expect(doc.http.services![FAST_PATH_NOWHERE]).toEqual({ loadBalancer: { servers: [] } });
    // Neither name is counted as a fast-path request (Traefik counts at the load balancer behind).
    expect(fastPathBodyName(a).startsWith(FAST_PATH_SERVICE_PREFIX)).toBe(false);
    expect(FAST_PATH_NOWHERE.startsWith(FAST_PATH_SERVICE_PREFIX)).toBe(false);
    const streaming = render([a], { ...settings, maxBodyBytes: 0 });
    expect(Object.keys(streaming.http.services!)).toEqual([fastPathName(a)]);
    const post = streaming.http.routers![`${fastPathName(a)}-post`]!;
    expect(post).toMatchObject({ middlewares: ["auth@file"], service: fastPathName(a) });
    expect(post.rule).not.toContain("Content-Length");
  });

  it("the Content-Length pattern takes exactly the numbers up to the bound", () => {
    for (const n of [1, 9, 10, 11, 99, 100, 101, 909, 1000, 4096, 65536, 100000, 16 * 1024 * 1024]) {
      const re = new RegExp(decimalAtMost(n));
      const probes = [0, 1, 9, 10, 99, 100, n - 1, n, n + 1, n + 9, n * 10, Math.floor(n / 10)];
      for (let i = 0; i < 200; i++) probes.push(Math.floor(Math.random() * 2 * n));
      for (const v of probes.filter((x) => x >= 0)) expect([n, v, re.test(String(v))]).toEqual([n, v, v <= n]);
      // Leading zeros: still a number; within the bound's length only.
      expect(re.test(String(n).replace(/^./, "0"))).toBe(true);
      expect(re.test(`0${n}`)).toBe(false);
      for (const bad of ["", "-1", "+1", " 1", "1 ", "1e3", "0x10", "١"])
        expect([n, bad, re.test(bad)]).toEqual([n, bad, false]);
    }
    // Exhaustively for one bound with every digit kind.
    const re = new RegExp(decimalAtMost(2050));
    for (let v = 0; v <= 99999; v++) if (re.test(String(v)) !== v <= 2050) throw new Error(`2050: ${v}`);
  });

  it("retired incarnations keep their service, without routers; the same input gives the same bytes", () => {
    const doc = render([a], settings, [b]);
    expect(Object.keys(doc.http.routers!)).toEqual([`${fastPathName(a)}-post`, fastPathName(a)]);
    expect(Object.keys(doc.http.services!)).toEqual([
      FAST_PATH_NOWHERE,
      fastPathName(a),
      fastPathBodyName(a),
      fastPathName(b),
    ]);
    expect(renderFastPath([a, b], settings)).toBe(renderFastPath([b, a], settings));
    // Not `http: {}`, which Traefik refuses (and then drops every file of the directory).
    expect(renderFastPath([], settings)).toBe("{}\n");
    const bare = render([a], { ...settings, entryPoints: [], middlewares: [], maxBodyBytes: 0 });
    expect(Object.keys(bare.http.routers![`${fastPathName(a)}-post`]!).sort()).toEqual(["priority", "rule", "service"]);
    expect(Object.keys(bare.http.routers![fastPathName(a)]!).sort()).toEqual(["priority", "rule", "service"]);
  });
});

describe("FastPathWriter", () => {
  const make = (fs: ViewFs = defaultViewFs) => {
    const root = mkdtempSync(join(tmpdir(), "fast-path-"));
    const dir = join(root, "dynamic");
    mkdirSync(dir);
    const metrics = createMetrics();
    const file = join(dir, "fast.yml");
    const w = new FastPathWriter({ file, settings, log: pino({ level: "silent" }), metrics, fs });
    const writes = async (result: string) =>
      (await metrics.registry.getSingleMetric("mcp_affinity_fast_path_writes_total")!.get()).values.find(
        (v) => v.labels.result === result,
      )?.value;
    return { root, dir, file, w, writes };
  };

  it("writes a change once, its temporary file outside the watched directory, and nothing for the same table again", async () => {
    const renames: string[] = [];
    const { dir, file, w, writes } = make({
      ...defaultViewFs,
      rename: (x, y) => (renames.push(x), defaultViewFs.rename(x, y)),
    });
    await w.update([a]);
    await w.update([a]);
    await w.update([a, b]);
    await w.update([b, a]);
    expect(readFileSync(file, "utf8")).toBe(renderFastPath([a, b], settings));
    expect(readdirSync(dir)).toEqual(["fast.yml"]);
    expect(renames.every((r) => !r.startsWith(`${dir}/`))).toBe(true);
    expect(await writes("ok")).toBe(2);
  });

  it("an incarnation no longer live keeps its service; it comes back with its routers", async () => {
    const { file, w } = make();
    await w.update([a, b]);
    await w.update([a]);
    expect(readFileSync(file, "utf8")).toBe(renderFastPath([a], settings, [b]));
    await w.update([a, b]);
    expect(readFileSync(file, "utf8")).toBe(renderFastPath([a, b], settings));
  });

  it("a failed write is counted and tried again on the next update; the previous file stays", async () => {
    let fail = false;
    const fs: ViewFs = {
      ...defaultViewFs,
      rename: (x, y) =>
        fail ? Promise.reject(Object.assign(new Error("EIO"), { code: "EIO" })) : defaultViewFs.rename(x, y),
    };
    const { file, w, writes } = make(fs);
    await w.update([a]);
    fail = true;
    await w.update([a, b]);
    expect(readFileSync(file, "utf8")).toBe(renderFastPath([a], settings));
    expect(await writes("error")).toBe(1);
    fail = false;
    await w.update([a, b]);
    expect(readFileSync(file, "utf8")).toBe(renderFastPath([a, b], settings));
  });
});

describe("the fast path's request counts", () => {
  const page = (rows: Array<[string, string, number]>) =>
    rows
      .map(
        ([service, code, n]) =>
          `traefik_service_requests_total{code="${code}",method="POST",protocol="http",service="${service}"} ${n}`,
      )
      .join("\n");
  const sa = `${fastPathName(a)}@file`;
  const sb = `${fastPathName(b)}@file`;

  it("sums each fast-path service over its series and leaves every other service out", () => {
    const text = [
      "# HELP traefik_service_requests_total How many HTTP requests processed on a service, partitioned by status code, protocol, and method.",
      page([
        [sa, "200", 5],
        [sa, "202", 2],
        [sb, "200", 1],
        ["mcp@file", "200", 40],
      ]),
      `traefik_service_request_duration_seconds_count{code="200",method="POST",protocol="http",service="${sa}"} 7`,
    ].join("\n");
    expect(serviceRequestCounts(text, FAST_PATH_SERVICE_PREFIX)).toEqual(
      new Map([
        [sa, 7],
        [sb, 1],
      ]),
    );
  });

  it("Traefik's metrics: --traefik-metrics, else /metrics on --traefik-api", () => {
    expect(traefikMetricsUrl(makeConfig({ traefikApi: "http://127.0.0.1:8081", traefikServices: ["mcp@file"] }))).toBe(
      "http://127.0.0.1:8081/metrics",
    );
    expect(
      traefikMetricsUrl(
        makeConfig({
          traefikApi: "http://u:p@t:8080/",
          traefikServices: ["mcp@file"],
          traefikMetrics: "http://t:9100/metrics",
        }),
      ),
    ).toBe("http://t:9100/metrics");
    expect(traefikMetricsUrl(makeConfig({}))).toBeNull();
  });

  /** FastPathCounts reading a Traefik that serves these pages in turn (null: the connection is cut). */
  const countsOf = async (pages: (string | null)[]) => {
    const server = createServer((_req, res) => {
      const p = pages.shift();
      if (p === null) res.destroy();
      else res.end(p ?? "");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const metrics = createMetrics();
    const cfg = makeConfig({
      traefikApi: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      traefikServices: ["mcp@file"],
    });
    const counts = new FastPathCounts({ cfg, metrics, log: pino({ level: "silent" }), throttled: () => undefined });
    return { server, metrics, counts };
  };

  /** A page of a Traefik whose process started at `startedAtMs`. */
  const startedAt = (startedAtMs: number, text: string) =>
    `process_start_time_seconds ${(startedAtMs / 1000).toFixed(2)}\n${text}`;

  it("adds what each count grew by to the pin decisions: the first reading of a Traefik older than the sidecar is a baseline, a new service counts from zero, a count that went down restarted", async () => {
    const old = Date.now() - 3_600_000;
    const pages = [
      startedAt(old, page([[sa, "200", 10]])),
      startedAt(
        old,
        page([
          [sa, "200", 13],
          [sb, "200", 2],
        ]),
      ),
      page([
        [sa, "200", 1],
        [sb, "200", 2],
      ]),
    ];
    const { server, metrics, counts } = await countsOf(pages);
    const pin = async () => (await metrics.decisions.get()).values.find((v) => v.labels.reason === "pin")?.value ?? 0;
    try {
      expect(await counts.poll()).toBe(0);
      expect(await counts.poll()).toBe(3 + 2);
      expect(await counts.poll()).toBe(1);
      expect(await pin()).toBe(6);
      expect((await metrics.fastPathRequests.get()).values[0]?.value).toBe(6);
    } finally {
      server.close();
    }
  });

  it("a Traefik that started after the sidecar (the first readings failed while it started): every count is new; a new process start time is a restart", async () => {
    const later = Date.now() + 1000;
    const pages: (string | null)[] = [
      null, // not listening yet
      startedAt(later, page([[sa, "200", 4]])),
      startedAt(later, page([[sa, "200", 6]])),
      startedAt(later + 60_000, page([[sa, "200", 9]])),
    ];
    const { server, metrics, counts } = await countsOf(pages);
    try {
      expect(await counts.poll()).toBe(0);
      expect(await counts.poll()).toBe(4);
      expect(await counts.poll()).toBe(2);
      expect(await counts.poll()).toBe(9);
      expect((await metrics.fastPathRequests.get()).values[0]?.value).toBe(15);
    } finally {
      server.close();
    }
  });
});
