"""Strategy rounding, skew and levels; risk limits as invariants (Hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmm.accounting import Accounting
from flashmm.config import RiskConfig
from flashmm.risk import KillSwitch, RiskManager
from flashmm.strategy import QuoteContext, get_strategy_class
from flashmm.strategy.avellaneda import AvellanedaStrategy
from flashmm.types import Fill, Liquidity, MarketSpec, Order, OrderRequest, OrderState, Side, Signal

SEI = MarketSpec("SEI/USDC", Decimal("0.001"), Decimal("0.01"), "nexousdt")


def ctx(
    bid: int = 1220,
    ask: int = 1222,
    pos: int = 0,
    sigma: float = 3.0,
    skew: float = 0.0,
    widen: float = 1.0,
) -> QuoteContext:
    return QuoteContext(
        SEI, 0, bid, ask, (bid + ask) / 2, pos, 160_000, sigma, Signal(), skew, widen
    )


def test_registry_finds_the_builtin() -> None:
    assert get_strategy_class("avellaneda") is AvellanedaStrategy
    with pytest.raises(KeyError):
        get_strategy_class("nope")


def test_three_levels_a_side_best_first_and_distinct() -> None:
    q = AvellanedaStrategy({}).quote(ctx())
    bids = [x for x in q if x.side is Side.BUY]
    asks = [x for x in q if x.side is Side.SELL]
    assert len(bids) == len(asks) == 3
    assert [b.price_ticks for b in bids] == sorted({b.price_ticks for b in bids}, reverse=True)
    assert [a.price_ticks for a in asks] == sorted({a.price_ticks for a in asks})
    assert bids[0].price_ticks < 1222 and asks[0].price_ticks > 1220
    # sizes grow by the multiplier
    assert bids[2].size_lots > bids[1].size_lots > bids[0].size_lots


@pytest.mark.parametrize(
    ("bid", "ask"), [(1220, 1221), (1220, 1222), (1000, 1100), (268250, 268251)]
)
def test_never_crosses_the_book(bid: int, ask: int) -> None:
    s = AvellanedaStrategy({"min_spread_bps": 0, "gamma": 0.01, "kappa": 100})
    for skew in (-500.0, 0.0, 500.0):
        for q in s.quote(ctx(bid, ask, skew=skew)):
            if q.side is Side.BUY:
                assert q.price_ticks <= ask - 1
            else:
                assert q.price_ticks >= bid + 1


def test_rounding_never_tightens() -> None:
    s = AvellanedaStrategy({"levels": 1, "min_spread_bps": 50, "max_spread_bps": 50})
    c = ctx(100_000, 100_002)
    r, half = s.reservation_and_half_spread(c)
    bid, ask = s.quote(c)
    assert bid.price_ticks <= c.mid * (1 + (r - half) / 1e4)
    assert ask.price_ticks >= c.mid * (1 + (r + half) / 1e4)


def test_inventory_skews_quotes_away_from_the_position() -> None:
    s = AvellanedaStrategy({})
    flat = s.quote(ctx(100_000, 100_002, pos=0))
    long = s.quote(ctx(100_000, 100_002, pos=100_000))
    short = s.quote(ctx(100_000, 100_002, pos=-100_000))
    assert long[0].price_ticks < flat[0].price_ticks  # long: lower bid
    assert long[3].price_ticks < flat[3].price_ticks  # and lower ask, to sell
    assert short[0].price_ticks > flat[0].price_ticks


def test_signal_skew_and_widening() -> None:
    s = AvellanedaStrategy({"levels": 1})
    base = s.quote(ctx(100_000, 100_002))
    up = s.quote(ctx(100_000, 100_002, skew=5.0))
    wide = s.quote(ctx(100_000, 100_002, widen=2.0))
    assert up[0].price_ticks > base[0].price_ticks and up[1].price_ticks > base[1].price_ticks
    assert wide[1].price_ticks - wide[0].price_ticks > base[1].price_ticks - base[0].price_ticks


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="min_spread_bps"):
        AvellanedaStrategy({"min_spread_bps": 10, "max_spread_bps": 5})


LIMIT = 2000.0


def _risk() -> RiskManager:
    return RiskManager(RiskConfig(max_position_usdc=LIMIT, max_order_usdc=500), [SEI])


def test_orders_are_cut_then_dropped_at_the_limit() -> None:
    risk = _risk()
    # 1000 USDC long at 1.000: room for 1000 more
    reqs = [
        OrderRequest("SEI/USDC", 1, Side.BUY, 1000, 60_000),
        OrderRequest("SEI/USDC", 2, Side.BUY, 999, 50_000),
    ]
    out = risk.check_orders(SEI, reqs, 100_000, [])
    assert out[0].size_lots == 50_000  # max order 500 USDC
    assert out[1].size_lots == 50_000  # cut to the 1000 USDC of room
    assert sum(o.size_lots for o in out) == 100_000
    at_limit = [OrderRequest("SEI/USDC", 4, Side.BUY, 1000, 100)]
    assert risk.check_orders(SEI, at_limit, 200_000, []) == []  # at the limit: buys dropped
    sells = risk.check_orders(
        SEI, [OrderRequest("SEI/USDC", 3, Side.SELL, 1001, 10_000)], 200_000, []
    )
    assert sells and sells[0].size_lots == 10_000  # the reducing side still quotes


def test_pending_cancels_count_against_the_limit() -> None:
    risk = _risk()
    live = [Order("SEI/USDC", 9, Side.BUY, 1000, 150_000, 150_000, OrderState.PENDING_CANCEL)]
    out = risk.check_orders(SEI, [OrderRequest("SEI/USDC", 1, Side.BUY, 1000, 100_000)], 0, live)
    assert out[0].size_lots == 50_000


orders_st = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 3000), st.integers(1, 400_000)
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            orders_st,
            st.lists(st.tuples(st.integers(0, 7), st.floats(0.0, 1.0)), max_size=6),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_no_sequence_of_fills_and_prices_breaches_the_position_limit(steps: list) -> None:  # type: ignore[type-arg]
    """Whatever we ask for and however (partially) it fills, no fill can take us past the limit."""
    risk = _risk()
    acct = Accounting([SEI], LIMIT)
    live: dict[int, Order] = {}
    cid = 0
    unit = 0.001 * 0.01
    for wanted, fills, cancel_some in steps:
        pos = acct.positions["SEI/USDC"].lots
        reqs = []
        for side, px, size in wanted:
            cid += 1
            reqs.append(OrderRequest("SEI/USDC", cid, side, px, size))
        if cancel_some:
            for o in list(live.values())[::2]:
                o.state = OrderState.PENDING_CANCEL  # may still fill
        for r in risk.check_orders(SEI, reqs, pos, live.values()):
            live[r.client_id] = Order.from_request(r, 0)
        for idx, share in fills:
            if not live:
                break
            o = list(live.values())[idx % len(live)]
            lots = max(1, int(o.remaining_lots * share))
            lots = min(lots, o.remaining_lots)
            old = acct.positions["SEI/USDC"].lots
            acct.on_fill(
                Fill("SEI/USDC", o.client_id, o.side, o.price_ticks, lots, 0.0, Liquidity.MAKER, 0)
            )
            o.remaining_lots -= lots
            if o.remaining_lots == 0:
                del live[o.client_id]
            new = acct.positions["SEI/USDC"].lots
            if abs(new) > abs(old):  # a fill that grows the position stays within the limit
                assert abs(new) * o.price_ticks * unit <= LIMIT + 1e-6
    assert acct.limit_breaches == 0


def test_accounting_average_cost_and_realized() -> None:
    acct = Accounting([SEI], LIMIT)
    acct.on_fill(Fill("SEI/USDC", 1, Side.BUY, 1000, 100, 0.01, Liquidity.MAKER, 0, "a"))
    acct.on_fill(Fill("SEI/USDC", 2, Side.BUY, 1010, 100, 0.01, Liquidity.MAKER, 0, "b"))
    p = acct.positions["SEI/USDC"]
    assert p.lots == 200 and p.avg_price_ticks == 1005
    acct.on_fill(Fill("SEI/USDC", 3, Side.SELL, 1020, 300, 0.01, Liquidity.MAKER, 0, "c"))
    # closed 200 lots at +15 ticks: 200 * 15 * 0.001 * 0.01 = 0.03 USDC; now short 100 at 1020
    assert p.realized_usdc == pytest.approx(0.03)
    assert p.lots == -100 and p.avg_price_ticks == 1020
    assert acct.unrealized("SEI/USDC", 1010) == pytest.approx(0.01)
    assert acct.market_pnl("SEI/USDC", 1010) == pytest.approx(0.03 + 0.01 - 0.03)
    acct.on_fill(
        Fill("SEI/USDC", 3, Side.SELL, 1020, 300, 0.01, Liquidity.MAKER, 0, "c")
    )  # duplicate id
    assert p.lots == -100


def test_kill_switch_trips_on_a_big_one_second_move_only() -> None:
    ks = KillSwitch(5.0, warmup_s=30, floor_bps=0.0)
    t = 0
    mid = 100_000.0
    for i in range(120):  # two minutes of small moves
        t += 500_000_000
        mid += 1 if i % 2 else -1
        assert ks.update(mid, t, tick_bps=0.1) is None
    t += 200_000_000
    assert ks.update(mid * 1.01, t, tick_bps=0.1) is not None  # 100 bps in 0.2 s
