"""Domain types shared by every part of FlashMM.

Prices are integer ticks, sizes integer lots and times integer nanoseconds.
Conversion to and from decimal prices happens only at the edges (feed
parsers, venue adapters, reports) through :class:`MarketSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import IntEnum
from typing import Any

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


class Side(IntEnum):
    """Order side; the value is the sign of the position change."""

    BUY = 1
    SELL = -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """A market FlashMM quotes, and the reference book it follows.

    ``symbol`` is our venue's name for it (``SEI/USDC``); ``reference`` the
    lower-case stream symbol of the reference feed (``nexousdt``).
    """

    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    reference: str

    def __post_init__(self) -> None:
        if self.tick_size <= 0:
            raise ValueError(f"tick_size must be > 0, was {self.tick_size}")
        if self.lot_size <= 0:
            raise ValueError(f"lot_size must be > 0, was {self.lot_size}")

    @property
    def tick(self) -> float:
        return float(self.tick_size)

    @property
    def lot(self) -> float:
        return float(self.lot_size)

    def price(self, ticks: int | float) -> float:
        """Price of ``ticks`` for display: whole ticks go through Decimal, so
        6162 ticks of 0.01 print as 61.62, not 61.620000000000005."""
        if isinstance(ticks, int):
            return float(ticks * self.tick_size)
        return ticks * float(self.tick_size)

    def size(self, lots: int | float) -> float:
        """Size of ``lots`` for display (whole lots exact, as :meth:`price`)."""
        if isinstance(lots, int):
            return float(lots * self.lot_size)
        return lots * float(self.lot_size)

    @property
    def unit_usdc(self) -> float:
        """USDC value of one tick times one lot: ``ticks * lots * unit_usdc`` is a notional,
        a P&L or a volume."""
        return float(self.tick_size) * float(self.lot_size)

    def notional(self, ticks: int | float, lots: int | float) -> float:
        """Quote-currency value of ``lots`` at ``ticks``."""
        return ticks * lots * self.unit_usdc


class Liquidity(IntEnum):
    MAKER = 0
    TAKER = 1


@dataclass(slots=True)
class OrderRequest:
    """A limit order FlashMM wants on a venue. ``client_id`` is ours, unique per market."""

    market: str
    client_id: int
    side: Side
    price_ticks: int
    size_lots: int
    post_only: bool = True


class OrderState(IntEnum):
    PENDING_NEW = 0
    OPEN = 1
    PENDING_CANCEL = 2
    DONE = 3


@dataclass(slots=True)
class Order:
    """An order FlashMM knows about, with its state and what is left."""

    market: str
    client_id: int
    side: Side
    price_ticks: int
    size_lots: int
    remaining_lots: int
    state: OrderState = OrderState.PENDING_NEW
    created_ns: int = 0

    @classmethod
    def from_request(cls, req: OrderRequest, now_ns: int) -> Order:
        return cls(
            req.market,
            req.client_id,
            req.side,
            req.price_ticks,
            req.size_lots,
            req.size_lots,
            OrderState.PENDING_NEW,
            now_ns,
        )


@dataclass(frozen=True, slots=True)
class Quote:
    """One desired level: side, price and size."""

    side: Side
    price_ticks: int
    size_lots: int


@dataclass(frozen=True, slots=True)
class Fill:
    """A (partial) execution of one of our orders.

    ``client_id`` is 0 for a taker order that was not a quote (a flatten).
    ``fee_usdc`` is positive for a cost, negative for a rebate.
    """

    market: str
    client_id: int
    side: Side
    price_ticks: int
    size_lots: int
    fee_usdc: float
    liquidity: Liquidity
    ts_ns: int
    fill_id: str = ""


# --- venue events -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    market: str
    client_id: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class OrderRejected:
    market: str
    client_id: int
    ts_ns: int
    reason: str
    #: the venue would refuse every order of that side again (no free balance, market
    #: paused): the engine holds that side back a while
    lasting: bool = False


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    market: str
    client_id: int
    ts_ns: int


VenueEvent = Fill | OrderAccepted | OrderRejected | OrderCancelled


@dataclass(frozen=True, slots=True)
class Signal:
    """A short-term view of the market.

    ``direction`` is -1, 0 or +1; ``confidence`` in [0, 1]; ``expected_bps``
    the expected signed mid move in basis points over the model's horizon.
    """

    direction: int = 0
    confidence: float = 0.0
    expected_bps: float = 0.0
    source: str = "none"
    #: probability that the mid moves at all over the horizon (0: unknown, e.g. rules)
    p_move: float = 0.0


@dataclass(slots=True)
class Position:
    """Inventory and P&L of one market, in lots and quote currency (USDC)."""

    market: str
    lots: int = 0
    avg_price_ticks: float = 0.0
    realized_usdc: float = 0.0
    fees_usdc: float = 0.0
    volume_usdc: float = 0.0
    fills: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def copy(self) -> Position:
        """A copy that shares nothing with this one."""
        return replace(self, extra=dict(self.extra))


def clean_floats(obj: Any, digits: int = 10) -> Any:
    """``obj`` with every float rounded to ``digits`` significant digits: no binary noise
    such as 0.30000000000000004 in printed summaries and JSON."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if obj == obj and abs(obj) != float("inf") else obj
    if isinstance(obj, dict):
        return {k: clean_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_floats(v, digits) for v in obj]
    return obj
