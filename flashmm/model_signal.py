"""The model-backed signal source: 64 features → guarded ONNX predictor.

Implements :class:`flashmm.signal.SignalSource` for the engine. Features
are updated on every book change and trade; the predictor (ONNX model
behind the ML circuit breaker, rules as fallback) runs when the engine
quotes. ``adjust`` turns the signal into the reservation skew and spread
multiplier, widening when the model is unsure or its breaker is open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flashmm.book import OrderBook
from flashmm.features import OnlineFeatures
from flashmm.marketdata import Trade
from flashmm.predict import GuardedPredictor, ModelSettings, load_predictor, skew_from_signal
from flashmm.types import MarketSpec, Signal

#: the model answers once its features have this much data since the book (re)synced;
#: before that its windows are mostly empty and it can read a quiet book as a -30 bps
#: move at full confidence, so the rules answer
WARMUP_NS = 30_000_000_000


class ModelSignal:
    __slots__ = ("_step", "features", "predictor", "settings")

    def __init__(
        self, spec: MarketSpec, predictor: GuardedPredictor, settings: ModelSettings
    ) -> None:
        if settings.native_features:
            from flashmm.native.features import NativeFeatures

            self.features: OnlineFeatures | NativeFeatures = NativeFeatures(float(spec.tick_size))
        else:
            self.features = OnlineFeatures(float(spec.tick_size))
        self.predictor = predictor
        self.predictor.market = spec.symbol
        self.settings = settings
        #: features, drift check and model in one core call (once the core runs them)
        self._step: Any = None

    def on_book(self, book: OrderBook, ts_ns: int) -> None:
        self.features.on_book(book, ts_ns)
        self.predictor.on_mid(book.mid, ts_ns)

    def on_trade(self, trade: Trade) -> None:
        self.features.on_trade(trade)

    def signal(self, ts_ns: int, mid: float) -> Signal:
        step = self._step
        if step:  # the same, in one call to the compiled core
            sig: Signal = step.signal(ts_ns)
            return sig
        f = self.features
        if step is None and self.settings.native_features:
            step = self._step = self._fuse()
            if step:
                return self.signal(ts_ns, mid)
        if not f.ready or ts_ns - f.t0 < WARMUP_NS:
            return self.predictor.rules.predict(f.vector(ts_ns), ts_ns)
        return self.predictor.predict(f.vector(ts_ns), ts_ns)

    def _fuse(self) -> Any:
        """A :class:`flashmm.native.signal.ModelStep` once the features run in the core
        (None until then; False for good when the model is not a native program)."""
        from flashmm.native.signal import ModelStep

        if not ModelStep.native_model(self.predictor):
            return False
        if not ModelStep.usable(self.features, self.predictor):
            return None
        return ModelStep(self.features, self.predictor, WARMUP_NS)  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        return {"features": self.features, "predictor": self.predictor, "settings": self.settings}

    def __setstate__(self, d: dict[str, Any]) -> None:
        for name, v in d.items():
            object.__setattr__(self, name, v)
        self._step = None  # fused again at the next signal

    def adjust(self, signal: Signal) -> tuple[float, float]:
        s = self.settings
        return skew_from_signal(
            signal,
            s.max_skew_bps,
            s.min_confidence,
            self.predictor.is_open,
            low_confidence_widen=s.low_confidence_widen,
            breaker_widen=s.breaker_widen,
            move_widen=s.move_widen,
        )

    def status(self) -> dict[str, object]:
        return self.predictor.status()


def make_signal_factory(
    model_cfg: Mapping[str, Any], *, sim_clock: bool = False
) -> Callable[[MarketSpec], ModelSignal]:
    """One :class:`ModelSignal` per market, each with its own breaker.
    ``sim_clock``: model latency is a modelled cost (see :func:`load_predictor`)."""
    settings = ModelSettings.model_validate(dict(model_cfg))

    def factory(spec: MarketSpec) -> ModelSignal:
        return ModelSignal(spec, load_predictor(settings, sim_clock=sim_clock), settings)

    return factory
