"""The 64 features in the compiled core, with the interface of
:class:`flashmm.features.OnlineFeatures` (a drop-in for the model signal).

Until the kernels are loaded (:func:`flashmm.native.ready`; they are built on a
background thread at first use, or at install with ``python -m flashmm.native``)
the Python :class:`~flashmm.features.OnlineFeatures` runs; at the first book
change after they are ready its whole state moves into the core's arrays and
the kernels take over. The values are the same either way, bit for bit (a test
hands over in the middle of a recording).

Once the core runs, its book follows the engine's book change by change (the
book's ``listener``: a diff's few levels cross into the core as they are
applied), so a book change costs one kernel call over the core's own book
instead of packing the top 10 levels from the Python book each time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flashmm.book import OrderBook
from flashmm.features import OnlineFeatures
from flashmm.marketdata import Trade
from flashmm.native import NativeCore, levels_array, ready, start


def load_state(core: NativeCore, fe: OnlineFeatures) -> None:
    """Copy the state of a Python :class:`OnlineFeatures` into ``core``."""
    k = core.k
    ist, fst = core.ist, core.fst
    fst[k.F_S : k.F_S + 45] = fe._S.reshape(-1)
    fst[k.F_E : k.F_E + 11] = fe._E
    fst[k.F_V : k.F_V + 11] = fe._V
    if fe._bk:
        fst[k.F_BK : k.F_BK + 25] = fe._bk
    ist[k.I_READY] = int(fe.ready)
    ist[k.I_T0] = fe.t0
    ist[k.I_BOOK_TS] = fe.book_ts
    ist[k.I_MID2] = fe.mid2
    ist[k.I_S_TS] = fe._S_ts
    ist[k.I_E_TS] = fe._E_ts
    ist[k.I_LT_TS] = fe.last_trade_ts
    ist[k.I_LT_PX] = fe.last_trade_px
    ist[k.I_LT_SIGN] = fe.last_trade_sign
    ist[k.I_LM_TS] = fe.last_mid_change_ts
    ist[k.I_LM_SIGN] = fe.last_mid_change_sign
    ist[k.I_UPDATES] = fe.updates
    ist[k.I_SKIPPED] = fe.skipped
    for side, prev in ((0, fe._prev_bids), (1, fe._prev_asks)):
        for i, (p, q) in enumerate(prev):
            ist[k.I_PREV + 20 * side + 2 * i] = p
            ist[k.I_PREV + 20 * side + 2 * i + 1] = q
    ist[k.I_PNB] = len(fe._prev_bids)
    ist[k.I_PNA] = len(fe._prev_asks)
    # the five look-back deques are suffixes of one stream (appended together)
    longest = fe._mid_hist[-1]
    n = len(longest)
    if n > k.HIST_CAP:
        raise ValueError(f"mid history of {n} entries exceeds the core's {k.HIST_CAP}")
    for i, (t, m) in enumerate(longest):
        ist[k.I_HIST + 2 * i] = t
        ist[k.I_HIST + 2 * i + 1] = m
    ist[k.I_H_TAIL] = n
    for j, dq in enumerate(fe._mid_hist):
        ist[k.I_H_HEAD + j] = n - len(dq)


class NativeFeatures:
    """Incremental features of one market in the compiled core."""

    def __init__(self, tick_size: float) -> None:
        self._py: OnlineFeatures | None = OnlineFeatures(tick_size)
        self.tick_size = float(tick_size)
        self._core: NativeCore | None = None
        self._k: Any = None
        self._lv = np.zeros(1 + 3 * 64, dtype=np.int64)
        #: the book whose changes the core's book follows (its ``listener``)
        self._listen: Any = None
        if start():
            self._switch()

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_k"] = d["_listen"] = None  # the book is followed again at its next change
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        if self._core is not None:
            self._k = self._core.k

    @property
    def native(self) -> bool:
        """True once the kernels run (False: the Python features, until they are loaded)."""
        return self._core is not None

    def _switch(self) -> None:
        assert self._py is not None
        core = NativeCore(1.0)
        load_state(core, self._py)
        self._core, self._k, self._py = core, core.k, None
        self._listen = self._follow

    def _follow(self, bids: list[tuple[int, int]], asks: list[tuple[int, int]], snap: bool) -> None:
        """A change of the followed book, applied to the core's book as it is made."""
        core = self._core
        assert core is not None
        self._k.apply_levels(core.ist, levels_array(bids, asks, self._lv), snap)

    def _attach(self, book: OrderBook) -> None:
        """Follow ``book``: load all of it into the core's book, then every change."""
        core = self._core
        assert core is not None
        self._k.apply_levels(core.ist, levels_array(book.bids.items(), book.asks.items()), True)
        book.listener = self._listen

    def on_book(self, book: OrderBook, ts_ns: int) -> None:
        core = self._core
        if core is None:
            if not ready():
                assert self._py is not None
                self._py.on_book(book, ts_ns)
                return
            self._switch()
            core = self._core
            assert core is not None
        if book.listener is not self._listen or self._listen is None:
            if self._listen is None:
                self._listen = self._follow
            self._attach(book)  # from here on the core's book follows it change by change
        self._k.features_on_book(core.ist, core.fst, ts_ns)

    def on_trade(self, trade: Trade) -> None:
        core = self._core
        if core is None:
            assert self._py is not None
            self._py.on_trade(trade)
            return
        self._k.features_on_trade(
            core.ist,
            core.fst,
            trade.ts_ns,
            trade.price_ticks,
            trade.size_lots,
            int(trade.buyer_is_maker),
        )

    def vector(self, ts_ns: int) -> np.ndarray:
        core = self._core
        if core is None:
            assert self._py is not None
            return self._py.vector(ts_ns)
        self._k.features_vector(core.ist, core.fst, ts_ns, core.x)
        return core.x

    def _int(self, slot: str, attr: str) -> int:
        if self._core is None:
            return int(getattr(self._py, attr))
        return int(self._core.ist[getattr(self._k, slot)])

    @property
    def ready(self) -> bool:
        return bool(self._int("I_READY", "ready"))

    @property
    def t0(self) -> int:
        return self._int("I_T0", "t0")

    @property
    def mid2(self) -> int:
        return self._int("I_MID2", "mid2")

    @property
    def updates(self) -> int:
        return self._int("I_UPDATES", "updates")

    @property
    def skipped(self) -> int:
        return self._int("I_SKIPPED", "skipped")

    def mid_ticks(self) -> float:
        return self.mid2 * 0.5
