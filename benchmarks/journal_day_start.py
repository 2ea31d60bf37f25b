"""The daily-loss baseline on start: ``Journal.pnl_at`` (the P&L at 00:00 UTC today)
on a journal holding many fills.

Writes ``--fills`` fills (default 200,000) of two markets through the journal's
writer, ``--today`` of them (a share, default 0.9) after 00:00 UTC, with a
position snapshot per market every ``--snap-every`` fills (the bot journals one
per market at most every 10 s, when its position changed), closes it, then times
what a start does: ``load_state`` and ``pnl_at`` at 00:00 UTC, and prints the
query plans of ``pnl_at``'s statements.

    python benchmarks/journal_day_start.py [--fills N] [--today SHARE] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from flashmm.accounting import apply_fill
from flashmm.logs import setup_logging
from flashmm.ops.journal import Journal
from flashmm.ops.journal.reader import PNL_AT_QUERIES
from flashmm.types import Fill, Liquidity, MarketSpec, Position, Side

SPECS = {
    s.symbol: s
    for s in (
        MarketSpec("SEI/USDC", Decimal("0.0001"), Decimal("1"), "seiusdt"),
        MarketSpec("ETH/USDC", Decimal("0.01"), Decimal("0.001"), "ethusdt"),
    )
}
NS_PER_DAY = 86_400 * 1_000_000_000
MIDNIGHT = 20_000 * NS_PER_DAY


def build(folder: Path, n: int, today: float, snap_every: int) -> float:
    t0 = time.perf_counter()
    before = n - int(n * today)
    step = NS_PER_DAY // max(n, 1)
    markets = list(SPECS)
    pos = {m: Position(m) for m in markets}
    with Journal(folder, name="bench", specs=SPECS, batch_max=5000) as j:
        for i in range(1, n + 1):
            m = markets[0] if i % 4 else markets[1]  # 3 of 4 fills on the first market
            side = Side.BUY if (i // 3) % 2 else Side.SELL
            price, size = 5000 + i % 50, 1 + i % 5
            ts = MIDNIGHT + (i - before) * step
            fill = Fill(m, i, side, price, size, 0.001, Liquidity.MAKER, ts, f"0x{i:012x}:0")
            j.fill(fill)
            apply_fill(pos[m], fill, SPECS[m])
            if i % snap_every == 0:
                for p in pos.values():
                    j.position_snapshot(p, ts, mid_ticks=5025.0)
            if i % 50_000 == 0:
                j.flush(60)
                j.poll_durable()
        j.flush(120)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fills", type=int, default=200_000)
    ap.add_argument("--today", type=float, default=0.9, help="share of fills after 00:00 UTC")
    ap.add_argument("--snap-every", type=int, default=10, help="fills between snapshots")
    ap.add_argument("--dir", default=None, help="where to build the journal (default: a tmp dir)")
    args = ap.parse_args()
    setup_logging("WARNING")
    folder = Path(args.dir or tempfile.mkdtemp(prefix="fmm-daystart-bench-"))
    print(f"building a journal of {args.fills:,} fills in {folder} ...", flush=True)
    built = build(folder, args.fills, args.today, args.snap_every)
    print(f"  built in {built:.1f} s")
    with Journal(folder, name="bench", specs=SPECS) as j:
        t0 = time.perf_counter()
        st = j.load_state(SPECS)
        t1 = time.perf_counter()
        base = j.pnl_at(MIDNIGHT, st.positions)
        t2 = time.perf_counter()
        path = j.path
    print(
        f"start-up: load_state {1e3 * (t1 - t0):.0f} ms, pnl_at {1e3 * (t2 - t1):.0f} ms"
        f" (P&L at 00:00 UTC {base:.4f} USDC)"
    )
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    for sql in PNL_AT_QUERIES:
        args = (next(iter(SPECS)), *[0] * (sql.count("?") - 1))
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
        print(f"{sql}\n  -> {'; '.join(r[-1] for r in plan)}")
    conn.close()


if __name__ == "__main__":
    main()
