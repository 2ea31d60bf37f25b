"""A backtest's files: ``report.json``, ``fills.csv`` and ``plots.html``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from flashmm.backtest.plots import write_html
from flashmm.backtest.recorder import BacktestResult
from flashmm.backtest.report import FILL_COLUMNS, fill_rows
from flashmm.types import clean_floats


def write_outputs(res: BacktestResult, out: Path) -> list[Path]:
    """``report.json``, ``fills.csv`` and ``plots.html`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    p = out / "report.json"
    p.write_text(json.dumps(clean_floats(res.report), indent=2) + "\n")
    paths.append(p)
    p = out / "fills.csv"
    with p.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FILL_COLUMNS)
        w.writeheader()
        w.writerows(fill_rows(res))
    paths.append(p)
    paths.append(write_html(res, out / "plots.html"))
    return paths
