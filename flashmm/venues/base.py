"""The venue interface: what the engine needs from any exchange.

The engine talks to the paper/backtest simulator and to the Sei chain
through this one protocol. Every method the hot path calls is synchronous
and must not block: a live venue queues the work for a task of its own and
reports the outcome later through :meth:`Venue.poll`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from flashmm.errors import RuntimeFailure
from flashmm.types import Order, OrderRequest, Side, VenueEvent


class VenueError(RuntimeFailure):
    """A venue failed to do what was asked (network, RPC, revert...)."""


@runtime_checkable
class Venue(Protocol):
    """An exchange the engine quotes on."""

    name: str

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


class MarketObserver(Protocol):
    """A simulated venue also watches the reference market to decide fills."""

    def on_market_event(self, event: object, now_ns: int) -> None: ...
