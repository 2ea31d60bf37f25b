"""The model signal's per-decision work in one call to the compiled core.

:class:`ModelStep` serves :meth:`flashmm.model_signal.ModelSignal.signal` when the
features run in the core (:class:`~flashmm.native.features.NativeFeatures`) and
the model is a native program (:class:`~flashmm.predict.onnx_model.OnnxPredictor`
with ``engine == "native"``): one ``model_step`` kernel call computes the 64
features, the ML breaker's drift count and the model's signal, and the breaker
(:class:`~flashmm.predict.breaker.GuardedPredictor`) then runs its usual checks
on that answer (:class:`~flashmm.predict.breaker.Computed`) instead of calling
the model itself: the same signals, the same breaker states. On a wall clock the
breaker's latency for the call is this one kernel call's (features, drift check
and model), an upper bound of the model's own.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from flashmm.native.features import NativeFeatures
from flashmm.predict.breaker import GuardedPredictor
from flashmm.predict.onnx_model import OnnxPredictor
from flashmm.types import Signal

__all__ = ["ModelStep"]


class ModelStep:
    """One market's fused features + drift check + model call (see the module)."""

    __slots__ = (
        "_args",
        "_drift",
        "_sig",
        "_ts",
        "drifted",
        "fst",
        "guard",
        "io",
        "k",
        "kernel",
        "lat_us",
        "model",
        "x",
    )

    def __init__(self, features: NativeFeatures, guard: GuardedPredictor, warmup_ns: int) -> None:
        core = features._core
        model = guard.model
        assert core is not None and isinstance(model, OnnxPredictor)
        prog = model._native
        k = self.k = core.k
        ist, fst = core.ist, core.fst
        ist[k.I_POFS] = prog.outputs["probabilities"][0]
        ist[k.I_BOFS] = prog.outputs["expected_bps"][0]
        ist[k.I_USE_REG] = int(model.use_regressor)
        fst[k.F_MIN_LEAN] = model.min_lean
        fst[k.F_DRIFT_Z] = guard.settings.drift_z_limit
        ist[k.I_WARMUP_NS] = warmup_ns
        if guard._mean is None or guard._inv_std is None:
            mean = inv_std = np.zeros(0)
        else:
            mean = np.ascontiguousarray(guard._mean, dtype=np.float64)
            inv_std = np.ascontiguousarray(guard._inv_std, dtype=np.float64)
        self.guard = guard
        self.model = model
        self.fst = fst
        self.io = core.io
        self.x = core.x
        self.kernel: Any = k.model_step
        # (the step's machine code is loaded: a step exists only once the core runs,
        # after flashmm.native.warm, which calls it with arguments of these types)
        self._args = (ist, fst, prog.prog, prog.params, prog.work, core.x, mean, inv_std, core.io)
        self.drifted = 0
        self.lat_us = 0.0
        self._ts, self._drift, self._sig = k.IO_TS, k.IO_DRIFTED, k.F_SIG_DIR
        # the signal slots commit() reads, in one run
        assert tuple(k.F_SIG_DIR + i for i in (3, 7, 9, 10)) == (
            k.F_SIG_PMOVE,
            k.F_P_DOWN,
            k.F_P_UP,
            k.F_MODEL_BPS,
        )

    @staticmethod
    def native_model(guard: GuardedPredictor) -> bool:
        """True when ``guard``'s model is a native program (not onnxruntime, not online)."""
        model = guard.model
        return type(model) is OnnxPredictor and model._native is not None

    @staticmethod
    def usable(features: object, guard: GuardedPredictor) -> bool:
        """True when ``features`` run in the core and ``guard``'s model is a native program."""
        return (
            isinstance(features, NativeFeatures)
            and features.native
            and ModelStep.native_model(guard)
        )

    def signal(self, ts_ns: int) -> Signal:
        """The signal at ``ts_ns``: the rules' while the features warm up, else the
        breaker's (the model's, or the rules' when it is open)."""
        io = self.io
        io[self._ts] = ts_ns
        t0 = time.perf_counter_ns()
        ran = self.kernel(*self._args)
        self.lat_us = (time.perf_counter_ns() - t0) / 1e3
        if not ran:
            return self.guard.rules.predict(self.x, ts_ns)
        self.drifted = int(io[self._drift])
        return self.guard.predict(self.x, ts_ns, self)

    def commit(self) -> Signal:
        """The model's signal; its last probabilities and move estimate set as
        :meth:`OnnxPredictor.predict` sets them."""
        f = self.fst
        o = self._sig
        d, conf, bps, pm = f[o : o + 4].tolist()
        m = self.model
        m.last_probs = f[o + 7 : o + 10].copy()  # down, flat, up
        m.last_bps = float(f[o + 10])
        return Signal(int(d), conf, bps, "onnx", pm)
