"""Simulated exchange for paper mode and backtests.

:class:`SimVenue` implements the :class:`~flashmm.venues.base.Venue` protocol
against a *reference* market: the engine hands it every reference event
(:meth:`SimVenue.on_market_event`) before its own book sees it, and our
orders are filled from the reference trades and depth changes.

**One book per stream.** Driven by the engine, the venue reads the engine's
reference book (:meth:`SimVenue.share_book`): the engine applies each depth
message once, then calls :meth:`SimVenue.on_book_update`. Used on its own
(tests, tools), the venue keeps and applies a book of its own.

The model, in short (``docs/simulation.md`` has the details):

- **Latency.** A placed order reaches the venue after the entry latency, a
  cancel after the cancel latency; what happens on the venue (accept,
  reject, cancel, fill) is timestamped at venue time and handed out by
  :meth:`SimVenue.poll` only after the feed (response) latency.
- **Queue.** A new order joins the back of its price level: the queue ahead
  of it is the displayed reference size there. Trades at the price eat the
  queue ahead first, then fill us. A depth decrease not explained by trades
  is a cancel, taken from ahead of us with share ``x**n``
  (``x = ahead / level size``; hftbacktest's power-prob queue, in expected
  value). The book crossing our price fills us fully; a trade through our
  price fills us fully too (``fill_model="whole_order"``, the default) or
  only up to the printed size left after the queue ahead
  (``fill_model="printed_size"``).
- **We are small.** Our fills never change the reference book.

Prices are ticks and sizes lots of the reference stream; time is int ns.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field
from sortedcontainers import SortedDict

from flashmm.book import BookBuilder, OrderBook, SequenceGap
from flashmm.marketdata import DepthDiff, FeedStatus, MarketEvent, Trade
from flashmm.types import (
    NS_PER_MS,
    Fill,
    Liquidity,
    MarketSpec,
    Order,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderState,
    Side,
    VenueEvent,
)
from flashmm.venues.base import VenueDefaults, VenueError

__all__ = [
    "ConstantLatency",
    "LatencySampler",
    "LatencySpec",
    "LognormalLatency",
    "SimCounters",
    "SimSettings",
    "SimVenue",
]

REJECT_POST_ONLY = "post-only would cross"
REJECT_NO_BOOK = "reference book not ready"
REJECT_DUPLICATE = "duplicate client id"
REJECT_INVALID = "invalid price or size"

_EPS = 1e-9


# --- settings -----------------------------------------------------------------


class ConstantLatency(BaseModel):
    """A fixed latency: ``{"kind": "constant", "ms": 50}`` (same as ``50``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["constant"] = "constant"
    ms: float = Field(ge=0)


class LognormalLatency(BaseModel):
    """A lognormal latency around ``median_ms``; ``sigma`` is the log-space spread.

    ``max_ms`` (optional) caps a draw, to keep rare huge values out.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["lognormal"]
    median_ms: float = Field(gt=0)
    sigma: float = Field(ge=0)
    max_ms: float | None = Field(default=None, gt=0)


LatencySpec = float | Annotated[ConstantLatency | LognormalLatency, Field(discriminator="kind")]


class SimSettings(BaseModel):
    """Settings of the simulated venue.

    Latencies are in milliseconds: a number, or a distribution such as
    ``{"kind": "lognormal", "median_ms": 80, "sigma": 0.5}`` drawn from an
    RNG seeded with ``seed`` (the same seed and inputs give the same run).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    feed_latency_ms: LatencySpec = Field(
        default=50.0, description="venue -> us: delay before an event is seen by poll()"
    )
    entry_latency_ms: LatencySpec = Field(
        default=100.0, description="us -> venue: delay before a new order (or take) is live"
    )
    cancel_latency_ms: LatencySpec = Field(
        default=100.0, description="us -> venue: delay before a cancel takes effect"
    )
    queue_power: float = Field(
        default=3.0,
        gt=0,
        description="n in f(x)=x**n, the share of a level's cancelled size taken from ahead "
        "of us (x = ahead / level size); higher n = cancels mostly behind us",
    )
    fill_model: Literal["whole_order", "printed_size"] = Field(
        default="whole_order",
        description="a trade printed through our price (a sell below our bid, a buy above "
        "our ask): whole_order fills the whole resting order; printed_size fills at most "
        "the printed size, best price first and in queue order (whole_order is what "
        "hftbacktest's partial-fill exchange does)",
    )
    maker_fee_bps: float = Field(default=0.0, description="negative = rebate")
    taker_fee_bps: float = 5.0
    seed: int = 0


class LatencySampler:
    """Draws latencies in ns from a :data:`LatencySpec` with its own seeded RNG."""

    __slots__ = ("_cap_ns", "_const_ns", "_mu", "_rng", "_sigma")

    def __init__(self, spec: LatencySpec, rng: random.Random) -> None:
        self._rng = rng
        self._const_ns: int | None = None
        self._mu = 0.0
        self._sigma = 0.0
        self._cap_ns: int | None = None
        if isinstance(spec, LognormalLatency):
            self._mu = math.log(spec.median_ms * NS_PER_MS)
            self._sigma = spec.sigma
            if spec.max_ms is not None:
                self._cap_ns = int(spec.max_ms * NS_PER_MS)
        else:
            ms = spec.ms if isinstance(spec, ConstantLatency) else float(spec)
            if ms < 0:
                raise ValueError(f"latency must be >= 0 ms, was {ms}")
            self._const_ns = round(ms * NS_PER_MS)

    def sample_ns(self) -> int:
        if self._const_ns is not None:
            return self._const_ns
        ns = int(self._rng.lognormvariate(self._mu, self._sigma))
        if self._cap_ns is not None and ns > self._cap_ns:
            return self._cap_ns
        return ns


@dataclass(slots=True)
class SimCounters:
    """What the venue saw, for the report."""

    orders_sent: int = 0
    cancels_sent: int = 0
    takes: int = 0
    rejects: int = 0
    fills: int = 0
    fill_lots: int = 0
    cancel_misses: int = 0  # cancels that found no open order (already filled or done)
    book_gaps: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --- internal state -----------------------------------------------------------


class _SimOrder:
    __slots__ = (
        "ahead",
        "cancel_requested",
        "client_id",
        "created_ns",
        "post_only",
        "price",
        "reject",
        "remaining",
        "side",
        "size",
        "state",
    )

    def __init__(self, req: OrderRequest, now_ns: int) -> None:
        self.client_id = req.client_id
        self.side = req.side
        self.price = req.price_ticks
        self.size = req.size_lots
        self.remaining = req.size_lots
        self.post_only = req.post_only
        self.ahead = 0.0  # displayed reference size ahead of us in the queue
        self.state = OrderState.PENDING_NEW
        self.cancel_requested = False
        self.created_ns = now_ns
        self.reject = ""  # set when the order is refused on arrival


class _Level:
    """One price level where we have live orders, on one side."""

    __slots__ = ("orders", "price", "qty", "traded")

    def __init__(self, price: int, qty: int) -> None:
        self.price = price
        self.qty = qty  # displayed reference size when last looked at
        self.traded = 0  # trade volume at this price since the last depth update
        self.orders: list[_SimOrder] = []  # ours, in arrival order


class _Market:
    __slots__ = ("asks", "bids", "orders", "position", "spec")

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.orders: dict[int, _SimOrder] = {}  # in flight or live, by client id
        # price -> _Level; plain dicts: we quote a handful of levels
        self.bids: dict[int, _Level] = {}
        self.asks: dict[int, _Level] = {}
        self.position = 0


class _Ref:
    """The reference stream behind one or more markets."""

    __slots__ = (
        "best_ask",
        "best_bid",
        "builder",
        "last_diff_ms",
        "markets",
        "own",
        "symbol",
        "top_stale",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.builder = BookBuilder(symbol)
        #: True: the venue applies depth messages to its own book; False: the book is
        #: the engine's (share_book), applied by the engine before on_book_update
        self.own = True
        self.markets: list[_Market] = []
        self.last_diff_ms = 0  # exchange time of the last applied diff
        self.best_bid = 0  # cached top of book, 0 = side empty; see top()
        self.best_ask = 0
        self.top_stale = True

    def top(self) -> tuple[int, int]:
        """Best bid and ask in ticks (0 for an empty side), cached between depth updates."""
        if self.top_stale:
            book = self.builder.book
            self.best_bid = book.best_bid
            self.best_ask = book.best_ask
            self.top_stale = False
        return self.best_bid, self.best_ask


_PLACE, _CANCEL, _TAKE = 0, 1, 2


# --- the venue ----------------------------------------------------------------


class SimVenue(VenueDefaults):
    """Simulated venue: latency, queue position and fees over a reference book.

    ``markets`` maps our market symbol to its :class:`MarketSpec`; the spec's
    ``reference`` names the stream whose events drive that market (its ticks
    and lots are ours). Feed it with :meth:`on_market_event` and read the
    outcome with :meth:`poll`.
    """

    name = "sim"
    observes_market = True

    def __init__(
        self, markets: Mapping[str, MarketSpec], settings: SimSettings | None = None
    ) -> None:
        self.settings = settings if settings is not None else SimSettings()
        s = self.settings
        self.counters = SimCounters()
        self._markets: dict[str, _Market] = {}
        self._refs: dict[str, _Ref] = {}
        for symbol, spec in markets.items():
            if spec.symbol != symbol:
                raise ValueError(
                    f"market key {symbol!r} differs from its spec symbol {spec.symbol!r}"
                )
            m = _Market(spec)
            self._markets[symbol] = m
            ref = self._refs.get(spec.reference)
            if ref is None:
                ref = self._refs[spec.reference] = _Ref(spec.reference)
            ref.markets.append(m)
        self._feed_lat = LatencySampler(s.feed_latency_ms, random.Random(f"{s.seed}:feed"))
        self._entry_lat = LatencySampler(s.entry_latency_ms, random.Random(f"{s.seed}:entry"))
        self._cancel_lat = LatencySampler(s.cancel_latency_ms, random.Random(f"{s.seed}:cancel"))
        self._power = s.queue_power
        self._printed = s.fill_model == "printed_size"
        self._maker_rate = s.maker_fee_bps / 1e4
        self._taker_rate = s.taker_fee_bps / 1e4
        self._actions: list[tuple[int, int, int, Any]] = []  # (due_ns, seq, kind, payload)
        self._seq = 0
        self._outbox: deque[tuple[int, VenueEvent]] = deque()  # (deliver_ns, event)
        self._last_deliver = 0
        self._fill_seq = 0

    # --- Venue protocol ---------------------------------------------------------

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def requote(
        self,
        market: str,
        cancels: Sequence[int],
        places: Sequence[OrderRequest],
        now_ns: int,
    ) -> None:
        """Send cancels and new orders as one batch (one latency draw for each kind)."""
        m = self._market(market)
        self._run_due(now_ns)
        if cancels:
            cids = list(cancels)
            self.counters.cancels_sent += len(cids)
            orders = m.orders
            for cid in cids:
                o = orders.get(cid)
                if o is not None:
                    o.cancel_requested = True
            self._push(now_ns + self._cancel_lat.sample_ns(), _CANCEL, (m, cids))
        if places:
            self.counters.orders_sent += len(places)
            batch = []
            for req in places:
                o = _SimOrder(req, now_ns)
                if req.price_ticks <= 0 or req.size_lots <= 0:
                    o.reject = REJECT_INVALID
                elif req.client_id in m.orders:
                    o.reject = REJECT_DUPLICATE
                else:
                    m.orders[req.client_id] = o
                batch.append(o)
            self._push(now_ns + self._entry_lat.sample_ns(), _PLACE, (m, batch))

    def cancel_all(self, market: str | None, now_ns: int) -> None:
        self._run_due(now_ns)
        targets = [self._market(market)] if market is not None else list(self._markets.values())
        for m in targets:
            cids = [cid for cid, o in m.orders.items() if not o.cancel_requested]
            if cids:
                self.requote(m.spec.symbol, cids, (), now_ns)

    def take(
        self,
        market: str,
        side: Side,
        size_lots: int,
        limit_price_ticks: int,
        now_ns: int,
    ) -> None:
        """IOC: after the entry latency, walk the reference book up to the limit."""
        m = self._market(market)
        self._run_due(now_ns)
        self.counters.takes += 1
        due = now_ns + self._entry_lat.sample_ns()
        self._push(due, _TAKE, (m, Side(side), size_lots, limit_price_ticks))

    def poll(self, now_ns: int) -> list[VenueEvent]:
        """Events whose venue time plus the feed latency is <= ``now_ns``, oldest first."""
        self._run_due(now_ns)
        box = self._outbox
        out: list[VenueEvent] = []
        while box and box[0][0] <= now_ns:
            out.append(box.popleft()[1])
        return out

    def next_due_ns(self) -> int | None:
        """When the venue next has something to do or to report (None: nothing pending).

        A simulated clock may skip quote cycles until then: nothing the
        engine polls can change earlier, except through market events.
        """
        t = self._actions[0][0] if self._actions else None
        if self._outbox:
            d = self._outbox[0][0]
            t = d if t is None or d < t else t
        return t

    async def open_orders(self) -> list[Order]:
        """Orders live on the venue now (not those still in flight)."""
        return [
            Order(
                m.spec.symbol,
                o.client_id,
                o.side,
                o.price,
                o.size,
                o.remaining,
                OrderState.PENDING_CANCEL if o.cancel_requested else OrderState.OPEN,
                o.created_ns,
            )
            for m in self._markets.values()
            for o in m.orders.values()
            if o.state is not OrderState.PENDING_NEW
        ]

    async def positions(self) -> dict[str, int]:
        return {sym: m.position for sym, m in self._markets.items()}

    # --- the reference market (observes_market) ----------------------------------

    def share_book(self, symbol: str, builder: BookBuilder) -> None:
        """Read the reference book of ``symbol`` from ``builder`` instead of a copy.

        The caller (the engine) applies every depth message to it once and then
        calls :meth:`on_book_update`; the venue never writes to it.
        """
        ref = self._refs.get(symbol)
        if ref is None:
            return
        ref.builder = builder
        ref.own = False
        ref.top_stale = True

    def on_market_event(self, event: MarketEvent, now_ns: int) -> None:
        """Feed one reference event (before the engine's own book sees it).

        What was due on the venue before ``now_ns`` runs first, on the book as it
        was before this event. A trade is matched at once. A depth message is
        applied here only to a book of the venue's own; a shared book is
        applied by its owner, who then calls :meth:`on_book_update`.
        """
        if self._actions and self._actions[0][0] <= now_ns:
            self._run_due(now_ns)
        ref = self._refs.get(event.symbol)
        if ref is None:
            return
        if isinstance(event, Trade):
            for m in ref.markets:
                if m.bids or m.asks:
                    self._on_trade(ref, m, event, now_ns)
        elif isinstance(event, FeedStatus):
            if event.kind == "resync":
                # a new replay pass (or reconnect) starts from a fresh snapshot
                ref.last_diff_ms = 0
                ref.top_stale = True
                if ref.own:
                    ref.builder = BookBuilder(ref.symbol)
        elif ref.own:
            try:
                changed = ref.builder.on_event(event)
            except SequenceGap as exc:
                self.counters.book_gaps += 1
                logger.warning("sim: {}", exc)
                return
            if changed:
                self._book_moved(ref, event, now_ns)

    def on_book_update(self, event: MarketEvent, now_ns: int) -> None:
        """A shared reference book changed by ``event`` (a diff or a snapshot the
        owner just applied): requeue and fill our orders against it."""
        ref = self._refs.get(event.symbol)
        if ref is not None and not ref.own:
            self._book_moved(ref, event, now_ns)

    def _book_moved(self, ref: _Ref, event: MarketEvent, now_ns: int) -> None:
        ref.top_stale = True
        if isinstance(event, DepthDiff) and event.exch_ms:
            ref.last_diff_ms = event.exch_ms
        self._on_depth(ref, now_ns)

    # --- inspection (tests, reports) ------------------------------------------

    def queue_ahead(self, market: str, client_id: int) -> float | None:
        """Displayed size ahead of a live order, or None if it is not live."""
        o = self._market(market).orders.get(client_id)
        if o is None or o.state is OrderState.PENDING_NEW:
            return None
        return o.ahead

    def book(self, market: str) -> OrderBook:
        """The venue's copy of the reference book behind ``market``."""
        return self._refs[self._market(market).spec.reference].builder.book

    # --- actions ------------------------------------------------------------------

    def _market(self, market: str) -> _Market:
        m = self._markets.get(market)
        if m is None:
            raise VenueError(f"sim: unknown market {market!r} (known: {', '.join(self._markets)})")
        return m

    def _push(self, due: int, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._actions, (due, self._seq, kind, payload))

    def _run_due(self, now_ns: int) -> None:
        acts = self._actions
        while acts and acts[0][0] <= now_ns:
            due, _, kind, payload = heapq.heappop(acts)
            if kind == _PLACE:
                m = payload[0]
                for o in payload[1]:
                    self._arrive(m, o, due)
            elif kind == _CANCEL:
                m = payload[0]
                for cid in payload[1]:
                    self._cancel(m, cid, due)
            else:
                m, side, size, limit = payload
                self._sweep(m, side, size, limit, due, 0)

    def _emit(self, event: VenueEvent, ts_ns: int) -> None:
        # the response channel is FIFO: a later event is never seen before an earlier one
        deliver = ts_ns + self._feed_lat.sample_ns()
        if deliver < self._last_deliver:
            deliver = self._last_deliver
        self._last_deliver = deliver
        self._outbox.append((deliver, event))

    def _reject(self, m: _Market, cid: int, ts: int, reason: str) -> None:
        self.counters.rejects += 1
        self._emit(OrderRejected(m.spec.symbol, cid, ts, reason), ts)

    def _arrive(self, m: _Market, o: _SimOrder, t: int) -> None:
        if o.reject:
            self._reject(m, o.client_id, t, o.reject)
            return
        if o.state is not OrderState.PENDING_NEW:
            return  # cancelled while in flight
        ref = self._refs[m.spec.reference]
        book = ref.builder.book
        if not ref.builder.synced:
            del m.orders[o.client_id]
            o.state = OrderState.DONE
            self._reject(m, o.client_id, t, REJECT_NO_BOOK)
            return
        bid = o.side is Side.BUY
        best_bid, best_ask = ref.top()
        if bid:
            crosses = best_ask > 0 and o.price >= best_ask
        else:
            crosses = best_bid > 0 and o.price <= best_bid
        if crosses and o.post_only:
            del m.orders[o.client_id]
            o.state = OrderState.DONE
            self._reject(m, o.client_id, t, REJECT_POST_ONLY)
            return
        self._emit(OrderAccepted(m.spec.symbol, o.client_id, t), t)
        if crosses:
            # a crossing non-post-only order runs like take(): taker fills up to
            # its price, the rest is cancelled (the book is not consumed by us, so
            # the rest would cross again at once)
            del m.orders[o.client_id]
            o.state = OrderState.DONE
            self._sweep(m, o.side, o.remaining, o.price, t, o.client_id)
            return
        o.state = OrderState.OPEN
        levels = m.bids if bid else m.asks
        lvl = levels.get(o.price)
        if lvl is None:
            lvl = levels[o.price] = _Level(o.price, book.size_at(o.price, bid))
        o.ahead = float(lvl.qty)
        lvl.orders.append(o)

    def _cancel(self, m: _Market, cid: int, t: int) -> None:
        o = m.orders.get(cid)
        if o is None:
            self.counters.cancel_misses += 1
            return
        del m.orders[cid]
        if o.state is OrderState.OPEN:
            self._unlink(m, o)
        o.state = OrderState.DONE
        self._emit(OrderCancelled(m.spec.symbol, cid, t), t)

    def _unlink(self, m: _Market, o: _SimOrder) -> None:
        levels = m.bids if o.side is Side.BUY else m.asks
        lvl = levels[o.price]
        lvl.orders.remove(o)
        if not lvl.orders:
            del levels[o.price]

    def _sweep(self, m: _Market, side: Side, size: int, limit: int, t: int, cid: int) -> None:
        """Taker execution against the reference book, best level first, up to ``limit``.

        Nothing fills on a book that is not synced (it may be stale)."""
        builder = self._refs[m.spec.reference].builder
        book = builder.book
        left = size
        if side is Side.BUY:
            prices = book.asks.irange(maximum=limit)
            sizes = book.asks
        else:
            prices = book.bids.irange(minimum=limit, reverse=True)
            sizes = book.bids
        if not builder.synced:
            prices = iter(())
        for p in prices:
            q = min(left, sizes[p])
            if q > 0:
                self._record_fill(m, cid, side, p, q, t, Liquidity.TAKER)
                left -= q
            if left <= 0:
                break
        if left > 0:
            logger.debug(
                "sim: {} IOC {} {} left {} of {} unfilled",
                m.spec.symbol,
                cid,
                side.name,
                left,
                size,
            )
            self._emit(OrderCancelled(m.spec.symbol, cid, t), t)

    def _record_fill(
        self, m: _Market, cid: int, side: Side, price: int, lots: int, t: int, liq: Liquidity
    ) -> None:
        rate = self._taker_rate if liq is Liquidity.TAKER else self._maker_rate
        fee = m.spec.notional(price, lots) * rate
        m.position += side * lots
        self._fill_seq += 1
        c = self.counters
        c.fills += 1
        c.fill_lots += lots
        self._emit(
            Fill(m.spec.symbol, cid, side, price, lots, fee, liq, t, f"sim-{self._fill_seq}"), t
        )

    def _fill_order(self, m: _Market, o: _SimOrder, lots: int, t: int) -> None:
        """A maker fill of ``lots`` (capped at what is left) of a live order."""
        if lots > o.remaining:
            lots = o.remaining
        if lots <= 0:
            return
        o.remaining -= lots
        if o.remaining == 0:
            del m.orders[o.client_id]
            self._unlink(m, o)
            o.state = OrderState.DONE
        self._record_fill(m, o.client_id, o.side, o.price, lots, t, Liquidity.MAKER)

    # --- market events -----------------------------------------------------------

    def _on_trade(self, ref: _Ref, m: _Market, tr: Trade, t: int) -> None:
        """One reference trade of ``v`` lots at ``p`` against our resting orders.

        Levels are visited best price first for the aggressor (a seller meets our
        highest bid first). A level priced through ``p`` is filled (the trade swept
        it); the level at ``p`` fills what the trade leaves after the queue ahead
        of us. With ``fill_model="printed_size"`` the trade's ``v`` lots are a
        budget shared by all of them, best price first; with ``"whole_order"``
        a level through ``p`` fills whole and only the level at ``p`` is capped.
        """
        p, v = tr.price_ticks, tr.size_lots
        # a trade the last applied diff already contains (it came in late) must
        # not explain a later depth decrease a second time
        late = bool(tr.exch_ms) and bool(ref.last_diff_ms) and tr.exch_ms <= ref.last_diff_ms
        # a seller hits the bids (a sell at or above our ask: a bid crossed it); a buyer
        # lifts the asks (a buy at or below our bid: an ask crossed it)
        hit_bids = tr.buyer_is_maker
        hit, crossed = (m.bids, m.asks) if hit_bids else (m.asks, m.bids)
        budget = v if self._printed else -1  # lots left to hand out (-1: no cap)
        if hit:
            for price in _reached(hit, p, hit_bids):
                if price != p:
                    budget = self._fill_through(m, hit[price], t, budget)
                else:
                    self._trade_at_level(m, hit[price], v, t, late, budget)
        if crossed:
            budget = v if self._printed else -1
            for price in _reached(crossed, p, not hit_bids):
                budget = self._fill_through(m, crossed[price], t, budget)

    def _fill_level(self, m: _Market, lvl: _Level, t: int) -> None:
        for o in list(lvl.orders):
            self._fill_order(m, o, o.remaining, t)

    def _fill_through(self, m: _Market, lvl: _Level, t: int, budget: int) -> int:
        """A trade printed through a level of ours: fill its orders in queue order,
        whole (``budget < 0``) or up to ``budget`` lots; returns the budget left."""
        if budget < 0:
            self._fill_level(m, lvl, t)
            return budget
        for o in list(lvl.orders):
            if budget <= 0:
                break
            lots = o.remaining if o.remaining < budget else budget
            budget -= lots
            self._fill_order(m, o, lots, t)
        return budget

    def _trade_at_level(
        self, m: _Market, lvl: _Level, v: int, t: int, late: bool, budget: int = -1
    ) -> None:
        """A trade of ``v`` at our price: it eats the queue ahead of us, then fills us
        (at most ``budget`` lots in all when ``budget >= 0``)."""
        if not late:
            lvl.traded += v
        ours_ahead = 0  # our own earlier orders at this price are ahead too
        for o in list(lvl.orders):
            before = o.remaining
            excess = v - o.ahead - ours_ahead
            o.ahead = o.ahead - v if o.ahead > v else 0.0
            if excess >= 1.0 - _EPS:
                lots = int(excess + _EPS)
                if budget >= 0:
                    lots = min(lots, budget, o.remaining)
                    budget -= lots
                self._fill_order(m, o, lots, t)
            ours_ahead += before

    def _on_depth(self, ref: _Ref, t: int) -> None:
        book = ref.builder.book
        for m in ref.markets:
            bids, asks = m.bids, m.asks
            if not bids and not asks:
                continue
            if bids:
                self._depth_side(bids, book.bids)
            if asks:
                self._depth_side(asks, book.asks)
            # the book moved through our price: we are filled at our price
            best_bid, best_ask = ref.top()
            if bids and best_ask and max(bids) >= best_ask:
                for price in _reached(bids, best_ask, True):
                    self._fill_level(m, bids[price], t)
            if asks and best_bid and min(asks) <= best_bid:
                for price in _reached(asks, best_bid, False):
                    self._fill_level(m, asks[price], t)

    def _depth_side(self, levels: dict[int, _Level], sizes: SortedDict) -> None:
        n = self._power
        for lvl in levels.values():
            new = sizes.get(lvl.price, 0)
            prev = lvl.qty
            if new != prev:
                if new < prev:
                    cancelled = prev - new - lvl.traded
                    if cancelled > 0:
                        for o in lvl.orders:
                            o.ahead = _after_cancel(o.ahead, prev, cancelled, n)
                for o in lvl.orders:
                    if o.ahead > new:
                        o.ahead = float(new)
                lvl.qty = new
            lvl.traded = 0


def _reached(levels: dict[int, _Level], p: int, bids: bool) -> list[int]:
    """Our prices at or through ``p``, best first: bids at or above it, asks at or below."""
    if bids:
        return sorted((x for x in levels if x >= p), reverse=True)
    return sorted(x for x in levels if x <= p)


def _after_cancel(ahead: float, prev: int, cancelled: int, n: float) -> float:
    """Queue ahead after ``cancelled`` lots left a level of ``prev`` lots.

    The expected share that left from ahead of us is ``x**n`` with
    ``x = ahead / prev`` (hftbacktest's power-prob queue); what the rest of the
    level behind us cannot absorb also comes from ahead.
    """
    if ahead <= 0.0:
        return 0.0
    behind = prev - ahead
    if behind < 0.0:
        behind = 0.0
    share = (ahead / prev) ** n if prev > 0 else 1.0
    est = ahead - share * cancelled
    spill = behind - (1.0 - share) * cancelled
    if spill < 0.0:
        est += spill
    return est if est > 0.0 else 0.0
