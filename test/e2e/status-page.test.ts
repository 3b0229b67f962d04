// The sidecar's status page in headless Chromium (Debian's package, driven by playwright-core),
// against a running stack: Redis, the sidecar, three reference nodes, Traefik with the plugin.
// The page must show live figures: nodes and states, sessions per node, the decisions chart, the
// view age; a screenshot is kept under .run/.
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../../dev/paths.ts";
import { sleep, waitUntil } from "../../dev/poll.ts";
import { startStack, type Stack } from "../../dev/stack.ts";
import { rawCall } from "../../dev/mcp-client.ts";
import { connectSdk, type SdkSession } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let stack: Stack;
let browser: Browser;
let page: Page;
const sessions: SdkSession[] = [];
const pageErrors: string[] = [];

interface NodeRow {
  node: string;
  name: string;
  state: string;
  sessions: number;
}
const nodeRows = (p: Page): Promise<NodeRow[]> =>
  p.$$eval("#nodes tbody tr[data-node]", (trs) =>
    trs.map((tr) => ({
      node: (tr as HTMLElement).dataset.node!,
      name: (tr as HTMLElement).dataset.name!,
      state: (tr as HTMLElement).dataset.state!,
      sessions: Number((tr as HTMLElement).dataset.sessions),
    })),
  );

/** Calls through Traefik that did not get their answer: each fails the test. */
const failedCalls: string[] = [];
/** One cookie-less tools/call per session through Traefik: the plugin pins each by its session id. */
async function traffic(): Promise<number> {
  const r = await Promise.all(
    sessions.map((s) =>
      rawCall(stack.httpBase, s.sessionId, "counter", { timeoutMs: 8000 }).then(
        (x) =>
          x.status === 200 && /^\d+$/.test(x.text ?? "")
            ? true
            : (failedCalls.push(`${x.status} ${String(x.body).slice(0, 120)}`), false),
        (err) => (failedCalls.push(String((err as Error).message)), false),
      ),
    ),
  );
  return r.filter(Boolean).length;
}

