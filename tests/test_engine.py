"""The engine with the simulated venue on real recordings, driven by plain calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import NEXO_23, NEXO_24, ROOT

from flashmm.config import load_config
from flashmm.engine import HALTED, PAUSED, RUNNING, Engine
from flashmm.events import FillEvent
from flashmm.feeds.replay import ReplayFeed
from flashmm.marketdata import DepthDiff, DepthSnapshot, Trade
from flashmm.runner import build_venue, engine_from, scales_for
from flashmm.types import Liquidity, MarketSpec, OrderState, Position, Side


def _engine(*sets: str) -> tuple[Engine, ReplayFeed]:
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["model.enabled=false", *sets])
    engine = engine_from(cfg, build_venue(cfg))
    feed = ReplayFeed([NEXO_23], scales_for(cfg.specs()))
    return engine, feed


def _drive(engine: Engine, feed: ReplayFeed, until_event: int | None = None) -> int:
    now = 0
    for i, ev in enumerate(feed.events()):
        now = ev.ts_ns
        engine.step(ev, now)
        if until_event is not None and i >= until_event:
            break
    return now


def test_paper_engine_quotes_and_fills_within_limits() -> None:
    engine, feed = _engine()
    _drive(engine, feed)
    s = engine.summary()
    assert s["events"] == 1804
    assert s["fills"] > 0 and s["quotes_sent"] > 0
    assert s["position_limit_breaches"] == 0
    assert s["max_abs_inventory_usdc"] <= 2000
    assert s["markets"]["SEI/USDC"]["book_mismatches"] == 0
    # three levels a side were live at some point; never more than six orders
    assert len(engine.markets["SEI/USDC"].orders) <= 12


def test_same_run_twice_is_identical() -> None:
    a, fa = _engine()
    b, fb = _engine()
    _drive(a, fa)
    _drive(b, fb)
    sa, sb = a.summary(), b.summary()
    for k in ("fills", "pnl_usdc", "quotes_sent", "volume_usdc"):
        assert sa[k] == sb[k]


def test_pause_pulls_quotes_and_resume_brings_them_back() -> None:
    engine, feed = _engine()
    now = _drive(engine, feed, until_event=300)
    ms = engine.markets["SEI/USDC"]
    assert any(o.state is not OrderState.PENDING_CANCEL for o in ms.orders.values())
    engine.pause("test", now)
    assert engine.state == PAUSED
    assert all(o.state is OrderState.PENDING_CANCEL for o in ms.orders.values())
    for step in range(1, 20):
        engine.run_due_timers(now + step * 50_000_000)
    assert not ms.orders  # cancels confirmed by the venue
    assert engine.resume(now) is None and engine.state == RUNNING
    ms.dirty = True
    engine.run_due_timers(now + 2_000_000_000)
    assert ms.orders


def test_emergency_stop_cancels_flattens_and_latches() -> None:
    engine, feed = _engine("strategy.params.order_size_usdc=400")
    events = list(feed.events())
    now = 0
    for ev in events:
        now = ev.ts_ns
        engine.step(ev, now)
        if engine.acct.positions["SEI/USDC"].lots != 0 and engine.events > 200:
            break
    assert engine.acct.positions["SEI/USDC"].lots != 0
    engine.emergency_stop("test", now)
    assert engine.state == HALTED
    for step in range(1, 40):
        engine.run_due_timers(now + step * 100_000_000)
    assert engine.flat()
    assert engine.live_orders() == 0
    assert engine.resume(now) is not None  # refused until reset
    engine.reset(now)
    assert engine.state == PAUSED
    assert engine.resume(now) is None


def _run_bot(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    """`flashmm run --headless --speed 0 --json ...` in a subprocess, state kept in tmp_path."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "flashmm", "run", "--headless", "--speed", "0", "--json"]
    cmd += ["--set", f"control.data_dir={tmp_path}", "--set", f"logging.file={tmp_path}/log"]
    r = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_run_command_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    """`flashmm run --headless --duration 20 --speed 0 --data <both NEXO files>` exits 0 with a summary."""
    _, summary = _run_bot(
        tmp_path, "--duration", "20", "--data", str(NEXO_23), "--data", str(NEXO_24)
    )
    for key in (
        "mode",
        "events",
        "pnl_usdc",
        "fees_usdc",
        "fills",
        "volume_usdc",
        "max_abs_inventory_usdc",
        "position_limit_breaches",
        "quotes_sent",
        "decision_p50_us",
        "decision_p99_us",
    ):
        assert key in summary
    assert summary["mode"] == "paper"
    assert summary["events"] > 1000
    assert summary["position_limit_breaches"] == 0
    assert summary["orders_left_open"] == 0


