"""Same fills before and after a refactor: the NEXO day through paper replay and backtest.

Runs the full NEXO/USDT day (20240723 + 20240724) with ``configs/backtest.yaml``,
the model off and a fixed simulator seed, three times: as ``flashmm run`` replays
it (the async runner, speed 0, no loop), as ``flashmm backtest`` ran it in the
engine (``run_backtest(..., compiled=False)``: the numpy cache through
``Engine.step``), and as ``flashmm backtest`` runs it (the compiled loop).
Prints, for each, the fill count, P&L and a SHA-256 of the fills list (market,
client id, side, price, size, fee, liquidity, time, id), so a change that must
not move any trade can be checked by comparing two runs of this script.

Usage (from the repo root)::

    .venv/bin/python benchmarks/replay_parity.py [--seed N] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = [
    str(DATA / "binance_spot_nexousdt_20240723.dat.gz"),
    str(DATA / "binance_spot_nexousdt_20240724.dat.gz"),
]


def fills_digest(fills: Iterable[Any]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for f in fills:
        n += 1
        h.update(
            f"{f.market}|{f.client_id}|{f.side.name}|{f.price_ticks}|{f.size_lots}|"
            f"{f.fee_usdc:.9f}|{f.liquidity.name}|{f.ts_ns}|{f.fill_id}\n".encode()
        )
    return n, h.hexdigest()[:16]


def sets_for(seed: int, data_dir: str) -> list[str]:
    return [
        "model.enabled=false",
        f"venue.sim.seed={seed}",
        "feed.speed=0",
        "feed.loop=false",
        "ui.panel=false",
        f"control.data_dir={data_dir}",
    ]


def paper(seed: int) -> dict[str, Any]:
    from flashmm.config import load_config
    from flashmm.events import FillEvent
    from flashmm.runner import RunOptions, run_async, run_blocking

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "backtest.yaml", sets_for(seed, tmp))
        seen: dict[str, Any] = {}

        async def grab(engine: Any) -> None:
            seen["engine"] = engine

        opts = RunOptions(data=FILES, speed=0, loop=False, extra_tasks=[grab])
        summary = run_blocking(lambda: run_async(cfg, opts))
    fills = [e.fill for e in seen["engine"].outbox if isinstance(e, FillEvent)]
    n, digest = fills_digest(fills)
    return {"fills": n, "pnl_usdc": summary["pnl_usdc"], "events": summary["events"], "sha": digest}


def backtest(seed: int, compiled: bool = True) -> dict[str, Any]:
    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "backtest.yaml", sets_for(seed, tmp))
        res = run_backtest(cfg, FILES, cache_dir=Path(tmp) / "cache", compiled=compiled)
    n, digest = fills_digest(res.recorder.fills)
    r = res.report
    return {"fills": n, "pnl_usdc": r["pnl_usdc"], "events": r["events"], "sha": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7, help="simulator seed (venue.sim.seed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from loguru import logger

    logger.remove()
    out = {
        "paper": paper(args.seed),
        "engine": backtest(args.seed, compiled=False),
        "backtest": backtest(args.seed),
    }
    if args.json:
        print(json.dumps(out))
        return
    for name, r in out.items():
        print(
            f"{name:8s} fills {r['fills']:5d}  P&L {r['pnl_usdc']:+.6f} USDC  "
            f"events {r['events']}  fills sha256 {r['sha']}"
        )


if __name__ == "__main__":
    main()
