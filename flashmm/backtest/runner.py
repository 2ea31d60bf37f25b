"""The backtest loop: the paper-mode engine on a simulated clock, as fast as possible.

:func:`run_backtest` drives the same :class:`~flashmm.engine.Engine` and
:class:`~flashmm.venues.sim.SimVenue` as paper mode, with the calls of
:func:`flashmm.runner.drive_replay` (for each event: due quote cycles, the
event, the venue) but synchronously, over a :class:`~flashmm.backtest.cache.CachedFeed`.
At the end it shuts down like every other mode (:func:`flashmm.runner.shutdown`:
cancel all, advance sim time until the venue confirms).

A :class:`Recorder` runs after every step, outside the engine: it drains
``engine.outbox`` (there is no journal in a backtest), keeps the mid path
for markouts, integrates quote uptime and spreads over sim time, and takes
a time-series sample every ``sample_s`` of sim time for the plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashmm.backtest.cache import CachedFeed
from flashmm.config import Config
from flashmm.engine import Engine, MarketState, SignalFactory
from flashmm.errors import UserInputError
from flashmm.runner import build_venue, scales_for, shutdown, signal_factory
from flashmm.strategy import Strategy
from flashmm.types import NS_PER_S, Fill, Order, OrderState

ProgressFn = Callable[[int], None]

_OPEN = OrderState.OPEN
_PCANCEL = OrderState.PENDING_CANCEL


@dataclass
class MarketTrack:
    """What the recorder keeps for one market."""

    ms: MarketState
    unit: float  # USDC per tick·lot
    mid_ts: list[int] = field(default_factory=list)  # mid path: time of each book change
    mid2: list[int] = field(default_factory=list)  # 2 x mid in ticks (0 = book not valid)
    version: int = -1
    # time-weighted state since the last step
    both: bool = False
    q_spread_bps: float = 0.0
    m_spread_bps: float = -1.0  # < 0: no valid book
    t_both_ns: int = 0
    t_valid_ns: int = 0
    t_total_ns: int = 0
    q_spread_int: float = 0.0  # integral of our spread (bps·ns) while both sides are quoted
    m_spread_int: float = 0.0
    # samples for plots
    s_bid: list[int] = field(default_factory=list)
    s_ask: list[int] = field(default_factory=list)
    s_qbid: list[int] = field(default_factory=list)  # 0 = no live bid
    s_qask: list[int] = field(default_factory=list)
    s_pos: list[int] = field(default_factory=list)
    s_inv: list[float] = field(default_factory=list)
    sent_lots: int = 0


class Recorder:
    """Reads engine state after each step; never called from inside the engine."""

    def __init__(self, engine: Engine, symbols: Sequence[str], sample_s: float = 1.0) -> None:
        self.engine = engine
        self.tracks: dict[str, MarketTrack] = {}
        for sym in symbols:
            ms = engine.markets[sym]
            unit = ms.spec.unit_usdc
            self.tracks[sym] = MarketTrack(ms, unit)
        self._tracks = list(self.tracks.values())
        self.sample_ns = max(int(sample_s * NS_PER_S), 1)
        self.next_sample = 0
        self.last_ns = 0
        self.fills: list[Fill] = []
        self.orders: list[Order] = []
        self.notes: list[tuple[str, Any]] = []  # breaker / state / feed entries of the outbox
        self.s_t: list[int] = []
        self.s_equity: list[float] = []
        self.s_fees: list[float] = []

    def step(self, now: int) -> None:
        eng = self.engine
        if eng.outbox:
            self._drain()
        dt = now - self.last_ns if self.last_ns else 0
        self.last_ns = now
        for tr in self._tracks:
            if dt > 0:
                tr.t_total_ns += dt
                if tr.m_spread_bps >= 0.0:
                    tr.t_valid_ns += dt
                    tr.m_spread_int += tr.m_spread_bps * dt
                if tr.both:
                    tr.t_both_ns += dt
                    tr.q_spread_int += tr.q_spread_bps * dt
            book = tr.ms.builder.book
            if book.version != tr.version:
                tr.version = book.version
                tr.mid_ts.append(now)
                tr.mid2.append(book.best_bid + book.best_ask if book.valid else 0)
            qb = qa = 0
            for o in tr.ms.orders.values():
                st = o.state
                if st is _OPEN or st is _PCANCEL:
                    p = o.price_ticks
                    if o.side > 0:
                        if p > qb:
                            qb = p
                    elif qa == 0 or p < qa:
                        qa = p
            if book.valid:
                mid = (book.best_bid + book.best_ask) * 0.5
                tr.m_spread_bps = (book.best_ask - book.best_bid) / mid * 1e4
                tr.both = qb > 0 and qa > 0
                tr.q_spread_bps = (qa - qb) / mid * 1e4 if tr.both else 0.0
            else:
                tr.m_spread_bps = -1.0
                tr.both = False
        if now >= self.next_sample:
            self._sample(now)
            self.next_sample = now - now % self.sample_ns + self.sample_ns

    def _drain(self) -> None:
        box = self.engine.outbox
        while box:
            kind, payload = box.popleft()
            if kind == "fill":
                self.fills.append(payload)
            elif kind == "order":
                self.orders.append(payload)
                tr = self.tracks.get(payload.market)
                if tr is not None:
                    tr.sent_lots += payload.size_lots
            elif kind not in ("order_done", "order_update"):
                self.notes.append((kind, payload))

    def _sample(self, now: int) -> None:
        eng = self.engine
        acct = eng.acct
        pnl = 0.0
        for sym, pos in acct.positions.items():
            tr = self.tracks.get(sym)
            if tr is None:
                pnl += pos.realized_usdc - pos.fees_usdc
                continue
            book = tr.ms.builder.book
            valid = book.valid
            mid = (book.best_bid + book.best_ask) * 0.5 if valid else 0.0
            pnl += acct.market_pnl(sym, mid)
            tr.s_bid.append(book.best_bid if valid else 0)
            tr.s_ask.append(book.best_ask if valid else 0)
            qb = qa = 0
            for o in tr.ms.orders.values():
                if o.state is _OPEN or o.state is _PCANCEL:
                    if o.side > 0:
                        qb = max(qb, o.price_ticks)
                    elif qa == 0 or o.price_ticks < qa:
                        qa = o.price_ticks
            tr.s_qbid.append(qb)
            tr.s_qask.append(qa)
            tr.s_pos.append(pos.lots)
            tr.s_inv.append(pos.lots * mid * tr.unit)
        self.s_t.append(now)
        self.s_equity.append(pnl)
        self.s_fees.append(acct.fees)


@dataclass
class BacktestResult:
    report: dict[str, Any]
    recorder: Recorder
    engine: Engine
    feed: CachedFeed


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the sim-clock branches) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("coroutine suspended on a simulated clock")


def make_engine(
    cfg: Config, strategy: Strategy | None = None, signals: SignalFactory | None = None
) -> Engine:
    """The engine of paper mode (same venue, same signal); a strategy or signal may be passed in.

    The clock is simulated: the model's latency is a modelled cost (``model.sim_latency_us``)."""
    return Engine(
        cfg,
        build_venue(cfg),
        strategy=strategy,
        signal_factory=signals or signal_factory(cfg, sim_clock=True),
    )


