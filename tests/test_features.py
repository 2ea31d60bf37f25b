"""Features: names, behaviour on a synthetic book, online/batch parity on a real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kit.data import NEXO_23

from flashmm.book import BookBuilder, OrderBook, SequenceGap
from flashmm.features import (
    FEATURE_DOCS,
    FEATURE_NAMES,
    IDX,
    N_FEATURES,
    OnlineFeatures,
)
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import DepthDiff, DepthSnapshot, Trade
from flashmm.predict.batch import batch_features

S = 1_000_000_000


def test_names_are_64_unique_and_documented() -> None:
    assert len(FEATURE_NAMES) == 64 == N_FEATURES
    assert len(set(FEATURE_NAMES)) == 64
    assert all(FEATURE_DOCS[n] for n in FEATURE_NAMES)
    assert IDX["imb_l1"] == FEATURE_NAMES.index("imb_l1")


def _book(bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> OrderBook:
    b = OrderBook("x")
    b.load(bids, asks)
    return b


def test_not_ready_gives_zeros_and_invalid_book_is_ignored() -> None:
    fe = OnlineFeatures(0.001)
    assert not fe.vector(0).any()
    fe.on_book(_book([], [(1001, 5)]), 1)
    assert not fe.ready
    fe.on_book(_book([(1002, 5)], [(1001, 5)]), 2)  # crossed
    assert not fe.ready


def test_book_features_on_a_synthetic_book() -> None:
    fe = OnlineFeatures(0.001)
    bids = [(1000 - i, 10 * (i + 1)) for i in range(10)]
    asks = [(1002 + i, 30) for i in range(10)]
    t0 = 10 * S
    fe.on_book(_book(bids, asks), t0)
    v = fe.vector(t0).copy()
    assert v.dtype == np.float32 and v.shape == (64,)
    assert np.isfinite(v).all()
    assert v[IDX["spread_rel"]] == pytest.approx(1.0)
    assert v[IDX["bid_gap_spread"]] == pytest.approx(0.5)  # 1 tick on a 2-tick spread
    assert v[IDX["spread_bps"]] == pytest.approx(2 / 1001 * 1e4, rel=1e-5)
    # 10 lots bid vs 30 ask at the top: imbalance -0.5, microprice below the mid
    assert v[IDX["imb_l1"]] == pytest.approx(-0.5)
    assert v[IDX["micro_offset_bps"]] < 0
    assert v[IDX["micro_offset_spread"]] == pytest.approx(-0.25)
    # deeper bid levels are bigger: the 10-level imbalance favours bids
    assert v[IDX["imb_l10"]] > 0
    # a buyer lifts the ask: trade imbalance +1, sign +1
    fe.on_trade(Trade("x", t0 + S // 10, 1002, 7, buyer_is_maker=False))
    # the ask is taken: mid moves up one half tick
    fe.on_book(_book(bids, [(1003 + i, 30) for i in range(10)]), t0 + S // 5)
    w = fe.vector(t0 + S // 2)
    assert w[IDX["trade_imb_5s"]] == pytest.approx(1.0)
    assert w[IDX["last_trade_sign"]] == 1
    assert w[IDX["ret_1s"]] > 0 and w[IDX["last_mid_change_sign"]] == 1
    assert w[IDX["ofi_l1_1s"]] > 0  # the ask queue left: buying pressure
    assert w[IDX["time_since_trade"]] == pytest.approx(np.log1p(0.4), rel=1e-4)
    # windows decay with time
    later = fe.vector(t0 + 600 * S)
    assert abs(later[IDX["ofi_l1_1s"]]) < 1e-6
    assert later[IDX["ret_1s"]] == 0.0


def _online_samples(path: Path, step_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Drive OnlineFeatures by hand, calling vector() on every event too (extra
    calls must not change later values), sampling on the same grid as the batch."""
    feed = ReplayFeed([path], make_scales([("nexousdt", 0.001, 0.01)]), align=False)
    bb = BookBuilder("nexousdt")
    fe = OnlineFeatures(0.001)
    out_ts: list[int] = []
    rows: list[np.ndarray] = []
    nxt = -1
    for ev in feed.events():
        ts = ev.ts_ns
        if nxt < 0:
            nxt = (ts // step_ns + 1) * step_ns
        while nxt < ts:
            if fe.ready and bb.synced and bb.book.valid:
                rows.append(fe.vector(nxt).copy())
                out_ts.append(nxt)
            nxt += step_ns
        if isinstance(ev, DepthSnapshot):
            bb.on_snapshot(ev)
            fe.on_book(bb.book, ts)
        elif isinstance(ev, DepthDiff):
            try:
                if bb.on_diff(ev) and bb.synced:
                    fe.on_book(bb.book, ts)
            except SequenceGap:
                pass
        elif isinstance(ev, Trade):
            fe.on_trade(ev)
        fe.vector(ts)  # an extra call, as the engine makes on every event
    return np.asarray(out_ts), np.vstack(rows)


def test_online_and_batch_agree_on_the_20_minute_file() -> None:
    ts_b, X_b, mid = batch_features([NEXO_23], "nexousdt", 0.001, 0.01, sample_every_ms=250)
    ts_o, X_o = _online_samples(NEXO_23, 250_000_000)
    assert len(ts_b) > 4000
    assert np.array_equal(ts_b, ts_o)
    assert np.isfinite(X_b).all()
    np.testing.assert_allclose(X_o, X_b, rtol=1e-5, atol=1e-5)
    assert (mid > 1000).all()
    # the features are alive: no constant column except the grid-independent ones
    varying = (X_b.std(axis=0) > 0).sum()
    assert varying >= 60


def _scaled_copy(src: Path, dst: Path, factor: str) -> None:
    """The recording with every price multiplied by ``factor`` (exact decimals)."""
    import gzip
    from decimal import Decimal

    import orjson

    k = Decimal(factor)

    def px(v: str) -> str:
        return format((Decimal(v) * k).normalize(), "f")

    def lv(levels: list[list[str]]) -> list[list[str]]:
        return [[px(p), q] for p, q in levels]

    with gzip.open(src, "rb") as fi, gzip.open(dst, "wb") as fo:
        for line in fi:
            sp = line.index(b" ")
            msg = orjson.loads(line[sp + 1 :])
            d = msg.get("data", msg)
            for key in ("bids", "asks"):
                if key in d:
                    d[key] = lv(d[key])
            if d.get("e") == "depthUpdate":
                d["b"], d["a"] = lv(d["b"]), lv(d["a"])
            elif d.get("e") == "trade":
                d["p"] = px(d["p"])
            elif "u" in d and "b" in d:  # bookTicker
                d["b"], d["a"] = px(d["b"]), px(d["a"])
            fo.write(line[: sp + 1] + orjson.dumps(msg) + b"\n")


@pytest.mark.skipif(not NEXO_23.exists(), reason="shared data missing")
def test_features_do_not_depend_on_tick_or_price_level(tmp_path: Path) -> None:
    """Prices x10 and x0.1, ticks x10 and x0.1: the same 64 values (prices in ticks
    change by 10x between the cases; the features must not)."""
    ts0, X0, mid0 = batch_features([NEXO_23], "nexousdt", 0.001, 0.01, sample_every_ms=500)
    assert len(ts0) > 2000
    up, down = tmp_path / "x10.dat.gz", tmp_path / "x01.dat.gz"
    _scaled_copy(NEXO_23, up, "10")
    _scaled_copy(NEXO_23, down, "0.1")
    cases = [
        (up, 0.001, 10.0),  # prices x10, same tick: 10x as many ticks
        (NEXO_23, 0.0001, 10.0),  # same prices, tick x0.1 (the SEI tick)
        (down, 0.0001, 1.0),  # prices x0.1, tick x0.1
        (up, 0.01, 1.0),  # prices x10, tick x10
    ]
    for path, tick, ticks_factor in cases:
        ts, X, mid = batch_features([path], "nexousdt", tick, 0.01, sample_every_ms=500)
        assert np.array_equal(ts, ts0)
        np.testing.assert_allclose(mid, mid0 * ticks_factor, rtol=1e-12)
        np.testing.assert_allclose(X, X0, rtol=2e-4, atol=2e-5, err_msg=f"{path.name} {tick}")


def test_skipping_unchanged_top_levels_is_bit_identical() -> None:
    """A book change below the best 10 levels skips the book-shape work; every vector
    (after each book change and trade) is bit-identical to recomputing every time."""
    from kit.data import ETH_SLICE

    for path, sym, tick in ((NEXO_23, "nexousdt", 0.001), (ETH_SLICE, "ethusdt", 0.01)):
        events = list(ReplayFeed([path], make_scales([(sym, tick, 0.01)]), align=False).events())
        out: dict[bool, list[bytes]] = {}
        skipped = {}
        for skip in (False, True):
            bb = BookBuilder(sym)
            fe = OnlineFeatures(tick)
            fe.skip_unchanged = skip
            vecs = []
            for ev in events:
                if isinstance(ev, DepthDiff):
                    if not bb.on_diff(ev):
                        continue
                    fe.on_book(bb.book, ev.ts_ns)
                elif isinstance(ev, DepthSnapshot):
                    bb.on_snapshot(ev)
                    fe.on_book(bb.book, ev.ts_ns)
                elif isinstance(ev, Trade):
                    fe.on_trade(ev)
                else:
                    continue
                vecs.append(fe.vector(ev.ts_ns).tobytes())
            out[skip] = vecs
            skipped[skip] = fe.skipped
        assert len(out[True]) > 1000 and out[True] == out[False], path.name
        assert skipped[False] == 0 and skipped[True] > 50, skipped
