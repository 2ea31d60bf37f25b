"""The live stream, bot side: number and encode each message once, hand it to the fan-out.

The engine never waits for a client, and the bot's event loop does not write
to clients at all. The operations loop hands the hub what the engine
reported (fills, order changes, breaker and state changes) and a snapshot up
to ``stream_hz`` times a second; the hub numbers each message (``seq``, one
counter for all messages, so a gap means loss), serializes it and frames it
as a WebSocket text frame once, and sends the bytes in one datagram to the
fan-out process (:mod:`flashmm.api.fanout`), which writes them to every
client. The bot's cost per message is one serialization and one
non-blocking ``sendmsg``, whatever the number of clients.

The socket pair between them is the bounded queue: when the fan-out falls
behind and its buffer is full, the message is not sent (counted in
``lost``) and every client sees the gap in ``seq``. A new client's socket is
handed over (``SCM_RIGHTS``) once the bot has checked its token, with the
handshake answer and the ``hello`` message; a client whose own queue is full
(it does not read, or reads too slowly) is dropped by the fan-out with a
close frame saying why, and the bot logs it.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson
from loguru import logger

from flashmm.api.fanout import MAX_RECORD, frame

__all__ = ["StreamHub", "dumps", "websocket_accept"]

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def dumps(obj: Any) -> bytes:
    """JSON bytes for API answers and stream messages (numpy values, enums as text)."""
    return orjson.dumps(obj, default=str, option=_OPTS)


def websocket_accept(headers: Mapping[str, str], subprotocol: str) -> tuple[bytes, str]:
    """The ``101 Switching Protocols`` answer to a WebSocket upgrade, or ``b""`` and why not.

    ``subprotocol`` is chosen when the client offers it (RFC 6455, version 13,
    no extensions: frames are sent uncompressed).
    """
    if headers.get("Upgrade", "").lower() != "websocket":
        return b"", "this route is a WebSocket: send Upgrade: websocket"
    if "upgrade" not in headers.get("Connection", "").lower():
        return b"", "this route is a WebSocket: send Connection: Upgrade"
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return b"", "only WebSocket version 13 is served (Sec-WebSocket-Version: 13)"
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        return b"", "Sec-WebSocket-Key must be 16 bytes in base64"
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept}",
    ]
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if subprotocol in offered:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), ""


class StreamHub:
    """Numbered messages to the fan-out process; never blocks the publisher.

    Counters: ``seq`` (last message number), ``published`` (messages sent to
    the fan-out), ``lost`` (messages the fan-out could not take: a gap for
    every client), ``clients`` (connected), ``drops`` (clients dropped for
    being too slow; ``last_drop`` says who and why).
    """

    def __init__(self, queue_size: int = 512, max_clients: int = 500) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.seq = 0
        self.published = 0
        self.lost = 0
        self.drops = 0
        self.clients = 0
        self.last_drop = ""
        self._next_id = 0
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int | None:
        """The fan-out process's id (None when it is not running)."""
        return self._proc.pid if self._proc is not None and self._sock is not None else None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the fan-out process (call on the bot's event loop).

        Where Unix sequenced-packet sockets are missing (not Linux) the stream is
        off (503) and the rest of the API works.
        """
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except (AttributeError, OSError) as exc:
            logger.warning("API stream off: no Unix sequenced-packet sockets here ({})", exc)
            return
        for s in (ours, theirs):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_RECORD)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_RECORD)
        cmd = [sys.executable, "-m", "flashmm.api.fanout", "--fd", str(theirs.fileno())]
        cmd += ["--queue", str(self.queue_size)]
        try:
            self._proc = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours, self._on_report)

    async def aclose(self) -> None:
        """Close every client ("bot stopping") and end the fan-out process."""
        sock, proc = self._sock, self._proc
        self._down()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.send(b"Q")
            sock.close()
        if proc is not None:
            for _ in range(60):  # it closes its clients within 2 s
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            self._proc = None

    def _down(self, why: str = "") -> None:
        if self._sock is None:
            return
        if why:
            logger.error("API stream: the fan-out process {}; the stream is off", why)
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)
        if why:
            self._sock.close()
        self._sock = None
        self.clients = 0

    # --- messages ------------------------------------------------------------------

    def message(self, kind: str, data: Any) -> bytes:
        """Number and serialize one message (``{"seq", "type", "ts_ns", "data"}``, UTF-8)."""
        self.seq += 1
        return dumps({"seq": self.seq, "type": kind, "ts_ns": time.time_ns(), "data": data})

    def hello(self, data: Any) -> bytes:
        """A new client's first message, as a frame: the current ``seq`` (not a new number)."""
        return frame(
            dumps({"seq": self.seq, "type": "hello", "ts_ns": time.time_ns(), "data": data})
        )

    def publish(self, kind: str, data: Any) -> int:
        """Send to every client; returns the message's seq. Never waits."""
        if not self.clients or self._sock is None:
            self.seq += 1  # numbering continues: a client joining later sees the gap-free tail
            return self.seq
        self._send(b"M" + frame(self.message(kind, data)))
        return self.seq

    def _send(self, record: bytes, fds: tuple[int, ...] = ()) -> bool:
        sock = self._sock
        if sock is None:
            return False
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            sock.sendmsg([record], anc)
        except (BlockingIOError, InterruptedError):
            self.lost += 1  # the fan-out is behind: clients see the gap in seq
            return False
        except OSError as exc:
            if exc.errno == 90:  # EMSGSIZE: one message over MAX_RECORD
                self.lost += 1
                logger.warning("API stream: a {} byte message is too big to stream", len(record))
                return False
            self._down(f"is gone ({exc})")
            return False
        if record[:1] == b"M":
            self.published += 1
        return True

    def attach(self, sock: socket.socket, name: str, first: bytes) -> bool:
        """Hand a client's connection to the fan-out, ``first`` to be sent before anything.

        False when the fan-out is off, full or behind (then the caller answers 503).
        """
        if self._sock is None or self.clients >= self.max_clients:
            return False
        head = json.dumps({"id": self._next_id + 1, "name": name}).encode()
        if not self._send(b"C" + head + b"\n" + first, (sock.fileno(),)):
            return False
        self._next_id += 1
        self.clients += 1
        return True

    def _on_report(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._down(f"is gone ({exc})")
                return
            if not data:
                self._down("exited")
                return
            try:
                rec = json.loads(data[1:])
            except ValueError:
                continue
            # totals in every record: a record lost to a full buffer loses no count and
            # no "last dropped" (the test of 200 readers met that once)
            drops = int(rec.get("drops", self.drops))
            if rec.get("last_drop"):
                self.last_drop = str(rec["last_drop"])
            if rec.get("event") == "dropped":
                self.last_drop = f"{rec.get('name')}: {rec.get('reason')}"
                logger.warning(
                    "API stream: client {} dropped after {} messages: {}",
                    rec.get("name"),
                    rec.get("sent"),
                    rec.get("reason"),
                )
            elif drops > self.drops:  # its own record was lost
                logger.warning(
                    "API stream: {} client(s) dropped, last {}", drops - self.drops, self.last_drop
                )
            # totals: connected there, plus the clients handed over it has not taken yet
            self.drops = drops
            self.clients = int(rec.get("clients", 0)) + self._next_id - int(rec.get("last_id", 0))
