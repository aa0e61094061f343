#!/usr/bin/env python3
"""Hypercorn (ASGI) WebSocket echo server for wsx interop tests: a non-wsx server that takes
WebSockets over HTTP/2 (RFC 8441 extended CONNECT) as well as HTTP/1.1.

usage: hypercorn_server.py --tls CERT KEY [--timeout SECS]

Binds 127.0.0.1 on a port the OS picks, prints `READY <port>` on stdout once listening,
then serves TLS with ALPN h2 and http/1.1. Every WebSocket is accepted (permessage-deflate
when offered, by wsproto) and echoes each message with its type; one line per WebSocket on
stderr gives the HTTP version it came over and how it ended. Exits after SECS (default 120)
or when a piped stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peerlib  # noqa: E402

try:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
except ImportError as e:  # pragma: no cover
    sys.exit(f"hypercorn_server.py: cannot import hypercorn (run scripts/setup-peers and use $WSX_PYTHON): {e}")


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found\n"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    echoed = 0
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            print(f"websocket http={scope['http_version']} echoed={echoed} code={event.get('code')}",
                  file=sys.stderr, flush=True)
            return
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event["bytes"]})
        echoed += 1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), required=True)
    parser.add_argument("--timeout", type=float, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.certfile, config.keyfile = args.tls
    config.accesslog = None
    config.errorlog = None
    print(f"READY {sock.getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    peerlib.install_lifetime(loop, stop, args.timeout)

    async def stopped() -> None:
        await stop

    await serve(app, config, shutdown_trigger=stopped)


if __name__ == "__main__":
    asyncio.run(main())
