"""FlashMM's backtester against NautilusTrader: a reference point, not like for like.

The same NEXO/USDT day and the same simple market maker as
``benchmarks/backtest_vs_hftbacktest.py`` (one post-only order a side at a
fixed half spread around the mid, decided every 200 ms, cancel/replace when
the price or the remaining size differs, position capped at ±max_pos), in
NautilusTrader's ``BacktestEngine``:

- data: the recording as hftbacktest's rows (same ticks, lots and receive
  timestamps), turned into ``OrderBookDelta`` objects (the first REST snapshot
  as CLEAR + ADD, each diff level as UPDATE or DELETE) and ``TradeTick``
  objects; that conversion is timed apart;
- venue: an L2 (MBP) book built from the deltas, ``trade_execution=True`` (trades
  fill resting orders too), 100 ms order latency (``LatencyModel``), maker fee
  0, taker fee 5 bps. NautilusTrader models no queue position and no response
  latency, so its fills are not comparable with FlashMM's or hftbacktest's:
  only the time is;
- strategy: a Python ``Strategy`` subclass on a 200 ms timer reading the
  engine's cached order book.

FlashMM runs the engine a user runs (features, and the model off or on), as in
the hftbacktest benchmark, or (variants ``compiled off``/``compiled on``) the
compiled backtest loop with the built-in strategy. Ratios are NautilusTrader / FlashMM time
(> 1: FlashMM took less time), warm (the run loop alone, in a process that has
imported everything and converted the data) and end to end (a fresh process
from the prepared rows to a result).

NautilusTrader lives in its own venv, never in FlashMM's dependencies:
``--setup`` (or the first run) creates ``.flashmm-cache/nautilus-venv`` (or
``$FLASHMM_NAUTILUS_VENV``) and installs ``nautilus_trader`` there (1.221.0:
the last release for Python 3.11; later ones need Python >= 3.12).

Usage (from the repo root)::

    nice -n 15 .venv/bin/python benchmarks/backtest_vs_nautilus.py [--json]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backtest_vs_hftbacktest as hb

ROOT = hb.ROOT
NAUTILUS = "nautilus_trader==1.221.0"


def nautilus_venv() -> Path:
    env = os.environ.get("FLASHMM_NAUTILUS_VENV")
    return Path(env) if env else ROOT / ".flashmm-cache" / "nautilus-venv"


def setup_venv() -> Path:
    venv = nautilus_venv()
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", NAUTILUS], check=True)
    return py


NT_CODE = r"""
import json, resource, sys, time
a = json.loads(sys.argv[1])
import numpy as np
import pandas as pd
from decimal import Decimal
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import FillModel, LatencyModel
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import BookOrder, OrderBookDelta, TradeTick
from nautilus_trader.model.enums import (
    AccountType, AggressorSide, BookAction, BookType, CurrencyType, OmsType, OrderSide, RecordFlag,
)
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, TraderId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Currency, Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy
t_imp = time.time()

VENUE = Venue("BINANCE")
IID = InstrumentId(Symbol("NEXOUSDT"), VENUE)
NEXO = Currency("NEXO", 8, 0, "NEXO", CurrencyType.CRYPTO)
TICK, LOT = a["tick"], a["lot"]


def instrument():
    return CurrencyPair(
        IID, Symbol("NEXOUSDT"), NEXO, USDT, 3, 2, Price(TICK, 3), Quantity(LOT, 2), 0, 0,
        maker_fee=Decimal(str(a["maker_fee"])), taker_fee=Decimal(str(a["taker_fee"])),
        margin_init=Decimal(0), margin_maint=Decimal(0),
    )


def convert(path):
    z = np.load(path)
    data, snap = z["data"], z["snapshot"]
    buy = 1 << 29
    out = []
    t0 = int(snap["local_ts"][0])
    out.append(OrderBookDelta.clear(IID, 0, t0, t0))
    last = RecordFlag.F_LAST
    for i, r in enumerate(snap):
        side = OrderSide.BUY if int(r["ev"]) & buy else OrderSide.SELL
        flags = RecordFlag.F_SNAPSHOT | (last if i == len(snap) - 1 else 0)
        o = BookOrder(side, Price(float(r["px"]), 3), Quantity(float(r["qty"]), 2), 0)
        out.append(OrderBookDelta(IID, BookAction.ADD, o, flags, 0, t0, t0))
    trades = []
    evs, pxs, qtys, tss = data["ev"], data["px"], data["qty"], data["local_ts"]
    for i in range(len(data)):
        ev = int(evs[i]); ts = int(tss[i]); px = Price(float(pxs[i]), 3)
        q = float(qtys[i])
        if ev & 2:  # a trade
            side = AggressorSide.BUYER if ev & buy else AggressorSide.SELLER
            trades.append(TradeTick(IID, px, Quantity(q, 2), side, TradeId(str(i)), ts, ts))
        else:
            side = OrderSide.BUY if ev & buy else OrderSide.SELL
            action = BookAction.UPDATE if q > 0 else BookAction.DELETE
            o = BookOrder(side, px, Quantity(q, 2), 0)
            out.append(OrderBookDelta(IID, action, o, last, 0, ts, ts))
    return out, trades, len(data)


