"""Prometheus endpoint: gauges from a status snapshot, served on loopback."""

from __future__ import annotations

import dataclasses
import urllib.request
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from flashmm.config import load_config
from flashmm.ops.metrics import Metrics
from flashmm.runner import engine_from
from flashmm.snapshot import LatencyView, OrderView, Snapshot
from flashmm.types import Order, OrderState, Side
from flashmm.venues.sim import SimVenue


def snapshot(fills: int = 4, **over: Any) -> Snapshot:
    """A real engine's snapshot with SEI/USDC's figures (and ``over``) set."""
    cfg = load_config("configs/paper.yaml")
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    snap = engine.snapshot()
    spec = engine.specs["SEI/USDC"]
    quotes = tuple(
        OrderView.of(Order("SEI/USDC", i, side, 1, 1, 1, OrderState.OPEN, 0), spec)
        for i, side in enumerate((Side.BUY, Side.SELL))
    )
    market = dataclasses.replace(
        snap.markets["SEI/USDC"],
        mid=0.5012,
        position_lots=-30,
        position_usdc=-15.03,
        pnl_usdc=1.25,
        fills=fills,
        quotes=quotes,
    )
    tripped = {"state": "tripped", "reason": "x"}
    fields = {
        "state": "running",
        "uptime_s": 12.5,
        "markets": {"SEI/USDC": market},
        "breakers": {"drawdown": {"state": "ok"}, "stale_feed": tripped},
        "latency": LatencyView(40.0, 210.0, 10),
        **over,
    }
    return dataclasses.replace(snap, **fields)


SNAPSHOT = snapshot()


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


def test_update_sets_gauges_and_counts_fills() -> None:
    m = Metrics(port=0)
    m.update(SNAPSHOT)
    sym = {"market": "SEI/USDC"}
    assert value(m, "flashmm_pnl_usdc", sym) == 1.25
    assert value(m, "flashmm_position_lots", sym) == -30
    assert value(m, "flashmm_mid_price", sym) == pytest.approx(0.5012)
    assert value(m, "flashmm_quotes", {"market": "SEI/USDC", "side": "buy"}) == 1
    assert value(m, "flashmm_fills_total", sym) == 4
    assert value(m, "flashmm_breaker_tripped", {"name": "drawdown"}) == 0
    assert value(m, "flashmm_breaker_tripped", {"name": "stale_feed"}) == 1
    assert value(m, "flashmm_state", {"state": "running"}) == 1
    assert value(m, "flashmm_state", {"state": "paused"}) == 0
    assert value(m, "flashmm_decision_latency_us", {"quantile": "0.99"}) == 210.0
    # the counter only grows by the difference
    m.update(snapshot(fills=6))
    assert value(m, "flashmm_fills_total", sym) == 6
    m.observe_decision_latency_us([30.0, 60.0, 5000.0])
    assert value(m, "flashmm_decision_latency_seconds_count") == 3


def test_endpoint_serves_on_loopback() -> None:
    m = Metrics(port=0)
    m.start()
    try:
        assert m.host == "127.0.0.1"
        m.update(SNAPSHOT)
        with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'flashmm_pnl_usdc{market="SEI/USDC"} 1.25' in body
        assert "flashmm_up 1.0" in body
    finally:
        m.close()
