"""What the engine reports through ``Engine.outbox``: one frozen dataclass per kind.

The journal, the API stream, alerts and the backtest recorder read them off the
outbox in order. Each event has a ``kind`` (``fill``, ``order``, ``order_update``,
``order_done``, ``breaker``, ``state``, ``feed``, ``hold``) and a ``payload`` (the plain
data of the stream and the journal); ``kind, payload = event`` also works.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from flashmm.types import Fill, Order


class _Event:
    __slots__ = ()
    kind: ClassVar[str]

    @property
    def payload(self) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        return iter((self.kind, self.payload))


@dataclass(frozen=True, slots=True)
class FillEvent(_Event):
    """A fill booked by the engine (the first time its id was seen)."""

    kind: ClassVar[str] = "fill"
    fill: Fill

    @property
    def payload(self) -> Fill:
        return self.fill


@dataclass(frozen=True, slots=True)
class OrderSent(_Event):
    """An order handed to the venue."""

    kind: ClassVar[str] = "order"
    order: Order

    @property
    def payload(self) -> Order:
        return self.order


@dataclass(frozen=True, slots=True)
class _OrderNote(_Event):
    order: Order
    note: str

    @property
    def payload(self) -> tuple[Order, str]:
        return self.order, self.note


@dataclass(frozen=True, slots=True)
class OrderUpdated(_OrderNote):
    """An order still live changed: ``accepted``, ``partially filled``."""

    kind: ClassVar[str] = "order_update"


@dataclass(frozen=True, slots=True)
class OrderDone(_OrderNote):
    """An order is gone: ``filled``, ``cancelled``, ``rejected: <reason>``."""

    kind: ClassVar[str] = "order_done"


@dataclass(frozen=True, slots=True)
class BreakerChanged(_Event):
    """A breaker tripped or cleared; ``status`` is ``Breaker.status()``."""

    kind: ClassVar[str] = "breaker"
    name: str
    status: dict[str, Any]

    @property
    def payload(self) -> dict[str, Any]:
        return {"name": self.name, **self.status}


@dataclass(frozen=True, slots=True)
class StateChanged(_Event):
    """The engine paused, resumed or was reset."""

    kind: ClassVar[str] = "state"
    state: str
    reason: str

    @property
    def payload(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class FeedNews(_Event):
    """Something happened to a reference feed: a gap, a reconnect, a resync."""

    kind: ClassVar[str] = "feed"
    symbol: str
    what: str
    detail: str

    @property
    def payload(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "kind": self.what, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SideHeld(_Event):
    """The venue refused a placement for a lasting cause (no free balance, market
    paused ...): that side of ``symbol`` is not quoted for ``hold_s``."""

    kind: ClassVar[str] = "hold"
    symbol: str
    side: str
    reason: str
    refusals_in_a_row: int
    hold_s: float

    @property
    def payload(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": self.side,
            "reason": self.reason,
            "refusals_in_a_row": self.refusals_in_a_row,
            "hold_s": self.hold_s,
        }


OutboxEvent = (
    FillEvent
    | OrderSent
    | OrderUpdated
    | OrderDone
    | BreakerChanged
    | StateChanged
    | FeedNews
    | SideHeld
)
