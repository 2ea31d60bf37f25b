"""From a prediction to quote adjustments (a pure helper for the strategy)."""

from __future__ import annotations

import math

from flashmm.types import Signal


def skew_from_signal(
    signal: Signal,
    max_skew_bps: float,
    min_confidence: float,
    breaker_open: bool,
    *,
    low_confidence_widen: float = 1.25,
    breaker_widen: float = 1.5,
    move_widen: float = 0.0,
) -> tuple[float, float]:
    """``(skew_bps, widen_factor)`` for a signal.

    - ``skew_bps = expected_bps * confidence``, capped at ``±max_skew_bps``
      (for the model: its up/down lean in the imbalance rule's formula, see
      :meth:`~flashmm.predict.onnx_model.OnnxPredictor.predict`):
      the amount to shift both quotes' centre (positive = up, we expect the
      mid to rise). 0 when the confidence is below ``min_confidence`` or the
      signal is not finite.
    - ``widen_factor >= 1`` multiplies the half-spread: 1 when confident;
      below ``min_confidence`` it rises linearly to ``low_confidence_widen``
      at confidence 0; when the breaker is open (the model failed, the
      signal comes from the rules) it is at least ``breaker_widen``.
    - ``move_widen``: the widen factor is further multiplied by
      ``1 + move_widen * p_move`` (the model's probability that the mid moves
      at all over its horizon; 0 for the rules, which do not know it).
    """
    conf = signal.confidence
    bps = signal.expected_bps
    if not (math.isfinite(conf) and math.isfinite(bps)):
        conf, bps = 0.0, 0.0
    conf = min(max(conf, 0.0), 1.0)
    if conf >= min_confidence:
        skew = max(-max_skew_bps, min(max_skew_bps, bps * conf))
        widen = 1.0
    else:
        skew = 0.0
        short = 1.0 - conf / min_confidence if min_confidence > 0 else 0.0
        widen = 1.0 + (low_confidence_widen - 1.0) * short
    pm = signal.p_move
    if move_widen > 0 and math.isfinite(pm) and pm > 0:
        widen *= 1.0 + move_widen * min(pm, 1.0)
    if breaker_open:
        widen = max(widen, breaker_widen)
    return skew, widen
