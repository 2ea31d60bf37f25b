"""The ``daily_loss`` breaker limits the loss of each UTC day of the engine's clock.

The P&L the limit counts from moves at 00:00 UTC to the P&L of the last mark
before it, in the Python engine and the compiled backtest loop alike (the
bundled NEXO 20 minutes, shifted so that 00:00 UTC falls inside them), and a
restart takes it from the journal: the P&L the journal had at 00:00 UTC today.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.data import NEXO_23
from kit.ops import start_ops, stop_ops

from flashmm.accounting import Accounting, apply_fill
from flashmm.backtest.runner import run_backtest
from flashmm.config import Config, load_config
from flashmm.feeds.binance import Scale
from flashmm.feeds.cache import CachedFeed, load_recording
from flashmm.native import backtest as nb
from flashmm.native.backtest import CompiledBacktest
from flashmm.ops.journal import Journal, read_state
from flashmm.ops.journal.reader import pnl_at
from flashmm.risk import NS_PER_DAY, RiskManager
from flashmm.runner import engine_from, scales_for
from flashmm.types import Fill, Liquidity, Position, Side
from flashmm.venues.sim import SimVenue

ROOT = Path(__file__).resolve().parents[1]
MIN = 60_000_000_000
OFF = ["risk.max_drawdown_usdc=1000000000"]


def _shifted_feed(cfg: Config, cache: Path, midnight_after_ns: int) -> tuple[CachedFeed, int]:
    """The bundled NEXO 20 minutes moved so that 00:00 UTC comes ``midnight_after_ns``
    after their first event; the shift (ns, receive times only)."""
    feed = CachedFeed([str(NEXO_23)], scales_for(cfg.specs()), cache_dir=cache)
    first = feed.span()[0]
    day = first // NS_PER_DAY + 1
    shift = day * NS_PER_DAY - first - midnight_after_ns
    sym = feed.symbols[0]
    feed.offsets[sym] += shift
    return feed, feed.offsets[sym]


@pytest.fixture
def marks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, float]]]:
    """Every P&L mark the engine hands its risk manager: (time, P&L)."""
    seen: list[tuple[int, float]] = []
    real = RiskManager.update_pnl

    def spy(self: RiskManager, pnl: float, dd: float, now: int) -> Any:
        seen.append((now, pnl))
        return real(self, pnl, dd, now)

    monkeypatch.setattr(RiskManager, "update_pnl", spy)
    yield seen


def _run(tmp_path: Path, after_ns: int, limit: float) -> tuple[Any, int]:
    cfg = load_config(
        ROOT / "configs" / "backtest.yaml",
        [*OFF, f"risk.daily_loss_limit_usdc={limit}", f"control.data_dir={tmp_path}"],
    )
    feed, shift = _shifted_feed(cfg, tmp_path / "cache", after_ns)
    return run_backtest(cfg, feed=feed, compiled=False), shift


def _compiled(tmp_path: Path, limit: float, shift: int) -> CompiledBacktest:
    cfg = load_config(
        ROOT / "configs" / "backtest.yaml", [*OFF, f"risk.daily_loss_limit_usdc={limit}"]
    )
    rec = load_recording(NEXO_23, "nexousdt", Scale.of(0.001, 0.01), tmp_path / "cache")
    bt = CompiledBacktest(cfg, [rec], offset=shift)
    bt.run()
    return bt


def _split(marks: list[tuple[int, float]], midnight: int) -> tuple[float, float, float]:
    """The P&L of the last mark before ``midnight``, the lowest P&L before it and the
    lowest after it."""
    before = [p for t, p in marks if t < midnight]
    after = [p for t, p in marks if t >= midnight]
    assert before and after
    return before[-1], min(before), min(after)


def test_a_loss_before_midnight_no_longer_counts_after_it(
    tmp_path: Path, marks: list[tuple[int, float]]
) -> None:
    """00:00 UTC 14.8 minutes in, after the P&L fell from its high to about -0.17
    USDC; it falls to about -0.31 later. A limit of 0.25 USDC: the P&L since the
    start goes past it, neither day's P&L does. The engine does not pause and the
    compiled loop has nothing the engine would trip."""
    res, shift = _run(tmp_path, int(14.8 * MIN), 0.25)
    risk = res.engine.risk
    midnight = (marks[0][0] // NS_PER_DAY + 1) * NS_PER_DAY
    base, low_before, low_after = _split(marks, midnight)
    assert min(low_before, low_after) <= -0.25  # the old lifetime limit would trip
    assert low_before > -0.25 and low_after - base > -0.25
    assert risk.day == midnight // NS_PER_DAY and risk.day_start_pnl == base
    assert not risk.breakers["daily_loss"].tripped and res.engine.state == "running"
    bt = _compiled(tmp_path, 0.25, shift)
    assert bt.breaker_margin() is None
    assert bt.bsf[nb.BF_DAY_BASE] == pytest.approx(base, abs=1e-9)
    assert bt.bst[nb.B_DAY] == risk.day
    assert [f.fill_id for f in bt.fills] == [f.fill_id for f in res.recorder.fills]


def test_a_loss_after_midnight_counts_from_the_pnl_at_midnight(
    tmp_path: Path, marks: list[tuple[int, float]]
) -> None:
    """00:00 UTC 4.3 minutes in, near the P&L's high (about +0.24 USDC); it falls to
    about -0.31 later. A limit of 0.4 USDC: the P&L since the start never goes past
    it, the day's P&L (about -0.55) does: the engine pauses (latched) at the first
    mark that far below the P&L at 00:00. The compiled loop flags a P&L breaker
    exactly when the day's loss reaches its limit."""
    free, shift = _run(tmp_path, int(4.3 * MIN), 1e9)  # the P&L path, nothing trips
    path = list(marks)
    midnight = (path[0][0] // NS_PER_DAY + 1) * NS_PER_DAY
    base = [p for t, p in path if t < midnight][-1]
    day_loss = base - min(p for t, p in path if t >= midnight)
    assert base > 0.1 and min(p for _, p in path) > -0.4  # the old limit never trips
    assert day_loss > 0.4
    assert free.engine.risk.day_start_pnl == base
    marks.clear()
    res, _ = _run(tmp_path, int(4.3 * MIN), 0.4)
    b = res.engine.risk.breakers["daily_loss"]
    trip = next(t for t, p in path if t >= midnight and p - base <= -0.4)
    assert b.tripped and b.since_ns == trip and res.engine.state == "paused"
    assert "since 00:00 UTC" in b.reason
    bt = _compiled(tmp_path, 0.4, shift)
    assert "P&L breaker" in (bt.breaker_margin() or "")
    assert bt.bsf[nb.BF_DAY_BASE] == pytest.approx(base, abs=1e-9)
    assert "P&L breaker" in (_compiled(tmp_path, day_loss - 0.005, shift).breaker_margin() or "")
    assert _compiled(tmp_path, day_loss + 0.005, shift).breaker_margin() is None


def test_a_new_day_does_not_clear_a_latched_trip() -> None:
    risk = RiskManager(load_config(ROOT / "configs" / "backtest.yaml", []).risk, [])
    day = 19_927 * NS_PER_DAY
    assert not risk.update_pnl(10.0, 0.0, day - MIN)
    assert [b.name for b in risk.update_pnl(-205.0, 0.0, day - 1)] == ["daily_loss"]
    assert risk.update_pnl(-205.0, 0.0, day + MIN) == []  # a new day: the loss is old
    assert risk.breakers["daily_loss"].tripped and risk.day_start_pnl == -205.0
    risk.reset(day + 2 * MIN)  # the operator's reset clears it; today's P&L is 0
    assert risk.update_pnl(-205.0, 0.0, day + 3 * MIN) == []
    assert risk.day_pnl() == 0.0


# --- a restart: today's loss counts from the journal's P&L at 00:00 UTC ---------------

SYM = "SEI/USDC"


def _fill(n: int, side: Side, px: int, lots: int, ts: int) -> Fill:
    return Fill(SYM, n, side, px, lots, 0.01, Liquidity.MAKER, ts, f"f-{n}")


def _config(data: Path, sock: Path) -> Config:
    return load_config(
        "configs/paper.yaml",
        [
            f"control.data_dir={data}",
            f"control.socket_path={sock / 'svc.sock'}",
            "name=svc",
            "ui.panel=false",
            "risk.daily_loss_limit_usdc=50",
            *OFF,
        ],
    )


def test_the_journal_pnl_at_midnight_from_a_snapshot_and_later_fills(tmp_path: Path) -> None:
    """A snapshot before 00:00 (after two fills), a fill after it and before 00:00,
    one after 00:00: realized P&L and fees of the first three; the open position is
    marked at the highest candidate price (the snapshot mids around 00:00 and the
    last fill's price before it)."""
    cfg = _config(tmp_path, tmp_path)
    specs = {s.symbol: s for s in cfg.specs()}
    unit = specs[SYM].unit_usdc
    mid = 20_000 * NS_PER_DAY
    with Journal(tmp_path, name="j", specs=specs) as j:
        pos = Position(SYM)
        fills = [
            _fill(1, Side.BUY, 1200, 1000, mid - 60 * MIN),
            _fill(2, Side.SELL, 1100, 400, mid - 50 * MIN),  # -100 ticks x 400 lots
            _fill(3, Side.SELL, 1150, 200, mid - 5 * MIN),  # after the snapshot: -50 x 200
            _fill(4, Side.SELL, 900, 400, mid + 5 * MIN),  # after 00:00: not counted
        ]
        for n, f in enumerate(fills):
            j.fill(f)
            apply_fill(pos, f, specs[SYM])
            if n == 1:  # the last snapshot before 00:00: its mid 1120
                j.position_snapshot(pos, mid - 40 * MIN, mid_ticks=1120.0)
            if n == 3:  # after 00:00: its mid 1130 is the highest candidate
                j.position_snapshot(pos, mid + 6 * MIN, mid_ticks=1130.0)
        j.flush()
        st = j.load_state(specs)
        got = j.pnl_at(mid, st.positions)
    realized = (-100 * 400 - 50 * 200) * unit
    unreal = (1150 - 1200) * 400 * unit  # 400 lots left at 1200, marked at 1150 (fill 3)
    assert got == pytest.approx(realized - 0.03 + unreal, abs=1e-9)
    # no snapshot before 00:00: every fill before it, from the start of the journal
    assert pnl_at(j.path, specs, mid - 45 * MIN, st.positions) == pytest.approx(
        -100 * 400 * unit - 0.02 + (1120 - 1200) * 600 * unit, abs=1e-9
    )


async def test_a_restart_counts_todays_loss_only(dirs: tuple[Path, Path]) -> None:
    """The journal lost 200 USDC yesterday and 30 today (limit 50): the new run
    does not pause; a further 25 USDC loss after the restart trips ``daily_loss``
    (30 + 25 of today's loss)."""
    data, sock = dirs
    cfg = _config(data, sock)
    specs = {s.symbol: s for s in cfg.specs()}
    now = time.time_ns()
    today = now // NS_PER_DAY * NS_PER_DAY
    earlier = today + (now - today) // 2
    lots = 100_000  # x 1e-5 USDC per tick and lot: 1 USDC per tick
    with Journal(data, name="svc", specs=specs) as j:
        j.fill(_fill(1, Side.BUY, 1200, lots, today - 180 * MIN))
        j.fill(_fill(2, Side.SELL, 1000, lots, today - 170 * MIN))
        j.position_snapshot(Position(SYM, 0, 0.0, -200.0, 0.02, 0.0, 2), today - 170 * MIN)
        j.fill(_fill(3, Side.BUY, 1200, lots, earlier))
        j.fill(_fill(4, Side.SELL, 1170, lots, earlier))
        j.flush()
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops, task = await start_ops(cfg, engine)
    try:
        risk = engine.risk
        assert risk.day_start_pnl == pytest.approx(-200.02)
        assert ops.recovery["day_start_pnl_usdc"] == pytest.approx(-200.02)
        t = time.time_ns()
        engine.on_timer(t)
        assert engine.pnl == pytest.approx(-230.04)
        assert not risk.breakers["daily_loss"].tripped
        assert engine.state == "running"
        engine._on_fill(_fill(5, Side.BUY, 1200, lots, t + 1), t + 1)
        engine._on_fill(_fill(6, Side.SELL, 1175, lots, t + 2), t + 2)
        engine.on_timer(t + 2_000_000_000)
        assert risk.breakers["daily_loss"].tripped
        assert risk.day_pnl() == pytest.approx(-55.04)
        assert engine.state == "paused"
    finally:
        await stop_ops(ops, task)
    assert ops.journal is not None
    assert read_state(ops.journal.path).breakers["daily_loss"].state == "tripped"


def test_the_journal_pnl_at_midnight_over_several_markets_agrees_with_accounting(
    tmp_path: Path,
) -> None:
    """Two markets, fills through zero with fees and rebates (negative fees): the P&L at
    00:00 is what :class:`Accounting` books for the fills before it. The short
    market is marked at the candidate that gives the highest P&L, its lowest price;
    the market without a snapshot is rebuilt from its fills alone."""
    cfg = _config(tmp_path, tmp_path)
    specs = {s.symbol: s for s in cfg.specs()}
    other = next(s for s in specs if s != SYM)
    mid = 20_000 * NS_PER_DAY
    acct = Accounting(specs.values(), 1e12)

    def fill(m: str, n: int, side: Side, px: int, lots: int, fee: float, ts: int) -> Fill:
        return Fill(m, n, side, px, lots, fee, Liquidity.MAKER, ts, f"{m}-{n}")

    with Journal(tmp_path, name="j", specs=specs) as j:
        seq = [
            fill(SYM, 1, Side.BUY, 1200, 1000, 0.02, mid - 90 * MIN),
            fill(other, 2, Side.SELL, 500, 30, -0.01, mid - 85 * MIN),
            fill(SYM, 3, Side.SELL, 1300, 1600, 0.03, mid - 80 * MIN),  # flips short 600
            fill(other, 4, Side.BUY, 480, 50, -0.02, mid - 70 * MIN),  # flips long 20
        ]
        for f in seq:
            j.fill(f)
            acct.on_fill(f)
        j.position_snapshot(acct.positions[SYM], mid - 60 * MIN, mid_ticks=1290.0)
        late = [
            fill(SYM, 5, Side.BUY, 1250, 200, 0.01, mid - 30 * MIN),  # short 400 @1300
            fill(other, 6, Side.SELL, 470, 5, -0.01, mid - 20 * MIN),
        ]
        for f in late:
            j.fill(f)
            acct.on_fill(f)
        for f in [  # after 00:00: not counted
            fill(SYM, 7, Side.BUY, 1000, 400, 0.5, mid + 10 * MIN),
            fill(other, 8, Side.SELL, 400, 15, 0.5, mid + 11 * MIN),
        ]:
            j.fill(f)
        j.position_snapshot(
            Position(SYM, 0, 0.0, 0.0, 0.0, 0.0, 6), mid + 12 * MIN, mid_ticks=1310.0
        )
        j.flush()
        st = j.load_state(specs)
        got = j.pnl_at(mid, st.positions)
    short = acct.positions[SYM]
    assert short.lots == -400 and short.avg_price_ticks == 1300.0
    # candidates 1290 (snapshot), 1250 (last fill), 1310 (after 00:00): the lowest
    expect = acct.market_pnl(SYM, 1250.0) + acct.market_pnl(other, 470.0)
    assert expect != pytest.approx(acct.market_pnl(SYM, 1310.0) + acct.market_pnl(other, 470.0))
    assert got == pytest.approx(expect, abs=1e-9)


def test_a_snapshot_without_a_mid_does_not_mark_the_position_at_its_cost(tmp_path: Path) -> None:
    """The last snapshot before 00:00 has no mid (written before the run's first
    book: a start or a stop while the feed was down): the position is marked at the
    last mid journaled before 00:00, not at its own average price, which would take
    the gain it had then off today's loss."""
    cfg = _config(tmp_path, tmp_path)
    specs = {s.symbol: s for s in cfg.specs()}
    unit = specs[SYM].unit_usdc
    mid = 20_000 * NS_PER_DAY
    with Journal(tmp_path, name="j", specs=specs) as j:
        pos = Position(SYM)
        f = _fill(1, Side.BUY, 1000, 1000, mid - 600 * MIN)
        j.fill(f)
        apply_fill(pos, f, specs[SYM])
        j.position_snapshot(pos, mid - 590 * MIN, mid_ticks=1200.0)
        j.position_snapshot(pos, mid - 120 * MIN)  # a restart: no book yet
        j.position_snapshot(pos, mid - 119 * MIN)  # its stop, still no book
        j.flush()
        st = j.load_state(specs)
        got = j.pnl_at(mid, st.positions)
    assert got == pytest.approx((1200 - 1000) * 1000 * unit - 0.01, abs=1e-9)


class _ReplayingVenue(SimVenue):
    """A venue that replays, on start, a fill the journal missed (a chain venue
    booking what was mined while the bot was down, with its block time)."""

    replays_fills = True

    def __init__(self, specs: dict[str, Any], missed: list[Fill]) -> None:
        super().__init__(specs)
        self.missed = missed

    def poll(self, now_ns: int) -> list[Any]:
        out: list[Any] = list(self.missed)
        self.missed = []
        return out + super().poll(now_ns)


async def test_fills_the_venue_replays_on_start_count_at_their_time(
    dirs: tuple[Path, Path],
) -> None:
    """The bot went down long before 00:00 with 100 000 lots long at 1000; its sell at
    1100 was mined at 23:55 and is replayed on start: the P&L at 00:00 had that
    100 USDC gain, so a loss today counts from it (not from the P&L the journal had
    before the replay, which would take the gain off today's loss)."""
    data, sock = dirs
    cfg = _config(data, sock)
    specs = {s.symbol: s for s in cfg.specs()}
    today = time.time_ns() // NS_PER_DAY * NS_PER_DAY
    lots = 100_000  # 1 USDC per tick
    with Journal(data, name="svc", specs=specs) as j:
        pos = Position(SYM)
        f = _fill(1, Side.BUY, 1000, lots, today - 180 * MIN)
        j.fill(f)
        apply_fill(pos, f, specs[SYM])
        j.position_snapshot(pos, today - 170 * MIN, mid_ticks=1000.0)
        j.flush()
    missed = _fill(2, Side.SELL, 1100, lots, today - 5 * MIN)
    engine = engine_from(cfg, _ReplayingVenue(specs, [missed]))
    ops, task = await start_ops(cfg, engine)
    try:
        assert engine.positions()[SYM].lots == 0
        assert engine.risk.day_start_pnl == pytest.approx(100 - 0.02)
        assert ops.recovery["day_start_pnl_usdc"] == pytest.approx(100 - 0.02)
    finally:
        await stop_ops(ops, task)


def test_the_pnl_at_midnight_of_a_journal_begun_today_or_left_days_ago(tmp_path: Path) -> None:
    """A journal whose fills are all of today: 0 at 00:00 (today's loss is all of its
    loss). A journal whose last record is three days old (the bot was down since):
    the P&L at that record, its position marked at its last mid."""
    cfg = _config(tmp_path, tmp_path)
    specs = {s.symbol: s for s in cfg.specs()}
    unit = specs[SYM].unit_usdc
    mid = 20_000 * NS_PER_DAY
    with Journal(tmp_path, name="today", specs=specs) as j:
        j.fill(_fill(1, Side.BUY, 1200, 1000, mid + 60 * MIN))
        j.fill(_fill(2, Side.SELL, 1000, 400, mid + 70 * MIN))
        j.position_snapshot(Position(SYM, 600, 1200.0, -200.0, 0.02, 0.0, 2), mid + 71 * MIN)
        j.flush()
        assert j.pnl_at(mid, j.load_state(specs).positions) == 0.0
    old = mid - 3 * NS_PER_DAY
    with Journal(tmp_path, name="old", specs=specs) as j:
        pos = Position(SYM)
        for f in (_fill(1, Side.BUY, 1200, 1000, old), _fill(2, Side.SELL, 1000, 400, old + MIN)):
            j.fill(f)
            apply_fill(pos, f, specs[SYM])
        j.position_snapshot(pos, old + 2 * MIN, mid_ticks=1100.0)
        j.flush()
        got = j.pnl_at(mid, j.load_state(specs).positions)
    assert got == pytest.approx((-200 * 400 + (1100 - 1200) * 600) * unit - 0.02, abs=1e-9)


async def test_a_run_journals_the_days_start_and_a_restart_counts_from_it(
    dirs: tuple[Path, Path],
) -> None:
    """A run up at 00:00 UTC knew today's start exactly (its last mark before 00:00),
    while a restart later that day had only the journal's estimate (snapshots and fills;
    an open position marked at the highest candidate price). A run now journals the P&L
    the day counts from whenever it changes, and a restart of the same day counts from
    the latest of that and a reset's re-arm. Here a replay crosses 00:00 of its clock
    (journaled: the P&L of its last mark before 00:00); then a live journal whose
    estimate for today is -30.02 USDC holds a day start of -42 journaled today: the
    restart counts from -42 (one of yesterday is not used)."""
    data, sock = dirs
    cfg = _config(data, sock)
    lots = 100_000  # 1 USDC per tick
    now = time.time_ns()
    today = now // NS_PER_DAY
    midnight = today * NS_PER_DAY
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops, task = await start_ops(cfg, engine, sim_clock=True)
    try:
        before = midnight - MIN
        engine._on_fill(_fill(1, Side.BUY, 1200, lots, before), before)
        engine._on_fill(_fill(2, Side.SELL, 1190, lots, before), before)
        engine.on_timer(before + 1)  # a mark before 00:00: -10.02
        after = midnight + MIN
        engine._on_fill(_fill(3, Side.BUY, 1200, lots, after), after)
        engine._on_fill(_fill(4, Side.SELL, 1180, lots, after), after)
        engine.on_timer(after + 1)  # the first mark of the day: it starts at -10.02
        assert engine.risk.day_start_pnl == pytest.approx(-10.02)
        assert ops.journal is not None
        deadline = time.monotonic() + 10.0  # the operations loop drains the outbox
        while not ops.journal.events("day_start"):
            assert time.monotonic() < deadline, "no day_start journaled"
            await asyncio.sleep(0.02)
        (ev,) = ops.journal.events("day_start")
        assert ev["data"] == {"day": today, "pnl_usdc": pytest.approx(-10.02)}
    finally:
        await stop_ops(ops, task)

    specs = {s.symbol: s for s in cfg.specs()}
    with Journal(data, name="svc", specs=specs) as j:
        j.fill(_fill(11, Side.BUY, 1200, lots, midnight - 90 * MIN))
        j.fill(_fill(12, Side.SELL, 1170, lots, midnight - 80 * MIN))
        j.event("day_start", {"day": today, "pnl_usdc": -42.0})
        j.flush()
        assert j.pnl_at(midnight) == pytest.approx(-30.02)
    engine = engine_from(cfg, SimVenue(specs))
    ops, task = await start_ops(cfg, engine)
    try:
        assert ops.recovery["day_start_from"] == "journaled"
        assert engine.risk.day_start_pnl == pytest.approx(-42.0)
    finally:
        await stop_ops(ops, task)
    with Journal(data, name="svc", specs=specs) as j:
        j.event("day_start", {"day": today - 1, "pnl_usdc": -7.0})
        j.flush()
    engine = engine_from(cfg, SimVenue(specs))
    ops, task = await start_ops(cfg, engine)
    try:
        assert "day_start_from" not in ops.recovery
        assert engine.risk.day_start_pnl == pytest.approx(-30.02)
    finally:
        await stop_ops(ops, task)
