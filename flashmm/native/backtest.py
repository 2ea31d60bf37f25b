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

The position_limit breaker (reduce only) is modelled as the engine runs it:
tripped or cleared at each fill and P&L mark, and while tripped the side that
grows |position| is left out of the quotes. Not modelled here (the Python
engine has them): the kill switch, P&L and drawdown breakers (the run stops
counting as valid when one would trip), the ML breaker, sequence gaps
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
from flashmm.native.cachedir import usable
from flashmm.types import Fill, Liquidity, Side

_jit = njit(cache=usable(), nogil=True)
_jit_inline = njit(cache=usable(), nogil=True, inline="always")

# rows of the packed event columns (as flashmm.native.replay, plus the exchange time)
R_TS, R_KIND, R_SIDE, R_PX, R_QTY, R_FIRST, R_LAST, R_LV, R_NB, R_NA, R_EXCH = range(11)
R_PX2, R_QTY2 = 11, 12  # a book ticker's best ask and its size
KIND_SNAPSHOT, KIND_DIFF, KIND_TRADE, KIND_TICKER, KIND_RESYNC = 0, 1, 2, 3, 4
WARMUP_NS = 30_000_000_000

# bst: the loop's own state (int64)
B_I, B_NEXT_Q, B_DIRTY, B_LAST_ID, B_SYNCED, B_LAST_DATA, B_NEXT_CID, B_POS = range(8)
B_BLOCKED, B_STALE, B_SEEN_VER, B_VERSION, B_NROW, B_PERIOD, B_STALE_NS = range(8, 15)
B_MODEL, B_DECISIONS, B_ORDERS_SENT, B_CANCELS_SENT, B_FRESH, B_GAPS, B_NOW = range(15, 22)
B_MODEL_DECISIONS, B_EVENTS, B_T0 = 22, 23, 24
# the kill switch's sigma (flashmm.risk.KillSwitch) and the price band (PriceBand)
B_REF_TICK, B_ARMED, B_KN, B_SAMPLE_NS, B_OWN_T, B_OWN_N, B_HAS_OWN = range(25, 32)
B_H_HEAD, B_H_TAIL, B_BAND_PENDING_NS, B_BAND_TRIPPED, B_BAND_CONFIRM_NS = range(32, 37)
B_KILL_WARMUP_NS, B_BAND_TRIPS, B_UNSUPPORTED, B_CROSSED = 37, 38, 39, 40
# the engine's P&L marks and what the backtest recorder keeps (flashmm.backtest.recorder)
B_NEXT_MARK, B_MARK_DIRTY, B_NMID, B_NEXT_SAMPLE, B_SAMPLE_EVERY, B_REC_LAST = range(41, 47)
B_T_TOTAL, B_T_VALID, B_T_BOTH, B_BOTH, B_CHECKS, B_MISMATCHES, B_TQ_N = range(47, 54)
B_FIRST_STEP = 54
# the ML breaker (flashmm.predict.breaker.GuardedPredictor) while closed: whether it opens
B_ML, B_DRIFT_MAX, B_DRIFT_SUSTAIN_NS, B_DRIFT_SINCE, B_HORIZON_NS, B_HAS_MID = range(55, 61)
B_P_HEAD, B_P_TAIL, B_HITS_N, B_HITS_SUM, B_HITS_HEAD, B_HITS_WINDOW = 61, 62, 63, 64, 65, 66
B_POS_LIMIT = 67  # the position_limit breaker (RiskManager.update_position) is tripped
# the UTC day of the last P&L mark (RiskManager.day) and whether a mark set it yet
B_DAY, B_DAY_SET = 68, 69
H_CAP = 8192  # mids of the last second (the kill switch's history), a ring
B_HIST = 80
B_ACKED = B_HIST + H_CAP  # per live order row (io): acknowledged by the venue
TQ_CAP = 1024  # book tickers waiting for their update id (BookBuilder's self-check)
B_TQ = B_ACKED + 64
P_CAP = 4096  # model calls waiting to be scored at their horizon (time, lean), a ring
B_PEND = B_TQ + TQ_CAP
HITS_CAP = 4096  # the hit-rate window, a ring
B_HITS = B_PEND + 2 * P_CAP
BST_SIZE = B_HITS + HITS_CAP
# bsf (float64)
BF_LAST_QUOTE_MID, BF_REQUOTE_MOVE = 0, 1
BF_KVAR, BF_OWN_VAR, BF_OWN_P, BF_BAND_GOOD, BF_BAND_PENDING = range(2, 7)
BF_BAND_SIGMA_K, BF_BAND_MIN_BPS, BF_BAND_MAX_PCT, BF_KILL_FLOOR = range(7, 11)
BF_Q_INT, BF_M_INT, BF_Q_SPREAD, BF_M_SPREAD = range(16, 20)
# flashmm.accounting for the market (average cost, realized P&L, fees) and its marks
BF_AVG, BF_REAL, BF_AFEES, BF_PEAK_EQ, BF_MARK_DD, BF_MAX_INV, BF_PNL, BF_DD = range(20, 28)
BF_LOSS_LIMIT, BF_DD_LIMIT = 28, 29
BF_ZLIM, BF_HIT_FLOOR, BF_ML_MID = 30, 31, 32
BF_POS_TRIP = 33  # 95 % of risk.max_position_usdc: the position_limit breaker trips there
BF_DAY_BASE = 34  # the P&L at the start of the UTC day B_DAY (RiskManager.day_start_pnl)
BF_HIST = 48
BF_MEAN = BF_HIST + H_CAP  # the model's feature means and 1/std (drift)
BF_INVSTD = BF_MEAN + 64
BF_PMID = BF_INVSTD + 64  # the mid at each waiting model call
BSF_SIZE = BF_PMID + P_CAP
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S  # flashmm.risk.NS_PER_DAY
# the record stream back to Python, in the order things happened: rows of ROW_W int64
# (type, time, ...) and 2 float64
T_FILL, T_ORDER, T_SAMPLE, T_BREAKER = 1, 2, 4, 5
ROWF_W = 3
# T_FILL: client id, side, price, lots, liquidity, fill sequence, venue time, best bid, ask
# T_ORDER: client id, side, price, lots
# T_SAMPLE: best bid, best ask, our best live bid, ask, position; (float) equity, fees,
#   inventory (USDC)
# T_BREAKER: which (BRK_*), tripped, best bid, best ask; (float) jump, band (bps)
ROW_W = 12
ROW_CAP = 8192
MID_CAP = 65536  # (time, 2 x mid or 0) at every book change
BRK_BAND, BRK_CROSSED, BRK_POSITION = 0, 1, 2
RC_END, RC_BUFFER, RC_REFILL, RC_OVERFLOW = 0, 1, 2, 3


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
def band_check(
    bst: np.ndarray,
    bsf: np.ndarray,
    mid: float,
    now: int,
    sigma: float,
    rowf: np.ndarray,
    at: int,
) -> bool:
    """``PriceBand.check`` (no venue mid): True when ``mid`` is held (its jump and the
    band in bps go to ``rowf[at]``, the record a trip writes next)."""
    k = bsf[BF_BAND_SIGMA_K]
    lim = max(k * sigma, bsf[BF_BAND_MIN_BPS]) if k > 0 else np.inf
    if bsf[BF_BAND_MAX_PCT] > 0:
        lim = min(lim, bsf[BF_BAND_MAX_PCT] * 100.0)
    ref = bsf[BF_BAND_GOOD]
    if ref <= 0:
        bsf[BF_BAND_GOOD] = mid
        return False
    jump = abs(mid / ref - 1.0) * 1e4
    rowf[at, 0] = jump
    rowf[at, 1] = lim
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
def _book_fill(
    bst: np.ndarray, bsf: np.ndarray, unit: float, side: int, price: int, lots: int, fee: float
) -> None:
    """``flashmm.accounting.apply_fill`` on the loop's copy of the position."""
    signed = lots * side
    old = bst[B_POS]
    new = old + signed
    if old == 0 or (old > 0) == (signed > 0):
        bsf[BF_AVG] = (bsf[BF_AVG] * abs(old) + price * lots) / abs(new)
    else:
        closed = min(abs(signed), abs(old))
        direction = 1 if old > 0 else -1
        bsf[BF_REAL] += (price - bsf[BF_AVG]) * closed * direction * unit
        if abs(signed) > abs(old):
            bsf[BF_AVG] = float(price)
        elif new == 0:
            bsf[BF_AVG] = 0.0
    bst[B_POS] = new
    bsf[BF_AFEES] += fee


