"""Kill switch and price band defaults on every market FlashMM ships recordings of:
normal trading trips neither; a flash-crash move or a bad tick still does."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.data import ETH, ETH_SLICE, FUT_BTC, FUT_ETH, NEXO_23, ROOT, require

from flashmm.book import BookBuilder, SequenceGap, SyncState
from flashmm.config import load_config
from flashmm.engine import RUNNING
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import DepthDiff, DepthSnapshot, FeedStatus
from flashmm.risk import KillSwitch, PriceBand, RiskConfig
from flashmm.runner import build_venue, engine_from, scales_for, signal_factory
from flashmm.types import NS_PER_S

S = NS_PER_S


def test_the_trip_limit_is_the_largest_of_sigma_bps_and_ticks() -> None:
    cfg = RiskConfig()
    ks = KillSwitch.from_config(cfg)
    assert (ks.k, ks.min_move_bps, ks.min_ticks) == (15.0, 100.0, 20.0)
    assert ks.limit_bps(0.04) == 100.0  # ETH/USDT: σ on its 1 bps floor, the bps floor rules
    assert ks.limit_bps(8.0) == 20 * 8.0  # NEXO/USDT's 8 bps tick: twenty ticks rule
    ks.k = 30.0
    assert ks.limit_bps(8.0) == 30 * 8.0  # σ >= one tick: then k σ
    band = PriceBand.from_config(cfg)
    assert band.limit_bps(1.0) == 50.0 and band.limit_bps(20.0) == 80.0
    assert band.limit_bps(1e6) == 500.0  # the plain 5 % band caps it


def test_routine_eth_seconds_pass_and_a_flash_crash_trips() -> None:
    """ETH-like: σ on its 1 bps floor, a 5-8 bps 1 s move every few seconds (fat
    tails: 5-8 σ); the old 5 σ switch tripped on these, the default does not."""
    ks = KillSwitch.from_config(RiskConfig())
    t, mid = 0, 25_000_000.0  # 2500 USDT in 0.0001 ticks
    for i in range(600):
        t += S // 4
        step = 0.0008 if i % 23 == 0 else 0.00002
        mid *= 1 + (step if i % 2 else -step)
        assert ks.update(mid, t, tick_bps=0.04) is None
    assert ks.armed and ks.max_move_bps > 5.0
    t += S // 2
    z = ks.update(mid * 0.985, t, tick_bps=0.04)  # 150 bps in half a second
    assert z is not None and ks.last_move_bps > ks.last_limit_bps == 100.0


def _replay_risk(files: list[Path], sym: str, tick: float, lot: float) -> tuple[KillSwitch, int]:
    """A recording's top of book through the default kill switch and price band, as
    the engine feeds them; returns the switch and the number of kill-switch trips."""
    cfg = RiskConfig()
    ks, band = KillSwitch.from_config(cfg), PriceBand.from_config(cfg)
    builder = BookBuilder(sym)
    trips = 0
    for ev in ReplayFeed(files, make_scales([(sym, tick, lot)])).events():
        try:
            if isinstance(ev, DepthSnapshot):
                builder.on_snapshot(ev)
            elif isinstance(ev, DepthDiff):
                builder.on_diff(ev)
            elif isinstance(ev, FeedStatus) and ev.kind == "resync":
                builder.state = SyncState.WAITING_SNAPSHOT
                ks.gap()
                continue
            else:
                continue
        except SequenceGap:
            continue
        book = builder.book
        if not book.valid:
            continue
        tick_bps = max(ks.ref_tick, 1) / (band.good or book.mid) * 1e4
        if band.check(book.mid, ev.ts_ns, ks.sigma_bps(tick_bps)) is not None:
            continue
        trips += ks.update_book(book.best_bid, book.best_ask, ev.ts_ns) is not None
    return ks, trips


@pytest.mark.parametrize(
    ("path", "sym", "tick", "lot"),
    [
        (ETH, "ethusdt", 0.01, 0.0001),
        (FUT_BTC, "btcusdt", 0.1, 0.001),
        (FUT_ETH, "ethusdt", 0.01, 0.001),
    ],
    ids=["eth-spot", "btc-usdm", "eth-usdm"],
)
def test_shared_recordings_never_trip_the_default_kill_switch(
    path: Path, sym: str, tick: float, lot: float
) -> None:
    require(path)
    ks, trips = _replay_risk([path], sym, tick, lot)
    assert ks.armed and ks.max_move_bps > 0
    assert trips == 0, f"largest 1 s move {ks.max_move_bps:.1f} bps ({ks.max_sigma:.1f} σ)"


@pytest.mark.slow
def test_paper_profile_runs_an_hour_without_a_halt() -> None:
    """`flashmm run` as the README starts it: configs/paper.yaml (NEXO + ETH bundled
    recordings, looped) on the simulated venue and clock, for an hour of market time."""
    cfg = load_config(ROOT / "configs" / "paper.yaml", ["logging.file=/dev/null"])
    assert cfg.risk.kill_switch_enabled
    engine = engine_from(cfg, build_venue(cfg), signal_factory=signal_factory(cfg, sim_clock=True))
    feed = ReplayFeed([NEXO_23, ETH_SLICE], scales_for(cfg.specs()), loop=True)
    start = end = 0
    for ev in feed.events():
        now = ev.ts_ns
        start = start or now
        if now - start > 61 * 60 * S:
            break
        engine.step(ev, now)
        assert engine.state == RUNNING, engine.pause_reason
        end = now
    feed.stop()
    assert (end - start) / S > 60 * 60
    assert engine.risk.breakers["kill_switch"].trips == 0
    eth = engine.markets["ETH/USDC"]
    assert eth.kill.armed and eth.kill.max_move_bps > 0
    band_trips = sum(engine.risk.breakers[f"price_band:{s}"].trips for s in engine.markets)
    assert band_trips <= 3
    assert engine.acct.fills > 0
