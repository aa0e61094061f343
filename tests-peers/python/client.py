#!/usr/bin/env python3
"""Python `websockets` client for wsx interop tests.

usage: client.py URL [--ca FILE] [--no-deflate] [--timeout SECS]
       client.py URL --close-test CODE REASON [--ca FILE] [--no-deflate]

Runs the same scenario, with the same step names and the same JSON output, as
tests-peers/node/client.js (see that file for the format); "peer" is
"python-websockets". Exit 0 only if every step is "ok" (close-test mode: if a
close frame was received). Close codes that websockets refuses to send are
written as a raw masked close frame ("raw": true).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peerlib  # noqa: E402

try:
    import websockets
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
except ImportError as e:  # pragma: no cover
    sys.exit(f"client.py: cannot import websockets (run scripts/setup-peers and use $WSX_PYTHON): {e}")

NAME = "client.py"
PEER = "python-websockets"
STEP_TIMEOUT = 30.0
UTF8_TEXT = "héllo wörld · κόσμε · привет · 日本語 · 🦀🚀 · \U0010ffff"
PING_PAYLOAD = b"wsx-ping-\x00\x01\xfe\xff"


class StepError(Exception):
    pass


def describe(data) -> str:
    if isinstance(data, str):
        return f"text of {len(data.encode())} bytes"
    return f"binary of {len(data)} bytes"


async def recv(ws, what: str):
    try:
        return await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise StepError(f"timeout after {STEP_TIMEOUT:.0f} s waiting for {what}") from None
    except ConnectionClosed as e:
        raise StepError(f"connection closed (code {close_code(ws)}, reason {close_reason(ws)!r}): {e}") from None


def close_code(ws):
    rcvd = ws.protocol.close_rcvd
    if rcvd is not None:
        return rcvd.code
    return 1006 if ws.protocol.state.name == "CLOSED" else None


def close_reason(ws):
    rcvd = ws.protocol.close_rcvd
    return rcvd.reason if rcvd is not None else ""


def expect_same(got, want) -> None:
    if type(got) is not type(want):
        raise StepError(f"expected {'text' if isinstance(want, str) else 'binary'}, got {describe(got)}")
    if got != want:
        g = got.encode() if isinstance(got, str) else got
        w = want.encode() if isinstance(want, str) else want
        i = 0
        while i < len(g) and i < len(w) and g[i] == w[i]:
            i += 1
        raise StepError(f"payload mismatch: sent {len(w)} bytes, got {len(g)} bytes, first difference at byte {i}")


async def echo_step(ws, payload) -> None:
    await ws.send(payload)
    expect_same(await recv(ws, f"the echo of {describe(payload)}"), payload)


async def fragmented_step(ws, parts) -> None:
    # websockets sends an iterable as one fragmented message, one frame per item.
    await ws.send(list(parts))
    whole = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
    expect_same(await recv(ws, "the echo of a fragmented message"), whole)


async def ping_step(ws) -> None:
    # The waiter resolves only when a pong carrying this payload arrives.
    waiter = await ws.ping(PING_PAYLOAD)
    try:
        await asyncio.wait_for(waiter, STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise StepError(f"timeout after {STEP_TIMEOUT:.0f} s waiting for the pong with the ping's payload") from None
    except ConnectionClosed as e:
        raise StepError(f"connection closed before the pong: {e}") from None


def close_info(ws):
    p = ws.protocol
    if p.close_rcvd is None and p.state.name != "CLOSED":
        return None
    return {
        "code": close_code(ws),
        "reason": close_reason(ws),
        "wasClean": p.close_rcvd is not None and p.close_sent is not None,
    }


async def close_step(ws) -> None:
    try:
        await asyncio.wait_for(ws.close(4001, "bye"), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise StepError(f"timeout after {STEP_TIMEOUT:.0f} s closing") from None
    info = close_info(ws)
    errs = []
    if info is None or info["code"] != 4001:
        errs.append(f"close code {info and info['code']} != 4001")
    if info is None or info["reason"] != "bye":
        errs.append(f"close reason {info and info['reason']!r} != 'bye'")
    if info is None or not info["wasClean"]:
        errs.append("closing handshake not clean")
    if errs:
        raise StepError("; ".join(errs))


STEPS = [
    ("text", lambda ws: echo_step(ws, "hello wsx")),
    ("binary", lambda ws: echo_step(ws, bytes(range(256)))),
    ("empty_text", lambda ws: echo_step(ws, "")),
    ("empty_binary", lambda ws: echo_step(ws, b"")),
    ("size_125", lambda ws: echo_step(ws, os.urandom(125))),
    ("size_126", lambda ws: echo_step(ws, os.urandom(126))),
    ("size_65535", lambda ws: echo_step(ws, os.urandom(65535))),
    ("size_65536", lambda ws: echo_step(ws, os.urandom(65536))),
    ("size_16mib", lambda ws: echo_step(ws, os.urandom(16 * 1024 * 1024))),
    ("utf8_text", lambda ws: echo_step(ws, UTF8_TEXT)),
    ("fragmented", lambda ws: fragmented_step(ws, ["frag", "ment", "ed ✓"])),
    ("fragmented_binary", lambda ws: fragmented_step(ws, [os.urandom(1000), b"", os.urandom(70000)])),
    ("ping", ping_step),
    ("close", close_step),
]


def connect_kwargs(args):
    kw = dict(
        max_size=peerlib.MAX_SIZE,
        compression=None if args.no_deflate else "deflate",
        ping_interval=None,
        open_timeout=10,
        close_timeout=10,
        proxy=None,
    )
    if args.url.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=args.ca) if args.ca else ssl.create_default_context()
        kw["ssl"] = ctx
    return kw


def negotiated(ws):
    h = ws.response.headers if ws.response is not None else {}
    return h.get("Sec-WebSocket-Extensions", ""), h.get("Sec-WebSocket-Protocol", "")


async def run_scenario(args) -> dict:
    out = {
        "peer": PEER, "version": websockets.__version__, "mode": "scenario", "url": args.url,
        "extensions": None, "protocol": None, "results": {}, "passed": 0, "failed": 0, "ok": False, "close": None,
    }
    try:
        ws = await connect(args.url, **connect_kwargs(args))
    except Exception as e:
        out["error"] = f"connect failed: {e!r}"
        for name, _ in STEPS:
            out["results"][name] = f"not run: {out['error']}"
        out["failed"] = len(STEPS)
        return out
    out["extensions"], out["protocol"] = negotiated(ws)
    for name, fn in STEPS:
        try:
            await fn(ws)
            out["results"][name] = "ok"
        except StepError as e:
            out["results"][name] = str(e)
        except Exception as e:
            out["results"][name] = f"{type(e).__name__}: {e}"
    out["close"] = close_info(ws)
    if ws.protocol.state.name != "CLOSED":
        ws.transport.abort()
    out["passed"] = sum(1 for v in out["results"].values() if v == "ok")
    out["failed"] = len(STEPS) - out["passed"]
    out["ok"] = out["failed"] == 0
    return out


def raw_close_frame(code, reason: str) -> bytes:
    body = b"" if code is None else struct.pack("!H", code) + reason.encode()
    if len(body) < 126:
        head = bytes([0x88, 0x80 | len(body)])
    else:
        head = bytes([0x88, 0x80 | 126]) + struct.pack("!H", len(body))
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(body))


async def run_close_test(args) -> dict:
    code, reason = args.close_code, args.close_reason
    out = {
        "peer": PEER, "version": websockets.__version__, "mode": "close-test", "url": args.url,
        "sent": {"code": code, "reason": reason, "raw": False}, "echo": None, "close": None, "ok": False,
    }
    try:
        ws = await connect(args.url, **connect_kwargs(args))
    except Exception as e:
        out["error"] = f"connect failed: {e!r}"
        return out
    try:
        await echo_step(ws, "close-test")
        out["echo"] = "ok"
    except StepError as e:
        out["echo"] = str(e)
    try:
        if code is None:
            closing = ws.close(None)  # an empty close frame (websockets defaults to 1000)
        else:
            # Validates like websockets.close() would, before anything is sent.
            websockets.frames.Close(code, reason).serialize()
            closing = ws.close(code, reason)
        try:
            await asyncio.wait_for(closing, 15)
        except asyncio.TimeoutError:
            out["error"] = "timeout after 15 s waiting for the close"
    except websockets.exceptions.ProtocolError:
        # websockets refuses codes/reasons that RFC 6455 forbids on the wire: send them raw.
        out["sent"]["raw"] = True
        ws.transport.write(raw_close_frame(code, reason))
        try:
            await asyncio.wait_for(ws.wait_closed(), 15)
        except asyncio.TimeoutError:
            out["error"] = "timeout after 15 s waiting for the close"
    out["close"] = close_info(ws)
    if ws.protocol.state.name != "CLOSED":
        ws.transport.abort()
    out["ok"] = out["close"] is not None and out["close"]["code"] not in (None, 1006)
    return out


def parse_args():
    ap = argparse.ArgumentParser(prog=NAME)
    ap.add_argument("url")
    ap.add_argument("--ca")
    ap.add_argument("--no-deflate", action="store_true")
    ap.add_argument("--timeout", type=float, default=0)
    ap.add_argument("--close-test", nargs=2, metavar=("CODE", "REASON"))
    args = ap.parse_args()
    args.close_code = args.close_reason = None
    if args.close_test:
        c, args.close_reason = args.close_test
        if c == "none":
            args.close_code = None
        else:
            try:
                args.close_code = int(c)
            except ValueError:
                ap.error(f"bad close code {c}")
            if not 0 <= args.close_code <= 65535:
                ap.error(f"bad close code {c}")
    return args


async def main() -> int:
    args = parse_args()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    peerlib.install_lifetime(loop, stop, args.timeout)
    mode = "close-test" if args.close_test else "scenario"
    task = asyncio.ensure_future(run_close_test(args) if args.close_test else run_scenario(args))
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        print(json.dumps({"peer": PEER, "mode": mode, "url": args.url, "ok": False,
                          "error": "peer time limit or stdin closed before the run finished"}), flush=True)
        os._exit(1)
    try:
        out = task.result()
    except Exception as e:
        out = {"peer": PEER, "mode": mode, "url": args.url, "ok": False, "error": f"internal error: {e!r}"}
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
