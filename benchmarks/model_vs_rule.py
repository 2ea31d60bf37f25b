"""Walk-forward: does the model earn its place against the imbalance rule?

For every walk-forward window (each market's recording cut in time into
``windows + 1`` parts; window ``i`` is scored by a model trained on parts
``0..i-1`` of every market, see ``flashmm.predict.evaluation.walk_forward``):

- direction: hit rate on moved samples, model vs rule, 95% intervals from a
  bootstrap over distinct moves, and the up/down calibration error, per market;
- trading: a backtest of the window with the window's model (ML on) and with
  the rule (ML off, ``model.enabled=false``), same config otherwise: P&L,
  5 s markout and fills. Markets with a backtest profile entry only (NEXO/USDT
  drives SEI/USDC, ETH/USDT spot drives ETH/USDC); the futures are scored on
  direction only.

Prints one line per window and market and writes everything as JSON::

    python benchmarks/model_vs_rule.py --data ../shared/data/binance_spot_nexousdt_20240723.dat.gz \
        --data ../shared/data/binance_spot_nexousdt_20240724.dat.gz ... --windows 4 --out wf.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from flashmm.config import load_config
from flashmm.predict.direction import MODEL_KIND, export_direction_onnx
from flashmm.predict.evaluation import summary_line, walk_forward
from flashmm.predict.labels import parse_horizon
from flashmm.predict.train import load_datasets

ROOT = Path(__file__).resolve().parents[1]


def export_fold_models(models: list[Any], horizon_ns: int, out: Path) -> list[Path]:
    """Each window's model (fitted by the walk-forward on the past) as an ONNX file."""
    import onnx

    from flashmm.features import FEATURE_NAMES

    paths = []
    for i, mdl in enumerate(models, start=1):
        meta = {
            "flashmm_schema": 1,
            "feature_names": list(FEATURE_NAMES),
            "feature_mean": mdl.mean.tolist(),
            "feature_std": mdl.std.tolist(),
            "horizon": "1s",
            "horizon_ns": horizon_ns,
            "flat_ticks": 0.5,
            "sample_every_ms": 100,
            "model_kind": MODEL_KIND,
            "params": {k: v for k, v in mdl.choice.items() if k != "candidates"},
            "metrics": {},
        }
        p = out / f"window{i}.onnx"
        onnx.save(export_direction_onnx(mdl, meta), str(p))
        paths.append(p)
    return paths


def backtest(config: str, files: list[str], sets: list[str], lo: int, hi: int) -> dict[str, Any]:
    from flashmm.backtest.runner import run_backtest

    cfg = load_config(ROOT / config, sets)
    res = run_backtest(cfg, files, from_ns=lo, to_ns=hi)
    rep = res.report
    model: dict[str, Any] = {}
    for ms in res.engine.markets.values():
        st = ms.signal_source.status()
        if st.get("model_predictions"):
            model = {
                k: st.get(k)
                for k in ("model_predictions", "fallback_predictions", "transitions", "reason")
            }
    return {
        "pnl_usdc": rep["pnl_usdc"],
        "markout_5s_bps": rep["markout_bps"].get("5s"),
        "fills": rep["fills"],
        "max_abs_inventory_usdc": rep["max_abs_inventory_usdc"],
        "model": model,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--config", default="configs/backtest.yaml")
    ap.add_argument("--no-backtest", action="store_true")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    t0 = time.perf_counter()
    h = parse_horizon("1s")
    datasets = load_datasets(a.data)
    print(f"features: {time.perf_counter() - t0:.0f} s", flush=True)
    models: list[Any] = []
    wf = walk_forward(datasets, h, a.windows, n_boot=a.boot, models_out=models)
    for fold in wf["folds"]:
        for k, m in fold["markets"].items():
            print(summary_line(f"window {fold['window']} {k}", m), flush=True)
    for k, m in wf["overall"].items():
        print(summary_line(f"all windows {k}", m), flush=True)
    result: dict[str, Any] = {"walk_forward": wf, "backtests": []}
    if not a.no_backtest:
        cfg = load_config(ROOT / a.config)
        refs = {m.reference for m in cfg.markets}
        with tempfile.TemporaryDirectory() as tmp:
            files_ = export_fold_models(models, h, Path(tmp))
            for fold, model in zip(wf["folds"], files_, strict=True):
                for ds in datasets:
                    if ds.market not in refs or ds.market not in fold["markets"]:
                        continue
                    m = fold["markets"][ds.market]
                    files = [str(p) for p in ds.files]
                    lo, hi = m["from_ns"], m["to_ns"]
                    on = backtest(
                        a.config, files, ["model.enabled=true", f"model.path={model}"], lo, hi
                    )
                    off = backtest(a.config, files, ["model.enabled=false"], lo, hi)
                    row = {"window": fold["window"], "market": ds.market, "on": on, "off": off}
                    result["backtests"].append(row)
                    print(
                        f"window {fold['window']} {ds.market} backtest "
                        f"{(hi - lo) / 3.6e12:.2f} h: P&L ML on {on['pnl_usdc']:.2f} vs off "
                        f"{off['pnl_usdc']:.2f} USDC; 5 s markout {on['markout_5s_bps']} vs "
                        f"{off['markout_5s_bps']} bps; fills {on['fills']} vs {off['fills']}",
                        flush=True,
                    )
    if a.out:
        a.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
