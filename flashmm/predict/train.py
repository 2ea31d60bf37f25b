"""Training of the direction/move model and its export to one ONNX file.

Pipeline (all in :func:`train`):

1. Features: :func:`flashmm.features.batch_features` over the recordings
   (files of one symbol, chained), sampled every ``sample_every_ms``.
2. Labels: :func:`flashmm.predict.labels.make_labels` at ``horizon``.
3. Time-ordered split: the first ``train_frac`` of samples train, the rest
   test, with a gap of one horizon between them so no training label looks
   into the test period. Never shuffled across time.
4. Direction: standardiser + multinomial logistic regression (scikit-learn)
   on all moved samples and a ``keep_flat`` fraction of the flat ones (the
   mid is flat >95% of the time at 1 s on NEXO); the flat class intercept is
   then corrected by ``-log(keep_flat)`` so probabilities match the true
   class frequencies again.
5. Move: standardiser + ridge regression of the move in bps on all
   training samples.
6. Export: both pipelines converted with skl2onnx and joined into one graph
   with input ``features`` and outputs ``probabilities``/``expected_bps``;
   the standardisation is inside the graph. Metadata: see
   :mod:`flashmm.predict.onnx_model`.
7. Metrics on the test part, computed by running the exported file with
   onnxruntime (so they describe what ships).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flashmm.errors import DataError, UserInputError
from flashmm.features import FEATURE_NAMES, IDX, N_FEATURES, batch_features
from flashmm.predict.labels import DEFAULT_FLAT_TICKS, DOWN, FLAT, UP, make_labels, parse_horizon

KNOWN_MARKETS: dict[str, tuple[float, float]] = {
    "nexousdt": (0.001, 0.01),
    "ethusdt": (0.01, 0.0001),
}
CALIBRATION_BINS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

Progress = Callable[[str], None]


@dataclass
class Dataset:
    symbol: str
    tick: float
    lot: float
    files: list[Path]
    ts_ns: np.ndarray
    X: np.ndarray
    mid: np.ndarray


@dataclass
class TrainResult:
    out_path: Path
    metrics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dataset(
    paths: Sequence[str | Path],
    *,
    tick: float | None = None,
    lot: float | None = None,
    sample_every_ms: int = 100,
) -> Dataset:
    """Features of recordings of one symbol (files chained in time order)."""
    from flashmm.feeds.replay import check_files, group_files

    files = check_files(paths)
    groups = group_files(files)
    if len(groups) != 1:
        raise DataError(
            f"train on one symbol at a time; the files hold {', '.join(sorted(groups))}"
        )
    symbol, ordered = next(iter(groups.items()))
    if tick is None or lot is None:
        known = KNOWN_MARKETS.get(symbol)
        if known is None:
            raise UserInputError(
                f"unknown market {symbol}: give its tick and lot size (--tick, --lot)"
            )
        tick = known[0] if tick is None else tick
        lot = known[1] if lot is None else lot
    ts, X, mid = batch_features(ordered, symbol, tick, lot, sample_every_ms)
    if len(ts) < 100:
        raise DataError(f"only {len(ts)} usable samples in {', '.join(p.name for p in ordered)}")
    return Dataset(symbol, tick, lot, list(ordered), ts, X, mid)


# --- metrics -----------------------------------------------------------------


def _hit_rate(pred: np.ndarray, actual: np.ndarray) -> float:
    """Share of samples where sign(pred) == actual; a 0 prediction counts half."""
    if len(actual) == 0:
        return float("nan")
    s = np.sign(pred)
    return float(((s == actual).sum() + 0.5 * (s == 0).sum()) / len(actual))


def evaluate(
    probs: np.ndarray, bps_pred: np.ndarray, X: np.ndarray, y: np.ndarray, bps_true: np.ndarray
) -> dict[str, Any]:
    """Metrics of a model's outputs on labelled samples.

    Direction is scored on samples where the mid moved: the model's call is
    ``sign(p_up - p_down)``, the baseline's ``sign(imb_l1)`` (top-of-book
    imbalance, the same sign as the microprice offset), on the same samples.
    """
    moved = y != FLAT
    actual = np.where(y[moved] == UP, 1, -1)
    model_call = probs[moved, UP] - probs[moved, DOWN]
    base_call = X[moved, IDX["imb_l1"]]
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    p /= p.sum(axis=1, keepdims=True)
    log_loss = float(-np.mean(np.log(p[np.arange(len(y)), y]))) if len(y) else float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    calib = []
    for lo, hi in itertools.pairwise(CALIBRATION_BINS):
        sel = (conf >= lo) & ((conf < hi) if hi < 1.0 else (conf <= hi))
        n = int(sel.sum())
        calib.append(
            {
                "bin": f"{lo:.2f}-{hi:.2f}",
                "n": n,
                "mean_confidence": float(conf[sel].mean()) if n else None,
                "observed": float(correct[sel].mean()) if n else None,
            }
        )
    # confidence of the up/down call on moved samples
    dir_conf = np.maximum(probs[moved, UP], probs[moved, DOWN]) / np.maximum(
        probs[moved, UP] + probs[moved, DOWN], 1e-12
    )
    hits = np.sign(model_call) == actual
    dir_calib = []
    for lo, hi in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        sel = (dir_conf >= lo) & (dir_conf < hi)
        n = int(sel.sum())
        dir_calib.append(
            {
                "bin": f"{lo:.1f}-{min(hi, 1.0):.1f}",
                "n": n,
                "mean_confidence": float(dir_conf[sel].mean()) if n else None,
                "observed": float(hits[sel].mean()) if n else None,
            }
        )
    counts = np.bincount(y, minlength=3)
    return {
        "samples": len(y),
        "moved_samples": int(moved.sum()),
        "class_share": {
            c: float(counts[i] / max(len(y), 1)) for i, c in enumerate(("down", "flat", "up"))
        },
        "hit_rate_moved": _hit_rate(model_call, actual),
        "baseline_hit_rate_moved": _hit_rate(base_call, actual),
        "baseline": "sign(imb_l1)",
        "accuracy": float(correct.mean()) if len(y) else float("nan"),
        "log_loss": log_loss,
        "calibration": calib,
        "direction_calibration_moved": dir_calib,
        "bps_mae": float(np.mean(np.abs(bps_pred - bps_true))) if len(y) else float("nan"),
        "bps_mae_zero": float(np.mean(np.abs(bps_true))) if len(y) else float("nan"),
        "bps_rmse": float(np.sqrt(np.mean((bps_pred - bps_true) ** 2))) if len(y) else float("nan"),
        "bps_rmse_zero": float(np.sqrt(np.mean(bps_true**2))) if len(y) else float("nan"),
        "bps_corr": float(np.corrcoef(bps_pred, bps_true)[0, 1])
        if len(y) > 2 and np.std(bps_pred) > 0 and np.std(bps_true) > 0
        else float("nan"),
        "bps_mae_moved": float(np.mean(np.abs(bps_pred[moved] - bps_true[moved])))
        if moved.any()
        else float("nan"),
    }


# --- fit and export ------------------------------------------------------------


def fit_models(
    X: np.ndarray,
    y: np.ndarray,
    bps: np.ndarray,
    *,
    keep_flat: float = 0.05,
    C: float = 1.0,
    alpha: float = 10.0,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Direction classifier and bps regressor (scikit-learn pipelines)."""

    from threadpoolctl import threadpool_limits

    if len(np.unique(y)) < 3:
        raise DataError("training data needs up, down and flat samples; use more data")
    # one BLAS thread: these fits are small, and spinning BLAS threads on a busy
    # machine make them 20-50x slower
    with threadpool_limits(limits=1):
        return _fit(X, y, bps, keep_flat=keep_flat, C=C, alpha=alpha, seed=seed)


