// The README's main job: `scripts/local-stack.ts` (what `npm start` runs after its install step) brings
// the stack up, prints the URLs, answers through Traefik, and stops every process on SIGTERM.
// Run on free ports so it never collides with a stack someone has open; one run on the sidecar's
// in-memory store (the path taken when redis-server is missing).
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { ownConnectionsFetch } from "../../dev/l4-balancer.ts";
import { freePort } from "../../dev/net.ts";
import { ROOT } from "../../dev/paths.ts";
import { sleep } from "../../dev/poll.ts";
import { connectSdk, report } from "./helpers.ts";

function pidsAlive(pids: number[]): number[] {
  return pids.filter((p) => {
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  });
}

/** Pids still alive a moment after the runner exited (an exiting child needs a few ms to be reaped). */
async function partsLeft(pids: number[]): Promise<string[]> {
  for (let i = 0; i < 40 && pidsAlive(pids).length; i++) await sleep(50);
  return pidsAlive(pids).map(
    (p) => `${p} ${spawnSync("ps", ["-o", "args=", "-p", String(p)], { encoding: "utf8" }).stdout.trim()}`,
  );
}

/** Child pids of `pid` (the stack's parts), from /proc. */
function childrenOf(pid: number): number[] {
  const r = spawnSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .map((l) => Number(l.trim()))
    .filter((n) => n > 0);
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** Free ports whose `+ shift` neighbours are free too (replica 2 listens there). */
async function freePorts(n: number, shift: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) {
    const p = await freePort();
    if (out.includes(p) || out.includes(p + shift) || out.includes(p - shift)) continue;
    if (shift === 0 || (p + shift <= 65535 && (await portFree(p + shift)))) out.push(p);
  }
  return out;
}

async function runStack(env: Record<string, string>) {
  const ports = await freePorts(9, env.MCPA_REPLICAS && env.MCPA_REPLICAS !== "1" ? 100 : 0);
  const vars = {
    MCPA_HTTP_PORT: String(ports[0]),
    MCPA_HTTPS_PORT: String(ports[1]),
    MCPA_API_PORT: String(ports[2]),
    MCPA_SIDECAR_PORT: String(ports[3]),
    MCPA_NODE_PORTS: `${ports[4]},${ports[5]},${ports[6]}`,
    MCPA_REDIS_PORT: String(ports[7]),
    MCPA_LB_PORT: String(ports[8]),
    ...env,
  };
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/local-stack.ts"], {
    cwd: ROOT,
    env: { ...process.env, ...vars },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const t0 = Date.now();
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (out.includes("Press Ctrl-C")) {
        clearInterval(timer);
        resolve();
      } else if (child.exitCode !== null || Date.now() - t0 > 140_000) {
        clearInterval(timer);
        reject(new Error(`the stack did not come up:\n${out}`));
      }
    }, 100);
  });
  return { child, out: () => out, exited, vars, upMs: Date.now() - t0 };
}

