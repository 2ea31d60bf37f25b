"""Wiring and the async loop: builds the engine for a mode and drives it.

Replay feeds run the engine on a simulated clock (the recorded timestamps),
live feeds on the wall clock with a timer task for the quote cycle. Panel,
control socket, journal and systemd notifications are tasks beside the
engine that read its snapshot and outbox; none of them runs on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger

from flashmm.config import Config
from flashmm.engine import Engine, SignalFactory
from flashmm.errors import UserInputError
from flashmm.feeds.base import Feed
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.paths import resolve_path
from flashmm.signal import SignalSource
from flashmm.snapshot import Snapshot
from flashmm.stopsignals import StopSignals, install_signal_handlers
from flashmm.strategy import Strategy
from flashmm.types import MarketSpec
from flashmm.venues.base import Venue

T = TypeVar("T")

#: how long closing a feed may take on shutdown before the bot goes on without it
FEED_CLOSE_TIMEOUT_S = 2.0


@dataclass
class RunOptions:
    data: Sequence[str] | None = None
    duration_s: float | None = None
    speed: float | None = None
    loop: bool | None = None
    panel: bool = False
    start_ns: int | None = None
    end_ns: int | None = None
    extra_tasks: list[Callable[[Engine], Coroutine[Any, Any, None]]] = field(default_factory=list)


class SnapshotHolder:
    """The latest snapshot, published ~4 times a second for readers on other threads
    (the panel); ``build`` makes it (operations add their part), else the engine does."""

    def __init__(self) -> None:
        self.latest: Snapshot | None = None
        self.build: Callable[[], Snapshot] | None = None


def scales_for(specs: Sequence[MarketSpec]) -> dict[str, Any]:
    return make_scales((s.reference, float(s.tick_size), float(s.lot_size)) for s in specs)


def uses_sim_clock(cfg: Config, data: Sequence[str] | None = None) -> bool:
    """True when the run replays recordings: the engine then runs on recorded time."""
    return bool(data) or cfg.feed.kind == "replay"


def data_files(cfg: Config, data: Sequence[str] | None) -> list[str]:
    """The recordings of a run: ``--data`` files, else the profile's ``feed.files``."""
    files = [str(resolve_path(f).resolve()) for f in (data or cfg.feed.files)]
    if not files:
        raise UserInputError(
            "feed.files: no recordings configured; pass --data FILE or list one (e.g. bundled:nexo)"
        )
    return files


def build_feed(cfg: Config, opts: RunOptions) -> Feed:
    specs = cfg.specs()
    if uses_sim_clock(cfg, opts.data):
        files = data_files(cfg, opts.data)
        speed = cfg.feed.speed if opts.speed is None else opts.speed
        # files given on the command line play once unless asked otherwise
        loop = (cfg.feed.loop and not opts.data) if opts.loop is None else opts.loop
        # only markets whose reference appears in the data are driven
        replay = ReplayFeed(
            files,
            scales_for(specs),
            speed=speed,
            align=cfg.feed.align,
            loop=loop,
            start_ns=opts.start_ns,
            end_ns=opts.end_ns,
        )
        replay.check_snapshots()
        return replay
    from flashmm.feeds.ws import BinanceWSFeed

    return BinanceWSFeed(
        scales_for(specs),
        ws_url=cfg.feed.ws_url,
        rest_url=cfg.feed.rest_url,
        futures=cfg.feed.futures,
    )


def build_venue(cfg: Config) -> Venue:
    specs = {s.symbol: s for s in cfg.specs()}
    if cfg.venue.kind == "sim":
        from flashmm.venues.sim import SimSettings, SimVenue

        return SimVenue(specs, SimSettings.model_validate(cfg.venue.sim))
    from flashmm.venues.sei.settings import SeiVenueSettings
    from flashmm.venues.sei.venue import SeiVenue

    return SeiVenue(SeiVenueSettings.model_validate(cfg.venue.sei), specs=specs)


def signal_factory(cfg: Config, *, sim_clock: bool = False) -> Callable[[MarketSpec], SignalSource]:
    """Per-market signal: 64 features → ONNX model behind its breaker, rules as fallback.

    ``sim_clock``: the model's latency is a modelled cost, not the wall clock."""
    from flashmm.model_signal import make_signal_factory

    return make_signal_factory(cfg.model, sim_clock=sim_clock)


