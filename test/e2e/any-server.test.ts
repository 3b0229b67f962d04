// Any MCP server, no code change: MCP servers on the official Python and Go SDKs (no node library:
// the plugin wraps their session ids) and the reference node (node library: ids minted with a
// token), each behind two real Traefik replicas with the plugin at its default settings, through
// one replica, a per-connection L4 balancer and a random replica per request.
// - No answer is held: a server's elicitation and sampling requests reach the client in the middle
//   of the call, and progress notifications arrive ahead of the result.
// - Every official SDK client (TypeScript, Python, Go, Rust) keeps the id the initialize answer gave
//   it for the whole session: Traefik's access log shows every later request on the mcp-wrapped
//   router, which only matches wrapped ids.
// - A session is pinned from its first request, whatever a replica's view knows: sessions opened in
//   the first second after start-up, and sessions of a server that joined the running cluster,
//   called through a replica whose view does not list that server yet.
// Every request of the TypeScript client carries a call id (X-E2e-Call, kept by the access log): a
// failure is printed with its call ids and their access-log rows.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSessionToken } from "../../lib/token/index.ts";
import type { AccessLogRow } from "../../dev/access-log.ts";
import { ownConnectionsFetch, randomReplicaFetch, startL4Balancer, type L4Balancer } from "../../dev/l4-balancer.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type NodeKind, type NodePart, type Stack } from "../../dev/stack.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";
import {
  connectSdk,
  newTally,
  report,
  runSdkClientProcess,
  sdkClientBinaries,
  type ProcessClientKind,
  type SdkClientBinaries,
  type SdkSession,
} from "./helpers.ts";

type Front = "one replica" | "l4" | "random";
const FRONTS: Front[] = ["one replica", "l4", "random"];
/** Well under a second, as a user at a keyboard expects an elicitation dialog. */
const ROUND_TRIP_LIMIT_MS = 1000;
/** The test tools send their 3 progress notifications 400 ms apart, the first right away. */
const PROGRESS_LEAD_MIN_MS = 600;

interface FrontFetch {
  url: string;
  fetch?: typeof fetch;
  close(): Promise<void>;
}

function frontFetch(stack: Stack, lb: L4Balancer, front: Front): FrontFetch {
  if (front === "one replica") return { url: stack.mcpUrl, close: async () => {} };
  if (front === "l4") return { url: `${lb.base}/mcp`, ...ownConnectionsFetch() };
  return { url: stack.mcpUrl, ...randomReplicaFetch(stack.replicas.map((r) => r.httpBase)) };
}

/** The node a session id names (its routing token), or null. */
const nodeOfId = (stack: Stack, sid: string): NodePart | null =>
  stack.nodes.find((n) => n.cookie === parseSessionToken(sid)?.cookie) ?? null;

/** Whether a replica's view lists every node of the stack with an up incarnation. */
async function listsEveryNode(stack: Stack, r: Stack["replicas"][0]): Promise<boolean> {
  const boots = (await r.viewMeta())?.boots ?? [];
  return stack.nodes.every((n) => boots.some((b) => b.cookie === n.cookie && b.state === "up"));
}

/** Access-log rows of the given call ids on every replica, for a failure report. */
function rowsOf(stack: Stack, calls: number[]): string[] {
  const want = new Set(calls.map(String));
  return stack.replicas.flatMap((r) =>
    r
      .accessLog()
      .filter((row) => want.has(String(row[`request_${CALL_ID_HEADER}`])))
      .map(
        (row) =>
          `${r.name} call ${String(row[`request_${CALL_ID_HEADER}`])} ${row.RequestMethod} ${row.DownstreamStatus} ${row.RouterName} -> ${row.ServiceURL ?? "(edge)"}`,
      ),
  );
}

/**
 * One TypeScript SDK session: whoami and two counter calls. Returns null when all is well, else a
 * description of what went wrong with the access-log rows of its calls.
 */