describe("npm start (scripts/local-stack.ts)", () => {
  it("brings the stack up on Redis, prints the URLs, serves MCP, and stops every part on SIGTERM", async () => {
    const s = await runStack({});
    const out = s.out();
    const mcpUrl = `http://127.0.0.1:${s.vars.MCPA_HTTP_PORT}/mcp`;
    expect(out).toContain(`MCP endpoint          ${mcpUrl}`);
    expect(out).toContain(`http://127.0.0.1:${s.vars.MCPA_SIDECAR_PORT}/metrics`);
    expect(out).toContain(`http://127.0.0.1:${s.vars.MCPA_API_PORT}/metrics`);
    expect(out).toContain("redis-server started by the stack");
    expect(out).toMatch(/Self-check: initialize, whoami and 3 counter calls .* counter 1,2,3/);
    const metrics = await fetch(`http://127.0.0.1:${s.vars.MCPA_SIDECAR_PORT}/metrics`).then((r) => r.text());
    expect(metrics).toContain("mcp_affinity_");
    const c = await connectSdk(mcpUrl);
    expect(await c.call("counter")).toBe("1");
    expect(await c.call("counter")).toBe("2");
    await c.end();

    const parts = childrenOf(s.child.pid!);
    expect(parts.length).toBeGreaterThanOrEqual(6); // redis, sidecar, 3 nodes, traefik
    const t0 = Date.now();
    s.child.kill("SIGTERM");
    expect(await s.exited).toBe(0);
    const stopMs = Date.now() - t0;
    expect(s.out()).toContain("npm start: stopped.");
    expect(await partsLeft(parts)).toEqual([]);
    report("npm start (redis)", { upMs: s.upMs, stopMs, parts: parts.length });
  }, 150_000);

  it("runs on the sidecar's in-memory store (MCPA_STORE=memory) with the two nodes MCPA_NODE_PORTS names", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const s = await runStack({ MCPA_STORE: "memory", MCPA_NODE_PORTS: `${p1},${p2}` });
    expect(s.out()).toContain("in-memory store inside the sidecar");
    expect(s.out()).toContain("the sidecar, 2 reference nodes and Traefik");
    expect(/Nodes\s+(.*)/.exec(s.out())![1]!.match(/http:\/\/127\.0\.0\.1:\d+/g)).toEqual([
      `http://127.0.0.1:${p1}`,
      `http://127.0.0.1:${p2}`,
    ]);
    expect(s.out()).toMatch(/Self-check: .* counter 1,2,3/);
    const c = await connectSdk(`http://127.0.0.1:${s.vars.MCPA_HTTP_PORT}/mcp`);
    for (let i = 1; i <= 5; i++) expect(await c.call("counter")).toBe(String(i));
    await c.end();
    const parts = childrenOf(s.child.pid!);
    expect(parts.length).toBeGreaterThanOrEqual(4); // sidecar, 2 nodes, traefik
    s.child.kill("SIGINT");
    expect(await s.exited).toBe(0);
    expect(await partsLeft(parts)).toEqual([]);
    report("npm start (memory)", { upMs: s.upMs, parts: parts.length });
  }, 150_000);

  it("MCPA_REPLICAS=2: two Traefik replicas with a sidecar each behind the TCP balancer, whose address is the MCP endpoint", async () => {
    const s = await runStack({ MCPA_REPLICAS: "2" });
    const out = s.out();
    const lb = `http://127.0.0.1:${s.vars.MCPA_LB_PORT}/mcp`;
    expect(out).toContain(`MCP endpoint          ${lb}`);
    expect(out).toContain(`${"traefik".padEnd(21)} http://127.0.0.1:${s.vars.MCPA_HTTP_PORT}/mcp`);
    expect(out).toContain(`${"traefik-2".padEnd(21)} http://127.0.0.1:${Number(s.vars.MCPA_HTTP_PORT) + 100}/mcp`);
    expect(out).toContain(`http://127.0.0.1:${Number(s.vars.MCPA_SIDECAR_PORT) + 100}/status`);
    expect(out).toMatch(/Self-check: .* counter 1,2,3/);
    // Users one after the other, each on its own connections: each may land on either replica.
    for (let i = 0; i < 10; i++) {
      const conn = ownConnectionsFetch();
      try {
        const c = await connectSdk(lb, undefined, { fetch: conn.fetch });
        for (let k = 1; k <= 3; k++) expect(await c.call("counter")).toBe(String(k));
        await c.end();
      } finally {
        await conn.close();
      }
    }
    const parts = childrenOf(s.child.pid!);
    expect(parts.length).toBeGreaterThanOrEqual(8); // redis, 2 sidecars, 3 nodes, 2 traefik
    s.child.kill("SIGTERM");
    expect(await s.exited).toBe(0);
    expect(await partsLeft(parts)).toEqual([]);
    report("npm start (2 replicas)", { upMs: s.upMs, parts: parts.length });
  });

  it("a bad setting: one line naming it, exit code 2", () => {
    for (const [k, v, needle] of [
      ["MCPA_HTTP_PORT", "80x", "MCPA_HTTP_PORT must be a port number"],
      ["MCPA_NODE_PORTS", "1,2,x", "MCPA_NODE_PORTS must be"],
      ["MCPA_STORE", "disk", "MCPA_STORE must be redis or memory"],
      ["MCPA_REPLICAS", "9", "MCPA_REPLICAS must be a number from 1 to 4"],
    ] as const) {
      const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/local-stack.ts"], {
        cwd: ROOT,
        env: { ...process.env, [k]: v },
        encoding: "utf8",
        timeout: 30_000,
      });
      expect(r.status, k).toBe(2);
      expect(r.stderr.trim().split("\n"), k).toHaveLength(1);
      expect(r.stderr, k).toContain(needle);
      expect(r.stderr, k).not.toMatch(/\n\s+at /);
    }
  });
});
