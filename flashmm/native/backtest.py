"""A backtest in one compiled loop: book, features, signal, strategy, order diff,
position limit and the simulated venue over a recording's arrays.

:func:`run` walks the packed event columns of one market's recording
(:func:`pack`) the way :meth:`flashmm.engine.Engine.step` walks events: the
quote cycles due before an event (skipping idle ones, as the engine does on
a simulated clock), the event (the venue first, then the book, the features
and the volatility, a requote on a large mid move), then what the venue
reports by then (acks, rejects, cancels, fills). A decision is the core's
``decide`` (features, model or rules, skew and widen, Avellaneda-Stoikov,
order diff, position limit); the venue is :mod:`flashmm.native.sim`.

It returns to Python only when its fill buffer is full, a latency buffer
needs topping up, or at the end: :class:`CompiledBacktest` books each fill
through the engine's accounting (:class:`flashmm.accounting.Accounting`)
in order, and resumes.

Not modelled here (the Python engine has them): the kill switch, the price
band, P&L, drawdown and position breakers, the ML breaker, sequence gaps
(counted; the loop stops quoting until the next snapshot) and plugin
strategies. ``docs/native.md`` says where its results differ from the
engine's on the NEXO day.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from flashmm.native import kernels as K
from flashmm.native import sim as S

_jit = njit(cache=True, nogil=True)

# rows of the packed event columns (as flashmm.native.replay, plus the exchange time)
R_TS, R_KIND, R_SIDE, R_PX, R_QTY, R_FIRST, R_LAST, R_LV, R_NB, R_NA, R_EXCH = range(11)
KIND_SNAPSHOT, KIND_DIFF, KIND_TRADE, KIND_TICKER, KIND_RESYNC = 0, 1, 2, 3, 4
WARMUP_NS = 30_000_000_000

# bst: the loop's own state (int64)
B_I, B_NEXT_Q, B_DIRTY, B_LAST_ID, B_SYNCED, B_LAST_DATA, B_NEXT_CID, B_POS = range(8)
B_BLOCKED, B_STALE, B_SEEN_VER, B_VERSION, B_NFILL, B_PERIOD, B_STALE_NS = range(8, 15)
B_MODEL, B_DECISIONS, B_ORDERS_SENT, B_CANCELS_SENT, B_FRESH, B_GAPS, B_NOW = range(15, 22)
B_MODEL_DECISIONS, B_EVENTS, B_T0 = 22, 23, 24
# the kill switch's sigma (flashmm.risk.KillSwitch) and the price band (PriceBand)
B_REF_TICK, B_ARMED, B_KN, B_SAMPLE_NS, B_OWN_T, B_OWN_N, B_HAS_OWN = range(25, 32)
B_H_HEAD, B_H_TAIL, B_BAND_PENDING_NS, B_BAND_TRIPPED, B_BAND_CONFIRM_NS = range(32, 37)
B_KILL_WARMUP_NS, B_BAND_TRIPS, B_UNSUPPORTED, B_CROSSED = 37, 38, 39, 40
H_CAP = 8192  # mids of the last second (the kill switch's history), a ring
B_HIST = 64
BST_SIZE = B_HIST + H_CAP
# bsf (float64)
BF_LAST_QUOTE_MID, BF_REQUOTE_MOVE = 0, 1
BF_KVAR, BF_OWN_VAR, BF_OWN_P, BF_BAND_GOOD, BF_BAND_PENDING = range(2, 7)
BF_BAND_SIGMA_K, BF_BAND_MIN_BPS, BF_BAND_MAX_PCT, BF_KILL_FLOOR = range(7, 11)
BF_CASH, BF_FEES, BF_PEAK, BF_MIN_EQ, BF_MAX_DD = range(11, 16)
BF_HIST = 16
BSF_SIZE = BF_HIST + H_CAP
NS_PER_S = 1_000_000_000
# fills rows: client id, side, price, lots, liquidity, venue time, fill sequence, event time
FILL_W = 8
FILL_CAP = 1024
RC_END, RC_FILLS, RC_REFILL, RC_OVERFLOW = 0, 1, 2, 3


@_jit
def _gcd(a: int, b: int) -> int:
    a, b = abs(a), abs(b)
    while b:
        a, b = b, a % b
    return a


@_jit
def kill_sigma(bsf: np.ndarray, tick_bps: float) -> float:
    """``KillSwitch.sigma_bps``."""
    s: float = max(bsf[BF_KVAR] ** 0.5, bsf[BF_OWN_VAR] ** 0.5, tick_bps, bsf[BF_KILL_FLOOR])
    return s


@_jit
def kill_update_book(bst: np.ndarray, bsf: np.ndarray, bb: int, ba: int, now: int) -> None:
    """``KillSwitch.update_book`` (its sigma; the switch itself is not armed here)."""
    g = _gcd(_gcd(bst[B_REF_TICK], bb), ba)
    if g > 0:
        bst[B_REF_TICK] = g
    mid = (bb + ba) * 0.5
    if mid <= 0:
        return
    if not bst[B_ARMED]:
        bst[B_ARMED] = now + bst[B_KILL_WARMUP_NS]
    head, tail = bst[B_H_HEAD], bst[B_H_TAIL]
    last = bsf[BF_HIST + (tail - 1) % H_CAP] if tail > head else mid
    if tail - head >= H_CAP:
        bst[B_UNSUPPORTED] = 1
        return
    bst[B_HIST + tail % H_CAP] = now
    bsf[BF_HIST + tail % H_CAP] = mid
    tail += 1
    bst[B_H_TAIL] = tail
    while tail - head > 1 and bst[B_HIST + (head + 1) % H_CAP] <= now - NS_PER_S:
        t0 = bst[B_HIST + head % H_CAP]
        m0 = bsf[BF_HIST + head % H_CAP]
        head += 1
        if t0 < bst[B_SAMPLE_NS]:
            continue
        bst[B_SAMPLE_NS] = t0 + NS_PER_S
        move = (last / m0 - 1.0) * 1e4 if m0 > 0 else 0.0
        bst[B_KN] += 1
        a = 2.0 / (min(bst[B_KN], 600) + 1)
        bsf[BF_KVAR] += a * (move * move - bsf[BF_KVAR])
    bst[B_H_HEAD] = head


@_jit
def kill_own_trade(bst: np.ndarray, bsf: np.ndarray, price: float, now: int) -> None:
    """``KillSwitch.on_own_trade``."""
    if price <= 0:
        return
    had = bst[B_HAS_OWN]
    p0, t0 = bsf[BF_OWN_P], bst[B_OWN_T]
    bst[B_HAS_OWN] = 1
    bsf[BF_OWN_P] = price
    bst[B_OWN_T] = now
    if not had:
        return
    dt_s = max((now - t0) / NS_PER_S, 1.0)
    move = (price / p0 - 1.0) * 1e4
    bst[B_OWN_N] += 1
    a = 2.0 / (min(bst[B_OWN_N], 200) + 1)
    bsf[BF_OWN_VAR] += a * (move * move / dt_s - bsf[BF_OWN_VAR])


@_jit
def band_check(bst: np.ndarray, bsf: np.ndarray, mid: float, now: int, sigma: float) -> bool:
    """``PriceBand.check`` (no venue mid): True when ``mid`` is held."""
    k = bsf[BF_BAND_SIGMA_K]
    lim = max(k * sigma, bsf[BF_BAND_MIN_BPS]) if k > 0 else np.inf
    if bsf[BF_BAND_MAX_PCT] > 0:
        lim = min(lim, bsf[BF_BAND_MAX_PCT] * 100.0)
    ref = bsf[BF_BAND_GOOD]
    if ref <= 0:
        bsf[BF_BAND_GOOD] = mid
        return False
    jump = abs(mid / ref - 1.0) * 1e4
    if jump <= lim:
        bsf[BF_BAND_PENDING] = 0.0
        bsf[BF_BAND_GOOD] = mid
        return False
    p = bsf[BF_BAND_PENDING]
    if p > 0 and abs(mid / p - 1.0) * 1e4 <= lim:
        if now - bst[B_BAND_PENDING_NS] >= bst[B_BAND_CONFIRM_NS]:
            bsf[BF_BAND_PENDING] = 0.0
            bsf[BF_BAND_GOOD] = mid
            return False
    else:
        bsf[BF_BAND_PENDING] = mid
        bst[B_BAND_PENDING_NS] = now
    return True


@_jit
def _equity(bst: np.ndarray, bsf: np.ndarray, ist: np.ndarray, ssf: np.ndarray) -> None:
    """Track the lowest equity and the largest drawdown seen at any event, at the mid
    and at the price band's last good mid (a superset of the engine's marks)."""
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    if not (0 < bb < ba):
        return
    mid = (bb + ba) / 2.0
    for m in (mid, bsf[BF_BAND_GOOD]):
        if m <= 0:
            continue
        eq = bsf[BF_CASH] + bst[B_POS] * m * ssf[S.SF_UNIT] - bsf[BF_FEES]
        bsf[BF_PEAK] = max(bsf[BF_PEAK], eq)
        bsf[BF_MIN_EQ] = min(bsf[BF_MIN_EQ], eq)
        bsf[BF_MAX_DD] = max(bsf[BF_MAX_DD], bsf[BF_PEAK] - eq)


@_jit
def _remove_live(io: np.ndarray, cid: int) -> int:
    """Drop order ``cid`` from the live table (order kept); its row index or -1."""
    n = io[K.IO_NLIVE]
    for j in range(n):
        o = K.IO_LIVE + K.LIVE_W * j
        if io[o + 3] == cid:
            for r in range(j, n - 1):
                d = K.IO_LIVE + K.LIVE_W * r
                for c in range(K.LIVE_W):
                    io[d + c] = io[d + K.LIVE_W + c]
            io[K.IO_NLIVE] = n - 1
            return j
    return -1


@_jit
def _pump(
    bst: np.ndarray,
    bsf: np.ndarray,
    io: np.ndarray,
    sst: np.ndarray,
    ssf: np.ndarray,
    ist: np.ndarray,
    lat: np.ndarray,
    now: int,
    fills: np.ndarray,
    fees: np.ndarray,
    out: np.ndarray,
    ofee: np.ndarray,
) -> None:
    """``Engine.pump_venue``: what the venue reports by ``now``."""
    S.run_due(sst, ssf, ist, lat, now)
    while True:
        n = S.poll(sst, now, out, ofee, ssf)
        for j in range(n):
            kind, cid = out[j, S.X_KIND], out[j, S.X_CID]
            bst[B_DIRTY] = 1
            if kind == S.EV_FILL:
                lots = out[j, S.X_LOTS]
                side = out[j, S.X_SIDE]
                bst[B_POS] += side * lots
                f = bst[B_NFILL]
                fills[f, 0] = cid
                fills[f, 1] = side
                fills[f, 2] = out[j, S.X_PRICE]
                fills[f, 3] = lots
                fills[f, 4] = out[j, S.X_LIQ]
                fills[f, 5] = out[j, S.X_TS]
                fills[f, 6] = out[j, S.X_SEQ]
                fills[f, 7] = now
                fees[f] = ofee[j]
                bst[B_NFILL] = f + 1
                kill_own_trade(bst, bsf, float(out[j, S.X_PRICE]), out[j, S.X_TS])
                bsf[BF_CASH] -= side * lots * out[j, S.X_PRICE] * ssf[S.SF_UNIT]
                bsf[BF_FEES] += ofee[j]
                _equity(bst, bsf, ist, ssf)
                for r in range(io[K.IO_NLIVE]):
                    o = K.IO_LIVE + K.LIVE_W * r
                    if io[o + 3] == cid:
                        io[o + 2] -= lots
                        if io[o + 2] <= 0:
                            _remove_live(io, cid)
                        break
            elif S.EV_REJECTED <= kind <= S.EV_CANCELLED:
                _remove_live(io, cid)
        if n < out.shape[0]:
            return


@_jit
def _send(
    bst: np.ndarray,
    io: np.ndarray,
    sst: np.ndarray,
    ssf: np.ndarray,
    ist: np.ndarray,
    lat: np.ndarray,
    now: int,
    req: np.ndarray,
    ncancel: int,
    cancels_at: int,
    nplace: int,
) -> None:
    """Cancels (client ids at ``io[cancels_at:]``) and the place rows as one batch."""
    req[0] = ncancel
    for j in range(ncancel):
        req[1 + j] = io[cancels_at + j]
    p0 = 1 + ncancel
    req[p0] = nplace
    for j in range(nplace):
        src = K.IO_PLACES + 3 * j
        cid = bst[B_NEXT_CID]
        bst[B_NEXT_CID] = cid + 1
        r = p0 + 1 + 5 * j
        req[r] = cid
        req[r + 1] = io[src]
        req[r + 2] = io[src + 1]
        req[r + 3] = io[src + 2]
        req[r + 4] = 1
        n = io[K.IO_NLIVE]
        if n < K.MAX_LIVE:
            d = K.IO_LIVE + K.LIVE_W * n
            io[d] = io[src]
            io[d + 1] = io[src + 1]
            io[d + 2] = io[src + 2]
            io[d + 3] = cid
            io[d + 4] = K.ST_LIVE
            io[K.IO_NLIVE] = n + 1
        else:
            sst[S.S_OVERFLOW] = 1
    bst[B_ORDERS_SENT] += nplace
    bst[B_CANCELS_SENT] += ncancel
    S.requote(sst, ssf, ist, lat, now, req)


@_jit
def _pull(
    bst: np.ndarray,
    io: np.ndarray,
    sst: np.ndarray,
    ssf: np.ndarray,
    ist: np.ndarray,
    lat: np.ndarray,
    now: int,
    req: np.ndarray,
) -> None:
    """``Engine._pull``: cancel every live order that is not already being cancelled."""
    nc = 0
    for j in range(io[K.IO_NLIVE]):
        o = K.IO_LIVE + K.LIVE_W * j
        if io[o + 4] != K.ST_PENDING_CANCEL:
            io[o + 4] = K.ST_PENDING_CANCEL
            io[K.IO_CANCELS + nc] = io[o + 3]
            nc += 1
    if nc:
        _send(bst, io, sst, ssf, ist, lat, now, req, nc, K.IO_CANCELS, 0)


@_jit
def _quote(  # type: ignore[no-untyped-def]
    bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, now, req
) -> None:
    """``Engine._quote``: blocked -> pull; else a decision and its orders."""
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    blocked = (
        bst[B_SYNCED] == 0
        or bst[B_STALE] != 0
        or bst[B_BAND_TRIPPED] != 0
        or bst[B_CROSSED] != 0
        or not (0 < bb < ba)
    )
    if blocked:
        if bst[B_BLOCKED] == 0:
            bst[B_BLOCKED] = 1
            _pull(bst, io, sst, ssf, ist, lat, now, req)
        bst[B_DIRTY] = 0
        return
    if bst[B_BLOCKED] != 0:
        bst[B_BLOCKED] = 0
        bst[B_DIRTY] = 1
    if bst[B_DIRTY] == 0:
        return
    bst[B_DIRTY] = 0
    io[K.IO_TS] = now
    io[K.IO_POS] = bst[B_POS]
    io[K.IO_BREAKER_OPEN] = 0
    io[K.IO_USE_MODEL] = (
        1 if bst[B_MODEL] and ist[K.I_READY] and now - ist[K.I_T0] >= WARMUP_NS else 0
    )
    nplace = K.decide(ist, fst, prog, params, work, x, io)
    bst[B_DECISIONS] += 1
    bst[B_MODEL_DECISIONS] += io[K.IO_USE_MODEL]
    bsf[BF_LAST_QUOTE_MID] = (bb + ba) / 2.0
    nc = io[K.IO_NCANCEL]
    if nc or nplace > 0:
        _send(bst, io, sst, ssf, ist, lat, now, req, nc, K.IO_CANCELS, max(nplace, 0))


@_jit
def run(  # type: ignore[no-untyped-def]
    bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, ev, levels, fills, fees
):
    """Run from event ``bst[B_I]`` until the end (returns ``RC_END``), a full fill
    buffer (``RC_FILLS``), a latency buffer to top up (``RC_REFILL``) or a full
    table (``RC_OVERFLOW``); call again to resume."""
    n = ev.shape[1]
    lv = np.empty(1 + 3 * 8192, dtype=np.int64)
    req = np.zeros(1 + 6 * S.MAX_ORD, dtype=np.int64)
    out = np.zeros((64, S.OUT_W), dtype=np.int64)
    ofee = np.zeros(64, dtype=np.float64)
    period = bst[B_PERIOD]
    stale_ns = bst[B_STALE_NS]
    lim = fills.shape[0] - 64
    i = bst[B_I]
    while i < n:
        if bst[B_NFILL] >= lim:
            bst[B_I] = i
            return RC_FILLS
        for k in range(3):
            if sst[S.S_LAT_CONST + k] < 0 and sst[S.S_LAT_LEN + k] - sst[S.S_LAT_POS + k] < 256:
                bst[B_I] = i
                return RC_REFILL
        if sst[S.S_OVERFLOW]:
            bst[B_I] = i
            return RC_OVERFLOW
        now = ev[R_TS, i]
        bst[B_NOW] = now
        # --- the quote cycles due up to now (Engine.run_due_timers) ---
        if bst[B_NEXT_Q] == 0:
            bst[B_NEXT_Q] = now
        while bst[B_NEXT_Q] <= now:
            t = bst[B_NEXT_Q]
            if bst[B_DIRTY]:
                wake = 0
            else:
                wake = S.next_due(sst)
                if wake < 0:
                    wake = 1 << 62
                if bst[B_LAST_DATA] and bst[B_STALE] == 0:
                    wake = min(wake, bst[B_LAST_DATA] + stale_ns + 1)
            if wake > t:
                target = min(wake, now + 1)
                steps = -(-(target - t) // period)
                bst[B_NEXT_Q] = t + steps * period
                continue
            # Engine.on_timer
            _pump(bst, bsf, io, sst, ssf, ist, lat, t, fills, fees, out, ofee)
            if bst[B_LAST_DATA]:
                stale = 1 if t - bst[B_LAST_DATA] > stale_ns else 0
                if stale != bst[B_STALE]:
                    bst[B_STALE] = stale
                    bst[B_VERSION] += 1
                    if stale:
                        bst[B_BLOCKED] = 1
                        _pull(bst, io, sst, ssf, ist, lat, t, req)
            ver = bst[B_VERSION]
            if bst[B_DIRTY] or bst[B_SEEN_VER] != ver:
                bst[B_SEEN_VER] = ver
                _quote(bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, t, req)
            bst[B_NEXT_Q] = t + period
        # --- the event (Engine.on_market_event) ---
        bst[B_EVENTS] += 1
        if S.next_action_due(sst) >= 0 and S.next_action_due(sst) <= now:
            S.run_due(sst, ssf, ist, lat, now)
        kind = ev[R_KIND, i]
        changed = False
        snapshot = False
        if kind == KIND_TRADE:
            buyer_maker = ev[R_SIDE, i] < 0
            S.on_trade(sst, ssf, lat, now, ev[R_PX, i], ev[R_QTY, i], buyer_maker, ev[R_EXCH, i])
            bst[B_LAST_DATA] = now
            bst[B_DIRTY] = 1
            K.features_on_trade(ist, fst, now, ev[R_PX, i], ev[R_QTY, i], 1 if buyer_maker else 0)
        elif kind <= KIND_DIFF:  # a snapshot or a diff
            bst[B_LAST_DATA] = now
            if kind == KIND_DIFF:
                if bst[B_SYNCED] == 0 or ev[R_LAST, i] <= bst[B_LAST_ID]:
                    i += 1
                    _pump(bst, bsf, io, sst, ssf, ist, lat, now, fills, fees, out, ofee)
                    continue
                if ev[R_FIRST, i] > bst[B_LAST_ID] + 1:
                    # a sequence gap: wait for the next snapshot with the quotes pulled
                    bst[B_GAPS] += 1
                    bst[B_SYNCED] = 0
                    S.resync(sst)
                    _pull(bst, io, sst, ssf, ist, lat, now, req)
                    i += 1
                    _pump(bst, bsf, io, sst, ssf, ist, lat, now, fills, fees, out, ofee)
                    continue
                bst[B_LAST_ID] = ev[R_LAST, i]
            else:
                bst[B_LAST_ID] = ev[R_FIRST, i]
                bst[B_SYNCED] = 1
                sst[S.S_SYNCED] = 1
                snapshot = True
            m = ev[R_NB, i] + ev[R_NA, i]
            if 1 + 3 * m > lv.shape[0]:
                lv = np.empty(1 + 3 * m, dtype=np.int64)
            s0 = ev[R_LV, i]
            for j in range(m):
                lv[1 + 3 * j] = 0 if j < ev[R_NB, i] else 1
                lv[2 + 3 * j] = levels[s0 + j, 0]
                lv[3 + 3 * j] = levels[s0 + j, 1]
            lv[0] = m
            K.apply_levels(ist, lv, snapshot)
            changed = True
            S.on_depth(sst, ssf, ist, lat, now, 0 if snapshot else ev[R_EXCH, i])
            bb, ba = K.best(ist, 0), K.best(ist, 1)
            if not (0 < bb < ba):  # Engine._after_book: a crossed book pulls
                if bb and ba and bst[B_CROSSED] == 0:
                    bst[B_CROSSED] = 1
                    bst[B_VERSION] += 1
                    if bst[B_BLOCKED] == 0:
                        bst[B_BLOCKED] = 1
                        _pull(bst, io, sst, ssf, ist, lat, now, req)
            else:
                if bst[B_CROSSED]:
                    bst[B_CROSSED] = 0
                    bst[B_VERSION] += 1
                mid = (bb + ba) / 2.0
                good = bsf[BF_BAND_GOOD]
                tick_bps = max(bst[B_REF_TICK], 1) / (good if good != 0 else mid) * 1e4
                if band_check(bst, bsf, mid, now, kill_sigma(bsf, tick_bps)):
                    if bst[B_BAND_TRIPPED] == 0:
                        bst[B_BAND_TRIPPED] = 1
                        bst[B_BAND_TRIPS] += 1
                        bst[B_VERSION] += 1
                        if bst[B_BLOCKED] == 0:
                            bst[B_BLOCKED] = 1
                            _pull(bst, io, sst, ssf, ist, lat, now, req)
                    _pump(bst, bsf, io, sst, ssf, ist, lat, now, fills, fees, out, ofee)
                    i += 1
                    continue
                if bst[B_BAND_TRIPPED]:
                    bst[B_BAND_TRIPPED] = 0
                    bst[B_VERSION] += 1
                bst[B_DIRTY] = 1
                _equity(bst, bsf, ist, ssf)
                K.features_on_book(ist, fst, now)
                K.vol_update(ist, fst, mid, now)
                kill_update_book(bst, bsf, bb, ba, now)
                lq = bsf[BF_LAST_QUOTE_MID]
                mv = bsf[BF_REQUOTE_MOVE]
                if mv > 0 and lq > 0 and abs(mid / lq - 1.0) >= mv:
                    _quote(bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, now, req)
        elif kind == KIND_TICKER:  # data for the stale-feed check, nothing else
            bst[B_LAST_DATA] = now
        elif kind == KIND_RESYNC:
            # a new replay pass (FeedStatus "resync"): the book waits for a snapshot,
            # the kill switch forgets its last second, the volatility starts afresh
            bst[B_SYNCED] = 0
            S.resync(sst)
            bst[B_H_HEAD] = bst[B_H_TAIL]
            ist[K.I_VOL_NS] = 0
            ist[K.I_VOL_N] = 0
            fst[K.F_VOL_VAR] = 0.0
            fst[K.F_VOL_MID] = 0.0
        if changed and bst[B_T0] == 0:
            bst[B_T0] = now
        # --- what the venue reports by now (Engine.pump_venue) ---
        _pump(bst, bsf, io, sst, ssf, ist, lat, now, fills, fees, out, ofee)
        i += 1
    bst[B_I] = i
    return RC_END


def unsupported(cfg: Any) -> str | None:
    """What of the profile the loop does not model (None: it models all of it)."""
    if cfg.strategy.name != "avellaneda":
        return f"strategy {cfg.strategy.name!r} (only the built-in avellaneda runs compiled)"
    if cfg.risk.kill_switch_enabled:
        return "the kill switch (risk.kill_switch_enabled)"
    if cfg.model.get("enabled") and cfg.model.get("online"):
        return "an online model (model.online)"
    return None


def pack(recordings: Sequence[Any], days: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The event columns (``R_*`` rows, int64) and the levels of chained cached
    recordings (:class:`flashmm.feeds.cache.Recording`) of one stream.

    ``days`` > 1 plays them that many times, each pass shifted by their span
    plus 1 ms (receive and exchange times) after a resync row, as a looping
    replay does."""
    ev = np.concatenate([r.events for r in recordings])
    offs = np.cumsum([0] + [len(r.levels) for r in recordings[:-1]])
    starts = np.concatenate(
        [r.events["lv_start"] + o for r, o in zip(recordings, offs, strict=True)]
    )
    levels = np.ascontiguousarray(np.concatenate([r.levels for r in recordings]), dtype=np.int64)
    names = ("ts_ns", "kind", "side", "px_tick", "qty_lot", "first_id", "last_id")
    cols = [np.ascontiguousarray(ev[c], dtype=np.int64) for c in names]
    cols.append(np.ascontiguousarray(starts, dtype=np.int64))
    for c in ("n_bids", "n_asks", "exch_ms"):
        cols.append(np.ascontiguousarray(ev[c], dtype=np.int64))
    one = np.vstack(cols)
    if days <= 1 or not one.shape[1]:
        return one, levels
    lo, hi = int(one[R_TS].min()), int(one[R_TS].max())
    shift = hi - lo + 1_000_000
    parts = [one]
    for k in range(1, days):
        resync = np.zeros((one.shape[0], 1), dtype=np.int64)
        resync[R_TS, 0] = lo + k * shift - 1
        resync[R_KIND, 0] = KIND_RESYNC
        p = one.copy()
        p[R_TS] += k * shift
        p[R_EXCH] = np.where(p[R_EXCH] != 0, p[R_EXCH] + k * shift // 1_000_000, 0)
        parts += [resync, p]
    return np.ascontiguousarray(np.hstack(parts)), levels


class CompiledBacktest:
    """One market of a profile over cached recordings, in :func:`run`.

    ``cfg``: a :class:`flashmm.config.Config` (its first market whose reference
    the recordings hold, its strategy, risk, model and ``venue.sim`` settings);
    ``recordings``: that stream's cached recordings in time order. The model
    runs natively when ``model.enabled`` (rules before its 30 s warm-up)."""

    def __init__(self, cfg: Any, recordings: Sequence[Any], days: int = 1) -> None:
        from flashmm.accounting import Accounting
        from flashmm.native import NativeCore
        from flashmm.native.sim import NativeSim
        from flashmm.predict.settings import ModelSettings
        from flashmm.strategy.avellaneda import AvellanedaParams
        from flashmm.venues.sim import SimSettings

        why = unsupported(cfg)
        if why is not None:
            raise ValueError(f"the compiled backtest does not model {why}")
        sym = recordings[0].symbol
        spec = next(s for s in cfg.specs() if s.reference == sym)
        self.spec = spec
        ms = ModelSettings.model_validate(dict(cfg.model))
        program = None
        min_lean = ms.min_lean
        if ms.enabled:
            from flashmm.predict.onnx_model import OnnxPredictor

            path = ms.resolve_path()
            if path is None:
                raise ValueError("model.enabled needs model.path")
            pred = OnnxPredictor(path, min_lean=ms.min_lean, native=True)
            program = pred._prog
            min_lean = pred.min_lean
        params = AvellanedaParams.model_validate(cfg.strategy.params)
        core = NativeCore(spec.unit_usdc, params, cfg.risk, ms, program)
        core.fst[core.k.F_MIN_LEAN] = min_lean
        self.core = core
        self.sim = NativeSim(
            SimSettings.model_validate(cfg.venue.sim), spec.unit_usdc, core.ist, spec.symbol
        )
        self.ev, self.levels = pack(recordings, days)
        self.bst = np.zeros(BST_SIZE, dtype=np.int64)
        self.bsf = np.zeros(BSF_SIZE, dtype=np.float64)
        self.bst[B_PERIOD] = int(1e9 / cfg.strategy.quote_hz)
        self.bst[B_STALE_NS] = int(cfg.risk.stale_feed_ms * 1_000_000)
        self.bst[B_NEXT_CID] = 1
        self.bst[B_MODEL] = 1 if program is not None else 0
        self.bsf[BF_REQUOTE_MOVE] = cfg.strategy.requote_mid_move_bps / 1e4
        from flashmm.risk import KillSwitch, PriceBand

        ks, band = KillSwitch.from_config(cfg.risk), PriceBand.from_config(cfg.risk)
        self.bst[B_KILL_WARMUP_NS] = ks.warmup_ns
        self.bsf[BF_KILL_FLOOR] = ks.floor_bps
        self.bst[B_BAND_CONFIRM_NS] = band.confirm_ns
        self.bsf[BF_BAND_SIGMA_K] = band.sigma_k
        self.bsf[BF_BAND_MIN_BPS] = band.min_bps
        self.bsf[BF_BAND_MAX_PCT] = band.max_pct
        self.fills_buf = np.zeros((FILL_CAP, FILL_W), dtype=np.int64)
        self.fees_buf = np.zeros(FILL_CAP, dtype=np.float64)
        self.acct = Accounting([spec], cfg.risk.max_position_usdc)
        self.risk = cfg.risk
        self.fills: list[Any] = []

    def run(self) -> None:
        """Run the whole recording; fills are booked in :attr:`acct` as they come."""
        c, s = self.core, self.sim
        while True:
            rc = run(self.bst, self.bsf, c.ist, c.fst, c.prog, c.params, c.work, c.x,
                     c.io, s.sst, s.ssf, s.lat, self.ev, self.levels, self.fills_buf,
                     self.fees_buf)  # fmt: skip
            self._book_fills()
            if rc == RC_END:
                return
            if rc == RC_REFILL:
                s.refill()
            elif rc == RC_OVERFLOW:
                raise RuntimeError("compiled backtest: a simulator table is full")

    def breaker_margin(self) -> str | None:
        """Why the engine's P&L breakers might have tripped in this run (None: they
        cannot have: the lowest equity and largest drawdown at any event stay more
        than 1 % inside the limits), which the loop does not model."""
        r, f = self.risk, self.bsf
        if f[BF_MIN_EQ] <= -0.99 * r.daily_loss_limit_usdc:
            return f"daily loss near its limit ({f[BF_MIN_EQ]:.2f} USDC)"
        if f[BF_MAX_DD] >= 0.99 * r.max_drawdown_usdc:
            return f"drawdown near its limit ({f[BF_MAX_DD]:.2f} USDC)"
        return None

    def shutdown(self, step_ns: int = 10_000_000, timeout_s: float = 10.0) -> int:
        """``flashmm.runner.shutdown``: cancel every order, advance the clock until the
        venue confirms; returns the orders left open."""
        from flashmm.types import Fill, OrderCancelled, OrderRejected

        io, k = self.core.io, self.core.k
        now = int(self.bst[B_NOW])
        live = [int(io[k.IO_LIVE + k.LIVE_W * j + 3]) for j in range(int(io[k.IO_NLIVE]))]
        pending = [
            int(io[k.IO_LIVE + k.LIVE_W * j + 4]) == k.ST_PENDING_CANCEL
            for j in range(int(io[k.IO_NLIVE]))
        ]
        cids = [c for c, p in zip(live, pending, strict=True) if not p]
        if cids:
            self.bst[B_CANCELS_SENT] += len(cids)
            self.sim.requote(cids, [], now)
        left = set(live)
        for _ in range(int(timeout_s * 1e9 / step_ns)):
            if not left:
                break
            now += step_ns
            for e in self.sim.poll(now):
                if isinstance(e, Fill):
                    self.acct.on_fill(e)
                    self.fills.append(e)
                    self.bst[B_POS] += int(e.side) * e.size_lots
                elif isinstance(e, OrderCancelled | OrderRejected):
                    left.discard(e.client_id)
        self.bst[B_NOW] = now
        return len(left)

    def _book_fills(self) -> None:
        from flashmm.types import Fill, Liquidity, Side

        n = int(self.bst[B_NFILL])
        if not n:
            return
        rows = self.fills_buf[:n].tolist()
        fees = self.fees_buf[:n].tolist()
        sym = self.spec.symbol
        for r, fee in zip(rows, fees, strict=True):
            f = Fill(sym, r[0], Side(r[1]), r[2], r[3], fee, Liquidity(r[4]), r[5], f"sim-{r[6]}")
            self.acct.on_fill(f)
            self.fills.append(f)
        self.bst[B_NFILL] = 0

    @property
    def mid(self) -> float:
        k = self.core.k
        bb, ba = k.best(self.core.ist, 0), k.best(self.core.ist, 1)
        return (bb + ba) / 2.0 if 0 < bb < ba else 0.0

    def summary(self) -> dict[str, Any]:
        b = self.bst
        return {
            "events": int(b[B_EVENTS]),
            "fills": len(self.fills),
            "pnl_usdc": self.acct.market_pnl(self.spec.symbol, self.mid),
            "orders_sent": int(b[B_ORDERS_SENT]),
            "cancels_sent": int(b[B_CANCELS_SENT]),
            "decisions": int(b[B_DECISIONS]),
            "model_decisions": int(b[B_MODEL_DECISIONS]),
            "position_lots": int(b[B_POS]),
            "gaps": int(b[B_GAPS]),
            "band_trips": int(b[B_BAND_TRIPS]),
        }


def warm() -> float:
    """Compile (or load from the on-disk cache) the loop; seconds taken."""
    import time

    from flashmm.native.sim import NativeSim
    from flashmm.venues.sim import SimSettings

    t0 = time.perf_counter()
    from flashmm.native import NativeCore

    core = NativeCore(1e-5)
    sim = NativeSim(SimSettings(), 1e-5, core.ist)
    ev = np.zeros((11, 2), dtype=np.int64)
    ev[R_KIND, :] = (KIND_SNAPSHOT, KIND_TRADE)
    ev[R_TS, :] = (1, 2)
    ev[R_NB, 0] = ev[R_NA, 0] = 1
    ev[R_PX, 1], ev[R_QTY, 1] = 100, 1
    levels = np.array([[100, 5], [102, 4]], dtype=np.int64)
    bst = np.zeros(BST_SIZE, dtype=np.int64)
    bst[B_PERIOD] = 200_000_000
    bst[B_STALE_NS] = 1 << 40
    run(bst, np.zeros(BSF_SIZE), core.ist, core.fst, core.prog, core.params, core.work, core.x,
        core.io, sim.sst, sim.ssf, sim.lat, ev, levels, np.zeros((FILL_CAP, FILL_W), np.int64),
        np.zeros(FILL_CAP))  # fmt: skip
    return time.perf_counter() - t0
