// End to end through the real Traefik: what clients of all four official SDKs (TypeScript in
// process, v1 with 2025-era sessions and v2 negotiating 2026-07-28 without one; Python, Go and Rust
// as their own processes) see when a node stalls, crashes or is restarted by a rolling deploy, each
// printed as a timeline with errors per phase, plugin on and (for the deploy) plain sticky cookies
// side by side. The nodes are reference nodes on the SDK v2, serving both eras from one process.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpGet } from "../../dev/net.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type NodePart, type Stack } from "../../dev/stack.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";
import { header, MCP_HEADERS, PROTOCOL_VERSION, raw, rawCall, rawInitialize } from "../../dev/mcp-client.ts";
import {
  connectSdk,
  connectSdkV2,
  httpStatusOf,
  report,
  runSdkClientProcess,
  sdkClientBinaries,
  type ClientEvent,
  type ProcessClientKind,
  type SdkClientBinaries,
  type SdkSession,
} from "./helpers.ts";

/** The plugin's viewRefreshMs (its default; the stack does not change it): how long an instance reuses a meta. */
const PLUGIN_VIEW_REFRESH_MS = 100;
type Ev = ClientEvent;
type ErrorKind = "503" | "404" | "502" | "timeout" | "other";
/** Error text for the report: session ids are secrets (some SDKs put them in their messages). */
const sample = (e: Ev) =>
  `${e.client}: ${e.error!.replace(/\b(ma1|mw1)\.[!-~]+?(?=[\s),]|$)/g, "<session>").slice(0, 120)}`;

function errorKind(e: string): ErrorKind {
  if (/\b503\b|unavailable|retry later/i.test(e)) return "503";
  if (/\b502\b|bad gateway/i.test(e)) return "502";
  if (/\b404\b|not found|terminated|missing/i.test(e)) return "404";
  if (/timeout|deadline|timed out/i.test(e)) return "timeout";
  return "other";
}

let stack: Stack;
let bins: SdkClientBinaries;

beforeAll(async () => {
  bins = sdkClientBinaries();
  stack = await startStack({ name: "e2e-liveness" });
});
afterAll(async () => {
  await stack?.stop();
});

const runProcessClient = (
  kind: ProcessClientKind,
  sessions: number,
  calls: number,
  pauseMs: number,
  reinit: boolean,
  live: Ev[],
): Promise<Ev[]> => runSdkClientProcess(kind, bins, stack.mcpUrl, { sessions, calls, pauseMs, reinit }, live);

/** TypeScript SDK sessions in this process, same events; with reinit a 404 leads to a new session. */
async function runTsClient(
  sessions: number,
  calls: number,
  pauseMs: number,
  reinit: boolean,
  live: Ev[],
): Promise<Ev[]> {
  const out = { push: (e: Ev) => void (all.push(e), live.push(e)) };
  const all: Ev[] = [];
  const one = async (s: number) => {
    let n = 0;
    while (n < calls) {
      let at = Date.now();
      let sess: SdkSession;
      let node: string;
      let initCall: string | undefined; // the initialize's call id (its first request)
      try {
        sess = await connectSdk(stack.mcpUrl, undefined, { onCallId: (id) => void (initCall ??= String(id)) });
        out.push({ client: "ts", ev: "init", s: `ts-${s}`, at, ms: Date.now() - at });
        at = Date.now();
        node = JSON.parse(await sess.call("whoami")).node;
        out.push({ client: "ts", ev: "whoami", s: `ts-${s}`, at, ms: Date.now() - at, node });
      } catch (err) {
        out.push({
          client: "ts",
          ev: "init",
          s: `ts-${s}`,
          at,
          ms: Date.now() - at,
          call: initCall,
          error: `${httpStatusOf(err) ?? ""} ${(err as Error).message}`,
        });
        return;
      }
      let gone = false;
      while (n < calls && !gone) {
        if (n > 0) await sleep(pauseMs);
        n++;
        at = Date.now();
        try {
          const value = Number(await sess.call("counter"));
          out.push({ client: "ts", ev: "call", s: `ts-${s}`, at, ms: Date.now() - at, node, value });
        } catch (err) {
          const status = httpStatusOf(err);
          out.push({
            client: "ts",
            ev: "call",
            s: `ts-${s}`,
            at,
            ms: Date.now() - at,
            node,
            error: `${status ?? ""} ${(err as Error).message}`,
          });
          gone = reinit && status === 404;
        }
      }
      await sess.end();
      if (!gone) return;
    }
  };
  await Promise.all(Array.from({ length: sessions }, (_, s) => one(s)));
  return all;
}

