// npm run bench:plugin [-- --json FILE] [--quick] [--baseline OTHER.wasm]
// Nanoseconds per request through the fake http-wasm host (test/host) for the plugin and for the
// pass-through guest driven the same way, with 1,000 and 1,000,000 sessions in the view.
// The figures include the host's own JavaScript work; the pass-through column is that baseline.
// With --baseline, another build of the plugin (an earlier commit's) runs in the same alternating
// rounds, in a column of its own: a change's effect, side by side.
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { bool, nonEmpty, text } from "../lib/settings/index.ts";
import { readFlags } from "./lib/flags.ts";
import { sessionHash, type ViewMeta, type ViewSession } from "../lib/view/index.ts";
import { publishView } from "../test/support/view-writers.ts";
import type {
  Exchange,
  HostRequestInit,
  HttpWasmHost,
  NextHandler,
  UpstreamResponse,
} from "../test/host/http-wasm-host.ts";
import {
  COOKIE,
  cookieValueFor,
  makeViewDir,
  mcp,
  newPlugin,
  passthroughWasm,
  pluginWasm,
  type TempDir,
} from "../test/support/plugin-fixture.ts";
import { bootTag, mintSessionId, wrapSessionId } from "../lib/token/index.ts";

const flags = readFlags("plugin-bench", "npm run bench:plugin -- [--flag value ...]", {
  json: { name: "json", type: text(nonEmpty, "file"), help: "write the results to this JSON file" },
  quick: { name: "quick", type: bool, def: false, help: "fewer requests and rounds (a smoke run)" },
  baseline: {
    name: "baseline",
    type: text(nonEmpty, "file"),
    help: "another build of plugin.wasm to measure beside this one (same rounds)",
  },
});
const jsonOut = flags.json;
const quick = flags.quick;
const baselineWasm = flags.baseline ? new WebAssembly.Module(readFileSync(flags.baseline)) : null;

const GONE = cookieValueFor("http://10.0.0.5:3000");
const SIZES = [1_000, 1_000_000];
const bk = (c: string) => `_mcp_backend=${c}`;
const BOOT_A = bootTag("bench-boot-a");
const BOOT_B = bootTag("bench-boot-b");
// Ids the view has no record of: only their routing token routes them.
const MINTED = mintSessionId(COOKIE.a, BOOT_A);
const SERVER_ID = "5f0c2a4e-91d3-4b7a-8c6e-2d4f6a8b0c1e";
const WRAPPED = wrapSessionId(SERVER_ID, COOKIE.b, BOOT_B);

async function buildView(size: number): Promise<TempDir> {
  const t = makeViewDir(`mcpa-bench-${size}-`);
  const meta: ViewMeta = {
    epoch: 4242,
    generation: 1,
    published: Date.now(),
    shardBits: size > 100_000 ? 12 : 8,
    nodes: [
      { id: 1, cookie: COOKIE.a, state: "up", retryAfterSeconds: 0 },
      { id: 2, cookie: COOKIE.b, state: "up", retryAfterSeconds: 0 },
      { id: 3, cookie: GONE, state: "gone", retryAfterSeconds: 0 },
    ],
    boots: [
      { cookie: COOKIE.a, bootTag: BOOT_A, state: "up" },
      { cookie: COOKIE.b, bootTag: BOOT_B, state: "up" },
      { cookie: GONE, bootTag: bootTag("bench-boot-gone"), state: "gone" },
    ],
  };
  // The looked-up sessions are real ids; the others only need distinct random hashes.
  const sessions: ViewSession[] = [
    { hash: sessionHash("bench-hit"), node: 1 },
    { hash: sessionHash("bench-lost"), node: 3 },
  ];
  const pool = randomBytes(16 * (size - sessions.length));
  for (let i = 0; i < size - 2; i++) sessions.push({ hash: pool.subarray(i * 16, i * 16 + 16), node: 1 + (i % 2) });
  await publishView(t.dir, meta, sessions);
  return t;
}

