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

import argparse
import json
import logging
import uuid

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from starlette.requests import Request
from starlette.responses import JSONResponse

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    name = args.name or f"py2-{args.port}"
    logging.getLogger("mcp").setLevel(logging.WARNING)
    # Behind a proxy the Host header is the proxy's: the SDK's DNS-rebinding check would refuse it.
    app = build(name).streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    # Longer keep-alive than Traefik's idle timeout for backend connections (90 s), as the reference node.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=120)


if __name__ == "__main__":
    main()
