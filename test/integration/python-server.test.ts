// The Python MCP test server (official Python SDK, no node library) through the TypeScript SDK client.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPythonServer, type TestServer as PythonServer } from "../support/test-server.ts";
import { connectClient, rawMcp } from "./node-redis-helper.ts";

let server: PythonServer;
beforeAll(async () => {
  server = await startPythonServer({ name: "py-test" });
});
afterAll(async () => {
  await server?.stop();
});

describe("python MCP test server", () => {
  it("counter is per session, whoami names the server and its boot; a restart changes the boot", async () => {
    const health = await (await fetch(`${server.url}/healthz`)).json();
    expect(health).toMatchObject({ status: "up", node: "py-test" });
    const a = await connectClient(server.url);
    const b = await connectClient(server.url);
    expect(a.sid).toMatch(/^[0-9a-f]{32}$/);
    expect(a.sid).not.toBe(b.sid);
    expect(await a.whoami()).toEqual({ node: "py-test", boot: health.boot });
    expect([await a.counter(), await a.counter(), await b.counter(), await a.counter()]).toEqual([1, 2, 1, 3]);
    await a.close();
    await b.close();

    const c = await connectClient(server.url);
    await server.restart();
    const after = await (await fetch(`${server.url}/healthz`)).json();
    expect(after.boot).not.toBe(health.boot);
    // The new process does not know the old session: the spec's answer is 404.
    const res = await rawMcp(server.url, "POST", c.sid, {
      jsonrpc: "2.0",
      id: 9,
      method: "tools/call",
      params: { name: "counter", arguments: {} },
    });
    expect(res.status).toBe(404);
    await c.close();
  });
});
