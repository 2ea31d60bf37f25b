"""BinanceWSFeed against a real loopback ReplayServer playing recorded Binance data.

Everything runs on 127.0.0.1; no test touches the internet.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kit.data import ETH_SLICE as ETH
from kit.data import NEXO_23 as NEXO

from flashmm.book import BookBuilder, SequenceGap
from flashmm.errors import RuntimeFailure, UserInputError
from flashmm.feeds.binance import Scale
from flashmm.feeds.server import ReplayServer
from flashmm.feeds.ws import BinanceWSFeed, backoff_delay
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, FeedStatus, Trade

ROOT = Path(__file__).resolve().parents[1]

NEXO_SCALE = Scale.of(0.001, 0.01)
ETH_SCALE = Scale.of(0.01, 0.0001)


class Client:
    """What the engine does with the feed: a BookBuilder per symbol."""

    def __init__(
        self, feed: BinanceWSFeed, on_event: Callable[[Client, Any], None] | None = None
    ) -> None:
        self.feed = feed
        self.builders = {s: BookBuilder(s) for s in feed.symbols}
        self.statuses: list[FeedStatus] = []
        self.counts: dict[str, int] = {}
        self.handled = 0
        self.builder_gaps = 0
        self.on_event = on_event
        self.checks_at_resync: dict[str, int] = {}

    async def run(self) -> None:
        async for ev in self.feed:
            self.handle(ev)

    def handle(self, ev: Any) -> None:
        self.handled += 1
        name = type(ev).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        b = self.builders[ev.symbol]
        try:
            if isinstance(ev, FeedStatus):
                self.statuses.append(ev)
                if ev.kind == "resync":
                    self.checks_at_resync[ev.symbol] = b.checks
            elif isinstance(ev, DepthSnapshot):
                b.on_snapshot(ev)
            elif isinstance(ev, DepthDiff):
                b.on_diff(ev)
            elif isinstance(ev, BookTicker):
                b.on_ticker(ev)
            else:
                assert isinstance(ev, Trade)
        except SequenceGap:
            self.builder_gaps += 1
        if self.on_event is not None:
            self.on_event(self, ev)

    def kinds(self, symbol: str | None = None) -> list[str]:
        return [s.kind for s in self.statuses if symbol is None or s.symbol == symbol]


def make_feed(
    srv: ReplayServer, scales: dict[str, Scale] | None = None, **kw: Any
) -> BinanceWSFeed:
    kw.setdefault("backoff_initial", 0.02)
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("idle_timeout", 5.0)
    kw.setdefault("rng", random.Random(7))
    return BinanceWSFeed(scales or {"nexousdt": NEXO_SCALE}, srv.ws_url, srv.rest_url, 5000, **kw)


async def play_out(srv: ReplayServer, client: Client, timeout: float = 8.0) -> None:
    """Run the client until the server has played everything and the client read it all."""
    task = asyncio.create_task(client.run())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert not task.done(), task.exception() if task.done() else None
            if (
                srv.finished.is_set()
                and client.feed.stats.messages >= srv.stats.messages_sent
                and client.handled == client.feed.stats.events
                and all(client.feed.synced(s) for s in client.feed.symbols)
            ):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(
                f"timed out: server {srv.stats}, feed {client.feed.stats.as_dict()}"
            )
    finally:
        await client.feed.aclose()
        await asyncio.wait_for(task, 5)


def assert_same_book(client: Client, srv: ReplayServer, symbol: str, scale: Scale) -> None:
    """The client's final book equals the server's (every level, via decimal strings)."""
    ref = srv.book_levels(symbol)
    book = client.builders[symbol].book

    def conv(levels: list[list[str]]) -> list[tuple[int, int]]:
        return [
            (int(float(p) * scale.inv_tick + 0.5), int(float(q) * scale.inv_lot + 0.5))
            for p, q in levels
        ]

    assert client.builders[symbol].last_id == ref["lastUpdateId"]
    assert book.top_bids(10_000) == conv(ref["bids"])
    assert book.top_asks(10_000) == conv(ref["asks"])


# 1000x: the 20-minute NEXO recording plays in 1.2 s, paced like the exchange, so
# the client keeps up and the bookTicker checks do not depend on scheduling luck.
FAST = 1000.0


async def test_sync_from_snapshot_and_book_matches_tickers() -> None:
    async with ReplayServer([NEXO], speed=FAST) as srv:
        client = Client(make_feed(srv))
        await play_out(srv, client)
    b = client.builders["nexousdt"]
    st = client.feed.stats
    assert client.kinds()[0] == "connected"
    assert "gap" not in client.kinds() and "resync" not in client.kinds()
    assert st.snapshots == 1 and st.gaps == 0 and st.bad_messages == 0
    assert client.counts["DepthSnapshot"] == 1
    assert client.counts["DepthDiff"] > 500 and client.counts["Trade"] > 0
    assert b.checks > 0 and b.mismatches == 0 and client.builder_gaps == 0
    assert_same_book(client, srv, "nexousdt", NEXO_SCALE)
    assert st.last_update_id["nexousdt"] == b.last_id
    assert st.last_exch_lag_ms is not None  # recorded E/T are from 2024: a large lag
    assert st.last_message_age_s() < 10


async def test_two_symbols_on_one_connection_paced() -> None:
    # the first 12,000 merged lines: ~2 minutes of both markets (aligned to start together)
    async with ReplayServer([NEXO, ETH], speed=2000, limit=12_000) as srv:
        feed = make_feed(srv, {"nexousdt": NEXO_SCALE, "ethusdt": ETH_SCALE})
        assert feed.stream_url.count("@") == 8  # 2 symbols x 3 streams (depth@100ms)
        client = Client(feed)
        await play_out(srv, client, timeout=9.0)
    assert srv.stats.connections == 1
    for sym, scale in (("nexousdt", NEXO_SCALE), ("ethusdt", ETH_SCALE)):
        b = client.builders[sym]
        assert b.checks > 0 and b.mismatches == 0, sym
        assert_same_book(client, srv, sym, scale)
    # paced: the snapshot is not far ahead of the stream, so most tickers get checked
    assert client.builders["ethusdt"].checks > 150


async def test_dropped_diff_gap_then_rest_resync() -> None:
    async with ReplayServer([NEXO], speed=FAST, drop_diffs={700}) as srv:
        client = Client(make_feed(srv))
        await play_out(srv, client)
    st = client.feed.stats
    assert srv.stats.diffs_dropped == 1
    kinds = client.kinds()
    assert kinds.count("gap") == 1 and kinds.count("resync") == 1
    assert kinds.index("gap") < kinds.index("resync")
    gap = next(s for s in client.statuses if s.kind == "gap")
    assert "expected update id" in gap.detail
    resync = next(s for s in client.statuses if s.kind == "resync")
    assert resync.detail == "gap"
    assert st.gaps == 1 and st.resyncs == 1 and st.snapshots == 2
    assert srv.stats.rest_requests == 2
    b = client.builders["nexousdt"]
    # the builder never saw the hole: the feed held the diffs until the snapshot
    assert client.builder_gaps == 0 and b.mismatches == 0
    assert b.checks > client.checks_at_resync["nexousdt"]  # checked again after the resync
    assert_same_book(client, srv, "nexousdt", NEXO_SCALE)


async def test_server_close_reconnect_with_backoff_and_resync() -> None:
    async with ReplayServer([NEXO], speed=FAST, close_after=900) as srv:
        client = Client(make_feed(srv))
        await play_out(srv, client)
    st = client.feed.stats
    assert srv.stats.closes_injected == 1 and srv.stats.connections == 2
    assert st.connects == 2 and st.reconnects == 1 and st.disconnects >= 1
    kinds = client.kinds()
    assert kinds == ["connected", "disconnected", "connected", "resync"]
    assert client.statuses[-1].detail == "reconnect"
    assert st.snapshots == 2
    b = client.builders["nexousdt"]
    assert b.checks > client.checks_at_resync["nexousdt"] and b.mismatches == 0
    assert_same_book(client, srv, "nexousdt", NEXO_SCALE)


async def test_malformed_messages_counted_and_skipped() -> None:
    async with ReplayServer([NEXO], speed=0, malformed_at={100, 400}) as srv:
        srv.send_malformed("not json at all")
        srv.send_malformed("[1, 2, 3]")
        srv.send_malformed('{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "x"}}')
        srv.send_malformed('{"hello": "world"}')
        client = Client(make_feed(srv))
        await play_out(srv, client)
    st = client.feed.stats
    assert srv.stats.malformed_sent == 6
    assert st.bad_messages == 6
    assert st.connects == 1 and st.gaps == 0
    b = client.builders["nexousdt"]
    assert b.mismatches == 0  # unpaced: how many tickers get checked depends on timing
    assert_same_book(client, srv, "nexousdt", NEXO_SCALE)


async def test_request_resync_from_the_engine() -> None:
    asked: list[bool] = []

    def on_event(c: Client, ev: Any) -> None:
        if not asked and isinstance(ev, DepthDiff) and c.builders["nexousdt"].checks >= 5:
            asked.append(c.feed.request_resync("nexousdt"))
            asked.append(c.feed.request_resync("nexousdt"))  # already on its way

    async with ReplayServer([NEXO], speed=FAST) as srv:
        feed = make_feed(srv)
        with pytest.raises(KeyError):
            feed.request_resync("btcusdt")
        client = Client(feed, on_event)
        await play_out(srv, client)
    assert asked == [True, False]
    resync = [s for s in client.statuses if s.kind == "resync"]
    assert len(resync) == 1 and resync[0].detail == "requested"
    assert client.feed.stats.snapshots == 2
    b = client.builders["nexousdt"]
    assert b.mismatches == 0 and client.builder_gaps == 0
    assert_same_book(client, srv, "nexousdt", NEXO_SCALE)


async def test_snapshot_http_errors_are_retried() -> None:
    async with ReplayServer([NEXO], speed=FAST, rest_fail_first=2) as srv:
        client = Client(make_feed(srv))
        await play_out(srv, client)
    st = client.feed.stats
    assert st.snapshot_errors == 2 and st.snapshots == 1
    assert srv.stats.rest_errors == 2
    b = client.builders["nexousdt"]
    assert b.checks > 0 and b.mismatches == 0


async def test_idle_connection_is_dropped_and_reopened() -> None:
    # 1e-4x: after the first message the next one is minutes away
    async with ReplayServer([NEXO], speed=1e-4) as srv:
        feed = make_feed(srv, idle_timeout=0.3)
        client = Client(feed)
        task = asyncio.create_task(client.run())
        deadline = time.monotonic() + 5
        while feed.stats.connects < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await feed.aclose()
        await asyncio.wait_for(task, 5)
    assert feed.stats.connects >= 2 and feed.stats.reconnects >= 1
    assert "disconnected" in client.kinds()
    d = next(s for s in client.statuses if s.kind == "disconnected")
    assert "no message" in d.detail


async def test_looping_server_restarts_and_client_resyncs() -> None:
    # 800 lines (~8 minutes of data) per pass at 1000x: a pass takes ~0.5 s
    async with ReplayServer([NEXO], speed=FAST, loop=True, limit=800) as srv:
        feed = make_feed(srv)
        client = Client(feed)
        task = asyncio.create_task(client.run())
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not (
            srv.stats.passes >= 2 and feed.stats.resyncs >= 1 and feed.synced("nexousdt")
        ):
            await asyncio.sleep(0.02)
        await feed.aclose()
        await asyncio.wait_for(task, 5)
    assert srv.stats.passes >= 2 and feed.stats.reconnects >= 1
    assert "reconnect" in [s.detail for s in client.statuses if s.kind == "resync"]
    b = client.builders["nexousdt"]
    assert b.checks > 0 and b.mismatches == 0 and client.builder_gaps == 0


async def test_invalid_url_fails_at_once() -> None:
    feed = BinanceWSFeed({"nexousdt": NEXO_SCALE}, "http://127.0.0.1:1", "http://127.0.0.1:1")
    with pytest.raises(UserInputError, match="ws_url"):
        await asyncio.wait_for(feed.__anext__(), 5)
    await feed.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_backs_off_then_gives_up() -> None:
    port = free_port()
    feed = BinanceWSFeed(
        {"nexousdt": NEXO_SCALE},
        f"ws://127.0.0.1:{port}",
        f"http://127.0.0.1:{port}",
        backoff_initial=0.01,
        backoff_max=0.05,
        max_retries=3,
        open_timeout=1.0,
    )
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="gave up after 3 retries"):
        async for _ in feed:
            pass
    assert time.monotonic() - t0 < 30  # gives up, does not retry forever
    assert feed.stats.connect_failures == 4 and feed.stats.connects == 0
    await feed.aclose()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]:
        for _ in range(20):
            d = backoff_delay(attempt, 0.5, 30.0, 0.3, rng)
            assert base * 0.7 <= d <= base
    delays = {backoff_delay(3, 0.5, 30.0, 0.3, rng) for _ in range(10)}
    assert len(delays) > 1  # jittered
    assert backoff_delay(4, 1.0, 60.0, 0.0, rng) == 8.0


async def test_snapshot_older_than_the_stream_is_refused() -> None:
    feed = BinanceWSFeed({"nexousdt": NEXO_SCALE}, "ws://127.0.0.1:9", "http://127.0.0.1:9")
    st = feed._syms["nexousdt"]
    for first, last in [(100, 105), (106, 110), (111, 111)]:
        feed._on_diff(st, DepthDiff("nexousdt", 1, first, last, [(1, 1)], []), "{}")
    assert len(st.held) == 3
    old = DepthSnapshot("nexousdt", 2, 90, [(1, 5)], [(3, 5)])
    assert feed._accept_snapshot(st, old, "{}") is False
    assert feed.stats.stale_snapshots == 1 and len(st.held) == 3
    good = DepthSnapshot("nexousdt", 3, 107, [(1, 5)], [(3, 5)])
    assert feed._accept_snapshot(st, good, "{}") is True
    out = [feed._q.get_nowait() for _ in range(feed._q.qsize())]
    # first snapshot of the symbol: no "resync" note; then the held diffs in order
    assert [type(e).__name__ for e in out] == [
        "DepthSnapshot",
        "DepthDiff",
        "DepthDiff",
        "DepthDiff",
    ]
    assert st.last_u == 111 and not st.resyncing and feed.synced("nexousdt")
    # a diff that skips ids now is a gap: noted, held, and a new snapshot is asked for
    feed._syms["nexousdt"].task = None
    feed.stats.connected = True
    feed._on_diff(st, DepthDiff("nexousdt", 4, 120, 121, [], []), "{}")
    gap = feed._q.get_nowait()
    assert isinstance(gap, FeedStatus) and gap.kind == "gap"
    assert st.resyncing and len(st.held) == 1 and feed.stats.gaps == 1
    await feed.aclose()
    assert st.task is None


async def test_aclose_is_clean_and_stops_a_waiting_consumer() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        async with ReplayServer([NEXO], speed=1.0) as srv:  # real time: the consumer waits
            feed = make_feed(srv)
            got: list[Any] = []

            async def consume() -> None:
                async for ev in feed:
                    got.append(ev)

            task = asyncio.create_task(consume())
            deadline = time.monotonic() + 5
            while not feed.synced("nexousdt") and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert feed.synced("nexousdt")
            await feed.aclose()  # from another task, while the consumer waits
            await asyncio.wait_for(task, 2)
            await feed.aclose()  # twice is fine
            with pytest.raises(StopAsyncIteration):
                await feed.__anext__()
            assert feed.closed and not feed.stats.connected
            assert feed._task is not None and feed._task.done()
            assert all(s.task is None for s in feed._syms.values())
            assert feed._session is None
            assert any(isinstance(e, DepthSnapshot) for e in got)
        await asyncio.sleep(0.05)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []
        assert errors == []
    finally:
        loop.set_exception_handler(None)


async def test_bad_numbers_are_counted_and_never_drop_the_connection() -> None:
    bad = [
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "1e400", "q": "1", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": 1e400, "q": "1", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "NaN", "q": "1", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "inf", "q": "1", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "-1.2", "q": "1", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "1.2", "q": "-5", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": "abc", "q": "1", "m": true}}',
        '{"stream": "nexousdt@trade", "data": {"e": "trade", "p": [1], "q": "1", "m": "x"}}',
        '{"stream": "nexousdt@bookTicker", "data": {"u": 1, "b": "1e400", "B": "1", '
        '"a": "1.3", "A": "1"}}',
        '{"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": "x", "u": 2, '
        '"b": [], "a": []}}',
        '{"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": 1, "u": 2, '
        '"b": [["nan", "1"]], "a": []}}',
        '{"stream": "nexousdt@depth@100ms", "data": [1, 2]}',
    ]
    async with ReplayServer([NEXO], speed=0) as srv:
        for text in bad:
            srv.send_malformed(text)
        client = Client(make_feed(srv))
        await play_out(srv, client)
    st = client.feed.stats
    assert srv.stats.malformed_sent == len(bad)
    assert st.bad_messages == len(bad)
    assert st.connects == 1 and st.reconnects == 0 and st.gaps == 0
    assert_same_book(client, srv, "nexousdt", NEXO_SCALE)
