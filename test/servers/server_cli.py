"""The command line and the HTTP serving both Python test servers share (any `mcp` version: it
imports only argparse, logging and uvicorn)."""

import argparse
import logging

import uvicorn


def parse_server_args(doc: str, name_prefix: str) -> argparse.Namespace:
    """--port (required), --host (default 127.0.0.1), --name (default `<name_prefix>-<port>`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    args.name = args.name or f"{name_prefix}-{args.port}"
    # The SDK logs every new session id at INFO: ids are secrets, keep them out of the logs.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    return args


def serve(app, args: argparse.Namespace) -> None:
    # Longer keep-alive than Traefik's idle timeout for backend connections (90 s), as the reference node.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=120)
