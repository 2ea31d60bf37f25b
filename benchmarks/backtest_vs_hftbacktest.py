"""FlashMM's backtester against hftbacktest, like for like, on the NEXO/USDT day.

Both sides run the same market maker on the same data with the same venue model:

- Strategy and cadence: one order a side at a fixed half spread around the mid
  (``bid = floor(mid - H)``, ``ask = ceil(mid + H)`` in ticks, never crossing the
  book), a fixed size, decided every 200 ms (an order whose price or remaining
  size differs from the wanted one is cancelled and replaced), no bid above
  ``+max_pos`` and no ask below ``-max_pos``. In FlashMM it is a plain-Python
  strategy plugin (``quote(ctx)``); in hftbacktest a numba ``@njit`` loop over
  ``elapse(200 ms)``.
- Engine: FlashMM runs the engine a user runs (``flashmm backtest``'s
  ``run_backtest``: book, the 64 online features, the signal, risk checks,
  accounting, the simulated venue, the backtest recorder), in two variants:
  ``model on`` (features + the ONNX model behind its breaker) and ``model off``
  (features + the imbalance rule). The strategy ignores the signal's skew, so
  both variants quote exactly as hftbacktest does and pay the signal's cost.
  hftbacktest computes no features and no model: its loop is the bare strategy.
- Venue: order entry and cancel latency 100 ms, response latency 50 ms; queue
  position by the power-prob model with exponent 3 (FlashMM ``queue_power=3``,
  hftbacktest ``power_prob_queue_model3(3)``); maker fee 0, taker fee 5 bps;
  fills: hftbacktest's partial-fill exchange, FlashMM's ``fill_model``
  (``--fill-model``): ``whole_order`` by default, because that is what
  hftbacktest 2.4.4 does (a trade through the price fills the whole order; a
  trade at the price fills what passes the queue, capped by the order);
  ``printed_size`` caps a trade-through fill at the printed size too.
- Accounting: hftbacktest 2.4.4 books a fill into its own position and trade
  counters only when a response says the order is completely filled, with that
  response's quantity, so partial fills are lost there (its ``state_values``
  are printed apart). The hftbacktest loop therefore books every fill itself
  from each order's ``leaves_qty`` (orders filled, quantity, volume, position,
  P&L), and quotes on that position, as FlashMM does.

Variants ``compiled off`` and ``compiled on`` run ``flashmm backtest``'s
``run_backtest`` with the built-in strategy (a plugin such as the fixed-spread one
runs only in the Python engine), which goes through the compiled backtest loop
(``flashmm.backtest.compiled``: book, features, signal, strategy, risk, simulated
venue and accounting in one numba loop), with the same venue settings. The built-in
Avellaneda-Stoikov strategy is set (``builtin_sets``) to a rule hftbacktest runs as
well: one level a side at ``--half-spread-bps`` of the mid (bid rounded down, ask
up, never crossing), ``--size-usdc`` a quote, no inventory or signal term. They are
compared with a second hftbacktest process running that ``builtin`` rule. The
features and the signal (rule or model) are still computed on every event and
decision; only their skew is capped at 0.

Figures (time ratios are hftbacktest / FlashMM: > 1 means FlashMM took less time):

- warm: the event loop alone in a process that already ran it once (imports
  done, data loaded, hftbacktest's numba code compiled);
- cold: what a fresh install pays from recorded data to a result: the data
  conversion (FlashMM parses the gzip JSON into its cache inside its first run;
  for hftbacktest the recording is parsed and turned into its event rows,
  timed in a fresh process) plus a fresh process that imports, loads, compiles
  (hftbacktest's numba JIT: its jitclass objects cannot use numba's disk cache;
  FlashMM's numba kernels were compiled at install, ``python -m flashmm.native``,
  which the script runs first, untimed, as the install does) and runs the day once;
- events/s on hftbacktest's row count (each depth level and each trade is a row),
  the same denominator for both.

hftbacktest (PyPI ``hftbacktest`` 2.4.x) pulls numba and pins numpy 2.2, so it
lives in its own venv: ``--setup`` (or the first run) creates
``.flashmm-cache/bench-venv`` (or ``$FLASHMM_BENCH_VENV``) and installs it there;
its half runs in a subprocess of that venv and imports nothing of FlashMM.

Usage (from the repo root)::

    .venv/bin/python benchmarks/backtest_vs_hftbacktest.py --setup   # once
    nice -n 15 .venv/bin/python benchmarks/backtest_vs_hftbacktest.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
TICK, LOT = 0.001, 0.01
ENTRY_MS, CANCEL_MS, RESP_MS = 100, 100, 50
QUEUE_POWER = 3.0
MAKER_FEE, TAKER_FEE = 0.0, 0.0005
STEP_NS = 200_000_000
VARIANTS = {"model off": False, "model on": True, "compiled off": False, "compiled on": True}


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


def flashmm_sets(model: bool, fill_model: str) -> list[str]:
    """configs/backtest.yaml with the benchmark's venue and limits out of the way."""
    return [
        f"model.enabled={'true' if model else 'false'}",
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
        f"venue.sim.fill_model={fill_model}",
        f"venue.sim.maker_fee_bps={MAKER_FEE * 1e4}",
        f"venue.sim.taker_fee_bps={TAKER_FEE * 1e4}",
    ]


