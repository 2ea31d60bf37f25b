"""Market-data events in integer ticks and lots.

Feeds (file replay, WebSocket, chain) turn raw messages into these; the
book, features and simulator consume them. ``symbol`` is the reference
stream symbol in lower case (``nexousdt``); ``ts_ns`` is the local receive
time, the clock every part of FlashMM runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

Levels = list[tuple[int, int]]  # (price_ticks, size_lots); size 0 deletes the level


@dataclass(slots=True)
class DepthSnapshot:
    symbol: str
    ts_ns: int
    last_update_id: int
    bids: Levels
    asks: Levels


@dataclass(slots=True)
class DepthDiff:
    symbol: str
    ts_ns: int
    first_id: int
    last_id: int
    bids: Levels
    asks: Levels
    exch_ms: int = 0
    #: futures only: ``pu``, the last update id of the previous diff (-1 = spot, none)
    prev_id: int = -1


@dataclass(slots=True)
class Trade:
    """A public trade. ``buyer_is_maker`` True means the aggressor sold."""

    symbol: str
    ts_ns: int
    price_ticks: int
    size_lots: int
    buyer_is_maker: bool
    exch_ms: int = 0

    @property
    def aggressor_sign(self) -> int:
        """+1 when a buyer lifted the ask, -1 when a seller hit the bid."""
        return -1 if self.buyer_is_maker else 1


@dataclass(slots=True)
class BookTicker:
    symbol: str
    ts_ns: int
    update_id: int
    bid_ticks: int
    bid_lots: int
    ask_ticks: int
    ask_lots: int


@dataclass(slots=True)
class FeedStatus:
    """Not market data: a note from the feed (gap, reconnect, end of file)."""

    symbol: str
    ts_ns: int
    kind: str  # "gap" | "resync" | "connected" | "disconnected" | "eof"
    detail: str = ""


MarketEvent = DepthSnapshot | DepthDiff | Trade | BookTicker | FeedStatus