/**
 * SDK v2 clients in this process, each negotiating 2026-07-28 (no session: every request may go to
 * any node), then calling whoami `calls` times: each call records the node that answered it.
 */
async function runV2Client(clients: number, calls: number, pauseMs: number, live: Ev[]): Promise<Ev[]> {
  const all: Ev[] = [];
  const push = (e: Ev) => void (all.push(e), live.push(e));
  const one = async (c: number) => {
    const s = `v2-${c}`;
    let at = Date.now();
    let conn: Awaited<ReturnType<typeof connectSdkV2>>;
    try {
      conn = await connectSdkV2(stack.mcpUrl);
      if (conn.version !== "2026-07-28") throw new Error(`negotiated ${conn.version}, not 2026-07-28`);
      push({ client: "v2", ev: "init", s, at, ms: Date.now() - at });
    } catch (err) {
      push({ client: "v2", ev: "init", s, at, ms: Date.now() - at, error: (err as Error).message });
      return;
    }
    for (let n = 0; n < calls; n++) {
      if (n > 0) await sleep(pauseMs);
      at = Date.now();
      try {
        const node = JSON.parse(await conn.call("whoami")).node as string;
        push({ client: "v2", ev: "call", s, at, ms: Date.now() - at, node });
      } catch (err) {
        push({ client: "v2", ev: "call", s, at, ms: Date.now() - at, call: conn.lastCallId(), error: errText(err) });
      }
    }
    await conn.close();
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => one(c)));
  return all;
}

const errText = (err: unknown) =>
  `${httpStatusOf(err) ?? (err as { code?: unknown }).code ?? ""} ${(err as Error).message}`;

/**
 * The 2026-07-28 calls: every one answered, and by more than one node (they are not pinned). The
 * only failure excused is one `excused` proves by its call id (the crash: Traefik's 502 for the
 * killed node, before the edge could know).
 */
function expectV2Served(events: Ev[], clients: number, calls: number, excused: (e: Ev) => boolean = () => false): void {
  const v2 = events.filter((e) => e.client === "v2");
  expect(v2.filter((e) => e.error && !excused(e)).map((e) => `${e.s} ${e.ev} call ${e.call}: ${sample(e)}`)).toEqual(
    [],
  );
  expect(v2.filter((e) => e.ev === "call").length).toBe(clients * calls);
  expect(new Set(v2.map((e) => e.node).filter(Boolean)).size).toBeGreaterThan(1);
}

/** A new session on `node` (raw initialize until one lands there: placement spreads them). */
async function sessionOn(node: NodePart): Promise<string> {
  for (let i = 0; i < 30; i++) {
    const { sessionId } = await rawInitialize(stack.httpBase);
    const who = await rawCall(stack.httpBase, sessionId, "whoami");
    if (JSON.parse(who.text!).node === node.name) return sessionId;
    await raw(`${stack.httpBase}/mcp`, {
      method: "DELETE",
      headers: { ...MCP_HEADERS, "mcp-session-id": sessionId, "mcp-protocol-version": PROTOCOL_VERSION },
    });
  }
  throw new Error(`no session landed on ${node.name}`);
}

/** Lines of every node's log written since `marks` were taken. */
const logMarks = () => stack.nodes.map((n) => n.proc.log().length);
const logsSince = (marks: number[]) => stack.nodes.map((n, i) => n.proc.log().slice(marks[i]));
const misrouteLines = (marks: number[]) =>
  logsSince(marks).flatMap((l) => l.split("\n").filter((x) => x.includes("session not served by this node")));

interface Phase {
  name: string;
  from: number;
  to: number;
}
/** Errors per phase and kind, for the events that match. */
function tally(events: Ev[], phases: Phase[], pick: (e: Ev) => boolean): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const p of phases) out[p.name] = { calls: 0, errors: 0 };
  for (const e of events) {
    if (e.ev === "whoami" || !pick(e)) continue;
    const p = phases.find((ph) => e.at >= ph.from && e.at < ph.to);
    if (!p) continue;
    const row = out[p.name]!;
    if (e.ev === "call") row.calls++;
    if (e.error) {
      row.errors++;
      const k = (e.ev === "init" ? "init-" : "") + errorKind(e.error);
      row[k] = (row[k] ?? 0) + 1;
    }
  }
  return out;
}

