"""The multi round-trip (`requestState`) client of the tests, on the official Python `mcp` 2.x package.

For each of `--calls` calls, one at a time: `tools/call confirm` on `--url`, which must answer
`input_required` with a `requestState`; then the retry (the same call with the answer in
`inputResponses` and the state echoed in `requestState`) on `--retry-url` (default `--url`), which
must complete and name its node. Every HTTP request goes on a new connection and carries its own
`X-E2e-Call` id.

Prints one JSON line per HTTP request ("ev": "call": call id, JSON-RPC method, round ("first" or
"retry"), HTTP status, JSON-RPC error code and message, the node a result names), one per call
("ev": "mrtr"), and a summary ("ev": "summary"). Exits 1 when a request or a call failed.

    .venv-mcp2/bin/python test/clients/python_request_state_client.py --url http://127.0.0.1:7201/mcp --calls 10
"""

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from contextlib import AsyncExitStack

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ElicitRequest, ElicitResult, InputRequiredResult, TextContent

CALL_ID_HEADER = "X-E2e-Call"
PROTOCOL_VERSION = "2026-07-28"


class Exchanges:
    """The HTTP requests made since the last `take()`: call id, JSON-RPC method, HTTP status."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ids = itertools.count(1)
        self.items: list[dict] = []

    async def on_request(self, request: httpx2.Request) -> None:
        cid = f"{self.prefix}-{next(self.ids)}"
        request.headers[CALL_ID_HEADER] = cid
        rpc = request.method
        try:
            rpc = json.loads(request.content).get("method", rpc) if request.content else rpc
        except (ValueError, AttributeError):
            pass
        self.items.append({"call": cid, "method": rpc, "status": None, "contentType": None})

    async def on_response(self, response: httpx2.Response) -> None:
        cid = response.request.headers.get(CALL_ID_HEADER)
        for x in reversed(self.items):
            if x["call"] == cid:
                x["status"] = response.status_code
                x["contentType"] = (response.headers.get("content-type") or "").split(";")[0] or None
                break

    def take(self) -> list[dict]:
        items, self.items = self.items, []
        return items


def http_client(exchanges: Exchanges) -> httpx2.AsyncClient:
    # No keep-alive: each request opens its own connection (an L4 balancer may pick another proxy).
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(30.0),
        limits=httpx2.Limits(max_keepalive_connections=0),
        event_hooks={"request": [exchanges.on_request], "response": [exchanges.on_response]},
    )


async def on_elicit(_context, _params) -> ElicitResult:
    """Declares the elicitation capability (the server may only ask what the client declared); the
    input requests are answered by `answer()`, by hand, so the retry's requestState is in view."""
    return ElicitResult(action="accept", content={"confirm": True})


def node_of(result: CallToolResult) -> str | None:
    for c in result.content:
        if isinstance(c, TextContent):
            try:
                return json.loads(c.text).get("node")
            except ValueError:
                return None
    return None


def answer(result: InputRequiredResult) -> dict:
    """The answers to the input requests: every elicitation is accepted with confirm=true."""
    out = {}
    for key, request in (result.input_requests or {}).items():
        if not isinstance(request, ElicitRequest):
            raise ValueError(f"cannot answer a {request.method} input request")
        out[key] = ElicitResult(action="accept", content={"confirm": True})
    return out


class Run:
    def __init__(self, exchanges: Exchanges) -> None:
        self.t0 = time.monotonic()
        self.exchanges = exchanges
        self.calls = 0
        self.failed_calls = 0

    def emit(self, i: int, round_: str, t0: float, outcome: dict) -> None:
        """One line per HTTP request the SDK call made (it may list the tools to check a result's schema);
        the outcome belongs to the last `tools/call`."""
        items = self.exchanges.take() or [{"call": None, "method": "tools/call", "status": None, "contentType": None}]
        last = max(n for n, x in enumerate(items) if x["method"] == "tools/call") if any(
            x["method"] == "tools/call" for x in items
        ) else len(items) - 1
        for n, x in enumerate(items):
            o = outcome if n == last else {}
            status = x["status"]
            ok = status is not None and 200 <= status < 300 and not o.get("code") and not o.get("error")
            self.calls += 1
            self.failed_calls += 0 if ok else 1
            line = {
                "ev": "call",
                **x,
                "i": i,
                "round": round_,
                "code": o.get("code"),
                "message": o.get("message"),
                "error": o.get("error"),
                "resultType": o.get("resultType"),
                "node": o.get("node"),
                "ok": ok,
                "at": time.time() * 1000,
                "ms": round((time.monotonic() - t0) * 1000, 1),
            }
            print(json.dumps(line), flush=True)


async def call(client: Client, **kw) -> tuple[object, dict]:
    """One `tools/call confirm` through the SDK's session: the result and the line's outcome."""
    try:
        result = await client.session.call_tool("confirm", {}, allow_input_required=True, **kw)
    except MCPError as e:
        return None, {"code": e.code, "message": e.message}
    except Exception as e:  # noqa: BLE001 - any other failure is reported, not hidden
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        return None, {"error": f"{type(e).__name__}: {e}"}
    if isinstance(result, InputRequiredResult):
        return result, {"resultType": "input_required"}
    return result, {"resultType": "complete", "node": node_of(result)}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--retry-url", default=None)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--call-prefix", default=f"py2{os.getpid()}")
    args = parser.parse_args()
    retry_url = args.retry_url or args.url
    exchanges = Exchanges(args.call_prefix)
    run = Run(exchanges)
    ok_calls = 0
    nodes: dict[str, int] = {}
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(http_client(exchanges))

        async def connect(url: str) -> Client:
            # A version pin: no server/discover probe, every request is self-contained.
            transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
            return await stack.enter_async_context(Client(transport, mode=PROTOCOL_VERSION, elicitation_callback=on_elicit))

        first_client = await connect(args.url)
        retry_client = first_client if retry_url == args.url else await connect(retry_url)
        for i in range(1, args.calls + 1):
            t0 = time.monotonic()
            first, outcome = await call(first_client)
            if not isinstance(first, InputRequiredResult) or not first.request_state:
                outcome.setdefault("error", "expected input_required with a requestState")
                run.emit(i, "first", t0, outcome)
                print(json.dumps({"ev": "mrtr", "i": i, "ok": False, "error": "no input_required"}), flush=True)
                continue
            run.emit(i, "first", t0, outcome)
            t0 = time.monotonic()
            final, outcome = await call(retry_client, input_responses=answer(first), request_state=first.request_state)
            ok = isinstance(final, CallToolResult) and not final.is_error and outcome.get("node") is not None
            if not ok and not outcome.get("code"):
                outcome.setdefault("error", "the retry did not complete")
            run.emit(i, "retry", t0, outcome)
            if ok:
                ok_calls += 1
                nodes[outcome["node"]] = nodes.get(outcome["node"], 0) + 1
            line = {"ev": "mrtr", "i": i, "ok": ok, "node": outcome.get("node"), "code": outcome.get("code")}
            print(json.dumps(line), flush=True)
    summary = {
        "ev": "summary",
        "calls": args.calls,
        "completed": ok_calls,
        "failed": args.calls - ok_calls,
        "requests": run.calls,
        "failedRequests": run.failed_calls,
        "nodes": nodes,
        "ms": round((time.monotonic() - run.t0) * 1000, 1),
    }
    print(json.dumps(summary), flush=True)
    return 0 if ok_calls == args.calls and run.failed_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
