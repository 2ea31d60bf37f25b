"""The built-in Avellaneda-Stoikov strategy with its quotes computed in the compiled core.

:class:`NativeAvellanedaStrategy` is :class:`~flashmm.strategy.avellaneda.AvellanedaStrategy`
(same params, same name) whose :meth:`quote` runs the core's ``strategy_quote``
kernel: the same quotes, price and size for price and size (a test checks it
on thousands of books). Until the kernels are loaded (a background thread
at first use) the Python method answers. :func:`strategy_for` picks it for
``strategy.native: true`` (the default) when the profile names the built-in
strategy; any other strategy (a plugin written in plain Python) runs as it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flashmm.native import NativeCore, ready, warm_in_background
from flashmm.strategy import QuoteContext, Strategy, get_strategy_class
from flashmm.strategy.avellaneda import AvellanedaStrategy
from flashmm.strategy.base import StrategyConfig
from flashmm.types import Quote, Side


class NativeAvellanedaStrategy(AvellanedaStrategy):
    def __init__(self, params: dict[str, object] | BaseModel | None = None) -> None:
        super().__init__(params)
        self._core: NativeCore | None = None
        self._k: Any = None
        if not ready():
            warm_in_background()

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_core"] = d["_k"] = None  # rebuilt at the next quote
        return d

    def quote(self, ctx: QuoteContext) -> list[Quote]:
        core = self._core
        if core is None:
            if not ready():
                return super().quote(ctx)
            core = self._core = NativeCore(ctx.spec.unit_usdc, self.params)
            self._k = core.k
        k = self._k
        fst, io = core.fst, core.io
        fst[k.F_UNIT] = ctx.spec.unit_usdc
        fst[k.F_SKEW] = ctx.skew_bps
        fst[k.F_WIDEN] = ctx.widen
        n = k.strategy_quote(
            core.ist, fst, io, ctx.best_bid, ctx.best_ask, ctx.mid, ctx.position_lots,
            ctx.max_position_lots, ctx.sigma_bps,
        )  # fmt: skip
        if n == 0:
            return []
        v = io[k.IO_QUOTES : k.IO_QUOTES + 3 * n].tolist()
        buy, sell = Side.BUY, Side.SELL
        return [Quote(buy if v[i] > 0 else sell, v[i + 1], v[i + 2]) for i in range(0, 3 * n, 3)]


def strategy_for(cfg: StrategyConfig) -> Strategy:
    """The profile's strategy: the compiled built-in one when ``cfg.native`` and the
    profile names ``avellaneda``; otherwise the registered class as it is."""
    cls = get_strategy_class(cfg.name)
    if cfg.native and cls is AvellanedaStrategy:
        return NativeAvellanedaStrategy(cfg.params)
    strategy: Strategy = cls(cfg.params)
    return strategy