async function counterSession(
  stack: Stack,
  f: FrontFetch,
  expectNode?: NodePart,
  onNode?: (n: NodePart) => void,
): Promise<string | null> {
  const calls: number[] = [];
  let sess: SdkSession | null = null;
  try {
    sess = await connectSdk(f.url, newTally(), { fetch: f.fetch, onCallId: (id) => calls.push(id) });
    const owner = nodeOfId(stack, sess.sessionId);
    if (owner) onNode?.(owner);
    const who = JSON.parse(await sess.call("whoami")) as { node: string };
    const values = [Number(await sess.call("counter")), Number(await sess.call("counter"))];
    const problems: string[] = [];
    if (!owner) problems.push("the session id names no node of the stack");
    else if (who.node !== owner.name) problems.push(`whoami ${who.node}, token names ${owner.name}`);
    if (expectNode && who.node !== expectNode.name) problems.push(`on ${who.node}, not ${expectNode.name}`);
    if (values.join() !== "1,2") problems.push(`counter ${values.join()}`);
    if (sess.transport.sessionId !== sess.sessionId) problems.push("the client's session id changed");
    return problems.length ? `${problems.join("; ")}\n  ${rowsOf(stack, calls).join("\n  ")}` : null;
  } catch (err) {
    await sleep(200); // the access log is written when a request ends
    return `${(err as Error).message.slice(0, 200)}\n  ${rowsOf(stack, calls).join("\n  ")}`;
  } finally {
    await sess?.end();
  }
}

interface AskedRound {
  front: Front;
  askMs: number;
  sampleMs: number;
  /** How long before the progress call's result its first notification arrived. */
  progressLeadMs: number;
  notifications: number;
  results: string[];
  idKept: boolean;
  idKind: string | undefined;
}

/** One session calling ask, sample and progress with a client that answers the server at once. */
async function askedSession(stack: Stack, f: FrontFetch, front: Front): Promise<AskedRound> {
  const sess = await connectSdk(f.url, newTally(), { fetch: f.fetch, answerServer: true });
  try {
    const timed = async (name: string) => {
      const t0 = performance.now();
      const text = await sess.call(name);
      return { text, ms: performance.now() - t0 };
    };
    const ask = await timed("ask");
    const sample = await timed("sample");
    const progressAt: number[] = [];
    const r = (await sess.client.callTool({ name: "progress", arguments: {} }, undefined, {
      timeout: 8000,
      onprogress: () => void progressAt.push(performance.now()),
    })) as { content: Array<{ text: string }> };
    const resultAt = performance.now();
    return {
      front,
      askMs: ask.ms,
      sampleMs: sample.ms,
      progressLeadMs: progressAt.length ? resultAt - progressAt[0]! : 0,
      notifications: progressAt.length,
      results: [ask.text, sample.text, r.content[0]!.text],
      idKept: sess.transport.sessionId === sess.sessionId,
      idKind: parseSessionToken(sess.sessionId)?.kind,
    };
  } finally {
    await sess.end();
  }
}

/** Access-log rows of one replica that started in [from, to]. */
const rowsBetween = (r: Stack["replicas"][0], from: number, to: number): AccessLogRow[] =>
  r.accessLog().filter((row) => {
    const t = Date.parse(row.StartUTC);
    return t >= from && t <= to && (row.RouterName ?? "").startsWith("mcp");
  });

const KINDS: Array<{ kind: NodeKind; wrapped: boolean }> = [
  { kind: "python", wrapped: true },
  { kind: "go", wrapped: true },
  { kind: "reference", wrapped: false },
];