def _fit(
    X: np.ndarray,
    y: np.ndarray,
    bps: np.ndarray,
    *,
    keep_flat: float,
    C: float,
    alpha: float,
    seed: int,
) -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    keep = (y != FLAT) | (rng.random(len(y)) < keep_flat)
    clf = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(C=C, max_iter=1000))])
    clf.fit(X[keep], y[keep])
    lr = clf.named_steps["lr"]
    if keep_flat < 1.0:
        lr.intercept_[list(lr.classes_).index(FLAT)] -= np.log(keep_flat)
    reg = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=alpha))])
    reg.fit(X, bps)
    return clf, reg


def export_onnx(clf: Any, reg: Any, metadata: dict[str, Any]) -> Any:
    """One ONNX model: input ``features``, outputs ``probabilities`` and ``expected_bps``."""
    import onnx
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from flashmm.predict.onnx_model import BPS_NAME, INPUT_NAME, PROBS_NAME

    types = [(INPUT_NAME, FloatTensorType([None, N_FEATURES]))]
    opset = {"": 17, "ai.onnx.ml": 3}
    m1 = convert_sklearn(
        clf,
        initial_types=types,
        options={id(clf.steps[-1][1]): {"zipmap": False}},
        target_opset=opset,
    )
    m2 = convert_sklearn(reg, initial_types=types, target_opset=opset)
    m1 = onnx.compose.add_prefix(m1, "dir_")
    m2 = onnx.compose.add_prefix(m2, "bps_")
    g1, g2 = m1.graph, m2.graph
    nodes = []
    for g, pre in ((g1, "dir_"), (g2, "bps_")):
        for node in g.node:
            for k, name in enumerate(node.input):
                if name == pre + INPUT_NAME:
                    node.input[k] = INPUT_NAME
            nodes.append(node)
    prob_out = next(o.name for o in g1.output if o.name.endswith("probabilities"))
    bps_out = g2.output[0].name
    nodes.append(helper.make_node("Identity", [prob_out], [PROBS_NAME], name="out_probabilities"))
    nodes.append(helper.make_node("Reshape", [bps_out, "bps_shape"], ["bps_2d"], name="bps_2d"))
    nodes.append(helper.make_node("Cast", ["bps_2d"], [BPS_NAME], to=onnx.TensorProto.FLOAT))
    shape = helper.make_tensor("bps_shape", onnx.TensorProto.INT64, [2], [-1, 1])
    graph = helper.make_graph(
        nodes,
        "flashmm_predictor",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [None, N_FEATURES])],
        [
            helper.make_tensor_value_info(PROBS_NAME, onnx.TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info(BPS_NAME, onnx.TensorProto.FLOAT, [None, 1]),
        ],
        initializer=[*g1.initializer, *g2.initializer, shape],
    )
    ops: dict[str, int] = {}
    for m in (m1, m2):
        for o in m.opset_import:
            ops[o.domain] = max(ops.get(o.domain, 0), o.version)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(ops.items())],
        producer_name="flashmm",
        ir_version=m1.ir_version,
    )
    model.doc_string = "FlashMM mid-price direction and move model"
    helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(model)
    return model