def builtin_sets(half_bps: float, size_usdc: float) -> list[str]:
    """The built-in strategy (the compiled loop's) set to hftbacktest's ``builtin``
    rule: one level a side at ``half_bps`` of the mid (bid rounded down, ask up, never
    crossing the book), ``size_usdc`` a quote (``int(size / (price * tick * lot))``
    lots), no inventory or signal term (``kappa`` huge and ``horizon_s`` tiny make the
    Avellaneda-Stoikov half spread vanish under ``min_spread_bps / 2``; the signal's
    skew is capped at 0), requoted every 200 ms whenever price or size differ."""
    return [
        "strategy.params.levels=1",
        f"strategy.params.order_size_usdc={size_usdc}",
        f"strategy.params.min_spread_bps={2 * half_bps}",
        "strategy.params.kappa=1000000000",
        "strategy.params.horizon_s=0.000000001",
        "strategy.params.refresh_tolerance_bps=0",
        "strategy.params.refresh_size_tolerance=0",
        "model.max_skew_bps=0",
    ]


def make_fixed_spread_strategy(half_ticks: int, lots: int, max_pos_lots: int) -> Any:
    from typing import ClassVar

    from pydantic import BaseModel

    from flashmm.strategy.base import QuoteContext
    from flashmm.types import Quote, Side

    class NoParams(BaseModel):
        """The strategy's settings: none (so no refresh tolerances either)."""

    class FixedSpreadMM:
        """One level a side at ``half_ticks`` from the mid; the benchmark strategy."""

        name: ClassVar[str] = "fixed_spread"
        params_model: ClassVar[type[BaseModel]] = NoParams
        params: BaseModel = NoParams()

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


