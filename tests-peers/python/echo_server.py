#!/usr/bin/env python3
"""Python `websockets` echo server for wsx interop tests.

usage: echo_server.py [--port N] [--tls CERT KEY] [--no-deflate] [--timeout SECS]

Binds 127.0.0.1 (port 0 = any free port unless --port), prints `READY <port>`
on stdout once listening, then echoes every message with its type (str stays
text, bytes stay binary). websockets answers pings itself and echoes the
peer's close frame (code and reason). permessage-deflate is negotiated when
the client offers it (websockets' default) unless --no-deflate; --deflate is
accepted for symmetry with the Node server and changes nothing. max_size is
64 MiB; keepalive pings are off so that the traffic is only what the test
sends. Exits after SECS (default 120) or when a piped stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peerlib  # noqa: E402

try:
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
except ImportError as e:  # pragma: no cover
    sys.exit(f"echo_server.py: cannot import websockets (run scripts/setup-peers and use $WSX_PYTHON): {e}")

NAME = "echo_server.py"


async def echo(ws) -> None:
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass
    except Exception as e:  # keep serving other connections
        peerlib.log(NAME, f"connection error: {e!r}")


async def main() -> int:
    ap = argparse.ArgumentParser(prog=NAME)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--deflate", action="store_true", help="no-op: deflate is on by default")
    g.add_argument("--no-deflate", action="store_true")
    ap.add_argument("--timeout", type=float, default=0)
    args = ap.parse_args()

    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    peerlib.install_lifetime(loop, stop, args.timeout)
    async with serve(
        echo,
        "127.0.0.1",
        args.port,
        ssl=ctx,
        max_size=peerlib.MAX_SIZE,
        compression=None if args.no_deflate else "deflate",
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        reason = await stop
    if reason == "timeout":
        peerlib.log(NAME, "exiting (time limit)")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
