"""The cookie-keeping MCP client of the end-to-end suite: the official Python `mcp` package over
httpx, which keeps cookies (here: Traefik's Secure `_mcp_backend` sticky cookie over TLS).

Runs N sessions at once, each `calls` counter calls, and prints one JSON document: per session the
node that served it (whoami), the counter values, errors, and what the cookie jar did (how many
requests carried the sticky cookie, how many responses set it). Session ids are printed only as a
SHA-256 tag (they are secrets).
"""

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import ssl
import sys
import time
from datetime import timedelta

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

COOKIE = "_mcp_backend"


def tag(session_id):
    return hashlib.sha256(session_id.encode("latin-1")).hexdigest()[:12] if session_id else None


async def one_session(url, ctx, calls):
    stats = {"requests": 0, "with_cookie": 0, "set_cookie": 0, "statuses": {}}

    async def on_request(request):
        stats["requests"] += 1
        if f"{COOKIE}=" in request.headers.get("cookie", ""):
            stats["with_cookie"] += 1

    async def on_response(response):
        stats["statuses"][str(response.status_code)] = stats["statuses"].get(str(response.status_code), 0) + 1
        if any(v.startswith(f"{COOKIE}=") for v in response.headers.get_list("set-cookie")):
            stats["set_cookie"] += 1

    jar_seen = {}

    def factory(headers=None, timeout=None, auth=None):
        client = httpx.AsyncClient(
            headers=headers,
            timeout=timeout or httpx.Timeout(30.0),
            auth=auth,
            verify=ctx,
            follow_redirects=True,
            event_hooks={"request": [on_request], "response": [on_response]},
        )
        jar_seen["client"] = client
        return client

    out = {"session": None, "node": None, "boot": None, "values": [], "errors": []}
    t0 = time.monotonic()
    try:
        # Short timeouts: an answer lost on the way back must fail the call, not hang the suite.
        async with streamablehttp_client(url, timeout=8, sse_read_timeout=8, httpx_client_factory=factory) as (read, write, get_id):
            async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=8)) as session:
                await session.initialize()
                out["session"] = tag(get_id())
                who = await session.call_tool("whoami", {})
                info = json.loads(who.content[0].text)
                out["node"], out["boot"] = info["node"], info["boot"]
                for _ in range(calls):
                    try:
                        r = await session.call_tool("counter", {})
                        if r.isError:
                            out["errors"].append(r.content[0].text if r.content else "tool error")
                        else:
                            out["values"].append(int(r.content[0].text))
                    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
                        out["errors"].append(f"{type(e).__name__}: {e}")
                client = jar_seen.get("client")
                out["jar"] = sorted(c.name for c in client.cookies.jar) if client else []
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"{type(e).__name__}: {e}")
    out["ms"] = round((time.monotonic() - t0) * 1000, 1)
    out["http"] = stats
    return out


CALL_ID_HEADER = "X-E2e-Call"
_call_ids = itertools.count(1)


def traced_client(ctx, exchanges):
    """An httpx client that stamps every request with a call id (Traefik's access log keeps it) and
    records each exchange: call id, JSON-RPC method, HTTP status (None: no answer)."""

    async def on_request(request):
        cid = f"py{os.getpid()}-{next(_call_ids)}"
        request.headers[CALL_ID_HEADER] = cid
        rpc = request.method
        try:
            rpc = json.loads(request.content).get("method", request.method) if request.content else request.method
        except Exception:  # noqa: BLE001
            pass
        exchanges.append({"call": cid, "rpc": rpc, "at": time.time() * 1000, "status": None})

    async def on_response(response):
        cid = response.request.headers.get(CALL_ID_HEADER)
        for x in reversed(exchanges):
            if x["call"] == cid:
                x["status"] = response.status_code
                x["ms"] = time.time() * 1000 - x["at"]
                break

    def factory(headers=None, timeout=None, auth=None):
        return httpx.AsyncClient(headers=headers, timeout=timeout or httpx.Timeout(30.0), auth=auth, verify=ctx, event_hooks={"request": [on_request], "response": [on_response]})

    return factory


