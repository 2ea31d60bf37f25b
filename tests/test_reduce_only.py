"""The position_limit breaker is reduce only: at 95 % of ``risk.max_position_usdc`` the
side that would grow |position| is not quoted (its live orders are cancelled by the
requote diff), the reducing side quotes as before; the compiled quote desk does the
same as the Python path. And the kill switch learns from our quotes' fills, not from
the flatten's takes."""

from __future__ import annotations

import pytest
from conftest import NEXO_23, ROOT

import flashmm.native as nat
from flashmm.config import load_config
from flashmm.engine import Engine
from flashmm.events import BreakerChanged
from flashmm.feeds.replay import ReplayFeed
from flashmm.native.strategy import NativeAvellanedaStrategy, NativeDesk
from flashmm.runner import build_venue, engine_from, scales_for
from flashmm.strategy.avellaneda import AvellanedaStrategy
from flashmm.types import NS_PER_S, OrderRejected, OrderState, Position, Side

SYM = "SEI/USDC"


def _engine(native: bool) -> tuple[Engine, int]:
    """An engine over the first 300 events of the NEXO recording (quoting both sides)."""
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["model.enabled=false"])
    if native:
        nat.warm()
    strategy = (NativeAvellanedaStrategy if native else AvellanedaStrategy)(cfg.strategy.params)
    engine = engine_from(cfg, build_venue(cfg), strategy=strategy)
    now = 0
    for i, ev in enumerate(ReplayFeed([NEXO_23], scales_for(cfg.specs())).events()):
        now = ev.ts_ns
        engine.step(ev, now)
        if i >= 300:
            break
    return engine, now


def _live(engine: Engine, side: Side) -> list[tuple[int, int]]:
    """(price, lots) of the market's orders of ``side`` not being cancelled."""
    ms = engine.markets[SYM]
    return sorted(
        (o.price_ticks, o.remaining_lots)
        for o in ms.orders.values()
        if o.side is side and o.state is not OrderState.PENDING_CANCEL
    )


