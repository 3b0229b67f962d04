"""A stateful Streamable HTTP MCP server on the official Python `mcp` package, without the node library.

It stands for "any MCP server" behind the edge: sessions are minted by the SDK (server-assigned
Mcp-Session-Id), state lives only in this process, nothing is written to the registry. Its tools
answer like the reference node's: `counter` returns the session's next integer (from 1) as text,
`whoami` returns {"node": <name>, "boot": <per-process boot id>} as compact JSON. GET /healthz
answers 200 once the server listens.

    .venv/bin/python test/servers/python_mcp_server.py --port 7101 --name py-a
"""

import argparse
import json
import logging
import uuid
import weakref

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse

BOOT = uuid.uuid4().hex


def build(name: str) -> FastMCP:
    # Behind a proxy the Host header is the proxy's: the SDK's DNS-rebinding check would refuse it.
    mcp = FastMCP(
        "python-mcp-test-server",
        stateless_http=False,
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    # One counter per session object: a misroute to another process shows as a counter reset.
    counters: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()

    @mcp.tool(description="Increments this session's in-memory counter and returns it")
    async def counter(ctx: Context) -> str:
        n = counters.get(ctx.session, 0) + 1
        counters[ctx.session] = n
        return str(n)

    @mcp.tool(description="Node name and boot id of the process serving this session")
    async def whoami() -> str:
        return json.dumps({"node": name, "boot": BOOT}, separators=(",", ":"))

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "up", "node": name, "boot": BOOT})

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    name = args.name or f"py-{args.port}"
    # The SDK logs every new session id at INFO: ids are secrets, keep them out of the logs.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    app = build(name).streamable_http_app()
    # Longer keep-alive than Traefik's idle timeout for backend connections (90 s), as the reference node.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=120)


if __name__ == "__main__":
    main()