/** Successful counter values of each client session, in order, per session incarnation (whoami). */
function counterRuns(events: Ev[]): Map<string, number[][]> {
  const runs = new Map<string, number[][]>();
  for (const e of [...events].sort((a, b) => a.at - b.at)) {
    if (e.ev === "whoami") (runs.get(e.s) ?? runs.set(e.s, []).get(e.s)!).push([]);
    else if (e.ev === "call" && e.value !== undefined) runs.get(e.s)?.at(-1)?.push(e.value);
  }
  return runs;
}
/** True when every run counts 1, 2, 3, ... (no value lost, no reset inside a run). */
const continuous = (run: number[]) => run.every((v, i) => v === i + 1);

/** Times a run starts counting again (a client that re-initialized by itself: rmcp). */
const resets = (run: number[]) => run.filter((v, i) => i > 0 && v <= run[i - 1]!).length;

/** Every client event of a scenario, for its timeline (the run directory, beside the node logs). */
function saveTimeline(name: string, events: Ev[]): void {
  writeFileSync(
    join(stack.dir, `timeline-${name}.jsonl`),
    [...events]
      .sort((a, b) => a.at - b.at)
      .map((e) => JSON.stringify({ ...e, error: e.error ? sample(e) : undefined }))
      .join("\n") + "\n",
  );
}

/** Runs the clients and, meanwhile, the action (which sees the events so far). */
async function loadAll(
  o: { ts: number; v2: number; py: number; go: number; rust: number; calls: number; pauseMs: number; reinit: boolean },
  action: (live: Ev[]) => Promise<void>,
): Promise<Ev[]> {
  const live: Ev[] = [];
  const clients = Promise.all([
    runTsClient(o.ts, o.calls, o.pauseMs, o.reinit, live),
    runV2Client(o.v2, o.calls, o.pauseMs, live),
    o.py ? runProcessClient("py", o.py, o.calls, o.pauseMs, o.reinit, live) : [],
    o.go ? runProcessClient("go", o.go, o.calls, o.pauseMs, o.reinit, live) : [],
    o.rust ? runProcessClient("rust", o.rust, o.calls, o.pauseMs, o.reinit, live) : [],
  ]);
  const acted = action(live);
  const [events] = await Promise.all([clients.then((r) => r.flat()), acted]);
  return events;
}

/** Waits until the node's sessions are known up again and Traefik serves it (between scenarios). */
async function settle(): Promise<void> {
  await waitUntil(
    "every node healthy",
    async () => (await Promise.all(stack.nodes.map((n) => n.health(1000)))).every(Boolean),
    20_000,
  );
  await sleep(1500);
}

/** The node holding sessions of the most client kinds (then the most sessions): the scenario's victim. */
function pickVictim(live: Ev[]): NodePart {
  const score = (n: NodePart) => {
    const who = live.filter((e) => e.ev === "whoami" && e.node === n.name);
    return new Set(who.map((e) => e.client)).size * 1000 + who.length;
  };
  return [...stack.nodes].sort((a, b) => score(b) - score(a))[0]!;
}

