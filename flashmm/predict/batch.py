"""Features of a whole recording on a regular time grid (training and evaluation).

The recording is replayed through the same :class:`~flashmm.book.BookBuilder`
and :class:`~flashmm.features.OnlineFeatures` the engine uses, so a model
trains on the numbers it will see live.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flashmm.book import BookBuilder, SequenceGap
from flashmm.features import N_FEATURES, OnlineFeatures
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import DepthDiff, DepthSnapshot, Trade


def batch_features(
    paths: Sequence[str | Path],
    symbol: str,
    tick: float,
    lot: float,
    sample_every_ms: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of ``paths`` (one symbol, chained in time order) at each grid time
    ``k * sample_every_ms``: :meth:`OnlineFeatures.vector` as of the last event at or
    before it. Grid points while the book is not valid are skipped.

    Returns ``(ts_ns int64 (n,), X float32 (n, 64), mid float64 (n,))`` with
    the mid in ticks.
    """
    step = int(sample_every_ms) * 1_000_000
    if step <= 0:
        raise ValueError("sample_every_ms must be > 0")
    feed = ReplayFeed(paths, make_scales([(symbol, tick, lot)]), align=False)
    builder = BookBuilder(symbol)
    book = builder.book
    fe = OnlineFeatures(tick)
    ts_out: list[int] = []
    mids: list[float] = []
    chunks: list[np.ndarray] = []
    chunk = np.empty((65536, N_FEATURES), dtype=np.float32)
    n_in_chunk = 0
    next_grid = -1
    ok = False  # features ready and the book synced and valid

    for ev in feed.events():
        ts = ev.ts_ns
        if next_grid < 0:
            next_grid = (ts // step + 1) * step
        while next_grid < ts:
            if ok:
                chunk[n_in_chunk] = fe.vector(next_grid)
                n_in_chunk += 1
                ts_out.append(next_grid)
                mids.append(fe.mid_ticks())
                if n_in_chunk == len(chunk):
                    chunks.append(chunk)
                    chunk = np.empty_like(chunk)
                    n_in_chunk = 0
            next_grid += step
        if isinstance(ev, Trade):
            fe.on_trade(ev)
            continue
        if not isinstance(ev, DepthDiff | DepthSnapshot):
            continue
        try:
            if builder.on_event(ev) and builder.synced:
                fe.on_book(book, ts)
        except SequenceGap:
            pass
        ok = fe.ready and builder.synced and book.valid
    X = np.concatenate([*chunks, chunk[:n_in_chunk]])
    return np.asarray(ts_out, dtype=np.int64), X, np.asarray(mids, dtype=np.float64)
