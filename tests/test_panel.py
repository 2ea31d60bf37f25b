"""The live panel from a real engine snapshot: labelled spreads, a bounded named signal,
the model's warm-up and rate-limited breaker logs naming their market."""

from __future__ import annotations

import io

import numpy as np
from kit.data import ETH_SLICE, NEXO_23
from loguru import logger
from rich.console import Console

from flashmm.config import load_config
from flashmm.feeds.replay import ReplayFeed
from flashmm.model_signal import WARMUP_NS
from flashmm.predict import GuardedPredictor, ModelSettings, RulePredictor
from flashmm.runner import build_engine, scales_for
from flashmm.snapshot import Snapshot
from flashmm.ui import market_table

S = 1_000_000_000


def _snapshot_after(seconds: float) -> Snapshot | None:
    cfg = load_config("paper", ["model.enabled=true", "model.sim_latency_us=100"])
    engine = build_engine(cfg)
    feed = ReplayFeed([NEXO_23, ETH_SLICE], scales_for(cfg.specs()))
    start = None
    snap = None
    for ev in feed.events():
        start = ev.ts_ns if start is None else start
        engine.run_due_timers(ev.ts_ns)
        engine.on_market_event(ev, ev.ts_ns)
        engine.pump_venue(ev.ts_ns)
        if ev.ts_ns - start > seconds * S:
            snap = engine.snapshot(ev.ts_ns)
            break
    return snap


def test_panel_shows_our_spread_and_the_reference_spread_and_a_bounded_named_signal() -> None:
    typed = _snapshot_after(90)
    assert typed is not None
    snap = typed.to_dict()
    max_skew = ModelSettings().max_skew_bps
    for m in snap["markets"].values():
        sig = m["signal"]
        assert sig["source"] in ("onnx", "rules", "online")
        assert abs(sig["skew_bps"]) <= max_skew
        assert m["spread_bps"] > 0 and (
            m["quoted_spread_bps"] is None or m["quoted_spread_bps"] > 0
        )
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(market_table(typed))
    text = out.getvalue()
    assert "ours / ref" in text and "bps ref" in text
    assert "skew " in text
    sei = snap["markets"]["SEI/USDC"]
    assert f"{sei['quoted_spread_bps']:.1f}bps" in text


def test_the_model_answers_only_after_its_warm_up() -> None:
    cfg = load_config("paper", ["model.enabled=true", "model.sim_latency_us=100"])
    engine = build_engine(cfg)
    feed = ReplayFeed([NEXO_23], scales_for(cfg.specs()))
    ms = engine.markets["SEI/USDC"]
    sources: list[tuple[int, str]] = []
    start = None
    for ev in feed.events():
        start = ev.ts_ns if start is None else start
        engine.run_due_timers(ev.ts_ns)
        engine.on_market_event(ev, ev.ts_ns)
        engine.pump_venue(ev.ts_ns)
        sources.append((ev.ts_ns - start, ms.last_signal.source))
        if ev.ts_ns - start > WARMUP_NS + 30 * S:
            break
    early = {src for t, src in sources if 0 < t < WARMUP_NS - S and src != "none"}
    late = {src for t, src in sources if t > WARMUP_NS + 5 * S}
    assert early == {"rules"}
    assert "onnx" in late


class _Boom:
    def predict(self, x: np.ndarray, ts_ns: int) -> object:
        raise RuntimeError("boom")


def test_breaker_changes_name_the_market_and_are_rate_limited() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        g = GuardedPredictor(
            _Boom(),  # type: ignore[arg-type]
            RulePredictor(),
            ModelSettings(cooldown_s=0, half_open_successes=1),
        )
        g.market = "SEI/USDC"
        x = np.zeros(64, dtype=np.float32)
        for i in range(50):  # open, half-open, open ... 50 changes in a burst
            g.predict(x, i * S)
    finally:
        logger.remove(sink)
    assert len(g.transitions) >= 50
    assert len(lines) == 1  # the rest within the same 10 s are counted, not logged
    assert lines[0].startswith("ML breaker SEI/USDC: closed -> open: inference error")


def test_the_panel_fits_an_80_column_terminal() -> None:
    """At 80 columns the full table cut every cell to '1.2…'; the compact one fits."""
    from flashmm.ui import FULL_TABLE_WIDTH, render

    snap = _snapshot_after(60)
    assert snap is not None
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(render(snap))
    text = out.getvalue()
    rows = [ln for ln in text.splitlines() if ln.lstrip().startswith(("SEI/USDC", "ETH/USDC"))]
    assert len(rows) == 2 and all("…" not in r for r in rows), text
    assert all(len(ln) <= 80 for ln in text.splitlines())
    sei = snap.markets["SEI/USDC"]
    assert f"{sei.mid:,.6g}" in rows[0] and "bid / ask (ours)" in text
    # the header and the lamps did not wrap mid-word (four lines of lamps before)
    lines = text.splitlines()
    assert lines[0].rstrip().endswith(f"events {snap.events:,}"), lines[0]
    assert lines[1].startswith(" P&L ") and "decision p50" in lines[1], lines[1]
    lamps = [ln for ln in lines if ln.startswith("Breakers")]
    assert lamps == [f"Breakers ● {len(snap.breakers)} closed  ● model (closed)"], text
    snap.breakers["kill_switch"] = {"state": "tripped", "action": "halt", "reason": "8 sigma"}
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(render(snap))
    lines = out.getvalue().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("Breakers"))
    assert lines[at].startswith(f"Breakers ● {len(snap.breakers) - 1} closed  ● kill_switch")
    assert lines[at + 1] == "  kill_switch: halt — 8 sigma"
    wide = io.StringIO()
    Console(file=wide, width=FULL_TABLE_WIDTH, color_system=None).print(render(snap))
    assert "bids (ours)" in wide.getvalue() and "bid / ask (ours)" not in wide.getvalue()


def test_the_model_off_in_the_profile_is_no_alarm() -> None:
    """The shipped default (the rule) showed a red lamp and a yellow 'model breaker
    disabled' line on every frame."""
    from flashmm.ui import breaker_lines

    cfg = load_config("paper")
    engine = build_engine(cfg)
    feed = ReplayFeed([NEXO_23], scales_for(cfg.specs()))
    ev = next(iter(feed.events()))
    engine.on_market_event(ev, ev.ts_ns)
    text = breaker_lines(engine.snapshot(ev.ts_ns))
    assert "model (off: rules)" in text.plain and "breaker disabled" not in text.plain
    lamp = text.plain.index("● model (")
    styles = [str(sp.style) for sp in text.spans if sp.start <= lamp < sp.end]
    assert styles == ["dim"], styles
