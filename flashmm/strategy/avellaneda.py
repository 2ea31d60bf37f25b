"""Avellaneda–Stoikov market making with inventory skew and a ladder of levels.

Everything is computed in basis points of the mid, then rounded to ticks:

- ``q``: inventory as a share of the position limit, in [-1, 1], measured
  from ``inventory_target`` (a share of the limit too).
- reservation offset ``r = -q · γ · σ² · T + skew`` (bps), where ``σ`` is
  the mid's volatility in bps/√s, ``T`` = ``horizon_s`` and ``skew`` the
  signal's capped expected move × confidence.
- half spread ``δ = (γ σ² T / 2 + ln(1 + γ/κ) / γ) · widen``, clamped to
  ``[min_spread_bps/2, max_spread_bps/2]``.
- level ``i`` (0 = best) sits ``i · level_spacing_bps`` further out (at least
  one tick), sized ``order_size_usdc · size_multiplier**i``.

Bids round down and asks round up, so rounding never tightens a quote, and
no quote crosses the book (post-only): a bid is at most one tick under the
best ask, an ask at least one tick over the best bid.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flashmm.strategy.base import QuoteContext, StrategyBase
from flashmm.types import Quote, Side


class AvellanedaParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gamma: float = Field(0.5, gt=0, le=100, description="Risk aversion γ")
    kappa: float = Field(0.5, gt=0, description="Order-book liquidity κ (1/bps)")
    horizon_s: float = Field(10.0, gt=0, description="Horizon T in seconds")
    levels: int = Field(3, ge=1, le=10, description="Orders per side")
    level_spacing_bps: float = Field(5.0, ge=0, description="Extra distance per level")
    order_size_usdc: float = Field(50.0, gt=0, description="Size of the best level")
    size_multiplier: float = Field(1.5, gt=0, le=10, description="Size growth per level")
    min_spread_bps: float = Field(4.0, ge=0, description="Narrowest full spread")
    max_spread_bps: float = Field(300.0, gt=0, description="Widest full spread")
    inventory_target: float = Field(0.0, ge=-1, le=1, description="Target position, share of limit")
    refresh_tolerance_bps: float = Field(
        0.0, ge=0, description="Keep a live order whose price is within this of the new quote"
    )
    refresh_size_tolerance: float = Field(
        0.2, ge=0, le=1, description="Keep a live order whose size is within this share"
    )

    @model_validator(mode="after")
    def _spreads(self) -> AvellanedaParams:
        if self.min_spread_bps > self.max_spread_bps:
            raise ValueError(
                f"min_spread_bps ({self.min_spread_bps}) must be <= max_spread_bps "
                f"({self.max_spread_bps})"
            )
        return self


class AvellanedaStrategy(StrategyBase):
    name: ClassVar[str] = "avellaneda"
    params_model: ClassVar[type[BaseModel]] = AvellanedaParams
    params: AvellanedaParams

    def reservation_and_half_spread(self, ctx: QuoteContext) -> tuple[float, float]:
        """(reservation offset, half spread), both in bps of the mid."""
        p = self.params
        limit = max(ctx.max_position_lots, 1)
        q = (ctx.position_lots - p.inventory_target * limit) / limit
        q = max(-1.0, min(1.0, q))
        s2t = ctx.sigma_bps * ctx.sigma_bps * p.horizon_s
        r = -q * p.gamma * s2t + ctx.skew_bps
        half = (p.gamma * s2t / 2.0 + math.log1p(p.gamma / p.kappa) / p.gamma) * ctx.widen
        half = min(max(half, p.min_spread_bps / 2.0), p.max_spread_bps / 2.0)
        return r, half

    def quote(self, ctx: QuoteContext) -> list[Quote]:
        if ctx.mid <= 0 or ctx.best_bid <= 0 or ctx.best_ask <= ctx.best_bid:
            return []
        p = self.params
        r, half = self.reservation_and_half_spread(ctx)
        mid = ctx.mid
        unit = ctx.spec.unit_usdc
        bids: list[Quote] = []
        asks: list[Quote] = []
        lo = mid * (1.0 + (r - half) / 1e4)
        hi = mid * (1.0 + (r + half) / 1e4)
        step = mid * p.level_spacing_bps / 1e4
        size_usdc = p.order_size_usdc
        # each level is at least a tick beyond the last; the first bid under the best ask
        prev_bid, prev_ask = ctx.best_ask, ctx.best_bid
        for i in range(p.levels):
            bid = min(math.floor(lo - i * step + 1e-9), prev_bid - 1)
            ask = max(math.ceil(hi + i * step - 1e-9), prev_ask + 1)
            prev_bid, prev_ask = bid, ask
            if bid > 0:
                lots = int(size_usdc / (bid * unit))
                if lots > 0:
                    bids.append(Quote(Side.BUY, bid, lots))
            lots = int(size_usdc / (ask * unit))
            if lots > 0:
                asks.append(Quote(Side.SELL, ask, lots))
            size_usdc *= p.size_multiplier
        return bids + asks