for (const { kind, wrapped } of KINDS) {
  describe(`${kind} servers behind two Traefik replicas, plugin at its defaults`, () => {
    let stack: Stack;
    let lb: L4Balancer;
    let bins: SdkClientBinaries;
    let viewsListedAtStart: boolean[] = [];

    beforeAll(async () => {
      bins = sdkClientBinaries();
      // No waiting for the views: the first test opens sessions in the stack's first second. A long
      // stale limit keeps a paused sidecar's view fresh (the joining-server test).
      stack = await startStack({
        name: `any-server-${kind}`,
        nodeKind: kind,
        nodes: 3,
        replicas: 2,
        waitForView: false,
        timing: { staleAfterMs: 60_000 },
      });
      viewsListedAtStart = await Promise.all(stack.replicas.map((r) => listsEveryNode(stack, r)));
      lb = await startL4Balancer({ targets: stack.replicas.map((r) => ({ host: "127.0.0.1", port: r.ports.http })) });
    }, 120_000);

    afterAll(async () => {
      await lb?.close();
      await stack?.stop();
    });

    it("sessions opened in the first second after start-up reach their node on every request, on one replica and through both", async () => {
      const t0 = Date.now();
      const failures: string[] = [];
      for (let i = 0; i < 12; i++) {
        const front = FRONTS[i % FRONTS.length]!;
        const f = frontFetch(stack, lb, front);
        try {
          const problem = await counterSession(stack, f);
          if (problem) failures.push(`session ${i} (${front}): ${problem}`);
        } finally {
          await f.close();
        }
      }
      const wallMs = Date.now() - t0;
      report(`any-server start-up ${kind}`, { viewsListedEveryNodeAtStart: viewsListedAtStart, sessions: 12, wallMs });
      console.log(
        `${kind}: 12 sessions from start-up in ${wallMs} ms; views listed every node at the start: ${viewsListedAtStart.join(" / ")}`,
      );
      expect(failures).toEqual([]);
    }, 120_000);

    it("elicitation and sampling mid-call, progress ahead of the result: nothing is held, on every front", async () => {
      // From here on the views list every node (steering spreads sessions over them).
      await waitUntil("every view lists every node", async () =>
        (await Promise.all(stack.replicas.map((r) => listsEveryNode(stack, r)))).every(Boolean),
      );
      const rounds: AskedRound[] = [];
      for (const front of FRONTS) {
        for (let i = 0; i < 3; i++) {
          const f = frontFetch(stack, lb, front);
          try {
            rounds.push(await askedSession(stack, f, front));
          } finally {
            await f.close();
          }
        }
      }
      const fmt = (n: number) => n.toFixed(0);
      console.log(
        [
          `${kind}: front | ask ms | sample ms | first progress ahead of the result ms`,
          ...rounds.map((r) => `${r.front} | ${fmt(r.askMs)} | ${fmt(r.sampleMs)} | ${fmt(r.progressLeadMs)}`),
        ].join("\n"),
      );
      report(`any-server asked ${kind}`, { rounds });
      for (const r of rounds) {
        expect(r.results, r.front).toEqual(["hello ada", "sampled: pong", "done"]);
        expect(r.askMs, `${r.front}: elicitation round trip`).toBeLessThan(ROUND_TRIP_LIMIT_MS);
        expect(r.sampleMs, `${r.front}: sampling round trip`).toBeLessThan(ROUND_TRIP_LIMIT_MS);
        expect(r.notifications, r.front).toBe(3);
        expect(r.progressLeadMs, `${r.front}: first progress notification ahead of the result`).toBeGreaterThan(
          PROGRESS_LEAD_MIN_MS,
        );
        expect({ kept: r.idKept, kind: r.idKind }, r.front).toEqual({
          kept: true,
          kind: wrapped ? "wrapped" : "minted",
        });
      }
    }, 180_000);

    it("every official SDK client keeps the id of its initialize answer for the whole session (TypeScript, Python, Go, Rust)", async () => {
      const calls = 4;
      const routersOf = async (run: () => Promise<void>) => {
        const from = Date.now();
        await run();
        const to = Date.now();
        // Rows are written when a request ends (a GET stream at the session's end): let them land.
        await sleep(500);
        return rowsBetween(stack.replicas[0]!, from - 5, to + 5);
      };
      const results: Record<string, { routers: string[]; statuses: number[]; values: number[] }> = {};
      const ts = await routersOf(async () => {
        const s = await connectSdk(stack.mcpUrl);
        const values: number[] = [];
        for (let i = 0; i < calls; i++) values.push(Number(await s.call("counter")));
        results.ts = { routers: [], statuses: [], values };
        expect(s.transport.sessionId).toBe(s.sessionId);
        await s.end();
      });
      results.ts!.routers = ts.map((r) => r.RouterName!);
      results.ts!.statuses = ts.map((r) => r.DownstreamStatus);
      for (const client of ["py", "go", "rust"] as ProcessClientKind[]) {
        let values: number[] = [];
        const rows = await routersOf(async () => {
          const evs = await runSdkClientProcess(client, bins, stack.mcpUrl, { sessions: 1, calls });
          const errors = evs.filter((e) => e.error).map((e) => `${e.ev}: ${e.error}`);
          expect(errors, client).toEqual([]);
          values = evs.filter((e) => e.ev === "call").map((e) => e.value!);
        });
        results[client] = {
          routers: rows.map((r) => r.RouterName!),
          statuses: rows.map((r) => r.DownstreamStatus),
          values,
        };
      }
      report(`any-server ids kept ${kind}`, results);
      for (const [client, r] of Object.entries(results)) {
        expect(r.values, client).toEqual([1, 2, 3, 4]);
        // Every request after the initialize: a wrapped id (the mcp-wrapped router matches nothing
        // else) for servers without the node library, the minted id on the /mcp router otherwise.
        const first = r.routers.findIndex((x) => x === "mcp-wrapped@file");
        if (wrapped) {
          expect(first, `${client}: ${r.routers.join(" ")}`).toBeGreaterThan(0);
          expect(r.routers.slice(first), client).toEqual(r.routers.slice(first).map(() => "mcp-wrapped@file"));
          expect(r.routers.length - first, client).toBeGreaterThanOrEqual(calls);
        } else {
          expect(first, client).toBe(-1);
        }
        // No 404 (a client that dropped its id would meet one); the 4xx of a sessionless probe (the
        // Go SDK's server/discover) comes before the session's first wrapped request.
        expect(
          r.statuses.filter((s) => s === 404),
          client,
        ).toEqual([]);
        if (wrapped)
          expect(
            r.statuses.slice(first).every((s) => s < 300),
            client,
          ).toBe(true);
      }
    }, 180_000);

    it("a server joins the running cluster: its sessions are pinned through a replica whose view does not list it yet", async () => {
      const [born, other] = stack.replicas as [Stack["replicas"][0], Stack["replicas"][0]];
      // The other replica's sidecar is held still: its view stays fresh (long stale limit) and
      // never hears of the new server, as a replica whose sidecar has not polled Traefik yet.
      other.sidecar!.pause();
      const failures: string[] = [];
      const perNode: Record<string, number> = {};
      let viaOther = 0;
      try {
        const joined = await stack.addNode();
        await waitUntil(`${born.name}'s view to list ${joined.name} up`, () => listsEveryNode(stack, born), 15_000);
        expect(await listsEveryNode(stack, other)).toBe(false);
        // Initializes go to the replica whose view placed the session; every later request to the other.
        const conn = ownConnectionsFetch();
        const split = (async (input: RequestInfo | URL, init?: RequestInit) => {
          const sessionless = !new Headers(init?.headers).has("mcp-session-id");
          if (!sessionless) viaOther++;
          const u = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
          return conn.fetch(new URL(u.pathname, sessionless ? born.httpBase : other.httpBase), init);
        }) as typeof fetch;
        try {
          // The placing replica spreads new sessions over its up nodes (each plugin instance goes
          // round them): some reach the joined one.
          for (let i = 0; i < 40 && (perNode[joined.name] ?? 0) < 3; i++) {
            const problem = await counterSession(
              stack,
              { url: born.mcpUrl, fetch: split, close: async () => {} },
              undefined,
              (n) => {
                perNode[n.name] = (perNode[n.name] ?? 0) + 1;
              },
            );
            if (problem) failures.push(`session ${i}: ${problem}`);
          }
        } finally {
          await conn.close();
        }
        console.log(
          `${kind}: sessions per node, the joined one (${joined.name}) unknown to ${other.name}'s view:`,
          perNode,
        );
        expect(failures).toEqual([]);
        expect(perNode[joined.name]).toBeGreaterThanOrEqual(1);
        expect(viaOther).toBeGreaterThan(0);
      } finally {
        other.sidecar!.resume();
      }
    }, 120_000);
  });
}
