"""Decision latency: book event → quotes decided, and events/s, on a shared recording.

Replays a recording through the engine (simulated venue, simulated clock,
no panel, no journal) and prints p50/p99/p99.9 of the time from the start
of handling a book event (or a quote-cycle tick) to the quotes being
decided and handed to the venue, plus end-to-end events/s. For comparison
it also times the bare pieces on the same events: parsing alone and
parsing + book alone.

The engine runs once per mode: model ``off`` (rules), model ``native`` (the
shipped model on FlashMM's compiled kernel) and model ``onnxruntime`` (the
same model through onnxruntime). The latency is the live path's wall clock
(features, model, breaker, strategy, risk), and the model evaluation alone
(``OnnxPredictor.predict``, every call) is reported separately. The machine
load changes these figures: run it niced, repeat it, and quote ranges.

    python benchmarks/decision_latency.py [--data FILE ...] [--modes off native onnxruntime]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from flashmm.book import BookBuilder
from flashmm.config import load_config
from flashmm.engine import Engine
from flashmm.feeds.replay import ReplayFeed
from flashmm.logs import setup_logging
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot
from flashmm.runner import build_venue, scales_for, signal_factory

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT = [
    DATA / "binance_spot_nexousdt_20240723.dat.gz",
    DATA / "binance_spot_nexousdt_20240724.dat.gz",
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", nargs="+", default=[str(p) for p in DEFAULT])
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=list(MODES),
        help="model off, on with the native kernel, on with onnxruntime",
    )
    args = ap.parse_args()
    setup_logging("WARNING")
    cfg = load_config(ROOT / "configs" / "backtest.yaml", ["risk.kill_switch_enabled=false"])
    scales = scales_for(cfg.specs())

    # peers on the same events: parse only, parse + book
    t0 = time.perf_counter()
    events = list(ReplayFeed(args.data, scales).events())
    t_parse = time.perf_counter() - t0
    books = {s.reference: BookBuilder(s.reference) for s in cfg.specs()}
    t0 = time.perf_counter()
    for ev in events:
        bb = books.get(ev.symbol)
        if bb is None:
            continue
        if isinstance(ev, DepthDiff):
            bb.on_diff(ev)
        elif isinstance(ev, DepthSnapshot):
            bb.on_snapshot(ev)
        elif isinstance(ev, BookTicker):
            bb.on_ticker(ev)
    t_book = time.perf_counter() - t0

    n = len(events)
    print(f"data: {', '.join(Path(d).name for d in args.data)}  ({n:,} events)")
    print(f"{'stage':<34}{'wall s':>9}{'events/s':>14}{'µs/event':>11}")
    for name, t in (("parse only", t_parse), ("book only (pre-parsed)", t_book)):
        print(f"{name:<34}{t:>9.2f}{n / t:>14,.0f}{t / n * 1e6:>11.1f}")
    for mode in args.modes:
        run_mode(mode, args.data, scales)


MODES = {
    "off": ["model.enabled=false"],
    "native": ["model.enabled=true", "model.native=true"],
    "onnxruntime": ["model.enabled=true", "model.native=false"],
}


def run_mode(mode: str, data: list[str], scales: dict) -> None:  # type: ignore[type-arg]
    """The engine on fresh events with the model off or on (one engine)."""
    cfg = load_config(
        ROOT / "configs" / "backtest.yaml", ["risk.kill_switch_enabled=false", *MODES[mode]]
    )
    base = signal_factory(cfg)
    evals: list[int] = []
    engines: list[str] = []

    def factory(spec):  # type: ignore[no-untyped-def]
        sig = base(spec)
        model = getattr(getattr(sig, "predictor", None), "model", None)
        if model is not None:
            engines.append(model.engine)
            inner = model.predict

            def timed(x, ts):  # type: ignore[no-untyped-def]
                t = time.perf_counter_ns()
                r = inner(x, ts)
                evals.append(time.perf_counter_ns() - t)
                return r

            model.predict = timed
        return sig

    events = list(ReplayFeed(data, scales).events())
    engine = Engine(cfg, build_venue(cfg), signal_factory=factory)
    t0 = time.perf_counter()
    for ev in events:
        now = ev.ts_ns
        engine.run_due_timers(now)
        engine.on_market_event(ev, now)
        engine.pump_venue(now)
    t_engine = time.perf_counter() - t0
    n = len(events)
    lat = engine.lat[: min(engine.lat_n, len(engine.lat))] / 1e3
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) if len(lat) else (0, 0, 0)
    s = engine.summary()
    label = f"engine, model {mode}" + (f" ({', '.join(sorted(set(engines)))})" if engines else "")
    print(f"{label:<34}{t_engine:>9.2f}{n / t_engine:>14,.0f}{t_engine / n * 1e6:>11.1f}")
    print(
        f"  decision latency (event → quotes decided), {len(lat):,} decisions: "
        f"p50 {p50:.1f} µs  p99 {p99:.1f} µs  p99.9 {p999:.1f} µs"
    )
    if evals:
        e = np.asarray(evals) / 1e3
        q50, q99 = np.percentile(e, [50, 99])
        print(f"  model evaluation, {len(e):,} calls: p50 {q50:.1f} µs  p99 {q99:.1f} µs")
    print(f"  fills {s['fills']}  quotes sent {s['quotes_sent']}  P&L {s['pnl_usdc']:+.4f} USDC")


if __name__ == "__main__":
    main()
