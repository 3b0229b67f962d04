"""A stateful Streamable HTTP MCP server on the official Python `mcp` package, without the node library.

It stands for "any MCP server" behind the edge: sessions are minted by the SDK (server-assigned
Mcp-Session-Id), state lives only in this process, nothing is written to the registry. Its tools
answer like the reference node's: `counter` returns the session's next integer (from 1) as text,
`whoami` returns {"node": <name>, "boot": <per-process boot id>} as compact JSON. `ask`, `sample`
and `progress` send an elicitation, a sampling request and progress notifications to the client in
the middle of the call, on the call's own SSE stream: what the edge must route back to this process.
GET /healthz answers 200 once the server listens.

    .venv/bin/python test/servers/python_mcp_server.py --port 7101 --name py-a
"""

import asyncio
import json
import uuid
import weakref

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import SamplingMessage, TextContent
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from server_cli import parse_server_args, serve

BOOT = uuid.uuid4().hex
# Progress steps of the `progress` tool: 3 notifications 400 ms apart, 1.2 s in all.
PROGRESS_STEPS = 3
PROGRESS_EVERY_S = 0.4


class AskName(BaseModel):
    """The form of `ask`: one required string, `name`."""

    name: str


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

    # Context's helpers relate what they send to the call (related_request_id): the SDK then writes
    # it on the call's SSE stream, not on the session's GET stream.
    @mcp.tool(description="Asks the client for a name (elicitation) and greets it")
    async def ask(ctx: Context) -> str:
        answer = await ctx.elicit("What is your name?", AskName)
        return f"hello {answer.data.name}" if answer.action == "accept" else "declined"

    @mcp.tool(description='Asks the client\'s model to answer "ping" (sampling)')
    async def sample(ctx: Context) -> str:
        # Context has no sampling helper: the session's, related to this call by hand.
        reply = await ctx.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text="ping"))],
            max_tokens=16,
            related_request_id=ctx.request_id,
        )
        if not isinstance(reply.content, TextContent):
            raise ValueError(f"sampling answered {reply.content.type}, not text")
        return f"sampled: {reply.content.text}"

    @mcp.tool(description="Sends 3 progress notifications 400 ms apart (when given a progress token), then returns")
    async def progress(ctx: Context) -> str:
        for i in range(1, PROGRESS_STEPS + 1):
            await ctx.report_progress(i, PROGRESS_STEPS)  # a no-op without a progress token
            await asyncio.sleep(PROGRESS_EVERY_S)
        return "done"

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "up", "node": name, "boot": BOOT})

    return mcp


def main() -> None:
    args = parse_server_args(__doc__, "py")
    serve(build(args.name).streamable_http_app(), args)


if __name__ == "__main__":
    main()
