#!/usr/bin/env python3
"""A WebSocket client over HTTP/2 (RFC 8441), for wsx's interop tests.

Speaks cleartext HTTP/2 with prior knowledge through the `h2` library (PyPI),
opens a WebSocket with an extended CONNECT (`:protocol: websocket`, offering
permessage-deflate), then frames RFC 6455 messages itself (masked, compressed
with zlib when the extension is agreed) inside DATA frames:

  usage: h2_client.py URL [--count N] [--timeout SECS]
         URL is http://HOST:PORT/PATH of an echo server

Scenario: wait for the server's SETTINGS (SETTINGS_ENABLE_CONNECT_PROTOCOL must
be 1), CONNECT, expect 200; send N messages (alternating compressible text and
binary, growing sizes) and check each echo; close with 1000 "bye", expect the
close echoed and the server's END_STREAM, and end our side of the stream.

Prints one JSON line: {"ok", "connect_protocol", "status", "extensions",
"echoes", "close": {"code", "reason"}, "end_stream", "reset", "error"?} and
exits 0 only if everything passed.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
import urllib.parse
import zlib

import h2.config
import h2.connection
import h2.events
import h2.settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peerlib  # noqa: E402

TAIL = b"\x00\x00\xff\xff"


class Failure(Exception):
    pass


class Client:
    def __init__(self, url: str, deadline: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.authority = f"{self.host}:{self.port}"
        self.path = parts.path or "/"
        self.deadline = deadline
        self.sock = socket.create_connection((self.host, self.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.stream = None
        self.inbox = bytearray()  # WebSocket bytes received on our stream
        self.connect_protocol = False
        self.settings_seen = False
        self.response = None
        self.end_stream = False
        self.reset = False

    # -- HTTP/2 plumbing ------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self) -> None:
        """Read once from the socket and handle the events."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failure("timed out")
        self.sock.settimeout(min(left, 5))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            raise Failure("the server closed the TCP connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
                changed = event.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                if changed is not None:
                    self.connect_protocol = changed.new_value == 1
            elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == self.stream:
                self.response = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == self.stream:
                self.inbox += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream:
                self.end_stream = True
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream:
                self.reset = True
                raise Failure(f"stream reset: {event.error_code!r}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise Failure(f"GOAWAY: {event.error_code!r}")
        self.flush()

    def send(self, data: bytes, end: bool = False) -> None:
        """Send `data` on our stream, waiting for flow-control credit."""
        view = memoryview(data)
        while True:
            window = min(self.conn.local_flow_control_window(self.stream), self.conn.max_outbound_frame_size)
            if window <= 0 and len(view) > 0:
                self.pump()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(self.stream, bytes(chunk), end_stream=end and len(view) == 0)
            self.flush()
            if len(view) == 0:
                return

    # -- The opening handshake ------------------------------------------------

    def open(self) -> None:
        self.conn.initiate_connection()
        self.flush()
        while not self.settings_seen:
            self.pump()
        if not self.connect_protocol:
            raise Failure("the server did not announce SETTINGS_ENABLE_CONNECT_PROTOCOL")
        self.stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            self.stream,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", self.path),
                (":authority", self.authority),
                ("sec-websocket-version", "13"),
                ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
            ],
        )
        self.flush()
        while self.response is None:
            self.pump()
        status = self.response.get(":status")
        if status != "200":
            raise Failure(f"the CONNECT was answered {status}")

    # -- RFC 6455 framing over the stream -------------------------------------

    def setup_deflate(self, extensions: str) -> None:
        self.deflate = extensions.startswith("permessage-deflate")
        params = [p.strip() for p in extensions.split(";")[1:]]
        self.client_no_context = "client_no_context_takeover" in params
        bits = 15
        for p in params:
            if p.startswith("client_max_window_bits="):
                bits = int(p.split("=", 1)[1])
        self.client_bits = bits
        self.compressor = zlib.compressobj(wbits=-bits)
        self.decompressor = zlib.decompressobj(wbits=-15)

    def send_message(self, opcode: int, payload: bytes) -> None:
        rsv1 = 0
        if self.deflate and opcode in (1, 2):
            if self.client_no_context:
                self.compressor = zlib.compressobj(wbits=-self.client_bits)
            data = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            payload = data[:-4] if data.endswith(TAIL) else data
            rsv1 = 0x40
        header = bytes([0x80 | rsv1 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.send(header + mask + masked)

    def next_frame(self):
        """The next whole frame: (fin, rsv1, opcode, payload)."""
        while True:
            frame = self.parse_frame()
            if frame is not None:
                return frame
            if self.end_stream:
                raise Failure("END_STREAM before a whole frame")
            self.pump()

    def parse_frame(self):
        buf = self.inbox
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise Failure("the server masked a frame")
        n, at = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            return None
        payload = bytes(buf[at : at + n])
        del buf[: at + n]
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload

    def next_message(self):
        """The next data message (opcode, payload), or ("close", payload)."""
        opcode, parts, compressed = None, [], False
        while True:
            fin, rsv1, op, payload = self.next_frame()
            if op == 8:
                return 8, payload
            if op in (9, 10):
                continue
            if op != 0:
                opcode, compressed = op, rsv1
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if compressed:
                    data = self.decompressor.decompress(data + TAIL)
                return opcode, data


def message(i: int):
    """The i-th message of the scenario: compressible text or binary, growing sizes."""
    size = (i * 37) % 3000
    if i % 2 == 0:
        return 1, (f"wsx over h2 #{i} " * (size // 16 + 1)).encode()[: size + 1]
    return 2, bytes((i + k) % 251 for k in range(size))


def main() -> int:
    args = sys.argv[1:]
    if not args or args[0].startswith("--"):
        print("usage: h2_client.py URL [--count N] [--timeout SECS]", file=sys.stderr)
        return 2
    url, count, timeout = args[0], 1000, peerlib.default_timeout()
    i = 1
    while i < len(args):
        if args[i] == "--count":
            count, i = int(args[i + 1]), i + 2
        elif args[i] == "--timeout":
            timeout, i = float(args[i + 1]), i + 2
        else:
            print(f"unknown argument {args[i]}", file=sys.stderr)
            return 2
    out = {"ok": False, "connect_protocol": None, "status": None, "extensions": None, "echoes": 0,
           "close": None, "end_stream": False, "reset": False}
    client = None
    try:
        client = Client(url, time.monotonic() + timeout)
        client.open()
        out["connect_protocol"] = client.connect_protocol
        out["status"] = client.response.get(":status")
        out["extensions"] = client.response.get("sec-websocket-extensions", "")
        client.setup_deflate(out["extensions"])
        for n in range(count):
            opcode, payload = message(n)
            client.send_message(opcode, payload)
            got_op, got = client.next_message()
            if (got_op, got) != (opcode, payload):
                raise Failure(f"echo {n} differs: sent {opcode}/{len(payload)} bytes, got {got_op}/{len(got)} bytes")
            out["echoes"] += 1
        client.send_message(8, struct.pack("!H", 1000) + b"bye")
        op, payload = client.next_message()
        if op != 8:
            raise Failure(f"expected the close echo, got opcode {op}")
        out["close"] = {"code": struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None,
                        "reason": payload[2:].decode("utf-8", "replace")}
        # The server ends its side of the stream after the close; we end ours.
        while not client.end_stream:
            client.pump()
        client.send(b"", end=True)
        out["end_stream"] = True
        out["ok"] = out["close"] == {"code": 1000, "reason": "bye"} and out["echoes"] == count
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        out["error"] = f"{type(e).__name__}: {e}"
    if client is not None:
        out["reset"] = client.reset
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
