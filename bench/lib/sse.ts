// Many open SSE streams (GET /mcp with Mcp-Session-Id), one connection each, and process memory.
import http from "node:http";
import { readFileSync } from "node:fs";
import { PROTOCOL_VERSION, STICKY_COOKIE } from "../../dev/mcp-client.ts";
import type { BenchSession } from "./mcp.ts";

export interface OpenStreams {
  opened: number;
  failed: number;
  failures: string[];
  close(): Promise<void>;
}

/** Opens one GET stream per session on `base` and resolves once every one answered its headers. */
export async function openStreams(
  base: string,
  sessions: BenchSession[],
  withCookie: boolean,
  parallel = 50,
): Promise<OpenStreams> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const reqs: http.ClientRequest[] = [];
  const out: OpenStreams = {
    opened: 0,
    failed: 0,
    failures: [],
    async close() {
      for (const r of reqs) r.destroy();
      agent.destroy();
      await new Promise((r) => setTimeout(r, 200));
    },
  };
  const u = new URL(base);
  const openOne = (s: BenchSession) =>
    new Promise<void>((resolve) => {
      const headers: Record<string, string> = {
        accept: "text/event-stream",
        "mcp-session-id": s.id,
        "mcp-protocol-version": PROTOCOL_VERSION,
      };
      if (withCookie) headers.cookie = `${STICKY_COOKIE}=${s.cookie}`;
      const req = http.request({ agent, host: u.hostname, port: u.port, path: "/mcp", method: "GET", headers });
      reqs.push(req);
      const timer = setTimeout(() => {
        out.failed++;
        if (out.failures.length < 5) out.failures.push("no answer within 10 s");
        req.destroy();
        resolve();
      }, 10_000);
      req.on("response", (res) => {
        clearTimeout(timer);
        if (res.statusCode === 200 && String(res.headers["content-type"]).startsWith("text/event-stream")) out.opened++;
        else {
          out.failed++;
          if (out.failures.length < 5)
            out.failures.push(`${res.statusCode} ${String(res.headers["mcp-affinity"] ?? "")}`);
        }
        res.on("data", () => {}); // keep the stream flowing
        res.on("error", () => {});
        resolve();
      });
      req.on("error", (err) => {
        clearTimeout(timer);
        out.failed++;
        if (out.failures.length < 5) out.failures.push(err.message);
        resolve();
      });
      req.end();
    });
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, sessions.length) }, async () => {
      while (next < sessions.length) await openOne(sessions[next++]!);
    }),
  );
  return out;
}

/** Resident set size of a process, in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** CPU time (user + system) a process has used, in microseconds (Linux /proc, clock ticks of 10 ms). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
  return (ticks * 1e6) / 100;
}
