"""``reset --confirm`` re-arms a tripped loss limit from the P&L at the reset.

Before, a reset cleared ``daily_loss`` and ``max_drawdown`` but left the P&L they count
from: the first mark after ``resume`` (today's loss still past the limit, the drawdown
still past its own) tripped them again, so a reset could not bring a paused bot back
before 00:00 UTC. The reset's answer names the P&L each limit now counts from, the
journal keeps it, and a restart counts from it too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from kit.ops import start_ops, stop_ops

from flashmm.config import Config, load_config
from flashmm.engine import Engine
from flashmm.ops.journal import Journal, read_state
from flashmm.ops.service import OpsServices
from flashmm.risk import NS_PER_DAY
from flashmm.runner import engine_from
from flashmm.types import Fill, Liquidity, Side
from flashmm.venues.sim import SimVenue

SYM = "SEI/USDC"
LOTS = 100_000  # x 1e-5 USDC per tick and lot: 1 USDC per tick
S = 1_000_000_000


def _config(data: Path, sock: Path, *sets: str) -> Config:
    return load_config(
        "configs/paper.yaml",
        [
            f"control.data_dir={data}",
            f"control.socket_path={sock / 'rs.sock'}",
            "name=rs",
            "ui.panel=false",
            *sets,
        ],
    )


def _loss(engine: Engine, n: int, ticks: int, t: int) -> None:
    """A round trip that loses ``ticks`` USDC (and 0.02 of fees), then a mark."""
    engine._on_fill(Fill(SYM, n, Side.BUY, 1200, LOTS, 0.01, Liquidity.MAKER, t, f"r{n}"), t)
    engine._on_fill(
        Fill(SYM, n + 1, Side.SELL, 1200 - ticks, LOTS, 0.01, Liquidity.MAKER, t, f"r{n + 1}"),
        t,
    )
    engine.on_timer(t + S)


async def _start(cfg: Config) -> tuple[Engine, OpsServices, asyncio.Task[None]]:
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops, task = await start_ops(cfg, engine)
    return engine, ops, task


_stop = stop_ops


async def _command(ops: OpsServices, cmd: str, **args: Any) -> dict[str, Any]:
    assert ops.control is not None
    answer = await ops.control.execute(cmd, args, source="test")
    assert answer["ok"], answer
    return dict(answer["result"])


async def test_a_reset_rearms_daily_loss_from_the_pnl_now_and_a_restart_keeps_it(
    dirs: tuple[Path, Path],
) -> None:
    """Limit 50 USDC; today's loss reaches 60.02: paused. Reset, resume: the next marks
    at the same P&L do not pause it again; a further loss of 50 does. A restart after
    the reset counts today's loss from the reset's P&L, not from 00:00 UTC."""
    data, sock = dirs
    cfg = _config(data, sock, "risk.daily_loss_limit_usdc=50", "risk.max_drawdown_usdc=1e9")
    engine, ops, task = await _start(cfg)
    try:
        t = time.time_ns()
        _loss(engine, 1, 60, t)
        daily = engine.risk.breakers["daily_loss"]
        assert daily.tripped and engine.state == "paused"
        answer = await _command(ops, "reset", confirm=True)
        assert answer["day_start_pnl_usdc"] == pytest.approx(-60.02)
        assert "today's loss now counts from P&L -60.02 USDC" in answer["message"]
        assert "peak_equity_usdc" not in answer  # max_drawdown was not tripped
        await _command(ops, "resume")
        for k in range(1, 4):
            engine.on_timer(t + (1 + k) * S)
        assert not daily.tripped and engine.state == "running"
        assert engine.risk.day_pnl() == pytest.approx(0.0)
    finally:
        await _stop(ops, task)
    assert ops.journal is not None
    st = read_state(ops.journal.path)
    assert st.rearmed["day_start_pnl_usdc"][0] == pytest.approx(-60.02)

    engine, ops, task = await _start(cfg)
    try:
        assert ops.recovery["day_start_pnl_usdc"] == pytest.approx(-60.02)
        assert engine.risk.day_start_pnl == pytest.approx(-60.02)
        t = time.time_ns()
        engine.on_timer(t)
        assert engine.pnl == pytest.approx(-60.02)
        assert not engine.risk.breakers["daily_loss"].tripped and engine.state == "running"
        _loss(engine, 10, 50, t + S)  # 50.02 more today, past the limit again
        assert engine.risk.breakers["daily_loss"].tripped and engine.state == "paused"
    finally:
        await _stop(ops, task)


async def test_a_reset_of_yesterday_does_not_rearm_today(dirs: tuple[Path, Path]) -> None:
    """A reset journaled before 00:00 UTC re-armed yesterday's limit: today's loss counts
    from the P&L the journal had at 00:00 (here: the same -60.02, as nothing traded
    since), never from an older reset."""
    data, sock = dirs
    cfg = _config(data, sock, "risk.daily_loss_limit_usdc=50", "risk.max_drawdown_usdc=1e9")
    specs = {s.symbol: s for s in cfg.specs()}
    today = time.time_ns() // NS_PER_DAY * NS_PER_DAY
    with Journal(data, name="rs", specs=specs) as j:
        j.fill(Fill(SYM, 1, Side.BUY, 1200, LOTS, 0.01, Liquidity.MAKER, today - 9 * S, "y1"))
        j.fill(Fill(SYM, 2, Side.SELL, 1100, LOTS, 0.01, Liquidity.MAKER, today - 8 * S, "y2"))
        j.control("reset", {}, True, {"day_start_pnl_usdc": -3.0}, ts_ns=today - 5 * S)
        j.flush()
    engine, ops, task = await _start(cfg)
    try:
        assert ops.recovery["day_start_pnl_usdc"] == pytest.approx(-100.02)
        assert engine.risk.day_start_pnl == pytest.approx(-100.02)
        assert "day_start_rearmed_at_ns" not in ops.recovery
    finally:
        await _stop(ops, task)


async def test_a_reset_rearms_max_drawdown_from_the_pnl_now(dirs: tuple[Path, Path]) -> None:
    """max_drawdown 40 USDC trips on a 45.02 fall from the peak of 0. Reset and resume:
    the drawdown counts from -45.02 (no trip at the next marks); 40 more trips it; a
    restart after the reset keeps the drawdown's new start."""
    data, sock = dirs
    cfg = _config(data, sock, "risk.daily_loss_limit_usdc=1e9", "risk.max_drawdown_usdc=40")
    engine, ops, task = await _start(cfg)
    try:
        t = time.time_ns()
        _loss(engine, 1, 45, t)
        dd = engine.risk.breakers["max_drawdown"]
        assert dd.tripped and engine.state == "paused"
        answer = await _command(ops, "reset", confirm=True)
        assert answer["peak_equity_usdc"] == pytest.approx(-45.02)
        assert "the drawdown now counts from P&L -45.02 USDC" in answer["message"]
        await _command(ops, "resume")
        engine.on_timer(t + 3 * S)
        assert not dd.tripped and engine.drawdown == pytest.approx(0.0)
    finally:
        await _stop(ops, task)

    engine, ops, task = await _start(cfg)
    try:
        t = time.time_ns()
        engine.on_timer(t)
        assert engine.drawdown == pytest.approx(0.0)
        assert not engine.risk.breakers["max_drawdown"].tripped and engine.state == "running"
        _loss(engine, 10, 40, t + S)
        assert engine.risk.breakers["max_drawdown"].tripped
    finally:
        await _stop(ops, task)