def test_a_corrupt_model_leaves_the_bot_running_on_rules(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x01this is not a model")
    r, summary = _run_bot(
        tmp_path,
        "--data",
        str(NEXO_23),
        "--set",
        "model.enabled=true",
        "--set",
        f"model.path={bad}",
    )
    assert "prediction model not loaded, running on rules" in r.stderr
    assert "corrupt.onnx" in r.stderr
    assert "Traceback" not in r.stderr
    assert summary["quotes_sent"] > 0 and summary["fills"] > 0


def test_the_rule_is_the_default_and_the_shipped_model_loads_when_enabled() -> None:
    from flashmm.runner import build_engine

    # the model does not beat the imbalance rule on walk-forward windows: the rule ships
    engine = build_engine(load_config(ROOT / "configs" / "paper.yaml"))
    st = engine.markets["SEI/USDC"].signal_source.status()
    assert st["state"] == "disabled" and st["source"] == "rules"
    cfg = load_config(ROOT / "configs" / "paper.yaml", ["model.enabled=true"])
    st = build_engine(cfg).markets["SEI/USDC"].signal_source.status()
    assert st["state"] == "closed"
    assert str(st["model"]).endswith("flashmm-direction-1s.onnx")


def test_venue_errors_pull_quotes_until_the_rate_drops() -> None:
    from flashmm.venues.sim import SimVenue

    class CountingSim(SimVenue):
        """The simulator plus the error counters a chain venue keeps (a fault we cannot cause here)."""

        stats: dict[str, int]

        def error_count(self) -> int | None:
            return sum(self.stats.values())

    sets = ["model.enabled=false", "risk.stale_feed_ms=120000"]  # no data while we wait
    cfg = load_config(ROOT / "configs" / "backtest.yaml", sets)
    venue = CountingSim({s.symbol: s for s in cfg.specs()})
    venue.stats = {"send_errors": 0, "reverted": 0, "dropped": 0}
    engine = engine_from(cfg, venue)
    feed = ReplayFeed([NEXO_23], scales_for(cfg.specs()))
    now = _drive(engine, feed, until_event=300)
    ms = engine.markets["SEI/USDC"]
    assert ms.orders
    venue.stats["send_errors"] = 3
    venue.stats["reverted"] = 2  # 5 errors within 60 s: the default limit
    engine.run_due_timers(now + 200_000_000)
    assert engine.risk.breakers["venue_errors"].tripped
    for step in range(2, 20):
        engine.run_due_timers(now + step * 100_000_000)
    assert ms.blocked is not None and ms.blocked.startswith("venue_errors")
    assert not ms.orders  # pulled, cancels confirmed
    ms.dirty = True
    engine.run_due_timers(now + 62 * 1_000_000_000)  # errors age out of the 60 s window
    assert not engine.risk.breakers["venue_errors"].tripped
    assert ms.orders


def test_slow_venue_pulls_quotes_until_latency_recovers() -> None:
    from flashmm.venues.sim import SimVenue

    class SlowSim(SimVenue):
        """The simulator plus the order-latency figure a chain venue reports."""

        p99_ms: float | None = None

        def receipt_p99_ms(self) -> float | None:
            return self.p99_ms

    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["model.enabled=false"])
    venue = SlowSim({s.symbol: s for s in cfg.specs()})
    engine = engine_from(cfg, venue)
    now = _drive(engine, ReplayFeed([NEXO_23], scales_for(cfg.specs())), until_event=300)
    ms = engine.markets["SEI/USDC"]
    assert ms.orders
    venue.p99_ms = 4500.0  # over the 3000 ms default
    for step in range(1, 20):
        engine.run_due_timers(now + step * 100_000_000)
    assert engine.risk.breakers["venue_latency"].tripped
    assert not ms.orders
    venue.p99_ms = 600.0
    ms.dirty = True
    engine.run_due_timers(now + 2_100_000_000)
    assert not engine.risk.breakers["venue_latency"].tripped
    assert ms.orders


# --- synthetic books: marks and the flatten, driven by plain calls ------------------

_SPEC = MarketSpec("SEI/USDC", Decimal("0.01"), Decimal("1"), "seiusdt")  # 1 tick x 1 lot = 0.01
_MS = 1_000_000