def _hold(engine: Engine, now: int, share: float) -> int:
    """Put the market at ``share`` of the position limit (long when > 0) and run the
    quote cycles of the next two seconds (a P&L mark among them); returns the time."""
    ms = engine.markets[SYM]
    mid = ms.builder.book.mid
    lots = int(share * engine.risk_cfg.max_position_usdc / (mid * ms.spec.unit_usdc))
    engine.restore([Position(SYM, lots, mid)], [], {})
    engine._mark_dirty = True
    ms.dirty = True
    for k in range(1, 41):
        engine.run_due_timers(now + k * NS_PER_S // 20)
    return now + 2 * NS_PER_S


@pytest.mark.parametrize("native", [False, True], ids=["python", "desk"])
def test_reduce_only_at_96_percent_long_quotes_no_bids(native: bool) -> None:
    engine, now = _engine(native)
    assert _live(engine, Side.BUY) and _live(engine, Side.SELL)
    engine.outbox.clear()
    now = _hold(engine, now, 0.96)
    b = engine.risk.breakers[f"position_limit:{SYM}"]
    assert b.tripped and b.action == "reduce_only"
    # reported (journal, alerts, stream) like every breaker: before, trips went unseen
    changes = [e for e in engine.outbox if isinstance(e, BreakerChanged) and e.name == b.name]
    assert [e.status["state"] for e in changes] == ["tripped"]
    assert engine.markets[SYM].blocked is None  # not pulled: the reducing side quotes
    assert _live(engine, Side.BUY) == []  # the bids were cancelled, none placed
    assert len(_live(engine, Side.SELL)) == 3
    if native:
        assert isinstance(engine.markets[SYM].desk, NativeDesk)
    # back under 95 %: both sides quote again
    _hold(engine, now, 0.5)
    assert not b.tripped
    assert _live(engine, Side.BUY) and _live(engine, Side.SELL)


def test_reduce_only_at_96_percent_short_quotes_no_asks() -> None:
    engine, now = _engine(False)
    _hold(engine, now, -0.96)
    assert engine.risk.breakers[f"position_limit:{SYM}"].tripped
    assert _live(engine, Side.SELL) == []
    assert len(_live(engine, Side.BUY)) == 3


def test_reduce_only_desk_and_python_agree() -> None:
    """The same state (96 % long) decided by the compiled desk and in Python: the same
    live orders, prices and sizes."""
    runs = []
    for native in (False, True):
        engine, now = _engine(native)
        _hold(engine, now, 0.96)
        runs.append((_live(engine, Side.BUY), _live(engine, Side.SELL)))
    assert runs[0] == runs[1]
    assert runs[0][0] == [] and runs[0][1]


def test_a_flatten_take_does_not_teach_the_kill_switch() -> None:
    """The kill switch learns our market's volatility from our own fills; a take (the
    emergency flatten, priced up to 5 % through the book) counted too and raised the
    trip level for long after the flatten. Only our quotes' fills count."""
    from flashmm.types import Fill, Liquidity

    engine, now = _engine(False)
    kill = engine.markets[SYM].kill
    mid = int(engine.markets[SYM].builder.book.mid)
    for i, (price, liq) in enumerate(
        [(mid, Liquidity.MAKER), (mid + 1, Liquidity.MAKER), (int(mid * 0.95), Liquidity.TAKER)]
    ):
        before = kill.sigma_bps()
        fill = Fill(
            SYM, 0 if liq else 7, Side.SELL, price, 1, 0.0, liq, now + i * NS_PER_S, f"f{i}"
        )
        engine._on_fill(fill, now + i * NS_PER_S)
    assert kill.sigma_bps() == before  # the take at -5 % changed nothing


def test_rejected_orders_are_named_in_the_log_once_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A venue refusing orders (here insufficient free balance) left only a counter in
    the metrics: an operator reading the log saw nothing. One warning per market and
    minute names the reason and the count since the last one."""
    from loguru import logger

    from flashmm.types import OrderRejected

    engine, now = _engine(False)
    reason = ["insufficient free balance"]
    monkeypatch.setattr(engine.venue, "poll", lambda t: [OrderRejected(SYM, 999, t, reason[0])])
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    try:
        for k in range(5):  # 5 refusals within 4 s, then one a minute later
            engine.pump_venue(now + k * NS_PER_S)
        reason[0] = "order slot busy"
        engine.pump_venue(now + 65 * NS_PER_S)
    finally:
        logger.remove(sink)
    warned = [ln for ln in lines if "rejected by the venue" in ln]
    assert len(warned) == 2, lines
    assert "insufficient free balance (1 rejection(s)" in warned[0]
    assert "order slot busy (5 rejection(s)" in warned[1]


@pytest.mark.parametrize("native", [False, True], ids=["python", "desk"])
@pytest.mark.parametrize("cycle", ["on_timer", "run_due_timers"])
def test_a_side_held_back_quotes_again_when_its_hold_ends(
    native: bool, cycle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bid refused for lack of funds holds the bids back 1 s. The end of the hold made
    nothing dirty and was no wake time: on a quiet book the bids stayed away (and the
    status said "held back") until some market data came. Now the quote cycle at the
    hold's end (live: the next timer; simulated: a wake at that time) places them again.
    (The simulator has no balances: the venue's refusal is played into its events.)"""
    engine, now = _engine(native)
    ms = engine.markets[SYM]
    bid = next(o for o in ms.orders.values() if o.side is Side.BUY)
    refusal = [OrderRejected(SYM, bid.client_id, now, "insufficient free balance", lasting=True)]
    real_poll = engine.venue.poll
    monkeypatch.setattr(engine.venue, "poll", lambda t: real_poll(t) + refusal[:1])
    engine.on_timer(now + 1)
    refusal.clear()
    assert ms.held == 1 and not _live(engine, Side.BUY)
    assert engine.snapshot().markets[SYM].blocked == "bids held back: insufficient free balance"
    for k in range(1, 11):  # 2 s of quote cycles, no market data
        t = now + k * NS_PER_S // 5
        engine.on_timer(t) if cycle == "on_timer" else engine.run_due_timers(t)
    assert _live(engine, Side.BUY), "the bids were not placed again after the hold"
    assert ms.held == 0 and engine.snapshot().markets[SYM].blocked is None
