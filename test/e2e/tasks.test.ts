// Tasks of MCP 2026-07-28 (tasks extension) on several replicas of a server that keeps its tasks in
// process memory: three Rust SDK nodes (rmcp's task manager, test/servers/rust) behind two real
// Traefik replicas with the plugin at its default settings, driven by the Rust SDK task client (a
// new connection per request, no cookies) and by raw 2026 requests.
// - Through a per-connection L4 balancer, and with creation on one replica and every poll, update
//   and cancel on the other: 0 failed requests. Plain Traefik (middleware off) on the same nodes,
//   beside it.
// - A node killed: its tasks get -32602 from the edge on both replicas, never a node's answer after
//   that; tasks of the other nodes see no error; requests without a handle go to live nodes.
// Every request carries an X-E2e-Call id; a failure is printed with its access-log rows.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTaskHandle } from "../../lib/token/index.ts";
import { startL4Balancer, type L4Balancer } from "../../dev/l4-balancer.ts";
import { header } from "../../dev/mcp-client.ts";
import { sleep } from "../../dev/poll.ts";
import { startStack, type NodePart, type Stack } from "../../dev/stack.ts";
import { CALL_ID_HEADER } from "../../dev/traefik-config.ts";
import {
  failedCalls,
  messageOf,
  post2026,
  runRequestStateClient,
  runRustTaskClient,
  type MrtrClientRun,
  type TaskClientRun,
} from "../support/task-clients.ts";

/** The plugin's default: an instance re-reads the meta at most this often. */
const VIEW_REFRESH_MS = 100;

let callSeq = 0;
const nextCall = (prefix: string) => `${prefix}${++callSeq}`;

/** Access-log rows of the given call ids on every replica, for a failure report. */
function rowsOf(stack: Stack, calls: string[]): string[] {
  const want = new Set(calls);
  return stack.replicas.flatMap((r) =>
    r
      .accessLog()
      .filter((row) => want.has(String(row[`request_${CALL_ID_HEADER}`])))
      .map(
        (row) =>
          `${r.name} call ${String(row[`request_${CALL_ID_HEADER}`])} ${row.DownstreamStatus} ${row.RouterName} -> ${row.ServiceURL ?? "(edge)"}`,
      ),
  );
}

/** One line of the client's run for the report: requests, failures, tasks by node. */
const line = (name: string, run: TaskClientRun) =>
  `${name.padEnd(34)} requests ${String(run.summary.calls).padStart(4)}  failed ${String(run.summary.failedCalls).padStart(4)}  ` +
  `tasks completed ${run.summary.completed}/${run.summary.tasks}, cancelled ${run.summary.cancelled}, failed ${run.summary.failedTasks}`;

