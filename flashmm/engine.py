"""The engine: one object that runs paper, backtest and live trading.

It wires book → signal → strategy → risk → venue for every market and
books every fill. It owns no event loop, socket or file: the runner (or a
test) calls :meth:`Engine.on_market_event` for each market event,
:meth:`Engine.on_timer` for the quote cycle and :meth:`Engine.pump_venue`
to collect venue events, always passing the current time. Paper, backtest
and live differ only in the clock, the feed and the venue handed in.

The hot path does no disk, network or terminal I/O. What the journal,
panel and metrics need is appended to :attr:`Engine.outbox` and read by
tasks of their own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from loguru import logger

from flashmm.accounting import Accounting
from flashmm.book import BookBuilder, OrderBook, SequenceGap
from flashmm.events import (
    BreakerChanged,
    FeedNews,
    FillEvent,
    OrderDone,
    OrderSent,
    OrderUpdated,
    OutboxEvent,
    SideHeld,
    StateChanged,
)
from flashmm.marketdata import FeedStatus, MarketEvent, Trade
from flashmm.risk import (
    HALT,
    PAUSE,
    REDUCE,
    Breaker,
    KillSwitch,
    PriceBand,
    RiskConfig,
    RiskManager,
)
from flashmm.signal import BookImbalanceSignal, SignalSource
from flashmm.snapshot import LatencyView, MarketView, ModelView, OrderView, SignalView, Snapshot
from flashmm.strategy import QuoteContext, Strategy
from flashmm.strategy.base import QuoteDesk, VolEstimator
from flashmm.types import (
    NS_PER_S,
    Fill,
    Liquidity,
    MarketSpec,
    Order,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderState,
    Position,
    Quote,
    Side,
    Signal,
)
from flashmm.venues.base import Venue

RUNNING = "running"
PAUSED = "paused"
HALTED = "halted"

_LAT_RING = 1 << 16
#: flatten retries while halted: 2 s, 4 s, 8 s ... up to a minute
_FLATTEN_BACKOFF_NS = 2 * NS_PER_S
_FLATTEN_BACKOFF_MAX_NS = 60 * NS_PER_S
#: at most one warning about rejected orders per market in this much engine time
REJECT_WARN_NS = 60 * NS_PER_S
#: a side whose placement the venue refused for a lasting cause (no free balance, market
#: paused ...) is held back this long, doubled for each refusal in a row (an accepted
#: order of that side ends the run)
HOLD_NS = NS_PER_S
HOLD_MAX_NS = 30 * NS_PER_S


@dataclass
class MarketState:
    spec: MarketSpec
    builder: BookBuilder
    signal_source: SignalSource
    vol: VolEstimator
    kill: KillSwitch
    band: PriceBand
    orders: dict[int, Order] = field(default_factory=dict)
    last_data_ns: int = 0
    last_quote_mid: float = 0.0
    last_signal: Signal = field(default_factory=Signal)
    #: (skew_bps, widen) the strategy got from the last signal
    last_adjust: tuple[float, float] = (0.0, 1.0)
    next_client_id: int = 1
    orders_sent: int = 0
    cancels_sent: int = 0
    rejects: int = 0
    #: (engine time, rejects) at the last warning about rejections (rate-limited)
    rejects_warned: tuple[int, int] = (-(1 << 62), 0)
    blocked: str | None = None
    flatten_pending_ns: int = 0
    #: flatten attempts since the position last changed (the retry backs off)
    flatten_tries: int = 0
    flatten_lots: int = 0
    #: lots of our last flatten take not reported filled or ended yet (its fills are not
    #: in the position yet)
    take_open_lots: int = 0
    #: something changed since the last quote (book, trade, fill, order state)
    dirty: bool = False
    #: risk and engine state seen by the last quote decision
    seen_version: tuple[int, str] = (-1, "")
    #: the strategy's compiled quote desk for this market (None: quotes in Python);
    #: it keeps its own copy of the live orders, made current on every change
    desk: QuoteDesk | None = None
    #: the desk's live orders must be reloaded from ``orders`` before it decides
    desk_stale: bool = True
    #: side (+1 bids, -1 asks) -> (engine time until which it is not quoted, refusals
    #: in a row, the venue's reason): the venue refused its placement for a lasting cause
    holds: dict[int, tuple[int, int, str]] = field(default_factory=dict)
    #: the sides held back at the last quote decision (+1, -1, 2 both, 0 none)
    held: int = 0


SignalFactory = Callable[[MarketSpec], SignalSource]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The engine's own settings: what it reports itself as, and its quote cycle.

    ``flashmm.config.Config.engine_settings()`` composes them from a profile
    (``mode``, ``name``, ``strategy.quote_hz``, ``strategy.requote_mid_move_bps``).
    """

    mode: str = "paper"
    profile: str = "flashmm"
    #: quote cycles per second
    quote_hz: float = 5.0
    #: a reference mid move (bps) since the last quote that requotes at once (0: off)
    requote_mid_move_bps: float = 10.0


