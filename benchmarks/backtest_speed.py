"""Backtest speed on the full NEXO/USDT day (20240723 + 20240724) with the default strategy.

Prints wall time, CPU time and events/s for a cold run (recordings parsed from
gzip JSON into a fresh cache) and a cached run, for configs/backtest.yaml as it
is (the imbalance rule, in the compiled backtest loop), the same through the
engine (``compiled=False``: what a strategy plugin runs in) and with the shipped
model on (``model.enabled=true``, compiled loop).
``--profile`` adds a cProfile of each cached run (top functions by own time).

Usage (from the repo root)::

    .venv/bin/python benchmarks/backtest_speed.py [--profile] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = [
    DATA / "binance_spot_nexousdt_20240723.dat.gz",
    DATA / "binance_spot_nexousdt_20240724.dat.gz",
]

# name: (--set overrides, compiled loop)
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "default (rule)": ([], True),
    "rule, engine": ([], False),
    "model on": (["model.enabled=true"], True),
}


def one(sets: list[str], cache_dir: Path, compiled: bool = True) -> dict[str, Any]:
    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    cfg = load_config(ROOT / "configs" / "backtest.yaml", sets)
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = run_backtest(cfg, [str(f) for f in FILES], cache_dir=cache_dir, compiled=compiled)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    r = res.report
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "load_s": r["load_s"],
        "loop_s": r["loop_s"],
        "events": r["events"],
        "events_per_s": round(r["events"] / wall, 1),
        "loop_events_per_s": r["loop_events_per_s"],
        "from_cache": r["data"]["from_cache"],
        "fills": r["fills"],
        "pnl_usdc": r["pnl_usdc"],
        "state": r["state"],
        "quote_uptime": r["quote_uptime"],
        "position_limit_breaches": r["position_limit_breaches"],
    }


def profile(sets: list[str], cache_dir: Path, top: int, compiled: bool) -> str:
    import cProfile
    import io
    import pstats

    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    cfg = load_config(ROOT / "configs" / "backtest.yaml", sets)
    pr = cProfile.Profile()
    pr.enable()
    run_backtest(cfg, [str(f) for f in FILES], cache_dir=cache_dir, compiled=compiled)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the cached runs")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from loguru import logger

    logger.remove()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flashmm-bench-cache-") as tmp:
        cache = Path(tmp)
        for name, (sets, compiled) in VARIANTS.items():
            sub = cache / name.replace(" ", "_")
            cold = one(sets, sub, compiled)
            warm = one(sets, sub, compiled)
            out[name] = {"cold": cold, "cached": warm}
        profiles = (
            {
                name: profile(sets, cache / name.replace(" ", "_"), args.top, compiled)
                for name, (sets, compiled) in VARIANTS.items()
            }
            if args.profile
            else {}
        )
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"NEXO/USDT full day: {FILES[0].name} + {FILES[1].name}")
    hdr = (
        f"{'variant':<18}{'run':<8}{'wall s':>8}{'cpu s':>8}{'load s':>8}{'loop s':>8}"
        f"{'events':>9}{'ev/s':>9}{'loop ev/s':>11}{'fills':>7}{'P&L':>10}  state"
    )
    print(hdr)
    for name, runs in out.items():
        for kind, r in runs.items():
            print(
                f"{name:<18}{kind:<8}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['load_s']:>8.2f}{r['loop_s']:>8.2f}"
                f"{r['events']:>9,}{r['events_per_s']:>9,.0f}{r['loop_events_per_s']:>11,.0f}{r['fills']:>7}"
                f"{r['pnl_usdc']:>+10.3f}  {r['state']} (uptime {r['quote_uptime']:.0%})"
            )
    for name, text in profiles.items():
        print(f"\n--- cProfile, {name}, cached run ---")
        print(text)


if __name__ == "__main__":
    main()