describe("tasks on three Rust SDK nodes behind two Traefik replicas", () => {
  let stack: Stack;
  let lb: L4Balancer;
  const report: string[] = [];

  beforeAll(async () => {
    stack = await startStack({ name: "e2e-tasks", nodeKind: "rust-tasks", nodes: 3, replicas: 2 });
    lb = await startL4Balancer({ targets: stack.replicas.map((r) => ({ host: "127.0.0.1", port: r.ports.http })) });
  }, 180_000);

  afterAll(async () => {
    if (report.length > 0) console.log(["", "Tasks through the edge:", ...report].join("\n"));
    await lb?.close();
    await stack?.stop();
  });

  const nodeOf = (handle: string): NodePart | undefined =>
    stack.nodes.find((n) => n.cookie === parseTaskHandle(handle)?.cookie);

  it("per-connection L4 balancer: every task created, polled, cancelled with 0 failed requests; plain Traefik beside it", async () => {
    const run = await runRustTaskClient({
      url: `${lb.base}/mcp`,
      tasks: 18,
      tool: "slow",
      ms: 400,
      cancelEvery: 6,
      callPrefix: "l4-",
    });
    report.push(line("plugin, L4 balancer", run));
    expect(failedCalls(run)).toBe("");
    expect(run.summary.failedCalls).toBe(0);
    expect(run.summary.completed + run.summary.cancelled).toBe(18);
    expect(run.summary.cancelled).toBe(3);
    // Every task id the client got is a handle naming one of the nodes, and the work spread over them.
    for (const t of run.units) expect(nodeOf(t.taskId!), `task ${t.task}: ${t.taskId}`).toBeDefined();
    expect(Object.keys(run.summary.nodes).length).toBeGreaterThanOrEqual(2);
    // Each request went on its own connection: both replicas took part.
    expect(lb.picks.every((n) => n > 0)).toBe(true);

    // The same client and nodes through plain Traefik (sticky cookie, no middleware).
    stack.writeDynamic({ plugin: false });
    await stack.waitMiddleware(false, 15_000);
    try {
      const plain = await runRustTaskClient({
        url: `${lb.base}/mcp`,
        tasks: 6,
        tool: "slow",
        ms: 400,
        maxPolls: 40,
        callPrefix: "plain-",
      });
      report.push(line("plain Traefik, L4 balancer", plain));
    } finally {
      stack.writeDynamic({ plugin: true });
      await stack.waitMiddleware(true, 15_000);
    }
  }, 300_000);

  it("created on one replica, every poll, update and cancel on the other: 0 failed requests", async () => {
    const [one, two] = stack.replicas;
    const ask = await runRustTaskClient({
      url: one!.mcpUrl,
      pollUrl: two!.mcpUrl,
      tasks: 6,
      tool: "ask",
      answer: "ada",
      callPrefix: "ask-",
    });
    report.push(line("plugin, ask (tasks/update) 1 -> 2", ask));
    expect(failedCalls(ask)).toBe("");
    expect(ask.summary.completed).toBe(6);
    expect(ask.summary.byMethod["tasks/update"]?.calls).toBeGreaterThanOrEqual(6);
    const slow = await runRustTaskClient({
      url: two!.mcpUrl,
      pollUrl: one!.mcpUrl,
      tasks: 6,
      tool: "slow",
      ms: 300,
      cancelEvery: 3,
      callPrefix: "x-",
    });
    report.push(line("plugin, slow 2 -> 1", slow));
    expect(failedCalls(slow)).toBe("");
    expect(slow.summary.completed + slow.summary.cancelled).toBe(6);
  }, 300_000);

  /**
   * Long tasks, spread over the nodes by the edge (a tools/call has no handle: it goes to an up node).
   * First every replica's view must call every node up, and its plugin instances must have re-read
   * it: a node a test brought back is otherwise up in one replica's view and still gone in the
   * other's, which answers its new tasks with -32602.
   */
  async function createLongTasks(n: number): Promise<string[]> {
    await stack.waitViewsUp();
    await sleep(3 * VIEW_REFRESH_MS);
    const handles: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = await post2026(stack.replicas[i % 2]!.mcpUrl, {
        method: "tools/call",
        mcpName: "slow",
        params: { name: "slow", arguments: { ms: 120_000 } },
        headers: { [CALL_ID_HEADER]: nextCall("create-") },
      });
      const m = messageOf(r.body);
      expect(m.result?.resultType, r.body).toBe("task");
      handles.push(m.result!.taskId as string);
    }
    return handles;
  }

  interface Poll {
    call: string;
    replica: number;
    /** The replica's polling round: a round's polls leave together, so they are not ordered among themselves. */
    round: number;
    handle: string;
    sentAt: number;
    /** When its answer arrived. */
    doneAt: number;
    status: number;
    edge: string | undefined;
    code: number | undefined;
    taskStatus: unknown;
  }
  interface Plain {
    call: string;
    replica: number;
    sentAt: number;
    /** When its answer arrived. */
    doneAt: number;
    ok: boolean;
  }

  /**
   * Polls every handle through both replicas, and sends 2026 requests without a handle (whoami)
   * through either, every 100 ms, while `disrupt` runs (and `settleMs` after it).
   */
  async function pollThrough(handles: string[], disrupt: () => Promise<void>, settleMs: number) {
    const polls: Poll[] = [];
    const plains: Plain[] = [];
    let stop = false;
    const pollLoop = async (replica: number) => {
      for (let round = 0; !stop; round++) {
        await Promise.all(
          handles.map(async (handle) => {
            const call = nextCall(`poll${replica}-`);
            const sentAt = Date.now();
            const r = await post2026(stack.replicas[replica]!.mcpUrl, {
              method: "tasks/get",
              mcpName: handle,
              params: { taskId: handle },
              headers: { [CALL_ID_HEADER]: call },
            });
            const m = r.status === 200 ? messageOf(r.body) : undefined;
            polls.push({
              call,
              replica,
              round,
              handle,
              sentAt,
              doneAt: Date.now(),
              status: r.status,
              edge: header(r, "mcp-affinity"),
              code: m?.error?.code,
              taskStatus: m?.result?.status,
            });
          }),
        );
        await sleep(100);
      }
    };
    const plainLoop = async () => {
      for (let i = 0; !stop; i++) {
        const replica = i % 2;
        const call = nextCall("whoami-");
        const sentAt = Date.now();
        const r = await post2026(stack.replicas[replica]!.mcpUrl, {
          method: "tools/call",
          mcpName: "whoami",
          params: { name: "whoami", arguments: {} },
          headers: { [CALL_ID_HEADER]: call },
        });
        const ok = r.status === 200 && messageOf(r.body).result?.resultType === "complete";
        plains.push({ call, replica, sentAt, doneAt: Date.now(), ok });
        await sleep(50);
      }
    };
    const loops = [pollLoop(0), pollLoop(1), plainLoop()];
    await sleep(1500);
    await disrupt();
    await sleep(settleMs);
    stop = true;
    await Promise.all(loops);
    return { polls, plains };
  }

  /**
   * What a spec client may see of the tasks of a node that went away at `since`: before, its node's
   * answers (a poll in flight at `since` may also get the 502 or -32602 of after); after, a Traefik
   * 502 while nothing answers at its address, then only -32602 (200):
   * the edge's once the view knows the incarnation gone, or the node's own when it came back under
   * the same name before the sidecar could tell (a server without the node library reports no boot,
   * so a restart faster than a probe is invisible to the edge). With `edge`, the edge must answer.
   * "After" is a later polling round than the one that saw the first -32602: the polls of one round
   * leave together, and while a restarted node binds its port, or while the replica's plugin
   * instances re-read the view, polls of one round can meet either side of the change.
   * Returns each replica's first -32602 (ms since epoch); failures go into `failures`.
   */
  function judgeGoneTasks(
    polls: Poll[],
    handles: Set<string>,
    since: number,
    failures: string[],
    edge: boolean,
  ): number[] {
    const firstLost: number[] = [];
    for (const replica of [0, 1]) {
      const mine = polls
        .filter((p) => p.replica === replica && handles.has(p.handle))
        .sort((a, b) => a.sentAt - b.sentAt);
      const isLost = (p: Poll) => p.status === 200 && p.code === -32602 && (!edge || p.edge === "handle-lost");
      const lost = mine.filter((p) => p.sentAt >= since && isLost(p));
      const after = mine
        .filter((p) => p.sentAt >= since)
        .map((p) => `${p.status}/${p.code ?? p.taskStatus}/${p.edge ?? "-"}`);
      expect(
        lost.length,
        `replica ${replica + 1}: -32602 for the gone node's tasks; polls after: ${after.join(" ")}`,
      ).toBeGreaterThan(0);
      const first = lost[0]!;
      firstLost[replica] = first.sentAt;
      const working = (p: Poll) => p.status === 200 && p.taskStatus === "working";
      for (const p of mine) {
        if (p.doneAt < since) {
          if (!working(p)) failures.push(`${p.call} before: ${JSON.stringify(p)}`);
        } else if (p.sentAt < since) {
          // In flight when the node went away: its answer, Traefik's 502, or a -32602.
          if (!working(p) && p.status !== 502 && !(p.status === 200 && p.code === -32602))
            failures.push(`${p.call} in flight: ${JSON.stringify(p)}`);
        } else if (p.round > first.round) {
          if (!isLost(p)) failures.push(`${p.call} after the first -32602: ${JSON.stringify(p)}`);
        } else if (p.status !== 502 && !(p.status === 200 && p.code === -32602)) {
          failures.push(`${p.call} while the node was away: ${JSON.stringify(p)}`);
        }
      }
    }
    return firstLost;
  }

  /**
   * Requests without a handle that failed because they were at `node` when it went away (in
   * flight at `since`) or left for it before their replica's view could know it gone.
   */
  function judgePlains(plains: Plain[], node: NodePart, since: number, firstEdge: number[]): Plain[] {
    const failed: Plain[] = [];
    for (const q of plains.filter((q) => !q.ok)) {
      const excused = q.doneAt >= since && q.sentAt < firstEdge[q.replica]! + VIEW_REFRESH_MS;
      const rows = rowsOf(stack, [q.call]);
      if (excused && rows.some((r) => r.includes(node.url))) failed.push(q);
    }
    return failed;
  }

  it("a killed node: its tasks get -32602 from the edge on both replicas; other tasks and requests without a handle see no error", async () => {
    const handles = await createLongTasks(9);
    const byNode = new Map<NodePart, string[]>();
    for (const h of handles) byNode.set(nodeOf(h)!, [...(byNode.get(nodeOf(h)!) ?? []), h]);
    expect(byNode.size).toBe(3);
    const victim = stack.nodes[1]!;
    let killedAt = Infinity;
    const { polls, plains } = await pollThrough(
      handles,
      async () => {
        killedAt = Date.now();
        await victim.kill();
      },
      4000,
    );
    const victimHandles = new Set(byNode.get(victim));
    const failures: string[] = [];
    // Tasks of live nodes: every poll answered by their node, the task still working.
    for (const p of polls.filter((p) => !victimHandles.has(p.handle)))
      if (p.status !== 200 || p.code !== undefined || p.taskStatus !== "working")
        failures.push(`${p.call}: ${JSON.stringify(p)}`);
    const firstEdge = judgeGoneTasks(polls, victimHandles, killedAt, failures, true);
    for (const replica of [0, 1]) {
      const between = polls.filter(
        (p) =>
          p.replica === replica &&
          victimHandles.has(p.handle) &&
          p.sentAt >= killedAt &&
          p.sentAt < firstEdge[replica]!,
      );
      report.push(
        `kill: replica ${replica + 1} answers the killed node's tasks with -32602 from ${firstEdge[replica]! - killedAt} ms after the kill ` +
          `(${between.length} polls in between reached Traefik's balancer)`,
      );
    }
    const excused = judgePlains(plains, victim, killedAt, firstEdge);
    for (const q of plains.filter((q) => !q.ok && !excused.includes(q)))
      failures.push(`${q.call}: ${JSON.stringify(q)} ${rowsOf(stack, [q.call]).join(" | ")}`);
    report.push(
      `kill: ${plains.length} requests without a handle, ${excused.length} were at the killed node or reached it before the view told`,
    );
    expect(
      failures,
      rowsOf(
        stack,
        failures.map((f) => f.split(":")[0]!),
      ).join("\n"),
    ).toEqual([]);
    await victim.start();
  }, 120_000);

  it("a rolling restart of every node: each node's tasks end with -32602 (the edge's, or the restarted node's own), nothing else fails; new tasks complete after it", async () => {
    const handles = await createLongTasks(9);
    const restartedAt = new Map<NodePart, number>();
    const { polls, plains } = await pollThrough(
      handles,
      async () => {
        for (const node of stack.nodes) {
          restartedAt.set(node, Date.now());
          await node.restart();
          await sleep(1000);
        }
      },
      3000,
    );
    const failures: string[] = [];
    let excusedPlains: Plain[] = [];
    expect(new Set(handles.map(nodeOf)).size).toBeGreaterThanOrEqual(2);
    for (const node of stack.nodes) {
      const mine = new Set(handles.filter((h) => nodeOf(h) === node));
      if (mine.size === 0) continue;
      const since = restartedAt.get(node)!;
      const firstLost = judgeGoneTasks(polls, mine, since, failures, false);
      const byEdge = polls.filter((p) => mine.has(p.handle) && p.edge === "handle-lost").length;
      report.push(
        `rolling restart: ${node.name}'s tasks get -32602 from ${Math.min(...firstLost) - since} ms after its restart began ` +
          `(${byEdge} answers from the edge, the rest from the restarted node)`,
      );
      const firstEdge = firstLost;
      excusedPlains = [...excusedPlains, ...judgePlains(plains, node, since, firstEdge)];
    }
    for (const q of plains.filter((q) => !q.ok && !excusedPlains.includes(q)))
      failures.push(`${q.call}: ${JSON.stringify(q)} ${rowsOf(stack, [q.call]).join(" | ")}`);
    report.push(
      `rolling restart: ${plains.length} requests without a handle, ${excusedPlains.length} were at a restarting node or reached it before the view told`,
    );
    expect(
      failures,
      rowsOf(
        stack,
        failures.map((f) => f.split(":")[0]!),
      ).join("\n"),
    ).toEqual([]);
    const after = await runRustTaskClient({
      url: `${lb.base}/mcp`,
      tasks: 6,
      tool: "slow",
      ms: 300,
      callPrefix: "after-",
    });
    report.push(line("plugin, after the rolling restart", after));
    expect(failedCalls(after)).toBe("");
    expect(after.summary.completed).toBe(6);
  }, 180_000);
});

