"""A depth gap or a disconnect on the live Binance feed pulls that market's quotes at once.

The engine (paper venue) runs on a real BinanceWSFeed from a loopback ReplayServer.
Mid-run the server skips one depth update id (and, later, drops the connection) and
answers the next snapshot requests with HTTP 500 for a while, so the book stays
unsynced for a moment: from the feed's ``gap``/``disconnected`` status until the fresh
snapshot no order of the market may be live (every one pulled in the same call), and
quoting comes back after the re-sync.
"""

from __future__ import annotations

import random
import time

from conftest import ROOT
from kit.data import NEXO_23 as NEXO

from flashmm.config import load_config
from flashmm.engine import Engine
from flashmm.feeds.server import ReplayServer
from flashmm.feeds.ws import BinanceWSFeed
from flashmm.marketdata import DepthSnapshot, FeedStatus
from flashmm.runner import build_venue, engine_from, scales_for
from flashmm.types import OrderState

MKT = "SEI/USDC"


def _live(engine: Engine) -> list[OrderState]:
    return [
        o.state
        for o in engine.markets[MKT].orders.values()
        if o.state is not OrderState.PENDING_CANCEL
    ]


async def test_gap_and_disconnect_pull_quotes_until_resynced() -> None:
    cfg = load_config(
        ROOT / "configs" / "backtest.yaml",
        ["model.enabled=false", "risk.kill_switch_enabled=false", "risk.stale_feed_ms=60000"],
    )
    engine = engine_from(cfg, build_venue(cfg))
    scales = {k: v for k, v in scales_for(cfg.specs()).items() if k == "nexousdt"}
    async with ReplayServer([NEXO], speed=20.0, loop=True) as srv:
        feed = BinanceWSFeed(
            scales,
            srv.ws_url,
            srv.rest_url,
            5000,
            backoff_initial=0.2,
            backoff_max=0.4,
            rng=random.Random(3),
        )
        engine.on_gap = feed.request_resync
        faults = ["gap", "disconnected"]
        pulled_at: str | None = None  # the fault we are in, until its snapshot
        seen: list[str] = []
        resumed = 0
        events_unsynced = 0
        next_timer = 0
        deadline = time.monotonic() + 60
        try:
            async for ev in feed:
                now = time.time_ns()
                engine.on_market_event(ev, now)
                engine.pump_venue(now)
                if now >= next_timer:
                    engine.on_timer(now)
                    next_timer = now + engine.quote_period_ns
                if isinstance(ev, FeedStatus) and ev.kind in ("gap", "disconnected"):
                    pulled_at = ev.kind
                    seen.append(ev.kind)
                if pulled_at is not None:
                    if isinstance(ev, DepthSnapshot):
                        pulled_at = None  # re-synced: quotes may come back
                    else:
                        # from the gap on, in the same call: nothing of ours is live
                        assert _live(engine) == [], (pulled_at, _live(engine))
                        events_unsynced += 1
                elif faults and len(_live(engine)) >= 2:
                    # quoting: inject the next fault; the next snapshots fail for a while
                    srv.rest_fail_first = srv.stats.rest_requests + 2
                    if faults.pop(0) == "gap":
                        srv.drop_next_diff("nexousdt")
                    else:
                        await srv.close_clients()
                elif not faults and len(seen) == 2 and _live(engine):
                    resumed += 1
                    if resumed >= 3:
                        break
                assert time.monotonic() < deadline, (seen, feed.stats.as_dict())
        finally:
            await feed.aclose()
    # (a loaded machine may add a disconnect of its own: the server cuts a slow reader)
    assert "gap" in seen and "disconnected" in seen
    assert events_unsynced > 0  # the window was real: events arrived while unsynced
    assert feed.stats.gaps >= 1 and feed.stats.resyncs >= 2
