"""An MCP 2026-07-28 server on the official Python `mcp` 2.x package, without the node library.

It stands for "any server" that needs a multi round-trip request (SEP-2322): `confirm` first answers
`resultType: "input_required"` with an elicitation ("confirm") and a `requestState`, then completes
on the client's retry that echoes the state with the answer. The SDK's MCPServer seals every
`requestState` under a key generated at start and held only by this process (its default): a retry
that reaches another process fails with -32602, one that reaches this process completes.

Tools: `confirm` (see above; completes with {"node", "boot", "confirmed"} as compact JSON text),
`whoami` ({"node", "boot"}). GET /healthz answers {"status": "up", "node", "boot"} once it listens.

    .venv-mcp2/bin/python test/servers/python_request_state_server.py --port 7201 --name py2-a
"""

import json
import uuid

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from starlette.requests import Request
from starlette.responses import JSONResponse

from server_cli import parse_server_args, serve

BOOT = uuid.uuid4().hex
# The plaintext the server keeps across the round trip; the SDK seals it on the way out.
AWAITING = "awaiting-confirm"
CONFIRM_SCHEMA = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean", "description": "Proceed?"}},
    "required": ["confirm"],
}


def build(name: str) -> MCPServer:
    # No request_state_security: the SDK's default, a per-process key (what this server is for).
    mcp = MCPServer("python-request-state-test-server")

    def identity() -> dict:
        return {"node": name, "boot": BOOT}

    @mcp.tool(description="Node name and boot id of this process")
    async def whoami() -> str:
        return json.dumps(identity(), separators=(",", ":"))

    @mcp.tool(description="Asks the client to confirm (input_required with a requestState), completes on the retry")
    async def confirm(ctx: Context) -> str | InputRequiredResult:
        responses = ctx.input_responses
        if responses is None or "confirm" not in responses:
            ask = ElicitRequest(params=ElicitRequestFormParams(message="Proceed?", requested_schema=CONFIRM_SCHEMA))
            return InputRequiredResult(input_requests={"confirm": ask}, request_state=AWAITING)
        if ctx.request_state != AWAITING:
            raise ValueError(f"unexpected request state {ctx.request_state!r}")
        answer = responses["confirm"]
        confirmed = (
            isinstance(answer, ElicitResult) and answer.action == "accept" and bool((answer.content or {}).get("confirm"))
        )
        return json.dumps({**identity(), "confirmed": confirmed}, separators=(",", ":"))

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "up", **identity()})

    return mcp


def main() -> None:
    args = parse_server_args(__doc__, "py2")
    # Behind a proxy the Host header is the proxy's: the SDK's DNS-rebinding check would refuse it.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    serve(build(args.name).streamable_http_app(transport_security=security), args)


if __name__ == "__main__":
    main()