@_jit
def _market_pnl(bst: np.ndarray, bsf: np.ndarray, unit: float, mid: float) -> float:
    """``Accounting.market_pnl``."""
    lots = bst[B_POS]
    unreal = 0.0 if lots == 0 or mid <= 0 else (mid - bsf[BF_AVG]) * lots * unit
    p: float = bsf[BF_REAL] + unreal - bsf[BF_AFEES]
    return p


@_jit
def _position_limit(
    bst: np.ndarray, bsf: np.ndarray, unit: float, mid: float, now: int, rows: np.ndarray,
    rowf: np.ndarray,
) -> None:  # fmt: skip
    """``RiskManager.update_position``: the position_limit breaker trips at 95 % of the
    limit (reduce only) and clears below; a change makes the next cycle requote and is
    recorded (a ``T_BREAKER`` row: tripped, the position's notional in ``rowf``)."""
    notional = abs(bst[B_POS]) * mid * unit
    tripped = 1 if notional >= bsf[BF_POS_TRIP] else 0
    if tripped == bst[B_POS_LIMIT]:
        return
    bst[B_POS_LIMIT] = tripped
    bst[B_VERSION] += 1
    bst[B_DIRTY] = 1
    r = _row(bst, rows, T_BREAKER, now)
    rows[r, 2] = BRK_POSITION
    rows[r, 3] = tripped
    rowf[r, 0] = notional


@_jit
def _mark(
    bst: np.ndarray, bsf: np.ndarray, ist: np.ndarray, unit: float, now: int, rows: np.ndarray,
    rowf: np.ndarray,
) -> None:  # fmt: skip
    """``Engine._mark`` -> ``Accounting.mark``; a P&L breaker the engine would trip
    (``RiskManager.update_pnl``: the day's P&L from the last mark's P&L before 00:00
    UTC, the drawdown) stops the run's validity (``B_UNSUPPORTED``: the engine would
    pause); then the position_limit breaker at the mark's mid."""
    mid = _mark_mid(bst, bsf, ist)
    pnl = 0.0 + _market_pnl(bst, bsf, unit, mid)
    day = now // NS_PER_DAY
    if bst[B_DAY_SET] == 0:
        bst[B_DAY_SET] = 1
        bst[B_DAY] = day
    elif day != bst[B_DAY]:
        bst[B_DAY] = day
        bsf[BF_DAY_BASE] = bsf[BF_PNL]  # the last mark's P&L (none skipped here)
    bsf[BF_PEAK_EQ] = max(bsf[BF_PEAK_EQ], pnl)
    dd = bsf[BF_PEAK_EQ] - pnl
    bsf[BF_MARK_DD] = max(bsf[BF_MARK_DD], dd)
    inv = abs(bst[B_POS] * mid * unit)
    if inv > bsf[BF_MAX_INV]:
        bsf[BF_MAX_INV] = inv
    bsf[BF_PNL] = pnl
    bsf[BF_DD] = dd
    if pnl - bsf[BF_DAY_BASE] <= -bsf[BF_LOSS_LIMIT] or dd >= bsf[BF_DD_LIMIT]:
        bst[B_UNSUPPORTED] = 2
    _position_limit(bst, bsf, unit, mid, now, rows, rowf)


