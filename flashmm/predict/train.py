"""Training of the direction/move model and its export to one ONNX file.

Pipeline (all in :func:`train`):

1. Features: :func:`flashmm.predict.batch.batch_features` over the recordings
   (files of one symbol, chained), sampled every ``sample_every_ms``.
2. Labels: :func:`flashmm.predict.labels.make_labels` at ``horizon``.
3. Time-ordered split: the first ``train_frac`` of samples train, the rest
   test, with a gap of one horizon between them so no training label looks
   into the test period. Never shuffled across time.
4. Direction, move and bps heads: :func:`flashmm.predict.direction.fit_direction_model`
   (a binary up/down head on moved samples that starts from the imbalance
   rule, its inputs, strength and calibration chosen inside the training
   part; a move-probability head; a ridge bps head).
5. Export: :func:`flashmm.predict.direction.export_direction_onnx`, one small
   dense graph with input ``features`` and outputs ``probabilities``/
   ``expected_bps``; the scaling is folded into the weights. Metadata: see
   :mod:`flashmm.predict.onnx_model`.
6. Metrics on the test part, computed by running the exported file with
   onnxruntime (so they describe what ships).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flashmm.errors import DataError, UserInputError
from flashmm.features import FEATURE_NAMES, IDX
from flashmm.feeds.cache import file_sha256
from flashmm.predict.batch import batch_features
from flashmm.predict.direction import MODEL_KIND, Part, export_direction_onnx, fit_direction_model
from flashmm.predict.labels import DEFAULT_FLAT_TICKS, DOWN, FLAT, UP, make_labels, parse_horizon

#: market key -> (tick, lot). Spot markets are keyed by symbol, USD-M futures by
#: ``<symbol>-usdm`` (the same symbol trades on both with other ticks and lots).
KNOWN_MARKETS: dict[str, tuple[float, float]] = {
    "nexousdt": (0.001, 0.01),
    "ethusdt": (0.01, 0.0001),
    "btcusdt-usdm": (0.1, 0.001),
    "ethusdt-usdm": (0.01, 0.001),
}
CALIBRATION_BINS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
#: bins of the up/down confidence, each open at the top (1.01: the last holds 1.0)
DIRECTION_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.01)

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
    market: str


@dataclass
class TrainResult:
    out_path: Path
    metrics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0


def is_futures(path: Path) -> bool:
    """True for a USD-M futures recording (its depth diffs carry ``pu``)."""
    import gzip

    import orjson

    with gzip.open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i >= 2000:
                break
            if b"depthUpdate" not in line:
                continue
            try:
                msg = orjson.loads(line[line.find(b" ") + 1 :])
            except orjson.JSONDecodeError:
                continue
            data = msg.get("data") if isinstance(msg, dict) else None
            if isinstance(data, dict) and data.get("e") == "depthUpdate":
                return "pu" in data
    return False


def group_markets(paths: Sequence[str | Path]) -> dict[str, tuple[str, list[Path]]]:
    """Recordings per market key (``symbol`` or ``symbol-usdm``), each in time order."""
    from flashmm.feeds.replay import check_files, detect_symbol, first_timestamp

    groups: dict[str, tuple[str, list[Path]]] = {}
    for p in check_files(paths):
        sym = detect_symbol(p)
        key = f"{sym}-usdm" if is_futures(p) else sym
        groups.setdefault(key, (sym, []))[1].append(p)
    for _, files in groups.values():
        files.sort(key=first_timestamp)
    return groups


def load_datasets(
    paths: Sequence[str | Path],
    *,
    tick: float | None = None,
    lot: float | None = None,
    sample_every_ms: int = 100,
) -> list[Dataset]:
    """Features of recordings, one :class:`Dataset` per market (its files chained
    in time order). ``tick``/``lot`` override the known values (one market only)."""
    groups = group_markets(paths)
    if (tick is not None or lot is not None) and len(groups) > 1:
        raise UserInputError("--tick/--lot apply to one market; these files hold several")
    out = []
    for key, (symbol, ordered) in sorted(groups.items()):
        t, lt = tick, lot
        if t is None or lt is None:
            known = KNOWN_MARKETS.get(key)
            if known is None:
                raise UserInputError(
                    f"unknown market {key}: give its tick and lot size (--tick, --lot)"
                )
            t = known[0] if t is None else t
            lt = known[1] if lt is None else lt
        ts, X, mid = batch_features(ordered, symbol, t, lt, sample_every_ms)
        if len(ts) < 100:
            raise DataError(
                f"only {len(ts)} usable samples in {', '.join(p.name for p in ordered)}"
            )
        out.append(Dataset(symbol, t, lt, list(ordered), ts, X, mid, key))
    return out


# --- metrics -----------------------------------------------------------------


def _hit_rate(pred: np.ndarray, actual: np.ndarray) -> float:
    """Share of samples where sign(pred) == actual; a 0 prediction counts half."""
    if len(actual) == 0:
        return float("nan")
    s = np.sign(pred)
    return float(((s == actual).sum() + 0.5 * (s == 0).sum()) / len(actual))


def _calibration_bins(
    conf: np.ndarray, hit: np.ndarray, edges: Sequence[float], digits: int, closed_top: bool
) -> list[dict[str, Any]]:
    """Mean confidence vs observed hit share per bin; ``closed_top``: the last bin holds
    its top edge."""
    rows = []
    for lo, hi in itertools.pairwise(edges):
        top = closed_top and hi == edges[-1]
        sel = (conf >= lo) & ((conf <= hi) if top else (conf < hi))
        n = int(sel.sum())
        rows.append(
            {
                "bin": f"{lo:.{digits}f}-{hi:.{digits}f}",
                "n": n,
                "mean_confidence": float(conf[sel].mean()) if n else None,
                "observed": float(hit[sel].mean()) if n else None,
            }
        )
    return rows


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
    correct = probs.argmax(axis=1) == y
    calib = _calibration_bins(probs.max(axis=1), correct, CALIBRATION_BINS, 2, True)
    # confidence of the up/down call on moved samples
    dir_conf = np.maximum(probs[moved, UP], probs[moved, DOWN]) / np.maximum(
        probs[moved, UP] + probs[moved, DOWN], 1e-12
    )
    hits = np.sign(model_call) == actual
    dir_calib = _calibration_bins(dir_conf, hits, DIRECTION_BINS, 1, False)
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


def fit_classifier(
    X: np.ndarray, y: np.ndarray, *, keep_flat: float = 0.05, C: float = 1.0, seed: int = 0
) -> Any:
    """The direction classifier alone (walk-forward evaluation of a 3-class model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if len(np.unique(y)) < 3:
        raise DataError("training data needs up, down and flat samples; use more data")
    rng = np.random.default_rng(seed)
    keep = (y != FLAT) | (rng.random(len(y)) < keep_flat)
    clf = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(C=C, max_iter=1000))])
    with threadpool_limits(limits=1):
        clf.fit(X[keep], y[keep])
    lr = clf.named_steps["lr"]
    if keep_flat < 1.0:
        lr.intercept_[list(lr.classes_).index(FLAT)] -= np.log(keep_flat)
    return clf


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