def test_a_reset_without_a_tripped_loss_limit_moves_nothing() -> None:
    """A reset after an emergency stop: today's loss and the drawdown keep counting from
    where they did (a reset forgives only a limit that tripped)."""
    cfg = load_config("configs/paper.yaml", ["risk.daily_loss_limit_usdc=50"])
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    t = time.time_ns()
    _loss(engine, 1, 30, t)
    start, peak = engine.risk.day_start_pnl, engine.acct.peak_equity
    engine.emergency_stop("test", t + 2 * S)
    assert engine.reset(t + 3 * S) == {}
    assert (engine.risk.day_start_pnl, engine.acct.peak_equity) == (start, peak)


async def test_a_reset_right_after_a_restart_rearms_the_restored_trip(
    dirs: tuple[Path, Path],
) -> None:
    """A restart restores a latched daily_loss before its first P&L mark; a reset at once
    had no P&L to re-arm it from, said "cleared daily_loss" and the first mark tripped it
    again. The reset marks the P&L first."""
    data, sock = dirs
    cfg = _config(data, sock, "risk.daily_loss_limit_usdc=50", "risk.max_drawdown_usdc=1e9")
    engine, ops, task = await _start(cfg)
    try:
        _loss(engine, 1, 60, time.time_ns())
        assert engine.risk.breakers["daily_loss"].tripped
    finally:
        await _stop(ops, task)
    engine, ops, task = await _start(cfg)
    try:
        assert engine.risk.breakers["daily_loss"].tripped  # restored, no mark yet
        answer = await _command(ops, "reset", confirm=True)
        assert answer["day_start_pnl_usdc"] == pytest.approx(-60.02)
        await _command(ops, "resume")
        engine.on_timer(time.time_ns())
        assert not engine.risk.breakers["daily_loss"].tripped and engine.state == "running"
    finally:
        await _stop(ops, task)
