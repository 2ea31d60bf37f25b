"""SimVenue on hand-made tapes with known answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from flashmm.marketdata import DepthDiff, DepthSnapshot, Levels, Trade
from flashmm.types import (
    NS_PER_MS,
    Fill,
    Liquidity,
    MarketSpec,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderState,
    Side,
    VenueEvent,
)
from flashmm.venues.base import Venue
from flashmm.venues.sim import LognormalLatency, SimSettings, SimVenue

REF = "nexousdt"
MKT = "SEI/USDC"
SPEC = MarketSpec(MKT, Decimal("0.001"), Decimal("0.01"), REF)


def ms(x: float) -> int:
    return int(x * NS_PER_MS)


class Tape:
    """Drives a SimVenue with snapshot/diff/trade events; times in ms."""

    def __init__(self, **settings: Any) -> None:
        base: dict[str, Any] = {
            "feed_latency_ms": 0,
            "entry_latency_ms": 0,
            "cancel_latency_ms": 0,
        }
        base.update(settings)
        self.venue = SimVenue({MKT: SPEC}, SimSettings(**base))
        self.uid = 100
        self.events: list[VenueEvent] = []

    def snap(self, t: float, bids: Levels, asks: Levels) -> None:
        self.venue.on_market_event(DepthSnapshot(REF, ms(t), self.uid, bids, asks), ms(t))

    def diff(self, t: float, bids: Levels = (), asks: Levels = ()) -> None:  # type: ignore[assignment]
        self.uid += 1
        ev = DepthDiff(REF, ms(t), self.uid, self.uid, list(bids), list(asks))
        self.venue.on_market_event(ev, ms(t))

    def trade(self, t: float, price: int, size: int, *, sell: bool) -> None:
        self.venue.on_market_event(Trade(REF, ms(t), price, size, sell), ms(t))

    def place(self, t: float, cid: int, side: Side, price: int, size: int) -> None:
        self.venue.requote(MKT, [], [OrderRequest(MKT, cid, side, price, size)], ms(t))

    def cancel(self, t: float, *cids: int) -> None:
        self.venue.requote(MKT, list(cids), [], ms(t))

    def poll(self, t: float) -> list[VenueEvent]:
        out = self.venue.poll(ms(t))
        self.events.extend(out)
        return out

    def fills(self) -> list[Fill]:
        return [e for e in self.events if isinstance(e, Fill)]


def standard(**settings: Any) -> Tape:
    """Bids 1000x50, 999x80; asks 1002x40, 1003x60, 1004x500."""
    tp = Tape(**settings)
    tp.snap(0, [(1000, 50), (999, 80)], [(1002, 40), (1003, 60), (1004, 500)])
    return tp


def test_sim_is_a_venue() -> None:
    v = SimVenue({MKT: SPEC}, SimSettings())
    assert isinstance(v, Venue)
    assert v.name == "sim"


def test_settings_forbid_extra_and_parse_distributions() -> None:
    s = SimSettings.model_validate(
        {"entry_latency_ms": {"kind": "lognormal", "median_ms": 80, "sigma": 0.4}}
    )
    assert isinstance(s.entry_latency_ms, LognormalLatency)
    assert SimSettings(cancel_latency_ms={"kind": "constant", "ms": 5}).cancel_latency_ms.ms == 5  # type: ignore[arg-type,union-attr]
    with pytest.raises(ValidationError):
        SimSettings.model_validate({"entry_latncy_ms": 5})
    with pytest.raises(ValidationError):
        SimSettings.model_validate({"feed_latency_ms": {"kind": "gamma", "ms": 1}})
    with pytest.raises(ValidationError):
        SimSettings(queue_power=0)


def test_joins_behind_displayed_size_and_trades_advance_queue() -> None:
    tp = standard()
    tp.place(1, 1, Side.BUY, 1000, 10)
    assert tp.poll(1) == [OrderAccepted(MKT, 1, ms(1))]
    assert tp.venue.queue_ahead(MKT, 1) == 50
    tp.trade(2, 1000, 30, sell=True)  # eats 30 of the 50 ahead
    assert tp.venue.queue_ahead(MKT, 1) == 20
    assert tp.poll(2) == []
    # the diff that shows those 30 traded lots is explained: queue unchanged
    tp.diff(3, bids=[(1000, 20)])
    assert tp.venue.queue_ahead(MKT, 1) == 20
    tp.trade(4, 1000, 25, sell=True)  # 20 ahead, then 5 for us: partial fill
    (f,) = tp.poll(4)
    assert isinstance(f, Fill)
    assert (f.client_id, f.side, f.price_ticks, f.size_lots) == (1, Side.BUY, 1000, 5)
    assert f.liquidity is Liquidity.MAKER and f.fee_usdc == 0.0
    assert tp.venue.queue_ahead(MKT, 1) == 0
    tp.trade(5, 1000, 100, sell=True)  # more than we have left: capped at 5
    (f2,) = tp.poll(5)
    assert isinstance(f2, Fill) and f2.size_lots == 5
    assert tp.venue.queue_ahead(MKT, 1) is None  # done
    tp.trade(6, 1000, 100, sell=True)
    assert tp.poll(6) == []
    assert sum(f.size_lots for f in tp.fills()) == 10


def test_buy_trades_at_our_bid_price_do_not_eat_bid_queue_from_asks() -> None:
    tp = standard()
    tp.place(1, 1, Side.SELL, 1002, 10)
    tp.trade(2, 1000, 60, sell=True)  # sells on the bid side: nothing for our ask
    tp.trade(3, 1002, 39, sell=False)  # 40 ahead
    tp.poll(3)
    assert tp.fills() == [] and tp.venue.queue_ahead(MKT, 1) == 1
    tp.trade(4, 1002, 4, sell=False)
    tp.poll(4)
    assert [(f.side, f.size_lots, f.price_ticks) for f in tp.fills()] == [(Side.SELL, 3, 1002)]


def test_trade_through_our_price_fills_fully() -> None:
    tp = standard()
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.place(1, 2, Side.SELL, 1003, 7)
    tp.trade(2, 999, 1, sell=True)  # a sell below our bid: the queue at 1000 is gone
    tp.trade(2, 1004, 1, sell=False)  # a buy above our ask
    tp.poll(2)
    got = sorted((f.client_id, f.size_lots, f.price_ticks) for f in tp.fills())
    assert got == [(1, 10, 1000), (2, 7, 1003)]


def test_book_moving_through_our_price_fills_fully() -> None:
    tp = standard()
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.place(1, 2, Side.SELL, 1003, 4)
    tp.diff(2, asks=[(1002, 0), (1001, 0), (1000, 25)])  # best ask 1000 <= our bid
    tp.poll(2)
    assert [(f.client_id, f.size_lots, f.price_ticks) for f in tp.fills()] == [(1, 10, 1000)]
    tp.diff(3, bids=[(1003, 9)], asks=[(1000, 0), (1005, 1)])  # best bid 1003 >= our ask
    tp.poll(3)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 10), (2, 4)]
    assert tp.venue.counters.fills == 2 and tp.venue.counters.fill_lots == 14


@pytest.mark.parametrize(("power", "expected"), [(2.0, 32.0), (3.0, 36.8)])
def test_cancels_at_level_advance_queue_by_power_prob(power: float, expected: float) -> None:
    tp = Tape(queue_power=power)
    tp.snap(0, [(1000, 40)], [(1002, 40)])
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.poll(1)  # actions due now run on the next poll or event
    assert tp.venue.queue_ahead(MKT, 1) == 40
    tp.diff(2, bids=[(1000, 100)])  # 60 join behind us
    assert tp.venue.queue_ahead(MKT, 1) == 40
    tp.diff(3, bids=[(1000, 50)])  # 50 cancelled, x = 0.4: x**n of it was ahead
    assert tp.venue.queue_ahead(MKT, 1) == pytest.approx(expected)


def test_cancel_bigger_than_behind_comes_from_ahead() -> None:
    tp = Tape(queue_power=3.0)
    tp.snap(0, [(1000, 40)], [(1002, 40)])
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.diff(2, bids=[(1000, 50)])  # 10 behind
    tp.diff(3, bids=[(1000, 15)])  # 35 gone: at most 10 of it from behind
    ahead = tp.venue.queue_ahead(MKT, 1)
    assert ahead is not None and ahead <= 15
    tp.diff(4, bids=[(1000, 0)])  # level empty: we are first
    assert tp.venue.queue_ahead(MKT, 1) == 0
    tp.diff(5, bids=[(1000, 30)])  # refills behind us
    assert tp.venue.queue_ahead(MKT, 1) == 0


def test_depth_decrease_partly_explained_by_trades() -> None:
    tp = Tape(queue_power=2.0)
    tp.snap(0, [(1000, 40)], [(1002, 40)])
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.diff(2, bids=[(1000, 100)])
    tp.trade(3, 1000, 10, sell=True)  # ahead 40 -> 30
    tp.diff(4, bids=[(1000, 40)])  # 60 less: 10 traded, 50 cancelled
    # level was 100 with 30 ahead: x = 0.3, share 0.09 -> 30 - 4.5
    assert tp.venue.queue_ahead(MKT, 1) == pytest.approx(25.5)


def test_entry_latency_order_not_live_before() -> None:
    tp = standard(entry_latency_ms=100)
    tp.place(0, 1, Side.BUY, 1000, 10)
    assert tp.venue.queue_ahead(MKT, 1) is None
    tp.trade(50, 999, 5, sell=True)  # through our price, but we are not there yet
    assert tp.poll(50) == []
    tp.diff(80, bids=[(1000, 30)])
    tp.trade(150, 1000, 29, sell=True)  # joined behind 30 at t=100
    evs = tp.poll(150)
    assert evs == [OrderAccepted(MKT, 1, ms(100))]
    assert tp.venue.queue_ahead(MKT, 1) == 1
    tp.trade(160, 1000, 3, sell=True)
    (f,) = tp.poll(160)
    assert isinstance(f, Fill) and f.size_lots == 2 and f.ts_ns == ms(160)


def test_fill_while_cancel_in_flight() -> None:
    tp = standard(cancel_latency_ms=100)
    tp.place(0, 1, Side.BUY, 1000, 10)
    tp.cancel(10, 1)
    orders = _open_orders(tp)
    assert [(o.client_id, o.state) for o in orders] == [(1, OrderState.PENDING_CANCEL)]
    tp.trade(50, 1000, 54, sell=True)  # 50 ahead, 4 for us before the cancel lands
    tp.trade(120, 1000, 54, sell=True)  # after the cancel: nothing
    evs = tp.poll(200)
    assert [type(e) for e in evs] == [OrderAccepted, Fill, OrderCancelled]
    assert isinstance(evs[1], Fill) and evs[1].size_lots == 4
    assert evs[2] == OrderCancelled(MKT, 1, ms(110))
    assert _open_orders(tp) == []
    assert tp.venue.counters.cancels_sent == 1


def test_cancel_after_full_fill_is_a_miss() -> None:
    tp = standard(cancel_latency_ms=100)
    tp.place(0, 1, Side.BUY, 1000, 10)
    tp.cancel(10, 1)
    tp.trade(50, 999, 1, sell=True)  # filled through while the cancel is in flight
    evs = tp.poll(200)
    assert [type(e) for e in evs] == [OrderAccepted, Fill]
    assert tp.venue.counters.cancel_misses == 1


def test_cancel_before_order_arrives() -> None:
    tp = standard(entry_latency_ms=100, cancel_latency_ms=10)
    tp.place(0, 1, Side.BUY, 1000, 10)
    tp.cancel(5, 1)
    tp.trade(150, 999, 1, sell=True)
    assert tp.poll(200) == [OrderCancelled(MKT, 1, ms(15))]


def test_post_only_reject() -> None:
    tp = standard()
    tp.place(1, 1, Side.BUY, 1002, 10)  # at the best ask
    tp.place(1, 2, Side.SELL, 999, 10)  # below the best bid
    tp.place(1, 3, Side.BUY, 1001, 10)  # inside the spread: fine
    evs = tp.poll(1)
    assert evs == [
        OrderRejected(MKT, 1, ms(1), "post-only would cross"),
        OrderRejected(MKT, 2, ms(1), "post-only would cross"),
        OrderAccepted(MKT, 3, ms(1)),
    ]
    assert tp.venue.counters.rejects == 2 and tp.venue.counters.orders_sent == 3
    assert tp.venue.queue_ahead(MKT, 3) == 0


def test_post_only_checked_when_order_goes_live() -> None:
    tp = standard(entry_latency_ms=100)
    tp.place(0, 1, Side.BUY, 1001, 10)  # fine now
    tp.diff(50, asks=[(1001, 5)])  # but an ask arrives at 1001 before we do
    (ev,) = tp.poll(100)
    assert isinstance(ev, OrderRejected) and ev.reason == "post-only would cross"


def test_duplicate_client_id_rejected() -> None:
    tp = standard()
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.place(2, 1, Side.BUY, 999, 10)
    evs = tp.poll(2)
    assert isinstance(evs[1], OrderRejected) and evs[1].reason == "duplicate client id"


def test_take_walks_levels_with_taker_fees() -> None:
    tp = standard(entry_latency_ms=20, taker_fee_bps=5)
    tp.venue.take(MKT, Side.BUY, 120, 1003, ms(0))
    tp.diff(10, asks=[(1002, 30)])  # before the take lands
    evs = tp.poll(20)
    fills = [e for e in evs if isinstance(e, Fill)]
    assert [(f.price_ticks, f.size_lots) for f in fills] == [(1002, 30), (1003, 60)]
    for f in fills:
        assert f.client_id == 0 and f.liquidity is Liquidity.TAKER and f.side is Side.BUY
        assert f.fee_usdc == pytest.approx(f.price_ticks * 0.001 * f.size_lots * 0.01 * 5e-4)
        assert f.ts_ns == ms(20)
    assert evs[-1] == OrderCancelled(MKT, 0, ms(20))  # 30 lots left unfilled
    assert _positions(tp) == {MKT: 90}
    tp.venue.take(MKT, Side.SELL, 60, 999, ms(30))
    evs = tp.poll(100)
    assert [(e.price_ticks, e.size_lots) for e in evs if isinstance(e, Fill)] == [
        (1000, 50),
        (999, 10),
    ]
    assert not any(isinstance(e, OrderCancelled) for e in evs)
    assert _positions(tp) == {MKT: 30}


def test_maker_rebate_is_negative_fee() -> None:
    tp = standard(maker_fee_bps=-1)
    tp.place(1, 1, Side.SELL, 1002, 10)
    tp.trade(2, 1003, 1, sell=False)
    (_, f) = tp.poll(2)
    assert isinstance(f, Fill)
    assert f.fee_usdc == pytest.approx(-1002 * 0.001 * 10 * 0.01 * 1e-4)


def test_poll_respects_response_latency() -> None:
    tp = standard(entry_latency_ms=10, feed_latency_ms=30)
    tp.place(0, 1, Side.BUY, 1000, 10)
    assert tp.poll(39) == []
    assert tp.poll(40) == [OrderAccepted(MKT, 1, ms(10))]
    tp.trade(50, 999, 1, sell=True)
    assert tp.poll(79) == []
    (f,) = tp.poll(80)
    assert isinstance(f, Fill) and f.ts_ns == ms(50)


def test_fifo_delivery_with_random_feed_latency() -> None:
    tp = standard(feed_latency_ms={"kind": "lognormal", "median_ms": 20, "sigma": 1.5}, seed=3)
    for i in range(30):
        tp.place(i, i + 1, Side.BUY, 990 - i, 1)
    evs = tp.poll(100_000)
    assert [e.client_id for e in evs] == list(range(1, 31))


def test_two_of_our_orders_at_one_price_queue_in_order() -> None:
    tp = standard()
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.diff(2, bids=[(1000, 60)])
    tp.place(3, 2, Side.BUY, 1000, 10)  # 60 ahead, and our order 1 too
    # 50 ahead of order 1, then 10 for it; the 5 left over would reach order 2
    # only past order 1 as well, so one trade never fills more than it traded
    tp.trade(4, 1000, 65, sell=True)
    tp.poll(4)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 10)]
    assert tp.venue.queue_ahead(MKT, 2) == 0  # the reference queue lost 65 from the front
    tp.trade(5, 1000, 6, sell=True)
    tp.poll(5)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 10), (2, 6)]


def _run_random_tape(seed: int) -> list[tuple[int, int, int, int]]:
    import random

    rng = random.Random(7)  # the tape is fixed; only the venue seed varies
    tp = standard(
        seed=seed,
        entry_latency_ms={"kind": "lognormal", "median_ms": 30, "sigma": 0.8},
        cancel_latency_ms={"kind": "lognormal", "median_ms": 30, "sigma": 0.8},
        feed_latency_ms={"kind": "lognormal", "median_ms": 10, "sigma": 0.5},
    )
    cid = 0
    live: list[int] = []
    for step in range(400):
        t = 10.0 * step
        r = rng.random()
        if r < 0.3:
            tp.trade(
                t, rng.choice([999, 1000, 1002, 1003]), rng.randint(1, 40), sell=rng.random() < 0.5
            )
        elif r < 0.6:
            tp.diff(t, bids=[(1000, rng.randint(0, 100))], asks=[(1002, rng.randint(1, 100))])
        else:
            if live and rng.random() < 0.5:
                tp.cancel(t, live.pop(0))
            cid += 1
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            tp.place(t, cid, side, 1000 if side is Side.BUY else 1002, rng.randint(1, 20))
            live.append(cid)
        tp.poll(t)
    tp.poll(1e9)
    return [(f.client_id, f.size_lots, f.price_ticks, f.ts_ns) for f in tp.fills()]


def test_determinism_same_seed_same_fills() -> None:
    a = _run_random_tape(1)
    assert a and a == _run_random_tape(1)


def _open_orders(tp: Tape) -> list[Any]:
    import asyncio

    return asyncio.run(tp.venue.open_orders())


def _positions(tp: Tape) -> dict[str, int]:
    import asyncio

    return asyncio.run(tp.venue.positions())


def test_late_trade_already_in_the_diff_does_not_explain_a_later_decrease() -> None:
    tp = Tape(queue_power=2.0)
    tp.snap(0, [(1000, 40)], [(1002, 40)])
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.diff(2, bids=[(1000, 100)])
    # a diff stamped 1_000 ms on the exchange shows 10 traded lots gone ...
    tp.uid += 1
    d = DepthDiff(REF, ms(3), tp.uid, tp.uid, [(1000, 90)], [], exch_ms=1_000)
    tp.venue.on_market_event(d, ms(3))
    # ... and the trade (exchange time 999 ms) arrives after it
    tp.venue.on_market_event(Trade(REF, ms(4), 1000, 10, True, exch_ms=999), ms(4))
    # the 10 lots were first counted as cancels (x = 0.4, 1.6 ahead), then traded
    assert tp.venue.queue_ahead(MKT, 1) == pytest.approx(40 - 1.6 - 10)
    # a later cancel of 50 is all cancel: nothing left over from that trade
    ahead = 40 - 1.6 - 10
    tp.diff(5, bids=[(1000, 40)])
    share = (ahead / 90) ** 2
    assert tp.venue.queue_ahead(MKT, 1) == pytest.approx(ahead - share * 50)


def test_crossing_order_without_post_only_runs_as_taker() -> None:
    tp = standard(taker_fee_bps=5)
    req = OrderRequest(MKT, 7, Side.BUY, 1003, 120, post_only=False)
    tp.venue.requote(MKT, [], [req], ms(1))
    evs = tp.poll(1)
    assert evs[0] == OrderAccepted(MKT, 7, ms(1))
    fills = [e for e in evs if isinstance(e, Fill)]
    assert [(f.client_id, f.price_ticks, f.size_lots, f.liquidity) for f in fills] == [
        (7, 1002, 40, Liquidity.TAKER),
        (7, 1003, 60, Liquidity.TAKER),
    ]
    assert evs[-1] == OrderCancelled(MKT, 7, ms(1))
    assert _open_orders(tp) == []


def test_unknown_market_raises_venue_error() -> None:
    from flashmm.venues.base import VenueError

    v = SimVenue({MKT: SPEC}, SimSettings())
    with pytest.raises(VenueError, match="unknown market"):
        v.requote("ETH/USDC", [], [], 0)