def data_files(cfg: Config, data: Sequence[str] | None) -> list[str]:
    from flashmm.config import resolve_path

    if data:
        return [str(resolve_path(d).resolve()) for d in data]
    files = [str(resolve_path(f).resolve()) for f in cfg.feed.files]
    if not files:
        raise UserInputError("no data: pass --data FILE (the profile's feed.files is empty)")
    return files


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
) -> BacktestResult:
    """Run one backtest and build its report (see ``docs/backtest.md``)."""
    from flashmm.backtest.report import build_report

    t0 = time.perf_counter()
    c0 = time.process_time()
    if feed is None:
        feed = open_feed(cfg, data_files(cfg, data), from_ns, to_ns, cache_dir, use_cache)
        pre = pre_cpu = 0.0
    else:
        pre, pre_cpu = feed.load_s, feed.load_cpu_s  # opened by the caller: its load counts too
    engine = make_engine(cfg, strategy, signals)
    _run_sync(engine.venue.start())
    active = [sym for sym, ms in engine.markets.items() if ms.spec.reference in feed.symbols]
    rec = Recorder(engine, active, sample_s)
    t_load = time.perf_counter()
    lo = from_ns
    warm = 0
    n = 0
    step = rec.step
    run_due = engine.run_due_timers
    on_event = engine.on_market_event
    pump = engine.pump_venue
    every = max(int(progress_every), 1)
    for ev in feed.events():
        now = ev.ts_ns
        if lo is not None and now < lo:
            engine.warm_up(ev, now)
            warm += 1
            continue
        run_due(now)
        on_event(ev, now)
        pump(now)
        step(now)
        n += 1
        if progress is not None and n % every == 0:
            progress(every)
    if progress is not None and n % every:
        progress(n % every)
    t_loop = time.perf_counter()
    clean = _run_sync(shutdown(engine, sim_clock=True))
    rec.step(engine.now_ns)
    _run_sync(engine.venue.aclose())
    t_end = time.perf_counter()
    timing = {
        "wall_s": t_end - t0 + pre,
        "cpu_s": time.process_time() - c0 + pre_cpu,
        "load_s": t_load - t0 + pre,
        "loop_s": t_loop - t_load,
        "warmup_events": warm,
        "orders_left_open": 0 if clean else engine.live_orders(),
    }
    report = build_report(cfg, engine, rec, feed, n, timing, from_ns, to_ns)
    return BacktestResult(report, rec, engine, feed)


__all__ = ["BacktestResult", "MarketTrack", "Recorder", "make_engine", "open_feed", "run_backtest"]