@_jit
def _ml_predicted(
    bst: np.ndarray, bsf: np.ndarray, fst: np.ndarray, x: np.ndarray, now: int
) -> None:
    """``GuardedPredictor.predict`` while closed, after a model call: sustained drift,
    a non-finite output, the call queued for hit-rate scoring. Sets ``B_UNSUPPORTED``
    (3) when the breaker would open: the engine falls back to the rules then."""
    n = 0
    zlim = bsf[BF_ZLIM]
    for k in range(64):
        z = abs((float(x[k]) - bsf[BF_MEAN + k]) * bsf[BF_INVSTD + k])
        if not (z <= zlim):
            n += 1
    if n > bst[B_DRIFT_MAX]:
        if bst[B_DRIFT_SINCE] < 0:
            bst[B_DRIFT_SINCE] = now
        if now - bst[B_DRIFT_SINCE] >= bst[B_DRIFT_SUSTAIN_NS]:
            bst[B_UNSUPPORTED] = 3
            return
    else:
        bst[B_DRIFT_SINCE] = -1
    if not (np.isfinite(fst[K.F_SIG_CONF]) and np.isfinite(fst[K.F_SIG_BPS])):
        bst[B_UNSUPPORTED] = 3
        return
    d = fst[K.F_P_UP] - fst[K.F_P_DOWN]
    lean = 1 if d > 0 else (-1 if d < 0 else 0)
    if bst[B_HAS_MID] and lean:
        t = bst[B_P_TAIL]
        if t - bst[B_P_HEAD] >= P_CAP:
            bst[B_UNSUPPORTED] = 1
            return
        bst[B_PEND + 2 * (t % P_CAP)] = now
        bst[B_PEND + 2 * (t % P_CAP) + 1] = lean
        bsf[BF_PMID + t % P_CAP] = bsf[BF_ML_MID]
        bst[B_P_TAIL] = t + 1


@_jit
def _ml_on_mid(bst: np.ndarray, bsf: np.ndarray, mid: float, now: int) -> None:
    """``GuardedPredictor.on_mid``: score the calls whose horizon has passed; the
    breaker opens (``B_UNSUPPORTED`` 3) when a full window hits below the floor."""
    if not (mid > 0 and np.isfinite(mid)):
        return
    bsf[BF_ML_MID] = mid
    bst[B_HAS_MID] = 1
    h = bst[B_HORIZON_NS]
    win = bst[B_HITS_WINDOW]
    while bst[B_P_TAIL] > bst[B_P_HEAD]:
        j = bst[B_P_HEAD] % P_CAP
        if bst[B_PEND + 2 * j] + h > now:
            break
        m0 = bsf[BF_PMID + j]
        lean = bst[B_PEND + 2 * j + 1]
        bst[B_P_HEAD] += 1
        if mid != m0:
            hit = 1 if (mid > m0) == (lean > 0) else 0
            if bst[B_HITS_N] == win:
                bst[B_HITS_SUM] -= bst[B_HITS + bst[B_HITS_HEAD] % win]
                bst[B_HITS_HEAD] += 1
            else:
                bst[B_HITS_N] += 1
            bst[B_HITS + (bst[B_HITS_HEAD] + bst[B_HITS_N] - 1) % win] = hit
            bst[B_HITS_SUM] += hit
    if bst[B_HITS_N] == win and bst[B_HITS_SUM] < bsf[BF_HIT_FLOOR] * win:
        bst[B_UNSUPPORTED] = 3


@_jit
def _row(bst: np.ndarray, rows: np.ndarray, kind: int, now: int) -> int:
    """A new record of ``kind`` at ``now``; its row index (the rest zeroed)."""
    r: int = bst[B_NROW]
    bst[B_NROW] = r + 1
    for c in range(ROW_W):
        rows[r, c] = 0
    rows[r, 0] = kind
    rows[r, 1] = now
    return r


@_jit
def _remove_live(bst: np.ndarray, io: np.ndarray, cid: int) -> int:
    """Drop order ``cid`` from the live table (order kept); its row index or -1."""
    n = io[K.IO_NLIVE]
    for j in range(n):
        o = K.IO_LIVE + K.LIVE_W * j
        if io[o + 3] == cid:
            for r in range(j, n - 1):
                d = K.IO_LIVE + K.LIVE_W * r
                for c in range(K.LIVE_W):
                    io[d + c] = io[d + K.LIVE_W + c]
                bst[B_ACKED + r] = bst[B_ACKED + r + 1]
            io[K.IO_NLIVE] = n - 1
            return j
    return -1