const TOOLS_LIST = '{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}';
const UPSTREAM: UpstreamResponse = {
  status: 200,
  headers: [["Content-Type", "application/json"]],
  body: '{"jsonrpc":"2.0","id":2,"result":{}}',
};
const next: NextHandler = () => UPSTREAM;
// A server that repeats its own session id on its answers (the SDK servers do).
const ECHO: UpstreamResponse = {
  ...UPSTREAM,
  headers: [
    ["Content-Type", "application/json"],
    ["Mcp-Session-Id", SERVER_ID],
  ],
};

interface Scenario {
  name: string;
  req: HostRequestInit;
  /** Checks the plugin took the intended path (the pass-through always passes). */
  check(ex: Exchange): boolean;
}
const SCENARIOS: Scenario[] = [
  {
    // Steered: the edge places a request that may start a session on an up node.
    name: "no session id",
    req: mcp({ body: TOOLS_LIST }),
    check: (ex) => ex.nextCalled && [bk(COOKIE.a), bk(COOKIE.b)].includes(ex.forwarded?.cookies[0] ?? ""),
  },
  {
    name: "hit",
    req: mcp({ sessionId: "bench-hit", cookie: `theme=dark; ${bk(COOKIE.a)}`, body: TOOLS_LIST }),
    check: (ex) => ex.nextCalled && ex.headerWrites.length === 0,
  },
  {
    name: "pin",
    req: mcp({ sessionId: "bench-hit", cookie: "theme=dark", body: TOOLS_LIST }),
    check: (ex) => ex.forwarded?.cookies[0] === `${bk(COOKIE.a)}; theme=dark`,
  },
  { name: "lost", req: mcp({ sessionId: "bench-lost", body: TOOLS_LIST }), check: (ex) => ex.response.status === 404 },
  {
    name: "token pin",
    req: mcp({ sessionId: MINTED, cookie: "theme=dark", body: TOOLS_LIST }),
    check: (ex) => ex.forwarded?.cookies[0] === `${bk(COOKIE.a)}; theme=dark`,
  },
  {
    name: "wrapped GET",
    req: mcp({ method: "GET", sessionId: WRAPPED, cookie: bk(COOKIE.b) }),
    check: (ex) => ex.forwarded?.headers.get("Mcp-Session-Id") === SERVER_ID && !ex.responseBuffered,
  },
  {
    name: "wrapped POST",
    req: mcp({ sessionId: WRAPPED, cookie: bk(COOKIE.b), body: TOOLS_LIST }),
    // The answer repeats the server's id and flows as written, not held (Traefik's mcp-wrapped
    // router strips that header; the plugin counts it as exposed).
    check: (ex) =>
      ex.forwarded?.headers.get("Mcp-Session-Id") === SERVER_ID &&
      ex.response.headers.values("Mcp-Session-Id")[0] === SERVER_ID &&
      !ex.responseBuffered,
  },
];

/** Median ns/request of each variant, measured in alternating rounds (the machine is shared). */
function measureAll(fns: (() => Exchange)[]): number[] {
  const warm = quick ? 500 : 3_000;
  const n = quick ? 2_000 : 10_000;
  const rounds = quick ? 3 : 5;
  for (let i = 0; i < warm; i++) for (const f of fns) f();
  const samples: number[][] = fns.map(() => []);
  for (let r = 0; r < rounds; r++)
    fns.forEach((f, k) => {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) f();
      samples[k]!.push(((performance.now() - t0) * 1e6) / n);
    });
  return samples.map((x) => x.sort((p, q) => p - q)[x.length >> 1]!);
}