def split_index(
    ts: np.ndarray, valid: np.ndarray, horizon_ns: int, train_frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered train/test indices: the first ``train_frac`` of the valid
    samples train (minus those whose label reaches into the test part), the rest test."""
    idx = np.flatnonzero(valid)
    cut = int(len(idx) * train_frac)
    if cut < 50 or len(idx) - cut < 50:
        raise DataError(f"too few labelled samples ({len(idx)}) for a train/test split")
    cut_ts = ts[idx[cut]]
    tr = idx[:cut][ts[idx[:cut]] + horizon_ns < cut_ts]  # purge labels reaching into test
    return tr, idx[cut:]


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
    max_samples: int | None = None,
    progress: Progress | None = None,
    n_boot: int = 1000,
) -> TrainResult:
    """Train on ``data_paths`` (one or several markets) and write the ONNX model
    to ``out_path``, and its card (test figures against the imbalance rule) to
    ``out_path`` with the suffix ``.md``.

    Every market is split in time on its own (first ``train_frac`` trains);
    the training parts are pooled. ``max_samples`` keeps only the first
    samples of each market (quick tests).
    """
    import onnx

    from flashmm.predict.evaluation import score, summary_line
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
    datasets = load_datasets(data_paths, tick=tick, lot=lot, sample_every_ms=sample_every_ms)
    if max_samples is not None:
        for ds in datasets:
            ds.ts_ns, ds.X, ds.mid = (
                ds.ts_ns[:max_samples],
                ds.X[:max_samples],
                ds.mid[:max_samples],
            )
    secs["features"] = time.perf_counter() - t0

    parts = []
    for ds in datasets:
        y, bps, valid = make_labels(ds.ts_ns, ds.mid, horizon_ns, flat_ticks)
        tr, te = split_index(ds.ts_ns, valid, horizon_ns, train_frac)
        parts.append((ds, y, bps, tr, te))
    Xtr = np.concatenate([ds.X[tr] for ds, _, _, tr, _ in parts])
    ytr = np.concatenate([y[tr] for _, y, _, tr, _ in parts])
    btr = np.concatenate([b[tr] for _, _, b, tr, _ in parts])
    Xte = np.concatenate([ds.X[te] for ds, _, _, _, te in parts])
    yte = np.concatenate([y[te] for _, y, _, _, te in parts])
    bte = np.concatenate([b[te] for _, _, b, _, te in parts])

    t1 = time.perf_counter()
    say(f"fitting on {len(ytr)} samples of {len(datasets)} market(s)")
    fitted = fit_direction_model(
        [Part(ds.market, ds.X[tr], y[tr], b[tr], ds.ts_ns[tr]) for ds, y, b, tr, _ in parts],
        horizon_ns,
        progress=say,
    )
    secs["fit"] = time.perf_counter() - t1

    mean = Xtr.astype(np.float64).mean(axis=0)
    std = Xtr.astype(np.float64).std(axis=0)
    first = parts[0]
    meta: dict[str, Any] = {
        "flashmm_schema": 1,
        "feature_names": list(FEATURE_NAMES),
        "feature_mean": [round(float(v), 8) for v in mean],
        "feature_std": [round(float(v), 8) for v in std],
        "horizon": horizon,
        "horizon_ns": horizon_ns,
        "flat_ticks": flat_ticks,
        "sample_every_ms": sample_every_ms,
        "symbol": first[0].symbol,
        "tick": first[0].tick,
        "lot": first[0].lot,
        "markets": [
            {
                "market": ds.market,
                "tick": ds.tick,
                "lot": ds.lot,
                "train": len(tr),
                "test": len(te),
                "train_end_ns": int(ds.ts_ns[tr[-1]]),
                "test_start_ns": int(ds.ts_ns[te[0]]),
            }
            for ds, _, _, tr, te in parts
        ],
        "train_files": [
            {"name": p.name, "sha256": file_sha256(p)} for ds in datasets for p in ds.files
        ],
        "split": {
            "train_frac": train_frac,
            "train_samples": len(ytr),
            "test_samples": len(yte),
            "train_end_ns": int(first[0].ts_ns[first[3][-1]]),
            "test_start_ns": int(first[0].ts_ns[first[4][0]]),
        },
        "model_kind": MODEL_KIND,
        "params": {k: v for k, v in fitted.choice.items() if k != "candidates"},
        "versions": _versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # metrics come from the exported graph: export once, score, store
    t2 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    model = export_direction_onnx(fitted, {**meta, "metrics": {}})
    onnx.save(model, str(tmp))
    pred = OnnxPredictor(tmp)
    probs, bps_pred = pred.run_batch(Xte)
    metrics = evaluate(probs, bps_pred, Xte, yte, bte)
    tr_probs, tr_bps = pred.run_batch(Xtr)
    metrics["train"] = {
        k: v
        for k, v in evaluate(tr_probs, tr_bps, Xtr, ytr, btr).items()
        if k
        in ("hit_rate_moved", "baseline_hit_rate_moved", "moved_samples", "log_loss", "accuracy")
    }
    per_market: dict[str, Any] = {}
    for ds, y, _, _, te in parts:
        p_m, _ = pred.run_batch(ds.X[te])
        per_market[ds.market] = score(p_m, ds.X[te], y[te], ds.mid[te], n_boot=n_boot)
    metrics["markets"] = per_market
    diffs = [m["model_minus_rule"] for m in per_market.values() if m.get("distinct_moves")]
    beats = bool(diffs) and all(d > 0 for d in diffs)
    metrics["beats_rule_on_test"] = beats
    model = export_direction_onnx(fitted, {**meta, "metrics": metrics})
    onnx.save(model, str(tmp))
    tmp.replace(out)
    secs["export_eval"] = time.perf_counter() - t2
    secs["total"] = time.perf_counter() - t0
    lines = [summary_line(k, m) for k, m in per_market.items()]
    if not beats:
        say(
            "WARNING: the model does not beat the imbalance rule on its own test split "
            "in every market; keep model.enabled=false (the rule) unless walk-forward "
            "windows say otherwise"
        )
    write_card(out, meta, metrics, lines, beats)
    return TrainResult(out, metrics, secs, len(ytr), len(yte))


def write_card(
    out: Path, meta: dict[str, Any], metrics: dict[str, Any], lines: list[str], beats: bool
) -> None:
    """A short model card beside the model: data, split and the comparison with the rule."""
    verdict = (
        "The model beats the imbalance rule on the test part of every market."
        if beats
        else "**The model does not beat the imbalance rule on its own test split in every "
        "market: run with `model.enabled: false` (the rule) unless walk-forward windows "
        "(`flashmm model eval --walk-forward N`) show otherwise.**"
    )
    rows = [
        "| market | distinct moves | model hit rate (95% CI) | rule hit rate (95% CI) "
        "| up/down calibration error (noise floor) |",
        "|---|---|---|---|---|",
    ]
    for k, m in metrics.get("markets", {}).items():
        if not m.get("distinct_moves"):
            continue
        a, b = m["hit_rate_moved_ci95"]
        c, d = m["rule_hit_rate_moved_ci95"]
        rows.append(
            f"| {k} | {m['distinct_moves']} | {m['hit_rate_moved']:.3f} ({a:.3f}-{b:.3f}) "
            f"| {m['rule_hit_rate_moved']:.3f} ({c:.3f}-{d:.3f}) "
            f"| {m['updown_calibration_error_pts']:.1f} pts "
            f"({m['updown_calibration_floor_pts']:.1f}) |"
        )
    text = "\n".join(
        [
            f"# Model card: `{out.name}`",
            "",
            f"Horizon {meta['horizon']}, trained {meta['created']} on "
            + ", ".join(f"`{f['name']}`" for f in meta["train_files"])
            + f" ({meta['split']['train_samples']} train / {meta['split']['test_samples']} "
            "test samples, each market split in time).",
            "",
            "## Test part against the imbalance rule (hit rate on moved samples)",
            "",
            verdict,
            "",
            *rows,
            "",
            *[f"- {x}" for x in lines],
            "",
        ]
    )
    out.with_suffix(".md").write_text(text)


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
