"""Rule predictor: the fallback when no model runs.

Reads the feature vector only. The direction is the sign of the top-of-book
imbalance when it is strong enough; the expected move is the microprice
offset (the size-weighted fair price minus the mid, in bps), which is the
classic one-step mid predictor; the confidence grows with ``|imb_l1|``.
"""

from __future__ import annotations

import math

import numpy as np

from flashmm.features import IDX
from flashmm.types import Signal

_IMB = IDX["imb_l1"]
_MICRO = IDX["micro_offset_bps"]


class RulePredictor:
    """Microprice/imbalance rule with the predictor interface."""

    #: ``|imb_l1|`` that calls a direction (the compiled core reads it from here)
    min_imbalance = 0.2

    def __init__(self) -> None:
        self._last_lean = 0

    def predict(self, x: np.ndarray, ts_ns: int) -> Signal:
        imb = float(x[_IMB])
        micro = float(x[_MICRO])
        if not (math.isfinite(imb) and math.isfinite(micro)):
            self._last_lean = 0
            return Signal(0, 0.0, 0.0, "rules")
        self._last_lean = 1 if imb > 0 else (-1 if imb < 0 else 0)
        a = abs(imb)
        direction = self._last_lean if a >= self.min_imbalance else 0
        # |imb| 0 -> 0.5 (a coin), 1 -> ~0.75: roughly its hit rate on NEXO moves
        confidence = 0.5 + 0.25 * a if direction else 1.0 - a
        return Signal(direction, min(max(confidence, 0.0), 1.0), micro, "rules")

    def lean(self) -> int:
        return self._last_lean