class Engine:
    """The trading core shared by every mode."""

    def __init__(
        self,
        specs: Iterable[MarketSpec],
        venue: Venue,
        strategy: Strategy,
        *,
        risk: RiskConfig,
        settings: EngineSettings | None = None,
        signal_factory: SignalFactory | None = None,
        observe_market: bool | None = None,
        bootstrap_books: bool = False,
    ) -> None:
        settings = settings or EngineSettings()
        self.mode = settings.mode
        self.profile = settings.profile
        self.risk_cfg = risk
        self.venue = venue
        specs = list(specs)
        self.specs = {s.symbol: s for s in specs}
        self.strategy: Strategy = strategy
        make_signal = signal_factory or (lambda spec: BookImbalanceSignal())
        self.markets: dict[str, MarketState] = {}
        self.by_ref: dict[str, MarketState] = {}
        for s in specs:
            ms = MarketState(
                s,
                BookBuilder(s.reference, bootstrap=bootstrap_books),
                make_signal(s),
                VolEstimator(),
                KillSwitch.from_config(risk),
                PriceBand.from_config(risk),
            )
            if s.reference in self.by_ref:  # events are routed by stream to one market
                raise ValueError(f"markets: two markets follow reference stream {s.reference}")
            self.markets[s.symbol] = ms
            self.by_ref[s.reference] = ms
        self.observe = observe_market if observe_market is not None else venue.observes_market
        if self.observe:
            # one reference book per stream: the simulator reads ours, applied once per event
            for ref, ms in self.by_ref.items():
                venue.share_book(ref, ms.builder)
        self.risk = RiskManager(risk, specs)
        self.acct = Accounting(specs, risk.max_position_usdc)
        self.quote_period_ns = int(NS_PER_S / settings.quote_hz)
        self.requote_move = settings.requote_mid_move_bps / 1e4
        params = self.strategy.params
        self.refresh_bps = float(getattr(params, "refresh_tolerance_bps", 0.0))
        self.refresh_size = float(getattr(params, "refresh_size_tolerance", 0.0))
        #: the strategy's quote desks (``strategy.desk(spec, risk)``), when it has them
        self._desk_for: Callable[[MarketSpec, RiskConfig], QuoteDesk | None] | None = getattr(
            strategy, "desk", None
        )
        self.state = RUNNING
        self.pause_reason = ""
        self.events = 0
        self.feed_gaps = 0
        self.quotes_sent = 0
        self.outbox: deque[OutboxEvent] = deque()
        #: called with the reference symbol when the book finds a sequence gap
        self.on_gap: Callable[[str], object] | None = None
        self.lat = np.zeros(_LAT_RING, dtype=np.int64)
        self.lat_n = 0
        self.start_ns = 0
        self.now_ns = 0
        self._next_quote_ns = 0
        self._next_mark_ns = 0
        self.pnl = 0.0
        self.drawdown = 0.0
        self._mark_dirty = True  # P&L inputs (mids, fills) changed since the last mark
        #: positions changed (fills booked, restored) -- with the mids and the breakers'
        #: version, what a P&L mark reads; a mark with the same inputs as the last is skipped
        self._acct_changes = 0
        self._marked: tuple[dict[str, float], int, int] | None = None
        self._venue_errors_seen = 0

    # --- market data --------------------------------------------------------

    def on_market_event(self, ev: MarketEvent, now_ns: int) -> None:
        """Handle one market event: simulator, book, signal, and a requote on a big move."""
        t0 = time.perf_counter_ns()
        self.now_ns = now_ns
        if not self.start_ns:
            self.start_ns = now_ns
        self.events += 1
        if self.observe:
            self.venue.on_market_event(ev, now_ns)
        ms = self.by_ref.get(ev.symbol)
        if ms is None:
            return
        if not isinstance(ev, FeedStatus):  # a status is news about the feed, not data
            ms.last_data_ns = now_ns
        if isinstance(ev, Trade):
            ms.dirty = True
            ms.signal_source.on_trade(ev)
            return
        try:
            changed = ms.builder.on_event(ev)  # FeedStatus news: the book waits for a snapshot
        except SequenceGap as gap:
            self._on_gap(ms, str(gap), now_ns)
            return
        if changed:
            if self.observe:
                self.venue.on_book_update(ev, now_ns)
            self._after_book(ms, now_ns, t0)
        elif isinstance(ev, FeedStatus):
            if ev.kind in ("gap", "disconnected"):
                # the feed holds the diffs until a fresh snapshot: the book is frozen, so
                # pull this market's quotes now and keep them pulled until it is re-synced
                if ms.blocked is None:
                    ms.blocked = f"feed {ev.kind}: book not synced"
                self._pull(ms, now_ns)
                logger.warning(
                    "feed {} on {}: {} quotes pulled until the book is re-synced",
                    ev.kind,
                    ev.symbol,
                    ms.spec.symbol,
                )
            if ev.kind == "resync":
                # a new replay pass or a re-sync: the last second of prices no longer
                # joins up. The kill switch keeps its σ and stays armed; the price band
                # keeps the last good mid and holds a jump across the gap until confirmed.
                ms.kill.gap()
                ms.vol = VolEstimator()
            self.outbox.append(FeedNews(ev.symbol, ev.kind, ev.detail))

    def warm_up(self, ev: MarketEvent, now_ns: int) -> None:
        """Build the books (ours and a simulated venue's) from depth data; nothing quotes.

        For a backtest window: events before ``--from`` only prepare the books.
        """
        if self.observe:
            self.venue.on_market_event(ev, now_ns)
        ms = self.by_ref.get(ev.symbol)
        if ms is None:
            return
        try:
            changed = ms.builder.on_event(ev)
        except SequenceGap:
            return  # the builder waits for the next snapshot
        if changed and self.observe:
            self.venue.on_book_update(ev, now_ns)

    def _after_book(self, ms: MarketState, now_ns: int, t0: int) -> None:
        book = ms.builder.book
        sym = ms.spec.symbol
        crossed = self.risk.breakers[f"crossed_book:{sym}"]
        if not book.valid:
            if book.best_bid and book.best_ask and ms.builder.synced:
                what = f"reference book crossed: bid {book.best_bid} >= ask {book.best_ask} ticks"
                if crossed.trip(what, now_ns):
                    self._breaker_changed(crossed, now_ns, pull=ms)
                    if self.on_gap is not None:
                        # a crossed exchange book means ours is wrong: ask for a fresh snapshot
                        self.on_gap(ms.spec.reference)
            return
        if crossed.tripped and crossed.clear(now_ns):
            self._breaker_changed(crossed, now_ns)
        mid = book.mid
        # the price band: a jump is held (quotes pulled, nothing learns from it)
        # until the market confirms it
        kill = ms.kill
        band_b = self.risk.breakers[f"price_band:{sym}"]
        tick_bps = max(kill.ref_tick, 1) / (ms.band.good or mid) * 1e4
        held = ms.band.check(mid, now_ns, kill.sigma_bps(tick_bps), self.venue.book_mid(sym))
        if held is not None:
            if band_b.trip(held, now_ns):
                self._breaker_changed(band_b, now_ns, pull=ms)
            return
        if band_b.tripped and band_b.clear(now_ns):
            logger.info("price band {}: {}", sym, ms.band.last_outcome)
            self._breaker_changed(band_b, now_ns)
        ms.dirty = True
        self._mark_dirty = True
        ms.signal_source.on_book(book, now_ns)
        ms.vol.update(mid, now_ns)
        sig = kill.update_book(book.best_bid, book.best_ask, now_ns)
        if sig is not None and self.risk_cfg.kill_switch_enabled and self.state is not HALTED:
            self.emergency_stop(
                f"{sym} mid moved {kill.last_move_bps:.1f} bps ({sig:.1f}σ) within 1 s "
                f"(limit {kill.last_limit_bps:.1f} bps; σ {kill.last_sigma_bps:.1f} bps, "
                f"reference tick {kill.ref_tick} ticks)",
                now_ns,
                "kill_switch",
            )
            return
        if (
            self.requote_move > 0
            and ms.last_quote_mid > 0
            and abs(mid / ms.last_quote_mid - 1.0) >= self.requote_move
        ):
            self._quote(ms, now_ns, t0)

    def _breaker_changed(self, b: Breaker, now_ns: int, *, pull: MarketState | None = None) -> None:
        """A pull or reduce-only breaker tripped or cleared: log, report; ``pull``: the
        market whose quotes go at once."""
        reduce = b.action == REDUCE
        if b.tripped:
            how = "" if reduce else " (quotes pulled)"  # reduce only's reason says so
            logger.warning("breaker {} tripped{}: {}", b.name, how, b.reason)
        else:
            again = "both sides quote again" if reduce else "quoting again"
            logger.info("breaker {} cleared: {}", b.name, again)
        self.outbox.append(BreakerChanged(b.name, b.status()))
        if pull is not None:
            if pull.blocked is None:
                pull.blocked = f"{b.name}: {b.reason}"
            self._pull(pull, now_ns)

    def _on_gap(self, ms: MarketState, what: str, now_ns: int) -> None:
        self.feed_gaps += 1
        if self.on_gap is not None:
            self.on_gap(ms.spec.reference)  # ask the feed for a fresh snapshot
        logger.warning("feed gap: {} (quotes pulled until the book is re-synced)", what)
        self.outbox.append(FeedNews(ms.spec.reference, "gap", what))
        self._pull(ms, now_ns)

    # --- quote cycle ---------------------------------------------------------

    def on_timer(self, now_ns: int) -> None:
        """The periodic quote cycle: breakers, P&L marks, then quotes for every market."""
        t0 = time.perf_counter_ns()
        self.now_ns = now_ns
        if not self.start_ns:
            self.start_ns = now_ns
        self.pump_venue(now_ns)
        for ms in self.markets.values():
            self.risk.update_feed(ms.spec.symbol, ms.last_data_ns, now_ns)
        self._check_venue_errors(now_ns)
        if now_ns >= self._next_mark_ns and self._mark_dirty:
            self._mark_dirty = False
            self._mark(now_ns)
            self._next_mark_ns = now_ns + NS_PER_S
        if self.state is HALTED:
            self._continue_flatten(now_ns)
            return
        version = (self.risk.version(), self.state)
        for ms in self.markets.values():
            if ms.holds and self._held(ms, now_ns) != ms.held:
                ms.dirty = True  # a hold began or ended (see _hold_side)
            if ms.dirty or ms.seen_version != version:
                ms.seen_version = version
                self._quote(ms, now_ns, t0)

    def step(self, ev: MarketEvent, now_ns: int) -> None:
        """One event on a simulated clock (paper replay and backtest alike): the quote
        cycles due before it, the event, then what the venue reports by then."""
        self.run_due_timers(now_ns)
        self.on_market_event(ev, now_ns)
        self.pump_venue(now_ns)

    def run_due_timers(self, now_ns: int) -> None:
        """Run every quote cycle due up to ``now_ns`` on its own scheduled time.

        On a simulated clock, cycles in which nothing can change (no market
        moved, the venue has nothing due, no breaker deadline passes) are
        skipped: they would send nothing and change nothing.
        """
        if self._next_quote_ns == 0:
            self._next_quote_ns = now_ns
        period = self.quote_period_ns
        while self._next_quote_ns <= now_ns:
            t = self._next_quote_ns
            wake = self._next_wake_ns()
            if wake > t:
                # idle until ``wake``: jump to the first cycle at or after it
                target = min(wake, now_ns + 1)
                steps = -(-(target - t) // period)
                self._next_quote_ns = t + steps * period
                continue
            self.on_timer(t)
            self._next_quote_ns = t + period

    def _next_wake_ns(self) -> int:
        """The earliest time a quote cycle could do anything."""
        if self.state is HALTED and not self.flat():
            return min(
                ms.flatten_pending_ns
                for sym, ms in self.markets.items()
                if self.acct.positions[sym].lots
            )
        if any(ms.dirty for ms in self.markets.values()):
            return 0
        due = self.venue.next_due_ns()
        wake = 1 << 62 if due is None else due
        clear = self.risk.venue_errors_clear_ns()
        if clear is not None:
            wake = min(wake, clear)
        stale = self.risk_cfg.stale_feed_ms * 1_000_000
        for sym, ms in self.markets.items():
            if ms.last_data_ns and not self.risk.breakers[f"stale_feed:{sym}"].tripped:
                wake = min(wake, ms.last_data_ns + stale + 1)
            for until, _, _ in ms.holds.values():
                if until > self.now_ns:
                    wake = min(wake, until)  # the side quotes again then
        return min(wake, self._next_mark_ns) if self._mark_dirty else wake

    def _mark(self, now_ns: int) -> None:
        mids = self.mids()
        last = self._marked
        if (
            last is not None
            and last[0] == mids
            and last[1] == self._acct_changes
            and last[2] == self.risk.version()
        ):
            # the same mids, positions and breaker states as the last mark: the same
            # P&L and drawdown, nothing to trip or clear
            return
        self.pnl, self.drawdown = self.acct.mark(mids)
        for b in self.risk.update_pnl(self.pnl, self.drawdown, now_ns):
            self._breaker_tripped(b, now_ns)
        for sym, ms in self.markets.items():
            if self.risk.update_position(
                ms.spec, self.acct.positions[sym].lots, mids.get(sym, 0.0), now_ns
            ):
                ms.dirty = True  # reduce only began or ended: the quotes change
                self._breaker_changed(self.risk.breakers[f"position_limit:{sym}"], now_ns)
        self._marked = (mids, self._acct_changes, self.risk.version())

    def learning_models(self) -> dict[str, Any]:
        """Each market's prediction model that learns online (``model.online``), for
        the operations loop to persist; none when no market runs one."""
        out = {}
        for sym, ms in self.markets.items():
            model = getattr(getattr(ms.signal_source, "predictor", None), "model", None)
            if model is not None and hasattr(model, "to_state"):
                out[sym] = model
        return out

    def mids(self) -> dict[str, float]:
        """Each market's mid: the last good one while the price band holds a jump or the
        book has no mid (crossed, a side empty), so a position is never marked at 0; 0
        before the first valid book."""
        return {
            s: (
                ms.builder.book.mid
                if ms.builder.book.valid and not (ms.band.pending and ms.band.good)
                else ms.band.good
            )
            for s, ms in self.markets.items()
        }

    def _quote(self, ms: MarketState, now_ns: int, t0: int) -> None:
        sym = ms.spec.symbol
        book = ms.builder.book
        reason: str | None
        if self.state is not RUNNING:
            reason = self.state
        elif not ms.builder.synced:
            reason = "book not synced"
        else:
            reason = self.risk.blocks_market(sym)
            if reason is None and not book.valid:
                reason = "reference book has an empty side"
        held = self._held(ms, now_ns) if ms.holds else 0
        if held != ms.held:
            ms.held = held
            ms.dirty = True  # a side held back begins or ends
        if reason is None and held == 2:
            reason = f"both sides held back: {ms.holds[1][2]}"  # (held 2: both are in holds)
        if reason is not None:
            if ms.blocked is None:
                self._pull(ms, now_ns)
            ms.blocked = reason
            ms.dirty = False
            return
        if ms.blocked is not None:
            ms.blocked = None
            ms.dirty = True
        if not ms.dirty:
            return  # nothing moved: the quotes would be the same
        ms.dirty = False
        mid = book.mid
        pos = self.acct.positions[sym].lots
        sig = ms.signal_source.signal(now_ns, mid)
        ms.last_signal = sig
        skew, widen = ms.signal_source.adjust(sig)
        ms.last_adjust = (skew, widen)
        # reduce only (the position_limit breaker): the side that grows |position| is
        # not quoted; its live orders are cancelled by the diff
        no_side = self.risk.blocked_side(sym, pos)
        if held:
            # the side the venue refuses for now (see _hold_side)
            if no_side and no_side != held:
                self._pull(ms, now_ns)
                return
            no_side = held
        desk = self._desk(ms) if self._desk_for is not None else None
        if desk is None or not self._quote_desk(
            ms, desk, book, mid, pos, skew, widen, now_ns, no_side
        ):
            ctx = QuoteContext(
                ms.spec,
                now_ns,
                book.best_bid,
                book.best_ask,
                mid,
                pos,
                self.risk.max_position_lots(ms.spec, mid),
                ms.vol.sigma_bps,
                sig,
                skew,
                widen,
            )
            quotes = self.strategy.quote(ctx)
            if no_side:
                quotes = [q for q in quotes if q.side != no_side]
            ms.last_quote_mid = mid
            self._sync_orders(ms, quotes, pos, now_ns)
        self.lat[self.lat_n & (_LAT_RING - 1)] = time.perf_counter_ns() - t0
        self.lat_n += 1

    def _desk(self, ms: MarketState) -> QuoteDesk | None:
        """The market's quote desk with its live orders current (None: none yet)."""
        desk = ms.desk
        if desk is None:
            if self._desk_for is None:
                return None
            desk = ms.desk = self._desk_for(ms.spec, self.risk_cfg)
            if desk is None:
                return None
        if ms.desk_stale:
            desk.load([_live_row(o) for o in ms.orders.values()])
            ms.desk_stale = False
        return desk

    def _quote_desk(
        self,
        ms: MarketState,
        desk: QuoteDesk,
        book: OrderBook,
        mid: float,
        pos: int,
        skew: float,
        widen: float,
        now_ns: int,
        no_side: int = 0,
    ) -> bool:
        """:meth:`_quote`'s strategy, order diff and risk check in one call to the
        market's desk (the same orders as :meth:`_sync_orders`; ``no_side``: the side
        reduce only leaves out). False: no room in the desk, the caller quotes in
        Python."""
        spec = ms.spec
        todo = desk.decide(
            book.best_bid,
            book.best_ask,
            mid,
            pos,
            self.risk.max_position_lots(spec, mid),
            ms.vol.sigma_bps,
            skew,
            widen,
            ms.next_client_id,
            no_side,
        )
        if todo is None:
            ms.desk_stale = True
            return False
        ms.last_quote_mid = mid
        if not todo:
            return True
        cut, dropped = desk.cut_dropped
        self.risk.orders_cut += cut
        self.risk.orders_dropped += dropped
        cancels = desk.cancels
        for cid in cancels:
            ms.orders[cid].state = OrderState.PENDING_CANCEL
        sym = spec.symbol
        places = [
            self._track(
                ms, OrderRequest(sym, cid, Side.BUY if side > 0 else Side.SELL, px, lots), now_ns
            )
            for side, px, lots, cid in desk.places
        ]
        if places:
            ms.next_client_id = places[-1].client_id + 1
        self._send(ms, cancels, places, now_ns)
        return True

    def _sync_orders(self, ms: MarketState, quotes: list[Quote], pos: int, now_ns: int) -> None:
        """Diff desired quotes against live orders; send cancels and places in one batch."""
        tol = int(self.refresh_bps * ms.builder.book.mid / 1e4)
        size_tol = self.refresh_size
        live = [
            o
            for o in ms.orders.values()
            if o.state is OrderState.OPEN or o.state is OrderState.PENDING_NEW
        ]
        kept: set[int] = set()
        places: list[OrderRequest] = []
        for q in quotes:
            match = None
            for o in live:
                if (
                    o.client_id not in kept
                    and o.side is q.side
                    and abs(o.price_ticks - q.price_ticks) <= tol
                    and abs(o.remaining_lots - q.size_lots) <= size_tol * q.size_lots
                ):
                    match = o
                    break
            if match is not None:
                kept.add(match.client_id)
                continue
            places.append(OrderRequest(ms.spec.symbol, 0, q.side, q.price_ticks, q.size_lots))
        cancels = [o.client_id for o in live if o.client_id not in kept]
        if not cancels and not places:
            return
        ms.desk_stale = True  # a desk (if any) reloads the orders decided here
        for cid in cancels:
            ms.orders[cid].state = OrderState.PENDING_CANCEL
        # risk sees every order that might still fill, pending cancels included
        places = self.risk.check_orders(ms.spec, places, pos, ms.orders.values())
        for req in places:
            req.client_id = ms.next_client_id
            ms.next_client_id += 1
            self._track(ms, req, now_ns)
        self._send(ms, cancels, places, now_ns)

    def _track(self, ms: MarketState, req: OrderRequest, now_ns: int) -> OrderRequest:
        """Keep the order ``req`` places as a live order of ours and report it."""
        order = Order.from_request(req, now_ns)
        ms.orders[req.client_id] = order
        self.outbox.append(OrderSent(order))
        return req

    def _send(
        self, ms: MarketState, cancels: list[int], places: list[OrderRequest], now_ns: int
    ) -> None:
        """Send one market's cancels and places to the venue in one batch, and count them."""
        if not cancels and not places:
            return
        ms.orders_sent += len(places)
        ms.cancels_sent += len(cancels)
        self.quotes_sent += len(places)
        self.venue.requote(ms.spec.symbol, cancels, places, now_ns)

    def _pull(self, ms: MarketState, now_ns: int) -> None:
        """Cancel every live order of one market."""
        live = [o for o in ms.orders.values() if o.state is not OrderState.PENDING_CANCEL]
        if not live:
            return
        for o in live:
            o.state = OrderState.PENDING_CANCEL
        if ms.desk is not None:
            ms.desk.cancel_all()
        ms.cancels_sent += len(live)
        self.venue.requote(ms.spec.symbol, [o.client_id for o in live], [], now_ns)

    # --- venue events -----------------------------------------------------------

    def pump_venue(self, now_ns: int) -> int:
        """Apply what the venue reports: acks, rejects, cancels and fills."""
        evs = self.venue.poll(now_ns)
        for ev in evs:
            if isinstance(ev, Fill):
                self._on_fill(ev, now_ns)
                continue
            ms = self.markets.get(ev.market)
            if ms is None:
                continue
            ms.dirty = True
            if isinstance(ev, OrderAccepted):
                o = ms.orders.get(ev.client_id)
                if o is not None and o.state is OrderState.PENDING_NEW:
                    o.state = OrderState.OPEN
                    self.outbox.append(OrderUpdated(o, "accepted"))
                if o is not None:  # the venue takes this side again: the run of refusals ends
                    ms.holds.pop(int(o.side), None)
            elif isinstance(ev, OrderRejected):
                ms.rejects += 1
                if ev.lasting:
                    self._hold_side(ms, ev.client_id, ev.reason, now_ns)
                self._warn_rejected(ms, ev.reason, now_ns)
                if ev.client_id == 0:  # a take refused: it fills no more
                    ms.take_open_lots = 0
                self._done(ms, ev.client_id, "rejected: " + ev.reason)
            elif isinstance(ev, OrderCancelled):
                if ev.client_id == 0:  # the rest of a take (IOC): it fills no more
                    ms.take_open_lots = 0
                self._done(ms, ev.client_id, "cancelled")
        return len(evs)

    def _hold_side(self, ms: MarketState, client_id: int, reason: str, now_ns: int) -> None:
        """The venue refused a placement for a lasting cause (no free balance, market
        paused): that side is not quoted for a while (1 s, doubled per refusal in a row,
        at most 30 s; a run of refusals ends with an accepted order of that side or 30 s
        after its last hold). Placing it again at every requote
        only paid gas for refusals (5 a second on a chain)."""
        o = ms.orders.get(client_id)
        if o is None:
            return
        side = int(o.side)  # +1 bids, -1 asks
        until, streak, _ = ms.holds.get(side, (0, 0, ""))
        if now_ns < until:
            return  # another level of the same requote: one refusal
        if now_ns - until > HOLD_MAX_NS:
            streak = 0  # long after the last hold: a new run of refusals
        hold = min(HOLD_MAX_NS, HOLD_NS << min(streak, 16))
        ms.holds[side] = (now_ns + hold, streak + 1, reason)
        logger.info(
            "{}: {} held back {:.0f} s: {} (refusal {} in a row)",
            ms.spec.symbol,
            "bids" if side > 0 else "asks",
            hold / NS_PER_S,
            reason,
            streak + 1,
        )
        self.outbox.append(
            SideHeld(ms.spec.symbol, o.side.name.lower(), reason, streak + 1, hold / NS_PER_S)
        )

    def _held(self, ms: MarketState, now_ns: int) -> int:
        """The sides held back now: +1 bids, -1 asks, 2 both, 0 none."""
        held = [s for s, (until, _, _) in ms.holds.items() if now_ns < until]
        if len(held) == 2:
            return 2
        return held[0] if held else 0

    def _warn_rejected(self, ms: MarketState, reason: str, now_ns: int) -> None:
        """One warning per market and minute of engine time at most: orders the venue
        refuses (insufficient free balance, a post-only cross ...) quote nothing, and
        the count alone was only in the metrics."""
        at, seen = ms.rejects_warned
        if now_ns - at < REJECT_WARN_NS:
            return
        ms.rejects_warned = (now_ns, ms.rejects)
        logger.warning(
            "{}: order rejected by the venue: {} ({} rejection(s) since the last warning)",
            ms.spec.symbol,
            reason,
            ms.rejects - seen,
        )

    def _done(self, ms: MarketState, client_id: int, note: str) -> None:
        """An order is gone (filled, cancelled, rejected): forget it and report it."""
        o = ms.orders.pop(client_id, None)
        if o is not None:
            o.state = OrderState.DONE
            if ms.desk is not None:
                ms.desk.remove(client_id)
            self.outbox.append(OrderDone(o, note))

    def _on_fill(self, fill: Fill, now_ns: int) -> None:
        ms = self.markets.get(fill.market)
        if ms is None:
            logger.error("fill for unknown market {}: {}", fill.market, fill)
            return
        if self.acct.on_fill(fill) is None:
            return  # reported again (a replay after a restart or reconnect): booked once
        self._acct_changes += 1
        if fill.liquidity is Liquidity.MAKER:
            # our quotes' fills teach the kill switch our market's volatility; a take (the
            # emergency flatten, up to 5 % through the book) is not a market price: it
            # raised the trip level for long after a flatten and its reset
            ms.kill.on_own_trade(fill.price_ticks, fill.ts_ns)
        ms.dirty = True
        self._mark_dirty = True
        self.outbox.append(FillEvent(fill))
        if not fill.client_id:  # a fill of our take
            ms.take_open_lots = max(ms.take_open_lots - fill.size_lots, 0)
        o = ms.orders.get(fill.client_id) if fill.client_id else None
        if o is not None:
            o.remaining_lots -= fill.size_lots
            if o.remaining_lots <= 0:
                self._done(ms, fill.client_id, "filled")
            else:
                if ms.desk is not None:
                    ms.desk.remaining(fill.client_id, o.remaining_lots)
                self.outbox.append(OrderUpdated(o, "partially filled"))
        pos = self.acct.positions[fill.market]
        mid = ms.builder.book.mid if ms.builder.book.valid else float(fill.price_ticks)
        self.risk.update_position(ms.spec, pos.lots, mid, now_ns)
        inv = abs(self.acct.inventory_usdc(fill.market, mid))
        self.acct.max_abs_inventory_usdc = max(self.acct.max_abs_inventory_usdc, inv)

    # --- operator actions -------------------------------------------------------

    def pause(self, reason: str, now_ns: int, *, quiet: bool = False) -> None:
        """Pull every quote and stop quoting. ``quiet`` logs at INFO (a start-up hold)."""
        if self.state is HALTED:
            return
        self.state = PAUSED
        self.pause_reason = reason
        self.cancel_all(now_ns)
        logger.log("INFO" if quiet else "WARNING", "paused: {}", reason)
        self.outbox.append(StateChanged(PAUSED, reason))

    def resume(self, now_ns: int) -> str | None:
        """Quote again. Returns why not, if refused."""
        if self.state is HALTED:
            return "halted by emergency stop: run 'flashmm reset --confirm' first"
        latched = self.risk.paused_by()
        if latched is not None:
            return f"breaker {latched.name} is latched ({latched.reason}): reset it first"
        self.state = RUNNING
        self.pause_reason = ""
        for ms in self.markets.values():
            ms.blocked = None
            ms.dirty = True
        logger.info("resumed")
        self.outbox.append(StateChanged(RUNNING, "resumed"))
        return None

    def emergency_stop(self, reason: str, now_ns: int, breaker: str = "manual_halt") -> None:
        """Cancel everything, flatten every position with taker orders, and halt."""
        b = self.risk.breakers.setdefault(breaker, Breaker(breaker, HALT, latched=True))
        b.trip(reason, now_ns)
        self._breaker_tripped(b, now_ns)

    def _breaker_tripped(self, b: Breaker, now_ns: int) -> None:
        self.outbox.append(BreakerChanged(b.name, b.status()))
        if b.action == HALT:
            if self.state is HALTED:
                return
            logger.error(
                "EMERGENCY STOP ({}): {} -- latched: halted (also across restarts) until "
                "'flashmm reset --confirm'",
                b.name,
                b.reason,
            )
            self.state = HALTED
            self.pause_reason = f"{b.name}: {b.reason}"
            self.venue.cancel_all(None, now_ns)
            for ms in self.markets.values():
                for o in ms.orders.values():
                    o.state = OrderState.PENDING_CANCEL
                if ms.desk is not None:
                    ms.desk.cancel_all()
                ms.flatten_pending_ns = 0
                ms.flatten_tries = 0
            self._continue_flatten(now_ns)
        elif b.action == PAUSE:
            self.pause(f"{b.name}: {b.reason}", now_ns)

    def _continue_flatten(self, now_ns: int) -> None:
        """Flatten with taker orders: nothing when flat; a retry backs off (2 s, 4 s, ...
        up to a minute) and starts over once the position changes."""
        for sym, ms in self.markets.items():
            lots = self.acct.positions[sym].lots
            if lots == 0:
                ms.flatten_tries = 0
                continue
            if lots != ms.flatten_lots:
                ms.flatten_lots = lots
                ms.flatten_tries = 0
                if ms.take_open_lots <= 0:
                    # not while our last take may still fill: a second take on top of
                    # it overshoots (it then waits for its outcome, or the backoff)
                    ms.flatten_pending_ns = min(ms.flatten_pending_ns, now_ns)
            if now_ns < ms.flatten_pending_ns:
                continue
            book = ms.builder.book
            if not book.valid or ms.band.pending:
                continue  # no taker order priced off a crossed book or a held jump
            side = Side.SELL if lots > 0 else Side.BUY
            # cross the book and walk levels, up to 5 % through the touch
            limit = (
                int(book.best_bid * 0.95) if side is Side.SELL else int(book.best_ask * 1.05) + 1
            )
            self.venue.take(sym, side, abs(lots), limit, now_ns)
            ms.take_open_lots = abs(lots)
            wait = min(_FLATTEN_BACKOFF_NS << ms.flatten_tries, _FLATTEN_BACKOFF_MAX_NS)
            ms.flatten_tries = min(ms.flatten_tries + 1, 16)
            ms.flatten_pending_ns = now_ns + wait
            logger.warning(
                "flatten {}: {} {} lots (limit {} ticks, attempt {}; next try in {:.0f} s "
                "unless flat)",
                sym,
                side.name,
                abs(lots),
                limit,
                ms.flatten_tries,
                wait / 1e9,
            )

    def reset(self, now_ns: int) -> dict[str, float]:
        """Clear latched breakers and the halt; the bot stays paused until resumed.

        A loss limit that tripped is re-armed from the P&L now (``daily_loss``: the rest
        of today's loss counts from it; ``max_drawdown``: the fall from it), so the next
        mark does not trip it again. Returns those new starting points (USDC), as the
        journal keeps them for a restart: ``day_start_pnl_usdc``, ``peak_equity_usdc``."""
        rebased: dict[str, float] = {}
        # the P&L now (a restart restores a latched trip before its first mark)
        self._marked = None
        self._mark(now_ns)
        drawdown = self.risk.breakers["max_drawdown"].tripped
        day_start = self.risk.reset(now_ns)
        if day_start is not None:
            rebased["day_start_pnl_usdc"] = day_start
            logger.warning(
                "reset: daily_loss re-armed: today's loss now counts from P&L {:.2f} USDC",
                day_start,
            )
        if drawdown:
            self.acct.peak_equity = self.pnl
            self.drawdown = 0.0
            rebased["peak_equity_usdc"] = self.pnl
            logger.warning(
                "reset: max_drawdown re-armed: the drawdown now counts from P&L {:.2f} USDC",
                self.pnl,
            )
        self._marked = None
        self._mark_dirty = True  # the limits are checked again at the next mark
        self.state = PAUSED
        self.pause_reason = "reset: resume to quote"
        self.outbox.append(StateChanged(PAUSED, "reset"))
        return rebased

    def restore_peak(self, peak_usdc: float) -> None:
        """The equity peak ``max_drawdown`` counts from, as a reset before a restart
        re-armed it (the journal keeps it; see :meth:`reset`)."""
        self.acct.peak_equity = peak_usdc

    def cancel_all(self, now_ns: int) -> None:
        for ms in self.markets.values():
            self._pull(ms, now_ns)

    def live_orders(self) -> int:
        return sum(len(ms.orders) for ms in self.markets.values())

    def flat(self) -> bool:
        return all(p.lots == 0 for p in self.acct.positions.values())

    # --- operations: recovery, reconciliation, hooks ---------------------------------

    def restore(
        self,
        positions: Iterable[Position],
        fill_ids: Iterable[str],
        max_client_ids: Mapping[str, int],
    ) -> list[str]:
        """State recovered from the journal: positions (copied), the fills already booked
        (never booked twice) and the highest client id used per market (never reused).
        Returns the markets of ``positions`` this engine does not trade (ignored)."""
        ignored = []
        self._acct_changes += 1
        for p in positions:
            if p.market in self.markets:
                self.acct.restore(p.copy())
            else:
                ignored.append(p.market)
        self.acct.fill_ids.update(fill_ids)
        for sym, ms in self.markets.items():
            ms.next_client_id = max(ms.next_client_id, max_client_ids.get(sym, 0) + 1)
        return ignored

    def next_client_ids(self) -> dict[str, int]:
        return {sym: ms.next_client_id for sym, ms in self.markets.items()}

    def positions(self) -> dict[str, Position]:
        """A copy of every market's position."""
        return {sym: p.copy() for sym, p in self.acct.positions.items()}

    def drain_outbox(self) -> list[OutboxEvent]:
        """Everything reported since the last drain, oldest first (the outbox is emptied)."""
        out = list(self.outbox)
        self.outbox.clear()
        return out

    def adopt_order(self, order: Order) -> bool:
        """Take over an order found resting on the venue (False: not a market of ours)."""
        ms = self.markets.get(order.market)
        if ms is None:
            return False
        ms.orders[order.client_id] = order
        ms.next_client_id = max(ms.next_client_id, order.client_id + 1)
        ms.dirty = True
        ms.desk_stale = True
        return True

    def apply_recovered_fill(self, fill: Fill) -> None:
        """Book a fill found outside the venue's event stream (a position adjustment)."""
        self.acct.on_fill(fill)
        self._acct_changes += 1

    def breaker_status(self) -> dict[str, dict[str, object]]:
        """Every breaker's status (``Breaker.status()``: state, action, reason, latched...)."""
        return self.risk.status()

    def trip_breaker(
        self,
        name: str,
        reason: str,
        now_ns: int,
        *,
        action: str = PAUSE,
        latched: bool = True,
        clear_hint: str = "",
    ) -> bool:
        """Trip ``name`` for a cause only operations see (a journal failure, a position
        mismatch, a breaker latched before a restart) and act on it: a halt breaker stops
        and flattens, a pause breaker pauses. ``action``, ``latched`` and ``clear_hint``
        apply when the engine has no breaker of that name yet. False: tripped already."""
        b = self.risk.breakers.setdefault(
            name, Breaker(name, action, latched=latched, clear_hint=clear_hint)
        )
        if b.tripped:
            return False
        if b.action == HALT:
            self.emergency_stop(reason, now_ns, breaker=name)
            return True
        b.trip(reason, now_ns)
        if b.action == PAUSE:
            self.pause(f"{name}: {reason}", now_ns)
        return True

    def clear_breaker(self, name: str, now_ns: int) -> bool:
        """Clear a latched breaker the operator confirmed (False: none tripped)."""
        b = self.risk.breakers.get(name)
        return b is not None and b.tripped and b.clear(now_ns, force=True)

    def set_gap_handler(self, fn: Callable[[str], object] | None) -> None:
        """Called with the reference symbol when a book finds a sequence gap."""
        self.on_gap = fn

    def set_clock(self, now_ns: int) -> None:
        """The simulated time after a shutdown advanced it outside the event loop."""
        self.now_ns = now_ns

    def load_run_totals(
        self,
        *,
        pnl: float,
        drawdown: float,
        quotes_sent: int,
        events: int,
        feed_gaps: int,
        start_ns: int,
        now_ns: int,
    ) -> None:
        """Totals of a run the compiled backtest loop played for this engine."""
        self.pnl, self.drawdown = pnl, drawdown
        self.quotes_sent = quotes_sent
        self.events = events
        self.feed_gaps = feed_gaps
        self.start_ns = start_ns
        self.now_ns = now_ns

    def latencies_since(self, seen: int) -> tuple[list[int], int]:
        """Decision latencies (ns) recorded since the mark ``seen`` (at most the ring's
        size, oldest first) and the new mark."""
        n = self.lat_n
        new = min(n - seen, _LAT_RING)
        if new <= 0:
            return [], n
        return [int(self.lat[(n - new + i) & (_LAT_RING - 1)]) for i in range(new)], n

    # --- reporting ----------------------------------------------------------------

    def latency_us(self) -> tuple[float, float]:
        n = min(self.lat_n, _LAT_RING)
        if n == 0:
            return 0.0, 0.0
        p50, p99 = np.percentile(self.lat[:n], [50, 99])
        return float(p50) / 1e3, float(p99) / 1e3

    def snapshot(self, now_ns: int | None = None) -> Snapshot:
        """The engine at ``now_ns`` for the panel, status, metrics and the API."""
        now = now_ns or self.now_ns
        uptime_s = (now - self.start_ns) / 1e9 if self.start_ns else 0.0
        p50, p99 = self.latency_us()
        mids = self.mids()
        markets: dict[str, MarketView] = {}
        model = ModelView()
        for sym, ms in self.markets.items():
            markets[sym] = self._market_view(ms, mids[sym], now)
            if model.state is None and "state" in markets[sym].signal_status:
                model = _model_view(markets[sym].signal_status)  # the first market's gate
        model = replace(
            model,
            sources={s: m.signal.source for s, m in markets.items() if m.signal.source},
            breakers={
                n: f"tripped: {b.reason}" if b.tripped else "ok"
                for n, b in self.risk.breakers.items()
                if n.startswith("model")
            },
        )
        return Snapshot(
            mode=self.mode,
            profile=self.profile,
            state=self.state,
            reason=self.pause_reason,
            now_ns=now,
            uptime_s=uptime_s,
            events=self.events,
            feed_gaps=self.feed_gaps,
            markets=markets,
            pnl_usdc=self.acct.total_pnl(mids),
            fees_usdc=self.acct.fees,
            fills=self.acct.fills,
            volume_usdc=self.acct.volume,
            drawdown_usdc=self.drawdown,
            breakers=self.risk.status(),
            latency=LatencyView(p50, p99, self.lat_n),
            quotes_sent=self.quotes_sent,
            live_orders=self.live_orders(),
            venue=self.venue.status(uptime_s),  # a chain venue adds its gas projection
            model=model,
        )

    def _market_view(self, ms: MarketState, mid: float, now: int) -> MarketView:
        book = ms.builder.book
        spec = ms.spec
        sym = spec.symbol
        pos = self.acct.positions[sym]
        inv = self.acct.inventory_usdc(sym, mid)
        quotes = sorted((OrderView.of(o, spec) for o in ms.orders.values()), key=lambda q: -q.price)
        live = [q for q in quotes if q.live]
        our_bid = max((q.price_ticks for q in live if q.side == "buy"), default=None)
        our_ask = min((q.price_ticks for q in live if q.side == "sell"), default=None)
        sig = ms.last_signal
        return MarketView(
            reference=spec.reference,
            mid=spec.price(mid) if mid else None,
            bid=spec.price(book.best_bid) if book.valid else None,
            ask=spec.price(book.best_ask) if book.valid else None,
            spread_bps=(book.spread / mid * 1e4) if book.valid and mid else None,
            quoted_spread_bps=(
                (our_ask - our_bid) / mid * 1e4
                if our_bid is not None and our_ask is not None and mid
                else None
            ),
            synced=ms.builder.synced,
            book_checks=ms.builder.checks,
            book_mismatches=ms.builder.mismatches,
            quotes=tuple(quotes),
            position_lots=pos.lots,
            position=spec.size(pos.lots),
            position_usdc=inv,
            limit_usage=abs(inv) / self.risk_cfg.max_position_usdc,
            avg_price=spec.price(pos.avg_price_ticks) if pos.lots else None,
            realized_usdc=pos.realized_usdc,
            unrealized_usdc=self.acct.unrealized(sym, mid),
            fees_usdc=pos.fees_usdc,
            pnl_usdc=self.acct.market_pnl(sym, mid),
            fills=pos.fills,
            volume_usdc=pos.volume_usdc,
            orders_sent=ms.orders_sent,
            cancels_sent=ms.cancels_sent,
            rejects=ms.rejects,
            signal=SignalView(
                sig.direction,
                round(sig.confidence, 3),
                round(sig.expected_bps, 2),
                sig.source,
                round(ms.last_adjust[0], 2),
                round(ms.last_adjust[1], 3),
            ),
            signal_status=ms.signal_source.status(),
            sigma_bps=ms.vol.sigma_bps,
            kill_switch=ms.kill.status(),
            price_band=ms.band.status(),
            blocked=ms.blocked
            or (
                f"{'bids' if ms.held > 0 else 'asks'} held back: {ms.holds[ms.held][2]}"
                if ms.held in (1, -1) and ms.held in ms.holds
                else None
            ),
            data_age_ms=(now - ms.last_data_ns) / 1e6 if ms.last_data_ns else None,
        )

    def _check_venue_errors(self, now_ns: int) -> None:
        """Feed the venue's failed sends, reverts, dropped txs and latency to their breakers."""
        p99 = self.venue.receipt_p99_ms()
        if p99 is not None and self.risk.venue_latency(p99, now_ns):
            b = self.risk.breakers["venue_latency"]
            logger.log("ERROR" if b.tripped else "INFO", "venue latency: {}", b.reason or "ok")
            self.outbox.append(BreakerChanged(b.name, b.status()))
        errors = self.venue.error_count()
        if errors is None:
            return
        new = errors - self._venue_errors_seen
        self._venue_errors_seen = errors
        tripped = False
        for _ in range(max(new, 0)):
            tripped |= self.risk.venue_error(now_ns)
        b = self.risk.breakers["venue_errors"]
        if tripped:
            logger.error("venue errors: {} (quotes pulled)", b.reason)
        elif new <= 0 and self.risk.venue_ok(now_ns):
            logger.info("venue errors back under the limit: quoting again")
        else:
            return
        self.outbox.append(BreakerChanged(b.name, b.status()))

    def summary(self) -> dict[str, Any]:
        """The end-of-run summary (``flashmm run --json``), read off :meth:`snapshot`."""
        self.acct.mark(self.mids())
        s = self.snapshot()
        return {
            "mode": s.mode,
            "profile": s.profile,
            "state": s.state,
            "events": s.events,
            "pnl_usdc": round(s.pnl_usdc, 6),
            "fees_usdc": round(s.fees_usdc, 6),
            "fills": s.fills,
            "volume_usdc": round(s.volume_usdc, 6),
            "max_abs_inventory_usdc": round(self.acct.max_abs_inventory_usdc, 6),
            "position_limit_breaches": self.acct.limit_breaches,
            "quotes_sent": s.quotes_sent,
            "cancels_sent": sum(m.cancels_sent for m in s.markets.values()),
            "decision_p50_us": round(s.latency.p50_us, 2),
            "decision_p99_us": round(s.latency.p99_us, 2),
            "feed_gaps": s.feed_gaps,
            "markets": {
                sym: {
                    "position": m.position,
                    "pnl_usdc": round(m.pnl_usdc, 6),
                    "fills": m.fills,
                    "book_checks": m.book_checks,
                    "book_mismatches": m.book_mismatches,
                }
                for sym, m in s.markets.items()
            },
        }


def _live_row(o: Order) -> tuple[int, int, int, int, int]:
    """An order as a quote desk's live row (side, price, remaining, client id, state)."""
    side = 1 if o.side is Side.BUY else -1
    state = 1 if o.state is OrderState.PENDING_CANCEL else 2 if o.state is OrderState.DONE else 0
    return side, o.price_ticks, o.remaining_lots, o.client_id, state


def _model_view(st: Mapping[str, object]) -> ModelView:
    """A model gate's status (``predict.breaker``) in the snapshot's one shape."""
    hr, ce = st.get("hit_rate_moved"), st.get("calibration_error_pts")
    return ModelView(
        state=str(st["state"]),
        reason=str(st.get("reason") or ""),
        source=str(st.get("source") or ""),
        hit_rate_moved=float(hr) if isinstance(hr, int | float) else None,
        calibration_error_pts=float(ce) if isinstance(ce, int | float) else None,
        online=st.get("online"),
    )


__all__ = ["HALTED", "PAUSED", "RUNNING", "Engine", "EngineSettings", "MarketState"]
