"""A local Binance look-alike that replays recordings, for tests and local live runs.

:class:`ReplayServer` plays recorded ``<timestamp> <json>`` files (see
:mod:`flashmm.feeds.replay`; files are grouped per symbol and chained, several
symbols merged by time) on 127.0.0.1:

- a WebSocket server: ``/stream?streams=a@depth@100ms/a@trade/...`` gets the
  recorded combined-stream messages of the streams it asked for, re-sent
  byte for byte (no re-serialisation); other paths get every stream;
- an HTTP server: ``GET /api/v3/depth?symbol=SYM&limit=N`` (and the USD-M
  futures path ``/fapi/v1/depth``, which also carries ``E``/``T``) returns a REST
  snapshot built from the replayed book *as sent so far*, with the matching
  ``lastUpdateId``, so a client that connects mid-stream can sync. The book
  is kept by a :class:`~flashmm.book.BookBuilder` in units of 1e-8 (Binance
  sends 8 decimals) and written back as decimal strings.

Playback is shared by all clients, like an exchange: one clock, paced by
``speed`` (1 = recorded pace, 0 = as fast as the clients read). With
``pause_when_idle`` (default) it waits while no client is connected, so a
reconnecting client misses nothing of the file. Recorded REST snapshot
lines only update the server's book; they are not sent on the stream.

Faults for tests: ``drop_diffs`` (diff numbers, 1-based, that are applied to
the book but not sent: a sequence gap), ``close_after`` (close a connection
after it got N messages, for the first ``close_limit`` connections),
``malformed_at`` (send a broken message before message number N),
``rest_fail_first`` (answer the first N snapshot requests with HTTP 500),
and at run time :meth:`ReplayServer.drop_next_diff`,
:meth:`ReplayServer.send_malformed`, :meth:`ReplayServer.close_clients`;
``limit`` plays only the first N lines of each pass. A client that stops
reading for ``send_timeout`` seconds is cut off (its TCP connection aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from loguru import logger

from flashmm.book import BookBuilder, SequenceGap
from flashmm.feeds.binance import BinanceParser, ParseError, Scale, ts_to_ns
from flashmm.feeds.replay import Pacer, align_offsets, group_files, merge_by_time, read_lines
from flashmm.marketdata import DepthDiff, DepthSnapshot, MarketEvent

#: seconds each of the two servers gets to close on stop
STOP_TIMEOUT_S = 5.0

MALFORMED = '{"stream": "malformed@depth@100ms", "data": {"e": "depthUpdate", "U": '


def format_units(n: int, decimals: int) -> str:
    """Integer units of 10**-decimals to a Binance decimal string (``1.21400000``)."""
    unit = 10**decimals
    sign = "-" if n < 0 else ""
    n = abs(n)
    if decimals == 0:
        return f"{sign}{n}"
    return f"{sign}{n // unit}.{n % unit:0{decimals}d}"


def stream_key(stream: str) -> str:
    """``sym@kind`` of a stream name, without an update-speed suffix (``@100ms``)."""
    parts = stream.lower().split("@")
    return "@".join(parts[:2])


@dataclass
class ServerStats:
    lines: int = 0  # recorded lines played
    bad_lines: int = 0
    messages_sent: int = 0  # stream messages (one per client send)
    diffs: int = 0  # depth diffs played
    diffs_dropped: int = 0  # not sent (fault)
    malformed_sent: int = 0
    connections: int = 0
    closes_injected: int = 0
    rest_requests: int = 0
    rest_errors: int = 0  # non-200 replies
    passes: int = 0  # completed passes over the files
    gaps_in_file: int = 0


@dataclass(eq=False)
class _Client:
    ws: Any
    keys: frozenset[str] | None  # stream keys asked for; None = all
    sent: int = 0
    closing: bool = False


@dataclass
class _Line:
    ts_ns: int
    symbol: str
    raw: bytes  # the JSON part of the line
    event: MarketEvent | None
    stream: str = ""


class ReplayServer:
    """Binance-compatible WebSocket + REST server replaying recordings on ``host``."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        *,
        http_port: int = 0,
        loop: bool = False,
        align: bool = True,
        pause_when_idle: bool = True,
        decimals: int = 8,
        drop_diffs: Collection[int] = (),
        close_after: int | None = None,
        close_limit: int | None = 1,
        malformed_at: Collection[int] = (),
        rest_fail_first: int = 0,
        limit: int | None = None,
        send_timeout: float = 10.0,
    ) -> None:
        self.groups = group_files(paths)
        self.host = host
        self.port = port
        self.http_port = http_port
        self.speed = speed
        self.loop = loop
        self.align = align
        self.pause_when_idle = pause_when_idle
        self.decimals = decimals
        self.drop_diffs = set(drop_diffs)
        self.close_after = close_after
        self.close_limit = close_limit
        self.malformed_at = set(malformed_at)
        self.rest_fail_first = rest_fail_first
        self.limit = limit
        self.send_timeout = send_timeout
        unit = float(10**decimals)
        self.parser = BinanceParser({s: Scale(unit, unit) for s in self.groups})
        self.stats = ServerStats()
        self.books: dict[str, BookBuilder] = {}
        self.finished = asyncio.Event()  # set when the files are played out (not with loop)
        self._clients: set[_Client] = set()
        self._has_clients = asyncio.Event()
        self._drop_next: dict[str, int] = {}
        self._malformed_queue: list[str] = []
        self._msg_no = 0  # stream messages played (not per client)
        self._ws_server: Any = None
        self._http_runner: Any = None
        self._play_task: asyncio.Task[None] | None = None
        self._ws_port = 0
        self._http_port = 0
        self._reset_books()

    # --- public API -----------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return sorted(self.groups)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self._ws_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self._http_port}"

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        from aiohttp import web
        from websockets.asyncio.server import serve

        self._ws_server = await serve(
            self._handle_ws,
            self.host,
            self.port,
            max_size=2**20,
            close_timeout=2.0,
            compression=None,  # loopback: compressing costs more than it saves
        )
        self._ws_port = self._ws_server.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_get("/api/v3/depth", self._handle_depth)
        app.router.add_get("/fapi/v1/depth", self._handle_depth)
        app.router.add_get("/api/v3/ping", self._handle_ping)
        app.router.add_get("/api/v3/time", self._handle_time)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, self.host, self.http_port)
        await site.start()
        self._http_port = self._http_runner.addresses[0][1]
        self._play_task = asyncio.get_running_loop().create_task(self._play(), name="replay-play")
        logger.info("replay server: ws {} rest {}", self.ws_url, self.rest_url)

    async def stop(self) -> None:
        if self._play_task is not None:
            self._play_task.cancel()
            await asyncio.gather(self._play_task, return_exceptions=True)
            self._play_task = None
        # bounded: a client that never finishes its closing handshake, or an HTTP
        # keep-alive connection (aiohttp waits up to 60 s for those), must not hold
        # up a Ctrl-C
        if self._ws_server is not None:
            self._ws_server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), STOP_TIMEOUT_S)
            self._ws_server = None
        if self._http_runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._http_runner.cleanup(), STOP_TIMEOUT_S)
            self._http_runner = None

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def drop_next_diff(self, symbol: str | None = None, count: int = 1) -> None:
        """Do not send the next ``count`` diffs (of ``symbol``, or of every symbol)."""
        for s in [symbol.lower()] if symbol else self.symbols:
            self._drop_next[s] = self._drop_next.get(s, 0) + count

    def send_malformed(self, text: str = MALFORMED) -> None:
        """Send ``text`` to every client before the next message."""
        self._malformed_queue.append(text)

    async def close_clients(self, code: int = 1012, reason: str = "replay server restart") -> None:
        """Close every connected client (they should reconnect)."""
        await asyncio.gather(
            *(c.ws.close(code, reason) for c in list(self._clients)), return_exceptions=True
        )

    def book_levels(self, symbol: str, limit: int = 5000) -> dict[str, Any]:
        """The server's current book as a REST depth reply (decimal strings)."""
        b = self.books[symbol.lower()]
        d = self.decimals
        return {
            "lastUpdateId": b.last_id,
            "bids": [[format_units(p, d), format_units(q, d)] for p, q in b.book.top_bids(limit)],
            "asks": [[format_units(p, d), format_units(q, d)] for p, q in b.book.top_asks(limit)],
        }

    # --- playback -------------------------------------------------------------

    def _reset_books(self) -> None:
        self.books = {s: BookBuilder(s, max_buffer=100_000) for s in self.groups}

    def _symbol_lines(self, symbol: str, offset: int) -> Iterator[_Line]:
        for path in self.groups[symbol]:
            yield from self._read_file(path, symbol, offset)

    def _read_file(self, path: Path, symbol: str, offset: int) -> Iterator[_Line]:
        for lineno, raw_line in read_lines(path, self.stats):
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue
            sp = line.find(b" ")
            try:
                if sp <= 0:
                    raise ParseError("no '<timestamp> <json>' separator")
                ts = ts_to_ns(int(line[:sp]))
                raw = line[sp + 1 :]
                msg = orjson.loads(raw)
                if not isinstance(msg, dict):
                    raise ParseError("not a JSON object")
                stream = msg.get("stream")
                if not isinstance(stream, str):
                    stream = ""
                # only depth data feeds the server's book: parse nothing else
                ev = (
                    self.parser.parse(msg, ts, symbol) if not stream or "@depth" in stream else None
                )
            except (ValueError, ParseError) as exc:
                self.stats.bad_lines += 1
                logger.warning("{}:{}: skipped bad line: {}", path.name, lineno, exc)
                continue
            yield _Line(ts + offset, symbol, raw, ev, stream)

    def _merged(self) -> Iterator[_Line]:
        offsets = align_offsets(self.groups, self.align)
        streams = [self._symbol_lines(s, offsets[s]) for s in sorted(self.groups)]
        for n, line in enumerate(merge_by_time(streams), 1):
            if self.limit is not None and n > self.limit:
                return
            yield line

    async def _play(self) -> None:
        try:
            while True:
                await self._play_pass()
                self.stats.passes += 1
                if not self.loop:
                    break
                logger.info("replay server: end of data, starting over")
                self._reset_books()
                await self.close_clients(1012, "replay restarts")
            self.finished.set()
            logger.info("replay server: end of data")
        except Exception:  # pragma: no cover - a bug; keep the server answering
            logger.exception("replay server: playback failed")
            self.finished.set()

    async def _play_pass(self) -> None:
        pacer = Pacer(self.speed, 64)  # behind or unpaced: let clients and REST requests in
        for line in self._merged():
            ev = line.event
            self.stats.lines += 1
            if isinstance(ev, DepthSnapshot):
                self.books[line.symbol].on_snapshot(ev)
                continue
            if not line.stream:
                continue
            if self.pause_when_idle and not self._clients:
                t0 = time.monotonic()
                await self._has_clients.wait()
                pacer.wall0 += time.monotonic() - t0
            await pacer.wait(line.ts_ns)
            await self._dispatch(line)

    async def _dispatch(self, line: _Line) -> None:
        ev = line.event
        if isinstance(ev, DepthDiff):
            self.stats.diffs += 1
            try:
                self.books[line.symbol].on_diff(ev)
            except SequenceGap as exc:
                self.stats.gaps_in_file += 1
                logger.warning("replay server: {} (snapshots unavailable until the next one)", exc)
            pending = self._drop_next.get(line.symbol, 0)
            if self.stats.diffs in self.drop_diffs or pending:
                if pending:
                    self._drop_next[line.symbol] = pending - 1
                self.stats.diffs_dropped += 1
                return
        self._msg_no += 1
        if self._msg_no in self.malformed_at:
            self._malformed_queue.append(MALFORMED)
        while self._malformed_queue:
            bad = self._malformed_queue.pop(0)
            self.stats.malformed_sent += 1
            await self._broadcast(bad, None)
        await self._broadcast(line.raw.decode(), stream_key(line.stream))

    async def _broadcast(self, text: str, key: str | None) -> None:
        from websockets.exceptions import ConnectionClosed

        for c in list(self._clients):
            if c.closing or (key is not None and c.keys is not None and key not in c.keys):
                continue
            try:
                async with asyncio.timeout(self.send_timeout):
                    await c.ws.send(text)
            except ConnectionClosed:
                self._drop_client(c)
                continue
            except TimeoutError:
                # a client that stops reading must not stall everyone: cut it off
                logger.warning(
                    "replay server: client not reading for {}s, dropped", self.send_timeout
                )
                self._drop_client(c)
                c.ws.transport.abort()
                continue
            c.sent += 1
            self.stats.messages_sent += 1
            limit = self.close_limit
            if (
                self.close_after is not None
                and c.sent >= self.close_after
                and (limit is None or self.stats.closes_injected < limit)
            ):
                c.closing = True
                self._drop_client(c)  # playback pauses now if it was the only client
                self.stats.closes_injected += 1
                logger.info("replay server: closing a client after {} messages (fault)", c.sent)
                await c.ws.close(1011, "fault injection: close_after")

    # --- WebSocket / HTTP handlers -------------------------------------------------

    def _drop_client(self, c: _Client) -> None:
        self._clients.discard(c)
        if not self._clients:
            self._has_clients.clear()

    async def _handle_ws(self, ws: Any) -> None:
        path = ws.request.path if ws.request is not None else "/"
        parts = urlsplit(path)
        keys: frozenset[str] | None = None
        if parts.path.rstrip("/") == "/stream":
            names = parse_qs(parts.query).get("streams", [""])[0]
            keys = frozenset(stream_key(n) for n in names.split("/") if n)
        elif parts.path.startswith("/ws/") and len(parts.path) > 4:
            keys = frozenset(stream_key(n) for n in parts.path[4:].split("/") if n)
        client = _Client(ws, keys)
        self._clients.add(client)
        self._has_clients.set()
        self.stats.connections += 1
        logger.info("replay server: client connected ({})", path)
        try:
            async for _ in ws:
                pass  # subscription requests are not supported; ignore them
        except Exception:  # the connection went away: nothing to do
            pass
        finally:
            self._drop_client(client)

    async def _handle_depth(self, request: Any) -> Any:
        from aiohttp import web

        self.stats.rest_requests += 1

        def error(status: int, code: int, msg: str) -> Any:
            self.stats.rest_errors += 1
            return web.Response(
                status=status,
                body=orjson.dumps({"code": code, "msg": msg}),
                content_type="application/json",
            )

        if self.stats.rest_requests <= self.rest_fail_first:
            return error(500, -1000, "fault injection: rest_fail_first")
        symbol = request.query.get("symbol", "").lower()
        if symbol not in self.books:
            return error(400, -1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return error(400, -1100, "Illegal characters found in parameter 'limit'.")
        limit = max(1, min(limit, 5000))
        if not self.books[symbol].synced:
            return error(503, -1003, "book not ready: no snapshot replayed yet")
        body = self.book_levels(symbol, limit)
        if request.path.startswith("/fapi/"):
            ms = time.time_ns() // 1_000_000
            body = {"lastUpdateId": body["lastUpdateId"], "E": ms, "T": ms, **body}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _handle_ping(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({})

    async def _handle_time(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"serverTime": time.time_ns() // 1_000_000})