def engine_from(
    cfg: Config,
    venue: Venue,
    *,
    strategy: Strategy | None = None,
    signal_factory: SignalFactory | None = None,
    observe_market: bool | None = None,
    bootstrap_books: bool = False,
) -> Engine:
    """An engine built from the pieces a profile holds: its markets, venue, strategy
    (the profile's unless given), risk and engine settings. Without a signal factory
    the engine's own (the book-imbalance rule)."""
    if strategy is None:
        from flashmm.native.strategy import strategy_for

        strategy = strategy_for(cfg.strategy)
    return Engine(
        cfg.specs(),
        venue,
        strategy,
        risk=cfg.risk,
        settings=cfg.engine_settings(),
        signal_factory=signal_factory,
        observe_market=observe_market,
        bootstrap_books=bootstrap_books,
    )


def build_engine(cfg: Config, venue: Venue | None = None, *, sim_clock: bool = False) -> Engine:
    """The engine of ``flashmm run``: the profile's venue and model signal."""
    return engine_from(
        cfg, venue or build_venue(cfg), signal_factory=signal_factory(cfg, sim_clock=sim_clock)
    )


async def drive_replay(
    engine: Engine,
    feed: Feed,
    stop: asyncio.Event | None = None,
    deadline: float | None = None,
    *,
    warm_until: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Sim-clock loop of paper replay and backtest: :meth:`Engine.step` per event;
    before ``warm_until`` only :meth:`Engine.warm_up`; ``on_step(now)`` after each
    step. Ends with the data, ``stop`` or ``deadline`` (checked every event when
    paced, else every 256). Returns the events stepped and warmed up."""
    n = warm = 0
    mask = 0 if feed.paced else 255
    step = engine.step
    async for ev in feed:
        now = ev.ts_ns
        if warm_until is not None and now < warm_until:
            engine.warm_up(ev, now)
            warm += 1
            continue
        step(ev, now)
        if on_step is not None:
            on_step(now)
        n += 1
        if (n & mask) == 0 and (
            (stop is not None and stop.is_set())
            or (deadline is not None and time.monotonic() >= deadline)
        ):
            feed.stop()
            break
    return n, warm


def run_unsuspended(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits for anything (a sim-clock drive or shutdown)
    without an event loop; a bare yield (``asyncio.sleep(0)``) just goes on."""
    try:
        while coro.send(None) is None:
            pass
    except StopIteration as done:
        value: T = done.value
        return value
    coro.close()
    raise RuntimeError("coroutine waited on a simulated clock")


async def drive_live(
    engine: Engine, feed: Feed, stop: asyncio.Event, deadline: float | None
) -> None:
    """Wall-clock loop: events as they arrive, the quote cycle on a timer task."""

    async def timer() -> None:
        period = engine.quote_period_ns / 1e9
        nxt = time.monotonic()
        while not stop.is_set():
            engine.on_timer(time.time_ns())
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    engine.set_gap_handler(feed.request_resync)
    t = asyncio.create_task(timer())
    try:
        async for ev in feed:
            now = time.time_ns()
            engine.on_market_event(ev, now)
            engine.pump_venue(now)
            if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
    finally:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
        # bounded: a shutdown never waits for a feed that is down
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(feed.aclose(), FEED_CLOSE_TIMEOUT_S)


async def shutdown(engine: Engine, sim_clock: bool, timeout_s: float = 10.0) -> bool:
    """Cancel every order and wait until the venue confirms. True when none is left."""
    now = engine.now_ns or time.time_ns()
    engine.cancel_all(now)
    if sim_clock:
        step = 10_000_000
        for _ in range(int(timeout_s * 1e9 / step)):
            now += step
            engine.pump_venue(now)
            if engine.live_orders() == 0:
                break
        engine.set_clock(now)
    else:
        end = time.monotonic() + timeout_s
        while engine.live_orders() and time.monotonic() < end:
            await asyncio.sleep(0.05)
            engine.pump_venue(time.time_ns())
    left = engine.live_orders()
    if left:
        logger.error("{} order(s) still open after {:.0f} s: check the venue", left, timeout_s)
    return left == 0


async def publish_snapshots(
    engine: Engine, holder: SnapshotHolder, stop: asyncio.Event, hz: float
) -> None:
    period = 1.0 / hz
    while not stop.is_set():
        holder.latest = holder.build() if holder.build is not None else engine.snapshot()
        await asyncio.sleep(period)


async def _start_venue(venue: Venue, stop: asyncio.Event) -> bool:
    """``venue.start()``, given up when ``stop`` is set first. True when started."""
    started = asyncio.ensure_future(venue.start())
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({started, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if started.done():
        started.result()
        return True
    started.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await started
    return False


async def run_async(
    cfg: Config,
    opts: RunOptions,
    holder: SnapshotHolder | None = None,
    stop: asyncio.Event | None = None,
    engine: Engine | None = None,
    signals: StopSignals | None = None,
) -> dict[str, Any]:
    """Run until the data ends, ``duration_s`` passes or ``stop`` is set; returns the summary.

    ``signals``: the handlers the caller installed already (for ``stop``); else installed here.
    """
    stop = stop or asyncio.Event()
    holder = holder or SnapshotHolder()
    feed = build_feed(cfg, opts)
    sim_clock = feed.sim_clock
    engine = engine or build_engine(cfg, sim_clock=sim_clock)
    signals = signals or install_signal_handlers(stop)
    if not await _start_venue(engine.venue, stop):
        # stopped while connecting (a node that does not answer, a long log replay):
        # nothing was sent yet, so there is nothing to cancel
        logger.warning("stopped before the venue was ready")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(engine.venue.aclose(), FEED_CLOSE_TIMEOUT_S)
        await asyncio.sleep(signals.echo_left(time.monotonic()))
        return {**engine.summary(), "orders_left_open": 0}
    deadline = time.monotonic() + opts.duration_s if opts.duration_s else None
    # --duration is a timer of its own: it stops the bot even when no event arrives
    timer = (
        asyncio.get_running_loop().call_later(opts.duration_s, stop.set)
        if opts.duration_s
        else None
    )
    pub = asyncio.create_task(publish_snapshots(engine, holder, stop, cfg.ui.refresh_hz))
    extras = [asyncio.create_task(t(engine)) for t in opts.extra_tasks]
    t0 = time.perf_counter()
    try:
        drv: asyncio.Task[object] = asyncio.create_task(
            drive_replay(engine, feed, stop, deadline, warm_until=opts.start_ns)
            if sim_clock
            else drive_live(engine, feed, stop, deadline)
        )
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({drv, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not drv.done():
            # stop (SIGTERM, `flashmm stop`, --duration): never wait for the next event of
            # a feed that may be down or paced slowly; the engine is between events here
            feed.stop()
            drv.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drv
        else:
            drv.result()
        waiter.cancel()
    finally:
        if timer is not None:
            timer.cancel()
        clean = await shutdown(engine, sim_clock)
        stop.set()
        for t in [pub, *extras]:
            t.cancel()
        for t in [pub, *extras]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        holder.latest = holder.build() if holder.build is not None else engine.snapshot()
        await engine.venue.aclose()
        if not sim_clock:  # events the venue read while closing (e.g. a last fill)
            engine.pump_venue(time.time_ns())
    summary = engine.summary()
    summary["wall_s"] = round(time.perf_counter() - t0, 3)
    summary["events_per_s"] = round(engine.events / max(summary["wall_s"], 1e-9), 1)
    summary["orders_left_open"] = 0 if clean else engine.live_orders()
    summary.update(feed.summary())
    # a quick stop must not leave the loop (and its handlers) before an echo of the
    # signal that asked for it arrives: that echo would then kill the process
    await asyncio.sleep(signals.echo_left(time.monotonic()))
    return summary


def run_blocking(coro_fn: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """Run on uvloop when available."""
    try:
        import uvloop

        return uvloop.run(coro_fn())
    except ImportError:  # pragma: no cover
        return asyncio.run(coro_fn())
