"""Signal sources: what the engine asks for a short-term view of each market.

A :class:`SignalSource` sees every book change and trade of its market and
returns a :class:`~flashmm.types.Signal` when the engine quotes. The
built-in :class:`BookImbalanceSignal` is the rule-based microprice/imbalance
view; the prediction package provides an ONNX-backed source with the same
interface and falls back to these rules.
"""

from __future__ import annotations

from typing import Protocol

from flashmm.book import OrderBook
from flashmm.marketdata import Trade
from flashmm.types import Signal


class SignalSource(Protocol):
    def on_book(self, book: OrderBook, ts_ns: int) -> None: ...

    def on_trade(self, trade: Trade) -> None: ...

    def signal(self, ts_ns: int, mid: float) -> Signal: ...

    def adjust(self, signal: Signal) -> tuple[float, float]:
        """(reservation skew in bps, spread multiplier) for this signal."""
        ...

    def status(self) -> dict[str, object]: ...


class BookImbalanceSignal:
    """Microprice/imbalance rule: the mid tends to move toward the thinner side.

    expected move (bps) = (microprice - mid) / mid · 1e4 · ``gain``;
    confidence = |imbalance| of the top ``depth`` levels.
    """

    def __init__(
        self,
        depth: int = 3,
        gain: float = 1.0,
        min_imbalance: float = 0.2,
        max_skew_bps: float = 4.0,
        min_confidence: float = 0.3,
    ) -> None:
        self.depth = depth
        self.max_skew_bps = max_skew_bps
        self.min_confidence = min_confidence
        self.gain = gain
        self.min_imbalance = min_imbalance
        self._imb = 0.0
        self._micro_bps = 0.0

    def on_book(self, book: OrderBook, ts_ns: int) -> None:
        if not book.bids or not book.asks:
            return
        bid, bq = book.bids.peekitem(-1)
        ask, aq = book.asks.peekitem(0)
        if bq + aq <= 0:
            return
        mid = (bid + ask) / 2.0
        micro = (bid * aq + ask * bq) / (bq + aq)
        self._micro_bps = (micro - mid) / mid * 1e4
        vb = sum(q for _, q in book.top_bids(self.depth))
        va = sum(q for _, q in book.top_asks(self.depth))
        self._imb = (vb - va) / (vb + va) if vb + va > 0 else 0.0

    def on_trade(self, trade: Trade) -> None:
        return None

    def signal(self, ts_ns: int, mid: float) -> Signal:
        imb = self._imb
        direction = 0 if abs(imb) < self.min_imbalance else (1 if imb > 0 else -1)
        return Signal(direction, min(abs(imb), 1.0), self._micro_bps * self.gain, "rules")

    def adjust(self, signal: Signal) -> tuple[float, float]:
        return skew_and_widen(signal, self.max_skew_bps, self.min_confidence)

    def status(self) -> dict[str, object]:
        return {"source": "rules", "imbalance": round(self._imb, 3)}


def skew_and_widen(
    signal: Signal, max_skew_bps: float, min_confidence: float, degraded: bool = False
) -> tuple[float, float]:
    """Reservation-price skew (bps) and spread multiplier from a signal.

    The skew is expected move × confidence, capped at ±``max_skew_bps``;
    below ``min_confidence`` there is no skew and spreads widen by 25 %;
    a degraded source (model breaker open) widens by 50 %.
    """
    widen = 1.5 if degraded else 1.0
    if signal.confidence < min_confidence:
        return 0.0, max(widen, 1.25)
    skew = signal.expected_bps * signal.confidence
    skew = max(-max_skew_bps, min(max_skew_bps, skew))
    return skew, widen
