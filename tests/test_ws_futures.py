"""The live feed on USD-M futures: REST snapshots from /fapi/v1/depth and the futures
sequencing rule, against a loopback ReplayServer playing the real BTC futures recording."""

from __future__ import annotations

from typing import Any

from kit.data import FUT_BTC, needs
from test_ws_feed import Client, make_feed, play_out

from flashmm.feeds.binance import Scale
from flashmm.feeds.server import ReplayServer
from flashmm.marketdata import DepthSnapshot, MarketEvent

BTC_SCALE = Scale.of(0.1, 0.001)


@needs(FUT_BTC)
async def test_futures_snapshot_path_and_gap_resync() -> None:
    snaps: list[str] = []

    def sink(ev: MarketEvent, raw: str) -> None:
        if isinstance(ev, DepthSnapshot):
            snaps.append(raw)

    # 20,000 lines (about 80 s of the recording) at 200x; diff 300 is never sent: a gap
    kw: dict[str, Any] = {"speed": 200.0, "limit": 20_000, "drop_diffs": {300}}
    async with ReplayServer([FUT_BTC], **kw) as srv:
        feed = make_feed(srv, {"btcusdt": BTC_SCALE}, futures=True, raw_sink=sink)
        assert feed.depth_limit == 1000  # 5000 asked: the largest limit /fapi/v1/depth takes
        client = Client(feed)
        await play_out(srv, client, timeout=30.0)
    st = feed.stats
    assert srv.stats.diffs_dropped == 1, srv.stats
    # snapshots came from the futures endpoint (its reply carries E/T, the spot one does not)
    assert snaps and all('"E"' in s and '"T"' in s for s in snaps)
    assert st.gaps >= 1 and st.resyncs >= 1  # the dropped diff broke the pu chain
    assert client.builder_gaps == 0  # the feed re-synced before the builder saw a gap
    assert "gap" in client.kinds() and "resync" in client.kinds()
    # the client's book equals the server's over the 1000 levels a snapshot carries
    # (deeper levels the server holds from the recording are never sent)
    ref = srv.book_levels("btcusdt", 500)
    book = client.builders["btcusdt"].book
    assert client.builders["btcusdt"].last_id == ref["lastUpdateId"]

    def conv(levels: list[list[str]]) -> list[tuple[int, int]]:
        return [(round(float(p) * 10), round(float(q) * 1000)) for p, q in levels]

    assert book.top_bids(500) == conv(ref["bids"]) and book.top_asks(500) == conv(ref["asks"])