// Multi round-trip requests: a server on the Python SDK 2.x seals requestState with a key of its own
// process, so a retry that reaches another node fails; the edge wraps the state it hands out and
// routes the retry by it.
describe("requestState retries on three Python SDK 2.x nodes behind two Traefik replicas", () => {
  let stack: Stack;
  let lb: L4Balancer;
  const report: string[] = [];

  beforeAll(async () => {
    stack = await startStack({ name: "e2e-mrtr", nodeKind: "python-mrtr", nodes: 3, replicas: 2 });
    lb = await startL4Balancer({ targets: stack.replicas.map((r) => ({ host: "127.0.0.1", port: r.ports.http })) });
  }, 180_000);

  afterAll(async () => {
    if (report.length > 0) console.log(["", "requestState retries through the edge:", ...report].join("\n"));
    await lb?.close();
    await stack?.stop();
  });

  const line = (name: string, run: MrtrClientRun) =>
    `${name.padEnd(34)} requests ${String(run.summary.requests).padStart(4)}  failed ${String(run.summary.failedRequests).padStart(4)}  ` +
    `round trips completed ${run.summary.completed}/${run.summary.calls}, nodes ${JSON.stringify(run.summary.nodes)}`;

  it("every retry lands on the node that issued its state: through the L4 balancer, and issued on one replica, retried on the other; plain Traefik beside it", async () => {
    const l4 = await runRequestStateClient({ url: `${lb.base}/mcp`, calls: 12, callPrefix: "mrtr-l4-" });
    report.push(line("plugin, L4 balancer", l4));
    expect(failedCalls(l4)).toBe("");
    expect(l4.summary.completed).toBe(12);
    expect(Object.keys(l4.summary.nodes).length).toBeGreaterThanOrEqual(2);
    const [one, two] = stack.replicas;
    const across = await runRequestStateClient({
      url: one!.mcpUrl,
      retryUrl: two!.mcpUrl,
      calls: 6,
      callPrefix: "mrtr-x-",
    });
    report.push(line("plugin, issued 1, retried 2", across));
    expect(failedCalls(across)).toBe("");
    expect(across.summary.completed).toBe(6);

    stack.writeDynamic({ plugin: false });
    await stack.waitMiddleware(false, 15_000);
    try {
      const plain = await runRequestStateClient({ url: `${lb.base}/mcp`, calls: 12, callPrefix: "mrtr-plain-" });
      report.push(line("plain Traefik, L4 balancer", plain));
    } finally {
      stack.writeDynamic({ plugin: true });
      await stack.waitMiddleware(true, 15_000);
    }
  }, 300_000);
});
