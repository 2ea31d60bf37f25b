"""Decision latency: book event → quotes decided, and events/s, on a shared recording.

Replays a recording through the engine (simulated venue, simulated clock,
no panel, no journal) and prints p50/p99/p99.9 of the time from the start
of handling a book event (or a quote-cycle tick) to the quotes being
decided and handed to the venue, plus end-to-end events/s. For comparison
it also times the bare pieces on the same events: parsing alone and
parsing + book alone.

The engine runs once per mode: model ``off`` (rules), model ``native`` (the
shipped model on FlashMM's compiled kernel) and model ``onnxruntime`` (the
same model through onnxruntime), as a user runs it: with the model on, its
64 features in the compiled core (``model.native_features``), and the
built-in strategy's quotes there too (``strategy.native``). Mode ``core`` runs the compiled core
(:mod:`flashmm.native`: book, 64 features, model, strategy, order diff and
position-limit check in numba kernels) on the same events with the model on:
each event crosses from Python into the core once (its levels packed into
one array), each quote cycle once (the live orders in, cancels and places
out); the venue is left out (places are taken as resting orders at once).
The latency is the live path's wall clock (features, model, breaker,
strategy, risk), and the model evaluation alone (``OnnxPredictor.predict``,
every call) is reported separately. The machine load changes these figures:
run it niced, repeat it, and quote ranges.

Mode ``loop`` is the same core driven by one compiled loop over the
recording's numpy cache (``flashmm/feeds/cache.py``: no Python object per
event, one crossing for the whole day): what the core costs per event when
nothing else is in the way (the backtest-throughput figure).

    python benchmarks/decision_latency.py [--data FILE ...]
        [--modes off native onnxruntime core loop]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from flashmm.book import BookBuilder
from flashmm.config import load_config
from flashmm.feeds.replay import ReplayFeed
from flashmm.logs import setup_logging
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, Trade
from flashmm.runner import build_venue, engine_from, scales_for, signal_factory

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
        if mode == "core":
            run_core(args.data, scales)
        elif mode == "loop":
            run_loop(args.data, scales)
        else:
            run_mode(mode, args.data, scales)


MODES = {
    "off": ["model.enabled=false"],
    "native": ["model.enabled=true", "model.native=true"],
    "onnxruntime": ["model.enabled=true", "model.native=false"],
    "core": ["model.enabled=true", "model.native=true"],
    "loop": ["model.enabled=true", "model.native=true"],
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

    # with the features in the core and a native model, the model signal is one core
    # call (features, drift check, model: flashmm.native.signal.ModelStep) and the
    # model is not called through model.predict: time that call instead
    from flashmm.native.signal import ModelStep

    step_signal = ModelStep.signal

    def timed_step(self, ts):  # type: ignore[no-untyped-def]
        r = step_signal(self, ts)
        evals.append(int(self.lat_us * 1e3))
        return r

    ModelStep.signal = timed_step  # type: ignore[method-assign]
    events = list(ReplayFeed(data, scales).events())
    engine = engine_from(cfg, build_venue(cfg), signal_factory=factory)
    t0 = time.perf_counter()
    for ev in events:
        now = ev.ts_ns
        engine.run_due_timers(now)
        engine.on_market_event(ev, now)
        engine.pump_venue(now)
    t_engine = time.perf_counter() - t0
    ModelStep.signal = step_signal  # type: ignore[method-assign]
    n = len(events)
    lat = engine.lat[: min(engine.lat_n, len(engine.lat))] / 1e3
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) if len(lat) else (0, 0, 0)
    s = engine.summary()
    steps = any(getattr(ms.signal_source, "_step", None) for ms in engine.markets.values())
    label = f"engine, model {mode}" + (f" ({', '.join(sorted(set(engines)))})" if engines else "")
    print(f"{label:<34}{t_engine:>9.2f}{n / t_engine:>14,.0f}{t_engine / n * 1e6:>11.1f}")
    print(
        f"  decision latency (event → quotes decided), {len(lat):,} decisions: "
        f"p50 {p50:.1f} µs  p99 {p99:.1f} µs  p99.9 {p999:.1f} µs"
    )
    if evals:
        e = np.asarray(evals) / 1e3
        q50, q99 = np.percentile(e, [50, 99])
        what = "one core call: features, drift check, model" if steps else "model.predict"
        print(f"  model evaluation ({what}), {len(e):,} calls: p50 {q50:.1f} µs  p99 {q99:.1f} µs")
    print(f"  fills {s['fills']}  quotes sent {s['quotes_sent']}  P&L {s['pnl_usdc']:+.4f} USDC")
    # the ML breaker measures the model's latency on the wall clock here (not a modelled
    # cost as in a backtest): on a loaded machine it can open, and the rules then quote
    trips = [
        t["reason"]
        for ms in engine.markets.values()
        for t in getattr(getattr(ms.signal_source, "predictor", None), "transitions", [])
        if t["to"] == "open"
    ]
    if trips:
        print(f"  ML breaker opened {len(trips)} times (first: {trips[0]})")


def run_core(data: list[str], scales: dict) -> None:  # type: ignore[type-arg]
    """The compiled core on the first market's events, model on, the live path's crossings."""
    from flashmm.native import NativeCore, levels_array, warm
    from flashmm.predict.onnx_model import OnnxPredictor
    from flashmm.predict.settings import ModelSettings
    from flashmm.strategy.avellaneda import AvellanedaParams

    cfg = load_config(
        ROOT / "configs" / "backtest.yaml", ["risk.kill_switch_enabled=false", *MODES["core"]]
    )
    t0 = time.perf_counter()
    warm()
    t_warm = time.perf_counter() - t0
    spec = cfg.specs()[0]
    ms = ModelSettings.model_validate(dict(cfg.model))
    pred = OnnxPredictor(ms.resolve_path(), min_lean=ms.min_lean, native=True)
    core = NativeCore(
        spec.unit_usdc,
        AvellanedaParams.model_validate(cfg.strategy.params),
        cfg.risk,
        ms,
        pred._prog,
    )
    core.fst[core.k.F_MIN_LEAN] = pred.min_lean
    events = [ev for ev in ReplayFeed(data, scales).events() if ev.symbol == spec.reference]
    period = int(1e9 / cfg.strategy.quote_hz)
    live: dict[int, tuple[int, int, int, int, int]] = {}
    next_cid = 1
    next_q = 0
    last_id = 0
    synced = False
    dirty = False
    lat: list[int] = []
    pc = time.perf_counter_ns

    def decide(now: int, t_start: int) -> None:
        nonlocal next_cid
        core.set_live(live.values())
        if core.decide(now, 0, use_model=now - core.t0 >= 30_000_000_000) < 0:
            return
        for cid in core.cancels():
            live.pop(cid, None)
        for side, px, lots in core.places():
            live[next_cid] = (side, px, lots, next_cid, 0)
            next_cid += 1
        lat.append(pc() - t_start)

    t0 = time.perf_counter()
    for ev in events:
        now = ev.ts_ns
        while next_q <= now:  # the quote cycles due before the event
            if next_q and dirty and synced:
                dirty = False
                decide(next_q, pc())
            next_q = (now // period + 1) * period if not next_q or not dirty else next_q + period
        if isinstance(ev, DepthDiff):
            if not synced or ev.last_id <= last_id:
                continue
            if ev.first_id > last_id + 1 and ev.prev_id < 0:
                synced = False  # a gap: wait for the next snapshot
                continue
            last_id = ev.last_id
            dirty |= core.on_diff_levels(ev.bids, ev.asks, now)
        elif isinstance(ev, DepthSnapshot):
            last_id = ev.last_update_id
            synced = True
            dirty |= core.on_snapshot(levels_array(ev.bids, ev.asks), now)
        elif isinstance(ev, Trade):
            core.on_trade(now, ev.price_ticks, ev.size_lots, ev.buyer_is_maker)
            dirty = True
            continue
        else:
            continue
    t_core = time.perf_counter() - t0
    n = len(events)
    # the model alone, through its kernel, on the core's feature vectors
    evals = []
    k = core.k
    for _ in range(20_000):
        t = pc()
        k.model_signal(core.ist, core.fst, core.prog, core.params, core.work, core.x)
        evals.append(pc() - t)
    a = np.asarray(lat) / 1e3
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9]) if len(a) else (0, 0, 0)
    label = "compiled core, model on"
    print(f"{label:<34}{t_core:>9.2f}{n / t_core:>14,.0f}{t_core / n * 1e6:>11.1f}")
    print(f"  kernels ready in {t_warm:.2f} s (compiled or loaded from the on-disk cache)")
    print(
        f"  decision latency (quote cycle → cancels and places, incl. the Python crossing), "
        f"{len(a):,} decisions: p50 {p50:.1f} µs  p99 {p99:.1f} µs  p99.9 {p999:.1f} µs"
    )
    e = np.asarray(evals) / 1e3
    q50, q99 = np.percentile(e, [50, 99])
    print(f"  model evaluation (kernel call), {len(e):,} calls: p50 {q50:.1f} µs  p99 {q99:.1f} µs")
    cuts, drops = int(core.ist[k.I_CUT]), int(core.ist[k.I_DROPPED])
    print(f"  orders resting at the end {len(live)}; risk cuts {cuts}, drops {drops}")


def _core_for(cfg: Any) -> tuple[Any, Any]:
    from flashmm.native import NativeCore
    from flashmm.predict.onnx_model import OnnxPredictor
    from flashmm.predict.settings import ModelSettings
    from flashmm.strategy.avellaneda import AvellanedaParams

    spec = cfg.specs()[0]
    ms = ModelSettings.model_validate(dict(cfg.model))
    pred = OnnxPredictor(ms.resolve_path(), min_lean=ms.min_lean, native=True)
    params = AvellanedaParams.model_validate(cfg.strategy.params)
    core = NativeCore(spec.unit_usdc, params, cfg.risk, ms, pred._prog)
    core.fst[core.k.F_MIN_LEAN] = pred.min_lean
    return spec, core


def run_loop(data: list[str], scales: dict) -> None:  # type: ignore[type-arg]
    """The core over the numpy cache in one compiled loop (model on after 30 s)."""
    from flashmm.feeds.cache import load_recording
    from flashmm.native import warm
    from flashmm.native.replay import replay

    cfg = load_config(ROOT / "configs" / "backtest.yaml", [*MODES["loop"]])
    t0 = time.perf_counter()
    warm()
    spec, core = _core_for(cfg)
    recs = [load_recording(d, spec.reference, scales[spec.reference]) for d in data]
    ev = np.concatenate([r.events for r in recs])
    offs = np.cumsum([0] + [len(r.levels) for r in recs[:-1]])
    starts = np.concatenate([r.events["lv_start"] + o for r, o in zip(recs, offs, strict=True)])
    levels = np.ascontiguousarray(np.concatenate([r.levels for r in recs]), dtype=np.int64)
    cols = [np.ascontiguousarray(ev[c], dtype=np.int64) for c in ("ts_ns", "kind", "side",
            "px_tick", "qty_lot", "first_id", "last_id", "n_bids", "n_asks")]  # fmt: skip
    cols.insert(7, np.ascontiguousarray(starts, dtype=np.int64))
    packed = np.vstack(cols)  # one (10, n) array: the events' columns
    period = int(1e9 / cfg.strategy.quote_hz)
    stats = np.zeros(8, dtype=np.int64)
    replay(core.ist, core.fst, core.prog, core.params, core.work, core.x, core.io, packed,
           levels[:1000], stats, period)  # fmt: skip  # compile or load before timing
    spec, core = _core_for(cfg)
    t_ready = time.perf_counter() - t0
    stats[:] = 0
    t0 = time.perf_counter()
    replay(core.ist, core.fst, core.prog, core.params, core.work, core.x, core.io, packed,
           levels, stats, period)  # fmt: skip
    t = time.perf_counter() - t0
    n = packed.shape[1]
    print(f"{'compiled loop (core), model on':<34}{t:>9.2f}{n / t:>14,.0f}{t / n * 1e6:>11.2f}")
    print(
        f"  {stats[0]:,} decisions ({stats[1]:,} with the model), {stats[2]:,} places, "
        f"{stats[3]:,} cancels; ready in {t_ready:.2f} s (kernels, model, cached arrays)"
    )


if __name__ == "__main__":
    main()
