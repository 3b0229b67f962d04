// The sidecar's node probe against real sockets: it tells a process that is gone (refused) from
// one that does not answer (timeout) and from one that answers unhealthy.
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { createServer } from "node:http";
import { describe, expect, it } from "vitest";
import { probeNode } from "../../sidecar/src/probe.ts";

async function listen(handler: (status: number) => number) {
  const srv = createServer((req, res) => res.writeHead(handler(req.url === "/healthz" ? 200 : 404)).end());
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return { srv, url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` };
}

describe("probeNode", () => {
  it("ok on 2xx, unhealthy on any other status", async () => {
    const { srv, url } = await listen((s) => s);
    expect(await probeNode(url, "/healthz", 1000)).toBe("ok");
    expect(await probeNode(url, "/other", 1000)).toBe("unhealthy");
    srv.close();
  });
  it("refused when nothing listens on the port any more", async () => {
    const { srv, url } = await listen((s) => s);
    await new Promise((r) => srv.close(r));
    expect(await probeNode(url, "/healthz", 1000)).toBe("refused");
  });
  it("timeout when the connection is accepted but nothing answers (a stopped process)", async () => {
    const silent = createTcpServer(() => {}); // accepts, never answers
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const t0 = performance.now();
    expect(await probeNode(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, "/healthz", 200)).toBe(
      "timeout",
    );
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    silent.close();
  });
  it("a timed-out probe kept open reports the late answer (a resumed process), once", async () => {
    let delay = 300;
    const srv = createServer((_req, res) => setTimeout(() => res.writeHead(200).end(), delay));
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const answers: Array<string | null> = [];
    let answered!: () => void;
    const got = new Promise<void>((r) => (answered = r));
    expect(await probeNode(url, "/healthz", 100, { maxMs: 2000, onAnswer: (r) => (answers.push(r), answered()) })).toBe(
      "timeout",
    );
    await got;
    expect(answers).toEqual(["ok"]);
    // No answer within maxMs: null.
    delay = 5000;
    const none = new Promise<string | null>((r) => void probeNode(url, "/healthz", 100, { maxMs: 200, onAnswer: r }));
    expect(await none).toBeNull();
    srv.closeAllConnections();
    srv.close();
  });
});
