// A complete MCP node on the TypeScript SDK v1 (@modelcontextprotocol/sdk) behind mcp-affinity:
// 2025-era sessions whose ids carry a routing token, registered before the initialize answer.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { createAffinity, mountMcp, type RegistryOptions } from "../src/index.ts";

export async function startV1Node(registry: RegistryOptions, port = 0) {
  const http = createServer();
  await new Promise<void>((listening) => http.listen(port, "127.0.0.1", listening));
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const affinity = createAffinity({ nodeUrl: url, nodeName: "v1-node", registry });
  const mcp = mountMcp(http, affinity, {
    // One McpServer per session.
    createServer: () => {
      const server = new McpServer({ name: "v1-node", version: "1.0.0" });
      server.registerTool("hello", { description: "Says hello" }, async () => ({
        content: [{ type: "text", text: "hello from v1" }],
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
