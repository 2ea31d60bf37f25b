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
report it. :class:`OnlineStore` keeps each market's weights in a small JSON
file beside the journal (``<journal>.online.<market>.json``), read at start
and written by the operations loop (never on the decision path) and at
stop, so a restart continues learning. A file written for another model
file or horizon is ignored with a warning (the weights start
again from the shipped model). Replayed offline on the walk-forward windows (``lr`` 0.02, ``l2``
0.001) over the direction model it keeps the calls and learns each market's
confidence: up/down calibration error 2.5-5.3 points against 3.8-7.8 for the
fixed model (``docs/prediction.md``).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

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

    def identity(self) -> dict[str, Any]:
        """What the weights belong to: the base model file, its creation stamp and horizon."""
        meta = getattr(self.base, "meta", {}) or {}
        return {
            "model": Path(str(self.path)).name,
            "model_created": str(meta.get("created", "")),
            "horizon_ns": int(self.horizon_ns),
        }

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, **self.identity(), "w": list(self.w), "updates": self.updates}

    def restore(self, state: dict[str, Any]) -> str:
        """Take saved weights; returns "" or why they were not taken."""
        if state.get("version") != 1:
            return f"unknown version {state.get('version')!r}"
        for k, v in self.identity().items():
            if state.get(k) != v:
                return f"saved for {k} {state.get(k)!r}, this model has {v!r}"
        w = state.get("w")
        if not (
            isinstance(w, list)
            and len(w) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in w)
        ):
            return "bad weights"
        self.w = [float(w[0]), float(w[1])]
        self.updates = int(state.get("updates", 0))
        return ""

    def status(self) -> dict[str, Any]:
        return {
            "weights": {"model_log_odds": round(self.w[0], 4), "imb_l1": round(self.w[1], 4)},
            "updates": self.updates,
            "lr": self.lr,
        }


def _slug(symbol: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", symbol).strip("-").lower() or "market"


class OnlineStore:
    """Per-market online weights in JSON files beside the journal (see the module doc).

    ``models`` maps a market symbol to its :class:`OnlineModel`; the file of
    ``SEI/USDC`` for the journal ``paper.sqlite`` in ``folder`` is
    ``folder/paper.online.sei-usdc.json``.
    """

    def __init__(self, folder: str | Path, name: str, models: dict[str, OnlineModel]) -> None:
        self.folder = Path(folder)
        self.name = name
        self.models = models
        self._saved: dict[str, int] = {}

    @classmethod
    def for_engine(cls, engine: Any, folder: str | Path, name: str) -> OnlineStore:
        """The online models of an engine's markets (none when ``model.online`` is off)."""
        models = {s: m for s, m in engine.learning_models().items() if isinstance(m, OnlineModel)}
        return cls(folder, name, models)

    def path(self, symbol: str) -> Path:
        return self.folder / f"{self.name}.online.{_slug(symbol)}.json"

    def load(self) -> dict[str, str]:
        """Read every market's file; per market "loaded", "none" or why it was ignored."""
        out = {}
        for sym, model in self.models.items():
            p = self.path(sym)
            if not p.is_file():
                out[sym] = "none"
                self._saved[sym] = model.updates
                continue
            try:
                state = json.loads(p.read_text())
                why = model.restore(state) if isinstance(state, dict) else "not a JSON object"
            except (OSError, ValueError) as exc:
                why = f"unreadable ({exc})"
            if why:
                logger.warning("online model {}: {} ignored: {}", sym, p, why)
                out[sym] = f"ignored: {why}"
            else:
                logger.info(
                    "online model {}: continues from {} ({} updates)", sym, p, model.updates
                )
                out[sym] = "loaded"
            self._saved[sym] = model.updates
        return out

    def save(self, force: bool = False) -> int:
        """Write the markets that learnt since the last write (all with ``force``; atomic)."""
        n = 0
        for sym, model in self.models.items():
            if not force and self._saved.get(sym) == model.updates:
                continue
            p = self.path(sym)
            tmp = p.with_suffix(".json.tmp")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(model.to_state()))
                os.replace(tmp, p)
            except OSError as exc:
                logger.warning("online model {}: cannot write {}: {}", sym, p, exc)
                continue
            self._saved[sym] = model.updates
            n += 1
        return n
