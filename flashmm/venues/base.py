"""The venue interface: what the engine needs from any exchange.

The engine talks to the paper/backtest simulator and to the Sei chain
through this one protocol. Every method the hot path calls is synchronous
and must not block: a live venue queues the work for a task of its own and
reports the outcome later through :meth:`Venue.poll`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from flashmm.book import BookBuilder
from flashmm.errors import RuntimeFailure
from flashmm.marketdata import MarketEvent
from flashmm.types import Order, OrderRequest, Side, VenueEvent


class VenueError(RuntimeFailure):
    """A venue failed to do what was asked (network, RPC, revert...)."""


@runtime_checkable
class Venue(Protocol):
    """An exchange the engine quotes on."""

    name: str
    #: the venue decides fills from the reference market (the simulator): the engine
    #: hands it every market event before its own book sees it
    observes_market: bool

    async def start(self) -> None:
        """Connect, check the chain/market and get ready to take orders."""

    def requote(
        self,
        market: str,
        cancels: Sequence[int],
        places: Sequence[OrderRequest],
        now_ns: int,
    ) -> None:
        """Cancel ``cancels`` (client ids) and place ``places``, as one batch.

        Never blocks. Outcomes arrive later from :meth:`poll`: an
        ``OrderAccepted`` or ``OrderRejected`` per placed order, an
        ``OrderCancelled`` per cancelled one, and ``Fill`` events.
        """

    def cancel_all(self, market: str | None, now_ns: int) -> None:
        """Cancel every open order of ours (of one market, or all)."""

    def take(
        self,
        market: str,
        side: Side,
        size_lots: int,
        limit_price_ticks: int,
        now_ns: int,
    ) -> None:
        """Immediate-or-cancel taker order (used to flatten). Fills have client id 0."""

    def poll(self, now_ns: int) -> list[VenueEvent]:
        """Events that happened since the last call, oldest first."""

    async def open_orders(self) -> list[Order]:
        """Our resting orders as the venue sees them (for reconciliation)."""

    async def positions(self) -> dict[str, int]:
        """Our position per market in lots as the venue sees it."""

    async def aclose(self) -> None:
        """Cancel nothing, just release connections and tasks."""

    # --- what the engine reads each cycle (defaults in VenueDefaults) ---------------

    def on_market_event(self, event: MarketEvent, now_ns: int) -> None:
        """One reference-market event (called only when ``observes_market``)."""

    def share_book(self, symbol: str, builder: BookBuilder) -> None:
        """Read the reference book of ``symbol`` from the engine's ``builder``
        (called only when ``observes_market``): one book per stream."""

    def on_book_update(self, event: MarketEvent, now_ns: int) -> None:
        """The shared book of ``event.symbol`` just applied ``event`` (a depth message
        that changed it); called only when ``observes_market``."""

    def next_due_ns(self) -> int | None:
        """The earliest time :meth:`poll` could report something: 0 = at any time
        (a live venue), None = nothing pending. A simulated clock skips idle quote
        cycles up to it."""

    def receipt_p99_ms(self) -> float | None:
        """p99 of the venue's recent answer times in ms (None: not measured)."""

    def error_count(self) -> int | None:
        """Failed sends, reverts and dropped transactions so far (None: not counted)."""

    def status(self, up_s: float) -> dict[str, Any]:
        """The venue's name and counters for the snapshot; ``up_s`` is the engine's
        running time (a chain venue projects its gas per day from it)."""

    def book_mid(self, symbol: str) -> float | None:
        """The mid of our own venue's book in ticks, when the venue reports one."""

    # --- crash recovery (a chain venue keeps its history) -----------------------------

    #: the venue can replay its fills from a block on start (:meth:`recover_from`)
    replays_fills: bool
    #: every event up to this block has been handed out by poll() (None: no blocks)
    processed_block: int | None

    def recover_from(self, block: int | None) -> None:
        """Before ``start``: replay our fills from ``block`` (when ``replays_fills``)."""

    def replay_summary(self) -> dict[str, int]:
        """What the start-up replay found (blocks scanned, fills booked); empty without one."""


class VenueDefaults:
    """The :class:`Venue` members a venue without the capability answers the same way."""

    name = "?"
    observes_market = False
    replays_fills = False
    processed_block: int | None = None

    def on_market_event(self, event: MarketEvent, now_ns: int) -> None:
        return None

    def share_book(self, symbol: str, builder: BookBuilder) -> None:
        return None

    def on_book_update(self, event: MarketEvent, now_ns: int) -> None:
        return None

    def next_due_ns(self) -> int | None:
        return 0

    def receipt_p99_ms(self) -> float | None:
        return None

    def error_count(self) -> int | None:
        return None

    def status(self, up_s: float) -> dict[str, Any]:
        return {"name": self.name}

    def book_mid(self, symbol: str) -> float | None:
        return None

    def recover_from(self, block: int | None) -> None:
        return None

    def replay_summary(self) -> dict[str, int]:
        return {}
