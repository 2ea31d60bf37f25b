"""REST snapshots of the live feed: rate-limited per symbol, and a failing one warns once.

A loopback ReplayServer plays the bundled NEXO recording; nothing touches the internet.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

from kit.data import NEXO_23 as NEXO
from loguru import logger
from test_ws_feed import NEXO_SCALE, Client, make_feed, play_out

from flashmm.feeds.binance import Scale
from flashmm.feeds.server import ReplayServer
from flashmm.feeds.ws import BinanceWSFeed


async def test_many_gaps_fetch_at_most_one_snapshot_per_interval() -> None:
    # 50 gaps within ~1 s of play: without a limit, 50 snapshot requests
    drops = set(range(200, 1200, 20))
    async with ReplayServer([NEXO], speed=1000.0, drop_diffs=drops) as srv:
        client = Client(make_feed(srv, snapshot_min_interval=0.5))
        t0 = time.monotonic()
        await play_out(srv, client, timeout=20.0)
        elapsed = time.monotonic() - t0
    st = client.feed.stats
    assert st.gaps >= 2 and st.snapshots_delayed >= 1
    # the first snapshot, then at most one per 0.5 s (a slower machine only loosens this)
    assert srv.stats.rest_requests <= 2 + math.ceil(elapsed / 0.5), (
        srv.stats.rest_requests,
        elapsed,
    )
    b = client.builders["nexousdt"]
    assert b.mismatches == 0


async def test_a_symbol_the_server_does_not_serve_warns_once() -> None:
    warnings: list[str] = []
    sink = logger.add(
        lambda m: warnings.append(str(m)),
        level="WARNING",
        filter=lambda r: "ethusdt snapshot failed" in r["message"],
    )
    scales: dict[str, Any] = {"nexousdt": NEXO_SCALE, "ethusdt": Scale.of(0.01, 0.0001)}
    try:
        async with ReplayServer([NEXO], speed=10.0, loop=True) as srv:
            feed = BinanceWSFeed(
                scales,
                srv.ws_url,
                srv.rest_url,
                5000,
                backoff_initial=0.01,
                backoff_max=0.02,
                rng=random.Random(5),
            )
            task = asyncio.create_task(Client(feed).run())
            deadline = time.monotonic() + 30
            while feed.stats.snapshot_errors < 15 or not feed.synced("nexousdt"):
                assert time.monotonic() < deadline, feed.stats.as_dict()
                await asyncio.sleep(0.05)
            await feed.aclose()
            await asyncio.wait_for(task, 5)
    finally:
        logger.remove(sink)
    assert len(warnings) == 1, warnings  # "Invalid symbol." once, then quietly