def emit(ev):
    print(json.dumps(ev), flush=True)


def innermost(e):
    """The innermost error of an exception group (anyio task groups wrap the real one)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def describe(e):
    e = innermost(e)
    return f"{type(e).__name__}: {e}"


def call_id_of(e):
    """The call id of the HTTP request an httpx error is about (None for other errors)."""
    try:
        return innermost(e).request.headers.get(CALL_ID_HEADER)
    except (AttributeError, RuntimeError):
        return None


def is_missing(e):
    """The session is gone on the server (HTTP 404): the SDK reports it as a terminated session."""
    text = describe(e)
    return "404" in text or "terminated" in text.lower() or "not found" in text.lower()


async def events_session(url, ctx, s, calls, pause_s, reinit):
    """--events mode: one JSON line per operation ("at": wall clock ms), like the Go and Rust clients."""
    n = 1
    while n <= calls:
        at = time.time() * 1000
        who = None
        exchanges = []
        try:
            async with streamablehttp_client(url, timeout=8, sse_read_timeout=8, httpx_client_factory=traced_client(ctx, exchanges)) as (read, write, get_id):
                async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=8)) as session:
                    await session.initialize()
                    emit({"ev": "init", "s": s, "at": at, "ms": time.time() * 1000 - at, "session": tag(get_id())})
                    at = time.time() * 1000
                    who = json.loads((await session.call_tool("whoami", {})).content[0].text)
                    emit({"ev": "whoami", "s": s, "at": at, "ms": time.time() * 1000 - at, "node": who["node"], "boot": who["boot"]})
                    while n <= calls:
                        if n > 1:
                            await asyncio.sleep(pause_s)
                        at = time.time() * 1000
                        ev = {"ev": "call", "s": s, "n": n, "at": at, "node": who["node"], "session": tag(get_id())}
                        n += 1
                        try:
                            r = await session.call_tool("counter", {})
                            if r.isError:
                                ev["error"] = r.content[0].text if r.content else "tool error"
                            else:
                                ev["value"] = int(r.content[0].text)
                        except Exception as e:  # noqa: BLE001 - every failure is reported
                            ev["error"] = describe(e)
                            ev["missing"] = is_missing(e)
                        ev["ms"] = time.time() * 1000 - at
                        emit(ev)
                        if ev.get("missing") and reinit:
                            break  # a new session, as an application would
                    else:
                        return
        except Exception as e:  # noqa: BLE001
            if n > calls:
                # Every call made: an error while the SDK tears the session down is not one of ours.
                print(f"session {s}: teardown: {describe(e)}", file=sys.stderr)
                return
            # The SDK ended the whole session: on a call's error (e.g. an HTTP 502), or during its
            # setup (initialize, initialized, whoami). The HTTP exchanges that got no 2xx name why:
            # each by its call id (Traefik's access log has the same id).
            failed = [x for x in exchanges if x["status"] is None or x["status"] >= 400]
            ev = {"s": s, "at": at, "ms": time.time() * 1000 - at, "error": describe(e), "call": call_id_of(e), "failed": failed}
            if who is not None:
                emit({"ev": "call", "n": n - 1, "node": who["node"], **ev})
            else:
                emit({"ev": "init", **ev})
            return
        if not reinit:
            return


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--cafile", help="trust this certificate (the stack's self-signed one)")
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--events", action="store_true", help="print one JSON line per operation instead of one document")
    p.add_argument("--pause-ms", type=int, default=0)
    p.add_argument("--reinit", action="store_true", help="--events: replace a session the server reports missing (404)")
    a = p.parse_args()
    ctx = ssl.create_default_context(cafile=a.cafile) if a.cafile else True
    if a.events:
        await asyncio.gather(*(events_session(a.url, ctx, s, a.calls, a.pause_ms / 1000, a.reinit) for s in range(a.sessions)))
        emit({"ev": "done", "at": time.time() * 1000})
        return
    results = await asyncio.gather(*(one_session(a.url, ctx, a.calls) for _ in range(a.sessions)))
    json.dump({"sessions": results}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
