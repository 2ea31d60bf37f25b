"""The compiled core against the Python core on recorded data: same book, same 64
features (bit for bit), same model signal, same quotes, same risk cuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kit.data import ETH_SLICE, FUT_BTC, NEXO_23, NEXO_24, needs

from flashmm.book import BookBuilder, SequenceGap
from flashmm.features import OnlineFeatures
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import DepthDiff, DepthSnapshot, Trade
from flashmm.native import NativeCore, levels_array
from flashmm.predict.batch import batch_features
from flashmm.predict.skew import skew_from_signal
from flashmm.risk import RiskConfig, RiskManager
from flashmm.strategy.avellaneda import AvellanedaParams, AvellanedaStrategy
from flashmm.strategy.base import QuoteContext
from flashmm.types import MarketSpec, Order, OrderRequest, OrderState, Side, Signal

MODEL = Path(__file__).resolve().parents[1] / "flashmm" / "models" / "flashmm-direction-1s.onnx"


def _replay(
    path: Path | list[Path],
    sym: str,
    tick: float,
    lot: float,
    *,
    limit: int | None = None,
    every: int = 1,
) -> dict[str, int]:
    """Python book + features and the native core side by side; asserts equality
    after every book change and trade. Returns counts."""
    feed = ReplayFeed(
        path if isinstance(path, list) else [path], make_scales([(sym, tick, lot)]), align=False
    )
    bb = BookBuilder(sym)
    book = bb.book
    fe = OnlineFeatures(tick)
    core = NativeCore(tick * lot)
    n = {"book": 0, "trade": 0, "vectors": 0, "full_books": 0}
    for i, ev in enumerate(feed.events()):
        if limit is not None and i >= limit:
            break
        ts = ev.ts_ns
        if isinstance(ev, Trade):
            fe.on_trade(ev)
            core.on_trade(ts, ev.price_ticks, ev.size_lots, ev.buyer_is_maker)
            n["trade"] += 1
        elif isinstance(ev, DepthDiff):
            try:
                if not bb.on_diff(ev):
                    continue
            except SequenceGap:
                continue
            n["book"] += 1
            core.on_diff(levels_array(ev.bids, ev.asks), ts)
            if book.valid:
                fe.on_book(book, ts)
        elif isinstance(ev, DepthSnapshot):
            bb.on_snapshot(ev)  # buffered diffs applied too: load the result
            core.on_snapshot(levels_array(book.bids.items(), book.asks.items()), ts)
            if book.valid:
                fe.on_book(book, ts)
            n["book"] += 1
        else:
            continue
        assert core.best_bid == book.best_bid and core.best_ask == book.best_ask, i
        assert core.top(0, 10) == book.top_bids(10) and core.top(1, 10) == book.top_asks(10), i
        if i % 5000 == 0:
            assert core.top(0, 10**6) == book.top_bids(10**6), i
            assert core.top(1, 10**6) == book.top_asks(10**6), i
            n["full_books"] += 1
        if i % every == 0:
            v_py = fe.vector(ts)
            v_nat = core.vector(ts)
            if not np.array_equal(v_py, v_nat):
                bad = np.flatnonzero(v_py != v_nat)
                raise AssertionError(f"event {i}: features {bad} {v_py[bad]} != {v_nat[bad]}")
            n["vectors"] += 1
    assert core.ist[core.k.I_UPDATES] == fe.updates and core.ist[core.k.I_SKIPPED] == fe.skipped
    return n


@pytest.mark.parametrize(
    ("path", "sym", "tick"), [(NEXO_23, "nexousdt", 0.001), (ETH_SLICE, "ethusdt", 0.01)]
)
def test_book_and_features_bit_identical_on_bundled_recordings(
    path: Path, sym: str, tick: float
) -> None:
    n = _replay(path, sym, tick, 0.01)
    assert n["book"] > 1000 and n["trade"] > 100 and n["vectors"] > 1000, n


@pytest.mark.slow
@needs(NEXO_24, FUT_BTC)
def test_book_and_features_bit_identical_on_shared_recordings() -> None:
    n = _replay([NEXO_23, NEXO_24], "nexousdt", 0.001, 0.01, limit=150_000, every=5)
    assert n["vectors"] > 5000, n
    n = _replay(FUT_BTC, "btcusdt", 0.1, 0.001, limit=200_000, every=7)
    assert n["vectors"] > 3000, n


def test_batch_features_match_the_native_core_on_the_grid() -> None:
    """The batch builder's samples (training and evaluation) from the native core."""
    step = 250_000_000
    ts_b, X_b, _ = batch_features([NEXO_23], "nexousdt", 0.001, 0.01, sample_every_ms=250)
    feed = ReplayFeed([NEXO_23], make_scales([("nexousdt", 0.001, 0.01)]), align=False)
    bb = BookBuilder("nexousdt")
    core = NativeCore(1e-5)
    rows, ts_out = [], []
    grid, ok = -1, False
    for ev in feed.events():
        ts = ev.ts_ns
        if grid < 0:
            grid = (ts // step + 1) * step
        while grid < ts:
            if ok:
                rows.append(core.vector(grid).copy())
                ts_out.append(grid)
            grid += step
        if isinstance(ev, Trade):
            core.on_trade(ts, ev.price_ticks, ev.size_lots, ev.buyer_is_maker)
            continue
        if isinstance(ev, DepthDiff):
            try:
                if bb.on_diff(ev) and bb.synced:
                    core.on_diff(levels_array(ev.bids, ev.asks), ts)
            except SequenceGap:
                pass
        elif isinstance(ev, DepthSnapshot):
            bb.on_snapshot(ev)
            core.on_snapshot(levels_array(bb.book.bids.items(), bb.book.asks.items()), ts)
        else:
            continue
        ok = core.ready and bb.synced and bb.book.valid
    assert np.array_equal(np.asarray(ts_out), ts_b)
    assert np.array_equal(np.vstack(rows), X_b)


def _spec() -> MarketSpec:
    from flashmm.config import load_config

    root = Path(__file__).resolve().parents[1]
    return load_config(root / "configs" / "backtest.yaml").specs()[0]


def test_strategy_skew_and_risk_match_python() -> None:
    spec = _spec()
    rng = np.random.default_rng(7)
    params = AvellanedaParams(levels=3, refresh_tolerance_bps=2.0)
    strat = AvellanedaStrategy(params)
    risk_cfg = RiskConfig(max_position_usdc=300.0, max_order_usdc=120.0)
    risk = RiskManager(risk_cfg, [spec])
    core = NativeCore(spec.unit_usdc, params, risk_cfg)
    from flashmm.predict.settings import ModelSettings

    ms = ModelSettings()
    checked = 0
    for _ in range(3000):
        bid = int(rng.integers(500, 20000))
        ask = bid + int(rng.integers(1, 40))
        mid = (bid + ask) / 2.0
        maxpos = risk.max_position_lots(spec, mid)
        pos = int(rng.integers(-maxpos - 5, maxpos + 6))
        sigma = float(rng.uniform(0.5, 40.0))
        sig = Signal(
            int(rng.integers(-1, 2)),
            float(rng.uniform(0, 1)),
            float(rng.normal(0, 5)),
            "onnx",
            float(rng.uniform(0, 1)),
        )
        opened = bool(rng.integers(0, 2))
        skew, widen = skew_from_signal(
            sig, ms.max_skew_bps, ms.min_confidence, opened,
            low_confidence_widen=ms.low_confidence_widen, breaker_widen=ms.breaker_widen,
            move_widen=ms.move_widen,
        )  # fmt: skip
        k = core.k
        core.fst[k.F_SIG_CONF], core.fst[k.F_SIG_BPS] = sig.confidence, sig.expected_bps
        core.fst[k.F_SIG_PMOVE] = sig.p_move
        core.fst[k.F_MAX_SKEW], core.fst[k.F_MIN_CONF] = ms.max_skew_bps, ms.min_confidence
        core.fst[k.F_LOW_CONF_WIDEN] = ms.low_confidence_widen
        core.fst[k.F_BREAKER_WIDEN], core.fst[k.F_MOVE_WIDEN] = ms.breaker_widen, ms.move_widen
        k.skew_from_signal(core.fst, opened)
        assert core.adjust() == (skew, widen)
        assert k.max_position_lots(core.fst, mid) == maxpos
        ctx = QuoteContext(spec, 0, bid, ask, mid, pos, maxpos, sigma, sig, skew, widen)
        want = [
            (1 if q.side is Side.BUY else -1, q.price_ticks, q.size_lots) for q in strat.quote(ctx)
        ]
        got = core.quote(bid, ask, mid, pos, maxpos, sigma, skew, widen)
        assert got == want
        # risk: random live orders (some pending cancel, some done) and the quotes as places
        live = []
        for cid in range(int(rng.integers(0, 7))):
            side = Side.BUY if rng.integers(0, 2) else Side.SELL
            size = int(rng.integers(1, 3000))
            rem = int(rng.integers(0, size + 1))
            px = int(rng.integers(bid - 50, ask + 50))
            o = Order(spec.symbol, cid + 1, side, px, size, rem)
            o.state = [OrderState.OPEN, OrderState.PENDING_CANCEL, OrderState.DONE][
                int(rng.integers(0, 3))
            ]
            live.append(o)
        places = [OrderRequest(spec.symbol, 0, Side.BUY if s > 0 else Side.SELL, p, n)
                  for s, p, n in want]  # fmt: skip
        ok = risk.check_orders(spec, places, pos, live)
        core.set_live(
            (1 if o.side is Side.BUY else -1, o.price_ticks, o.remaining_lots, o.client_id,
             {OrderState.OPEN: 0, OrderState.PENDING_CANCEL: 1, OrderState.DONE: 2}[o.state])
            for o in live
        )  # fmt: skip
        got_ok = core.check_orders(pos, want)
        assert got_ok == [(1 if r.side is Side.BUY else -1, r.price_ticks, r.size_lots) for r in ok]
        checked += len(want)
    assert checked > 10_000
    k = core.k
    assert core.ist[k.I_CUT] == risk.orders_cut and core.ist[k.I_DROPPED] == risk.orders_dropped
    assert risk.orders_cut > 100 and risk.orders_dropped > 100


def test_model_signal_matches_the_predictor_on_recorded_features() -> None:
    from flashmm.predict.onnx_model import OnnxPredictor

    pred = OnnxPredictor(MODEL)
    assert pred.engine == "native"
    ts, X, _ = batch_features([NEXO_23], "nexousdt", 0.001, 0.01, sample_every_ms=1000)
    core = NativeCore(1e-5, program=pred._prog)
    k = core.k
    core.fst[k.F_MIN_LEAN] = pred.min_lean
    for t, x in zip(ts, X, strict=True):
        sig = pred.predict(x, int(t))
        k.model_signal(core.ist, core.fst, core.prog, core.params, core.work, x)
        d, c, e, pm = core.signal()
        assert (d, c, e, pm) == (sig.direction, sig.confidence, sig.expected_bps, sig.p_move)
        assert core.fst[k.F_P_DOWN] == pred.last_probs[0]
        assert core.fst[k.F_P_UP] == pred.last_probs[2]


@pytest.mark.parametrize("switch_at", [0, 700, None])
def test_native_features_hand_over_from_python_bit_identical(switch_at: int | None) -> None:
    """The drop-in for the model signal: Python until the kernels are ready, then the
    core with the Python state moved over; every vector the same as Python's."""
    import flashmm.native as nat
    from flashmm.native.features import NativeFeatures

    nat.warm()
    events = list(
        ReplayFeed([NEXO_23], make_scales([("nexousdt", 0.001, 0.01)]), align=False).events()
    )
    bb = BookBuilder("nexousdt")
    fe = OnlineFeatures(0.001)
    was = nat._READY.is_set()
    try:
        if switch_at != 0:
            nat._READY.clear()
        nf = NativeFeatures(0.001)
        for i, ev in enumerate(events):
            if i == switch_at:
                nat._READY.set()
            if isinstance(ev, DepthDiff):
                try:
                    if not bb.on_diff(ev):
                        continue
                except SequenceGap:
                    continue
            elif isinstance(ev, DepthSnapshot):
                bb.on_snapshot(ev)
            elif isinstance(ev, Trade):
                fe.on_trade(ev)
                nf.on_trade(ev)
            else:
                continue
            if not isinstance(ev, Trade) and bb.book.valid:
                fe.on_book(bb.book, ev.ts_ns)
                nf.on_book(bb.book, ev.ts_ns)
            assert np.array_equal(fe.vector(ev.ts_ns), nf.vector(ev.ts_ns)), i
        assert nf.native is (switch_at is not None)
        assert (nf.ready, nf.t0, nf.updates, nf.skipped) == (
            fe.ready,
            fe.t0,
            fe.updates,
            fe.skipped,
        )
    finally:
        if was:
            nat._READY.set()


def test_probe_check_is_cached_by_model_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The native-vs-onnxruntime probe check runs once per model file (and code and
    runtime versions); a later load reads its result; a changed file is checked again."""
    from flashmm.predict.onnx_model import OnnxPredictor

    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "cache"))
    first = OnnxPredictor(MODEL)
    assert first.engine == "native" and not first.native_check_cached
    again = OnnxPredictor(MODEL)
    assert again.engine == "native" and again.native_check_cached
    assert again.native_max_diff == first.native_max_diff
    import onnx

    m = onnx.load(str(MODEL))
    m.doc_string = "another copy"  # other bytes: another key
    copy = tmp_path / "m.onnx"
    onnx.save(m, str(copy))
    assert not OnnxPredictor(copy).native_check_cached
    assert len(list((tmp_path / "cache").glob("native-check-*.json"))) == 2


@pytest.mark.slow
def test_compiled_loop_over_the_cache_matches_the_python_driven_core(tmp_path: Path) -> None:
    """The benchmark's compiled loop feeds the kernels what the Python crossings feed
    them: the same features at the end of the bundled NEXO recording."""
    from flashmm.feeds.cache import load_recording
    from flashmm.native.replay import replay

    scale = make_scales([("nexousdt", 0.001, 0.01)])["nexousdt"]
    rec = load_recording(NEXO_23, "nexousdt", scale, tmp_path)
    ev = rec.events
    cols = [np.ascontiguousarray(ev[c], dtype=np.int64) for c in
            ("ts_ns", "kind", "side", "px_tick", "qty_lot", "first_id", "last_id",
             "lv_start", "n_bids", "n_asks")]  # fmt: skip
    packed = np.vstack(cols)
    levels = np.ascontiguousarray(rec.levels, dtype=np.int64)
    looped = NativeCore(1e-5)
    stats = np.zeros(8, dtype=np.int64)
    replay(looped.ist, looped.fst, looped.prog, looped.params, looped.work, looped.x,
           looped.io, packed, levels, stats, 200_000_000)  # fmt: skip
    assert stats[0] > 500 and stats[2] > 0, stats
    # the same events through the Python crossings
    core = NativeCore(1e-5)
    last = -1
    for i in range(packed.shape[1]):
        ts, kind, side, px, qty, first, lid, s, nb, na = (int(v) for v in packed[:, i])
        if kind == 2:
            core.on_trade(ts, px, qty, side < 0)
        elif kind in (0, 1):
            if kind == 1 and lid <= last:
                continue
            last = lid if kind == 1 else first
            rows = [tuple(r) for r in levels[s : s + nb + na].tolist()]
            lv = levels_array(rows[:nb], rows[nb:])
            (core.on_snapshot if kind == 0 else core.on_diff)(lv, ts)
    t = int(packed[0, -1])
    assert np.array_equal(core.vector(t), looped.vector(t))
    assert core.top(0, 50) == looped.top(0, 50) and core.top(1, 50) == looped.top(1, 50)


def test_the_profile_gets_the_compiled_builtin_strategy_and_plugins_stay_python() -> None:
    import flashmm.native as nat
    from flashmm.native.strategy import NativeAvellanedaStrategy, strategy_for
    from flashmm.strategy.base import StrategyConfig

    nat.warm()
    s = strategy_for(StrategyConfig(params={"levels": 3}))
    assert isinstance(s, NativeAvellanedaStrategy) and s.name == "avellaneda"
    assert type(strategy_for(StrategyConfig(native=False))) is AvellanedaStrategy
    spec = _spec()
    py = AvellanedaStrategy({"levels": 3})
    rng = np.random.default_rng(3)
    for _ in range(500):
        bid = int(rng.integers(500, 20000))
        ask = bid + int(rng.integers(1, 30))
        ctx = QuoteContext(spec, 0, bid, ask, (bid + ask) / 2.0, int(rng.integers(-3000, 3000)),
                           2000, float(rng.uniform(0.5, 30)), Signal(),
                           float(rng.normal(0, 3)), float(rng.uniform(1, 2)))  # fmt: skip
        assert s.quote(ctx) == py.quote(ctx)


def test_native_parts_pickle() -> None:
    """Sweeps may send engines' parts to other processes: the native ones pickle."""
    import pickle

    import flashmm.native as nat
    from flashmm.native.features import NativeFeatures
    from flashmm.native.strategy import NativeAvellanedaStrategy

    nat.warm()
    spec = _spec()
    s = NativeAvellanedaStrategy({})
    ctx = QuoteContext(spec, 0, 1000, 1003, 1001.5, 0, 2000, 3.0, Signal(), 0.0, 1.0)
    want = s.quote(ctx)
    assert pickle.loads(pickle.dumps(s)).quote(ctx) == want
    f = NativeFeatures(0.001)
    g = pickle.loads(pickle.dumps(f))
    assert np.array_equal(g.vector(5), f.vector(5))
    core = pickle.loads(pickle.dumps(NativeCore(1e-5)))
    assert core.best_bid == 0
