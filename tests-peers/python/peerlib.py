"""Shared helpers for the Python `websockets` test peers of wsx.

Lifetime rules (same as tests-peers/node/lifetime.js): a peer exits by itself
after SECS (default 120, or WSX_PEER_TIMEOUT), and, when stdin is a pipe or a
socket (the Rust test spawned it with `Stdio::piped()`), as soon as that pipe
closes. A stdin that is /dev/null or a terminal is not watched.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading

MAX_SIZE = 64 * 1024 * 1024


def default_timeout() -> float:
    try:
        v = float(os.environ.get("WSX_PEER_TIMEOUT", ""))
        return v if v > 0 else 120.0
    except ValueError:
        return 120.0


def stdin_is_pipe() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def install_lifetime(loop: asyncio.AbstractEventLoop, stop: asyncio.Future, seconds: float) -> None:
    """Resolve `stop` with "timeout" after `seconds`, or with "stdin" when a piped stdin closes."""
    secs = seconds if seconds and seconds > 0 else default_timeout()

    def done(reason: str) -> None:
        if not stop.done():
            stop.set_result(reason)

    loop.call_later(secs, done, "timeout")
    if stdin_is_pipe():

        def watch() -> None:
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            loop.call_soon_threadsafe(done, "stdin")

        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def log(name: str, msg: str) -> None:
    print(f"{name}: {msg}", file=sys.stderr, flush=True)
