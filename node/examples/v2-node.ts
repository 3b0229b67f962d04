// A complete MCP node on the TypeScript SDK v2 (@modelcontextprotocol/server, /node) behind
// mcp-affinity, serving both protocol eras: 2025-era sessions exactly as on v1, and 2026-07-28
// requests through the SDK's stateless handler.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/server";
import { createAffinity, type RegistryOptions } from "../src/index.ts";
import { mountMcpV2 } from "../src/v2.ts";

export async function startV2Node(registry: RegistryOptions, port = 0) {
  const http = createServer();
  await new Promise<void>((listening) => http.listen(port, "127.0.0.1", listening));
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const affinity = createAffinity({ nodeUrl: url, nodeName: "v2-node", registry });
  const mcp = mountMcpV2(http, affinity, {
    // One McpServer per 2025 session and per 2026 request (ctx.era says which).
    createServer: (ctx) => {
      const server = new McpServer({ name: "v2-node", version: "1.0.0" });
      server.registerTool("hello", { description: "Says hello" }, async () => ({
        content: [{ type: "text", text: `hello from v2 (${ctx.era})` }],
      }));
      return server;
    },
  });
  await affinity.ready();
  return {
    url,
    affinity,
    // On SIGTERM: drain, close the sessions, remove the heartbeat, then stop listening.
    async stop() {
      await mcp.shutdown();
      http.closeAllConnections();
      http.close();
    },
  };
}
