"""What a backtest keeps while it runs: the :class:`Recorder` and the result.

The recorder runs after every step, outside the engine: it drains
``engine.outbox`` (there is no journal in a backtest), keeps the mid path for
markouts, integrates quote uptime and spreads over sim time, and takes a
time-series sample every ``sample_s`` of sim time for the plots. The report
and the plots read these types; the runner fills them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flashmm.engine import Engine, MarketState
from flashmm.events import FillEvent, OrderDone, OrderSent, OrderUpdated
from flashmm.feeds.cache import CachedFeed
from flashmm.types import NS_PER_S, Fill, Order, OrderState

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
    q_bid: int = 0  # our best live bid and ask at the last step (0 = none)
    q_ask: int = 0
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
            self.tracks[sym] = MarketTrack(ms, ms.spec.unit_usdc)
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
        if self.engine.outbox:
            self.drain()
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
            tr.q_bid, tr.q_ask = qb, qa
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

    def drain(self) -> None:
        """Take what the engine put in its outbox (fills, orders sent, notes)."""
        box = self.engine.outbox
        while box:
            ev = box.popleft()
            if isinstance(ev, FillEvent):
                self.fills.append(ev.fill)
            elif isinstance(ev, OrderSent):
                order = ev.order
                self.orders.append(order)
                tr = self.tracks.get(order.market)
                if tr is not None:
                    tr.sent_lots += order.size_lots
            elif not isinstance(ev, OrderUpdated | OrderDone):
                self.notes.append((ev.kind, ev.payload))

    def _sample(self, now: int) -> None:
        """One plot sample; reads the quotes :meth:`step` just found."""
        acct = self.engine.acct
        pnl = 0.0
        for sym, pos in acct.positions.items():
            tr = self.tracks.get(sym)
            if tr is None:
                pnl += pos.realized_usdc - pos.fees_usdc
                continue
            book = tr.ms.builder.book
            valid = book.valid
            # no mid (crossed, a side empty): the last good one, as the engine's marks
            mid = (book.best_bid + book.best_ask) * 0.5 if valid else tr.ms.band.good
            pnl += acct.market_pnl(sym, mid)
            tr.s_bid.append(book.best_bid if valid else 0)
            tr.s_ask.append(book.best_ask if valid else 0)
            tr.s_qbid.append(tr.q_bid)
            tr.s_qask.append(tr.q_ask)
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
