"""Online model: the shipped model, re-weighted per market from realised labels.

:class:`OnlineModel` wraps an :class:`~flashmm.predict.onnx_model.OnnxPredictor`.
Its up/down probability is ``P(up | move) = sigmoid(w0 * z + w1 * imb_l1)``
with ``z = log(p_up / p_down)`` of the shipped model and ``imb_l1`` the
top-of-book imbalance (the rule's input). It starts at ``w = (1, 0)``: exactly
the shipped model. Every model call that the breaker scores (the mid moved
by the horizon) is a realised label; :meth:`OnlineModel.learn` takes one
step of logistic-loss SGD (``lr``) with an L2 pull (``l2``) back to the start,
so in a market where the rule is better the weight moves to the imbalance,
and where the model is better it stays. ``p_move`` stays the shipped
model's. The signal is read exactly as the shipped model's
(:meth:`~flashmm.predict.onnx_model.OnnxPredictor.predict`).

One per market (each :class:`~flashmm.model_signal.ModelSignal` loads its own),
behind the same ML breaker; the breaker's live hit rate and calibration
report it. Nothing is persisted: a restart starts again from the shipped
model. Replayed offline on the walk-forward windows (``lr`` 0.02, ``l2``
0.001) it keeps NEXO at +2.4 points over the rule and moves ETH spot, ETH and
BTC futures from -4 to -7 points to -0.3 to -2.5 (``docs/prediction.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flashmm.features import IDX
from flashmm.types import Signal

_IMB = IDX["imb_l1"]
_SPREAD = IDX["spread_bps"]
_Z_CAP = 20.0


def _sigmoid(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


class OnlineModel:
    """A per-market online re-weighting of the shipped model (see the module doc)."""

    source = "onnx"

    def __init__(self, base: Any, *, lr: float = 0.02, l2: float = 0.001) -> None:
        self.base = base
        self.lr = float(lr)
        self.l2 = float(l2)
        self.w0 = (1.0, 0.0)
        self.w = [1.0, 0.0]
        self.updates = 0
        self.last_token: tuple[float, float] | None = None
        self._lean = 0
        # what the breaker and the status read from a model
        self.mean = base.mean
        self.std = base.std
        self.horizon = base.horizon
        self.horizon_ns = base.horizon_ns
        self.path = base.path

    def predict(self, x: np.ndarray, ts_ns: int) -> Signal:
        base = self.base
        base.predict(x, ts_ns)  # fills base.last_probs
        p = base.last_probs
        down, up = float(p[0]), float(p[2])
        pm = up + down
        z = math.log(max(up, 1e-12) / max(down, 1e-12))
        z = max(-_Z_CAP, min(_Z_CAP, z))
        imb = float(x[_IMB])
        if not math.isfinite(imb):
            imb = 0.0
        self.last_token = (z, imb)
        q = _sigmoid(self.w[0] * z + self.w[1] * imb)
        lean = 2.0 * q - 1.0
        self._lean = 1 if lean > 0 else (-1 if lean < 0 else 0)
        direction = self._lean if abs(lean) >= base.min_lean else 0
        expected = base.last_bps if base.use_regressor else lean * float(x[_SPREAD]) * 0.5
        return Signal(direction, 0.5 + 0.5 * abs(lean), expected, "onnx", pm)

    def lean(self) -> int:
        return self._lean

    def learn(self, token: tuple[float, float], up: bool) -> None:
        """One SGD step on a realised label: the mid moved up (True) or down."""
        z, imb = token
        w = self.w
        g = _sigmoid(w[0] * z + w[1] * imb) - (1.0 if up else 0.0)
        lr, l2 = self.lr, self.l2
        w[0] -= lr * (g * z + l2 * (w[0] - self.w0[0]))
        w[1] -= lr * (g * imb + l2 * (w[1] - self.w0[1]))
        self.updates += 1

    def status(self) -> dict[str, Any]:
        return {
            "weights": {"model_log_odds": round(self.w[0], 4), "imb_l1": round(self.w[1], 4)},
            "updates": self.updates,
            "lr": self.lr,
        }
