"""Prediction speed: ONNX per call, features + inference per event, next to the rules.

Replays the 20-minute NEXO recording through the book builder and the online
features, predicting on every event with the default model (through the
circuit breaker, as the engine does) and with the rule predictor. Prints
figures; asserts nothing.

    .venv/bin/python benchmarks/inference.py [--model models/flashmm-nexo-1s.onnx]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NEXO_23 = DATA / "binance_spot_nexousdt_20240723.dat.gz"


def pct(a: list[float] | np.ndarray) -> str:
    x = np.asarray(a)
    return (
        f"p50 {np.percentile(x, 50):7.1f} us  p99 {np.percentile(x, 99):7.1f} us  "
        f"mean {x.mean():7.1f} us  (n={len(x)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "flashmm-nexo-1s.onnx"))
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()

    from flashmm.book import BookBuilder
    from flashmm.features import OnlineFeatures
    from flashmm.feeds.replay import ReplayFeed, make_scales
    from flashmm.marketdata import DepthDiff, DepthSnapshot, Trade
    from flashmm.predict import GuardedPredictor, ModelSettings, RulePredictor
    from flashmm.predict.onnx_model import OnnxPredictor

    model = OnnxPredictor(args.model)
    rules = RulePredictor()
    x = np.asarray(model.mean, dtype=np.float32)
    ns = time.perf_counter_ns

    for _ in range(500):
        model.predict(x, 0)
    onnx_lat = []
    for i in range(args.calls):
        t = ns()
        model.predict(x, i)
        onnx_lat.append((ns() - t) / 1e3)
    rule_lat = []
    for i in range(args.calls):
        t = ns()
        rules.predict(x, i)
        rule_lat.append((ns() - t) / 1e3)
    guarded = GuardedPredictor(model, rules, ModelSettings())
    g_lat = []
    for i in range(args.calls):
        t = ns()
        guarded.predict(x, i)
        g_lat.append((ns() - t) / 1e3)
    print("single call")
    print(f"  onnx predict          {pct(onnx_lat)}")
    print(f"  guarded (onnx+checks) {pct(g_lat)}")
    print(f"  rules predict         {pct(rule_lat)}")

    if not NEXO_23.exists():
        print(f"no data at {NEXO_23.relative_to(ROOT.parent)}: skipping the replay part")
        return
    events = list(
        ReplayFeed([NEXO_23], make_scales([("nexousdt", 0.001, 0.01)]), align=False).events()
    )
    for label, pred in (("onnx", GuardedPredictor(model, rules, ModelSettings())), ("rules", None)):
        bb = BookBuilder("nexousdt")
        fe = OnlineFeatures(0.001)
        upd, vec, inf, tot = [], [], [], []
        for ev in events:
            ts = ev.ts_ns
            t0 = ns()
            if isinstance(ev, DepthDiff):
                if not bb.on_diff(ev):
                    continue
                fe.on_book(bb.book, ts)
            elif isinstance(ev, DepthSnapshot):
                bb.on_snapshot(ev)
                fe.on_book(bb.book, ts)
            elif isinstance(ev, Trade):
                fe.on_trade(ev)
            else:
                continue
            if not fe.ready:
                continue
            t1 = ns()
            v = fe.vector(ts)
            t2 = ns()
            if pred is None:
                rules.predict(v, ts)
            else:
                pred.predict(v, ts)
                pred.on_mid(fe.mid_ticks(), ts)
            t3 = ns()
            upd.append((t1 - t0) / 1e3)
            vec.append((t2 - t1) / 1e3)
            inf.append((t3 - t2) / 1e3)
            tot.append((t3 - t0) / 1e3)
        print(f"per event, 20-minute NEXO replay, {label} path (book update excluded)")
        print(f"  feature update        {pct(upd)}")
        print(f"  feature vector        {pct(vec)}")
        print(f"  predict               {pct(inf)}")
        print(f"  features + predict    {pct(tot)}")
        if pred is not None:
            print(f"  breaker state at end: {pred.state}")


if __name__ == "__main__":
    main()
