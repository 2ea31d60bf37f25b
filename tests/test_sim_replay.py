"""SimVenue over the bundled 20-minute NEXO recording with a fixed quote ladder."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from kit.data import NEXO_23 as NEXO_20MIN

from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import DepthDiff
from flashmm.types import (
    NS_PER_MS,
    NS_PER_S,
    Fill,
    MarketSpec,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Side,
    VenueEvent,
)
from flashmm.venues.sim import SimSettings, SimVenue

REF = "nexousdt"
MKT = "SEI/USDC"
SPEC = MarketSpec(MKT, Decimal("0.001"), Decimal("0.01"), REF)


def run_ladder(settings: SimSettings, requote_every_s: float = 2.0) -> dict[str, object]:
    """Quote 3 levels a side (best and 1-2 ticks behind), 1000 lots each; requote often."""
    venue = SimVenue({MKT: SPEC}, settings)
    feed = ReplayFeed([NEXO_20MIN], make_scales([(REF, 0.001, 0.01)]))
    book = venue.book(MKT)
    orders: dict[int, OrderRequest] = {}
    placed_ns: dict[int, int] = {}
    live: list[int] = []
    events: list[VenueEvent] = []
    cid = 0
    next_quote = 0
    last_ns = 0
    for ev in feed.events():
        now = ev.ts_ns
        last_ns = now
        venue.on_market_event(ev, now)
        events.extend(venue.poll(now))
        if not isinstance(ev, DepthDiff) or now < next_quote or not book.valid:
            continue
        next_quote = now + int(requote_every_s * NS_PER_S)
        places = []
        for k in range(3):
            for side, px in ((Side.BUY, book.best_bid - k), (Side.SELL, book.best_ask + k)):
                cid += 1
                req = OrderRequest(MKT, cid, side, px, 1000)
                orders[cid] = req
                placed_ns[cid] = now
                places.append(req)
        venue.requote(MKT, live, places, now)
        live = [r.client_id for r in places]
    venue.cancel_all(MKT, last_ns)
    events.extend(venue.poll(last_ns + 10 * NS_PER_S))
    return {
        "venue": venue,
        "orders": orders,
        "placed_ns": placed_ns,
        "events": events,
    }


def test_ladder_over_nexo_20min_fills_sanely() -> None:
    settings = SimSettings(feed_latency_ms=20, entry_latency_ms=150, cancel_latency_ms=150)
    out = run_ladder(settings)
    venue = out["venue"]
    orders = out["orders"]
    placed = out["placed_ns"]
    events = out["events"]
    assert isinstance(venue, SimVenue) and isinstance(orders, dict)
    assert isinstance(placed, dict) and isinstance(events, list)
    fills = [e for e in events if isinstance(e, Fill)]
    assert len(fills) > 0
    filled: dict[int, int] = {}
    for f in fills:
        req = orders[f.client_id]
        assert f.side is req.side and f.price_ticks == req.price_ticks
        assert f.ts_ns >= placed[f.client_id] + 150 * NS_PER_MS
        assert f.size_lots > 0
        filled[f.client_id] = filled.get(f.client_id, 0) + f.size_lots
    for cid, lots in filled.items():
        assert lots <= orders[cid].size_lots
    net = sum(f.side * f.size_lots for f in fills)
    assert asyncio.run(venue.positions()) == {MKT: net}
    # every order ends up answered, and nothing is left open
    accepted = {e.client_id for e in events if isinstance(e, OrderAccepted)}
    rejected = {e.client_id for e in events if isinstance(e, OrderRejected)}
    assert accepted | rejected == set(orders)
    cancelled = {e.client_id for e in events if isinstance(e, OrderCancelled)}
    done = {c for c in filled if filled[c] == orders[c].size_lots}
    assert accepted <= cancelled | done
    assert asyncio.run(venue.open_orders()) == []
    counters = venue.counters
    assert counters.orders_sent == len(orders) and counters.fills == len(fills)
    assert counters.book_gaps == 0
    # delivered in venue-time order
    ts = [e.ts_ns for e in events]
    assert ts == sorted(ts)


def test_ladder_is_deterministic_with_random_latency() -> None:
    lat = {"kind": "lognormal", "median_ms": 100, "sigma": 0.6}
    s = SimSettings.model_validate(
        {"entry_latency_ms": lat, "cancel_latency_ms": lat, "feed_latency_ms": 20, "seed": 11}
    )

    def key(out: dict[str, object]) -> list[tuple[int, int, int]]:
        evs = out["events"]
        assert isinstance(evs, list)
        return [(e.client_id, e.size_lots, e.ts_ns) for e in evs if isinstance(e, Fill)]

    a = key(run_ladder(s))
    assert a and a == key(run_ladder(s))