def flashmm_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the day ``args.runs`` times in this process: the first is the cold run."""
    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    cfg = load_config(ROOT / "configs" / "backtest.yaml", flashmm_sets(args.model, args.fill_model))
    cache = Path(args.cache_dir) if args.cache_dir else None
    loops, loops_cpu, runs = [], [], []
    first: dict[str, Any] = {}
    for i in range(args.runs):
        strat = make_fixed_spread_strategy(args.half_spread_ticks, args.lots, args.max_pos_lots)
        res = run_backtest(cfg, [str(f) for f in FILES], strategy=strat, cache_dir=cache)
        rep = res.report
        if i == 0:
            first = {
                "cold_s": time.time() - args.t_spawn,  # interpreter start to first result
                "cold_cpu_s": _cpu_self(),
                "parse_s": rep["load_s"],
                "from_cache": rep["data"]["from_cache"],
            }
        loops.append(rep["loop_s"])
        loops_cpu.append(rep["loop_cpu_s"])
        runs.append(rep["wall_s"])
    pos = res.engine.acct.positions["SEI/USDC"]
    fills = res.recorder.fills
    return {
        **first,
        "events": rep["events"],
        "loop_s": loops,
        "loop_cpu_s": loops_cpu,
        "run_s": runs,
        "fills": rep["fills"],
        "orders_filled": len({f.client_id for f in fills}),
        "filled_qty": sum(f.size_lots for f in fills) * LOT,
        "orders": rep["orders_sent"],
        "cancels": rep["cancels_sent"],
        "volume_usdc": rep["volume_usdc"],
        "pnl_usdc": rep["pnl_usdc"],
        "fees_usdc": rep["fees_usdc"],
        "position": pos.lots * LOT,
    }


def flashmm_compiled_worker(args: argparse.Namespace) -> dict[str, Any]:
    """``flashmm backtest``'s ``run_backtest`` with the built-in strategy, which goes
    through the compiled loop (``flashmm.backtest.compiled``), with the benchmark's
    venue settings and :func:`builtin_sets`; ``args.runs`` runs in this process, the
    first cold. Fails if the run fell back to the Python engine."""
    from loguru import logger

    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    fell_back: list[str] = []
    logger.add(  # INFO: a DEBUG sink would format every debug line of the run
        lambda m: fell_back.append(str(m)),
        level="INFO",
        filter=lambda r: "Python engine" in r["message"],
    )
    sets = flashmm_sets(args.model, args.fill_model)
    sets += builtin_sets(args.half_spread_bps, args.size_usdc)
    cfg = load_config(ROOT / "configs" / "backtest.yaml", sets)
    cache = Path(args.cache_dir) if args.cache_dir else None
    loops, loops_cpu, runs = [], [], []
    first: dict[str, Any] = {}
    for i in range(args.runs):
        res = run_backtest(cfg, [str(f) for f in FILES], cache_dir=cache)
        if fell_back:
            raise SystemExit(f"not the compiled loop: {fell_back[0].strip()}")
        rep = res.report
        if i == 0:
            first = {
                "cold_s": time.time() - args.t_spawn,
                "cold_cpu_s": _cpu_self(),
                "parse_s": rep["load_s"],
                "from_cache": rep["data"]["from_cache"],
            }
        loops.append(rep["loop_s"])
        loops_cpu.append(rep["loop_cpu_s"])
        runs.append(rep["wall_s"])
    fills = res.recorder.fills
    pos = res.engine.acct.positions["SEI/USDC"]
    return {
        **first,
        "events": rep["events"],
        "loop_s": loops,
        "loop_cpu_s": loops_cpu,
        "run_s": runs,
        "fills": rep["fills"],
        "orders_filled": len({f.client_id for f in fills}),
        "filled_qty": sum(f.size_lots for f in fills) * LOT,
        "orders": rep["orders_sent"],
        "cancels": rep["cancels_sent"],
        "volume_usdc": rep["volume_usdc"],
        "pnl_usdc": rep["pnl_usdc"],
        "fees_usdc": rep["fees_usdc"],
        "position": pos.lots * LOT,
    }


def _cpu_self() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_children() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def install_step() -> float:
    """``python -m flashmm.native``: what the install does once (compiles or loads the
    numba kernels into the package's cache); returns its wall time."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flashmm.native"], capture_output=True, cwd=str(ROOT))
    return time.perf_counter() - t0


def run_flashmm(
    model: bool, args: argparse.Namespace, cache_dir: str, compiled: bool = False
) -> dict[str, Any]:
    worker = "--flashmm-compiled-worker" if compiled else "--flashmm-worker"
    cmd = [sys.executable, str(Path(__file__).resolve()), worker,
           "--half-spread-ticks", str(args.half_spread_ticks), "--lots", str(args.lots),
           "--max-pos-lots", str(args.max_pos_lots), "--fill-model", args.fill_model,
           "--half-spread-bps", repr(args.half_spread_bps), "--size-usdc", repr(args.size_usdc),
           "--runs", str(args.runs), "--cache-dir", cache_dir,
           "--t-spawn", repr(time.time())]  # fmt: skip
    if model:
        cmd.append("--model")
    # as a fresh install leaves it: an empty data cache (cache_dir), the numba kernels
    # compiled at install (install_step)
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    if p.returncode != 0:
        raise SystemExit(f"FlashMM run failed:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


# --- data conversion for hftbacktest --------------------------------------------------


def convert_for_hftbacktest(out: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """The recordings -> hftbacktest event rows (``data``) and ``snapshot``.

    Parsed with FlashMM's replay parser (same ticks, lots and timestamps as
    FlashMM sees): every depth level of a diff becomes a ``DEPTH_EVENT`` row,
    every trade a ``TRADE_EVENT`` row (side = aggressor), exchange time = local
    receive time (FlashMM's simulator also runs the venue on the receive time
    line), book tickers are dropped, the first REST snapshot is the
    ``initial_snapshot`` and diffs it already contains are dropped.
    """
    import numpy as np

    from flashmm.feeds.binance import Scale
    from flashmm.feeds.cache import K_DIFF, K_SNAPSHOT, K_TRADE, CachedFeed

    t0 = time.perf_counter()
    feed = CachedFeed(FILES, {"nexousdt": Scale.of(TICK, LOT)}, cache_dir=cache_dir)
    t_parse = time.perf_counter() - t0
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
    s0, nb, na = int(lv_start[si]), int(evs["n_bids"][si]), int(evs["n_asks"][si])
    sn = np.zeros(nb + na, ev_dtype)
    side = np.concatenate([np.full(nb, buy, "u8"), np.full(na, sell, "u8")])
    sn["ev"] = snap | exch | local | side
    sn["exch_ts"] = snap_ts
    sn["local_ts"] = snap_ts
    sn["px"] = levels[s0 : s0 + nb + na, 0] * TICK
    sn["qty"] = levels[s0 : s0 + nb + na, 1] * LOT
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
    return {"rows": n, "snapshot_rows": len(sn), "parse_s": t_parse}


def run_conversion(out: Path, cache_dir: str) -> dict[str, Any]:
    """The conversion in a fresh process with an empty parse cache (as a fresh install)."""
    t0 = time.perf_counter()
    c0 = _cpu_children()
    p = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--convert-worker", str(out),
         "--cache-dir", cache_dir],
        capture_output=True, text=True, cwd=str(ROOT),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"conversion failed:\n{p.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return {**res, "wall_s": wall, "cpu_s": _cpu_children() - c0}


# --- hftbacktest half (runs in the bench venv; imports no FlashMM) ---------------------

HBT_CODE = r"""
import json, resource, sys, time
a = json.loads(sys.argv[1])
import numpy as np
from numba import njit
from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest, GTX, LIMIT, BUY, SELL
t_imp = time.time()

@njit
def mm(hbt, half_ticks, qty, max_pos, step_ns, stats, filled, builtin, half_bps, size_usdc):
    # hftbacktest 2.4.4 books a fill into its position and trade counters only when the
    # response says the order is completely filled (with that response's exec_qty), so
    # partial fills go missing there; this loop books every fill itself, from each
    # order's leaves_qty, and quotes on that position
    tick = hbt.depth(0).tick_size
    lot = hbt.depth(0).lot_size
    next_id = 1
    bid_id = 0
    ask_id = 0
    pos = 0.0
    while hbt.elapse(step_ns) == 0:
        orders = hbt.orders(0)
        values = orders.values()
        while values.has_next():
            o = values.get()
            done = o.qty - o.leaves_qty
            new = done - filled[o.order_id]
            if new > 0.5 * lot:
                if filled[o.order_id] == 0.0:
                    stats[4] += 1  # orders with a fill
                filled[o.order_id] = done
                sign = 1.0 if o.side == BUY else -1.0
                pos += sign * new
                stats[5] += new  # filled quantity
                stats[6] += new * o.price_tick * tick  # volume
                stats[7] -= sign * new * o.price_tick * tick  # cash
                stats[8] += 1  # fill events seen (one per order per cycle at most)
        hbt.clear_inactive_orders(0)
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb <= 0 or ba <= bb or ba >= 2**62:
            continue
        if builtin:
            # FlashMM's built-in rule as the benchmark sets it (builtin_sets): the half
            # spread in bps of the mid, the size in USDC, no position cap
            mid = (bb + ba) * 0.5
            bid = min(int(np.floor(mid * (1.0 - half_bps / 1e4) + 1e-9)), ba - 1)
            ask = max(int(np.ceil(mid * (1.0 + half_bps / 1e4) - 1e-9)), bb + 1)
            bid_qty = np.floor(size_usdc / (bid * tick * lot)) * lot
            ask_qty = np.floor(size_usdc / (ask * tick * lot)) * lot
            want_bid = bid_qty > 0
            want_ask = ask_qty > 0
        else:
            mid2 = bb + ba
            bid = min((mid2 - 2 * half_ticks) // 2, ba - 1)
            ask = max(-((-(mid2 + 2 * half_ticks)) // 2), bb + 1)
            bid_qty = qty
            ask_qty = qty
            want_bid = pos + qty <= max_pos + 1e-9
            want_ask = pos - qty >= -max_pos - 1e-9
        # bid
        live = False
        o = orders.get(bid_id)
        if o is not None and (o.status == 1 or o.status == 5 or o.req == 1):
            if o.price_tick == bid and abs(o.leaves_qty - bid_qty) < 1e-9 and want_bid:
                live = True
            elif o.cancellable:
                hbt.cancel(0, bid_id, False)
                stats[3] += 1
            else:
                live = True  # a request is in flight: decide next cycle
        if not live and want_bid:
            bid_id = next_id
            next_id += 1
            hbt.submit_buy_order(0, bid_id, bid * tick, bid_qty, GTX, LIMIT, False)
            stats[2] += 1
        # ask
        live = False
        o = orders.get(ask_id)
        if o is not None and (o.status == 1 or o.status == 5 or o.req == 1):
            if o.price_tick == ask and abs(o.leaves_qty - ask_qty) < 1e-9 and want_ask:
                live = True
            elif o.cancellable:
                hbt.cancel(0, ask_id, False)
                stats[3] += 1
            else:
                live = True
        if not live and want_ask:
            ask_id = next_id
            next_id += 1
            hbt.submit_sell_order(0, ask_id, ask * tick, ask_qty, GTX, LIMIT, False)
            stats[2] += 1
        stats[0] = (bb + ba) * 0.5 * tick
        stats[1] = pos
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

z = np.load(a["path"])
data, snapshot = z["data"], z["snapshot"]
t_load = time.time()
loops, loops_cpu = [], []
res = {}
for i in range(a["runs"]):
    t0 = time.perf_counter()
    c0 = time.process_time()
    hbt = build(data, snapshot)
    stats = np.zeros(9)
    filled = np.zeros(1 << 20)
    # the first call compiles
    mm(hbt, a["half_ticks"], a["qty"], a["max_pos"], a["step_ns"], stats, filled,
       a["builtin"], a["half_bps"], a["size_usdc"])
    loops.append(time.perf_counter() - t0)
    loops_cpu.append(time.process_time() - c0)
    if i == 0:
        res["cold_s"] = time.time() - a["t_spawn"]
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res["cold_cpu_s"] = ru.ru_utime + ru.ru_stime
        res["import_s"] = t_imp - a["t_spawn"]
        res["load_s"] = t_load - t_imp
    sv = hbt.state_values(0)
    mid, pos = stats[0], stats[1]
    res.update({
        "rows": int(len(data)),
        "fills": int(stats[8]),
        "orders_filled": int(stats[4]),
        "filled_qty": float(stats[5]),
        "orders": int(stats[2]),
        "cancels": int(stats[3]),
        "volume_usdc": float(stats[6]),
        "pnl_usdc": float(stats[7] + pos * mid),
        "fees_usdc": 0.0,
        "position": float(pos),
        # what hftbacktest's own counters say (complete fills only, see mm())
        "hbt_num_trades": int(sv.num_trades),
        "hbt_trading_value": float(sv.trading_value),
        "hbt_position": float(sv.position),
    })
    hbt.close()
res["loop_s"] = loops
res["loop_cpu_s"] = loops_cpu
print(json.dumps(res))
"""


def run_hbt(py: Path, path: Path, args: argparse.Namespace, rule: str) -> dict[str, Any]:
    """hftbacktest's half in a fresh process of the bench venv; ``rule`` is ``fixed``
    (the plugin's fixed spread in ticks) or ``builtin`` (:func:`builtin_sets`)."""
    params = {
        "builtin": rule == "builtin",
        "half_bps": args.half_spread_bps,
        "size_usdc": args.size_usdc,
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
        "runs": args.runs,
        "t_spawn": time.time(),
    }
    p = subprocess.run(
        [str(py), "-c", HBT_CODE, json.dumps(params)], capture_output=True, text=True, cwd="/"
    )
    if p.returncode != 0:
        raise SystemExit(f"hftbacktest run failed:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


# --- the comparison -------------------------------------------------------------------


def compare(fm: dict[str, Any], hb: dict[str, Any], conv: dict[str, Any]) -> dict[str, Any]:
    rows = hb["rows"]
    fm_warm = min(fm["loop_s"][1:] or fm["loop_s"])
    hb_warm = min(hb["loop_s"][1:] or hb["loop_s"])
    hb_cold = conv["wall_s"] + hb["cold_s"]
    fm_warm_cpu = min(fm["loop_cpu_s"][1:] or fm["loop_cpu_s"])
    hb_warm_cpu = min(hb["loop_cpu_s"][1:] or hb["loop_cpu_s"])
    hb_cold_cpu = conv["cpu_s"] + hb["cold_cpu_s"]
    return {
        "warm_cpu_s": {"flashmm": fm_warm_cpu, "hftbacktest": hb_warm_cpu},
        "cold_cpu_s": {"flashmm": fm["cold_cpu_s"], "hftbacktest": hb_cold_cpu},
        "ratio_warm_cpu": hb_warm_cpu / fm_warm_cpu,
        "ratio_cold_cpu": hb_cold_cpu / fm["cold_cpu_s"],
        "warm_s": {"flashmm": fm_warm, "hftbacktest": hb_warm},
        "cold_s": {"flashmm": fm["cold_s"], "hftbacktest": hb_cold},
        "ratio_warm": hb_warm / fm_warm,
        "ratio_cold": hb_cold / fm["cold_s"],
        "rows_per_s_warm": {"flashmm": rows / fm_warm, "hftbacktest": rows / hb_warm},
        "rows_per_s_cold": {"flashmm": rows / fm["cold_s"], "hftbacktest": rows / hb_cold},
        # FlashMM against hftbacktest (0.05 = 5 % more in FlashMM)
        "agreement": {
            k: fm[k] / hb[k] - 1.0 if hb[k] else None
            for k in ("orders_filled", "filled_qty", "volume_usdc", "orders", "cancels")
        },
    }


def add_builtin_args(ap: argparse.ArgumentParser) -> None:
    """The built-in strategy's settings for the ``compiled`` variants (builtin_sets);
    the Nautilus benchmark runs those variants through run_flashmm too."""
    ap.add_argument(
        "--half-spread-bps",
        type=float,
        default=8.0,
        help="the built-in strategy's half spread in bps of the mid (compiled off/on)",
    )
    ap.add_argument(
        "--size-usdc", type=float, default=50.0, help="the built-in strategy's quote size in USDC"
    )


def _rule(variant: str) -> str:
    """The hftbacktest rule a FlashMM variant is compared with."""
    return "builtin" if variant.startswith("compiled") else "fixed"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--setup", action="store_true", help="create the bench venv with hftbacktest and exit"
    )
    ap.add_argument(
        "--half-spread-ticks", type=int, default=1, help="the plugin's half spread (model off/on)"
    )
    ap.add_argument("--lots", type=int, default=4000, help="the plugin's size in lots (0.01 NEXO)")
    ap.add_argument("--max-pos-lots", type=int, default=40000, help="the plugin's position cap")
    add_builtin_args(ap)
    ap.add_argument(
        "--fill-model",
        choices=["whole_order", "printed_size"],
        default="whole_order",
        help="FlashMM's venue.sim.fill_model; whole_order is what hftbacktest 2.4.4's "
        "partial-fill exchange does on a trade through the price",
    )
    ap.add_argument(
        "--runs", type=int, default=2, help="runs per process: the 1st is cold, the rest warm"
    )
    ap.add_argument(
        "--variants",
        default="model off,model on,compiled off,compiled on",
        help="comma-separated: model off, model on (the engine with the benchmark's "
        "strategy), compiled off, compiled on (the compiled loop, built-in strategy)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--flashmm-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--flashmm-compiled-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--convert-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--t-spawn", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flashmm_worker or args.convert_worker or args.flashmm_compiled_worker:
        from loguru import logger

        logger.remove()
        if args.convert_worker:
            cache = Path(args.cache_dir) if args.cache_dir else None
            print(json.dumps(convert_for_hftbacktest(Path(args.convert_worker), cache)))
        elif args.flashmm_compiled_worker:
            print(json.dumps(flashmm_compiled_worker(args)))
        else:
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
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    install_s = install_step()
    with tempfile.TemporaryDirectory(prefix="flashmm-bench-") as tmp:
        # one at a time: a fresh, empty cache for each cold start
        conv = run_conversion(Path(tmp) / "hbt" / "nexo.npz", str(Path(tmp) / "conv-cache"))
        # one hftbacktest process per rule the variants need, each with its cold start
        hbs = {
            rule: run_hbt(py, Path(tmp) / "hbt" / "nexo.npz", args, rule)
            for rule in dict.fromkeys(_rule(v) for v in variants)
        }
        fms = {
            name: run_flashmm(
                VARIANTS[name], args, str(Path(tmp) / f"cache-{i}"), name.startswith("compiled")
            )
            for i, name in enumerate(variants)
        }
    rows = next(iter(hbs.values()))["rows"]
    out = {
        "rows": rows,
        "events": next(iter(fms.values()))["events"],
        "fill_model": args.fill_model,
        "install_step_s": install_s,
        "conversion": conv,
        "hftbacktest": hbs,
        "flashmm": fms,
        "compare": {name: compare(fm, hbs[_rule(name)], conv) for name, fm in fms.items()},
        "params": {
            "half_spread_ticks": args.half_spread_ticks,
            "half_spread_bps": args.half_spread_bps,
            "size_usdc": args.size_usdc,
            "lots": args.lots,
            "max_pos_lots": args.max_pos_lots,
            "runs": args.runs,
        },
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    report(out, args)


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    conv, rows, hbs = out["conversion"], out["rows"], out["hftbacktest"]
    print(
        f"NEXO/USDT 20240723+20240724: {out['events']:,} recorded messages, "
        f"{rows:,} hftbacktest rows"
    )
    print(
        f"latency {ENTRY_MS}/{CANCEL_MS}/{RESP_MS} ms; power-prob queue n={QUEUE_POWER:g}; "
        f"FlashMM fill_model={out['fill_model']}, hftbacktest partial_fill_exchange; "
        "decisions every 200 ms"
    )
    if "fixed" in hbs:
        print(
            f"  model off/on: the plugin, half spread {args.half_spread_ticks} tick(s), "
            f"{args.lots * LOT:g} NEXO a side, cap {args.max_pos_lots * LOT:g} NEXO"
        )
    if "builtin" in hbs:
        print(
            f"  compiled off/on: the built-in strategy, 1 level a side at "
            f"{args.half_spread_bps:g} bps of the mid, {args.size_usdc:g} USDC a quote"
        )
    runs: dict[str, dict[str, Any]] = {f"hftbacktest {r}": hb for r, hb in hbs.items()}
    runs.update({f"FlashMM {k}": v for k, v in out["flashmm"].items()})
    cols = list(runs)

    def is_hbt(k: str) -> bool:
        return k.startswith("hftbacktest")

    def warm(k: str) -> float:
        r = runs[k]
        return float(min(r["loop_s"][1:] or r["loop_s"]))

    def cold(k: str) -> float:
        return float(conv["wall_s"] + runs[k]["cold_s"] if is_hbt(k) else runs[k]["cold_s"])

    def warm_cpu(k: str) -> float:
        r = runs[k]
        return float(min(r["loop_cpu_s"][1:] or r["loop_cpu_s"]))

    def cold_cpu(k: str) -> float:
        r = runs[k]
        return float(conv["cpu_s"] + r["cold_cpu_s"] if is_hbt(k) else r["cold_cpu_s"])

    table = [
        ("warm: loop (s)", [f"{warm(k):.3f}" for k in cols]),
        ("warm: rows/s", [f"{rows / warm(k):,.0f}" for k in cols]),
        ("cold: total (s)", [f"{cold(k):.2f}" for k in cols]),
        (
            "  data conversion (s)",
            [f"{conv['wall_s']:.2f}" if is_hbt(k) else "in run" for k in cols],
        ),
        (
            "  fresh process to result (s)",
            [f"{runs[k]['cold_s']:.2f}" for k in cols],
        ),
        ("cold: rows/s", [f"{rows / cold(k):,.0f}" for k in cols]),
        ("warm: loop CPU (s)", [f"{warm_cpu(k):.3f}" for k in cols]),
        ("cold: total CPU (s)", [f"{cold_cpu(k):.2f}" for k in cols]),
        ("orders filled", [f"{runs[k]['orders_filled']:,}" for k in cols]),
        ("fills (hbt: seen per 200 ms)", [f"{runs[k]['fills']:,}" for k in cols]),
        ("filled (NEXO)", [f"{runs[k]['filled_qty']:,.2f}" for k in cols]),
        ("orders / cancels", [f"{runs[k]['orders']:,} / {runs[k]['cancels']:,}" for k in cols]),
        ("volume (USDC)", [f"{runs[k]['volume_usdc']:,.2f}" for k in cols]),
        ("P&L (USDC)", [f"{runs[k]['pnl_usdc']:+,.4f}" for k in cols]),
        ("final position (NEXO)", [f"{runs[k]['position']:,.2f}" for k in cols]),
    ]
    w = max(len(r[0]) for r in table)
    cw = max(20, *(len(k) for k in cols))
    print()
    print(f"{'':{w}}" + "".join(f"  {k:>{cw}}" for k in cols))
    for label, vals in table:
        print(f"{label:{w}}" + "".join(f"  {v:>{cw}}" for v in vals))
    print()
    print("time ratio hftbacktest / FlashMM (> 1: FlashMM took less time):")
    for name, c in out["compare"].items():
        ag = c["agreement"]
        print(
            f"  {name} (against hftbacktest {_rule(name)}): wall time: warm "
            f"{c['ratio_warm']:.3f}, cold {c['ratio_cold']:.3f}; CPU time: warm "
            f"{c['ratio_warm_cpu']:.3f}, cold {c['ratio_cold_cpu']:.3f}"
        )
        print(
            f"    fills against hftbacktest: orders filled {ag['orders_filled']:+.1%}, "
            f"filled quantity {ag['filled_qty']:+.1%}, volume {ag['volume_usdc']:+.1%}, "
            f"orders {ag['orders']:+.1%}"
        )
    for r, hb in hbs.items():
        print(
            f"hftbacktest {r}: its own counters (complete fills only): "
            f"{hb['hbt_num_trades']:,} trades, {hb['hbt_trading_value']:,.2f} USDC, "
            f"position {hb['hbt_position']:,.2f} NEXO"
        )


if __name__ == "__main__":
    main()