const newSession = (): Promise<SdkSession> => connectSdk(stack.mcpUrl);
/** The live sessions the page must show: exactly ours. */
const expectedSessions = (n: number) => n === sessions.length;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run node scripts/ensure-deps.mjs --chromium`);
  stack = await startStack({ name: "e2e-status", nodes: 3 });
  for (let i = 0; i < 6; i++) sessions.push(await newSession());
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
});

afterAll(async () => {
  await browser?.close();
  for (const s of sessions) await s.end().catch(() => {});
  await stack?.stop();
});

describe("status page", () => {
  it("is served by the sidecar with a script, and no build step", async () => {
    const res = await fetch(`${stack.sidecarUrl}/status`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(await res.text()).toContain('<script src="status.js">');
    const js = await fetch(`${stack.sidecarUrl}/status.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toMatch(/javascript/);
    // HEAD answers as GET does, without a body; other methods are refused by name.
    for (const path of ["/status", "/status.js", "/metrics"]) {
      const head = await fetch(`${stack.sidecarUrl}${path}`, { method: "HEAD" });
      expect(head.status, path).toBe(200);
      expect(await head.text(), path).toBe("");
      const post = await fetch(`${stack.sidecarUrl}${path}`, { method: "POST" });
      expect(post.status, path).toBe(405);
      expect(post.headers.get("allow"), path).toBe("GET, HEAD");
    }
  });

  it("shows the nodes, their states, sessions per node and the view age", async () => {
    await page.goto(`${stack.sidecarUrl}/status`);
    const rows = await waitUntil(
      "three up nodes holding the six sessions on the page",
      async () => {
        const r = await nodeRows(page);
        return r.length === 3 &&
          r.every((x) => x.state === "up") &&
          expectedSessions(r.reduce((a, x) => a + x.sessions, 0))
          ? r
          : null;
      },
      15_000,
      200,
    );
    expect(rows.map((r) => r.node).sort()).toEqual(stack.nodes.map((n) => n.url).sort());
    // Shown by name (from the node's heartbeat), the URL beneath it.
    for (const n of stack.nodes) {
      expect(rows.find((r) => r.node === n.url)!.name).toBe(n.name);
      expect(await page.textContent(`#nodes tr[data-node="${n.url}"] td.node`)).toBe(`${n.name}${n.url}`);
    }
    expect(expectedSessions(Number((await page.textContent("#sessions-total"))!.replace(/\D/g, "")))).toBe(true);
    const age = Number(await page.getAttribute("#view-age", "data-seconds"));
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(stack.timing.staleAfterMs / 1000);
    expect(await page.textContent("#ready")).toBe("ready");
    expect(await page.textContent("#registry")).toBe("registry up");
  });

  it("draws edge decisions over time from live traffic", async () => {
    // Keep cookie-less traffic flowing while the page polls: the plugin pins every call and
    // reports its counts to the sidecar about once a second.
    let stop = false;
    let answered = 0;
    const load = (async () => {
      while (!stop) {
        answered += await traffic();
        await sleep(50);
      }
    })();
    try {
      await waitUntil(
        "pin decisions in the table and at least three chart points",
        async () => {
          const points = Number(await page.getAttribute("#decisions", "data-points"));
          const pinned = await page
            .$eval('#decision-totals tr[data-reason="pin"] td:nth-child(2)', (td) =>
              Number(td.textContent!.replace(/\D/g, "")),
            )
            .catch(() => 0);
          return points >= 3 && pinned > 0;
        },
        20_000,
        250,
      );
    } finally {
      stop = true;
      await load;
    }
    expect(answered).toBeGreaterThan(0);
    expect(failedCalls).toEqual([]);
    // The chart has ink where the pin rate is drawn (not just axes).
    const painted = await page.$eval("#decisions", (c) => {
      const canvas = c as HTMLCanvasElement;
      const d = canvas.getContext("2d")!.getImageData(60, 10, canvas.width - 70, canvas.height - 40).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3]! > 0 && !(d[i] === d[i + 1] && d[i + 1] === d[i + 2])) n++;
      return n;
    });
    expect(painted).toBeGreaterThan(100);
    expect(await page.textContent("#legend")).toContain("pin");
  });

  it("follows changes live: new sessions and a node that goes down", async () => {
    for (let i = 0; i < 3; i++) sessions.push(await newSession());
    await waitUntil(
      "the new sessions on the page",
      async () => expectedSessions(Number((await page.textContent("#sessions-total"))!.replace(/\D/g, ""))),
      10_000,
      200,
    );

    const victim = stack.nodes[2]!;
    victim.pause(); // same process, same boot, answers nothing: Traefik's health check marks it DOWN
    try {
      await waitUntil(
        `${victim.url} shown down`,
        async () =>
          (await nodeRows(page)).find((r) => r.node === victim.url && (r.state === "down" || r.state === "gone")),
        20_000,
        250,
      );
    } finally {
      victim.resume();
    }
    await waitUntil(
      `${victim.url} shown up again`,
      async () => (await nodeRows(page)).find((r) => r.node === victim.url && r.state === "up"),
      20_000,
      250,
    );
  });

  it("takes a screenshot and saw no script errors", async () => {
    const dir = join(ROOT, ".run", "e2e-status");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "status-page.png");
    await page.screenshot({ path: file, fullPage: true });
    expect(statSync(file).size).toBeGreaterThan(10_000);
    expect(await page.isVisible("#error")).toBe(false);
    expect(pageErrors).toEqual([]);
  });

  it("is readable at phone width: nothing wider than the screen", async () => {
    const phone = await browser.newPage({
      viewport: { width: 360, height: 740 },
      deviceScaleFactor: 2,
      isMobile: true,
    });
    try {
      await phone.goto(`${stack.sidecarUrl}/status`);
      await waitUntil("nodes on the phone page", async () => (await nodeRows(phone)).length === 3, 10_000, 200);
      const widths = await phone.evaluate(() => ({
        page: document.documentElement.scrollWidth,
        widest: Math.max(
          ...[...document.querySelectorAll("section, table, canvas, header")].map(
            (e) => e.getBoundingClientRect().right,
          ),
        ),
        tileFont: parseFloat(getComputedStyle(document.querySelector(".tile .v")!).fontSize),
      }));
      expect(widths.page).toBeLessThanOrEqual(360);
      expect(widths.widest).toBeLessThanOrEqual(360);
      expect(widths.tileFont).toBeGreaterThanOrEqual(16);
      const dir = join(ROOT, ".run", "e2e-status");
      await phone.screenshot({ path: join(dir, "status-page-phone.png"), fullPage: true });
    } finally {
      await phone.close();
    }
  });

  it("when /metrics cannot be read: a banner, no green pill, the old figures greyed out; then back", async () => {
    await waitUntil("the page current", async () => (await page.textContent("#ready")) === "ready", 10_000, 200);
    await stack.sidecar!.kill();
    try {
      await waitUntil("the error banner", () => page.isVisible("#error"), 10_000, 200);
      expect(await page.textContent("#error")).toMatch(/^Cannot read the sidecar's metrics: .*Figures below are from /);
      expect(await page.textContent("#ready")).toBe("ready: unknown");
      expect(await page.textContent("#registry")).toBe("registry: unknown");
      const look = await page.evaluate(() => ({
        pills: [...document.querySelectorAll("header .pill")].map((p) => getComputedStyle(p).backgroundColor),
        ok: getComputedStyle(document.documentElement).getPropertyValue("--ok").trim(),
        mainOpacity: Number(getComputedStyle(document.querySelector("main")!).opacity),
        mainFilter: getComputedStyle(document.querySelector("main")!).filter,
      }));
      expect(look.pills).toHaveLength(2);
      for (const bg of look.pills) expect(bg).not.toBe("rgb(31, 138, 76)"); // --ok
      expect(look.ok).toBe("#1f8a4c");
      expect(look.mainOpacity).toBeLessThan(1);
      expect(look.mainFilter).toContain("grayscale");
      await page.screenshot({ path: join(ROOT, ".run", "e2e-status", "status-page-unreachable.png"), fullPage: true });
    } finally {
      await stack.startSidecar();
    }
    await waitUntil(
      "the page current again",
      async () => (await page.textContent("#ready")) === "ready" && !(await page.isVisible("#error")),
      15_000,
      200,
    );
    expect(await page.evaluate(() => document.body.classList.contains("stale"))).toBe(false);
  });
});
