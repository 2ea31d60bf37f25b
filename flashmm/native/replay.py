"""The compiled core over a recording's arrays in one compiled loop (no Python per event).

``replay`` drives the kernels of :mod:`flashmm.native.kernels` over the
columns of a cached recording (:mod:`flashmm.feeds.cache`): depth messages
into the book and the features, trades into the features, and a quote
decision at each quote cycle in which something changed, with the places
taken as resting orders at once (no venue). It is the core's throughput
figure (``benchmarks/decision_latency.py --modes loop``), not a backtest.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flashmm.native import kernels as K
from flashmm.native.cachedir import usable

# rows of the packed event columns
R_TS, R_KIND, R_SIDE, R_PX, R_QTY, R_FIRST, R_LAST, R_LV, R_NB, R_NA = range(10)
KIND_SNAPSHOT, KIND_DIFF, KIND_TRADE = 0, 1, 2
WARMUP_NS = 30_000_000_000


@njit(cache=usable(), nogil=True)
def replay(  # type: ignore[no-untyped-def]
    ist, fst, prog, params, work, x, io, ev, levels, stats, period
):
    """Run every event of ``ev`` (rows as above); ``stats``: decisions, model
    decisions, places, cancels, diffs applied, diffs dropped."""
    n = ev.shape[1]
    lv = np.empty(1 + 3 * 8192, dtype=np.int64)
    next_q = 0
    dirty = False
    last_id = -1
    for i in range(n):
        ts = ev[R_TS, i]
        if next_q == 0:
            next_q = (ts // period + 1) * period
        if next_q <= ts:
            if dirty:
                dirty = False
                io[K.IO_TS] = next_q
                io[K.IO_USE_MODEL] = (
                    1 if ist[K.I_READY] and next_q - ist[K.I_T0] >= WARMUP_NS else 0
                )
                if K.decide(ist, fst, prog, params, work, x, io) >= 0:
                    stats[0] += 1
                    stats[1] += io[K.IO_USE_MODEL]
                    stats[2] += io[K.IO_NPLACE]
                    stats[3] += io[K.IO_NCANCEL]
                    _rest(io)
            next_q = (ts // period + 1) * period
        kind = ev[R_KIND, i]
        if kind == KIND_TRADE:
            K.features_on_trade(
                ist, fst, ts, ev[R_PX, i], ev[R_QTY, i], 1 if ev[R_SIDE, i] < 0 else 0
            )
            dirty = True
            continue
        if kind != KIND_SNAPSHOT and kind != KIND_DIFF:
            continue
        if kind == KIND_DIFF:
            if ev[R_LAST, i] <= last_id:
                stats[5] += 1
                continue
            last_id = ev[R_LAST, i]
        else:
            last_id = ev[R_FIRST, i]
        m = ev[R_NB, i] + ev[R_NA, i]
        if 1 + 3 * m > lv.shape[0]:
            lv = np.empty(1 + 3 * m, dtype=np.int64)
        s = ev[R_LV, i]
        for j in range(m):
            lv[1 + 3 * j] = 0 if j < ev[R_NB, i] else 1
            lv[2 + 3 * j] = levels[s + j, 0]
            lv[3 + 3 * j] = levels[s + j, 1]
        lv[0] = m
        if K.on_depth(ist, fst, lv, ts, kind == KIND_SNAPSHOT):
            dirty = True
        stats[4] += 1


@njit(cache=usable(), nogil=True)
def _rest(io):  # type: ignore[no-untyped-def]
    """After a decision: cancelled orders go, places rest as live orders."""
    n = 0
    for j in range(io[K.IO_NLIVE]):
        o = K.IO_LIVE + K.LIVE_W * j
        if io[o + 4] == K.ST_LIVE:
            d = K.IO_LIVE + K.LIVE_W * n
            for c in range(K.LIVE_W):
                io[d + c] = io[o + c]
            n += 1
    for j in range(io[K.IO_NPLACE]):
        if n == K.MAX_LIVE:
            break
        p = K.IO_PLACES + 3 * j
        d = K.IO_LIVE + K.LIVE_W * n
        io[d] = io[p]
        io[d + 1] = io[p + 1]
        io[d + 2] = io[p + 2]
        io[d + 3] = n + 1_000_000
        io[d + 4] = K.ST_LIVE
        n += 1
    io[K.IO_NLIVE] = n