def _synthetic_engine(quote_hz: float = 5.0) -> Engine:
    from flashmm.engine import EngineSettings
    from flashmm.risk import RiskConfig
    from flashmm.strategy.avellaneda import AvellanedaStrategy
    from flashmm.venues.sim import SimVenue

    venue = SimVenue({_SPEC.symbol: _SPEC})  # 100 ms entry and cancel, 50 ms back
    settings = EngineSettings(quote_hz=quote_hz)
    return Engine([_SPEC], venue, AvellanedaStrategy({}), risk=RiskConfig(), settings=settings)


def test_a_book_without_a_mid_marks_at_the_last_good_mid() -> None:
    """Long 100 lots bought at 6.00, the mid at 10.01: +401 USDC. The reference book
    then loses its asks for a while. The P&L mark must not value the position at 0
    (a 401 USDC drop that trips the latched max_drawdown pause, and would hide a loss
    as well): it keeps the last good mid."""
    from flashmm.backtest.recorder import Recorder

    engine = _synthetic_engine()
    recorder = Recorder(engine, [_SPEC.symbol])  # the backtest's equity samples
    engine.restore([Position(_SPEC.symbol, lots=100, avg_price_ticks=600.0)], [], {})
    s = 1000 * _MS
    engine.step(DepthSnapshot("seiusdt", s, 10, [(1000, 50)], [(1002, 50)]), s)
    recorder.step(s)
    engine.step(DepthDiff("seiusdt", 2300 * _MS, 11, 11, [(999, 5)], []), 2300 * _MS)
    assert engine.pnl == pytest.approx(401.0)
    engine.step(DepthDiff("seiusdt", 2350 * _MS, 12, 12, [], [(1002, 0)]), 2350 * _MS)
    assert not engine.markets[_SPEC.symbol].builder.book.valid
    engine.step(DepthDiff("seiusdt", 3500 * _MS, 13, 13, [(998, 5)], []), 3500 * _MS)
    assert engine.pnl == pytest.approx(401.0)
    assert engine.drawdown == pytest.approx(0.0)
    assert engine.state == RUNNING
    assert not engine.risk.breakers["max_drawdown"].tripped
    assert engine.snapshot().pnl_usdc == pytest.approx(401.0)
    recorder.step(3500 * _MS)
    assert recorder.s_equity == pytest.approx([401.0, 401.0])


def test_flatten_waits_for_its_take_before_sending_another() -> None:
    """The live driver's quote cycle (on_timer every period, here 100 ms) while
    halted. Our bids are hit just after the emergency stop, before their cancel lands:
    the position grows while the first flatten take is still on its way. The engine must not send a second take
    for the whole position on top of the first (the fills of both overshoot, the
    next cycle flattens the other way, for ever): it waits for the take's outcome,
    then flattens what is left."""
    engine = _synthetic_engine(quote_hz=10)
    period = engine.quote_period_ns
    engine.restore([Position(_SPEC.symbol, lots=100, avg_price_ticks=1000.0)], [], {})
    s = 1000 * _MS
    book = DepthSnapshot("seiusdt", s, 10, [(1000, 50), (999, 50)], [(1002, 50), (1003, 50)])
    engine.on_market_event(book, s)
    now = s
    for k in range(6):
        now = s + k * period
        engine.on_timer(now)
    ms = engine.markets[_SPEC.symbol]
    best_bid = max(o.price_ticks for o in ms.orders.values() if o.side is Side.BUY)
    halt = now + 10 * _MS
    engine.emergency_stop("test", halt)
    # a seller sweeps through our best bid before its cancel reaches the venue
    engine.on_market_event(
        Trade("seiusdt", halt + 10 * _MS, best_bid - 1, 500, True), halt + 10 * _MS
    )
    engine.drain_outbox()
    positions = []
    for k in range(1, 30):
        engine.on_timer(halt + k * period)
        positions.append(engine.acct.positions[_SPEC.symbol].lots)
    assert engine.flat()
    assert min(positions) >= 0  # never flattened through zero into a short
    fills = [e.fill for e in engine.drain_outbox() if isinstance(e, FillEvent)]
    hit = sum(f.size_lots for f in fills if f.liquidity is Liquidity.MAKER)
    assert hit > 0  # the bids were hit after the stop
    takes = [f for f in fills if f.liquidity is Liquidity.TAKER]
    assert all(f.side is Side.SELL for f in takes)
    assert sum(f.size_lots for f in takes) == 100 + hit  # what was held, no more
