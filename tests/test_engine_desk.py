"""The engine deciding through the compiled core (the quote desk: strategy, order diff,
position limit, live orders in the core's arrays; the model step: features, drift
check and model in one call behind the ML breaker) gives the same orders, cancels,
fills, P&L and breaker states as the engine's Python path, on recorded data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ETH_SLICE, NEXO_23, ROOT

import flashmm.native as nat
from flashmm.config import load_config
from flashmm.engine import Engine
from flashmm.events import FillEvent, OrderDone, OrderSent, OrderUpdated, OutboxEvent
from flashmm.feeds.replay import ReplayFeed
from flashmm.native.signal import ModelStep
from flashmm.native.strategy import NativeAvellanedaStrategy, NativeDesk
from flashmm.runner import build_venue, engine_from, scales_for, signal_factory
from flashmm.strategy.avellaneda import AvellanedaStrategy


def _row(ev: OutboxEvent) -> tuple[Any, ...] | None:
    if isinstance(ev, OrderSent):
        o = ev.order
        return ("sent", o.market, o.client_id, o.side, o.price_ticks, o.size_lots, o.created_ns)
    if isinstance(ev, OrderUpdated | OrderDone):
        o = ev.order
        return (ev.kind, o.market, o.client_id, o.remaining_lots, ev.note)
    if isinstance(ev, FillEvent):
        f = ev.fill
        return ("fill", f.market, f.client_id, f.price_ticks, f.size_lots, f.ts_ns)
    return None


def _run(
    files: list[Path], sets: list[str], *, native: bool, ready_at: int | None = 0
) -> tuple[list[tuple[Any, ...]], dict[str, Any], Engine]:
    """Drive one engine over ``files``; returns its order and fill events, summary and
    itself. ``ready_at``: the event at which the kernels count as loaded (None: never)."""
    python = [] if native else ["model.native_features=false"]
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["venue.sim.seed=7", *sets, *python])
    strategy = (NativeAvellanedaStrategy if native else AvellanedaStrategy)(cfg.strategy.params)
    engine = engine_from(
        cfg, build_venue(cfg), strategy=strategy, signal_factory=signal_factory(cfg, sim_clock=True)
    )
    rows: list[tuple[Any, ...]] = []
    nat.warm()
    was = nat._READY.is_set()
    try:
        if ready_at != 0:
            nat._READY.clear()
        for i, ev in enumerate(ReplayFeed(files, scales_for(cfg.specs())).events()):
            if i == ready_at:
                nat._READY.set()
            engine.step(ev, ev.ts_ns)
            for e in engine.drain_outbox():
                r = _row(e)
                if r is not None:
                    rows.append(r)
    finally:
        if was:
            nat._READY.set()
    return rows, engine.summary(), engine


_FIGURES = ("fills", "pnl_usdc", "quotes_sent", "cancels_sent", "volume_usdc", "fees_usdc")


@pytest.mark.parametrize(
    "sets",
    [
        ["model.enabled=false"],
        ["model.enabled=true"],
        ["model.enabled=false", "strategy.params.order_size_usdc=400"],  # risk cuts
        ["model.enabled=false", "risk.max_position_usdc=100"],  # reduce only trips
        # the ML breaker trips on drift, cools down, half-opens, trips on its hit rate
        ["model.enabled=true", "model.drift_z_limit=3", "model.drift_sustain_s=5",
         "model.cooldown_s=20", "model.half_open_successes=3"],
        ["model.enabled=true", "model.hit_rate_floor=0.75", "model.hit_rate_window=20",
         "model.cooldown_s=10"],
    ],
    ids=["rules", "model", "large-orders", "reduce-only", "ml-drift", "ml-hit-rate"],
)  # fmt: skip
def test_engine_desk_matches_the_python_path(sets: list[str]) -> None:
    files = [NEXO_23, ETH_SLICE]
    want, s_want, py = _run(files, sets, native=False)
    got, s_got, eng = _run(files, sets, native=True)
    assert all(ms.desk is None for ms in py.markets.values())
    if "model.enabled=true" in sets:
        steps = [getattr(ms.signal_source, "_step", None) for ms in eng.markets.values()]
        assert all(isinstance(st, ModelStep) for st in steps)
        assert not any(getattr(ms.signal_source, "_step", None) for ms in py.markets.values())
        for sym, ms in eng.markets.items():
            a, b = ms.signal_source.status(), py.markets[sym].signal_source.status()
            assert a == b
            ga = ms.signal_source.predictor  # type: ignore[attr-defined]
            gb = py.markets[sym].signal_source.predictor  # type: ignore[attr-defined]
            assert ga.transitions == gb.transitions
            assert ga.model_predictions > 10
            assert (ga.drift_features, ga.drift_worst) == (gb.drift_features, gb.drift_worst)
        if len(sets) > 1:
            opened = [t for ms in eng.markets.values()
                      for t in ms.signal_source.predictor.transitions]  # type: ignore[attr-defined]  # fmt: skip
            assert any(t["to"] == "open" for t in opened)
            assert any(t["to"] == "half_open" for t in opened)
    desks = [ms.desk for ms in eng.markets.values()]
    assert all(isinstance(d, NativeDesk) for d in desks)
    decisions = sum(int(d.ist[d.k.I_DECISIONS]) for d in desks if isinstance(d, NativeDesk))
    assert decisions > 1000
    assert len(want) > 1000
    assert got == want
    assert {k: s_got[k] for k in _FIGURES} == {k: s_want[k] for k in _FIGURES}
    assert (eng.risk.orders_cut, eng.risk.orders_dropped) == (
        py.risk.orders_cut,
        py.risk.orders_dropped,
    )
    if "strategy.params.order_size_usdc=400" in sets:
        assert eng.risk.orders_cut + eng.risk.orders_dropped > 0
    if "risk.max_position_usdc=100" in sets:
        trips = [(n, b.trips) for n, b in eng.risk.breakers.items() if n.startswith("position")]
        assert any(t for _, t in trips)
        assert trips == [
            (n, b.trips) for n, b in py.risk.breakers.items() if n.startswith("position")
        ]
    # the desk's live rows are the engine's live orders
    for ms in eng.markets.values():
        assert isinstance(ms.desk, NativeDesk)
        io, k = ms.desk.io, ms.desk.k
        rows = [
            tuple(int(v) for v in io[k.IO_LIVE + k.LIVE_W * j : k.IO_LIVE + k.LIVE_W * (j + 1)])
            for j in range(int(io[k.IO_NLIVE]))
        ]
        assert [r[3] for r in rows] == list(ms.orders)
        assert [r[2] for r in rows] == [o.remaining_lots for o in ms.orders.values()]


def test_engine_desk_takes_over_mid_run_with_the_live_orders() -> None:
    """Kernels loaded in the middle of a run: the Python path decides until then, the
    desk loads the live orders and decides from there; same events as Python alone."""
    files = [NEXO_23]
    want, s_want, _ = _run(files, ["model.enabled=false"], native=False)
    got, s_got, eng = _run(files, ["model.enabled=false"], native=True, ready_at=700)
    assert eng.markets["SEI/USDC"].desk is not None
    assert got == want
    assert {k: s_got[k] for k in _FIGURES} == {k: s_want[k] for k in _FIGURES}


def test_desk_without_room_hands_the_decision_back() -> None:
    """More live rows than leave room for a full set of quotes: the desk declines (the
    engine decides in Python and reloads it)."""
    nat.warm()
    strat = NativeAvellanedaStrategy()
    cfg = load_config(ROOT / "configs" / "backtest.yaml", [])
    spec = cfg.specs()[0]
    desk = strat.desk(spec, cfg.risk)
    assert desk is not None
    desk.load([(1, 1000 - i, 5, i + 1, 1) for i in range(60)])
    assert desk.decide(1000, 1002, 1001.0, 0, 10_000, 1.0, 0.0, 1.0, 61) is None
    desk.load([(1, 999, 5, 1, 0), (-1, 1003, 5, 2, 0)])
    assert desk.decide(1000, 1002, 1001.0, 0, 10_000, 1.0, 0.0, 1.0, 3) is True
    assert desk.cancels == [1, 2]  # far from the new quotes
    places = desk.places
    assert [p[3] for p in places] == list(range(3, 3 + len(places)))
    desk.remove(1)
    desk.cancel_all()
    assert int(desk.io[desk.k.IO_NLIVE]) == 1 + len(places)


@pytest.mark.parametrize("path", [NEXO_23, ETH_SLICE], ids=["nexo", "eth"])
def test_core_book_follows_the_engine_book_change_by_change(path: Path) -> None:
    """The model signal's core book follows the engine's book through its listener (no
    top-10 packing per change): equal after every change, snapshots and gaps included;
    a second follower takes over with a full load."""
    from flashmm.book import BookBuilder, SequenceGap
    from flashmm.feeds.replay import make_scales
    from flashmm.marketdata import DepthDiff, DepthSnapshot
    from flashmm.native.features import NativeFeatures

    nat.warm()
    sym, tick, lot = ("nexousdt", 0.001, 0.01) if path == NEXO_23 else ("ethusdt", 0.01, 0.0001)
    feed = ReplayFeed([path], make_scales([(sym, tick, lot)]), align=False)
    bb = BookBuilder(sym)
    book = bb.book
    nf = NativeFeatures(tick)
    checked = 0
    for i, ev in enumerate(feed.events()):
        if not isinstance(ev, DepthDiff | DepthSnapshot):
            continue
        try:
            if not bb.on_event(ev):
                continue
        except SequenceGap:
            continue
        if not book.valid:
            continue
        if checked == 300:
            other = NativeFeatures(tick)
            other.on_book(book, ev.ts_ns)  # steals the listener ...
            assert book.listener is other._listen
        nf.on_book(book, ev.ts_ns)  # ... and this one takes it back with a full load
        core = nf._core
        assert core is not None
        assert core.top(0, 20) == book.top_bids(20) and core.top(1, 20) == book.top_asks(20)
        if i % 500 == 0:
            assert core.top(0, 10**6) == book.top_bids(10**6)
            assert core.top(1, 10**6) == book.top_asks(10**6)
        checked += 1
    assert checked > 500
