"""Prediction: ONNX model, rule fallback, ML circuit breaker and quote skew.

Light to import (no onnxruntime or scikit-learn here): the ONNX session is
created in :mod:`flashmm.predict.onnx_model`, training lives in
:mod:`flashmm.predict.train`.
"""

from __future__ import annotations

from flashmm.predict.breaker import GuardedPredictor, Predictor, load_predictor
from flashmm.predict.rules import RulePredictor
from flashmm.predict.settings import ModelSettings
from flashmm.predict.skew import skew_from_signal

__all__ = [
    "GuardedPredictor",
    "ModelSettings",
    "Predictor",
    "RulePredictor",
    "load_predictor",
    "skew_from_signal",
]
