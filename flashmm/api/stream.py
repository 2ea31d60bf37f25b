"""The live stream's fan-out: one serialized message, a bounded queue per client.

The engine never waits for a client. The operations loop hands the hub what
the engine reported (fills, order changes, breaker and state changes) and a
snapshot up to ``stream_hz`` times a second; the hub numbers each message
(``seq``, one counter for all messages, so a gap means loss), serializes it
once and offers the same bytes to every client's queue. A client whose queue
is full (it does not read, or reads too slowly) is dropped at once: its
connection is aborted and it may reconnect and resync from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["StreamClient", "StreamHub", "dumps"]

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """JSON bytes for API answers and stream messages (numpy values, enums as text)."""
    return orjson.dumps(obj, default=str, option=_OPTS)


class StreamClient:
    """One subscriber: a bounded queue of serialized messages and a drop callback."""

    __slots__ = ("dropped", "name", "on_drop", "queue", "sent")

    def __init__(self, name: str, maxsize: int, on_drop: Callable[[], None]) -> None:
        self.name = name
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.on_drop = on_drop
        self.dropped = False
        self.sent = 0


class StreamHub:
    """Numbered messages to every client; never blocks the publisher."""

    def __init__(self, queue_size: int = 512, max_clients: int = 500) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.seq = 0
        self.clients: set[StreamClient] = set()
        self.published = 0
        self.drops = 0

    def subscribe(self, name: str, on_drop: Callable[[], None]) -> StreamClient | None:
        """A new client, or None when ``max_clients`` are connected."""
        if len(self.clients) >= self.max_clients:
            return None
        c = StreamClient(name, self.queue_size, on_drop)
        self.clients.add(c)
        return c

    def unsubscribe(self, client: StreamClient) -> None:
        self.clients.discard(client)

    def message(self, kind: str, data: Any, ts_ns: int | None = None) -> bytes:
        """Number and serialize one message (``{"seq", "type", "ts_ns", "data"}``, UTF-8)."""
        self.seq += 1
        ts = time.time_ns() if ts_ns is None else ts_ns
        return dumps({"seq": self.seq, "type": kind, "ts_ns": ts, "data": data})

    def publish(self, kind: str, data: Any, ts_ns: int | None = None) -> int:
        """Send to every client; returns the message's seq. Full queues drop their client."""
        if not self.clients:
            self.seq += 1  # numbering continues: a client joining later sees the gap-free tail
            return self.seq
        text = self.message(kind, data, ts_ns)
        self.published += 1
        for c in list(self.clients):
            try:
                c.queue.put_nowait(text)
            except asyncio.QueueFull:
                self.drop(c)
        return self.seq

    def drop(self, client: StreamClient) -> None:
        """Disconnect a client that fell behind (its connection is aborted)."""
        if client.dropped:
            return
        client.dropped = True
        self.drops += 1
        self.clients.discard(client)
        with contextlib.suppress(Exception):
            client.on_drop()
