"""``flashmm train`` and ``flashmm model check|eval``.

scikit-learn, skl2onnx and onnxruntime are imported inside the commands.
A bad model or data file gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from flashmm.errors import FlashMMError

app = typer.Typer(help="Check and evaluate prediction models.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    code = getattr(exc, "exit_code", 2)
    typer.echo(f"flashmm: error: {exc}", err=True)
    return typer.Exit(code)


def _json_default(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)


def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _recordings(data: list[Path]) -> list[Path]:
    """``--data`` as the backtest reads it: ``bundled:NAME``, else the current directory,
    then the project root."""
    from flashmm.paths import resolve_path

    return [resolve_path(str(d)) for d in data]


def _model_file(path: Path) -> Path:
    """A model path as a profile's ``model.path`` is found: as given, else against the
    current directory, the repository, then FlashMM's package (the shipped model), so
    ``flashmm model check models/flashmm-direction-1s.onnx`` works from any folder."""
    from flashmm.predict.settings import ModelSettings

    return ModelSettings._find(path) or path


def train_command(
    data: list[Path] = typer.Option(
        ...,
        "--data",
        "-d",
        help="Recording(s) of one symbol; repeat --data for more (bundled:NAME is one shipped)",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (models/NAME.onnx)"),
    horizon: str = typer.Option("1s", help="Prediction horizon: 100ms, 1s, 5s ..."),
    sample_ms: int = typer.Option(100, "--sample-ms", help="Sampling grid in milliseconds"),
    flat_ticks: float = typer.Option(
        0.5, "--flat-ticks", help="A mid move below this many ticks is 'flat'"
    ),
    tick: float | None = typer.Option(None, help="Tick size (known markets: automatic)"),
    lot: float | None = typer.Option(None, help="Lot size (known markets: automatic)"),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON"),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists"),
) -> None:
    """Train the direction/move model on recordings and write one ONNX file."""
    if out.exists() and not force:
        typer.echo(f"flashmm: error: --out: {out} exists (pass --force to replace it)", err=True)
        raise typer.Exit(2)
    try:
        from flashmm.predict.train import metrics_table, train

        t0 = time.perf_counter()
        say = (lambda m: typer.echo(m, err=True)) if not json_out else None
        res = train(
            _recordings(data),
            out,
            horizon,
            tick=tick,
            lot=lot,
            sample_every_ms=sample_ms,
            flat_ticks=flat_ticks,
            progress=say,
        )
    except FlashMMError as exc:
        raise _fail(exc) from None
    except ImportError as exc:
        typer.echo(f"flashmm: error: training needs the 'train' extras ({exc})", err=True)
        raise typer.Exit(2) from None
    wall = time.perf_counter() - t0
    if json_out:
        _dump(
            {
                "out": str(res.out_path),
                "seconds": res.seconds,
                "train_samples": res.n_train,
                "test_samples": res.n_test,
                "metrics": res.metrics,
            }
        )
        return
    from flashmm.cli import stdout_console

    con = stdout_console()
    con.print(metrics_table(res.metrics))
    m = res.metrics
    con.print(
        f"wrote {res.out_path}  ({res.n_train} train / {res.n_test} test samples, {wall:.1f} s)\n"
        f"hit rate on moved samples: model {m['hit_rate_moved']:.4f} vs "
        f"baseline {m['baseline_hit_rate_moved']:.4f} on the same {m['moved_samples']} samples"
    )


@app.command()
def check(
    path: Path = typer.Argument(..., help="Model file (.onnx)"),
    calls: int = typer.Option(3000, help="Single-row calls for the latency measurement"),
    json_out: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Validate a model: schema, metadata, stored metrics and inference latency."""
    try:
        import numpy as np

        from flashmm.predict.onnx_model import OnnxPredictor

        model = OnnxPredictor(_model_file(path))
    except FlashMMError as exc:
        raise _fail(exc) from None
    x = np.asarray(model.mean, dtype=np.float32)
    engine = model.engine
    lats: dict[str, dict[str, float]] = {}
    for eng in ("native", "onnxruntime") if engine == "native" else ("onnxruntime",):
        model.set_engine(eng)
        for _ in range(100):
            model.predict(x, 0)
        lat = np.empty(max(calls, 1))
        for i in range(len(lat)):
            t = time.perf_counter_ns()
            model.predict(x, i)
            lat[i] = (time.perf_counter_ns() - t) / 1e3
        lats[eng] = {
            "calls": len(lat),
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
        }
    model.set_engine(engine)
    info = model.describe()
    info["latency_us"] = lats[engine]
    info["latency_us_by_engine"] = lats
    if json_out:
        _dump(info)
        return
    from rich.table import Table

    from flashmm.cli import stdout_console
    from flashmm.predict.train import metrics_table

    con = stdout_console()
    tab = Table(title=f"model {path}", show_header=False)
    tab.add_column("key")
    tab.add_column("value")
    for io in ("input", "output"):
        for t in info[f"{io}s"]:
            tab.add_row(io, f"{t['name']} {t['type']} {t['shape']}")
    tab.add_row("features", f"{len(model.meta['feature_names'])} (match this FlashMM)")
    for k in ("horizon", "flat_ticks", "model_kind", "created"):
        tab.add_row(k, str(info.get(k)))
    for f in info.get("train_files") or []:
        tab.add_row("trained on", f"{f.get('name')} sha256 {str(f.get('sha256'))[:16]}…")
    tab.add_row("versions", ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()))
    diff = info["native_max_diff"]
    tab.add_row(
        "engine",
        f"{engine}"
        + (f" (max abs difference vs onnxruntime {diff:.2e})" if diff is not None else "")
        + (f"; {info['native_note']}" if info["native_note"] else ""),
    )
    for eng, lu in lats.items():
        tab.add_row(
            f"latency {eng}",
            f"p50 {lu['p50']:.1f} us, p99 {lu['p99']:.1f} us ({lu['calls']} calls)",
        )
    con.print(tab)
    if info.get("metrics"):
        con.print(metrics_table(info["metrics"], "stored metrics (held-back test)"))


