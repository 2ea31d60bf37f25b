"""A week-long synthetic tape: does a backtest's cost grow linearly with the data?

The NEXO/USDT day (20240723 + 20240724, 114,078 messages, 24.3 h) is looped
``N`` times with shifted timestamps (receive and exchange time move by the
day's span plus 1 ms each pass; each pass after the first starts with a
``FeedStatus("resync")`` and the day's own REST snapshot, as a replay loop
does). Each length runs ``flashmm backtest``'s ``run_backtest`` with
``configs/backtest.yaml`` (Avellaneda-Stoikov 3+3, features and the imbalance
rule; ``--model`` for the ONNX model) in a fresh process, with the loss limits
out of the way so that the bot quotes all week. Printed per length: events,
loop time, CPU time of the whole process, µs per event, peak memory (RSS),
fills, and the cost per event relative to one day (1.00 = linear).

Usage (from the repo root)::

    nice -n 15 .venv/bin/python benchmarks/backtest_week.py [--days 1,7] [--model]
        [--compiled] [--json]

``--compiled`` runs the same tape through the compiled backtest loop
(``flashmm.native.backtest``, the engine's fills in one numba loop) instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = [
    DATA / "binance_spot_nexousdt_20240723.dat.gz",
    DATA / "binance_spot_nexousdt_20240724.dat.gz",
]
SETS = [
    "risk.daily_loss_limit_usdc=1000000000",
    "risk.max_drawdown_usdc=1000000000",
]


def looped_feed(cfg: Any, days: int) -> Any:
    """A CachedFeed whose events() plays the recording ``days`` times, time-shifted."""
    from flashmm.feeds.cache import CachedFeed
    from flashmm.marketdata import FeedStatus, MarketEvent
    from flashmm.runner import scales_for

    class LoopedFeed(CachedFeed):
        def events(self) -> Iterator[MarketEvent]:
            lo, hi = self.span()
            shift = hi - lo + 1_000_000
            for k in range(days):
                off, off_ms = k * shift, k * shift // 1_000_000
                if k:
                    for sym in self.symbols:
                        yield FeedStatus(sym, lo + off - 1, "resync", f"day {k + 1}")
                for ev in super().events():
                    if k:
                        ev.ts_ns += off
                        if getattr(ev, "exch_ms", 0):
                            ev.exch_ms += off_ms  # type: ignore[attr-defined]
                    yield ev

    return LoopedFeed([str(f) for f in FILES], scales_for(cfg.specs()))


def worker(days: int, model: bool) -> dict[str, Any]:
    from loguru import logger

    logger.remove()
    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    sets = [*SETS, f"model.enabled={'true' if model else 'false'}"]
    cfg = load_config(ROOT / "configs" / "backtest.yaml", sets)
    feed = looped_feed(cfg, days)
    res = run_backtest(cfg, strategy=None, feed=feed)
    rep = res.report
    return {
        "days": days,
        "events": rep["events"],
        "sim_days": rep["sim_s"] / 86_400,
        "loop_s": rep["loop_s"],
        "fills": rep["fills"],
        "orders": rep["orders_sent"],
        "pnl_usdc": rep["pnl_usdc"],
        "state": rep["state"],
    }


def compiled_worker(days: int, model: bool) -> dict[str, Any]:
    """The same tape through the compiled backtest loop (``flashmm.native.backtest``)."""
    from loguru import logger

    logger.remove()
    from flashmm.config import load_config
    from flashmm.feeds.binance import Scale
    from flashmm.feeds.cache import load_recording
    from flashmm.native.backtest import CompiledBacktest

    sets = [*SETS, f"model.enabled={'true' if model else 'false'}"]
    cfg = load_config(ROOT / "configs" / "backtest.yaml", sets)
    recs = [load_recording(f, "nexousdt", Scale.of(0.001, 0.01)) for f in FILES]
    bt = CompiledBacktest(cfg, recs, days=days)
    t0 = time.perf_counter()
    bt.run()
    loop_s = time.perf_counter() - t0
    bt.shutdown()
    s = bt.summary()
    span = int(bt.ev[0, -1] - bt.ev[0, 0])
    return {
        "days": days,
        "events": s["events"],
        "sim_days": span / 86_400e9,
        "loop_s": loop_s,
        "fills": s["fills"],
        "orders": s["orders_sent"],
        "pnl_usdc": s["pnl_usdc"],
        "state": "running",
    }


def run(days: int, model: bool, compiled: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(days)]
    if model:
        cmd.append("--model")
    if compiled:
        cmd.append("--compiled")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"run of {days} day(s) failed:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    out["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out["max_rss_mb"] = after.ru_maxrss / 1024  # the largest child so far (runs go up in size)
    out["cpu_us_per_event"] = out["cpu_s"] / out["events"] * 1e6
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--days", default="1,7", help="comma-separated lengths in days")
    ap.add_argument("--model", action="store_true", help="the ONNX model on")
    ap.add_argument(
        "--compiled", action="store_true", help="the compiled backtest loop instead of the engine"
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        work = compiled_worker if args.compiled else worker
        print(json.dumps(work(args.worker, args.model)))
        return
    missing = [f for f in FILES if not f.is_file()]
    if missing:
        raise SystemExit(f"data not found: {', '.join(map(str, missing))}")
    # parse the recordings into the cache once, outside the timed runs
    from flashmm.config import load_config
    from flashmm.feeds.cache import CachedFeed
    from flashmm.runner import scales_for

    CachedFeed(
        [str(f) for f in FILES], scales_for(load_config(ROOT / "configs" / "backtest.yaml").specs())
    )
    runs = [run(int(d), args.model, args.compiled) for d in args.days.split(",")]
    base = runs[0]["cpu_us_per_event"]
    for r in runs:
        r["cost_per_event_vs_first"] = r["cpu_us_per_event"] / base
    if args.json:
        print(json.dumps(runs, indent=2))
        return
    print(
        f"NEXO/USDT day looped, configs/backtest.yaml (model {'on' if args.model else 'off'}), "
        f"{'the compiled loop' if args.compiled else 'the engine'}, each length in a fresh process"
    )
    print(
        f"{'days':>5}{'events':>11}{'sim days':>10}{'wall s':>9}{'CPU s':>9}{'loop s':>9}"
        f"{'CPU µs/ev':>11}{'loop µs/ev':>11}{'vs first':>10}{'RSS MB':>9}{'fills':>8}"
        f"{'P&L':>10}"
    )
    for r in runs:
        print(
            f"{r['days']:>5}{r['events']:>11,}{r['sim_days']:>10.2f}{r['wall_s']:>9.1f}"
            f"{r['cpu_s']:>9.1f}{r['loop_s']:>9.2f}{r['cpu_us_per_event']:>11.1f}"
            f"{r['loop_s'] / r['events'] * 1e6:>11.2f}"
            f"{r['cost_per_event_vs_first']:>10.2f}{r['max_rss_mb']:>9.0f}{r['fills']:>8,}"
            f"{r['pnl_usdc']:>+10.2f}"
        )


if __name__ == "__main__":
    main()
