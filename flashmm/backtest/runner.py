"""The backtest loop: the paper-mode engine on a simulated clock, as fast as possible.

:func:`run_backtest` drives the same :class:`~flashmm.engine.Engine` and
:class:`~flashmm.venues.sim.SimVenue` as paper mode with the same loop,
:func:`flashmm.runner.drive_replay` (:meth:`~flashmm.engine.Engine.step` for each
event: due quote cycles, the event, the venue), over a
:class:`~flashmm.feeds.cache.CachedFeed` and without an event loop (nothing on a
simulated clock waits). At the end it shuts down like every other mode
(:func:`flashmm.runner.shutdown`: cancel all, advance sim time until the venue
confirms).

A :class:`~flashmm.backtest.recorder.Recorder` runs after every step, outside
the engine; :func:`~flashmm.backtest.report.build_report` turns it into the
report and :func:`~flashmm.backtest.outputs.write_outputs` into files. The
modules import one way only: runner -> report -> recorder (checked by
``lint-imports``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flashmm.backtest.recorder import BacktestResult, MarketTrack, Recorder
from flashmm.config import Config
from flashmm.engine import Engine, SignalFactory
from flashmm.errors import UserInputError
from flashmm.feeds.cache import CachedFeed
from flashmm.runner import (
    build_venue,
    data_files,
    drive_replay,
    engine_from,
    run_unsuspended,
    scales_for,
    shutdown,
    signal_factory,
)
from flashmm.strategy import Strategy

ProgressFn = Callable[[int], None]
StepFn = Callable[[int], None]


def _counting(record: StepFn, progress: ProgressFn, every: int) -> StepFn:
    """``record`` after every step, and ``progress(every)`` every ``every`` steps."""
    count = 0

    def on_step(now: int) -> None:
        nonlocal count
        record(now)
        count += 1
        if count == every:
            progress(every)
            count = 0

    return on_step


def make_engine(
    cfg: Config, strategy: Strategy | None = None, signals: SignalFactory | None = None
) -> Engine:
    """The engine of paper mode (same venue, same signal); a strategy or signal may be passed in.

    The clock is simulated: the model's latency is a modelled cost (``model.sim_latency_us``)."""
    return engine_from(
        cfg,
        build_venue(cfg),
        strategy=strategy,
        signal_factory=signals or signal_factory(cfg, sim_clock=True),
    )


def open_feed(
    cfg: Config,
    files: Sequence[str],
    from_ns: int | None = None,
    to_ns: int | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> CachedFeed:
    """The cached event source for a backtest; refuses an empty time window."""
    if from_ns is not None and to_ns is not None and from_ns >= to_ns:
        raise UserInputError(f"empty time range: --from ({from_ns}) must be before --to ({to_ns})")
    feed = CachedFeed(
        files,
        scales_for(cfg.specs()),
        align=cfg.feed.align,
        start_ns=from_ns,
        end_ns=to_ns,
        cache_dir=cache_dir,
        use_cache=use_cache,
    )
    feed.check_snapshots()
    if not len(feed):
        raise UserInputError("the data files hold no market events")
    if (from_ns is not None or to_ns is not None) and feed.count_in_window() == 0:
        lo, hi = feed.span()
        raise UserInputError(
            f"empty time range: no events between --from and --to (the data spans "
            f"{fmt_ts(lo)} to {fmt_ts(hi)}, i.e. {lo} to {hi} ns)"
        )
    return feed


def fmt_ts(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_backtest(
    cfg: Config,
    data: Sequence[str] | None = None,
    *,
    from_ns: int | None = None,
    to_ns: int | None = None,
    strategy: Strategy | None = None,
    signals: SignalFactory | None = None,
    progress: ProgressFn | None = None,
    progress_every: int = 8192,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    sample_s: float = 1.0,
    feed: CachedFeed | None = None,
    compiled: bool = True,
) -> BacktestResult:
    """Run one backtest and build its report (see ``docs/backtest.md``).

    With the built-in strategy and signal (no ``strategy``/``signals`` given) the
    run goes through the compiled loop (:mod:`flashmm.backtest.compiled`) when it
    models everything the run needs, else (or with ``compiled=False``) through
    the engine; both give the same report."""
    from flashmm.backtest.report import build_report

    t0 = time.perf_counter()
    c0 = time.process_time()
    if feed is None:
        feed = open_feed(cfg, data_files(cfg, data), from_ns, to_ns, cache_dir, use_cache)
        pre = pre_cpu = 0.0
    else:
        pre, pre_cpu = feed.load_s, feed.load_cpu_s  # opened by the caller: its load counts too
    engine = make_engine(cfg, strategy, signals)
    run_unsuspended(engine.venue.start())
    done = None
    if compiled and strategy is None and signals is None:
        from flashmm.backtest.compiled import run_compiled

        done = run_compiled(cfg, engine, feed, sample_s)
        if done is None:
            engine = make_engine(cfg, strategy, signals)  # a fresh one: the loop may have booked
            run_unsuspended(engine.venue.start())
    if done is not None:
        res, parts = done
        rec, n = res.recorder, engine.events
        if progress is not None:
            progress(n)
        timing = {k: parts[k] for k in ("loop_s", "loop_cpu_s", "orders_left_open")}
        timing["warmup_events"] = 0
    else:
        active = [sym for sym, ms in engine.markets.items() if ms.spec.reference in feed.symbols]
        rec = Recorder(engine, active, sample_s)
        t_load, c_load = time.perf_counter(), time.process_time()
        every = max(int(progress_every), 1)
        on_step = rec.step if progress is None else _counting(rec.step, progress, every)
        n, warm = run_unsuspended(drive_replay(engine, feed, warm_until=from_ns, on_step=on_step))
        if progress is not None and n % every:
            progress(n % every)
        t_loop, c_loop = time.perf_counter(), time.process_time()
        clean = run_unsuspended(shutdown(engine, sim_clock=True))
        rec.step(engine.now_ns)
        timing = {
            "load_s": t_load - t0 + pre,
            "loop_s": t_loop - t_load,
            "loop_cpu_s": c_loop - c_load,
            "warmup_events": warm,
            "orders_left_open": 0 if clean else engine.live_orders(),
        }
    run_unsuspended(engine.venue.aclose())
    t_end = time.perf_counter()
    timing["wall_s"] = t_end - t0 + pre
    timing["cpu_s"] = time.process_time() - c0 + pre_cpu
    # the compiled loop's load is everything but the loop itself
    timing.setdefault("load_s", t_end - t0 + pre - timing["loop_s"])
    report = build_report(cfg, engine, rec, feed, n, timing, from_ns, to_ns)
    return BacktestResult(report, rec, engine, feed)


__all__ = [
    "BacktestResult",
    "MarketTrack",
    "Recorder",
    "data_files",
    "make_engine",
    "open_feed",
    "run_backtest",
]
