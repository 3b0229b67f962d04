// The sidecar's own health probe of each node: one GET of the node's health path on a fresh
// connection. It tells a dead process (the connection is refused: nothing listens any more) from
// one that does not answer (a stall, an overloaded host, a network cut): only the first proves the
// process and its sessions are gone.
import { request } from "node:http";
import { request as requestTls } from "node:https";

/** ok: 2xx; unhealthy: any other status; timeout: no answer in time; refused: nothing listens. */
export type ProbeResult = "ok" | "unhealthy" | "timeout" | "refused";

/**
 * A probe that times out may keep its request open (`late`): a stopped process answers it the
 * moment it resumes, which tells the recovery sooner than any new probe (that one queues behind
 * everything the process received meanwhile).
 */
export interface LateAnswer {
  /** How long the request may stay open after its timeout. */
  maxMs: number;
  /** The answer that came after the timeout, or null when none came in maxMs (or the connection failed). */
  onAnswer(result: ProbeResult | null): void;
}

export function probeNode(nodeUrl: string, path: string, timeoutMs: number, late?: LateAnswer): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let u: URL;
    try {
      u = new URL(path, nodeUrl);
    } catch {
      return resolve("unhealthy");
    }
    let settled = false;
    let lingering = false;
    let lateTimer: NodeJS.Timeout | undefined;
    const finishLate = (r: ProbeResult | null) => {
      if (!lingering) return;
      lingering = false;
      clearTimeout(lateTimer);
      req.destroy();
      late!.onAnswer(r);
    };
    const done = (r: ProbeResult) => {
      if (settled) return finishLate(r === "ok" || r === "unhealthy" ? r : null);
      settled = true;
      clearTimeout(timer);
      if (r === "timeout" && late) {
        lingering = true;
        lateTimer = setTimeout(() => finishLate(null), late.maxMs);
      } else {
        req.destroy();
      }
      resolve(r);
    };
    // A fresh connection each time (agent: false): an idle keep-alive connection to a stopped
    // process would hide the refusal behind a reset.
    const req = (u.protocol === "https:" ? requestTls : request)(
      u,
      { method: "GET", agent: false, headers: { connection: "close" } },
      (res) => {
        res.resume();
        done(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300 ? "ok" : "unhealthy");
      },
    );
    const timer = setTimeout(() => done("timeout"), timeoutMs);
    req.on("error", (err: NodeJS.ErrnoException) => done(err.code === "ECONNREFUSED" ? "refused" : "timeout"));
    req.end();
  });
}
