#!/usr/bin/env python3
"""Many Python `websockets` clients in one topic of a wsx server, for the topics interop test.

usage: subscribers.py URL --count N --expect M [--no-deflate] [--timeout SECS]

The same protocol and output as tests-peers/node/subscribers.js: N connections each wait
for "ready", `READY N` is printed when all are, then each must receive M messages
"seq I LEN PAYLOAD" in order and intact; one JSON line, exit 0 only if all did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peerlib  # noqa: E402

try:
    from websockets.asyncio.client import connect
except ImportError as e:  # pragma: no cover
    sys.exit(f"subscribers.py: cannot import websockets (run scripts/setup-peers and use $WSX_PYTHON): {e}")

MESSAGE = re.compile(r"^seq (\d+) (\d+) ([a-z]*)$")


def check(i: int, text: str) -> str | None:
    m = MESSAGE.match(text)
    if not m:
        return f'message {i}: not "seq I LEN PAYLOAD": {text[:40]}'
    if int(m[1]) != i:
        return f"message {i}: got seq {m[1]} (lost or reordered)"
    letter = chr(97 + i % 26)
    if m[3] != letter * int(m[2]):
        return f"message {i}: payload damaged"
    return None


async def subscriber(index: int, args, result: dict, all_ready: asyncio.Event, counter: list) -> None:
    compression = "deflate" if args.deflate else None
    async with connect(args.url, compression=compression, max_size=16 << 20, max_queue=64) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        result["extensions"].add(ext)
        first = await ws.recv()
        if first != "ready":
            raise RuntimeError('first message not "ready"')
        counter[0] += 1
        if counter[0] == args.count:
            print(f"READY {args.count}", flush=True)
            all_ready.set()
        for i in range(args.expect):
            data = await ws.recv()
            bad = "binary" if isinstance(data, bytes) else check(i, data)
            if bad:
                raise RuntimeError(bad)
            result["received"][index] = i + 1


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--no-deflate", dest="deflate", action="store_false")
    parser.add_argument("--timeout", type=float, default=0)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    peerlib.install_lifetime(loop, stop, args.timeout)
    result = {"ok": False, "connections": args.count, "received": [0] * args.count, "extensions": set(), "errors": []}
    all_ready = asyncio.Event()
    counter = [0]

    async def guarded(i: int) -> None:
        try:
            await subscriber(i, args, result, all_ready, counter)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            if len(result["errors"]) < 20:
                result["errors"].append(f"connection {i}: {type(e).__name__}: {e}")

    work = asyncio.gather(*(guarded(i) for i in range(args.count)))
    finished, _ = await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    if stop in finished:
        result["errors"].append(f"stopped: {stop.result()}")
        work.cancel()
    result["extensions"] = sorted(result["extensions"])
    result["ok"] = not result["errors"] and all(n == args.expect for n in result["received"])
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