@_jit_inline
def _pump(
    bst: np.ndarray,
    bsf: np.ndarray,
    io: np.ndarray,
    sst: np.ndarray,
    ssf: np.ndarray,
    ist: np.ndarray,
    lat: np.ndarray,
    now: int,
    rows: np.ndarray,
    rowf: np.ndarray,
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
                _book_fill(bst, bsf, ssf[S.SF_UNIT], side, out[j, S.X_PRICE], lots, ofee[j])
                f = _row(bst, rows, T_FILL, now)
                rows[f, 2] = cid
                rows[f, 3] = side
                rows[f, 4] = out[j, S.X_PRICE]
                rows[f, 5] = lots
                rows[f, 6] = out[j, S.X_LIQ]
                rows[f, 7] = out[j, S.X_SEQ]
                rows[f, 8] = out[j, S.X_TS]
                rows[f, 9] = K.best(ist, 0)
                rows[f, 10] = K.best(ist, 1)
                rowf[f, 0] = ofee[j]
                bst[B_MARK_DIRTY] = 1
                if out[j, S.X_LIQ] == 0:  # a maker fill, as Engine._on_fill
                    kill_own_trade(bst, bsf, float(out[j, S.X_PRICE]), out[j, S.X_TS])
                bb, ba = rows[f, 9], rows[f, 10]
                fmid = (bb + ba) / 2.0 if 0 < bb < ba else float(out[j, S.X_PRICE])
                _position_limit(bst, bsf, ssf[S.SF_UNIT], fmid, now, rows, rowf)
                for r in range(io[K.IO_NLIVE]):
                    o = K.IO_LIVE + K.LIVE_W * r
                    if io[o + 3] == cid:
                        io[o + 2] -= lots
                        if io[o + 2] <= 0:
                            _remove_live(bst, io, cid)
                        break
            elif S.EV_REJECTED <= kind <= S.EV_CANCELLED:
                _remove_live(bst, io, cid)
            elif kind == S.EV_ACCEPTED:
                for r in range(io[K.IO_NLIVE]):
                    if io[K.IO_LIVE + K.LIVE_W * r + 3] == cid:
                        bst[B_ACKED + r] = 1
                        break
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
    rows: np.ndarray,
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
            bst[B_ACKED + n] = 0
            io[K.IO_NLIVE] = n + 1
        else:
            sst[S.S_OVERFLOW] = 1
        w = _row(bst, rows, T_ORDER, now)
        rows[w, 2] = cid
        rows[w, 3] = io[src]
        rows[w, 4] = io[src + 1]
        rows[w, 5] = io[src + 2]
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
    rows: np.ndarray,
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
        _send(bst, io, sst, ssf, ist, lat, now, req, nc, K.IO_CANCELS, 0, rows)


@_jit_inline
def _quote(  # type: ignore[no-untyped-def]
    bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, now, req, rows
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
            _pull(bst, io, sst, ssf, ist, lat, now, req, rows)
        bst[B_DIRTY] = 0
        return
    if bst[B_BLOCKED] != 0:
        bst[B_BLOCKED] = 0
        bst[B_DIRTY] = 1
    if bst[B_DIRTY] == 0:
        return
    bst[B_DIRTY] = 0
    io[K.IO_TS] = now
    pos = bst[B_POS]
    io[K.IO_POS] = pos
    # reduce only: the side that grows |position| is left out (RiskManager.blocked_side)
    io[K.IO_NO_SIDE] = (1 if pos > 0 else (-1 if pos < 0 else 0)) if bst[B_POS_LIMIT] else 0
    io[K.IO_BREAKER_OPEN] = 0
    io[K.IO_USE_MODEL] = (
        1 if bst[B_MODEL] and ist[K.I_READY] and now - ist[K.I_T0] >= WARMUP_NS else 0
    )
    nplace = K.decide(ist, fst, prog, params, work, x, io)
    if io[K.IO_USE_MODEL] and bst[B_ML]:
        _ml_predicted(bst, bsf, fst, x, now)
    bst[B_DECISIONS] += 1
    bst[B_MODEL_DECISIONS] += io[K.IO_USE_MODEL]
    bsf[BF_LAST_QUOTE_MID] = (bb + ba) / 2.0
    nc = io[K.IO_NCANCEL]
    if nc or nplace > 0:
        _send(bst, io, sst, ssf, ist, lat, now, req, nc, K.IO_CANCELS, max(nplace, 0), rows)


@_jit
def _ticker_check(bst: np.ndarray, ist: np.ndarray, ev: np.ndarray, i: int) -> None:
    """``BookBuilder._compare``: the book's top against book ticker ``i``."""
    bst[B_CHECKS] += 1
    nb, na = ist[K.I_NB], ist[K.I_NA]
    bsz = K.level(ist, 0, 0)[1] if nb else 0
    asz = K.level(ist, 1, 0)[1] if na else 0
    if (
        K.best(ist, 0) != ev[R_PX, i]
        or K.best(ist, 1) != ev[R_PX2, i]
        or bsz != ev[R_QTY, i]
        or asz != ev[R_QTY2, i]
    ):
        bst[B_MISMATCHES] += 1


@_jit
def _pending_tickers(bst: np.ndarray, ist: np.ndarray, ev: np.ndarray) -> None:
    """``BookBuilder._check_pending`` after a diff moved the last update id."""
    n = bst[B_TQ_N]
    k = 0
    last = bst[B_LAST_ID]
    while k < n and ev[R_FIRST, bst[B_TQ + k]] <= last:
        if ev[R_FIRST, bst[B_TQ + k]] == last:
            _ticker_check(bst, ist, ev, bst[B_TQ + k])
        k += 1
    if k:
        for j in range(k, n):
            bst[B_TQ + j - k] = bst[B_TQ + j]
        bst[B_TQ_N] = n - k


@_jit_inline
def _record_step(  # type: ignore[no-untyped-def]
    bst, bsf, ist, io, now, changed, rows, rowf, mids, unit
) -> None:
    """``Recorder.step`` after a step: time-weighted uptime and spreads, the mid path,
    a sample every ``bst[B_SAMPLE_EVERY]`` ns."""
    last = bst[B_REC_LAST]
    dt = now - last if last else 0
    bst[B_REC_LAST] = now
    if dt > 0:
        bst[B_T_TOTAL] += dt
        if bsf[BF_M_SPREAD] >= 0.0:
            bst[B_T_VALID] += dt
            bsf[BF_M_INT] += bsf[BF_M_SPREAD] * dt
        if bst[B_BOTH]:
            bst[B_T_BOTH] += dt
            bsf[BF_Q_INT] += bsf[BF_Q_SPREAD] * dt
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    valid = 0 < bb < ba
    if changed or bst[B_FIRST_STEP] == 0:
        bst[B_FIRST_STEP] = 1
        m = bst[B_NMID]
        mids[m, 0] = now
        mids[m, 1] = bb + ba if valid else 0
        bst[B_NMID] = m + 1
    qb = 0
    qa = 0
    for j in range(io[K.IO_NLIVE]):
        o = K.IO_LIVE + K.LIVE_W * j
        st = io[o + 4]
        if st == K.ST_PENDING_CANCEL or (st == K.ST_LIVE and bst[B_ACKED + j]):
            p = io[o + 1]
            if io[o] > 0:
                if p > qb:
                    qb = p
            elif qa == 0 or p < qa:
                qa = p
    if valid:
        mid = (bb + ba) * 0.5
        bsf[BF_M_SPREAD] = (ba - bb) / mid * 1e4
        both = qb > 0 and qa > 0
        bst[B_BOTH] = 1 if both else 0
        bsf[BF_Q_SPREAD] = (qa - qb) / mid * 1e4 if both else 0.0
    else:
        bsf[BF_M_SPREAD] = -1.0
        bst[B_BOTH] = 0
    if now >= bst[B_NEXT_SAMPLE]:
        r = _row(bst, rows, T_SAMPLE, now)
        rows[r, 2] = bb
        rows[r, 3] = ba
        rows[r, 4] = qb
        rows[r, 5] = qa
        rows[r, 6] = bst[B_POS]
        mid = (bb + ba) * 0.5 if valid else bsf[BF_BAND_GOOD]  # no mid: the last good one
        rowf[r, 0] = 0.0 + _market_pnl(bst, bsf, unit, mid)
        rowf[r, 1] = 0 + bsf[BF_AFEES]
        rowf[r, 2] = bst[B_POS] * mid * unit
        every = bst[B_SAMPLE_EVERY]
        bst[B_NEXT_SAMPLE] = now - now % every + every


@_jit
def _mark_mid(bst: np.ndarray, bsf: np.ndarray, ist: np.ndarray) -> float:
    """``Engine.mids``: the mid; the band's last good mid while it holds a jump or the
    book has no mid (crossed, a side empty); 0 before the first good mid."""
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    if 0 < bb < ba and not (bsf[BF_BAND_PENDING] and bsf[BF_BAND_GOOD]):
        return (bb + ba) / 2.0
    g: float = bsf[BF_BAND_GOOD]
    return g


@_jit
def run(  # type: ignore[no-untyped-def]
    bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, ev, levels, rows, rowf, mids
):
    """Run from event ``bst[B_I]`` until the end (returns ``RC_END``), a full record
    buffer (``RC_BUFFER``: ``rows``/``rowf`` up to ``bst[B_NROW]``, ``mids`` up to
    ``bst[B_NMID]``), a latency buffer to top up (``RC_REFILL``) or a full table
    (``RC_OVERFLOW``); call again to resume. The loop works on uncounted views
    (:func:`flashmm.native.kernels.borrow`) of these arrays, which live for the call."""
    lv = np.empty(1 + 3 * 8192, dtype=np.int64)
    req = np.zeros(1 + 6 * S.MAX_ORD, dtype=np.int64)
    out = np.zeros((64, S.OUT_W), dtype=np.int64)
    ofee = np.zeros(64, dtype=np.float64)
    b = K.borrow
    rc: int = _loop(
        b(bst), b(bsf), b(ist), b(fst), b(prog), b(params), b(work), b(x), b(io), b(sst),
        b(ssf), b(lat), b(ev), b(levels), b(rows), b(rowf), b(mids), b(lv), b(req), b(out),
        b(ofee),
    )  # fmt: skip
    return rc


@_jit
def _loop(  # type: ignore[no-untyped-def]
    bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, ev, levels, rows, rowf, mids,
    lv, req, out, ofee,
):  # fmt: skip
    """:func:`run`'s loop."""
    n = ev.shape[1]
    period = bst[B_PERIOD]
    stale_ns = bst[B_STALE_NS]
    lim = rows.shape[0] - 256
    i = bst[B_I]
    while i < n:
        if bst[B_NROW] >= lim or bst[B_NMID] >= mids.shape[0] - 1:
            bst[B_I] = i
            return RC_BUFFER
        for k in range(3):
            if sst[S.S_LAT_CONST + k] < 0 and sst[S.S_LAT_LEN + k] - sst[S.S_LAT_POS + k] < 256:
                bst[B_I] = i
                return RC_REFILL
        if sst[S.S_OVERFLOW]:
            bst[B_I] = i
            return RC_OVERFLOW
        now = ev[R_TS, i]
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
                if bst[B_MARK_DIRTY]:
                    wake = min(wake, bst[B_NEXT_MARK])
            if wake > t:
                target = min(wake, now + 1)
                steps = -(-(target - t) // period)
                bst[B_NEXT_Q] = t + steps * period
                continue
            # Engine.on_timer
            bst[B_NOW] = t
            _pump(bst, bsf, io, sst, ssf, ist, lat, t, rows, rowf, out, ofee)
            stale = 1 if (bst[B_LAST_DATA] == 0 or t - bst[B_LAST_DATA] > stale_ns) else 0
            if stale != bst[B_STALE]:
                bst[B_STALE] = stale
                bst[B_VERSION] += 1
            if t >= bst[B_NEXT_MARK] and bst[B_MARK_DIRTY]:
                bst[B_MARK_DIRTY] = 0
                _mark(bst, bsf, ist, ssf[S.SF_UNIT], t, rows, rowf)
                bst[B_NEXT_MARK] = t + NS_PER_S
            ver = bst[B_VERSION]
            if bst[B_DIRTY] or bst[B_SEEN_VER] != ver:
                bst[B_SEEN_VER] = ver
                _quote(bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, t, req, rows)
            bst[B_NEXT_Q] = t + period
        # --- the event (Engine.on_market_event) ---
        bst[B_NOW] = now
        bst[B_EVENTS] += 1
        nad = S.next_action_due(sst)
        if nad >= 0 and nad <= now:
            S.run_due(sst, ssf, ist, lat, now)
        kind = ev[R_KIND, i]
        changed = False
        apply = False
        snapshot = False
        if kind == KIND_TRADE:
            buyer_maker = ev[R_SIDE, i] < 0
            S.on_trade(sst, ssf, lat, now, ev[R_PX, i], ev[R_QTY, i], buyer_maker, ev[R_EXCH, i])
            bst[B_LAST_DATA] = now
            bst[B_DIRTY] = 1
            K.features_on_trade(ist, fst, now, ev[R_PX, i], ev[R_QTY, i], 1 if buyer_maker else 0)
        elif kind == KIND_DIFF:
            bst[B_LAST_DATA] = now
            if bst[B_SYNCED] != 0 and ev[R_LAST, i] > bst[B_LAST_ID]:
                if ev[R_FIRST, i] > bst[B_LAST_ID] + 1:
                    # a sequence gap: wait for the next snapshot with the quotes pulled
                    bst[B_GAPS] += 1
                    bst[B_SYNCED] = 0
                    bst[B_TQ_N] = 0
                    S.resync(sst)
                    _pull(bst, io, sst, ssf, ist, lat, now, req, rows)
                else:
                    bst[B_LAST_ID] = ev[R_LAST, i]
                    apply = True
        elif kind == KIND_SNAPSHOT:
            bst[B_LAST_DATA] = now
            bst[B_LAST_ID] = ev[R_FIRST, i]
            bst[B_SYNCED] = 1
            sst[S.S_SYNCED] = 1
            apply = True
            snapshot = True
        elif kind == KIND_TICKER:  # data for the stale-feed check, and the self-check
            bst[B_LAST_DATA] = now
            uid = ev[R_FIRST, i]
            if bst[B_SYNCED] and uid >= bst[B_LAST_ID]:
                if uid == bst[B_LAST_ID]:
                    _ticker_check(bst, ist, ev, i)
                elif bst[B_TQ_N] < TQ_CAP:
                    bst[B_TQ + bst[B_TQ_N]] = i
                    bst[B_TQ_N] += 1
                else:
                    bst[B_UNSUPPORTED] = 1
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
        if apply:
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
            if not snapshot and bst[B_TQ_N]:
                _pending_tickers(bst, ist, ev)
            S.on_depth(sst, ssf, ist, lat, now, 0 if snapshot else ev[R_EXCH, i])
            _after_book(bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, now, req,
                        rows, rowf)  # fmt: skip
        if changed and bst[B_T0] == 0:
            bst[B_T0] = now
        # --- what the venue reports by now (Engine.pump_venue), then the recorder ---
        _pump(bst, bsf, io, sst, ssf, ist, lat, now, rows, rowf, out, ofee)
        _record_step(bst, bsf, ist, io, now, changed, rows, rowf, mids, ssf[S.SF_UNIT])
        i += 1
    bst[B_I] = i
    return RC_END


@_jit_inline
def _after_book(  # type: ignore[no-untyped-def]
    bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, now, req, rows, rowf
) -> None:
    """``Engine._after_book``: crossed book, price band, features, volatility, the kill
    switch's sigma, a requote on a large mid move."""
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    if not (0 < bb < ba):
        if bb and ba and bst[B_SYNCED] and bst[B_CROSSED] == 0:
            bst[B_CROSSED] = 1
            bst[B_VERSION] += 1
            r = _row(bst, rows, T_BREAKER, now)
            rows[r, 2] = BRK_CROSSED
            rows[r, 3] = 1
            rows[r, 4] = bb
            rows[r, 5] = ba
            if bst[B_BLOCKED] == 0:
                bst[B_BLOCKED] = 1
                _pull(bst, io, sst, ssf, ist, lat, now, req, rows)
        return
    if bst[B_CROSSED]:
        bst[B_CROSSED] = 0
        bst[B_VERSION] += 1
        r = _row(bst, rows, T_BREAKER, now)
        rows[r, 2] = BRK_CROSSED
    mid = (bb + ba) / 2.0
    good = bsf[BF_BAND_GOOD]
    tick_bps = max(bst[B_REF_TICK], 1) / (good if good != 0 else mid) * 1e4
    if band_check(bst, bsf, mid, now, kill_sigma(bsf, tick_bps), rowf, bst[B_NROW]):
        if bst[B_BAND_TRIPPED] == 0:
            bst[B_BAND_TRIPPED] = 1
            bst[B_BAND_TRIPS] += 1
            bst[B_VERSION] += 1
            r = _row(bst, rows, T_BREAKER, now)  # rowf[r] holds the jump and the band
            rows[r, 2] = BRK_BAND
            rows[r, 3] = 1
            if bst[B_BLOCKED] == 0:
                bst[B_BLOCKED] = 1
                _pull(bst, io, sst, ssf, ist, lat, now, req, rows)
        return
    if bst[B_BAND_TRIPPED]:
        bst[B_BAND_TRIPPED] = 0
        bst[B_VERSION] += 1
        r = _row(bst, rows, T_BREAKER, now)
        rows[r, 2] = BRK_BAND
    bst[B_DIRTY] = 1
    bst[B_MARK_DIRTY] = 1
    K.features_on_book(ist, fst, now)
    if bst[B_ML]:
        _ml_on_mid(bst, bsf, (bb + ba) / 2.0, now)
    K.vol_update(ist, fst, mid, now)
    kill_update_book(bst, bsf, bb, ba, now)
    lq = bsf[BF_LAST_QUOTE_MID]
    mv = bsf[BF_REQUOTE_MOVE]
    if mv > 0 and lq > 0 and abs(mid / lq - 1.0) >= mv:
        _quote(bst, bsf, ist, fst, prog, params, work, x, io, sst, ssf, lat, now, req, rows)


def unsupported(cfg: Any) -> str | None:
    """What of the profile the loop does not model (None: it models all of it)."""
    if cfg.strategy.name != "avellaneda":
        return f"strategy {cfg.strategy.name!r} (only the built-in avellaneda runs compiled)"
    if cfg.risk.kill_switch_enabled:
        return "the kill switch (risk.kill_switch_enabled)"
    from flashmm.predict.settings import ModelSettings

    ms = ModelSettings.model_validate(dict(cfg.model))
    if ms.enabled and ms.online:
        return "an online model (model.online)"
    if ms.enabled and not ms.native:
        return "a model run by onnxruntime (model.native: false)"
    if ms.enabled and (ms.sim_latency_us is None or ms.sim_latency_us > ms.latency_budget_us):
        return "a model latency that opens the ML breaker (model.sim_latency_us)"
    if ms.enabled and ms.hit_rate_window > HITS_CAP:
        return f"a hit-rate window over {HITS_CAP} (model.hit_rate_window)"
    return None


def pack(
    recordings: Sequence[Any], days: int = 1, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The event columns (``R_*`` rows, int64) and the levels of chained cached
    recordings (:class:`flashmm.feeds.cache.Recording`) of one stream.

    ``days`` > 1 plays them that many times, each pass shifted by their span
    plus 1 ms (receive and exchange times) after a resync row, as a looping
    replay does. ``offset``: ns added to every receive time (a feed's alignment)."""
    ev = np.concatenate([r.events for r in recordings])
    offs = np.cumsum([0] + [len(r.levels) for r in recordings[:-1]])
    starts = np.concatenate(
        [r.events["lv_start"] + o for r, o in zip(recordings, offs, strict=True)]
    )
    levels = np.ascontiguousarray(np.concatenate([r.levels for r in recordings]), dtype=np.int64)
    names = ("ts_ns", "kind", "side", "px_tick", "qty_lot", "first_id", "last_id")
    cols = [np.ascontiguousarray(ev[c], dtype=np.int64) for c in names]
    cols.append(np.ascontiguousarray(starts, dtype=np.int64))
    for c in ("n_bids", "n_asks", "exch_ms", "px2_tick", "qty2_lot"):
        cols.append(np.ascontiguousarray(ev[c], dtype=np.int64))
    one = np.vstack(cols)
    if offset:
        one[R_TS] += offset
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


class Sink:
    """Where the loop's records go, in the order they happened (the default: an
    :class:`~flashmm.accounting.Accounting` and the fills; ``flashmm backtest``
    passes the engine and its recorder, ``flashmm.backtest.compiled``)."""

    def __init__(self, spec: Any, max_position_usdc: float) -> None:
        from flashmm.accounting import Accounting

        self.acct = Accounting([spec], max_position_usdc)
        self.fills: list[Any] = []

    def fill(self, fill: Any, now: int, best_bid: int, best_ask: int) -> None:
        self.acct.on_fill(fill)
        self.fills.append(fill)

    def orders(self, rows: np.ndarray) -> None:
        """Orders sent: int64 rows of (time, client id, side, price, lots) (a copy)."""
        return None

    def samples(self, rows: np.ndarray, frows: np.ndarray) -> None:
        """Samples (copies): int64 rows of time, best bid, best ask, our bid, our ask,
        position, and float64 rows of equity, fees, inventory (USDC)."""
        return None

    def breaker(
        self, now: int, which: int, tripped: bool, bid: int, ask: int, jump: float, band: float
    ) -> None:
        return None

    def mid_path(self, ts: np.ndarray, mid2: np.ndarray) -> None:
        """Book changes (copies): time and twice the mid (0: no valid book)."""
        return None


_SIDES = {1: Side.BUY, -1: Side.SELL}
_LIQS = {int(q): q for q in Liquidity}


class CompiledBacktest:
    """One market of a profile over cached recordings, in :func:`run`.

    ``cfg``: a :class:`flashmm.config.Config` (its market whose reference the
    recordings hold, its strategy, risk, model and ``venue.sim`` settings);
    ``recordings``: that stream's cached recordings in time order (``days`` > 1
    plays them that many times, see :func:`pack`). The model runs natively when
    ``model.enabled`` (the rules before its 30 s warm-up). ``sink`` gets the
    fills, orders, P&L marks, samples, breaker changes and the mid path."""

    def __init__(
        self,
        cfg: Any,
        recordings: Sequence[Any],
        days: int = 1,
        sink: Any = None,
        sample_s: float = 1.0,
        offset: int = 0,
    ) -> None:
        from flashmm.native import NativeCore
        from flashmm.native.sim import NativeSim
        from flashmm.predict.settings import ModelSettings
        from flashmm.risk import KillSwitch, PriceBand
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
            if program is None:
                raise ValueError("the compiled backtest runs only natively evaluated models")
            min_lean = pred.min_lean
        params = AvellanedaParams.model_validate(cfg.strategy.params)
        core = NativeCore(spec.unit_usdc, params, cfg.risk, ms, program)
        core.fst[core.k.F_MIN_LEAN] = min_lean
        self.core = core
        self.sim = NativeSim(
            SimSettings.model_validate(cfg.venue.sim), spec.unit_usdc, core.ist, spec.symbol
        )
        self.ev, self.levels = pack(recordings, days, offset)
        b = self.bst = np.zeros(BST_SIZE, dtype=np.int64)
        f = self.bsf = np.zeros(BSF_SIZE, dtype=np.float64)
        b[B_PERIOD] = int(1e9 / cfg.strategy.quote_hz)
        b[B_STALE_NS] = int(cfg.risk.stale_feed_ms * 1_000_000)
        b[B_NEXT_CID] = 1
        b[B_MODEL] = 1 if program is not None else 0
        b[B_MARK_DIRTY] = 1
        b[B_SAMPLE_EVERY] = max(int(sample_s * 1e9), 1)
        f[BF_REQUOTE_MOVE] = cfg.strategy.requote_mid_move_bps / 1e4
        f[BF_M_SPREAD] = -1.0
        ks, band = KillSwitch.from_config(cfg.risk), PriceBand.from_config(cfg.risk)
        b[B_KILL_WARMUP_NS] = ks.warmup_ns
        f[BF_KILL_FLOOR] = ks.floor_bps
        b[B_BAND_CONFIRM_NS] = band.confirm_ns
        f[BF_BAND_SIGMA_K] = band.sigma_k
        f[BF_BAND_MIN_BPS] = band.min_bps
        f[BF_BAND_MAX_PCT] = band.max_pct
        if program is not None:
            from flashmm.predict.labels import parse_horizon

            b[B_ML] = 1
            b[B_DRIFT_MAX] = ms.drift_max_features
            b[B_DRIFT_SUSTAIN_NS] = int(ms.drift_sustain_s * 1e9)
            b[B_DRIFT_SINCE] = -1
            b[B_HORIZON_NS] = int(getattr(pred, "horizon_ns", 0) or parse_horizon(ms.horizon))
            b[B_HITS_WINDOW] = ms.hit_rate_window
            f[BF_ZLIM] = ms.drift_z_limit
            f[BF_HIT_FLOOR] = ms.hit_rate_floor
            std = np.asarray(pred.std)
            f[BF_MEAN : BF_MEAN + 64] = np.asarray(pred.mean, dtype=np.float64)
            f[BF_INVSTD : BF_INVSTD + 64] = 1.0 / np.where(std > 1e-12, std, 1.0)
        f[BF_LOSS_LIMIT] = cfg.risk.daily_loss_limit_usdc
        f[BF_POS_TRIP] = 0.95 * cfg.risk.max_position_usdc
        f[BF_DD_LIMIT] = cfg.risk.max_drawdown_usdc
        self.rows = np.zeros((ROW_CAP, ROW_W), dtype=np.int64)
        self.rowf = np.zeros((ROW_CAP, ROWF_W), dtype=np.float64)
        self.mids = np.zeros((MID_CAP, 2), dtype=np.int64)
        self.sink = sink if sink is not None else Sink(spec, cfg.risk.max_position_usdc)
        self.risk = cfg.risk

    @property
    def acct(self) -> Any:
        return self.sink.acct

    @property
    def fills(self) -> list[Any]:
        fills: list[Any] = self.sink.fills
        return fills

    def run(self) -> None:
        """Run the whole recording, handing the records to the sink as they come."""
        c, s = self.core, self.sim
        while True:
            rc = run(self.bst, self.bsf, c.ist, c.fst, c.prog, c.params, c.work, c.x,
                     c.io, s.sst, s.ssf, s.lat, self.ev, self.levels, self.rows, self.rowf,
                     self.mids)  # fmt: skip
            self._drain()
            if rc == RC_END:
                return
            if rc == RC_REFILL:
                s.refill()
            elif rc == RC_OVERFLOW:
                raise RuntimeError("compiled backtest: a simulator table is full")

    def _drain(self) -> None:
        sink, b = self.sink, self.bst
        m = int(b[B_NMID])
        if m:
            sink.mid_path(self.mids[:m, 0].copy(), self.mids[:m, 1].copy())
            b[B_NMID] = 0
        n = int(b[B_NROW])
        if not n:
            return
        rows, rowf = self.rows[:n], self.rowf[:n]
        kind = rows[:, 0]
        smp = kind == T_SAMPLE
        if smp.any():
            sink.samples(rows[smp][:, 1:7], rowf[smp][:, :3])
        sent = kind == T_ORDER
        if sent.any():
            sink.orders(rows[sent][:, 1:6])
        other = np.flatnonzero((kind == T_FILL) | (kind == T_BREAKER))
        sym = self.spec.symbol
        sides, liqs = _SIDES, _LIQS
        for r, f in zip(rows[other].tolist(), rowf[other].tolist(), strict=True):
            if r[0] == T_FILL:
                fill = Fill(sym, r[2], sides[r[3]], r[4], r[5], f[0], liqs[r[6]], r[8],
                            f"sim-{r[7]}")  # fmt: skip
                sink.fill(fill, r[1], r[9], r[10])
            else:
                sink.breaker(r[1], r[2], bool(r[3]), r[4], r[5], f[0], f[1])
        b[B_NROW] = 0

    def breaker_margin(self) -> str | None:
        """What happened in this run that the loop does not model (None: nothing):
        a P&L breaker the engine would have tripped at one of its marks (it pauses
        then), or a full table."""
        if self.bst[B_UNSUPPORTED] == 2:
            return "a P&L breaker would have tripped (the engine pauses)"
        if self.bst[B_UNSUPPORTED] == 3:
            return "the ML breaker would have opened (the engine quotes on the rules then)"
        if self.bst[B_UNSUPPORTED]:
            return "a table of the loop ran full"
        return None

    def live_orders(self) -> list[int]:
        """Client ids of the orders not done (open, in flight or being cancelled)."""
        io, k = self.core.io, self.core.k
        return [int(io[k.IO_LIVE + k.LIVE_W * j + 3]) for j in range(int(io[k.IO_NLIVE]))]

    def shutdown(self, step_ns: int = 10_000_000, timeout_s: float = 10.0) -> int:
        """``flashmm.runner.shutdown``: cancel every order, advance the clock in
        ``step_ns`` steps until the venue confirms; returns the orders left open."""
        from flashmm.types import Fill, OrderCancelled, OrderRejected

        io, k = self.core.io, self.core.k
        now = int(self.bst[B_NOW])
        live = self.live_orders()
        cids = [
            c
            for j, c in enumerate(live)
            if int(io[k.IO_LIVE + k.LIVE_W * j + 4]) != k.ST_PENDING_CANCEL
        ]
        if cids:
            self.bst[B_CANCELS_SENT] += len(cids)
            self.sim.requote(cids, [], now)
        left = set(live)
        bb, ba = k.best(self.core.ist, 0), k.best(self.core.ist, 1)
        for _ in range(int(timeout_s * 1e9 / step_ns)):
            now += step_ns
            for e in self.sim.poll(now):
                if isinstance(e, Fill):
                    _book_fill(self.bst, self.bsf, self.spec.unit_usdc, int(e.side),
                               e.price_ticks, e.size_lots, e.fee_usdc)  # fmt: skip
                    self.sink.fill(e, now, bb, ba)
                    if e.client_id in left:
                        left.discard(e.client_id)  # a shutdown fill closes it whole or not
                elif isinstance(e, OrderCancelled | OrderRejected):
                    left.discard(e.client_id)
            if not left:
                break
        self.bst[B_NOW] = now
        return len(left)

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
            "book_checks": int(b[B_CHECKS]),
            "book_mismatches": int(b[B_MISMATCHES]),
        }


def cached() -> bool:
    """True when the loop's machine code for this source is in numba's on-disk cache
    (not knowing counts as cached: it then loads or compiles as usual)."""
    from flashmm.native import in_disk_cache

    return in_disk_cache((run,), True)


def warm_in_background() -> None:
    """Compile the loop for the next run, in a process of its own
    (:func:`flashmm.native.build_in_background`: nobody waits for it, and a busy
    engine in this process does not starve it)."""
    from flashmm.native import build_in_background

    build_in_background()


def warm() -> float:
    """Compile (or load from the on-disk cache) the loop; seconds taken."""
    import time

    from flashmm.native.sim import NativeSim
    from flashmm.venues.sim import SimSettings

    t0 = time.perf_counter()
    from flashmm.native import NativeCore

    core = NativeCore(1e-5)
    sim = NativeSim(SimSettings(), 1e-5, core.ist)
    ev = np.zeros((13, 2), dtype=np.int64)
    ev[R_KIND, :] = (KIND_SNAPSHOT, KIND_TRADE)
    ev[R_TS, :] = (1, 2)
    ev[R_NB, 0] = ev[R_NA, 0] = 1
    ev[R_PX, 1], ev[R_QTY, 1] = 100, 1
    levels = np.array([[100, 5], [102, 4]], dtype=np.int64)
    bst = np.zeros(BST_SIZE, dtype=np.int64)
    bst[B_PERIOD] = 200_000_000
    bst[B_STALE_NS] = 1 << 40
    bst[B_SAMPLE_EVERY] = 1_000_000_000
    run(bst, np.zeros(BSF_SIZE), core.ist, core.fst, core.prog, core.params, core.work, core.x,
        core.io, sim.sst, sim.ssf, sim.lat, ev, levels, np.zeros((ROW_CAP, ROW_W), np.int64),
        np.zeros((ROW_CAP, ROWF_W)), np.zeros((MID_CAP, 2), np.int64))  # fmt: skip
    return time.perf_counter() - t0
