"""L2 order book in integer ticks and lots, with Binance sequencing rules.

:class:`OrderBook` holds price levels; :class:`BookBuilder` feeds it from
snapshots and diffs, buffering diffs until a snapshot arrives, enforcing
``U == previous u + 1`` (spot) or ``pu == previous u`` (USD-M futures) and
reporting a gap instead of applying it. It also checks itself against
``bookTicker`` messages whenever the two can be compared (once the diff
ending at the ticker's update id is applied). :func:`diff_verdict` is the
one sequencing rule, read by the builder and by the live feed alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum

from sortedcontainers import SortedDict

from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, FeedStatus, Levels, MarketEvent

#: feed news after which the book waits for a fresh snapshot
_DESYNC = frozenset(("gap", "disconnected", "resync"))


class OrderBook:
    """Price levels of one market. Sizes are lots; a size of 0 removes the level."""

    __slots__ = ("asks", "best_ask", "best_bid", "bids", "listener", "symbol", "version")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        #: best prices in ticks (0 when a side is empty), kept current by every change
        self.best_bid = 0
        self.best_ask = 0
        #: bumped on every change, so readers can tell whether anything moved
        self.version = 0
        #: told every change as it is made: ``listener(bids, asks, snapshot)`` (a copy of
        #: the book kept elsewhere, e.g. in the compiled core, follows without a rescan)
        self.listener: Callable[[Levels, Levels, bool], object] | None = None

    def _touch(self) -> None:
        b, a = self.bids, self.asks
        self.best_bid = b.keys()[-1] if b else 0
        self.best_ask = a.keys()[0] if a else 0
        self.version += 1

    def load(self, bids: Levels, asks: Levels) -> None:
        self.bids = SortedDict({p: q for p, q in bids if q > 0})
        self.asks = SortedDict({p: q for p, q in asks if q > 0})
        self._touch()
        if self.listener is not None:
            self.listener(bids, asks, True)

    def apply(self, bids: Levels, asks: Levels) -> None:
        b, a = self.bids, self.asks
        for p, q in bids:
            if q:
                b[p] = q
            else:
                b.pop(p, None)
        for p, q in asks:
            if q:
                a[p] = q
            else:
                a.pop(p, None)
        self._touch()
        if self.listener is not None:
            self.listener(bids, asks, False)

    def best_bid_size(self) -> int:
        return int(self.bids[self.best_bid]) if self.best_bid else 0

    def best_ask_size(self) -> int:
        return int(self.asks[self.best_ask]) if self.best_ask else 0

    @property
    def valid(self) -> bool:
        """Both sides present and not crossed."""
        return 0 < self.best_bid < self.best_ask

    @property
    def mid2(self) -> int:
        """Twice the mid price in ticks (an integer), 0 if a side is empty."""
        return self.best_bid + self.best_ask if self.best_bid and self.best_ask else 0

    @property
    def mid(self) -> float:
        return self.mid2 / 2.0

    @property
    def spread(self) -> int:
        return self.best_ask - self.best_bid if self.best_bid and self.best_ask else 0

    def top_bids(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` best bid levels, best first."""
        b = self.bids
        keys = b.keys()[-n:]
        keys.reverse()
        return [(k, b[k]) for k in keys]

    def top_asks(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` best ask levels, best first."""
        a = self.asks
        return [(k, a[k]) for k in a.keys()[:n]]

    def size_at(self, price_ticks: int, bid: bool) -> int:
        return int((self.bids if bid else self.asks).get(price_ticks, 0))


class Verdict(Enum):
    """What to do with a depth diff (:func:`diff_verdict`)."""

    APPLY = "apply"
    DROP = "drop"
    GAP = "gap"


APPLY, DROP, GAP = Verdict.APPLY, Verdict.DROP, Verdict.GAP


def diff_verdict(d: DepthDiff, last_id: int, fresh: bool) -> Verdict:
    """Binance's rule for a depth diff after the update id ``last_id``.

    ``fresh``: no diff applied since the snapshot whose ``lastUpdateId`` is
    ``last_id``. Spot: a diff with ``u <= last_id`` is already in the book
    (:data:`DROP`), one with ``U > last_id + 1`` skipped an update
    (:data:`GAP`). USD-M futures (the diff carries ``pu``): right after a
    snapshot, diffs with ``u < last_id`` are dropped and the first applied
    one spans it (``U <= last_id <= u``); after that each diff's ``pu``
    must equal the previous ``u``, else it is a gap, a repeated diff too
    (Binance: "otherwise initialize the process from step 3").
    """
    if d.prev_id >= 0:
        if fresh:
            if d.last_id < last_id:
                return DROP
            return APPLY if d.first_id <= last_id else GAP
        return APPLY if d.prev_id == last_id else GAP
    if d.last_id <= last_id:
        return DROP
    return GAP if d.first_id > last_id + 1 else APPLY


def gap_detail(d: DepthDiff, last_id: int, fresh: bool) -> str:
    """What a diff that :func:`diff_verdict` calls a gap should have been."""
    if d.prev_id < 0:
        return f"expected update id {last_id + 1}, got {d.first_id}..{d.last_id}"
    if fresh:
        return f"expected a diff spanning {last_id}, got {d.first_id}..{d.last_id}"
    return f"expected pu {last_id}, got pu {d.prev_id} ({d.first_id}..{d.last_id})"


class SyncState(Enum):
    WAITING_SNAPSHOT = "waiting_snapshot"
    SYNCED = "synced"


class SequenceGap(Exception):
    """A diff does not continue the last applied one."""

    def __init__(self, symbol: str, expected: int, got_first: int, got_last: int) -> None:
        self.expected = expected
        super().__init__(
            f"{symbol}: sequence gap, expected update id {expected}, "
            f"got diff {got_first}..{got_last}"
        )


class BookBuilder:
    """Applies snapshots and diffs to an :class:`OrderBook` by Binance's rules.

    - Diffs before the first snapshot are buffered (up to ``max_buffer``).
    - On a snapshot, buffered diffs with ``u <= lastUpdateId`` are dropped;
      the first applied one must satisfy ``U <= lastUpdateId + 1 <= u``.
    - After that each diff's ``U`` must equal the previous ``u + 1``; if not,
      :class:`SequenceGap` is raised, the book is marked out of sync and
      diffs are buffered again until the next snapshot.
    - USD-M futures diffs (they carry ``pu``, ``prev_id >= 0``) follow their
      own rule; :func:`diff_verdict` holds both.
    - ``bootstrap=True`` accepts diffs without a snapshot (for a recording
      that continues an earlier file); untouched levels stay unknown.
    """

    def __init__(self, symbol: str, *, max_buffer: int = 10_000, bootstrap: bool = False) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.state = SyncState.WAITING_SNAPSHOT
        self.last_id = 0
        self.buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self.bootstrap = bootstrap
        self._fresh = True  # no diff applied since the snapshot
        self.gaps = 0
        self.diffs_applied = 0
        self.diffs_dropped = 0
        # bookTicker self-check
        self.checks = 0
        self.mismatches = 0
        self._pending_tickers: deque[BookTicker] = deque(maxlen=256)

    @property
    def synced(self) -> bool:
        return self.state is SyncState.SYNCED

    def on_snapshot(self, snap: DepthSnapshot) -> None:
        self.book.load(snap.bids, snap.asks)
        self.last_id = snap.last_update_id
        self.state = SyncState.SYNCED
        self._fresh = True
        pending = list(self.buffer)
        self.buffer.clear()
        for d in pending:
            self.on_diff(d)

    def on_diff(self, d: DepthDiff) -> bool:
        """Apply a diff. Returns True when the book changed.

        Raises :class:`SequenceGap` when the diff does not follow the last one.
        """
        if self.state is not SyncState.SYNCED:
            if self.bootstrap and self.last_id == 0:
                self.state = SyncState.SYNCED
                self._fresh = False
                self.last_id = d.prev_id if d.prev_id >= 0 else d.first_id - 1
            else:
                self.buffer.append(d)
                return False
        verdict = diff_verdict(d, self.last_id, self._fresh)
        if verdict is DROP:
            self.diffs_dropped += 1
            return False
        if verdict is GAP:
            self._gap(d)
        self._fresh = False
        self.book.apply(d.bids, d.asks)
        self.last_id = d.last_id
        self.diffs_applied += 1
        if self._pending_tickers:
            self._check_pending()
        return True

    def _gap(self, d: DepthDiff) -> None:
        expected = self.last_id if d.prev_id >= 0 else self.last_id + 1
        self.gaps += 1
        self.state = SyncState.WAITING_SNAPSHOT
        self.bootstrap = False
        self.buffer.clear()
        self.buffer.append(d)
        self._pending_tickers.clear()
        raise SequenceGap(self.symbol, expected, d.first_id, d.last_id)

    def on_event(self, ev: MarketEvent) -> bool:
        """Route one market event: apply a snapshot or a diff (True when the book
        changed), remember a bookTicker for the self-check, and take a feed's
        ``gap``/``disconnected``/``resync`` news as "out of sync until the next
        snapshot". Raises :class:`SequenceGap` as :meth:`on_diff` does."""
        if isinstance(ev, DepthDiff):
            return self.on_diff(ev)
        if isinstance(ev, DepthSnapshot):
            self.on_snapshot(ev)
            return True
        if isinstance(ev, BookTicker):
            self.on_ticker(ev)
        elif isinstance(ev, FeedStatus) and ev.kind in _DESYNC:
            self.state = SyncState.WAITING_SNAPSHOT
        return False

    def on_ticker(self, t: BookTicker) -> None:
        """Remember a bookTicker so it is compared once its update id is applied."""
        if self.state is not SyncState.SYNCED or t.update_id < self.last_id:
            return
        if t.update_id == self.last_id:
            self._compare(t)
        else:
            self._pending_tickers.append(t)

    def _check_pending(self) -> None:
        p = self._pending_tickers
        last = self.last_id
        while p and p[0].update_id <= last:
            t = p.popleft()
            if t.update_id == last:
                self._compare(t)

    def _compare(self, t: BookTicker) -> None:
        b = self.book
        self.checks += 1
        if (
            b.best_bid != t.bid_ticks
            or b.best_ask != t.ask_ticks
            or b.best_bid_size() != t.bid_lots
            or b.best_ask_size() != t.ask_lots
        ):
            self.mismatches += 1
