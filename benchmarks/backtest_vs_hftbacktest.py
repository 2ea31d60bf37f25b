"""FlashMM's backtester against hftbacktest: a simple market maker on the same data.

Not like-for-like, and the output says so. What each side runs:

- FlashMM: the engine with a 20-line fixed-spread strategy, a no-op signal
  (no features, no model), one order a side (one level), its own fill model
  (a trade printed through our price fills the whole resting order).
- hftbacktest: a numba ``@njit`` loop with the same quoting rule, its
  partial-fill exchange (a trade fills at most the printed quantity).

So the fills differ (FlashMM fills more), and FlashMM's engine here skips the
work it does in a real run (features, model, Avellaneda-Stoikov 3+3). Two
ratios are printed apart, never merged into one "faster" claim:

- cold (end to end): each tool in a fresh process, imports, data load and,
  for hftbacktest, its numba compile (about 8-9 s, paid by every process:
  its jitclass objects cannot use numba's on-disk cache);
- warm (loop only): the event loop alone, compiled code already loaded.

The strategy: one order a side at a fixed half spread around the mid
(``bid = floor(mid - H)``, ``ask = ceil(mid + H)`` in ticks, never crossing
the book), a fixed size, requoted every 200 ms (an order whose price or
remaining size differs from the wanted one is cancelled and replaced), no
bid above ``+max_pos`` and no ask below ``-max_pos``. No ML, no skew.

Both sides run on the full NEXO/USDT day (20240723 + 20240724 chained) with:
order entry and cancel latency 100 ms, response latency 50 ms; queue position
by the power-prob model with exponent 3 (hftbacktest ``power_prob_queue_model3``,
which is FlashMM's ``x**n`` share of cancels taken from ahead of us);
partial fills; maker fee 0, taker fee 5 bps.

Data for hftbacktest is converted from FlashMM's parsed cache (same ticks,
lots and timestamps): every depth level of a diff becomes a ``DEPTH_EVENT``
row, every trade a ``TRADE_EVENT`` row (side = aggressor), exchange time =
local receive time (FlashMM's simulator also runs the venue on the receive
time line), book tickers are dropped, the first REST snapshot is the
``initial_snapshot`` and diffs it already contains are dropped.

hftbacktest (PyPI ``hftbacktest`` 2.4.x) pulls numba and pins numpy 2.2, so it
lives in its own venv: the first run (or ``--setup``) creates
``.flashmm-cache/bench-venv`` (or ``$FLASHMM_BENCH_VENV``) and installs it
there; the hftbacktest half runs in a subprocess of that venv. The FlashMM
half runs in a subprocess of this interpreter, so both end-to-end figures
include interpreter start and imports.

Usage (from the repo root)::

    .venv/bin/python benchmarks/backtest_vs_hftbacktest.py --setup   # once
    .venv/bin/python benchmarks/backtest_vs_hftbacktest.py [--half-spread-ticks 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = [
    DATA / "binance_spot_nexousdt_20240723.dat.gz",
    DATA / "binance_spot_nexousdt_20240724.dat.gz",
]
TICK, LOT = 0.001, 0.01
ENTRY_MS, CANCEL_MS, RESP_MS = 100, 100, 50
QUEUE_POWER = 3.0
MAKER_FEE, TAKER_FEE = 0.0, 0.0005
STEP_NS = 200_000_000
SIDES = {
    "FlashMM": "engine with a fixed-spread strategy; features off, model off (no-op signal); "
    "1 order a side (1 level); fill model: a trade through our price fills the whole order",
    "hftbacktest": "numba loop, same quoting rule; 1 order a side; partial-fill exchange "
    "(a trade fills at most the printed quantity)",
}


def bench_venv() -> Path:
    env = os.environ.get("FLASHMM_BENCH_VENV")
    return Path(env) if env else ROOT / ".flashmm-cache" / "bench-venv"


def setup_venv() -> Path:
    venv = bench_venv()
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "hftbacktest>=2.4,<2.5"], check=True)
    return py


# --- FlashMM half ---------------------------------------------------------------


def flashmm_sets() -> list[str]:
    """configs/backtest.yaml with the benchmark's venue, no ML and limits out of the way."""
    return [
        "model.enabled=false",
        "strategy.requote_mid_move_bps=0",
        "strategy.quote_hz=5",
        "risk.kill_switch_enabled=false",
        "risk.stale_feed_ms=1000000000",
        "risk.max_position_usdc=1000000",
        "risk.max_order_usdc=1000000",
        "risk.daily_loss_limit_usdc=1000000000",
        "risk.max_drawdown_usdc=1000000000",
        f"venue.sim.entry_latency_ms={ENTRY_MS}",
        f"venue.sim.cancel_latency_ms={CANCEL_MS}",
        f"venue.sim.feed_latency_ms={RESP_MS}",
        f"venue.sim.queue_power={QUEUE_POWER}",
        f"venue.sim.maker_fee_bps={MAKER_FEE * 1e4}",
        f"venue.sim.taker_fee_bps={TAKER_FEE * 1e4}",
    ]


