"""The strategy protocol: desired quotes from the market, our position and a signal.

A strategy is a plain object: no I/O, no clock of its own. The engine calls
:meth:`Strategy.quote` once per quote cycle per market and sends the
difference between the returned quotes and our live orders to the venue,
after risk checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from flashmm.types import MarketSpec, Quote, Signal


class StrategyConfig(BaseModel):
    """The profile's ``strategy`` section: which strategy, its params and the quote cadence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "avellaneda"
    quote_hz: float = Field(5.0, gt=0, le=50, description="Quote cycles per second")
    requote_mid_move_bps: float = Field(
        10.0, ge=0, description="Requote at once when the mid moves this much (0 = off)"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    native: bool = Field(
        True,
        description="Run the built-in strategy's quotes in the compiled core (same quotes); "
        "a plugin strategy always runs in Python",
    )


@dataclass(slots=True)
class QuoteContext:
    """Everything a strategy may look at when it quotes one market."""

    spec: MarketSpec
    now_ns: int
    best_bid: int  # ticks
    best_ask: int  # ticks
    mid: float  # ticks
    position_lots: int
    max_position_lots: int  # the risk limit at the current mid
    sigma_bps: float  # volatility, bps per sqrt(second)
    signal: Signal
    skew_bps: float = 0.0  # from the signal, already capped
    widen: float = 1.0  # spread multiplier (>1 when the model is unsure or down)


class Strategy(Protocol):
    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    @property
    def params(self) -> BaseModel: ...  # a params_model; the engine reads its refresh_* tolerances

    def quote(self, ctx: QuoteContext) -> list[Quote]:
        """Desired quotes, bids then asks, best level first."""
        ...


class QuoteDesk(Protocol):
    """One market's quote decision in compiled code: the strategy's quotes, the diff
    against the live orders the desk keeps and the position-limit check, in one call.

    A strategy may offer one per market (``strategy.desk(spec, risk)``, None while it
    cannot); the engine then decides through it and keeps its live orders current
    (:meth:`remove`, :meth:`remaining`, :meth:`cancel_all`, :meth:`load`). Live rows
    are ``(side +1/-1, price_ticks, remaining_lots, client_id, state)`` with state 0
    live (new or open), 1 pending cancel.
    """

    def decide(
        self,
        best_bid: int,
        best_ask: int,
        mid: float,
        position_lots: int,
        max_position_lots: int,
        sigma_bps: float,
        skew_bps: float,
        widen: float,
        next_client_id: int,
        no_side: int = 0,
    ) -> bool | None:
        """One decision. True: cancels or places to send (:attr:`cancels`,
        :attr:`places`, the places already kept as live orders with client ids from
        ``next_client_id`` on); False: nothing to send; None: no room for the places
        in the desk (the caller decides in Python and reloads the desk). ``no_side``
        (+1 buy, -1 sell, 0 none): the strategy's quotes of that side are left out
        before the diff (reduce only), so that side's live orders are cancelled."""
        ...

    @property
    def cancels(self) -> list[int]: ...

    @property
    def places(self) -> list[tuple[int, int, int, int]]:
        """The last decision's places: (side +1/-1, price_ticks, lots, client_id)."""
        ...

    @property
    def cut_dropped(self) -> tuple[int, int]:
        """Places the last decision's risk check cut and dropped."""
        ...

    def load(self, rows: list[tuple[int, int, int, int, int]]) -> None: ...

    def remove(self, client_id: int) -> None: ...

    def remaining(self, client_id: int, lots: int) -> None: ...

    def cancel_all(self) -> None: ...


class StrategyBase:
    """Helpers shared by strategies: validated params and tick rounding."""

    name: ClassVar[str] = "base"
    params_model: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, params: dict[str, object] | BaseModel | None = None) -> None:
        if isinstance(params, BaseModel):
            self.params = params
        else:
            self.params = self.params_model.model_validate(params or {})


class VolEstimator:
    """EWMA volatility of the mid in bps per sqrt(second), sampled on a time grid."""

    __slots__ = ("_last_mid", "_last_ns", "_var", "alpha", "floor_bps", "interval_ns", "samples")

    def __init__(
        self, interval_ms: int = 1000, halflife_s: float = 60.0, floor_bps: float = 0.5
    ) -> None:
        self.interval_ns = interval_ms * 1_000_000
        n = max(halflife_s * 1000 / interval_ms, 1.0)
        self.alpha = 1 - 0.5 ** (1 / n)
        self.floor_bps = floor_bps
        self._last_mid = 0.0
        self._last_ns = 0
        self._var = 0.0  # bps^2 per second
        self.samples = 0

    def update(self, mid: float, now_ns: int) -> None:
        if mid <= 0:
            return
        if self._last_ns == 0:
            self._last_mid, self._last_ns = mid, now_ns
            return
        dt = now_ns - self._last_ns
        if dt < self.interval_ns:
            return
        r_bps = (mid / self._last_mid - 1.0) * 1e4
        var_per_s = r_bps * r_bps / (dt / 1e9)
        self._var = (
            var_per_s if self.samples == 0 else self._var + self.alpha * (var_per_s - self._var)
        )
        self.samples += 1
        self._last_mid, self._last_ns = mid, now_ns

    @property
    def sigma_bps(self) -> float:
        return max(math.sqrt(self._var), self.floor_bps)
