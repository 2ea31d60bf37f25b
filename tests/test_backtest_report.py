"""Backtest report on a hand-made tape with known fills, P&L split and markouts."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from flashmm.backtest.outputs import write_outputs
from flashmm.backtest.report import REPORT_KEYS, TIMING_KEYS
from flashmm.backtest.runner import run_backtest
from flashmm.config import Config
from flashmm.strategy.base import QuoteContext
from flashmm.types import Quote, Side

T0_US = 1_721_750_000_000_000  # µs, as in the NEXO recordings
STREAM = "nexousdt"


def _line(t_s: float, msg: dict[str, Any]) -> str:
    return f"{T0_US + round(t_s * 1e6)} {json.dumps(msg)}\n"


def _diff(t_s: float, u: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    data = {
        "e": "depthUpdate",
        "E": (T0_US // 1000) + int(t_s * 1000),
        "U": u,
        "u": u,
        "b": bids,
        "a": asks,
    }
    return _line(t_s, {"stream": f"{STREAM}@depth@100ms", "data": data})


def _trade(t_s: float, px: str, qty: str, buyer_is_maker: bool) -> str:
    data = {
        "e": "trade",
        "T": (T0_US // 1000) + int(t_s * 1000),
        "p": px,
        "q": qty,
        "m": buyer_is_maker,
    }
    return _line(t_s, {"stream": f"{STREAM}@trade", "data": data})


def write_tape(path: Path) -> Path:
    """Book 1.000/1.010; a seller sweeps under our bid at 1 s, a buyer over our ask at 2 s;
    at 2.5 s the ask moves to 1.020 (mid 1.010); a quiet diff at 40 s ends the tape."""
    lines = [
        _diff(0.05, 100, [["1.00000000", "100.00000000"]], []),  # before the snapshot: dropped
        _line(
            0.0,
            {
                "lastUpdateId": 100,
                "bids": [["1.00000000", "100.0"]],
                "asks": [["1.01000000", "100.0"]],
            },
        ),
        _diff(0.1, 101, [["0.99900000", "50.00000000"]], []),
        _diff(0.5, 102, [["0.99800000", "50.00000000"]], []),
        _trade(1.0, "1.00000000", "50.00000000", True),  # sell through our 1.001 bid
        _trade(2.0, "1.01000000", "50.00000000", False),  # buy through our 1.009 ask
        _diff(2.5, 103, [], [["1.01000000", "0.00000000"], ["1.02000000", "100.00000000"]]),
        _diff(40.0, 104, [["0.99000000", "10.00000000"]], []),
    ]
    # lines are written in arrival order: the early diff first, as in real recordings
    with gzip.open(path, "wt") as fh:
        fh.writelines(lines)
    return path


class NoParams(BaseModel):
    pass


class InsideQuotes:
    """One tick inside the book on each side, a fixed size."""

    name: ClassVar[str] = "inside"
    params_model: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, lots: int = 1000) -> None:
        self.lots = lots
        self.params = NoParams()

    def quote(self, ctx: QuoteContext) -> list[Quote]:
        if ctx.best_ask - ctx.best_bid < 3:
            return []
        return [
            Quote(Side.BUY, ctx.best_bid + 1, self.lots),
            Quote(Side.SELL, ctx.best_ask - 1, self.lots),
        ]


def tape_config() -> Config:
    return Config.model_validate(
        {
            "mode": "backtest",
            "markets": [
                {
                    "symbol": "SEI/USDC",
                    "tick_size": "0.001",
                    "lot_size": "0.01",
                    "reference": STREAM,
                }
            ],
            "feed": {"kind": "replay", "speed": 0},
            "venue": {
                "kind": "sim",
                "sim": {"entry_latency_ms": 0, "cancel_latency_ms": 0, "feed_latency_ms": 0},
            },
            "strategy": {"quote_hz": 5, "requote_mid_move_bps": 0},
            "risk": {
                "max_position_usdc": 100000,
                "max_order_usdc": 100000,
                "kill_switch_enabled": False,
            },
        }
    )


@pytest.fixture
def tape_run(tmp_path: Path) -> Any:
    tape = write_tape(tmp_path / "tape.dat.gz")
    return run_backtest(
        tape_config(), [str(tape)], strategy=InsideQuotes(), cache_dir=tmp_path / "cache"
    )


def test_known_fills_and_pnl_split(tape_run: Any) -> None:
    rep = tape_run.report
    fills = tape_run.recorder.fills
    assert [(f.side, f.price_ticks, f.size_lots) for f in fills] == [
        (Side.BUY, 1001, 1000),
        (Side.SELL, 1009, 1000),
    ]
    assert rep["fills"] == 2 and rep["maker_fills"] == 2 and rep["taker_fills"] == 0
    # round trip 1.001 -> 1.009 on 10 units: 0.08 USDC, all of it spread capture
    # (mid 1.005 at both fills: 0.004 * 10 each)
    assert rep["pnl_usdc"] == pytest.approx(0.08)
    assert rep["pnl_spread_usdc"] == pytest.approx(0.08)
    assert rep["pnl_inventory_usdc"] == pytest.approx(0.0, abs=1e-9)
    assert rep["fees_usdc"] == 0.0
    assert rep["volume_usdc"] == pytest.approx(10.01 + 10.09)
    assert rep["position_limit_breaches"] == 0
    assert rep["final_inventory_usdc"] == 0.0


def test_known_markouts(tape_run: Any) -> None:
    mk = tape_run.report["markout_bps"]
    buy_1s = (1005 - 1001) / 1001 * 1e4  # mid 1.005 at 2 s
    buy_5s = (1010 - 1001) / 1001 * 1e4  # mid 1.010 after 2.5 s
    sell = -(1010 - 1009) / 1009 * 1e4  # mid 1.010 at 3, 7 and 32 s
    assert mk["1s"] == pytest.approx((buy_1s + sell) / 2, abs=1e-3)
    assert mk["5s"] == pytest.approx((buy_5s + sell) / 2, abs=1e-3)
    assert mk["30s"] == pytest.approx((buy_5s + sell) / 2, abs=1e-3)


def test_order_counts_and_ratios(tape_run: Any) -> None:
    rep = tape_run.report
    # 0.2 s: bid+ask; 1.2 s: new bid; 2.2 s: new ask; 2.6 s: ask moved to 1.019
    assert rep["orders_sent"] == 5
    assert rep["fill_ratio"] == pytest.approx(2000 / 5000)
    assert rep["order_to_trade"] == pytest.approx(2.5)
    assert 0.0 < rep["quote_uptime"] < 1.0
    # market spread: 99.5 bps until 2.5 s, 198 bps after (time-weighted over ~40 s)
    assert 99.5 < rep["avg_market_spread_bps"] < 198.1
    assert rep["avg_quoted_spread_bps"] > 0
    assert rep["events"] == 8  # every line is an event (the book drops the early diff)
    assert rep["state"] == "running"


def test_report_keys_and_outputs(tape_run: Any, tmp_path: Path) -> None:
    rep = tape_run.report
    for k in REPORT_KEYS:
        assert k in rep, k
    assert set(rep["markout_bps"]) == {"1s", "5s", "30s"}
    assert rep["config"]["strategy"]["quote_hz"] == 5
    paths = write_outputs(tape_run, tmp_path / "out")
    names = {p.name for p in paths}
    assert names == {"report.json", "fills.csv", "plots.html"}
    loaded = json.loads((tmp_path / "out" / "report.json").read_text())
    assert loaded["pnl_usdc"] == rep["pnl_usdc"]
    rows = list(csv.DictReader((tmp_path / "out" / "fills.csv").open()))
    assert [r["side"] for r in rows] == ["buy", "sell"]
    assert rows[0]["price"] == "1.001" and rows[0]["mid_at_fill"] == "1.005"
    assert float(rows[0]["spread_capture_usdc"]) == pytest.approx(0.04)
    html = (tmp_path / "out" / "plots.html").read_text()
    assert html.count("<svg") >= 4 and "<script" not in html


def test_same_results_twice(tmp_path: Path) -> None:
    tape = write_tape(tmp_path / "tape.dat.gz")
    timing = TIMING_KEYS | {"data"}
    a = run_backtest(tape_config(), [str(tape)], strategy=InsideQuotes(), cache_dir=tmp_path / "c")
    b = run_backtest(tape_config(), [str(tape)], strategy=InsideQuotes(), cache_dir=tmp_path / "c")
    assert b.feed.from_cache and not a.feed.from_cache
    ra = {k: v for k, v in a.report.items() if k not in timing}
    rb = {k: v for k, v in b.report.items() if k not in timing}
    assert ra == rb