def make_fixed_spread_strategy(half_ticks: int, lots: int, max_pos_lots: int) -> Any:
    from typing import ClassVar

    from pydantic import BaseModel

    from flashmm.strategy.base import QuoteContext
    from flashmm.types import Quote, Side

    class FixedSpreadMM:
        """One level a side at ``half_ticks`` from the mid; the tiny benchmark strategy."""

        name: ClassVar[str] = "fixed_spread"
        params_model: ClassVar[type[BaseModel]] = BaseModel

        def quote(self, ctx: QuoteContext) -> list[Quote]:
            bb, ba = ctx.best_bid, ctx.best_ask
            if bb <= 0 or ba <= bb:
                return []
            mid2 = bb + ba
            bid = min((mid2 - 2 * half_ticks) // 2, ba - 1)
            ask = max(-((-(mid2 + 2 * half_ticks)) // 2), bb + 1)
            out = []
            if ctx.position_lots + lots <= max_pos_lots:
                out.append(Quote(Side.BUY, bid, lots))
            if ctx.position_lots - lots >= -max_pos_lots:
                out.append(Quote(Side.SELL, ask, lots))
            return out

    return FixedSpreadMM()


class NullSignal:
    """No signal at all (the benchmark strategy uses none): no features, no model."""

    def on_book(self, book: Any, ts_ns: int) -> None:
        return None

    def on_trade(self, trade: Any) -> None:
        return None

    def signal(self, ts_ns: int, mid: float) -> Any:
        from flashmm.types import Signal

        return Signal()

    def adjust(self, signal: Any) -> tuple[float, float]:
        return 0.0, 1.0

    def status(self) -> dict[str, object]:
        return {"source": "none"}


def flashmm_worker(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    t_imp = time.perf_counter()
    cfg = load_config(ROOT / "configs" / "backtest.yaml", flashmm_sets())
    strat = make_fixed_spread_strategy(args.half_spread_ticks, args.lots, args.max_pos_lots)
    null = NullSignal()
    res = run_backtest(cfg, [str(f) for f in FILES], strategy=strat, signals=lambda spec: null)
    rep = res.report
    pos = res.engine.acct.positions["SEI/USDC"]
    return {
        "events": rep["events"],
        "import_s": t_imp - t_start,
        "load_s": rep["load_s"],
        "loop_s": rep["loop_s"],
        "run_s": rep["wall_s"],
        "from_cache": rep["data"]["from_cache"],
        "fills": rep["fills"],
        "maker_fills": rep["maker_fills"],
        "orders": rep["orders_sent"],
        "cancels": rep["cancels_sent"],
        "volume_usdc": rep["volume_usdc"],
        "pnl_usdc": rep["pnl_usdc"],
        "fees_usdc": rep["fees_usdc"],
        "position": pos.lots * LOT,
    }


# --- data conversion --------------------------------------------------------------


def hbt_data_path() -> Path:
    from flashmm.feeds.cache import default_cache_dir, file_sha256

    digest = "-".join(file_sha256(f)[:12] for f in FILES)
    return default_cache_dir() / "hftbacktest" / f"nexo-{digest}-v2.npz"


def convert_for_hftbacktest(out: Path) -> dict[str, Any]:
    """FlashMM's cached arrays -> hftbacktest event rows (``data``) and ``snapshot``."""
    import numpy as np

    from flashmm.feeds.binance import Scale
    from flashmm.feeds.cache import K_DIFF, K_SNAPSHOT, K_TRADE, CachedFeed

    t0 = time.perf_counter()
    feed = CachedFeed(FILES, {"nexousdt": Scale.of(TICK, LOT)})
    t_load = time.perf_counter() - t0
    ev_dtype = np.dtype(
        [("ev", "u8"), ("exch_ts", "i8"), ("local_ts", "i8"), ("px", "f8"), ("qty", "f8"),
         ("order_id", "u8"), ("ival", "i8"), ("fval", "f8")],
        align=True,
    )  # fmt: skip
    exch, local, buy, sell = 1 << 31, 1 << 30, 1 << 29, 1 << 28
    depth, trade, snap = 1, 2, 4
    recs = feed.recordings["nexousdt"]
    # chained files: global row/level offsets
    evs = np.concatenate([r.events for r in recs])
    lv_parts, base = [], 0
    starts = []
    for r in recs:
        starts.append(r.events["lv_start"] + base)
        lv_parts.append(r.levels)
        base += len(r.levels)
    lv_start = np.concatenate(starts)
    levels = np.concatenate(lv_parts)
    snaps = np.flatnonzero(evs["kind"] == K_SNAPSHOT)
    if not len(snaps):
        raise SystemExit("no snapshot in the data")
    si = int(snaps[0])
    snap_id = int(evs["first_id"][si])
    snap_ts = int(evs["ts_ns"][si])
    # the snapshot
    s0, nb, na = int(lv_start[si]), int(evs["n_bids"][si]), int(evs["n_asks"][si])
    sn = np.zeros(nb + na, ev_dtype)
    side = np.concatenate([np.full(nb, buy, "u8"), np.full(na, sell, "u8")])
    sn["ev"] = snap | exch | local | side
    sn["exch_ts"] = snap_ts
    sn["local_ts"] = snap_ts
    sn["px"] = levels[s0 : s0 + nb + na, 0] * TICK
    sn["qty"] = levels[s0 : s0 + nb + na, 1] * LOT
    # diffs the snapshot does not contain, and trades, from the snapshot on
    kind = evs["kind"]
    keep_diff = (kind == K_DIFF) & (evs["last_id"] > snap_id)
    keep_trade = (kind == K_TRADE) & (np.arange(len(evs)) > si)
    rows_per = np.where(
        keep_diff, evs["n_bids"] + evs["n_asks"], np.where(keep_trade, 1, 0)
    ).astype(np.int64)
    n = int(rows_per.sum())
    data = np.zeros(n, ev_dtype)
    ev_idx = np.repeat(np.arange(len(evs)), rows_per)
    pos_in = np.arange(n) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
    ts = np.maximum(evs["ts_ns"][ev_idx], snap_ts)
    data["exch_ts"] = ts
    data["local_ts"] = ts
    is_tr = kind[ev_idx] == K_TRADE
    lvi = lv_start[ev_idx] + pos_in
    lvi[is_tr] = 0
    is_bid = pos_in < evs["n_bids"][ev_idx]
    data["ev"] = np.where(
        is_tr,
        trade | exch | local | np.where(evs["side"][ev_idx] > 0, buy, sell),
        depth | exch | local | np.where(is_bid, buy, sell),
    ).astype("u8")
    data["px"] = np.where(is_tr, evs["px_tick"][ev_idx], levels[lvi, 0]) * TICK
    data["qty"] = np.where(is_tr, evs["qty_lot"][ev_idx], levels[lvi, 1]) * LOT
    order = np.argsort(data["local_ts"], kind="stable")
    data = data[order]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, data=data, snapshot=sn)
    return {
        "rows": n,
        "snapshot_rows": len(sn),
        "load_s": t_load,
        "convert_s": time.perf_counter() - t0,
    }


# --- hftbacktest half (runs in the bench venv; imports no FlashMM) ---------------------

HBT_CODE = r"""
import json, sys, time
t_start = time.perf_counter()
import numpy as np
from numba import njit
from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest, GTX, LIMIT, BUY, SELL
t_imp = time.perf_counter()
a = json.loads(sys.argv[1])

@njit
def mm(hbt, half_ticks, qty, max_pos, step_ns, stats):
    tick = hbt.depth(0).tick_size
    next_id = 1
    bid_id = 0
    ask_id = 0
    while hbt.elapse(step_ns) == 0:
        hbt.clear_inactive_orders(0)
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb <= 0 or ba <= bb or ba >= 2**62:
            continue
        mid2 = bb + ba
        bid = min((mid2 - 2 * half_ticks) // 2, ba - 1)
        ask = max(-((-(mid2 + 2 * half_ticks)) // 2), bb + 1)
        pos = hbt.position(0)
        orders = hbt.orders(0)
        want_bid = pos + qty <= max_pos + 1e-9
        want_ask = pos - qty >= -max_pos - 1e-9
        # bid
        live = False
        o = orders.get(bid_id)
        if o is not None and (o.status == 1 or o.status == 5 or o.req == 1):
            if o.price_tick == bid and abs(o.leaves_qty - qty) < 1e-9 and want_bid:
                live = True
            elif o.cancellable:
                hbt.cancel(0, bid_id, False)
                stats[3] += 1
            else:
                live = True  # a request is in flight: decide next cycle
        if not live and want_bid:
            bid_id = next_id
            next_id += 1
            hbt.submit_buy_order(0, bid_id, bid * tick, qty, GTX, LIMIT, False)
            stats[2] += 1
        # ask
        live = False
        o = orders.get(ask_id)
        if o is not None and (o.status == 1 or o.status == 5 or o.req == 1):
            if o.price_tick == ask and abs(o.leaves_qty - qty) < 1e-9 and want_ask:
                live = True
            elif o.cancellable:
                hbt.cancel(0, ask_id, False)
                stats[3] += 1
            else:
                live = True
        if not live and want_ask:
            ask_id = next_id
            next_id += 1
            hbt.submit_sell_order(0, ask_id, ask * tick, qty, GTX, LIMIT, False)
            stats[2] += 1
        stats[0] = (bb + ba) * 0.5 * tick
    return True

def build(data, snapshot):
    asset = (
        BacktestAsset()
        .data([data])
        .initial_snapshot(snapshot)
        .linear_asset(1.0)
        .constant_order_latency(a["entry_ns"], a["resp_ns"])
        .power_prob_queue_model3(a["queue_power"])
        .partial_fill_exchange()
        .trading_value_fee_model(a["maker_fee"], a["taker_fee"])
        .tick_size(a["tick"])
        .lot_size(a["lot"])
        .last_trades_capacity(0)
    )
    return HashMapMarketDepthBacktest([asset])

t0 = time.perf_counter()
z = np.load(a["path"])
data, snapshot = z["data"], z["snapshot"]
t_load = time.perf_counter()
# JIT: compile on a small slice first (the compile time is part of end to end)
head = data[:2000].copy()  # hftbacktest keeps a pointer: the array must stay alive
warm = build(head, snapshot)
mm(warm, a["half_ticks"], a["qty"], a["max_pos"], a["step_ns"], np.zeros(4))
warm.close()
t_jit = time.perf_counter()
hbt = build(data, snapshot)
t_build = time.perf_counter()
stats = np.zeros(4)
mm(hbt, a["half_ticks"], a["qty"], a["max_pos"], a["step_ns"], stats)
t_loop = time.perf_counter()
sv = hbt.state_values(0)
mid = stats[0]
res = {
    "rows": int(len(data)),
    "import_s": t_imp - t_start,
    "load_s": t_load - t0,
    "jit_s": t_jit - t_load,
    "build_s": t_build - t_jit,
    "loop_s": t_loop - t_build,
    "fills": int(sv.num_trades),
    "orders": int(stats[2]),
    "cancels": int(stats[3]),
    "volume_usdc": float(sv.trading_value),
    "pnl_usdc": float(sv.balance + sv.position * mid - sv.fee),
    "fees_usdc": float(sv.fee),
    "position": float(sv.position),
}
hbt.close()
print(json.dumps(res))
"""


def run_hbt(py: Path, path: Path, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    params = {
        "path": str(path),
        "entry_ns": ENTRY_MS * 1_000_000,
        "resp_ns": RESP_MS * 1_000_000,
        "queue_power": QUEUE_POWER,
        "maker_fee": MAKER_FEE,
        "taker_fee": TAKER_FEE,
        "tick": TICK,
        "lot": LOT,
        "half_ticks": args.half_spread_ticks,
        "qty": args.lots * LOT,
        "max_pos": args.max_pos_lots * LOT,
        "step_ns": STEP_NS,
    }
    t0 = time.perf_counter()
    p = subprocess.run(
        [str(py), "-c", HBT_CODE, json.dumps(params)], capture_output=True, text=True, cwd="/"
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"hftbacktest run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def run_flashmm(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--flashmm-worker",
           "--half-spread-ticks", str(args.half_spread_ticks), "--lots", str(args.lots),
           "--max-pos-lots", str(args.max_pos_lots)]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"FlashMM run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--setup", action="store_true", help="create the bench venv with hftbacktest and exit"
    )
    ap.add_argument("--half-spread-ticks", type=int, default=1)
    ap.add_argument("--lots", type=int, default=4000, help="order size in lots (0.01 NEXO)")
    ap.add_argument("--max-pos-lots", type=int, default=40000)
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs of each side; the best time is shown"
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--flashmm-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flashmm_worker:
        from loguru import logger

        logger.remove()
        print(json.dumps(flashmm_worker(args)))
        return
    if args.setup:
        print(f"hftbacktest installed in {setup_venv().parent.parent}")
        return
    py = bench_venv() / "bin" / "python"
    if not py.exists():  # its own venv, never this one (hftbacktest pins numpy 2.2)
        print(f"creating the hftbacktest venv at {py.parent.parent} (once)", file=sys.stderr)
        py = setup_venv()
    missing = [f for f in FILES if not f.is_file()]
    if missing:
        raise SystemExit(f"data not found: {', '.join(map(str, missing))}")
    # one-off preparation (not timed as part of a run): FlashMM's cache, hftbacktest's npz
    from flashmm.feeds.binance import Scale
    from flashmm.feeds.cache import CachedFeed

    t0 = time.perf_counter()
    CachedFeed(FILES, {"nexousdt": Scale.of(TICK, LOT)})
    prep_flashmm = time.perf_counter() - t0
    path = hbt_data_path()
    conv: dict[str, Any] = {}
    if not path.is_file():
        conv = convert_for_hftbacktest(path)
    fm_runs = [run_flashmm(args) for _ in range(args.repeat)]
    hb_runs = [run_hbt(py, path, args) for _ in range(args.repeat)]
    fm, fm_wall = min(fm_runs, key=lambda r: r[1])
    hb, hb_wall = min(hb_runs, key=lambda r: r[1])
    n = fm["events"]
    out = {
        "events": n,
        "hbt_rows": hb["rows"],
        "flashmm": {**fm, "end_to_end_s": fm_wall},
        "hftbacktest": {**hb, "end_to_end_s": hb_wall},
        "prep": {"flashmm_cache_s": prep_flashmm, **{f"hbt_{k}": v for k, v in conv.items()}},
        "flashmm_events_per_s": n / fm_wall,
        "flashmm_loop_events_per_s": n / fm["loop_s"],
        "hbt_events_per_s": n / hb_wall,
        "hbt_loop_events_per_s": n / hb["loop_s"],
        # > 1: FlashMM took less time. Not like-for-like (see SIDES).
        "ratio_cold_end_to_end": hb_wall / fm_wall,
        "ratio_warm_loop": hb["loop_s"] / fm["loop_s"],
        "like_for_like": False,
        "sides": SIDES,
        "params": {
            "half_spread_ticks": args.half_spread_ticks,
            "lots": args.lots,
            "max_pos_lots": args.max_pos_lots,
        },
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"NEXO/USDT 20240723+20240724: {n:,} recorded events ({hb['rows']:,} hftbacktest rows)")
    print(f"fixed half spread {args.half_spread_ticks} tick(s), {args.lots * LOT:g} NEXO a side, "
          f"requote 200 ms, latency {ENTRY_MS}/{CANCEL_MS}/{RESP_MS} ms, "
          f"power-prob queue n={QUEUE_POWER:g}")  # fmt: skip
    print()
    rows = [
        ("end to end (s)", f"{fm_wall:.2f}", f"{hb_wall:.2f}"),
        ("  imports (s)", f"{fm['import_s']:.2f}", f"{hb['import_s']:.2f}"),
        ("  data load (s)", f"{fm['load_s']:.2f}", f"{hb['load_s']:.2f}"),
        ("  JIT compile (s)", "-", f"{hb['jit_s']:.2f}"),
        ("  loop (s)", f"{fm['loop_s']:.2f}", f"{hb['loop_s']:.2f}"),
        ("events/s end to end", f"{n / fm_wall:,.0f}", f"{n / hb_wall:,.0f}"),
        ("events/s loop only", f"{n / fm['loop_s']:,.0f}", f"{n / hb['loop_s']:,.0f}"),
        ("fills", f"{fm['fills']:,}", f"{hb['fills']:,}"),
        (
            "orders / cancels",
            f"{fm['orders']:,} / {fm['cancels']:,}",
            f"{hb['orders']:,} / {hb['cancels']:,}",
        ),
        ("volume (USDC)", f"{fm['volume_usdc']:,.2f}", f"{hb['volume_usdc']:,.2f}"),
        ("P&L (USDC)", f"{fm['pnl_usdc']:+,.4f}", f"{hb['pnl_usdc']:+,.4f}"),
        ("fees (USDC)", f"{fm['fees_usdc']:,.4f}", f"{hb['fees_usdc']:,.4f}"),
        ("final position (NEXO)", f"{fm['position']:,.2f}", f"{hb['position']:,.2f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'':{w}}  {'FlashMM':>16}  {'hftbacktest':>16}")
    for k, a, b in rows:
        print(f"{k:{w}}  {a:>16}  {b:>16}")
    print()
    print("what each side ran (NOT like-for-like):")
    for k, v in SIDES.items():
        print(f"  {k}: {v}")
    print("time ratio hftbacktest / FlashMM (> 1: FlashMM took less time):")
    print(f"  cold, fresh process end to end (hftbacktest includes its numba compile): "
          f"{hb_wall / fm_wall:.2f}")  # fmt: skip
    print(f"  warm, loop only: {hb['loop_s'] / fm['loop_s']:.3f}")
    if conv:
        print(
            f"one-off prep: FlashMM cache {prep_flashmm:.2f} s; "
            f"hftbacktest conversion {conv['convert_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
