"""Hypothesis properties of the core: the L2 book against a dict model, and accounting
against exact arithmetic (position, average cost, realized and total P&L)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmm.accounting import Accounting
from flashmm.book import BookBuilder, SequenceGap
from flashmm.marketdata import DepthDiff, DepthSnapshot
from flashmm.types import Fill, Liquidity, MarketSpec, Side

# --- the book -------------------------------------------------------------------------

levels = st.lists(
    st.tuples(st.integers(1, 60), st.integers(0, 5)), max_size=8
)  # (price ticks, lots); 0 lots removes the level
diffs = st.lists(st.tuples(levels, levels, st.integers(1, 3)), max_size=40)


def _apply(model: dict[int, int], changes: list[tuple[int, int]]) -> None:
    for p, q in changes:
        if q:
            model[p] = q
        else:
            model.pop(p, None)


def _check(builder: BookBuilder, bids: dict[int, int], asks: dict[int, int]) -> None:
    book = builder.book
    assert dict(book.bids) == bids
    assert dict(book.asks) == asks
    assert book.best_bid == (max(bids) if bids else 0)
    assert book.best_ask == (min(asks) if asks else 0)
    assert book.top_bids(3) == sorted(bids.items(), reverse=True)[:3]
    assert book.top_asks(3) == sorted(asks.items())[:3]
    assert book.valid == (bool(bids) and bool(asks) and max(bids) < min(asks))
    if bids and asks:
        assert book.mid2 == max(bids) + min(asks)


@settings(max_examples=200, deadline=None)
@given(
    snap_bids=levels,
    snap_asks=levels,
    steps=diffs,
    early=st.integers(0, 3),
)
def test_book_follows_a_dict_model(
    snap_bids: list[tuple[int, int]],
    snap_asks: list[tuple[int, int]],
    steps: list[tuple[list[tuple[int, int]], list[tuple[int, int]], int]],
    early: int,
) -> None:
    """Random snapshot and diffs, each diff continuing the last update id: after every
    diff the book equals the dict model, best prices and top levels included. Diffs
    that arrive before the snapshot are buffered and the stale ones dropped."""
    b = BookBuilder("x")
    snap_id = 100
    # diffs before the snapshot, all at or below its update id: buffered, then dropped
    pre = [
        DepthDiff("x", 0, snap_id - early + i, snap_id - early + i, [(1, 1)], [])
        for i in range(early)
    ]
    for d in pre:
        assert b.on_diff(d) is False
    bids = {p: q for p, q in snap_bids if q}
    asks = {p: q for p, q in snap_asks if q}
    b.on_snapshot(DepthSnapshot("x", 0, snap_id, snap_bids, snap_asks))
    assert b.synced and b.diffs_dropped == early
    _check(b, bids, asks)
    last = snap_id
    for i, (db, da, n) in enumerate(steps):
        version = b.book.version
        assert b.on_diff(DepthDiff("x", i, last + 1, last + n, db, da)) is True
        last += n
        _apply(bids, db)
        _apply(asks, da)
        assert b.book.version == version + 1
        _check(b, bids, asks)
        # the same update ids again (a replayed message) change nothing
        assert b.on_diff(DepthDiff("x", i, last - n + 1, last, [(7, 7)], [(9, 9)])) is False
        _check(b, bids, asks)


@settings(max_examples=100, deadline=None)
@given(skip=st.integers(1, 50), steps=diffs)
def test_a_skipped_update_id_is_a_gap_until_the_next_snapshot(
    skip: int, steps: list[tuple[list[tuple[int, int]], list[tuple[int, int]], int]]
) -> None:
    b = BookBuilder("x")
    b.on_snapshot(DepthSnapshot("x", 0, 10, [(5, 1)], [(6, 1)]))
    with pytest.raises(SequenceGap):
        b.on_diff(DepthDiff("x", 0, 11 + skip, 11 + skip, [(4, 1)], []))
    assert not b.synced and b.gaps == 1
    for db, da, n in steps:  # nothing applies while out of sync
        assert b.on_diff(DepthDiff("x", 0, 100, 100 + n, db, da)) is False
    assert dict(b.book.bids) == {5: 1}
    b.on_snapshot(DepthSnapshot("x", 0, 1000, [(3, 2)], [(8, 2)]))
    assert b.synced
    _check(b, {3: 2}, {8: 2})


# --- accounting -----------------------------------------------------------------------

SPEC = MarketSpec("SEI/USDC", Decimal("0.001"), Decimal("0.01"), "nexousdt")
UNIT = Fraction(1, 1000) * Fraction(1, 100)

fills = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 5000),  # price ticks
        st.integers(1, 400),  # lots
        st.integers(-20, 50),  # fee in 0.001 USDC (negative: a rebate)
        st.booleans(),  # the venue reports this fill twice
    ),
    max_size=60,
)


def _reference(
    trades: list[tuple[Side, int, int, int, bool]],
) -> tuple[int, Fraction, Fraction, Fraction, Fraction]:
    """Average-cost accounting in exact fractions: lots, average price (ticks),
    realized P&L, fees and cash (USDC)."""
    lots, avg, realized, fees, cash = 0, Fraction(0), Fraction(0), Fraction(0), Fraction(0)
    for side, price, size, fee, _ in trades:
        signed = size * int(side)
        cash -= signed * price * UNIT
        fees += Fraction(fee, 1000)
        if lots == 0 or (lots > 0) == (signed > 0):
            avg = (avg * abs(lots) + price * size) / (abs(lots) + size)
            lots += signed
            continue
        closed = min(size, abs(lots))
        realized += (price - avg) * closed * (1 if lots > 0 else -1) * UNIT
        lots += signed
        if lots == 0:
            avg = Fraction(0)
        elif (lots > 0) != (signed < 0):  # flipped through zero: the rest opens here
            avg = Fraction(price)
    return lots, avg, realized, fees, cash


@settings(max_examples=300, deadline=None)
@given(trades=fills, mid=st.integers(1, 5000))
def test_accounting_matches_exact_average_cost(
    trades: list[tuple[Side, int, int, int, bool]], mid: int
) -> None:
    """Position, average cost, realized P&L, fees and fill count match an exact reference;
    realized + unrealized − fees equals the cash flow plus the position at the mid (the
    P&L identity that does not depend on the cost method); a repeated fill id is booked
    once."""
    acct = Accounting([SPEC], max_position_usdc=1e9)
    for i, (side, price, size, fee, twice) in enumerate(trades):
        f = Fill(SPEC.symbol, i + 1, side, price, size, fee / 1000, Liquidity.MAKER, i, f"f{i}")
        assert acct.on_fill(f) is not None
        if twice:
            assert acct.on_fill(f) is None
    lots, avg, realized, fees, cash = _reference(trades)
    pos = acct.positions[SPEC.symbol]
    assert pos.lots == lots
    assert pos.fills == len(trades) == acct.fills
    assert pos.avg_price_ticks == pytest.approx(float(avg), rel=1e-9, abs=1e-9)
    assert pos.realized_usdc == pytest.approx(float(realized), rel=1e-9, abs=1e-6)
    assert pos.fees_usdc == pytest.approx(float(fees), rel=1e-9, abs=1e-9)
    total = acct.market_pnl(SPEC.symbol, float(mid))
    assert total == pytest.approx(float(cash + lots * mid * UNIT - fees), rel=1e-9, abs=1e-6)
    volume = sum(p * s for _, p, s, _, _ in trades) * UNIT
    assert pos.volume_usdc == pytest.approx(float(volume), rel=1e-9, abs=1e-9)
