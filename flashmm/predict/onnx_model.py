"""ONNX inference for the direction/move model.

A model file has one input ``features`` float32 ``[N, 64]`` and two outputs
``probabilities`` float32 ``[N, 3]`` (down, flat, up) and ``expected_bps``
float32 ``[N, 1]``. Standardisation by the training mean/std is part of
the graph; the same mean/std are also stored in the metadata, where the
circuit breaker uses them to detect feature drift. Metadata
(``metadata_props``, every value JSON):

``flashmm_schema`` (1), ``feature_names``, ``feature_mean``,
``feature_std``, ``horizon``, ``horizon_ns``, ``flat_ticks``,
``sample_every_ms``, ``train_files`` (name + sha256), ``versions``,
``created``, ``metrics``, ``model_kind``.

:class:`OnnxPredictor` checks all of that at load and raises
:class:`~flashmm.errors.ModelError` naming what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from flashmm.errors import ModelError
from flashmm.features import FEATURE_NAMES, IDX, N_FEATURES
from flashmm.types import Signal

INPUT_NAME = "features"
PROBS_NAME = "probabilities"
BPS_NAME = "expected_bps"
#: the native kernel is used when it agrees with onnxruntime within this on the probe batch
NATIVE_TOL = 1e-4
PROBE_ROWS = 255
_SPREAD = IDX["spread_bps"]
REQUIRED_META = (
    "feature_names",
    "feature_mean",
    "feature_std",
    "horizon",
    "horizon_ns",
    "flat_ticks",
)


def _dim_ok(dim: Any, want: int) -> bool:
    """A fixed dimension must equal ``want``; a symbolic one is accepted."""
    return not isinstance(dim, int) or dim == want


def read_metadata(raw: dict[str, str], where: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError):
            meta[k] = v
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ModelError(f"{where}: not a FlashMM model, metadata lacks {', '.join(missing)}")
    names = meta["feature_names"]
    if list(names) != list(FEATURE_NAMES):
        if not isinstance(names, list) or len(names) != N_FEATURES:
            n = len(names) if isinstance(names, list) else "?"
            raise ModelError(
                f"{where}: model has {n} feature names, this FlashMM computes {N_FEATURES}"
            )
        diff = next(i for i, (a, b) in enumerate(zip(names, FEATURE_NAMES, strict=True)) if a != b)
        raise ModelError(
            f"{where}: feature names differ from this FlashMM at #{diff} "
            f"({names[diff]!r} vs {FEATURE_NAMES[diff]!r}); retrain the model"
        )
    for k in ("feature_mean", "feature_std"):
        v = meta[k]
        if not isinstance(v, list) or len(v) != N_FEATURES:
            raise ModelError(f"{where}: metadata {k} must be a list of {N_FEATURES} numbers")
    return meta


def _check_key(path: Path) -> str:
    """What the probe check depends on: the model's bytes, the lowering code and the
    versions of onnxruntime and numba."""
    import hashlib
    from importlib.metadata import version

    import flashmm.predict.native as nat

    h = hashlib.sha256(path.read_bytes())
    h.update(Path(nat.__file__).read_bytes())
    for pkg in ("onnxruntime", "numba", "numpy"):
        try:
            h.update(f"{pkg}={version(pkg)};".encode())
        except Exception:  # not installed: part of the key as such
            h.update(f"{pkg}=?;".encode())
    h.update(f"{PROBE_ROWS}".encode())
    return h.hexdigest()


def _check_file(path: Path) -> Path:
    from flashmm.feeds.cache import default_cache_dir

    return default_cache_dir() / f"native-check-{_check_key(path)}.json"


def _cached_check(path: Path) -> float | None:
    """The probe check's max abs difference from an earlier load of the same model."""
    try:
        return float(json.loads(_check_file(path).read_text())["max_abs_diff"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_check(path: Path, diff: float) -> None:
    import tempfile

    try:
        f = _check_file(path)
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"model": path.name, "max_abs_diff": diff}, fh)
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only home: the check runs again next time