@app.command("eval")
def eval_(
    path: Path = typer.Argument(..., help="Model file (.onnx)"),
    data: list[Path] = typer.Option(
        ...,
        "--data",
        "-d",
        help="Recording(s), one or several markets; repeat --data (bundled:NAME is one shipped)",
    ),
    tick: float | None = typer.Option(None, help="Tick size (known markets: automatic)"),
    lot: float | None = typer.Option(None, help="Lot size (known markets: automatic)"),
    walk_forward: int = typer.Option(
        0,
        "--walk-forward",
        "-w",
        help="Also retrain on the past and score the next window, N windows per market",
    ),
    boot: int = typer.Option(1000, "--boot", help="Bootstrap resamples (over moves)"),
    json_out: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Score a model on recordings against the imbalance rule, per market.

    Direction is scored on samples where the mid moved; the report gives the
    number of distinct moves, 95% intervals from a bootstrap over moves, the
    calibration of the up/down confidence and, with --walk-forward N, the
    figures of models retrained on the past and scored on each next window
    (with the model's own horizon and settings).
    """
    if walk_forward < 0 or boot < 10:
        typer.echo("flashmm: error: --walk-forward must be >= 0 and --boot >= 10", err=True)
        raise typer.Exit(2)
    try:
        from flashmm.predict.evaluation import score, summary_line
        from flashmm.predict.evaluation import walk_forward as run_walk_forward
        from flashmm.predict.labels import make_labels
        from flashmm.predict.onnx_model import OnnxPredictor
        from flashmm.predict.train import evaluate, load_datasets

        model = OnnxPredictor(_model_file(path))
        sample_ms = int(model.meta.get("sample_every_ms", 100))
        datasets = load_datasets(_recordings(data), tick=tick, lot=lot, sample_every_ms=sample_ms)
    except FlashMMError as exc:
        raise _fail(exc) from None
    say = (lambda m: typer.echo(m, err=True)) if not json_out else None
    markets: dict[str, Any] = {}
    pooled = []  # per market: what evaluate() takes, in its order
    for ds in datasets:
        y, bps, valid = make_labels(ds.ts_ns, ds.mid, model.horizon_ns, model.flat_ticks)
        X = ds.X[valid]
        probs, bp = model.run_batch(X)
        m = score(probs, X, y[valid], ds.mid[valid], n_boot=boot)
        m["data"] = [p.name for p in ds.files]
        markets[ds.market] = m
        pooled.append((probs, bp, X, y[valid], bps[valid]))
    import numpy as np

    m = evaluate(*(np.concatenate(arrays) for arrays in zip(*pooled, strict=True)))
    m["horizon"] = model.horizon
    m["data"] = [p.name for ds in datasets for p in ds.files]
    m["markets"] = markets
    if walk_forward:
        params = model.meta.get("params") or {}
        try:
            m["walk_forward"] = run_walk_forward(
                datasets,
                model.horizon_ns,
                walk_forward,
                flat_ticks=model.flat_ticks,
                keep_flat=float(params.get("keep_flat", 0.05)),
                C=float(params.get("C", 0.01)),
                n_boot=boot,
                progress=say,
                kind=str(model.meta.get("model_kind") or ""),
            )
        except FlashMMError as exc:
            raise _fail(exc) from None
    if json_out:
        _dump(m)
        return
    from flashmm.cli import stdout_console
    from flashmm.predict.train import metrics_table

    con = stdout_console()
    con.print(metrics_table(m, f"{path.name} on {', '.join(m['data'])}"))
    for k, mk in markets.items():
        con.print(summary_line(k, mk))
    wf = m.get("walk_forward")
    if wf:
        con.print(f"walk-forward, {wf['windows']} windows (train on the past, score the next):")
        for fold in wf["folds"]:
            for k, mk in fold["markets"].items():
                con.print("  " + summary_line(f"window {fold['window']} {k}", mk))
        for k, mk in wf["overall"].items():
            con.print("  " + summary_line(f"all windows {k}", mk))
