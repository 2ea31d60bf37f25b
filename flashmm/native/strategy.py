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

from flashmm.native import NativeCore, ready, start
from flashmm.strategy import QuoteContext, Strategy, get_strategy_class
from flashmm.strategy.avellaneda import AvellanedaStrategy
from flashmm.strategy.base import StrategyConfig
from flashmm.types import MarketSpec, Quote, Side


class NativeAvellanedaStrategy(AvellanedaStrategy):
    def __init__(self, params: dict[str, object] | BaseModel | None = None) -> None:
        super().__init__(params)
        self._core: NativeCore | None = None
        self._k: Any = None
        start()

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_core"] = d["_k"] = None  # rebuilt at the next quote
        return d

    def desk(self, spec: MarketSpec, risk: Any) -> NativeDesk | None:
        """One market's compiled quote desk (strategy, order diff, position limit) for
        the engine; None until the kernels are loaded, or when a subclass quotes in
        Python (its :meth:`quote` is not this class's)."""
        if type(self).quote is not NativeAvellanedaStrategy.quote:
            return None
        if not start():
            return None
        return NativeDesk(NativeCore(spec.unit_usdc, self.params, risk))

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


class NativeDesk:
    """:class:`flashmm.strategy.base.QuoteDesk` on a :class:`NativeCore`: the live
    orders are the core's ``io`` rows, a decision is one ``quote_and_sync`` call."""

    __slots__ = ("_room", "core", "fst", "io", "ist", "k")

    def __init__(self, core: NativeCore) -> None:
        self.core = core
        self.k = k = core.k
        self.io, self.ist, self.fst = core.io, core.ist, core.fst
        self.io[k.IO_KEEP] = 1
        #: live rows that leave room for a full set of quotes
        self._room = k.MAX_LIVE - 2 * int(core.ist[k.I_STRAT_LEVELS])

    def __getstate__(self) -> dict[str, Any]:
        return {"core": self.core}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["core"])  # type: ignore[misc]

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
        k, io, fst = self.k, self.io, self.fst
        if io[k.IO_NLIVE] > self._room:
            return None
        fst[k.F_SKEW] = skew_bps
        fst[k.F_WIDEN] = widen
        io[k.IO_NEXT_CID] = next_client_id
        io[k.IO_NO_SIDE] = no_side
        k.quote_and_sync(
            self.ist, fst, io, best_bid, best_ask, mid, position_lots, max_position_lots,
            sigma_bps,
        )  # fmt: skip
        return bool(io[k.IO_NCANCEL] or io[k.IO_NPLACE])

    @property
    def cancels(self) -> list[int]:
        k, io = self.k, self.io
        c: list[int] = io[k.IO_CANCELS : k.IO_CANCELS + io[k.IO_NCANCEL]].tolist()
        return c

    @property
    def places(self) -> list[tuple[int, int, int, int]]:
        k, io = self.k, self.io
        n = int(io[k.IO_NPLACE])
        v = io[k.IO_PLACES : k.IO_PLACES + 3 * n].tolist()
        cid = int(io[k.IO_NEXT_CID]) - n
        return [(v[3 * i], v[3 * i + 1], v[3 * i + 2], cid + i) for i in range(n)]

    @property
    def cut_dropped(self) -> tuple[int, int]:
        k, io = self.k, self.io
        return int(io[k.IO_CUT]), int(io[k.IO_DROPPED])

    def load(self, rows: list[tuple[int, int, int, int, int]]) -> None:
        self.core.set_live(rows)

    def remove(self, client_id: int) -> None:
        self.k.live_remove(self.io, client_id)

    def remaining(self, client_id: int, lots: int) -> None:
        self.k.live_remaining(self.io, client_id, lots)

    def cancel_all(self) -> None:
        self.k.live_cancel_all(self.io)


def strategy_for(cfg: StrategyConfig) -> Strategy:
    """The profile's strategy: the compiled built-in one when ``cfg.native`` and the
    profile names ``avellaneda``; otherwise the registered class as it is."""
    cls = get_strategy_class(cfg.name)
    if cfg.native and cls is AvellanedaStrategy:
        return NativeAvellanedaStrategy(cfg.params)
    strategy: Strategy = cls(cfg.params)
    return strategy
