"""Backtests on real recorded days: no position-limit breach, clean shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.data import NEXO_23 as NEXO_20MIN
from kit.data import NEXO_24 as NEXO_DAY
from kit.data import needs

from flashmm.backtest.runner import run_backtest
from flashmm.config import load_config


def test_nexo_20min_no_breaches(tmp_path: Path) -> None:
    cfg = load_config("configs/backtest.yaml")
    res = run_backtest(cfg, [str(NEXO_20MIN)], cache_dir=tmp_path)
    rep = res.report
    assert rep["position_limit_breaches"] == 0
    assert rep["fills"] > 0 and rep["orders_sent"] > 0
    assert rep["max_abs_inventory_usdc"] <= cfg.risk.max_position_usdc
    assert rep["data"]["orders_left_open"] == 0 and res.engine.live_orders() == 0
    assert rep["markets"]["SEI/USDC"]["book_mismatches"] == 0
    assert rep["pnl_usdc"] == pytest.approx(
        rep["pnl_spread_usdc"] + rep["pnl_inventory_usdc"] - rep["fees_usdc"], abs=1e-5
    )
    assert 0.0 < rep["quote_uptime"] <= 1.0
    assert rep["avg_market_spread_bps"] > 0


@pytest.mark.slow
@needs(NEXO_DAY)
def test_nexo_full_day_no_breaches(tmp_path: Path) -> None:
    # the kill switch is off so that the strategy quotes the whole day
    cfg = load_config("configs/backtest.yaml", ["risk.kill_switch_enabled=false"])
    res = run_backtest(cfg, [str(NEXO_20MIN), str(NEXO_DAY)], cache_dir=tmp_path)
    rep = res.report
    assert rep["position_limit_breaches"] == 0
    assert rep["max_abs_inventory_usdc"] <= cfg.risk.max_position_usdc
    assert rep["sim_s"] > 86_000
    assert rep["data"]["orders_left_open"] == 0