class MMConfig(StrategyConfig, frozen=True):
    half_ticks: int = 1
    qty: float = 40.0
    max_pos: float = 400.0


class MM(Strategy):
    def __init__(self, config):
        super().__init__(config)
        self.bid = None
        self.ask = None
        self.fills = 0
        self.filled = 0.0
        self.volume = 0.0
        self.cash = 0.0
        self.pos = 0.0
        self.sent = 0
        self.cancels = 0
        self.mid = 0.0

    def on_start(self):
        self.inst = self.cache.instrument(IID)
        self.qty = Quantity(self.config.qty, 2)
        self.subscribe_order_book_deltas(IID, book_type=BookType.L2_MBP)
        self.clock.set_timer("quote", pd.Timedelta(milliseconds=200), callback=self.on_quote)

    def on_order_filled(self, event):
        q = float(event.last_qty)
        px = float(event.last_px)
        sign = 1.0 if event.order_side == OrderSide.BUY else -1.0
        self.fills += 1
        self.filled += q
        self.volume += q * px
        self.cash -= sign * q * px
        self.pos += sign * q

    def on_quote(self, event):
        book = self.cache.order_book(IID)
        if book is None:
            return
        bbp, bap = book.best_bid_price(), book.best_ask_price()
        if bbp is None or bap is None:
            return
        bb, ba = round(float(bbp) / TICK), round(float(bap) / TICK)
        if bb <= 0 or ba <= bb:
            return
        h = self.config.half_ticks
        mid2 = bb + ba
        self.mid = mid2 * 0.5 * TICK
        bid = min((mid2 - 2 * h) // 2, ba - 1)
        ask = max(-((-(mid2 + 2 * h)) // 2), bb + 1)
        q, mp = self.config.qty, self.config.max_pos
        self.bid = self.side(self.bid, OrderSide.BUY, bid, self.pos + q <= mp + 1e-9)
        self.ask = self.side(self.ask, OrderSide.SELL, ask, self.pos - q >= -mp - 1e-9)

    def side(self, order, side, px, want):
        if order is not None and not order.is_closed:
            if order.is_inflight or order.is_pending_cancel:
                return order  # a request is in flight: decide next cycle
            if round(float(order.price) / TICK) == px and order.leaves_qty == self.qty and want:
                return order
            self.cancel_order(order)
            self.cancels += 1
        if not want:
            return None
        o = self.order_factory.limit(IID, side, self.qty, Price(px * TICK, 3), post_only=True)
        self.submit_order(o)
        self.sent += 1
        return o


def engine():
    eng = BacktestEngine(BacktestEngineConfig(
        trader_id=TraderId("BENCH-001"), logging=LoggingConfig(log_level="ERROR"),
    ))
    eng.add_venue(
        VENUE, OmsType.NETTING, AccountType.CASH,
        [Money(10_000_000, USDT), Money(10_000_000, NEXO)],
        book_type=BookType.L2_MBP, trade_execution=True,
        latency_model=LatencyModel(a["entry_ns"]),
        fill_model=FillModel(prob_fill_on_limit=1.0, random_seed=0),
    )
    eng.add_instrument(instrument())
    return eng


t0 = time.time()
deltas, trades, rows = convert(a["path"])
t_conv = time.time()
loops, loops_cpu = [], []
res = {"rows": rows, "import_s": t_imp - a["t_spawn"], "convert_s": t_conv - t0}
for i in range(a["runs"]):
    c0 = time.perf_counter()
    p0 = time.process_time()
    eng = engine()
    eng.add_data(deltas)
    eng.add_data(trades)
    strat = MM(MMConfig(half_ticks=a["half_ticks"], qty=a["qty"], max_pos=a["max_pos"]))
    eng.add_strategy(strat)
    eng.run()
    loops.append(time.perf_counter() - c0)
    loops_cpu.append(time.process_time() - p0)
    if i == 0:
        res["cold_s"] = time.time() - a["t_spawn"]
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res["cold_cpu_s"] = ru.ru_utime + ru.ru_stime
    res.update({
        "fills": strat.fills, "filled_qty": strat.filled, "volume_usdc": strat.volume,
        "orders": strat.sent, "cancels": strat.cancels,
        "pnl_usdc": strat.cash + strat.pos * strat.mid, "position": strat.pos,
    })
    eng.dispose()
res["loop_s"] = loops
res["loop_cpu_s"] = loops_cpu
print(json.dumps(res))
"""


def run_nautilus(py: Path, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = {
        "path": str(path),
        "entry_ns": hb.ENTRY_MS * 1_000_000,
        "maker_fee": hb.MAKER_FEE,
        "taker_fee": hb.TAKER_FEE,
        "tick": hb.TICK,
        "lot": hb.LOT,
        "half_ticks": args.half_spread_ticks,
        "qty": args.lots * hb.LOT,
        "max_pos": args.max_pos_lots * hb.LOT,
        "runs": args.runs,
        "t_spawn": time.time(),
    }
    p = subprocess.run(
        [str(py), "-c", NT_CODE, json.dumps(params)], capture_output=True, text=True, cwd="/"
    )
    if p.returncode != 0:
        raise SystemExit(f"NautilusTrader run failed:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--setup", action="store_true", help="create the NautilusTrader venv, exit")
    ap.add_argument("--half-spread-ticks", type=int, default=1)
    ap.add_argument("--lots", type=int, default=4000)
    ap.add_argument("--max-pos-lots", type=int, default=40000)
    ap.add_argument("--fill-model", default="whole_order")
    hb.add_builtin_args(ap)
    ap.add_argument("--runs", type=int, default=2, help="runs per process: 1st cold, rest warm")
    ap.add_argument(
        "--variants",
        default="model off,model on",
        help="comma-separated: model off, model on (the engine with the benchmark's "
        "strategy), compiled off, compiled on (the compiled loop, built-in strategy)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.setup:
        print(f"NautilusTrader installed in {setup_venv().parent.parent}")
        return
    py = nautilus_venv() / "bin" / "python"
    if not py.exists():
        print(f"creating the NautilusTrader venv at {py.parent.parent} (once)", file=sys.stderr)
        py = setup_venv()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    hb.install_step()
    with tempfile.TemporaryDirectory(prefix="flashmm-bench-") as tmp:
        rows_path = Path(tmp) / "nexo.npz"
        conv = hb.run_conversion(rows_path, str(Path(tmp) / "conv-cache"))
        nt = run_nautilus(py, rows_path, args)
        fms = {
            name: hb.run_flashmm(
                hb.VARIANTS[name], args, str(Path(tmp) / f"cache-{i}"), name.startswith("compiled")
            )
            for i, name in enumerate(variants)
        }
    rows = nt["rows"]
    nt_warm = min(nt["loop_s"][1:] or nt["loop_s"])
    nt_warm_cpu = min(nt["loop_cpu_s"][1:] or nt["loop_cpu_s"])
    out: dict[str, Any] = {"rows": rows, "nautilus": nt, "conversion": conv, "flashmm": fms}
    out["compare"] = {}
    for name, fm in fms.items():
        fm_warm = min(fm["loop_s"][1:] or fm["loop_s"])
        fm_warm_cpu = min(fm["loop_cpu_s"][1:] or fm["loop_cpu_s"])
        out["compare"][name] = {
            "ratio_warm": nt_warm / fm_warm,
            "ratio_cold": (conv["wall_s"] + nt["cold_s"]) / fm["cold_s"],
            "ratio_warm_cpu": nt_warm_cpu / fm_warm_cpu,
            "ratio_cold_cpu": (conv["cpu_s"] + nt["cold_cpu_s"]) / fm["cold_cpu_s"],
            "rows_per_s_warm": {"flashmm": rows / fm_warm, "nautilus": rows / nt_warm},
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"NEXO/USDT 20240723+20240724, {rows:,} rows; NautilusTrader {NAUTILUS.split('==')[1]}")
    print(
        f"NautilusTrader: warm {nt_warm:.2f} s ({rows / nt_warm:,.0f} rows/s), cold "
        f"{conv['wall_s'] + nt['cold_s']:.2f} s (rows {conv['wall_s']:.2f} s + fresh process "
        f"{nt['cold_s']:.2f} s, of which objects {nt['convert_s']:.2f} s); fills {nt['fills']:,}, "
        f"{nt['filled_qty']:,.2f} NEXO, orders {nt['orders']:,}, cancels {nt['cancels']:,}"
    )
    for name, fm in fms.items():
        c = out["compare"][name]
        print(
            f"FlashMM {name}: warm {min(fm['loop_s'][1:] or fm['loop_s']):.2f} s, cold "
            f"{fm['cold_s']:.2f} s; ratio NautilusTrader / FlashMM: wall warm "
            f"{c['ratio_warm']:.2f}, cold {c['ratio_cold']:.2f}; CPU warm "
            f"{c['ratio_warm_cpu']:.2f}, cold {c['ratio_cold_cpu']:.2f}"
        )


if __name__ == "__main__":
    main()
