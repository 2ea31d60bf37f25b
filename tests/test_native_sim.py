"""The compiled simulator (flashmm/native/sim.py) against SimVenue, event for event.

Both venues see the same recorded tape and the same order flow (a ladder
requoted every 200 ms around the touch, some orders crossing, some takes,
some duplicates); every poll must return the same events (acks, rejects,
cancels, fills with fees and ids), with the same counters and queue positions.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kit.data import NEXO_23, NEXO_24, needs

from flashmm.book import BookBuilder, SequenceGap
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import DepthDiff, DepthSnapshot, Trade
from flashmm.native import kernels as K
from flashmm.native import levels_array
from flashmm.native.sim import NativeSim
from flashmm.types import MarketSpec, OrderRequest, Side
from flashmm.venues.sim import SimSettings, SimVenue

REF = "nexousdt"
MKT = "SEI/USDC"
SPEC = MarketSpec(MKT, Decimal("0.001"), Decimal("0.01"), REF)
NS_MS = 1_000_000


def _lockstep(paths: list[Path], settings: SimSettings, limit: int | None = None) -> dict[str, Any]:
    py = SimVenue({MKT: SPEC}, settings)
    builder = BookBuilder(REF)
    py.share_book(REF, builder)
    nat = NativeSim(settings, SPEC.unit_usdc, market=MKT)
    feed = ReplayFeed(paths, make_scales([(REF, 0.001, 0.01)]), align=False)
    lv = np.zeros(1 + 3 * 4096, dtype=np.int64)
    cid = itertools.count(1)
    live: dict[int, Side] = {}
    next_q = 0
    n_ev = n_fills = 0
    rng = np.random.default_rng(5)

    def poll(now: int) -> None:
        nonlocal n_fills
        a, b = py.poll(now), nat.poll(now)
        assert a == b, f"at {now}: {a[:3]} != {b[:3]}"
        for e in a:
            name = type(e).__name__
            if name in ("OrderCancelled", "OrderRejected"):
                live.pop(e.client_id, None)
            elif name == "Fill":
                n_fills += 1

    for ev in feed.events():
        now = ev.ts_ns
        n_ev += 1
        if limit is not None and n_ev > limit:
            break
        if next_q == 0:
            next_q = now
        while next_q <= now:  # a quote cycle: cancel all, place a ladder around the touch
            poll(next_q)
            book = builder.book
            if builder.synced and book.valid:
                cancels = [c for c in live if rng.random() < 0.7]
                places = []
                for _ in range(int(rng.integers(0, 4))):
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    off = int(rng.integers(-1, 4))
                    px = book.best_bid - off if side is Side.BUY else book.best_ask + off
                    c = next(cid)
                    if rng.random() < 0.02 and live:
                        c = next(iter(live))  # a duplicate client id
                    post = rng.random() > 0.05
                    places.append(OrderRequest(MKT, c, side, px, int(rng.integers(1, 3000)), post))
                    live[c] = side
                py.requote(MKT, cancels, places, next_q)
                nat.requote(cancels, places, next_q)
                if rng.random() < 0.01:
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    lim = book.best_ask + 2 if side is Side.BUY else book.best_bid - 2
                    py.take(MKT, side, 500, lim, next_q)
                    nat.take(int(side), 500, lim, next_q)
            next_q += 200 * NS_MS
        # the event: the venue first, then the shared book, then the book update
        py.on_market_event(ev, now)
        nat.run_due(now)
        if isinstance(ev, Trade):
            nat.on_trade(now, ev.price_ticks, ev.size_lots, ev.buyer_is_maker, ev.exch_ms)
        elif isinstance(ev, DepthDiff | DepthSnapshot):
            try:
                changed = builder.on_event(ev)
            except SequenceGap:
                changed = False
            if changed:
                if isinstance(ev, DepthSnapshot):  # the whole book (buffered diffs included)
                    bk = builder.book
                    levels_array(list(bk.bids.items()), list(bk.asks.items()), lv)
                    K.apply_levels(nat.ist, lv, True)
                else:
                    levels_array(ev.bids, ev.asks, lv)
                    K.apply_levels(nat.ist, lv, False)
                nat.set_synced(builder.synced)
                py.on_book_update(ev, now)
                exch = ev.exch_ms if isinstance(ev, DepthDiff) else 0
                nat.on_depth(now, exch)
        poll(now)
        if n_ev % 997 == 0:
            for c in list(live)[:4]:
                assert py.queue_ahead(MKT, c) == nat.queue_ahead(c)
    assert not nat.overflow
    got = nat.counters()
    want = {k: v for k, v in py.counters.as_dict().items() if k in got}
    assert got == want
    assert nat.position == py._markets[MKT].position
    return {"events": n_ev, "fills": n_fills, **got}


@pytest.mark.parametrize(
    "settings",
    [
        SimSettings(entry_latency_ms=100, cancel_latency_ms=100, feed_latency_ms=50),
        SimSettings(
            fill_model="printed_size",
            entry_latency_ms={"kind": "lognormal", "median_ms": 80, "sigma": 0.6},
            cancel_latency_ms={"kind": "lognormal", "median_ms": 120, "sigma": 0.4},
            feed_latency_ms={"kind": "lognormal", "median_ms": 30, "sigma": 0.5, "max_ms": 90},
            maker_fee_bps=-1.0,
            queue_power=2.0,
            seed=3,
        ),
        SimSettings(entry_latency_ms=0, cancel_latency_ms=250, feed_latency_ms=0, seed=9),
    ],
    ids=["whole_order", "printed_size_lognormal", "slow_cancels"],
)
def test_native_sim_matches_simvenue_on_the_bundled_nexo(settings: SimSettings) -> None:
    res = _lockstep([NEXO_23], settings)
    assert res["fills"] > 100 and res["rejects"] > 0 and res["cancel_misses"] >= 0


@needs(NEXO_24)
def test_native_sim_matches_simvenue_on_the_shared_nexo_day() -> None:
    res = _lockstep([NEXO_23, NEXO_24], SimSettings(fill_model="printed_size", seed=4))
    assert res["events"] > 100_000 and res["fills"] > 1000
