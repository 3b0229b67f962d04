// Closed-loop load: `concurrency` workers, each sending `tools/call counter` on its own sessions one
// after the other over keep-alive connections, for a fixed time. Every answer is checked: status 200
// and the session's counter exactly one above the last one seen (a misrouted call resets it).
import { Agent } from "undici";
import { Samples } from "./stats.ts";
import { sessionHeaders } from "../../dev/mcp-client.ts";
import { counterBody, counterOf, type BenchSession } from "./mcp.ts";

export interface LoadTarget {
  name: string;
  /** Origin for a session's calls (Traefik's, or the owner node's for the direct case). */
  originOf: (s: BenchSession) => string;
  /** Send the sticky cookie the session got at initialize. */
  withCookie: boolean;
}

export interface LoadResult {
  target: string;
  seconds: number;
  requests: number;
  errors: number;
  /**
   * Calls without a complete answer: a 200 whose body holds no answer (an SSE stream that ended
   * empty), or a connection that ended before the answer (a cut answer). Counted in `errors` too.
   */
  cuts: number;
  /** Answers whose counter did not continue the session's sequence (a request reached another node). */
  discontinuities: number;
  /** First few error descriptions. */
  errorSamples: string[];
  latencyUs: Samples;
}

export async function runLoad(
  target: LoadTarget,
  sessions: BenchSession[],
  opts: {
    concurrency: number;
    warmupMs: number;
    /** The measured window; with `calls`, an upper bound for it. */
    durationMs: number;
    /** End the window after this many measured calls (answered or failed). */
    calls?: number;
    onWindowStart?: () => void;
    onWindowEnd?: () => void;
  },
): Promise<LoadResult> {
  const agent = new Agent({
    connections: opts.concurrency,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 600_000,
  });
  const latency = new Samples();
  const res: LoadResult = {
    target: target.name,
    seconds: 0,
    requests: 0,
    errors: 0,
    cuts: 0,
    discontinuities: 0,
    errorSamples: [],
    latencyUs: latency,
  };
  let rpc = 1;
  let measuring = false;
  let stop = false;
  let endWindow: (() => void) | null = null;
  const counted = () => {
    if (opts.calls !== undefined && res.requests + res.errors >= opts.calls) endWindow?.();
  };
  const fail = (what: string, cut: boolean) => {
    if (!measuring) return;
    res.errors++;
    if (cut) res.cuts++;
    if (res.errorSamples.length < 5) res.errorSamples.push(what);
    counted();
  };

  const worker = async (mine: BenchSession[]) => {
    let k = 0;
    while (!stop) {
      const s = mine[k++ % mine.length]!;
      const t0 = process.hrtime.bigint();
      try {
        const r = await agent.request({
          origin: target.originOf(s),
          path: "/mcp",
          method: "POST",
          headers: sessionHeaders(s.id, target.withCookie ? s.cookie : undefined),
          body: counterBody(rpc++),
          // A cut answer may leave the connection open without an end: do not wait for ever.
          headersTimeout: 15_000,
          bodyTimeout: 15_000,
        });
        const text = await r.body.text();
        const us = Number(process.hrtime.bigint() - t0) / 1000;
        if (r.statusCode !== 200) {
          fail(`${r.statusCode} ${String(r.headers["mcp-affinity"] ?? "")} ${text.slice(0, 120)}`, false);
          continue;
        }
        const c = counterOf(text);
        if (c === null) {
          fail(`no counter in ${JSON.stringify(text.slice(0, 120))}`, true);
          continue;
        }
        if (c !== s.counter + 1 && measuring) res.discontinuities++;
        s.counter = c;
        if (measuring) {
          latency.add(us);
          res.requests++;
          counted();
        }
      } catch (err) {
        fail(`${(err as { code?: string }).code ?? ""} ${(err as Error).message}`, true);
      }
    }
  };

  const groups: BenchSession[][] = Array.from({ length: opts.concurrency }, () => []);
  sessions.forEach((s, i) => groups[i % opts.concurrency]!.push(s));
  if (groups.some((g) => g.length === 0))
    throw new Error(`need at least ${opts.concurrency} sessions, have ${sessions.length}`);
  const running = groups.map((g) => worker(g));
  await new Promise((r) => setTimeout(r, opts.warmupMs));
  opts.onWindowStart?.();
  measuring = true;
  const t0 = process.hrtime.bigint();
  await new Promise<void>((r) => {
    const timer = setTimeout(r, opts.durationMs);
    endWindow = () => {
      clearTimeout(timer);
      r();
    };
  });
  measuring = false;
  opts.onWindowEnd?.();
  res.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  stop = true;
  await Promise.all(running);
  await agent.close();
  return res;
}
