// `npx tsx bench/hostile-bench.ts`: Traefik's memory under 1 MiB inputs, with the plugin and
// without it (plain sticky cookie), side by side in the same run, in alternating rounds.
// Each round: RSS at rest, then `--concurrency` requests at once of each kind (1 MiB Cookie lines
// on a live session, a 1 MiB Mcp-Session-Id, a 1 MiB initialize body), `--bursts` times; the peak
// RSS; then RSS again after `--settle` seconds. Prints the medians of the rounds.
// Flags: --rounds N (default 3), --concurrency N (32), --bursts N (3), --settle S (30), --json FILE.
import { writeFileSync } from "node:fs";
import { Pool } from "undici";
import { sleep } from "../dev/poll.ts";
import { startStack, type Stack } from "../dev/stack.ts";
import { rssBytes } from "./lib/sse.ts";
import { median } from "./lib/stats.ts";
import { readFlags } from "./lib/flags.ts";
import { int, nonEmpty, text } from "../lib/settings/index.ts";

const flags = readFlags("hostile-bench", "npx tsx bench/hostile-bench.ts [--flag value ...]", {
  rounds: { name: "rounds", type: int(1, 20), def: 3, help: "alternating rounds" },
  concurrency: { name: "concurrency", type: int(1, 256), def: 32, help: "requests at once of each kind" },
  bursts: { name: "bursts", type: int(1, 20), def: 3, help: "bursts per round" },
  settle: { name: "settle", type: int(0, 600), def: 30, help: "seconds before the RSS is read again" },
  json: { name: "json", type: text(nonEmpty, "file"), help: "write the results to this JSON file" },
});
const ROUNDS = flags.rounds;
const CONCURRENCY = flags.concurrency;
const BURSTS = flags.bursts;
const SETTLE_S = flags.settle;

/** Under Go's header limit (1 MiB + 4 KiB for the whole block), so the request reaches the middleware. */
const BIG = (1 << 20) - 8192;
const HEADERS = {
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
  "mcp-protocol-version": "2025-06-18",
};
const init = (pad = "") =>
  JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "bench", version: "1" },
      ...(pad ? { pad } : {}),
    },
  });
const call = JSON.stringify({
  jsonrpc: "2.0",
  id: 2,
  method: "tools/call",
  params: { name: "counter", arguments: {} },
});

interface Side {
  name: string;
  stack: Stack;
  pool: Pool;
  session: string;
}

async function side(name: string, plugin: boolean): Promise<Side> {
  const stack = await startStack({ name: `bench-hostile-${name}`, nodes: 1, plugin });
  const pool = new Pool(stack.httpBase, { connections: CONCURRENCY, pipelining: 1 });
  const r = await pool.request({ path: "/mcp", method: "POST", headers: HEADERS, body: init() });
  await r.body.text();
  const session = r.headers["mcp-session-id"] as string;
  if (r.statusCode !== 200 || !session) throw new Error(`${name}: initialize answered ${r.statusCode}`);
  return { name, stack, pool, session };
}

const rss = (s: Side) => rssBytes(s.stack.traefik.pid!) / (1 << 20);

async function round(
  s: Side,
): Promise<{ rest: number; peak: number; after: number; statuses: Record<string, number> }> {
  const cookie = "big=" + "c".repeat(BIG);
  const bigId = "i".repeat(BIG);
  const bigBody = init("b".repeat(BIG));
  const rest = rss(s);
  let peak = rest;
  const statuses: Record<string, number> = {};
  const timer = setInterval(() => (peak = Math.max(peak, rss(s))), 20);
  for (let b = 0; b < BURSTS; b++) {
    for (const req of [
      { kind: "cookie", headers: { ...HEADERS, "mcp-session-id": s.session, cookie }, body: call },
      { kind: "id", headers: { ...HEADERS, "mcp-session-id": bigId }, body: call },
      { kind: "body", headers: HEADERS, body: bigBody },
    ]) {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          const r = await s.pool.request({
            path: "/mcp",
            method: "POST",
            headers: req.headers,
            body: req.body,
            headersTimeout: 30_000,
            bodyTimeout: 30_000,
          });
          await r.body.text();
          const k = `${req.kind} ${r.statusCode}`;
          statuses[k] = (statuses[k] ?? 0) + 1;
        }),
      );
    }
  }
  clearInterval(timer);
  peak = Math.max(peak, rss(s));
  await sleep(SETTLE_S * 1000);
  return { rest, peak, after: rss(s), statuses };
}

const sides = [await side("plain", false), await side("plugin", true)];
const results = new Map<string, Array<{ rest: number; peak: number; after: number }>>();
const statuses = new Map<string, Record<string, number>>();
try {
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which side goes first: the machine's load drifts.
    for (const s of r % 2 ? [...sides].reverse() : sides) {
      const x = await round(s);
      (results.get(s.name) ?? results.set(s.name, []).get(s.name)!).push(x);
      statuses.set(s.name, x.statuses);
      process.stderr.write(
        `round ${r + 1} ${s.name}: rest ${x.rest.toFixed(1)} MiB, peak ${x.peak.toFixed(1)} MiB, after ${SETTLE_S} s ${x.after.toFixed(1)} MiB\n`,
      );
    }
  }
} finally {
  for (const s of sides) {
    await s.pool.close();
    await s.stack.stop();
  }
}

const med = (name: string, k: "rest" | "peak" | "after") => median(results.get(name)!.map((x) => x[k]));
const table = sides.map((s) => ({
  traefik: s.name,
  restMiB: +med(s.name, "rest").toFixed(1),
  peakMiB: +med(s.name, "peak").toFixed(1),
  afterSettleMiB: +med(s.name, "after").toFixed(1),
  answers: JSON.stringify(statuses.get(s.name)),
}));
console.log(
  `Traefik RSS, ${CONCURRENCY} concurrent requests x 3 kinds (1 MiB Cookie, 1 MiB session id, 1 MiB initialize body) x ${BURSTS} bursts; medians of ${ROUNDS} alternating rounds; after = ${SETTLE_S} s later`,
);
console.table(table);
if (flags.json)
  writeFileSync(
    flags.json,
    JSON.stringify({ concurrency: CONCURRENCY, bursts: BURSTS, rounds: ROUNDS, settleS: SETTLE_S, table }, null, 2),
  );
