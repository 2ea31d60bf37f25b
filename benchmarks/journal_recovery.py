"""Journal recovery time: start-up on a journal holding many fills.

Writes ``--fills`` fills (default 1,000,000) through the journal's writer
into a temporary journal (plus one order event per fill), closes it, then
times what a bot does on start: open the journal (lock, checks, checkpoint,
recent fill ids) and ``load_state`` (positions and P&L from the checkpoint,
the newest fills, open orders, breakers, last mode command). For
comparison it also times rebuilding the positions from every fill, which
is what start-up did before the checkpoint.

    python benchmarks/journal_recovery.py [--fills N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from flashmm.accounting import apply_fill
from flashmm.logs import setup_logging
from flashmm.ops.journal import Journal
from flashmm.types import Fill, Liquidity, MarketSpec, Order, OrderState, Position, Side

SPEC = MarketSpec("SEI/USDC", Decimal("0.0001"), Decimal("1"), "seiusdt")
SPECS = {SPEC.symbol: SPEC}


def build(folder: Path, n: int) -> float:
    t0 = time.perf_counter()
    with Journal(folder, name="bench", specs=SPECS, batch_max=5000) as j:
        for i in range(1, n + 1):
            side = Side.BUY if (i // 3) % 2 else Side.SELL
            price, size = 5000 + i % 50, 1 + i % 5
            fid = f"0xabc{i:012x}:0"
            j.fill(Fill(SPEC.symbol, i, side, price, size, 0.001, Liquidity.MAKER, i, fid))
            o = Order(SPEC.symbol, i, side, 5000, 5, 0, OrderState.DONE, i)
            j.order_event(o, i, "filled")
            if i % 50_000 == 0:
                j.flush(60)
                j.poll_durable()
        j.flush(120)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fills", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="where to build the journal (default: a tmp dir)")
    args = ap.parse_args()
    setup_logging("WARNING")
    folder = Path(args.dir or tempfile.mkdtemp(prefix="fmm-journal-bench-"))
    print(f"building a journal of {args.fills:,} fills in {folder} ...", flush=True)
    built = build(folder, args.fills)
    size = sum(f.stat().st_size for f in folder.glob("bench.sqlite*"))
    print(f"  built in {built:.1f} s, {size / 1e6:.0f} MB")

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with Journal(folder, name="bench", specs=SPECS) as j:
        t1 = time.perf_counter()
        st = j.load_state(SPECS)
        t2 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pos = st.positions[SPEC.symbol]
    print(
        f"start-up: open {1e3 * (t1 - t0):.0f} ms + load_state {1e3 * (t2 - t1):.0f} ms"
        f" = {t2 - t0:.3f} s for {st.fill_count:,} fills"
        f" (position {pos.lots} lots, realized {pos.realized_usdc:.4f} USDC);"
        f" peak RSS grew {max(0, rss1 - rss0) / 1024:.0f} MB"
    )

    # the old way, for comparison: every fill read and applied
    t0 = time.perf_counter()
    conn = sqlite3.connect(f"file:{folder / 'bench.sqlite'}?mode=ro", uri=True)
    full = Position(SPEC.symbol)
    for side, price, size, fee, ts in conn.execute(
        "SELECT side, price_ticks, size_lots, fee_usdc, ts_ns FROM fills ORDER BY id"
    ):
        apply_fill(
            full, Fill(SPEC.symbol, 0, Side(side), price, size, fee, Liquidity.MAKER, ts), SPEC
        )
    conn.close()
    t1 = time.perf_counter()
    same = full.lots == pos.lots and abs(full.realized_usdc - pos.realized_usdc) < 1e-6
    print(f"replaying every fill instead: {t1 - t0:.2f} s (same position and P&L: {same})")


if __name__ == "__main__":
    main()
