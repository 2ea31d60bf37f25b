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

app = typer.Typer(help="Check and evaluate prediction models.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    code = getattr(exc, "exit_code", 2)
    typer.echo(f"flashmm: error: {exc}", err=True)
    return typer.Exit(code)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def train_command(
    data: list[Path] = typer.Option(
        ..., "--data", "-d", help="Recording(s) of one symbol; repeat --data for more"
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
) -> None:
    """Train the direction/move model on recordings and write one ONNX file."""
    from flashmm.errors import FlashMMError

    try:
        from flashmm.predict.train import metrics_table, train

        t0 = time.perf_counter()
        say = (lambda m: typer.echo(m, err=True)) if not json_out else None
        res = train(
            data,
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
    from rich.console import Console

    con = Console()
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
    from flashmm.errors import FlashMMError

    try:
        import numpy as np

        from flashmm.predict.onnx_model import OnnxPredictor

        model = OnnxPredictor(path)
    except FlashMMError as exc:
        raise _fail(exc) from None
    x = np.asarray(model.mean, dtype=np.float32)
    for _ in range(100):
        model.predict(x, 0)
    lat = np.empty(max(calls, 1))
    for i in range(len(lat)):
        t = time.perf_counter_ns()
        model.predict(x, i)
        lat[i] = (time.perf_counter_ns() - t) / 1e3
    info = model.describe()
    info["latency_us"] = {
        "calls": len(lat),
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }
    if json_out:
        _dump(info)
        return
    from rich.console import Console
    from rich.table import Table

    from flashmm.predict.train import metrics_table

    con = Console()
    tab = Table(title=f"model {path}", show_header=False)
    tab.add_column("key")
    tab.add_column("value")
    for i in info["inputs"]:
        tab.add_row("input", f"{i['name']} {i['type']} {i['shape']}")
    for o in info["outputs"]:
        tab.add_row("output", f"{o['name']} {o['type']} {o['shape']}")
    tab.add_row("features", f"{len(model.meta['feature_names'])} (match this FlashMM)")
    for k in ("horizon", "flat_ticks", "model_kind", "created"):
        tab.add_row(k, str(info.get(k)))
    for f in info.get("train_files") or []:
        tab.add_row("trained on", f"{f.get('name')} sha256 {str(f.get('sha256'))[:16]}…")
    tab.add_row("versions", ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()))
    lu = info["latency_us"]
    tab.add_row("latency", f"p50 {lu['p50']:.1f} us, p99 {lu['p99']:.1f} us ({lu['calls']} calls)")
    con.print(tab)
    if info.get("metrics"):
        con.print(metrics_table(info["metrics"], "stored metrics (held-back test)"))


@app.command("eval")
def eval_(
    path: Path = typer.Argument(..., help="Model file (.onnx)"),
    data: list[Path] = typer.Option(..., "--data", "-d", help="Recording(s); repeat --data"),
    tick: float | None = typer.Option(None, help="Tick size (known markets: automatic)"),
    lot: float | None = typer.Option(None, help="Lot size (known markets: automatic)"),
    json_out: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Score a model on recordings: hit rate on moved samples vs the imbalance rule."""
    from flashmm.errors import FlashMMError

    try:
        from flashmm.predict.labels import make_labels
        from flashmm.predict.onnx_model import OnnxPredictor
        from flashmm.predict.train import evaluate, load_dataset

        model = OnnxPredictor(path)
        sample_ms = int(model.meta.get("sample_every_ms", 100))
        ds = load_dataset(data, tick=tick, lot=lot, sample_every_ms=sample_ms)
    except FlashMMError as exc:
        raise _fail(exc) from None
    y, bps, valid = make_labels(ds.ts_ns, ds.mid, model.horizon_ns, model.flat_ticks)
    X = ds.X[valid]
    probs, bps_pred = model.run_batch(X)
    m = evaluate(probs, bps_pred, X, y[valid], bps[valid])
    m["horizon"] = model.horizon
    m["data"] = [p.name for p in ds.files]
    if json_out:
        _dump(m)
        return
    from rich.console import Console

    from flashmm.predict.train import metrics_table

    Console().print(metrics_table(m, f"{path.name} on {', '.join(m['data'])}"))