def _versions() -> dict[str, str]:
    import platform

    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def train(
    data_paths: Sequence[str | Path],
    out_path: str | Path,
    horizon: str = "1s",
    *,
    tick: float | None = None,
    lot: float | None = None,
    sample_every_ms: int = 100,
    flat_ticks: float = DEFAULT_FLAT_TICKS,
    train_frac: float = 0.7,
    keep_flat: float = 0.05,
    C: float = 1.0,
    max_samples: int | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train on ``data_paths`` and write the ONNX model to ``out_path``.

    ``max_samples`` keeps only the first samples (quick tests).
    """
    import onnx

    from flashmm.predict.onnx_model import OnnxPredictor

    say = progress or (lambda _m: None)
    horizon_ns = parse_horizon(horizon)
    if not 0.1 <= train_frac <= 0.95:
        raise UserInputError(f"train_frac must be within 0.1..0.95, was {train_frac}")
    out = Path(out_path)
    if out.suffix != ".onnx":
        raise UserInputError(f"--out must end in .onnx: {out}")
    secs: dict[str, float] = {}

    t0 = time.perf_counter()
    say("computing features")
    ds = load_dataset(data_paths, tick=tick, lot=lot, sample_every_ms=sample_every_ms)
    ts, X, mid = ds.ts_ns, ds.X, ds.mid
    if max_samples is not None:
        ts, X, mid = ts[:max_samples], X[:max_samples], mid[:max_samples]
    secs["features"] = time.perf_counter() - t0

    y, bps, valid = make_labels(ts, mid, horizon_ns, flat_ticks)
    idx = np.flatnonzero(valid)
    cut = int(len(idx) * train_frac)
    if cut < 50 or len(idx) - cut < 50:
        raise DataError(f"too few labelled samples ({len(idx)}) for a train/test split")
    cut_ts = ts[idx[cut]]
    tr = idx[:cut][ts[idx[:cut]] + horizon_ns < cut_ts]  # purge labels reaching into test
    te = idx[cut:]

    t1 = time.perf_counter()
    say(f"fitting on {len(tr)} samples")
    clf, reg = fit_models(X[tr], y[tr], bps[tr], keep_flat=keep_flat, C=C)
    secs["fit"] = time.perf_counter() - t1

    mean = X[tr].astype(np.float64).mean(axis=0)
    std = X[tr].astype(np.float64).std(axis=0)
    meta: dict[str, Any] = {
        "flashmm_schema": 1,
        "feature_names": list(FEATURE_NAMES),
        "feature_mean": [round(float(v), 8) for v in mean],
        "feature_std": [round(float(v), 8) for v in std],
        "horizon": horizon,
        "horizon_ns": horizon_ns,
        "flat_ticks": flat_ticks,
        "sample_every_ms": sample_every_ms,
        "symbol": ds.symbol,
        "tick": ds.tick,
        "lot": ds.lot,
        "train_files": [{"name": p.name, "sha256": sha256_of(p)} for p in ds.files],
        "split": {
            "train_frac": train_frac,
            "train_samples": len(tr),
            "test_samples": len(te),
            "train_end_ns": int(ts[tr[-1]]),
            "test_start_ns": int(cut_ts),
        },
        "model_kind": "logistic_regression+ridge",
        "params": {"C": C, "keep_flat": keep_flat},
        "versions": _versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # metrics come from the exported graph: export once, score, store
    t2 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    model = export_onnx(clf, reg, {**meta, "metrics": {}})
    onnx.save(model, str(tmp))
    pred = OnnxPredictor(tmp)
    probs, bps_pred = pred.run_batch(X[te])
    metrics = evaluate(probs, bps_pred, X[te], y[te], bps[te])
    tr_probs, tr_bps = pred.run_batch(X[tr])
    metrics["train"] = {
        k: v
        for k, v in evaluate(tr_probs, tr_bps, X[tr], y[tr], bps[tr]).items()
        if k
        in ("hit_rate_moved", "baseline_hit_rate_moved", "moved_samples", "log_loss", "accuracy")
    }
    model = export_onnx(clf, reg, {**meta, "metrics": metrics})
    onnx.save(model, str(tmp))
    tmp.replace(out)
    secs["export_eval"] = time.perf_counter() - t2
    secs["total"] = time.perf_counter() - t0
    return TrainResult(out, metrics, secs, len(tr), len(te))


def metrics_table(metrics: dict[str, Any], title: str = "model metrics (test)") -> Any:
    """Rich renderables for a metrics dict (summary and calibration)."""
    from rich.console import Group
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")

    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    t.add_row("samples", f(metrics.get("samples")))
    t.add_row("moved samples", f(metrics.get("moved_samples")))
    t.add_row("hit rate on moved (model)", f(metrics.get("hit_rate_moved")))
    t.add_row(
        f"hit rate on moved ({metrics.get('baseline', 'baseline')})",
        f(metrics.get("baseline_hit_rate_moved")),
    )
    t.add_row("3-class accuracy", f(metrics.get("accuracy")))
    t.add_row("log-loss", f(metrics.get("log_loss")))
    t.add_row("bps MAE (model)", f(metrics.get("bps_mae")))
    t.add_row("bps MAE (predict 0)", f(metrics.get("bps_mae_zero")))
    t.add_row("bps RMSE (model)", f(metrics.get("bps_rmse")))
    t.add_row("bps RMSE (predict 0)", f(metrics.get("bps_rmse_zero")))
    t.add_row("bps correlation", f(metrics.get("bps_corr")))
    c = Table(title="calibration: max probability vs observed frequency")
    for col in ("bin", "n", "mean confidence", "observed"):
        c.add_column(col, justify="right")
    for row in metrics.get("calibration", []):
        c.add_row(row["bin"], str(row["n"]), f(row["mean_confidence"]), f(row["observed"]))
    return Group(t, c)
