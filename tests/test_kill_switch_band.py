"""Kill switch in the market's own terms, the price band, crossed books and flatten backoff."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import pytest
from kit.data import NEXO_23, ROOT

from flashmm.config import load_config
from flashmm.engine import HALTED, RUNNING, Engine
from flashmm.feeds.replay import ReplayFeed
from flashmm.feeds.server import ReplayServer
from flashmm.feeds.ws import BinanceWSFeed
from flashmm.marketdata import DepthDiff, DepthSnapshot, FeedStatus, MarketEvent
from flashmm.risk import KillSwitch, PriceBand
from flashmm.runner import build_venue, drive_live, engine_from, scales_for, signal_factory
from flashmm.types import NS_PER_S, OrderRequest, Side
from flashmm.venues.sim import SimVenue

S = NS_PER_S


def _quiet_market(ks: KillSwitch, minutes: int = 3) -> int:
    """NEXO-like in SEI ticks (reference tick = 10): a one-tick move every 30 s."""
    t, bid = 0, 12_000
    for i in range(minutes * 120):
        t += S // 2
        if i % 60 == 59:
            bid += 10 if (i // 60) % 2 else -10
        assert ks.update_book(bid, bid + 10, t) is None
    return t


def test_kill_switch_sigma_floor_is_the_reference_tick() -> None:
    ks = KillSwitch(5.0, warmup_s=60)
    t = _quiet_market(ks)
    assert ks.ref_tick == 10 and ks.armed
    # σ learned from the rare moves is well under one reference tick (8.3 bps): the floor holds
    assert ks._var**0.5 < 2.0 and ks.sigma_bps(10 / 12_005 * 1e4) == pytest.approx(8.33, abs=0.01)
    # a one-tick reference move (both sides) never trips it, even a four-tick one
    bid = 12_000
    for step in (10, 20, 30, 40):
        t += S // 2
        assert ks.update_book(bid + step, bid + step + 10, t) is None
        t += 5 * S
        assert ks.update_book(bid, bid + 10, t) is None
    # ten ticks (83 bps) within a second does
    t += S // 2
    z = ks.update_book(bid + 100, bid + 110, t)
    assert z is not None and z > 5.0


def test_kill_switch_keeps_its_history_across_a_gap() -> None:
    ks = KillSwitch(5.0, warmup_s=60)
    t = _quiet_market(ks)
    ks.gap()
    # armed at once after the gap (no 60 s warm-up), and the jump across the gap is not a 1 s move
    t += 30 * S
    assert ks.update_book(12_100, 12_110, t) is None
    assert ks.ref_tick == 10
    t += S // 2
    assert ks.armed and ks.update_book(12_200, 12_210, t) is not None


def test_kill_switch_sigma_includes_our_own_market_once_we_trade() -> None:
    ks = KillSwitch(5.0, warmup_s=60)
    t = _quiet_market(ks)
    tick_bps = 10 / 12_005 * 1e4
    assert ks.sigma_bps(tick_bps) == pytest.approx(tick_bps)
    # our own fills swing 40 bps every 2 s: our market is more volatile than NEXO's tick
    for i in range(50):
        ks.on_own_trade(12_000 if i % 2 else 12_048, t + i * 2 * S)
    own = ks.status()["own_sigma_bps"]
    assert isinstance(own, float) and own > 20
    assert ks.sigma_bps(tick_bps) == pytest.approx(own, abs=1e-3)


def test_price_band_holds_a_bad_tick_and_confirms_a_real_move() -> None:
    band = PriceBand(4.0, 5.0, confirm_s=1.0)
    sigma = 8.0  # bps: band 32 bps
    assert band.check(1000.0, 0, sigma) is None
    assert band.check(1001.0, 1 * S, sigma) is None  # 10 bps: fine
    held = band.check(10_010.0, 2 * S, sigma)  # 10x
    assert held is not None and "held" in held
    assert band.check(1001.0, 2 * S + 1, sigma) is None  # back: the bad tick was not confirmed
    assert (band.rejected, band.confirmed, band.good) == (1, 0, 1001.0)
    # a real 1 % move: held, then used once it stayed there for a second
    assert band.check(1011.0, 3 * S, sigma) is not None
    assert band.check(1011.5, 3 * S + S // 2, sigma) is not None
    assert band.check(1011.0, 4 * S, sigma) is None
    assert (band.confirmed, band.good) == (1, 1011.0)
    # the plain percentage caps the band when σ is huge
    assert band.check(1070.0, 5 * S, 1000.0) is not None  # 5.8 % > 5 %
    # our own venue's mid counts too
    b2 = PriceBand(4.0, 0.0, 1.0)
    assert b2.check(1200.0, 0, sigma, venue_mid=120.0) is not None


def _engine(*sets: str) -> Engine:
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["model.enabled=false", *sets])
    return engine_from(cfg, build_venue(cfg))


def _step(engine: Engine, ev: MarketEvent, now: int, placed: list[OrderRequest]) -> None:
    engine.step(ev, now)
    while engine.outbox:
        kind, payload = engine.outbox.popleft()
        if kind == "order":
            placed.append(payload)


def _replayed(engine: Engine, n: int) -> tuple[list[MarketEvent], list[OrderRequest], int]:
    """The bundled NEXO 20 minutes' events, the engine stepped through the first ``n``:
    the events, the orders it placed and the time of the last event."""
    events = list(ReplayFeed([NEXO_23], scales_for(list(engine.specs.values()))).events())
    placed: list[OrderRequest] = []
    now = 0
    for ev in events[:n]:
        now = ev.ts_ns
        _step(engine, ev, now, placed)
    return events, placed, now


def _scaled(snap_bids: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    return [(p * k, q) for p, q in snap_bids]


def test_a_10x_reference_after_a_resync_never_reaches_an_order() -> None:
    engine = _engine("risk.kill_switch_enabled=true")
    ms = engine.markets["SEI/USDC"]
    events, placed, now = _replayed(engine, 600)
    assert placed and ms.kill.armed
    book = ms.builder.book
    good_mid = book.mid
    n_before = len(placed)
    top_bid, top_ask = book.best_bid, book.best_ask
    bids = [(top_bid - 10 * i, 1000) for i in range(5)]
    asks = [(top_ask + 10 * i, 1000) for i in range(5)]
    last_id = ms.builder.last_id
    # a reconnect: the feed re-syncs and its first snapshot is 10x
    t = now + S // 10
    _step(engine, FeedStatus("nexousdt", t, "resync", "reconnect"), t, placed)
    t += S // 10
    _step(
        engine,
        DepthSnapshot("nexousdt", t, last_id, _scaled(bids, 10), _scaled(asks, 10)),
        t,
        placed,
    )
    band = engine.risk.breakers["price_band:SEI/USDC"]
    assert band.tripped and "held" in band.reason
    assert ms.blocked is not None and ms.blocked.startswith("price_band:SEI/USDC")
    for k in range(1, 5):  # 0.4 s of quote cycles on the held book
        engine.run_due_timers(t + k * S // 10)
    # the real book comes back (another re-sync) and the feed carries on
    t += S // 2
    _step(engine, FeedStatus("nexousdt", t, "resync", "reconnect"), t, placed)
    _step(engine, DepthSnapshot("nexousdt", t, last_id, bids, asks), t, placed)
    assert not band.tripped and ms.band.rejected == 1
    for ev in events[600:900]:
        ts = max(ev.ts_ns, t)
        if isinstance(ev, DepthDiff) and ev.last_id <= last_id:
            continue
        _step(engine, ev, ts, placed)
    assert engine.state == RUNNING  # no halt either: the kill switch never saw the 10x mid
    assert len(placed) > n_before  # quoting resumed
    worst = max(abs(o.price_ticks / good_mid - 1) for o in placed)
    assert worst < 0.05  # no order anywhere near 10x


def test_a_crossed_reference_book_pulls_under_crossed_book() -> None:
    engine = _engine()
    ms = engine.markets["SEI/USDC"]
    _, placed, now = _replayed(engine, 400)
    book = ms.builder.book
    last_id, bad = ms.builder.last_id, book.best_ask * 10
    now += 1
    _step(engine, DepthDiff("nexousdt", now, last_id + 1, last_id + 1, [(bad, 5)], []), now, placed)
    b = engine.risk.breakers["crossed_book:SEI/USDC"]
    assert b.tripped and "crossed" in b.reason and b.status()["clears"].startswith("by itself")
    assert ms.blocked is not None and ms.blocked.startswith("crossed_book:SEI/USDC")
    now += S // 5
    _step(engine, DepthDiff("nexousdt", now, last_id + 2, last_id + 2, [(bad, 0)], []), now, placed)
    assert not b.tripped and b.trips == 1
    assert all(o.price_ticks < bad for o in placed)
    engine.run_due_timers(now + S)
    assert ms.blocked is None


class NoLiquiditySim(SimVenue):
    """The simulator with an empty book to take from: a flatten never fills."""

    takes: list[int]

    def take(self, market: str, side: Side, size_lots: int, limit: int, now_ns: int) -> None:
        self.takes.append(now_ns)


def test_halted_flatten_backs_off_and_sends_nothing_when_flat() -> None:
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["model.enabled=false"])
    venue = NoLiquiditySim({s.symbol: s for s in cfg.specs()})
    venue.takes = []
    engine = engine_from(cfg, venue)
    events = list(ReplayFeed([NEXO_23], scales_for(cfg.specs())).events())
    now = 0
    for ev in events[:20]:
        now = ev.ts_ns
        engine.step(ev, now)
    # flat: a halt cancels, sends no take, and stays quiet
    assert engine.flat() and engine.markets["SEI/USDC"].builder.book.valid
    engine.emergency_stop("test", now)
    assert engine.state == HALTED
    for k in range(1, 300):
        engine.run_due_timers(now + k * S // 5)
    assert venue.takes == []
    # with a position nobody takes: retries at 0, 2, 6, 14, 30 s ... never every second
    from flashmm.types import Fill, Liquidity

    engine.acct.on_fill(Fill("SEI/USDC", 0, Side.BUY, 1200, 100, 0.0, Liquidity.TAKER, now, "x"))
    t0 = now + 60 * S
    engine.run_due_timers(t0)
    for k in range(1, 5 * 120):  # two minutes of quote cycles
        engine.run_due_timers(t0 + k * S // 5)
    gaps = [(b - a) / S for a, b in zip(venue.takes, venue.takes[1:], strict=False)]
    assert len(venue.takes) == 6 and gaps == pytest.approx([2, 4, 8, 16, 32], abs=0.21)


def test_local_recipe_runs_30_minutes_without_a_halt() -> None:
    """The docs/sei.md recipe in data time: NEXO/USDT (tick 0.001) looped as `feed serve
    --loop` plays it, driving SEI/USDC (tick 0.0001) with the risk, strategy and model
    settings of configs/local.yaml, on the simulated venue and clock."""
    cfg = load_config(
        ROOT / "configs" / "local.yaml",
        ["mode=paper", "venue.kind=sim", "feed.kind=replay", "logging.file=/dev/null"],
    )
    assert cfg.risk.kill_switch_enabled
    engine = engine_from(cfg, build_venue(cfg), signal_factory=signal_factory(cfg, sim_clock=True))
    feed = ReplayFeed([NEXO_23], scales_for(cfg.specs()), loop=True)
    start = end = 0
    passes = 0
    for ev in feed.events():
        now = ev.ts_ns
        start = start or now
        if now - start > 31 * 60 * S:
            break
        passes += isinstance(ev, FeedStatus) and ev.kind == "resync"
        engine.step(ev, now)
        assert engine.state == RUNNING, engine.pause_reason
        end = now
    feed.stop()
    ms = engine.markets["SEI/USDC"]
    assert (end - start) / S > 30 * 60 and passes >= 1
    assert ms.kill.ref_tick == 10 and ms.kill.armed
    assert ms.kill.max_sigma < cfg.risk.kill_switch_sigma
    assert engine.risk.breakers["kill_switch"].trips == 0
    # the quiet recording's gaps (up to 23.5 s) never pull the quotes as a stale feed
    assert engine.risk.breakers["stale_feed:SEI/USDC"].trips <= 1
    assert engine.acct.fills > 0 and engine.acct.limit_breaches == 0


class TenXSnapshotAfterReconnect(ReplayServer):
    """The loopback Binance server, misbehaving once: the REST snapshot fetched right
    after the reconnect has every price 10x (a feed fault we cannot cause for real)."""

    snapshots = 0

    def book_levels(self, symbol: str, limit: int = 5000) -> dict[str, Any]:
        ref = super().book_levels(symbol, limit)
        self.snapshots += 1
        if self.snapshots == 2:
            ten = [[f"{float(p) * 10:.8f}", q] for p, q in ref["bids"]]
            ref = {
                **ref,
                "bids": ten,
                "asks": [[f"{float(p) * 10:.8f}", q] for p, q in ref["asks"]],
            }
        return ref


async def test_a_10x_snapshot_after_a_real_reconnect_never_reaches_an_order() -> None:
    """Real loopback websocket and REST feed, the engine on the wall clock with the
    simulated venue: the server drops the connection, the snapshot after the reconnect
    is 10x. No order is ever placed away from the real price; quoting comes back."""
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["model.enabled=false"])
    placed: list[OrderRequest] = []
    async with TenXSnapshotAfterReconnect([NEXO_23], speed=300.0, close_after=700) as srv:
        engine = engine_from(cfg, build_venue(cfg))
        await engine.venue.start()
        feed = BinanceWSFeed(
            scales_for([s for s in cfg.specs() if s.reference == "nexousdt"]), srv.ws_url, srv.rest_url, 5000, backoff_initial=0.02,
            backoff_max=0.2, idle_timeout=5.0, rng=random.Random(7),
        )  # fmt: skip
        stop = asyncio.Event()
        drive = asyncio.create_task(drive_live(engine, feed, stop, time.monotonic() + 30))

        def drain() -> None:
            while engine.outbox:
                kind, payload = engine.outbox.popleft()
                if kind == "order":
                    placed.append(payload)

        end = time.monotonic() + 30
        while not srv.finished.is_set() and time.monotonic() < end and not drive.done():
            drain()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the last messages and a quote cycle
        drain()
        assert srv.finished.is_set()
        stop.set()
        drive.cancel()  # the feed is idle now: do not wait for a next message
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(drive, 10)
        live = [o for o in engine.markets["SEI/USDC"].orders.values()]
        await engine.venue.aclose()
    ms = engine.markets["SEI/USDC"]
    assert feed.stats.reconnects == 1 and srv.snapshots >= 3
    crossed = engine.risk.breakers["crossed_book:SEI/USDC"]
    band = engine.risk.breakers["price_band:SEI/USDC"]
    assert band.trips + crossed.trips >= 1
    assert not crossed.tripped and not band.tripped  # the fresh snapshot cleared them
    real_mid = ms.band.good
    assert 1000 < real_mid < 1400  # NEXO ~1.2 USDT in 0.001 ticks
    # NEXO moves a few % over the 20 minutes; 10x is 900 % away
    assert placed and max(abs(o.price_ticks / real_mid - 1) for o in placed) < 0.1
    assert live  # pulled at the 10x snapshot, quoted again once the book was right
