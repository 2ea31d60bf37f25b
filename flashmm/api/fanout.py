"""The stream fan-out process: writes the bot's stream messages to every WebSocket client.

Started by :class:`flashmm.api.stream.StreamHub` with one end of a Unix
``SOCK_SEQPACKET`` socket pair; the standard library only, so it starts in a
few tens of milliseconds and shares no CPU time or lock with the bot's event
loop. The bot keeps the HTTP port: it checks the token, takes the WebSocket
upgrade and hands the client's socket over (``SCM_RIGHTS``) with the
handshake answer and the ``hello`` message, already encoded. Records from the
bot (one datagram each):

* ``M`` + a WebSocket frame: a numbered stream message, the same bytes for
  every client;
* ``C`` + a JSON head line + the bytes to send first, with the client's
  socket attached: a new client;
* ``Q``: close every client ("bot stopping") and exit (so does end of file).

Records to the bot: ``R`` + JSON, ``{"event": "closed" | "dropped", "id",
"name", "sent", "reason"}`` with the totals ``clients`` (connected),
``last_id`` (the newest client taken over) and ``drops``.

Each client has a queue of ``--queue`` messages on top of its socket buffer
(capped at ``SNDBUF`` bytes so that a client that stops reading holds a
bounded amount of memory); a client whose queue is full is dropped: a close
frame (1008, with the reason) and the connection is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections import deque
from typing import Any

__all__ = ["close_frame", "frame", "main"]

#: one bot record at most (a snapshot of many markets stays far below)
MAX_RECORD = 4 * 1024 * 1024
#: kernel send buffer per client
SNDBUF = 256 * 1024
#: client frames larger than this close the connection (clients only ping or close)
MAX_CLIENT_FRAME = 4096
PING_S = 20.0
#: CPU priority below the bot's: the stream waits for CPU, the bot's decisions do not
NICE = 10

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One unmasked, final WebSocket frame (server to client)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_frame(code: int, reason: str) -> bytes:
    return frame(struct.pack("!H", code) + reason.encode()[:120], CLOSE)


def _reset(t: asyncio.WriteTransport) -> None:
    """Close now, discarding what the client did not take (a reset, not a slow FIN)."""
    sock = t.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t.abort()


class Client(asyncio.Protocol):
    """One WebSocket client: writes what it is given, answers pings and a close."""

    def __init__(self, fan: Fanout, cid: int, name: str, first: bytes) -> None:
        self.fan = fan
        self.cid = cid
        self.name = name
        self.first = first
        self.transport: asyncio.WriteTransport | None = None
        self.pending: deque[bytes] = deque()
        self.paused = False
        self.closing = False
        self.sent = 0
        self.buf = bytearray()
        self.reason = "client closed"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        transport.set_write_buffer_limits(high=0)  # pause_writing as soon as the kernel is full
        transport.write(self.first)
        self.first = b""
        if self.closing:
            transport.close()
            asyncio.get_running_loop().call_later(1.0, _reset, transport)
            return
        self.resume_writing()  # what came while the connection was being taken over

    def send(self, data: bytes) -> None:
        if self.closing:
            return
        if self.paused or self.transport is None:  # behind, or not connected yet
            if len(self.pending) >= self.fan.queue:
                self.drop(
                    f"too slow: {self.fan.queue} messages behind (api.stream_queue);"
                    " reconnect and resync from hello"
                )
                return
            self.pending.append(data)
            return
        self.transport.write(data)
        self.sent += 1

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        if self.transport is None or self.transport.get_write_buffer_size():
            return
        self.paused = False
        while self.pending and not self.paused and not self.closing:
            self.transport.write(self.pending.popleft())
            self.sent += 1

    def close(self, code: int, reason: str, grace: float = 1.0) -> None:
        """Send a close frame after what is queued, then close (reset after ``grace`` s)."""
        if self.closing:
            return
        self.closing = True
        self.reason = reason
        self.pending.clear()
        t = self.transport
        if t is None:  # not connected yet: closed as soon as it is
            self.first += close_frame(code, reason)
            return
        with contextlib.suppress(Exception):
            t.write(close_frame(code, reason))
            t.close()
        asyncio.get_running_loop().call_later(grace, _reset, t)

    def drop(self, reason: str) -> None:
        self.fan.dropped(self, reason)
        self.close(1008, reason)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        while len(buf) >= 2 and not self.closing:
            op, n, i = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, i = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, i = struct.unpack_from("!Q", buf, 2)[0], 10
            if n > MAX_CLIENT_FRAME:
                self.close(1009, "client frames are limited to ping and close")
                return
            mask = b""
            if buf[1] & 0x80:
                mask, i = bytes(buf[i : i + 4]), i + 4
            if len(buf) < i + n:
                return
            payload = bytes(buf[i : i + n])
            del buf[: i + n]
            if mask:
                payload = bytes(b ^ mask[j & 3] for j, b in enumerate(payload))
            if op == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000
                self.close(code if 1000 <= code < 5000 else 1000, "")
            elif op == PING and self.transport is not None and not self.paused:
                # not to a client that does not read: its pongs would pile up here
                self.transport.write(frame(payload, PONG))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.pending.clear()
        self.fan.closed(self)


class Fanout:
    """The clients and the bot's socket."""

    def __init__(self, ctl: socket.socket, queue: int) -> None:
        self.ctl = ctl
        self.queue = queue
        self.clients: dict[int, Client] = {}
        self.stopped = asyncio.Event()
        self.done = asyncio.Event()
        self.buf = bytearray(MAX_RECORD)
        self._stopping = False
        self.last_id = 0
        self.drops = 0
        self.last_drop = ""
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, **rec: Any) -> None:
        """To the bot, with the totals (so a report lost to a full buffer loses no count)."""
        rec.update(
            clients=len(self.clients),
            last_id=self.last_id,
            drops=self.drops,
            last_drop=self.last_drop,
        )
        with contextlib.suppress(OSError):  # the bot is gone or its buffer is full
            self.ctl.send(b"R" + json.dumps(rec).encode())

    def dropped(self, c: Client, reason: str) -> None:
        self.drops += 1
        self.last_drop = f"{c.name}: {reason}"
        self.report(event="dropped", id=c.cid, name=c.name, sent=c.sent, reason=reason)

    def closed(self, c: Client) -> None:
        if self.clients.pop(c.cid, None) is not None:
            self.report(event="closed", id=c.cid, name=c.name, sent=c.sent, reason=c.reason)
        if self._stopping and not self.clients:
            self.done.set()

    def on_ctl(self) -> None:
        anc = socket.CMSG_SPACE(struct.calcsize("i") * 4)
        while True:
            try:
                n, ancdata, _flags, _ = self.ctl.recvmsg_into([self.buf], anc)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n, ancdata = 0, []
            fds: list[int] = []
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += list(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
            if n == 0:
                self.stop()
                return
            tag, rec = self.buf[0:1], bytes(memoryview(self.buf)[1:n])
            if tag == b"M":
                for c in list(self.clients.values()):
                    c.send(rec)
            elif tag == b"C" and fds:
                head, _, first = rec.partition(b"\n")
                for extra in fds[1:]:
                    os.close(extra)
                self.attach(fds[0], json.loads(head), first)
            elif tag == b"Q":
                self.stop()
                return
            else:
                for fd in fds:
                    os.close(fd)

    def attach(self, fd: int, head: dict[str, Any], first: bytes) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        c = Client(self, int(head["id"]), str(head.get("name", "?")), first)
        self.clients[c.cid] = c
        self.last_id = max(self.last_id, c.cid)
        task = asyncio.get_running_loop().create_task(self._connect(c, sock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, c: Client, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: c, sock=sock)
        except OSError as exc:
            sock.close()
            c.reason = f"cannot take the connection over: {exc}"
            c.connection_lost(exc)

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.stopped.set()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.ctl)
        for c in list(self.clients.values()):
            c.close(1001, "bot stopping")
        if not self.clients:
            self.done.set()

    async def pinger(self) -> None:
        ping = frame(b"", PING)
        while True:
            await asyncio.sleep(PING_S)
            for c in list(self.clients.values()):
                if not c.closing and not c.paused and c.transport is not None:
                    c.transport.write(ping)


async def run(fd: int, queue: int) -> None:
    ctl = socket.socket(fileno=fd)
    ctl.setblocking(False)
    fan = Fanout(ctl, queue)
    loop = asyncio.get_running_loop()
    loop.add_reader(ctl, fan.on_ctl)
    pinger = asyncio.create_task(fan.pinger())
    await fan.stopped.wait()
    with contextlib.suppress(TimeoutError):  # close frames out, or give up after 2 s
        await asyncio.wait_for(fan.done.wait(), 2.0)
    pinger.cancel()
    ctl.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="FlashMM stream fan-out (started by the bot)")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--queue", type=int, default=512)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the bot, which stops us
    with contextlib.suppress(OSError):
        os.nice(NICE)  # on a busy machine the bot's decisions come first
    try:
        asyncio.run(run(a.fd, a.queue))
    except Exception as exc:  # one line, the bot logs that the fan-out ended
        sys.stderr.write(f"flashmm stream fan-out: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