describe("liveness end to end: all four SDK clients through the real Traefik", () => {
  it("stall: SIGSTOP a node for 5 s under load: 0 sessions lost, only 503s (with the request's id) while stopped, no request reaches another node", async () => {
    let victim: NodePart = stack.nodes[0]!;
    const marks = logMarks();
    let stopAt = 0;
    let resumeAt = 0;
    // Each client session is sequential: its call in flight when the node stops waits for the
    // resume. Raw requests of one more session show what a new request gets meanwhile.
    const probes: Array<{ at: number; status: number | null; id: unknown; sentId: number }> = [];
    const events = await loadAll(
      { ts: 6, v2: 4, py: 6, go: 6, rust: 6, calls: 56, pauseMs: 250, reinit: false },
      async (live) => {
        await sleep(4000);
        victim = pickVictim(live);
        const probe = await sessionOn(victim);
        stopAt = Date.now();
        victim.pause();
        const pending: Promise<void>[] = [];
        for (let k = 0; Date.now() < stopAt + 4800; k++) {
          const sentId = 9000 + k;
          const at = Date.now();
          pending.push(
            raw(`${stack.httpBase}/mcp`, {
              method: "POST",
              headers: { ...MCP_HEADERS, "mcp-session-id": probe, "mcp-protocol-version": PROTOCOL_VERSION },
              body: JSON.stringify({
                jsonrpc: "2.0",
                id: sentId,
                method: "tools/call",
                params: { name: "whoami", arguments: {} },
              }),
              timeoutMs: 10_000,
            })
              .then(
                (r) =>
                  void probes.push({
                    at,
                    status: r.status,
                    id: r.status === 503 ? JSON.parse(r.body).id : null,
                    sentId,
                  }),
              )
              .catch(() => void probes.push({ at, status: null, id: null, sentId })),
          );
          await sleep(250);
        }
        await sleep(Math.max(0, stopAt + 5000 - Date.now()));
        victim.resume();
        resumeAt = Date.now();
        await Promise.all(pending);
      },
    );
    saveTimeline("stall", events);
    const end = Math.max(...events.map((e) => e.at + e.ms)) + 1;
    const phases: Phase[] = [
      { name: "before", from: 0, to: stopAt },
      { name: "stopped", from: stopAt, to: resumeAt },
      { name: "after", from: resumeAt, to: end },
    ];
    const onVictim = (e: Ev) => e.node === victim.name;
    const victimSessions = new Set(events.filter((e) => e.ev === "whoami" && onVictim(e)).map((e) => e.s));
    const errors = events.filter((e) => e.error);
    const firstOkAfter = new Map<string, number>();
    for (const e of events)
      if (e.ev === "call" && e.value !== undefined && e.at >= resumeAt && victimSessions.has(e.s))
        firstOkAfter.set(e.s, Math.min(firstOkAfter.get(e.s) ?? Infinity, e.at + e.ms - resumeAt));
    const runs = counterRuns(events);
    report("liveness stall", {
      sessions: runs.size,
      onStalledNode: victimSessions.size,
      victimSessionsPerClient: Object.fromEntries(
        (["ts", "py", "go", "rust"] as const).map((c) => [
          c,
          [...victimSessions].filter((s) => s.startsWith(c)).length,
        ]),
      ),
      victim: tally(events, phases, onVictim),
      others: tally(events, phases, (e) => !onVictim(e)),
      resumeToServedMsMax: Math.max(0, ...firstOkAfter.values()),
      rawDuringStop: probes
        .sort((a, b) => a.at - b.at)
        .map((p) => `${p.at - stopAt}ms:${p.status}`)
        .join(" "),
      errorSamples: [...new Set(errors.map(sample))].slice(0, 8),
    });
    // 2026-07-28 requests carry no session: one sent to the stalled node waits for the resume.
    expectV2Served(events, 4, 56);
    expect(
      new Set([...victimSessions].map((x) => x.split("-")[0])).size,
      "client kinds on the stalled node",
    ).toBeGreaterThanOrEqual(3);
    // 0 sessions lost: one incarnation per session, and its counter never skips or restarts.
    for (const [s, r] of runs) {
      expect(r.length, `${s}: one session, never re-initialized`).toBe(1);
      expect(continuous(r[0]!), `${s}: counter continuous ${r[0]}`).toBe(true);
    }
    // Errors only for the stalled node's sessions, only 503s (or an in-flight call that waited out
    // the stall and hit the client's own bound: none expected with 8 s bounds and a 5 s stall).
    for (const e of errors) {
      expect(onVictim(e), `${e.client} ${e.s} error on a live node: ${e.error}`).toBe(true);
      expect(errorKind(e.error!), `${e.client}: ${e.error}`).toBe("503");
      expect(e.at).toBeGreaterThanOrEqual(stopAt);
      expect(e.at).toBeLessThan(resumeAt + 1000);
    }
    // Raw requests while stopped: sent before the edge knew, they waited and were served after the
    // resume (200); from the first 503 on, every answer is a 503 naming the request's id.
    const first503 = probes.findIndex((p) => p.status === 503);
    expect(first503, "an edge 503 while the node is stopped").toBeGreaterThanOrEqual(0);
    for (const [i, p] of probes.entries()) {
      if (i < first503) expect(p.status).toBe(200);
      else if (p.at < resumeAt) expect([p.status, p.id]).toEqual([503, p.sentId]);
    }
    // Every stalled session continued after the resume.
    for (const s of victimSessions) expect(firstOkAfter.has(s), `${s} served after the resume`).toBe(true);
    // No request of any session reached another node (a node logs every request for a session it lacks).
    expect(misrouteLines(marks)).toEqual([]);
  }, 120_000);

  it("crash: SIGKILL without restart: its sessions get the edge 404 within 2 s; other nodes' sessions: 0 errors", async () => {
    await settle();
    let victim: NodePart | null = null;
    let killAt = 0;
    const rawAfterKill: Array<{ at: number; status: number | null; edge: boolean }> = [];
    const restartAfter: NodePart[] = [];
    try {
      const events = await loadAll(
        { ts: 6, v2: 4, py: 6, go: 6, rust: 6, calls: 40, pauseMs: 250, reinit: true },
        async (live) => {
          await sleep(4000);
          victim = pickVictim(live);
          const probe = await sessionOn(victim);
          killAt = Date.now();
          await victim.kill();
          restartAfter.push(victim);
          // A raw request every 100 ms for one of its sessions: what the edge answers, and from when.
          while (Date.now() < killAt + 4000) {
            const at = Date.now();
            const r = await rawCall(stack.httpBase, probe, "whoami", { timeoutMs: 1000 }).catch(() => null);
            rawAfterKill.push({
              at: at - killAt,
              status: r?.status ?? null,
              edge: r ? header(r, "mcp-affinity") === "lost" : false,
            });
            if (r?.status === 404) break;
            await sleep(100);
          }
        },
      );
      saveTimeline("crash", events);
      // The Python SDK ends a session on any HTTP error. A Python session that ended on a 502 is
      // excused only by that 502's call id: Traefik's own answer (access log) for a request it sent
      // to the killed node's address (in flight at the kill, or sent before the sidecar's probe saw
      // the refusal: the process and its sessions were gone either way), begun before every plugin
      // instance could know: the edge's first 404 for that node (the raw probe) plus the plugin's
      // viewRefreshMs, for which an instance keeps the meta it read (another instance may still
      // pin to the node for that long). A session whose setup straddled the kill (its initialize
      // answered by the victim, its next request that 502) is a session of the killed node too.
      const rows = new Map(stack.accessLog().map((r) => [String(r[`request_${CALL_ID_HEADER}`]), r]));
      const edge404At = killAt + (rawAfterKill.find((r) => r.status === 404)?.at ?? 2000) + PLUGIN_VIEW_REFRESH_MS;
      const crash502 = (e: Ev) => {
        const row = e.call ? rows.get(e.call) : undefined;
        if (!row || !e.error || errorKind(e.error) !== "502") return false;
        const start = Date.parse(row.StartUTC);
        return (
          row.DownstreamStatus === 502 &&
          row.ServiceURL === victim!.url &&
          start + row.Duration / 1e6 >= killAt &&
          start <= edge404At
        );
      };
      // An initialize the edge placed on the node before it could know it dead (the Python and Go
      // clients name theirs by call id), and a 2026-07-28 request excused so (it has no session),
      // are ones the killed node would have served.
      for (const e of events) if ((e.ev === "init" || e.client === "v2") && crash502(e)) e.node = victim!.name;
      const end = Math.max(...events.map((e) => e.at + e.ms)) + 1;
      const phases: Phase[] = [
        { name: "before", from: 0, to: killAt },
        { name: "0-2s after kill", from: killAt, to: killAt + 2000 },
        { name: "later", from: killAt + 2000, to: end },
      ];
      const onVictim = (e: Ev) => e.node === victim!.name;
      const victimSessions = new Set(
        events.filter((e) => e.ev === "whoami" && onVictim(e) && e.at < killAt).map((e) => e.s),
      );
      const first404 = new Map<string, number>();
      for (const e of events)
        if (e.error && onVictim(e) && errorKind(e.error) === "404")
          first404.set(e.s, Math.min(first404.get(e.s) ?? Infinity, e.at + e.ms - killAt));
      // rmcp re-initializes on the 404 by itself: its new run starting at 1 is the sign.
      const runs = counterRuns(events);
      report("liveness crash", {
        onKilledNode: victimSessions.size,
        victim: tally(events, phases, onVictim),
        others: tally(events, phases, (e) => !onVictim(e)),
        rawAfterKill: rawAfterKill.map((r) => `${r.at}ms:${r.status}${r.edge ? "(edge)" : ""}`).join(" "),
        v2On502: events
          .filter((e) => e.client === "v2" && e.error && errorKind(e.error) === "502")
          .map((e) => `${e.s} ${e.call} +${Math.round(e.at - killAt)}ms`),
        pythonEndedOn502: events
          .filter((e) => e.client === "py" && e.error && errorKind(e.error) === "502")
          .map((e) => `${e.s} ${e.call} +${Math.round(e.at - killAt)}ms`),
        first404PerSessionMs: Object.fromEntries([...first404].map(([k, v]) => [k, Math.round(v)])),
        initErrors: events
          .filter((e) => e.ev === "init" && e.error)
          .map((e) => `${e.s} +${Math.round(e.at - killAt)}ms ${e.call ?? ""} ${e.node ?? ""} ${sample(e)}`),
        rustReinitialized: [...runs].filter(([s, r]) => s.startsWith("rust") && resets(r.flat()) > 0).length,
        errorSamples: [...new Set(events.filter((e) => e.error).map(sample))].slice(0, 8),
      });
      // 2026-07-28 requests carry no session: the edge sends them to up nodes, so after the kill
      // they are served by the live nodes. One sent to the killed node's address before the edge
      // could know is excused by its call id exactly as a Python session's 502 is (crash502).
      expectV2Served(events, 4, 40, crash502);
      expect(
        new Set([...victimSessions].map((x) => x.split("-")[0])).size,
        "client kinds on the killed node",
      ).toBeGreaterThanOrEqual(3);
      for (const e of events)
        if (e.error) expect(onVictim(e), `${e.client} ${e.s} error on a live node: ${e.error}`).toBe(true);
      // The edge answers 404 for its sessions within 2 s of the kill (the probe sees the refusal) ...
      const edge404 = rawAfterKill.find((r) => r.status === 404);
      expect(edge404?.edge, JSON.stringify(rawAfterKill)).toBe(true);
      expect(edge404!.at).toBeLessThanOrEqual(2000);
      // ... so every call of its sessions sent later gets that 404 (a call in flight at the kill ends
      // as its client ends a cut answer: a 502, or the client's own timeout), and each session got it.
      // (rmcp re-initializes by itself: its later calls succeed in a new session, checked below.)
      for (const e of events)
        if (e.ev === "call" && onVictim(e) && e.client !== "rust" && e.at > killAt + 2000)
          expect(errorKind(e.error ?? "ok"), `${e.client} ${e.s}: ${e.error}`).toBe("404");
      // Each session got the 404, unless its SDK already ended it on a 502 (crash502 above).
      const endedOn502 = (x: string) =>
        events.find((e) => e.s === x && e.client === "py" && e.error && errorKind(e.error) === "502");
      const pyEndedOn502 = [...victimSessions].filter((s) => !first404.has(s) && endedOn502(s));
      for (const s of pyEndedOn502)
        expect(
          crash502(endedOn502(s)!),
          `${s}: its 502 (${endedOn502(s)!.call}) is Traefik's answer for the killed node before the edge knew`,
        ).toBe(true);
      for (const s of victimSessions)
        if (!s.startsWith("rust")) expect(first404.has(s) || pyEndedOn502.includes(s), `${s}: got the 404`).toBe(true);
      for (const [s, r] of runs)
        if (s.startsWith("rust") && victimSessions.has(s))
          expect(resets(r.flat()), `${s} re-initialized: ${r}`).toBe(1);
      // After the 404 every client carried on in a new session on a live node: no other error later on.
      for (const e of events)
        if (e.error && e.at > killAt + 2000) expect(errorKind(e.error), `${e.client} ${e.s}: ${e.error}`).toBe("404");
    } finally {
      for (const n of restartAfter) await n.start(); // the next scenario needs every node
    }
  }, 120_000);
});