async function main(): Promise<void> {
  const started = performance.now();
  const results: Record<string, Record<string, { plugin: number; passthrough: number; baseline?: number }>> = {};
  const views: TempDir[] = [];
  try {
    const hosts: { size: number; plugin: HttpWasmHost; pass: HttpWasmHost; base: HttpWasmHost | null }[] = [];
    for (const size of SIZES) {
      const t0 = performance.now();
      const view = await buildView(size);
      views.push(view);
      console.error(
        `bench:plugin: view with ${size.toLocaleString("en-US")} sessions built in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      const cfg = { staleAfterMs: 3_600_000 };
      hosts.push({
        size,
        plugin: newPlugin({ dir: view.dir, config: cfg, wasm: pluginWasm() }).pool.instances[0]!,
        pass: newPlugin({ dir: view.dir, config: cfg, wasm: passthroughWasm() }).pool.instances[0]!,
        base: baselineWasm ? newPlugin({ dir: view.dir, config: cfg, wasm: baselineWasm }).pool.instances[0]! : null,
      });
    }
    for (const s of SCENARIOS) {
      for (const h of hosts) {
        for (const [build, host] of [
          ["plugin", h.plugin],
          ["baseline", h.base],
        ] as const) {
          if (!host) continue;
          const first = host.handle(s.req, s.name === "wrapped POST" ? () => ECHO : next);
          if (!s.check(first) || first.trap || first.violations.length)
            throw new Error(
              `scenario "${s.name}" did not take its path (${build}): status ${first.response.status} ${first.trap?.message ?? ""} ${first.violations.join(", ")}`,
            );
        }
      }
      const up: NextHandler = s.name === "wrapped POST" ? () => ECHO : next;
      const per = baselineWasm ? 3 : 2;
      const ns = measureAll(
        hosts.flatMap((h) => [
          () => h.plugin.handle(s.req, up),
          () => h.pass.handle(s.req, up),
          ...(h.base ? [() => h.base!.handle(s.req, up)] : []),
        ]),
      );
      hosts.forEach(
        (h, k) =>
          ((results[s.name] ??= {})[String(h.size)] = {
            plugin: Math.round(ns[per * k]!),
            passthrough: Math.round(ns[per * k + 1]!),
            ...(h.base ? { baseline: Math.round(ns[per * k + 2]!) } : {}),
          }),
      );
    }
  } finally {
    for (const v of views) v.cleanup();
  }

  const fmt = (n: number) => Math.round(n).toLocaleString("en-US").padStart(9);
  const header = [
    "scenario".padEnd(14),
    ...SIZES.flatMap((s) => [
      `plugin@${s / 1000}k`.padStart(13),
      `pass@${s / 1000}k`.padStart(13),
      `+plugin@${s / 1000}k`.padStart(14),
      ...(baselineWasm ? [`+baseline@${s / 1000}k`.padStart(16)] : []),
    ]),
  ];
  console.log(`ns per request through the fake host (median of alternating rounds${quick ? ", quick" : ""})`);
  console.log(header.join(" "));
  for (const s of SCENARIOS) {
    const row = [s.name.padEnd(14)];
    for (const size of SIZES) {
      const r = results[s.name]![String(size)]!;
      row.push(fmt(r.plugin).padStart(13), fmt(r.passthrough).padStart(13), fmt(r.plugin - r.passthrough).padStart(14));
      if (r.baseline !== undefined) row.push(fmt(r.baseline - r.passthrough).padStart(16));
    }
    console.log(row.join(" "));
  }
  console.error(`bench:plugin: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (jsonOut) {
    writeFileSync(
      jsonOut,
      JSON.stringify(
        {
          unit: "ns/request",
          host: "test/host (node:wasi)",
          node: process.version,
          date: new Date().toISOString(),
          quick,
          baseline: flags.baseline ?? null,
          results,
        },
        null,
        2,
      ) + "\n",
    );
    console.error(`bench:plugin: wrote ${jsonOut}`);
  }
}

main().catch((err) => {
  console.error(`bench:plugin: ${err?.message ?? err}`);
  process.exit(1);
});
