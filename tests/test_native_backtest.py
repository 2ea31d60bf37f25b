"""The compiled backtest loop (flashmm/native/backtest.py) against the engine's backtest.

Same profile, same recording, same seed: the loop must give exactly the
engine's fills (client id, side, price, lots, fee, liquidity, venue time, id),
orders sent and cancels, model off and on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kit.data import NEXO_23

from flashmm.backtest.report import TIMING_KEYS
from flashmm.backtest.runner import run_backtest
from flashmm.config import load_config
from flashmm.feeds.binance import Scale
from flashmm.feeds.cache import load_recording
from flashmm.native.backtest import CompiledBacktest

ROOT = Path(__file__).resolve().parents[1]


def _key(f: object) -> tuple[object, ...]:
    return tuple(getattr(f, k) for k in ("client_id", "side", "price_ticks", "size_lots",
                                         "fee_usdc", "liquidity", "ts_ns", "fill_id"))  # fmt: skip


@pytest.mark.parametrize(
    "sets",
    [
        ["model.enabled=false", "venue.sim.seed=7"],
        ["model.enabled=true", "venue.sim.seed=3"],
        [
            "model.enabled=false",
            "venue.sim.fill_model=printed_size",
            "venue.sim.entry_latency_ms={kind: lognormal, median_ms: 120, sigma: 0.5}",
            "strategy.requote_mid_move_bps=2",
            "risk.price_band_min_bps=3",
            "risk.price_band_sigma=0.5",
            "risk.max_position_usdc=300",
        ],
        # the position_limit breaker trips (reduce only) and clears
        ["model.enabled=false", "venue.sim.seed=7", "risk.max_position_usdc=100"],
    ],
    ids=["model_off", "model_on", "lognormal_band_limits", "reduce_only"],
)
def test_compiled_backtest_gives_the_engines_fills(sets: list[str], tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "backtest.yaml", [*sets, f"control.data_dir={tmp_path}"])
    res = run_backtest(cfg, [str(NEXO_23)], cache_dir=tmp_path / "cache")
    rec = load_recording(NEXO_23, "nexousdt", Scale.of(0.001, 0.01), tmp_path / "cache")
    bt = CompiledBacktest(cfg, [rec])
    bt.run()
    assert bt.shutdown() == 0
    assert bt.breaker_margin() is None  # nothing the loop does not model happened
    want = [_key(f) for f in res.recorder.fills]
    got = [_key(f) for f in bt.fills]
    assert len(want) > 20
    assert got == want
    s, r = bt.summary(), res.report
    assert (s["orders_sent"], s["cancels_sent"]) == (r["orders_sent"], r["cancels_sent"])
    assert s["pnl_usdc"] == pytest.approx(r["pnl_usdc"], abs=1e-9)
    if "risk.max_position_usdc=100" in sets:
        b = res.engine.risk.breakers["position_limit:SEI/USDC"]
        assert b.trips > 0


def test_compiled_backtest_refuses_what_it_does_not_model(tmp_path: Path) -> None:
    rec = load_recording(NEXO_23, "nexousdt", Scale.of(0.001, 0.01), tmp_path)
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["risk.kill_switch_enabled=true"])
    with pytest.raises(ValueError, match="kill switch"):
        CompiledBacktest(cfg, [rec])


def test_compiled_backtest_flags_a_pnl_breaker_near_its_limit(tmp_path: Path) -> None:
    rec = load_recording(NEXO_23, "nexousdt", Scale.of(0.001, 0.01), tmp_path)
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["risk.max_drawdown_usdc=0.01"])
    bt = CompiledBacktest(cfg, [rec])
    bt.run()
    assert "P&L breaker" in (bt.breaker_margin() or "")


def test_compiled_backtest_loops_a_recording_like_a_looping_replay(tmp_path: Path) -> None:
    """Three passes of the bundled NEXO 20 minutes with shifted times and a resync
    before each later pass (benchmarks/backtest_week.py's tape): the engine's fills."""
    from collections.abc import Iterator

    from flashmm.feeds.cache import CachedFeed
    from flashmm.marketdata import FeedStatus, MarketEvent
    from flashmm.runner import scales_for

    days = 3

    class Looped(CachedFeed):
        def events(self) -> Iterator[MarketEvent]:
            lo, hi = self.span()
            shift = hi - lo + 1_000_000
            for k in range(days):
                if k:
                    yield FeedStatus("nexousdt", lo + k * shift - 1, "resync", "again")
                for ev in super().events():
                    ev.ts_ns += k * shift
                    if k and getattr(ev, "exch_ms", 0):
                        ev.exch_ms += k * shift // 1_000_000  # type: ignore[attr-defined]
                    yield ev

    cfg = load_config(ROOT / "configs" / "backtest.yaml", [f"control.data_dir={tmp_path}"])
    feed = Looped([str(NEXO_23)], scales_for(cfg.specs()), cache_dir=tmp_path / "cache")
    res = run_backtest(cfg, feed=feed)
    rec = load_recording(NEXO_23, "nexousdt", Scale.of(0.001, 0.01), tmp_path / "cache")
    bt = CompiledBacktest(cfg, [rec], days=days)
    bt.run()
    bt.shutdown()
    assert bt.summary()["events"] == res.report["events"]
    assert [_key(f) for f in bt.fills] == [_key(f) for f in res.recorder.fills]
    assert bt.summary()["orders_sent"] == res.report["orders_sent"]


TIMING = TIMING_KEYS


def _report(res: object) -> dict[str, object]:
    rep = {k: v for k, v in res.report.items() if k not in TIMING}  # type: ignore[attr-defined]
    rep["data"] = {k: v for k, v in rep["data"].items() if k != "from_cache"}  # type: ignore[attr-defined]
    return rep


@pytest.mark.parametrize(
    ("sets", "engine_runs_it"),
    [
        (["model.enabled=false", "venue.sim.seed=7"], False),
        (["model.enabled=true"], False),
        (["model.enabled=true", "model.drift_z_limit=0.5"], True),  # the ML breaker opens
        (["risk.max_drawdown_usdc=0.05"], True),  # the engine pauses on its drawdown breaker
        (["model.enabled=false", "risk.max_position_usdc=100"], False),  # reduce only
        (
            ["risk.stale_feed_ms=200", "risk.price_band_sigma=0.5", "risk.price_band_min_bps=3"],
            False,
        ),
    ],
    ids=[
        "model_off",
        "model_on",
        "ml_breaker_opens",
        "pnl_breaker",
        "reduce_only",
        "stale_and_band",
    ],
)
def test_flashmm_backtest_report_is_the_same_compiled_or_not(
    sets: list[str], engine_runs_it: bool, tmp_path: Path
) -> None:
    """``run_backtest`` (``flashmm backtest``) through the compiled loop, or through the
    engine when the loop does not model what happened: the report of the engine."""
    cfg = load_config(ROOT / "configs" / "backtest.yaml", [*sets, f"control.data_dir={tmp_path}"])
    cache = tmp_path / "cache"
    py = run_backtest(cfg, [str(NEXO_23)], cache_dir=cache, compiled=False)
    fast = run_backtest(cfg, [str(NEXO_23)], cache_dir=cache)
    assert _report(fast) == _report(py)
    assert fast.recorder.s_equity == py.recorder.s_equity
    tr_fast, tr_py = fast.recorder.tracks["SEI/USDC"], py.recorder.tracks["SEI/USDC"]
    assert (tr_fast.mid_ts, tr_fast.mid2, tr_fast.s_qbid, tr_fast.s_inv) == (
        tr_py.mid_ts,
        tr_py.mid2,
        tr_py.s_qbid,
        tr_py.s_inv,
    )
    assert py.report["events"] > 1000
    # what happened is what the loop models, or it said so (and the engine ran it)
    rec = load_recording(NEXO_23, "nexousdt", Scale.of(0.001, 0.01), cache)
    bt = CompiledBacktest(cfg, [rec])
    bt.run()
    assert (bt.breaker_margin() is not None) == engine_runs_it


def test_a_loop_not_built_yet_is_built_in_the_background_while_the_engine_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flashmm.native.backtest as nb

    started: list[bool] = []
    monkeypatch.setattr(nb, "cached", lambda: False)
    monkeypatch.setattr(nb, "warm_in_background", lambda: started.append(True))
    cfg = load_config(ROOT / "configs" / "backtest.yaml", [f"control.data_dir={tmp_path}"])
    res = run_backtest(cfg, [str(NEXO_23)], cache_dir=tmp_path / "cache")
    assert started == [True]
    assert res.report["fills"] > 0  # the engine ran it


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kernels_not_built_are_built_by_a_process_of_their_own(tmp_path: Path) -> None:
    """With an empty numba cache, build_in_background starts one detached
    ``python -m flashmm.native`` (a second call, here from another process, starts
    none while it runs); it writes every kernel and the backtest loop into the cache
    and removes its lock, so the next process loads them."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    code = (
        "import flashmm.native as n; print(n.build_in_background(), n.build_lock()); "
        "import sys; sys.stdout.flush()"
    )

    def call() -> tuple[str, str]:
        r = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        ok, lock = r.stdout.split()
        return ok, lock

    ok, lock = call()
    assert ok == "True" and Path(lock).exists()
    assert call() == ("True", lock)  # the first builder is still at work: no second one
    builders = [
        p
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if f"flashmm.native\0--lock\0{lock}".encode() in _read(p)
    ]
    assert len(builders) == 1
    deadline = time.monotonic() + 840
    while Path(lock).exists() and time.monotonic() < deadline:
        time.sleep(2)
    assert not Path(lock).exists()
    r = subprocess.run(
        [sys.executable, "-c",
         "import flashmm.native as n, flashmm.native.backtest as b; print(n.cached(), b.cached())"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert r.stdout.split() == ["True", "True"]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended
        return b""


def test_borrow_views_c_contiguous_arrays_only() -> None:
    """kernels.borrow: an uncounted view of a C-contiguous array (writes reach the
    array); a strided array does not compile rather than being read wrongly."""
    from numba import njit
    from numba.core.errors import TypingError

    from flashmm.native import kernels as k

    @njit
    def first_to_seven(a: np.ndarray) -> float:
        b = k.borrow(a)
        b[0] = 7.0
        return float(b.sum())

    a = np.arange(5.0)
    assert first_to_seven(a) == 17.0 and a[0] == 7.0
    with pytest.raises(TypingError):
        first_to_seven(np.arange(10.0)[::2])


def test_no_builder_and_no_error_without_a_writable_lock_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only root file system without a usable temp folder: no builder starts,
    nothing raises (the caller compiles on its thread instead)."""
    import flashmm.native as n

    monkeypatch.setattr(n, "_BUILDER", None)
    monkeypatch.setattr(n, "build_lock", lambda: tmp_path / "missing" / "build.lock")
    assert n._build_running() is False
    assert n.build_in_background() is False


def test_compiled_marks_a_book_without_a_mid_at_the_last_good_mid() -> None:
    """The loop's P&L mark (``Engine._mark``, ``Engine.mids``): long 100 lots bought at
    600 ticks, the last good mid 1001 ticks, then the book loses its asks. The mark
    keeps the last good mid, as the engine does: no 401 USDC drop that would count as
    a drawdown (and end the run's validity as a P&L breaker the engine trips)."""
    from flashmm.native import NativeCore
    from flashmm.native import backtest as nb

    core = NativeCore(0.01)
    ist, k = core.ist, core.k
    bst = np.zeros(nb.BST_SIZE, dtype=np.int64)
    bsf = np.zeros(nb.BSF_SIZE, dtype=np.float64)
    bsf[nb.BF_LOSS_LIMIT], bsf[nb.BF_DD_LIMIT] = 200.0, 300.0
    bst[nb.B_POS], bsf[nb.BF_AVG] = 100, 600.0
    k.book_set(ist, 0, 1000, 50)
    k.book_set(ist, 1, 1002, 50)
    bsf[nb.BF_BAND_GOOD] = 1001.0  # the band's last good mid, as _after_book leaves it
    bsf[nb.BF_POS_TRIP] = 0.95 * 2000.0
    rows = np.zeros((nb.ROW_CAP, nb.ROW_W), dtype=np.int64)
    rowf = np.zeros((nb.ROW_CAP, nb.ROWF_W), dtype=np.float64)
    nb._mark(bst, bsf, ist, 0.01, 0, rows, rowf)
    assert bsf[nb.BF_PNL] == pytest.approx(401.0)
    k.book_set(ist, 1, 1002, 0)  # the asks are gone: no mid
    nb._mark(bst, bsf, ist, 0.01, 0, rows, rowf)
    assert bsf[nb.BF_PNL] == pytest.approx(401.0)
    assert bsf[nb.BF_MARK_DD] == pytest.approx(0.0)
    assert bst[nb.B_UNSUPPORTED] == 0
    assert bst[nb.B_POS_LIMIT] == 0 and bst[nb.B_NROW] == 0  # 1001 USDC: far from 1900