describe("rolling deploy: every node restarted in turn under continuous load", () => {
  interface DeployResult {
    events: Ev[];
    windows: Array<{ node: NodePart; sigterm: number; exited: number; up: number }>;
    newSessions: Ev[];
  }

  let deploys = 0;
  async function deploy(): Promise<DeployResult> {
    const windows: DeployResult["windows"] = [];
    const newSessions: Ev[] = [];
    let stop = false;
    // New sessions all the time: initialize, whoami, two calls, close.
    const churn = (async () => {
      let k = 0;
      while (!stop) {
        const runs = [0, 1].map(async () => {
          const at = Date.now();
          const s = `new-${k++}`;
          let initCall: string | undefined; // the initialize's call id (its first request)
          try {
            const sess = await connectSdk(stack.mcpUrl, undefined, {
              onCallId: (id) => void (initCall ??= String(id)),
            });
            const node = JSON.parse(await sess.call("whoami")).node as string;
            newSessions.push({ client: "ts", ev: "whoami", s, at, ms: Date.now() - at, node });
            for (let i = 1; i <= 2; i++) {
              const t = Date.now();
              try {
                newSessions.push({
                  client: "ts",
                  ev: "call",
                  s,
                  at: t,
                  ms: Date.now() - t,
                  node,
                  value: Number(await sess.call("counter")),
                });
              } catch (err) {
                newSessions.push({
                  client: "ts",
                  ev: "call",
                  s,
                  at: t,
                  ms: Date.now() - t,
                  node,
                  error: `${httpStatusOf(err) ?? ""} ${(err as Error).message}`,
                });
                if (httpStatusOf(err) === 404) break; // its node restarted: the session is gone
              }
            }
            await sess.end();
          } catch (err) {
            newSessions.push({
              client: "ts",
              ev: "init",
              s,
              at,
              ms: Date.now() - at,
              call: initCall,
              error: `${httpStatusOf(err) ?? ""} ${(err as Error).message}`,
            });
          }
        });
        await Promise.all(runs);
        await sleep(100);
      }
    })();
    const events = await loadAll(
      { ts: 30, v2: 4, py: 3, go: 3, rust: 0, calls: 80, pauseMs: 300, reinit: true },
      async () => {
        await sleep(2500);
        for (const node of stack.nodes) {
          // As an orchestrator does: SIGTERM, the drain grace, the process exits; a new one starts.
          const sigterm = Date.now();
          await node.proc.stop(stack.timing.drainGraceMs + 5000);
          const exited = Date.now();
          await node.start();
          windows.push({ node, sigterm, exited, up: Date.now() });
          await sleep(2000);
        }
      },
    );
    stop = true;
    await churn;
    saveTimeline(`deploy-${deploys++}`, [...events, ...newSessions]);
    return { events, windows, newSessions };
  }

  function summarize(r: DeployResult) {
    // An initialize refused by a draining node, named by its call id: the access-log row shows that
    // node's own 503, begun after its SIGTERM and before it exited (the edge had not yet learned of
    // the drain). Each is listed with its delay after the SIGTERM.
    const rows = new Map(stack.accessLog().map((row) => [String(row[`request_${CALL_ID_HEADER}`]), row]));
    const refusalWindow = (e: Ev) => {
      const row =
        e.ev === "init" && e.call && e.error && /^503 .*This node is shutting down/s.test(e.error)
          ? rows.get(e.call)
          : undefined;
      if (!row || row.OriginStatus !== 503) return undefined;
      const start = Date.parse(row.StartUTC);
      const w = r.windows.find((x) => row.ServiceURL === x.node.url && start >= x.sigterm && start <= x.exited);
      return w && { w, ms: start - w.sigterm };
    };
    const refusedByDraining = (e: Ev) => refusalWindow(e) !== undefined;
    // A session whose whoami got the 404 (born just before its node's SIGTERM): its node is the
    // one that answered its initialize (the initialize's call id in the access log).
    for (const e of [...r.events, ...r.newSessions]) {
      const row =
        e.ev === "init" && !e.node && e.call && e.error && errorKind(e.error) === "404" ? rows.get(e.call) : undefined;
      if (row?.OriginStatus === 200) e.node = r.windows.find((w) => w.node.url === row.ServiceURL)?.node.name;
    }
    const restartingAt = (e: Ev) =>
      r.windows.find(
        (w) =>
          w.node.name === e.node && (e.ev === "init" ? e.at + e.ms : e.at) >= w.sigterm - 500 && e.at <= w.up + 3000,
      );
    const all = [...r.events, ...r.newSessions];
    const errs = all.filter((e) => e.error && !refusedByDraining(e));
    const onDraining = r.newSessions.filter(
      (e) =>
        e.ev === "whoami" &&
        r.windows.some((w) => w.node.name === e.node && e.at >= w.sigterm && e.at + e.ms <= w.exited),
    );
    const terminal = new Map<string, number>();
    for (const e of all)
      if (e.error && errorKind(e.error) === "404")
        terminal.set(`${e.s}@${e.node}`, (terminal.get(`${e.s}@${e.node}`) ?? 0) + 1);
    const restartedSessions = new Set(
      r.events
        .filter((e) => e.ev === "whoami" && r.windows.some((w) => w.node.name === e.node && e.at < w.sigterm))
        .map((e) => `${e.s}@${e.node}`),
    );
    return {
      calls: all.filter((e) => e.ev === "call").length,
      errors: errs.length,
      byKind: errs.reduce<Record<string, number>>(
        (o, e) => ((o[errorKind(e.error!)] = (o[errorKind(e.error!)] ?? 0) + 1), o),
        {},
      ),
      errorsOnNodesNotRestarting: errs.filter((e) => !restartingAt(e)).length,
      "502s": errs.filter((e) => errorKind(e.error!) === "502").length,
      newSessions: r.newSessions.filter((e) => e.ev === "whoami").length,
      newSessionsOnDrainingNode: onDraining.length,
      // A node refuses new sessions from the moment it drains (503 + Retry-After); the edge stops
      // sending it any within a view refresh. An initialize in between gets that prompt 503.
      initializesRefusedByDrainingNode: r.newSessions.filter((e) => refusedByDraining(e)).length,
      refusals: r.newSessions.flatMap((e) =>
        refusedByDraining(e) ? [`${e.call} ${refusalWindow(e)!.w.node.name} +${refusalWindow(e)!.ms}ms`] : [],
      ),
      // A new session born on a node just before its SIGTERM ends, like every session of a
      // restarted node, on its one terminal 404 (counted in sessionsWith404).
      newSessionFailures: r.newSessions.filter(
        (e) => e.error && !refusedByDraining(e) && !(errorKind(e.error) === "404" && restartingAt(e)),
      ).length,
      sessionsWith404: terminal.size,
      sessionsWithMoreThanOne404: [...terminal.values()].filter((n) => n > 1).length,
      restartedSessions: restartedSessions.size,
      samples: [...new Set(errs.map(sample))].slice(0, 6),
      // Each error a node not restarting answered (or an initialize), with its start relative to each SIGTERM.
      notRestarting: errs
        .filter((e) => !restartingAt(e))
        .map(
          (e) =>
            `${e.s} ${e.ev} ${e.node} at ${r.windows.map((w) => `${w.node.name}:${e.at - w.sigterm}`).join(",")} ${sample(e)}`,
        ),
      terminal,
    };
  }

  it("plugin on: 0 errors for sessions of nodes not restarting, one 404 per session of a restarted node then a new session, no 502, no new session on a draining node; side by side with plain sticky", async () => {
    await settle();
    const on = await deploy();
    const son = summarize(on);
    // Plain sticky cookies (with Traefik's health check) under the same deploy.
    stack.writeDynamic({ plugin: false });
    await waitUntil(
      "the mcp router without the plugin",
      async () => {
        const r = await httpGet(`${stack.apiUrl}/api/http/routers/mcp@file`);
        return r?.status === 200 && !(JSON.parse(r.text).middlewares ?? []).includes("mcp-affinity@file");
      },
      15_000,
    );
    await sleep(1500);
    let soff: ReturnType<typeof summarize>;
    try {
      soff = summarize(await deploy());
    } finally {
      stack.writeDynamic({ plugin: true });
      await sleep(1500);
    }
    const { terminal: _t1, ...ron } = son;
    const { terminal: _t2, ...roff } = soff;
    const rows = Object.keys(ron)
      .filter((k) => !["samples", "notRestarting", "refusals"].includes(k))
      .map(
        (k) =>
          `${k.padEnd(28)} ${JSON.stringify((ron as any)[k]).padStart(14)} ${JSON.stringify((roff as any)[k]).padStart(14)}`,
      );
    console.log(["[e2e] liveness rolling deploy (plugin on | plain sticky):", ...rows].join("\n"));
    report("liveness rolling deploy", {
      windows: on.windows.map((w) => ({ node: w.node.name, drainMs: w.exited - w.sigterm, startMs: w.up - w.exited })),
      on: ron,
      off: roff,
    });

    // 2026-07-28 requests carry no session: every one is answered while the nodes restart.
    expectV2Served(on.events, 4, 80);
    expect(son.restartedSessions).toBeGreaterThanOrEqual(20);
    expect(son["502s"]).toBe(0);
    expect(son.errorsOnNodesNotRestarting, JSON.stringify(son.samples)).toBe(0);
    expect(son.newSessionsOnDrainingNode).toBe(0);
    expect(son.newSessionFailures, JSON.stringify(son.samples)).toBe(0);
    // Every error of the load is the one terminal answer of a session whose node restarted.
    const loadErrors = on.events.filter((e) => e.error);
    expect(loadErrors.filter((e) => errorKind(e.error!) !== "404").map(sample)).toEqual([]);
    expect(son.sessionsWithMoreThanOne404).toBe(0);
  }, 300_000);
});