class OnnxPredictor:
    """An onnxruntime session on one model, single-threaded, with a reused input buffer."""

    def __init__(
        self,
        path: str | Path,
        *,
        min_lean: float = 0.2,
        use_regressor: bool = False,
        native: bool = True,
        native_tol: float = NATIVE_TOL,
    ) -> None:
        import onnxruntime as ort

        p = Path(path)
        self.path = p
        if not p.is_file():
            raise ModelError(f"model file not found: {p}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(p), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{p}: not a loadable ONNX model ({first[:200]})") from None
        self._check_io()
        self.meta = read_metadata(dict(self.session.get_modelmeta().custom_metadata_map), str(p))
        self.mean = np.asarray(self.meta["feature_mean"], dtype=np.float64)
        std = np.asarray(self.meta["feature_std"], dtype=np.float64)
        self.std = np.where(std > 1e-12, std, 1.0)
        self.horizon = str(self.meta["horizon"])
        self.horizon_ns = int(self.meta["horizon_ns"])
        self.flat_ticks = float(self.meta["flat_ticks"])
        self._x = np.zeros((1, N_FEATURES), dtype=np.float32)
        self._outs = [PROBS_NAME, BPS_NAME]
        self.last_probs = np.array([0.0, 1.0, 0.0])
        self.last_bps = 0.0
        self.min_lean = min_lean
        self.use_regressor = use_regressor
        # a trial run: shapes of what comes out
        try:
            probs, bps = self.session.run(self._outs, {INPUT_NAME: self._x})
        except Exception as exc:
            raise ModelError(f"{p}: model fails on a zero input ({str(exc)[:200]})") from None
        if np.shape(probs) != (1, 3) or np.shape(bps) != (1, 1):
            raise ModelError(
                f"{p}: outputs have shapes {np.shape(probs)} and {np.shape(bps)}, "
                "want probabilities [N,3] and expected_bps [N,1]"
            )
        #: "native" (the graph lowered to a compiled kernel) or "onnxruntime"
        self.engine = "onnxruntime"
        #: max abs difference native vs onnxruntime on the probe batch (None: not compared)
        self.native_max_diff: float | None = None
        #: True when the probe check's result was read from the cache (same model bytes,
        #: lowering code and runtime versions)
        self.native_check_cached = False
        #: why the native path is not used ("" when it is)
        self.native_note = "native evaluation off" if not native else ""
        self._native: Any = None  # the program in use
        self._prog: Any = None  # the checked program, when there is one
        if native:
            self._try_native(native_tol)

    def _try_native(self, tol: float) -> None:
        """Lower the graph to the native kernel and keep it only when it agrees with
        onnxruntime on a probe batch (zeros, the training mean, and mean + k * std
        rows for k up to 4) within ``tol`` (max absolute difference of any output)."""
        from flashmm.predict.native import NativeProgram, Unsupported

        try:
            prog = NativeProgram(self.path, INPUT_NAME, N_FEATURES)
            if PROBS_NAME not in prog.outputs or BPS_NAME not in prog.outputs:
                raise Unsupported("outputs not found")
            diff = _cached_check(self.path)
            self.native_check_cached = diff is not None
            if diff is None:
                rng = np.random.default_rng(12)
                k = np.linspace(0, 4, PROBE_ROWS)[:, None]
                z = rng.standard_normal((PROBE_ROWS, N_FEATURES)) * k
                X = np.vstack([np.zeros(N_FEATURES), self.mean + z * self.std]).astype(np.float32)
                ref_p, ref_b = self.run_batch(X)
                got = prog.run_rows(X)
                diff = max(
                    float(np.max(np.abs(got[PROBS_NAME] - ref_p))),
                    float(np.max(np.abs(got[BPS_NAME].reshape(-1) - ref_b))),
                )
                _store_check(self.path, diff)
        except Unsupported as exc:
            self.native_note = f"not native: {exc}"
            logger.warning("{}: evaluated by onnxruntime ({})", self.path, self.native_note)
            return
        self.native_max_diff = diff
        if not diff <= tol:
            self.native_note = f"native differs from onnxruntime by {diff:.3g} > {tol:g}"
            logger.warning("{}: evaluated by onnxruntime ({})", self.path, self.native_note)
            return
        self._native = self._prog = prog
        # the kernel's machine code loads (or compiles) now, not in the first decision,
        # where the ML breaker would time it
        prog.run(np.zeros(N_FEATURES, dtype=np.float32))
        self._pofs = prog.outputs[PROBS_NAME][0]
        self._bofs = prog.outputs[BPS_NAME][0]
        self.engine = "native"

    def set_engine(self, engine: str) -> None:
        """Evaluate with ``"native"`` (when the graph passed its check) or ``"onnxruntime"``."""
        if engine not in ("native", "onnxruntime"):
            raise ModelError(f"unknown model engine {engine!r}")
        if engine == "native" and self._prog is None:
            raise ModelError(f"{self.path}: no native evaluation ({self.native_note})")
        self._native = self._prog if engine == "native" else None
        self.engine = engine

    def _check_io(self) -> None:
        where = str(self.path)
        ins = self.session.get_inputs()
        if len(ins) != 1:
            raise ModelError(
                f"{where}: model has {len(ins)} inputs, want 1 ({INPUT_NAME} [N,{N_FEATURES}])"
            )
        i = ins[0]
        if i.name != INPUT_NAME:
            raise ModelError(f"{where}: input is named {i.name!r}, want {INPUT_NAME!r}")
        if i.type != "tensor(float)":
            raise ModelError(f"{where}: input {INPUT_NAME} is {i.type}, want tensor(float)")
        if len(i.shape) != 2 or not _dim_ok(i.shape[1], N_FEATURES):
            raise ModelError(f"{where}: input shape {i.shape}, want [N,{N_FEATURES}]")
        outs = {o.name: o for o in self.session.get_outputs()}
        for name, width in ((PROBS_NAME, 3), (BPS_NAME, 1)):
            o = outs.get(name)
            if o is None:
                raise ModelError(f"{where}: no output named {name!r} (has {', '.join(outs)})")
            if o.type != "tensor(float)":
                raise ModelError(f"{where}: output {name} is {o.type}, want tensor(float)")
            if len(o.shape) != 2 or not _dim_ok(o.shape[1], width):
                raise ModelError(f"{where}: output {name} shape {o.shape}, want [N,{width}]")

    # --- inference --------------------------------------------------------
    def run_batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n, 3) and expected bps (n,) for a matrix of features."""
        Xf = np.ascontiguousarray(X, dtype=np.float32)
        probs, bps = self.session.run(self._outs, {INPUT_NAME: Xf})
        return np.asarray(probs), np.asarray(bps).reshape(-1)

    def predict(self, x: np.ndarray, ts_ns: int) -> Signal:
        """Signal for one feature vector, read like the imbalance rule.

        ``lean = (p_up - p_down) / (p_up + p_down)`` (in -1..1, the model's
        up/down call given a move) takes the place of the top-of-book
        imbalance in the rule's formula: ``direction = sign(lean)`` when
        ``|lean| >= min_lean``, ``expected_bps = lean * spread_bps / 2`` (the
        microprice offset with ``lean`` for the imbalance) and
        ``confidence = max(p_up, p_down) / (p_up + p_down)``, the up/down
        confidence (never the probability of "flat"). ``p_move = p_up +
        p_down``. With ``use_regressor`` the move regressor's output is
        ``expected_bps`` instead.
        """
        # float32 first, as onnxruntime sees it, so both paths read the same input
        self._x[0] = x
        nat = self._native
        if nat is not None:
            w = nat.run(self._x[0])
            o = self._pofs
            down, up = float(w[o]), float(w[o + 2])
            self.last_probs = np.array((down, float(w[o + 1]), up))
            self.last_bps = float(w[self._bofs])
        else:
            probs, bps = self.session.run(self._outs, {INPUT_NAME: self._x})
            p = probs[0]
            self.last_probs = p
            self.last_bps = float(bps[0, 0])
            down, up = float(p[0]), float(p[2])
        pm = up + down
        lean = (up - down) / pm if pm > 1e-12 else 0.0
        direction = (1 if lean > 0 else -1) if abs(lean) >= self.min_lean else 0
        expected = self.last_bps if self.use_regressor else lean * float(x[_SPREAD]) * 0.5
        return Signal(direction, 0.5 + 0.5 * abs(lean), expected, "onnx", pm)

    def lean(self) -> int:
        """Up/down call of the last prediction (``sign(p_up - p_down)``), for hit-rate scoring."""
        p = self.last_probs
        d = float(p[2]) - float(p[0])
        return 1 if d > 0 else (-1 if d < 0 else 0)

    def describe(self) -> dict[str, Any]:
        s = self.session
        return {
            "path": str(self.path),
            "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in s.get_inputs()],
            "outputs": [
                {"name": o.name, "type": o.type, "shape": o.shape} for o in s.get_outputs()
            ],
            "engine": self.engine,
            "native_max_diff": self.native_max_diff,
            "native_note": self.native_note,
            "horizon": self.horizon,
            "flat_ticks": self.flat_ticks,
            **{k: self.meta.get(k) for k in ("model_kind", "created", "train_files", "versions")},
            "metrics": self.meta.get("metrics"),
        }
