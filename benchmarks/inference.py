"""Prediction speed: ONNX per call, features + inference per event, next to the rules.

Per call, the model is timed three ways: FlashMM's native kernel (numba),
onnxruntime, and the same lowered program run op by op with numpy (the
alternative to the kernel, kept here as the measurement that chose numba).

Replays the 20-minute NEXO recording through the book builder and the online
features, predicting on every event with the default model (through the
circuit breaker, as the engine does) and with the rule predictor. Prints
figures; asserts nothing.

    .venv/bin/python benchmarks/inference.py [--model models/flashmm-direction-1s.onnx]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

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


def numpy_program(prog: Any, x: np.ndarray) -> np.ndarray:
    """The native program evaluated op by op with numpy (no compiled kernel)."""
    from flashmm.predict import native as nv

    w, p = prog.work, prog.params
    w[: len(x)] = x
    for code, a, b, d, n, m, p0, p1 in prog.prog.tolist():
        src = w[a : a + n]
        if code == nv.AFFINE:
            w[d : d + m] = src @ p[p0 : p0 + n * m].reshape(n, m) + p[p1 : p1 + m]
        elif code == nv.ELEM:
            w[d : d + n] = (src - p[p0 : p0 + n]) * p[p1 : p1 + n]
        elif code == nv.ADD2:
            w[d : d + n] = src + w[b : b + n]
        elif code == nv.RELU:
            w[d : d + n] = np.maximum(src, 0.0)
        elif code == nv.TANH:
            w[d : d + n] = np.tanh(src)
        elif code == nv.SIGMOID:
            w[d : d + n] = 1.0 / (1.0 + np.exp(-src))
        elif code == nv.SOFTMAX:
            e = np.exp(src - src.max())
            w[d : d + n] = e / e.sum()
        elif code == nv.NORM_L1:
            w[d : d + n] = src / np.abs(src).sum()
        elif code == nv.NORM_L2:
            w[d : d + n] = src / np.sqrt((src * src).sum())
        else:
            w[d : d + n] = src / np.abs(src).max()
    return w


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "flashmm-direction-1s.onnx"))
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

    engines = ["native", "onnxruntime"] if model.engine == "native" else ["onnxruntime"]
    per_engine: dict[str, list[float]] = {}
    for eng in engines:
        model.set_engine(eng)
        for _ in range(500):
            model.predict(x, 0)
        lat = []
        for i in range(args.calls):
            t = ns()
            model.predict(x, i)
            lat.append((ns() - t) / 1e3)
        per_engine[eng] = lat
    model.set_engine(engines[0])

    np_lat = []
    if model.engine == "native":
        prog = model._native
        for _ in range(args.calls):
            t = ns()
            numpy_program(prog, x)
            np_lat.append((ns() - t) / 1e3)
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
    for eng, lat in per_engine.items():
        print(f"  model {eng:<15} {pct(lat)}")
    if np_lat:
        print(f"  numpy op by op (eval) {pct(np_lat)}")
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
