"""The compiled core's kernels: book, features, signal, strategy and risk over packed arrays.

Every kernel is a numba ``@njit(cache=True, nogil=True)`` function over a few
plain numpy arrays (no jitclass, no Python object per event):

- ``ist`` (int64): integer state -- counters and timestamps, the previous top
  10 levels, both sides of the book as sorted ``(key, lots)`` pairs (bids
  keyed by ``-price``, so both sides are ascending) and the mid history ring;
- ``fst`` (float64): float state -- the decayed sums, time averages and
  book-shape values of the features, the volatility estimate, the settings
  of the strategy, signal and risk checks, and the last decision's signal;
- ``io`` (int64): one decision's inputs (time, position, live orders) and
  outputs (desired quotes, cancels, places);
- ``lv`` (int64, flat): the levels of a snapshot or diff, ``lv[0]`` rows
  ``(side, price_ticks, size_lots)`` from ``lv[1]`` on (side 0 bid, 1 ask).

The arithmetic repeats :mod:`flashmm.features`, :mod:`flashmm.strategy.avellaneda`,
:mod:`flashmm.risk` and :mod:`flashmm.predict` operation for operation, so the
results are the same numbers (the parity tests in ``tests/test_native_core.py``
check it on recorded data). The layout constants below are the one place the
offsets are defined; :class:`flashmm.native.NativeCore` wraps them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import intrinsic
from numba.np.numpy_support import carray

from flashmm.native.cachedir import usable
from flashmm.predict.native import kernel as _model_kernel

_jit = njit(cache=usable(), nogil=True)
_run_model = _model_kernel()


@intrinsic
def _data_ptr(typingctx: Any, arr: Any) -> Any:
    """The data pointer of a C-contiguous array (for :func:`borrow`; any other
    layout does not type, so a strided array fails to compile instead of being read
    wrongly)."""
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None
    sig = types.CPointer(arr.dtype)(arr)  # type: ignore[no-untyped-call]

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return context.make_array(signature.args[0])(context, builder, args[0]).data

    return sig, codegen


@_jit
def borrow(a: np.ndarray) -> np.ndarray:
    """A view of C-contiguous ``a`` without a reference count: a loop that passes its
    arrays to other kernels millions of times pays an atomic increment and decrement
    per array and call on counted arrays (half a backtest's time); on these, nothing.
    Only for the duration of a call whose caller keeps ``a`` alive."""
    return carray(_data_ptr(a), a.shape)  # type: ignore[call-arg]


# --- ist: integer state ------------------------------------------------------
I_NB, I_NA, I_READY, I_T0, I_BOOK_TS, I_MID2, I_S_TS, I_E_TS = range(8)
I_LT_TS, I_LT_PX, I_LT_SIGN, I_LM_TS, I_LM_SIGN, I_H_TAIL = range(8, 14)
I_H_HEAD = 14  # 5 slots, one per return window
I_PNB, I_PNA, I_UPDATES, I_SKIPPED, I_VOL_NS, I_VOL_N = range(19, 25)
I_LEVELS_DROPPED, I_HIST_DROPPED, I_VERSION, I_VOL_INTERVAL = range(25, 29)
I_STRAT_LEVELS, I_USE_REG, I_POFS, I_BOFS, I_CUT, I_DROPPED = range(29, 35)
I_DECISIONS = 35
I_WARMUP_NS = 36  # the model answers this long after the features' first book (model_step)
I_PREV = 64  # 2 sides x 10 levels x (price, lots)
LEVELS = 10
BOOK_CAP = 8192  # levels kept per side (beyond it the farthest level is dropped, counted)
I_BOOK = 128
HIST_CAP = 1 << 17  # mid changes kept (the 600 s window), a ring
HIST_MASK = HIST_CAP - 1
I_HIST = I_BOOK + 4 * BOOK_CAP
IST_SIZE = I_HIST + 2 * HIST_CAP

# --- fst: float state and settings -------------------------------------------
F_S = 0  # 5 taus x 9 channels, decayed sums
F_E = 45  # 11 time averages
F_V = 56  # 11 current values of the averaged quantities
F_BK = 67  # 25 book-shape values
F_VOL_MID, F_VOL_VAR, F_VOL_ALPHA, F_VOL_FLOOR = 92, 93, 94, 95
# strategy (Avellaneda-Stoikov)
F_GAMMA, F_KAPPA, F_HORIZON, F_SPACING, F_ORDER_USDC, F_MULT = range(96, 102)
F_MIN_SPREAD, F_MAX_SPREAD, F_INV_TARGET, F_UNIT = range(102, 106)
# risk
F_MAX_POS_USDC, F_MAX_ORDER_USDC = 106, 107
# signal -> skew and widen
F_MAX_SKEW, F_MIN_CONF, F_LOW_CONF_WIDEN, F_BREAKER_WIDEN, F_MOVE_WIDEN = range(108, 113)
F_MIN_LEAN, F_RULE_MIN_IMB = 113, 114  # 115 free
# the last decision's signal
F_SIG_DIR, F_SIG_CONF, F_SIG_BPS, F_SIG_PMOVE, F_SKEW, F_WIDEN, F_SIGMA = range(116, 123)
F_P_DOWN, F_P_FLAT, F_P_UP, F_MODEL_BPS, F_SIG_MODEL = range(123, 128)
F_REFRESH_BPS, F_REFRESH_SIZE, F_MID = 128, 129, 130
F_DRIFT_Z = 131  # the ML breaker's |z| limit for a drifted feature
FST_SIZE = 160

# --- io: one decision --------------------------------------------------------
IO_TS, IO_POS, IO_BREAKER_OPEN, IO_USE_MODEL, IO_NLIVE = range(5)
IO_NQUOTES, IO_NCANCEL, IO_NPLACE, IO_MAXPOS = range(5, 9)
#: keep the live orders (``IO_KEEP`` 1): places join the live rows with client ids
#: from ``IO_NEXT_CID`` on; cut and dropped places of the last decision
IO_KEEP, IO_NEXT_CID, IO_CUT, IO_DROPPED = range(9, 13)
#: features beyond the drift limit at the last :func:`model_step`
IO_DRIFTED = 13
#: the side left out of the quotes before the diff (+1 buy, -1 sell, 0 none): reduce
#: only, while the position_limit breaker is tripped (the side that grows |position|)
IO_NO_SIDE = 14
MAX_LIVE = 64
LIVE_W = 5  # side (+1 buy, -1 sell), price, remaining lots, client id, state
ST_LIVE, ST_PENDING_CANCEL, ST_DONE = 0, 1, 2
IO_LIVE = 16
IO_QUOTES = IO_LIVE + LIVE_W * MAX_LIVE  # desired quotes: side, price, lots
IO_CANCELS = IO_QUOTES + 3 * 20
IO_PLACES = IO_CANCELS + MAX_LIVE  # places after the risk check: side, price, lots
IO_SIZE = IO_PLACES + 3 * 20

# features: decayed-sum channels and taus (as flashmm.features)
C_OFI1, C_OFI5, C_BUYV, C_SELLV, C_BUYN, C_SELLN, C_PQ, C_R2, C_MIDN = range(9)
N_CH = 9
TAUS = np.array([1.0, 5.0, 30.0, 120.0, 600.0])
EMA_TAUS = np.array([5.0, 30.0, 5.0, 60.0, 60.0, 600.0, 300.0, 300.0, 300.0, 1.0, 30.0])
# the EMAs that share a time constant with an earlier one (_ema_decay computes it once)
assert EMA_TAUS[2] == EMA_TAUS[0] and EMA_TAUS[10] == EMA_TAUS[1]
assert EMA_TAUS[4] == EMA_TAUS[3] and EMA_TAUS[7] == EMA_TAUS[8] == EMA_TAUS[6]
RET_WIN_NS = np.array([1_000_000_000, 5_000_000_000, 30_000_000_000, 120_000_000_000,
                       600_000_000_000], dtype=np.int64)  # fmt: skip
E_IMB1, E_IMB5, E_MICS, E_SPREAD, E_MID60, E_MID600, E_L1, E_D5, E_D10, E_IMB1F, E_MICS30 = range(
    11
)
NS = 1e-9
SPREAD_BPS = 1  # index of spread_bps in the vector
IMB_L1, MICRO_BPS = 7, 3  # imb_l1 and micro_offset_bps


# --- book ------------------------------------------------------------------


@_jit
def book_set(ist: np.ndarray, side: int, price: int, qty: int) -> None:
    """Set one level (``qty`` 0 removes it) of side 0 (bids) or 1 (asks)."""
    key = -price if side == 0 else price
    base = I_BOOK + side * 2 * BOOK_CAP
    n = ist[side]
    lo, hi = 0, n
    while lo < hi:
        m = (lo + hi) >> 1
        if ist[base + 2 * m] < key:
            lo = m + 1
        else:
            hi = m
    if lo < n and ist[base + 2 * lo] == key:
        if qty:
            ist[base + 2 * lo + 1] = qty
        else:
            for j in range(lo, n - 1):
                ist[base + 2 * j] = ist[base + 2 * j + 2]
                ist[base + 2 * j + 1] = ist[base + 2 * j + 3]
            ist[side] = n - 1
        return
    if not qty:
        return
    if n == BOOK_CAP:
        ist[I_LEVELS_DROPPED] += 1
        if lo == n:
            return
        n -= 1
    for j in range(n, lo, -1):
        ist[base + 2 * j] = ist[base + 2 * j - 2]
        ist[base + 2 * j + 1] = ist[base + 2 * j - 1]
    ist[base + 2 * lo] = key
    ist[base + 2 * lo + 1] = qty
    ist[side] = n + 1


@_jit
def best(ist: np.ndarray, side: int) -> int:
    """Best price of a side in ticks (0 when empty)."""
    if ist[side] == 0:
        return 0
    k: int = ist[I_BOOK + side * 2 * BOOK_CAP]
    return -k if side == 0 else k


@_jit
def level(ist: np.ndarray, side: int, i: int) -> tuple[int, int]:
    """The ``i``-th best level (price ticks, lots) of a side."""
    base = I_BOOK + side * 2 * BOOK_CAP + 2 * i
    k = ist[base]
    return (-k if side == 0 else k), ist[base + 1]


@_jit
def apply_levels(ist: np.ndarray, lv: np.ndarray, snapshot: bool) -> None:
    if snapshot:
        ist[I_NB] = 0
        ist[I_NA] = 0
    for r in range(lv[0]):
        o = 1 + 3 * r
        q = lv[o + 2]
        if snapshot and q <= 0:
            continue
        book_set(ist, lv[o], lv[o + 1], q)
    ist[I_VERSION] += 1


# --- features ----------------------------------------------------------------


@_jit
def _decay_to(ist: np.ndarray, fst: np.ndarray, ts: int) -> None:
    dt = ts - ist[I_S_TS]
    if dt > 0:
        for k in range(5):
            a = math.exp(-dt * NS / TAUS[k])
            for c in range(N_CH):
                fst[F_S + k * N_CH + c] *= a
        ist[I_S_TS] = ts


@_jit
def _ema_decay(x: float) -> tuple[float, ...]:
    """``exp(x / tau)`` for the 11 EMA time constants (``EMA_TAUS``), each distinct
    constant once (the same numbers as one exp per EMA)."""
    e0 = math.exp(x / EMA_TAUS[0])
    e1 = math.exp(x / EMA_TAUS[1])
    e3 = math.exp(x / EMA_TAUS[3])
    e5 = math.exp(x / EMA_TAUS[5])
    e6 = math.exp(x / EMA_TAUS[6])
    e9 = math.exp(x / EMA_TAUS[9])
    return (e0, e1, e0, e3, e3, e5, e6, e6, e6, e9, e1)


@_jit
def _ema_at(fst: np.ndarray, ea: tuple[float, ...], k: int) -> float:
    """EMA ``k`` decayed by ``ea[k]`` (:func:`_ema_decay`), its state unchanged."""
    v: float = fst[F_V + k]
    e: float = fst[F_E + k]
    return v + (e - v) * ea[k]


@_jit
def _ema_to(ist: np.ndarray, fst: np.ndarray, ts: int) -> None:
    dt = ts - ist[I_E_TS]
    if dt > 0:
        a = _ema_decay(-dt * NS)
        for k in range(11):
            v = fst[F_V + k]
            fst[F_E + k] = v + (fst[F_E + k] - v) * a[k]
        ist[I_E_TS] = ts


@_jit
def _add_inc(fst: np.ndarray, inc: np.ndarray) -> None:
    for k in range(5):
        for c in range(N_CH):
            fst[F_S + k * N_CH + c] += inc[c]


@_jit
def _hist_push(ist: np.ndarray, ts: int, mid2: int) -> None:
    tail = ist[I_H_TAIL]
    if tail - ist[I_H_HEAD + 4] >= HIST_CAP:  # full: the oldest entry goes (counted)
        ist[I_HIST_DROPPED] += 1
        for j in range(5):
            if ist[I_H_HEAD + j] <= tail - HIST_CAP:
                ist[I_H_HEAD + j] = tail - HIST_CAP + 1
    o = I_HIST + 2 * (tail & HIST_MASK)
    ist[o] = ts
    ist[o + 1] = mid2
    ist[I_H_TAIL] = tail + 1
    _hist_prune(ist, ts)


@_jit
def _hist_prune(ist: np.ndarray, ts: int) -> None:
    """Drop history no return window can read at ``ts`` or later (keeps one entry)."""
    tail = ist[I_H_TAIL]
    for j in range(5):
        cut = ts - RET_WIN_NS[j]
        h = ist[I_H_HEAD + j]
        while tail - h > 1 and ist[I_HIST + 2 * ((h + 1) & HIST_MASK)] <= cut:
            h += 1
        ist[I_H_HEAD + j] = h


@_jit
def _side_depth(
    ist: np.ndarray, side: int, n: int
) -> tuple[float, float, float, float, float, float]:
    """One side's depth for :func:`features_on_book`: size over all ``n`` levels, size and
    price*size over the top 3 and top 5, and the top 5 sizes weighted 1/(level+1)."""
    s = 0.0
    sp = 0.0
    c3 = pq3 = c5 = pq5 = 0.0
    w5 = 0.0
    for i in range(n):
        p, q = level(ist, side, i)
        s += q
        sp += p * q
        if i < 5:
            w5 += q / (i + 1)
        if i == 2:
            c3, pq3 = s, sp
        if i == 4:
            c5, pq5 = s, sp
    if n < 3:
        c3, pq3 = s, sp
    if n < 5:
        c5, pq5 = s, sp
    return s, c3, pq3, c5, pq5, w5


@_jit
def features_on_book(ist: np.ndarray, fst: np.ndarray, ts_ns: int) -> None:
    """:meth:`flashmm.features.OnlineFeatures.on_book` on the book held in ``ist``."""
    nb = min(ist[I_NB], LEVELS)
    na = min(ist[I_NA], LEVELS)
    if nb == 0 or na == 0:
        return
    if ist[I_READY] and nb == ist[I_PNB] and na == ist[I_PNA]:
        same = True
        for i in range(nb):
            p, q = level(ist, 0, i)
            if p != ist[I_PREV + 2 * i] or q != ist[I_PREV + 2 * i + 1]:
                same = False
                break
        if same:
            for i in range(na):
                p, q = level(ist, 1, i)
                if p != ist[I_PREV + 20 + 2 * i] or q != ist[I_PREV + 21 + 2 * i]:
                    same = False
                    break
        if same:
            ist[I_SKIPPED] += 1
            _ema_to(ist, fst, ts_ns)
            ist[I_BOOK_TS] = ts_ns
            ist[I_UPDATES] += 1
            return
    pb, qb = level(ist, 0, 0)
    pa, qa = level(ist, 1, 0)
    if pb >= pa:
        return
    mid2 = pb + pa
    mid = mid2 * 0.5
    bps = 1e4 / mid
    spread = pa - pb

    cb10, cb3, pqb3, cb5, pqb5, w5b = _side_depth(ist, 0, nb)
    ca10, ca3, pqa3, ca5, pqa5, w5a = _side_depth(ist, 1, na)

    micro1 = (pb * qa + pa * qb) / (qb + qa)
    micro3 = (pqb3 / cb3 * ca3 + pqa3 / ca3 * cb3) / (cb3 + ca3)
    micro5 = (pqb5 / cb5 * ca5 + pqa5 / ca5 * cb5) / (cb5 + ca5)
    bid_far = level(ist, 0, nb - 1)[0]
    ask_far = level(ist, 1, na - 1)[0]
    bid_dens = cb10 * spread / (pb - bid_far + spread)
    ask_dens = ca10 * spread / (ask_far - pa + spread)
    l1 = (qb + qa) * 0.5
    d5 = (cb5 + ca5) * 0.5
    d10 = (cb10 + ca10) * 0.5

    first = not ist[I_READY]
    if first:
        ist[I_READY] = 1
        ist[I_T0] = ts_ns
        ist[I_S_TS] = ts_ns
        ist[I_E_TS] = ts_ns
        ist[I_LT_TS] = ts_ns
        ist[I_LM_TS] = ts_ns
        v0 = (0.0, 0.0, 0.0, float(spread), mid, mid, l1, d5, d10, 0.0, 0.0)
        for k in range(11):
            fst[F_V + k] = v0[k]
            fst[F_E + k] = v0[k]

    ofi1 = 0.0
    ofi5 = 0.0
    pnb = ist[I_PNB]
    pna = ist[I_PNA]
    if not first and pnb > 0 and pna > 0:
        for i in range(min(5, nb, na, pnb, pna)):
            bp, bq = level(ist, 0, i)
            ap, aq = level(ist, 1, i)
            obp = ist[I_PREV + 2 * i]
            obq = ist[I_PREV + 2 * i + 1]
            oap = ist[I_PREV + 20 + 2 * i]
            oaq = ist[I_PREV + 21 + 2 * i]
            e = 0.0
            if bp >= obp:
                e += bq
            if bp <= obp:
                e -= obq
            if ap <= oap:
                e -= aq
            if ap >= oap:
                e += oaq
            if i == 0:
                ofi1 = e
            ofi5 += e
    for i in range(nb):
        p, q = level(ist, 0, i)
        ist[I_PREV + 2 * i] = p
        ist[I_PREV + 2 * i + 1] = q
    for i in range(na):
        p, q = level(ist, 1, i)
        ist[I_PREV + 20 + 2 * i] = p
        ist[I_PREV + 21 + 2 * i] = q
    ist[I_PNB] = nb
    ist[I_PNA] = na

    r2 = 0.0
    old2 = ist[I_MID2]
    moved = not first and mid2 != old2
    if moved:
        r = (mid2 - old2) * 0.5
        r2 = r * r
        ist[I_LM_TS] = ts_ns
        ist[I_LM_SIGN] = 1 if mid2 > old2 else -1
    if ofi1 != 0.0 or ofi5 != 0.0 or moved:
        _decay_to(ist, fst, ts_ns)
        inc = np.zeros(N_CH)
        inc[C_OFI1] = ofi1
        inc[C_OFI5] = ofi5
        inc[C_R2] = r2
        inc[C_MIDN] = 1.0 if moved else 0.0
        _add_inc(fst, inc)
    if first or moved:
        _hist_push(ist, ts_ns, mid2)
    ist[I_MID2] = mid2
    ist[I_BOOK_TS] = ts_ns

    imb1 = (qb - qa) / (qb + qa)
    imb5 = (cb5 - ca5) / (cb5 + ca5)
    mic_s = (micro1 - mid) / spread
    _ema_to(ist, fst, ts_ns)
    v = (imb1, imb5, mic_s, float(spread), mid, mid, l1, d5, d10, imb1, mic_s)
    for k in range(11):
        fst[F_V + k] = v[k]

    k5b = min(5, nb)
    k5a = min(5, na)
    inv_sp = 1.0 / spread
    bk = F_BK
    fst[bk + 0] = 0.0
    fst[bk + 1] = spread * bps
    fst[bk + 2] = 0.0
    fst[bk + 3] = (micro1 - mid) * bps
    fst[bk + 4] = mic_s
    fst[bk + 5] = (micro3 - mid) * inv_sp
    fst[bk + 6] = (micro5 - mid) * inv_sp
    fst[bk + 7] = imb1
    fst[bk + 8] = (cb3 - ca3) / (cb3 + ca3)
    fst[bk + 9] = imb5
    fst[bk + 10] = (cb10 - ca10) / (cb10 + ca10)
    fst[bk + 11] = (w5b - w5a) / (w5b + w5a)
    fst[bk + 12] = math.log(qb / qa)
    fst[bk + 13] = (pb - level(ist, 0, 1)[0]) * inv_sp if nb > 1 else 0.0
    fst[bk + 14] = (level(ist, 1, 1)[0] - pa) * inv_sp if na > 1 else 0.0
    fst[bk + 15] = (mid - bid_far) * inv_sp
    fst[bk + 16] = (ask_far - mid) * inv_sp
    fst[bk + 17] = bid_dens
    fst[bk + 18] = ask_dens
    fst[bk + 19] = math.log(bid_dens / ask_dens)
    fst[bk + 20] = math.log(qb * k5b / (cb5 if nb >= 5 else cb10))
    fst[bk + 21] = math.log(qa * k5a / (ca5 if na >= 5 else ca10))
    fst[bk + 22] = l1
    fst[bk + 23] = d10
    fst[bk + 24] = spread
    ist[I_UPDATES] += 1


@_jit
def features_on_trade(
    ist: np.ndarray, fst: np.ndarray, ts: int, px: int, size: int, buyer_is_maker: int
) -> None:
    """:meth:`flashmm.features.OnlineFeatures.on_trade`."""
    if not ist[I_READY]:
        return
    _decay_to(ist, fst, ts)
    q = float(size)
    inc = np.zeros(N_CH)
    if buyer_is_maker:
        inc[C_SELLN] = 1.0
        inc[C_SELLV] = q
    else:
        inc[C_BUYN] = 1.0
        inc[C_BUYV] = q
    inc[C_PQ] = px * q
    _add_inc(fst, inc)
    ist[I_LT_TS] = ts
    ist[I_LT_PX] = px
    ist[I_LT_SIGN] = -1 if buyer_is_maker else 1


@_jit
def features_vector(ist: np.ndarray, fst: np.ndarray, ts_ns: int, out: np.ndarray) -> None:
    """:meth:`flashmm.features.OnlineFeatures.vector` into ``out`` (float32, 64)."""
    if not ist[I_READY]:
        out[:] = 0.0
        return
    ts = max(ts_ns, ist[I_BOOK_TS], ist[I_S_TS])
    dts = (ts - ist[I_S_TS]) * NS
    # the decays of TAUS (1, 5, 30, 120, 600 s) and of the EMAs
    d1, d5, d30 = math.exp(-dts / TAUS[0]), math.exp(-dts / TAUS[1]), math.exp(-dts / TAUS[2])
    d120, d600 = math.exp(-dts / TAUS[3]), math.exp(-dts / TAUS[4])
    dte = (ts - ist[I_E_TS]) * NS
    ea = _ema_decay(-dte)
    s1, s5, s30, s120, s600 = F_S, F_S + N_CH, F_S + 2 * N_CH, F_S + 3 * N_CH, F_S + 4 * N_CH

    mid2 = ist[I_MID2]
    mid = mid2 * 0.5
    inv_sp = 1.0 / max(_ema_at(fst, ea, E_SPREAD), 1e-12)
    l1n = max(_ema_at(fst, ea, E_L1), 1e-12)
    d5n = max(_ema_at(fst, ea, E_D5), 1e-12)
    d10n = max(_ema_at(fst, ea, E_D10), 1e-12)
    bk = F_BK

    bv1, sv1 = fst[s1 + C_BUYV] * d1, fst[s1 + C_SELLV] * d1
    bv5, sv5 = fst[s5 + C_BUYV] * d5, fst[s5 + C_SELLV] * d5
    bv30, sv30 = fst[s30 + C_BUYV] * d30, fst[s30 + C_SELLV] * d30
    bv120, sv120 = fst[s120 + C_BUYV] * d120, fst[s120 + C_SELLV] * d120
    v1, v5, v30, v120 = bv1 + sv1, bv5 + sv5, bv30 + sv30, bv120 + sv120
    bn30, sn30 = fst[s30 + C_BUYN] * d30, fst[s30 + C_SELLN] * d30
    n5 = (fst[s5 + C_BUYN] + fst[s5 + C_SELLN]) * d5
    n120 = (fst[s120 + C_BUYN] + fst[s120 + C_SELLN]) * d120
    eps = 1e-9

    _hist_prune(ist, ts)
    for j in range(12):
        out[j] = fst[bk + j]
    out[0] = _ema_at(fst, ea, E_IMB1F)
    out[2] = _ema_at(fst, ea, E_MICS30)
    out[12] = _ema_at(fst, ea, E_IMB1)
    out[13] = _ema_at(fst, ea, E_IMB5)
    out[14] = _ema_at(fst, ea, E_MICS)
    for j in range(5):
        out[15 + j] = fst[bk + 12 + j]
    out[20] = math.log(fst[bk + 17] / l1n)
    out[21] = math.log(fst[bk + 18] / l1n)
    for j in range(3):
        out[22 + j] = fst[bk + 19 + j]
    out[25] = math.log(fst[bk + 22] / l1n)
    out[26] = math.log(fst[bk + 23] / d10n)
    out[27] = fst[bk + 24] * inv_sp
    out[28] = fst[s1 + C_OFI1] * d1 / l1n
    out[29] = fst[s5 + C_OFI1] * d5 / l1n
    out[30] = fst[s30 + C_OFI1] * d30 / l1n
    out[31] = fst[s120 + C_OFI1] * d120 / l1n
    out[32] = fst[s5 + C_OFI5] * d5 / d5n
    out[33] = fst[s30 + C_OFI5] * d30 / d5n
    out[34] = (bv1 - sv1) / v1 if v1 > eps else 0.0
    out[35] = (bv5 - sv5) / v5 if v5 > eps else 0.0
    out[36] = (bv30 - sv30) / v30 if v30 > eps else 0.0
    out[37] = (bv120 - sv120) / v120 if v120 > eps else 0.0
    out[38] = (bn30 - sn30) / (bn30 + sn30) if bn30 + sn30 > eps else 0.0
    out[39] = math.log1p(n5 / 5.0)
    out[40] = math.log1p((bn30 + sn30) / 30.0)
    out[41] = math.log1p(n120 / 120.0)
    out[42] = math.log1p(v5 / l1n)
    out[43] = math.log1p(v30 / l1n)
    out[44] = math.log1p(v120 / l1n)
    out[45] = (fst[s30 + C_PQ] * d30 / v30 - mid) * inv_sp if v30 > eps else 0.0
    out[46] = ist[I_LT_SIGN]
    out[47] = (ist[I_LT_PX] - mid) * inv_sp if ist[I_LT_SIGN] else 0.0
    out[48] = math.log1p((ts - ist[I_LT_TS]) * NS)
    for j in range(5):
        h = ist[I_H_HEAD + j]
        out[49 + j] = (mid2 - ist[I_HIST + 2 * (h & HIST_MASK) + 1]) * 0.5 * inv_sp
    out[54] = math.sqrt(fst[s5 + C_R2] * d5) * inv_sp
    out[55] = math.sqrt(fst[s30 + C_R2] * d30) * inv_sp
    out[56] = math.sqrt(fst[s120 + C_R2] * d120) * inv_sp
    out[57] = math.sqrt(fst[s600 + C_R2] * d600) * inv_sp
    out[58] = (mid - _ema_at(fst, ea, E_MID60)) * inv_sp
    out[59] = (mid - _ema_at(fst, ea, E_MID600)) * inv_sp
    out[60] = math.log1p(fst[s120 + C_MIDN] * d120 / 120.0 * 60.0)
    out[61] = ist[I_LM_SIGN]
    out[62] = math.log1p((ts - ist[I_LM_TS]) * NS)
    out[63] = math.log1p((ts - ist[I_BOOK_TS]) * NS)


# --- volatility ------------------------------------------------------------------


@_jit
def vol_update(ist: np.ndarray, fst: np.ndarray, mid: float, now_ns: int) -> None:
    """:meth:`flashmm.strategy.base.VolEstimator.update`."""
    if mid <= 0:
        return
    if ist[I_VOL_NS] == 0:
        fst[F_VOL_MID] = mid
        ist[I_VOL_NS] = now_ns
        return
    dt = now_ns - ist[I_VOL_NS]
    if dt < ist[I_VOL_INTERVAL]:
        return
    r_bps = (mid / fst[F_VOL_MID] - 1.0) * 1e4
    var_per_s = r_bps * r_bps / (dt / 1e9)
    if ist[I_VOL_N] == 0:
        fst[F_VOL_VAR] = var_per_s
    else:
        fst[F_VOL_VAR] = fst[F_VOL_VAR] + fst[F_VOL_ALPHA] * (var_per_s - fst[F_VOL_VAR])
    ist[I_VOL_N] += 1
    fst[F_VOL_MID] = mid
    ist[I_VOL_NS] = now_ns


@_jit
def sigma_bps(fst: np.ndarray) -> float:
    s: float = max(math.sqrt(fst[F_VOL_VAR]), fst[F_VOL_FLOOR])
    return s


# --- events ------------------------------------------------------------------------


@_jit
def on_depth(ist: np.ndarray, fst: np.ndarray, lv: np.ndarray, ts: int, snapshot: bool) -> int:
    """Apply a snapshot or diff, update the features and the volatility.
    Returns 1 when the book is valid (both sides, not crossed), else 0."""
    apply_levels(ist, lv, snapshot)
    bb = best(ist, 0)
    ba = best(ist, 1)
    if not (0 < bb < ba):
        return 0
    features_on_book(ist, fst, ts)
    vol_update(ist, fst, (bb + ba) / 2.0, ts)
    return 1


@_jit
def features_on_top(ist: np.ndarray, fst: np.ndarray, lv: np.ndarray, ts: int) -> None:
    """The features after a book change, from the book's top levels in ``lv`` (loaded
    as a snapshot: the features read the best 10 levels only)."""
    apply_levels(ist, lv, True)
    features_on_book(ist, fst, ts)


# --- signal, strategy, risk -------------------------------------------------------


@_jit
def rules_signal(fst: np.ndarray, x: np.ndarray) -> None:
    """:meth:`flashmm.predict.rules.RulePredictor.predict` into the signal slots."""
    imb = float(x[IMB_L1])
    micro = float(x[MICRO_BPS])
    fst[F_SIG_MODEL] = 0.0
    fst[F_SIG_PMOVE] = 0.0
    if not (math.isfinite(imb) and math.isfinite(micro)):
        fst[F_SIG_DIR] = 0.0
        fst[F_SIG_CONF] = 0.0
        fst[F_SIG_BPS] = 0.0
        return
    lean = 1 if imb > 0 else (-1 if imb < 0 else 0)
    a = abs(imb)
    direction = lean if a >= fst[F_RULE_MIN_IMB] else 0
    confidence = 0.5 + 0.25 * a if direction else 1.0 - a
    fst[F_SIG_DIR] = direction
    fst[F_SIG_CONF] = min(max(confidence, 0.0), 1.0)
    fst[F_SIG_BPS] = micro


@_jit
def model_signal(
    ist: np.ndarray,
    fst: np.ndarray,
    prog: np.ndarray,
    params: np.ndarray,
    work: np.ndarray,
    x: np.ndarray,
) -> None:
    """:meth:`flashmm.predict.onnx_model.OnnxPredictor.predict` (native program)."""
    _run_model(prog, params, work, x)
    o = ist[I_POFS]
    down, up = work[o], work[o + 2]
    fst[F_P_DOWN] = down
    fst[F_P_FLAT] = work[o + 1]
    fst[F_P_UP] = up
    fst[F_MODEL_BPS] = work[ist[I_BOFS]]
    pm = up + down
    lean = (up - down) / pm if pm > 1e-12 else 0.0
    direction = (1 if lean > 0 else -1) if abs(lean) >= fst[F_MIN_LEAN] else 0
    expected = fst[F_MODEL_BPS] if ist[I_USE_REG] else lean * float(x[SPREAD_BPS]) * 0.5
    fst[F_SIG_DIR] = direction
    fst[F_SIG_CONF] = 0.5 + 0.5 * abs(lean)
    fst[F_SIG_BPS] = expected
    fst[F_SIG_PMOVE] = pm
    fst[F_SIG_MODEL] = 1.0


@_jit
def drift_count(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, limit: float) -> int:
    """Features with ``|x - mean| * inv_std`` not within ``limit`` (NaN counts), as
    :meth:`flashmm.predict.breaker.GuardedPredictor._drifting` counts them."""
    n = 0
    for i in range(len(mean)):
        z = abs((np.float64(x[i]) - mean[i]) * inv_std[i])
        if not (z <= limit):
            n += 1
    return n


@_jit
def model_step(
    ist: np.ndarray,
    fst: np.ndarray,
    prog: np.ndarray,
    params: np.ndarray,
    work: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    inv_std: np.ndarray,
    io: np.ndarray,
) -> int:
    """The model signal's work for one decision in one call: the 64 features at
    ``io[IO_TS]`` into ``x``; then, when the features are ready and ``I_WARMUP_NS``
    past their first book, the ML breaker's drift count into ``io[IO_DRIFTED]``
    (``mean`` empty: none) and the model into the signal slots (:func:`model_signal`).
    Returns 1 when the model ran, 0 when the rules should answer (warming up)."""
    ts = io[IO_TS]
    features_vector(ist, fst, ts, x)
    if not ist[I_READY] or ts - ist[I_T0] < ist[I_WARMUP_NS]:
        return 0
    io[IO_DRIFTED] = drift_count(x, mean, inv_std, fst[F_DRIFT_Z]) if len(mean) else 0
    model_signal(ist, fst, prog, params, work, x)
    return 1


@_jit
def skew_from_signal(fst: np.ndarray, breaker_open: bool) -> None:
    """:func:`flashmm.predict.skew.skew_from_signal` from and into the signal slots."""
    conf = fst[F_SIG_CONF]
    bps = fst[F_SIG_BPS]
    if not (math.isfinite(conf) and math.isfinite(bps)):
        conf, bps = 0.0, 0.0
    conf = min(max(conf, 0.0), 1.0)
    min_c = fst[F_MIN_CONF]
    mx = fst[F_MAX_SKEW]
    if conf >= min_c:
        skew = max(-mx, min(mx, bps * conf))
        widen = 1.0
    else:
        skew = 0.0
        short = 1.0 - conf / min_c if min_c > 0 else 0.0
        widen = 1.0 + (fst[F_LOW_CONF_WIDEN] - 1.0) * short
    pm = fst[F_SIG_PMOVE]
    mw = fst[F_MOVE_WIDEN]
    if mw > 0 and math.isfinite(pm) and pm > 0:
        widen *= 1.0 + mw * min(pm, 1.0)
    if breaker_open:
        widen = max(widen, fst[F_BREAKER_WIDEN])
    fst[F_SKEW] = skew
    fst[F_WIDEN] = widen


@_jit
def max_position_lots(fst: np.ndarray, mid: float) -> int:
    """:meth:`flashmm.risk.RiskManager.max_position_lots`."""
    if mid <= 0:
        return 0
    return int(fst[F_MAX_POS_USDC] / (mid * fst[F_UNIT]))


@_jit
def strategy_quote(
    ist: np.ndarray,
    fst: np.ndarray,
    io: np.ndarray,
    best_bid: int,
    best_ask: int,
    mid: float,
    pos: int,
    max_pos: int,
    sigma: float,
) -> int:
    """:meth:`flashmm.strategy.avellaneda.AvellanedaStrategy.quote` into ``io``'s
    quote rows (bids then asks, best first); returns their number."""
    io[IO_NQUOTES] = 0
    if mid <= 0 or best_bid <= 0 or best_ask <= best_bid:
        return 0
    gamma = fst[F_GAMMA]
    limit = max(max_pos, 1)
    q = (pos - fst[F_INV_TARGET] * limit) / limit
    q = max(-1.0, min(1.0, q))
    s2t = sigma * sigma * fst[F_HORIZON]
    r = -q * gamma * s2t + fst[F_SKEW]
    half = (gamma * s2t / 2.0 + math.log1p(gamma / fst[F_KAPPA]) / gamma) * fst[F_WIDEN]
    half = min(max(half, fst[F_MIN_SPREAD] / 2.0), fst[F_MAX_SPREAD] / 2.0)
    unit = fst[F_UNIT]
    bid_cap = best_ask - 1
    ask_floor = best_bid + 1
    lo = mid * (1.0 + (r - half) / 1e4)
    hi = mid * (1.0 + (r + half) / 1e4)
    step = mid * fst[F_SPACING] / 1e4
    size_usdc = fst[F_ORDER_USDC]
    prev_bid = bid_cap + 1
    prev_ask = ask_floor - 1
    nl = ist[I_STRAT_LEVELS]  # at most 10: bids go to quote rows 0.., asks to 10..
    nbq = 0
    naq = 0
    for i in range(nl):
        bid = min(math.floor(lo - i * step + 1e-9), prev_bid - 1)
        ask = max(math.ceil(hi + i * step - 1e-9), prev_ask + 1)
        prev_bid, prev_ask = bid, ask
        if bid > 0:
            lots = int(size_usdc / (bid * unit))
            if lots > 0:
                o = IO_QUOTES + 3 * nbq
                io[o] = 1
                io[o + 1] = bid
                io[o + 2] = lots
                nbq += 1
        lots = int(size_usdc / (ask * unit))
        if lots > 0:
            o = IO_QUOTES + 3 * (10 + naq)
            io[o] = -1
            io[o + 1] = ask
            io[o + 2] = lots
            naq += 1
        size_usdc *= fst[F_MULT]
    if nbq < 10:  # the asks right after the bids
        for c in range(3 * naq):
            io[IO_QUOTES + 3 * nbq + c] = io[IO_QUOTES + 30 + c]
    n = nbq + naq
    io[IO_NQUOTES] = n
    return n


@_jit
def check_orders(ist: np.ndarray, fst: np.ndarray, io: np.ndarray, src: int, n: int) -> int:
    """:meth:`flashmm.risk.RiskManager.check_orders`: the ``n`` rows at ``io[src:]``
    (side, price, lots) cut or dropped so no fill sequence breaches the position
    limit, counting every live order not done (pending cancels included); the
    accepted rows go to the place rows. Returns their number."""
    limit = fst[F_MAX_POS_USDC]
    unit = fst[F_UNIT]
    max_order = fst[F_MAX_ORDER_USDC]
    pos = io[IO_POS]
    buy_exp = pos
    sell_exp = -pos
    buy_px = 0
    sell_px = 0
    for k in range(io[IO_NLIVE]):
        o = IO_LIVE + LIVE_W * k
        rem = io[o + 2]
        if io[o + 4] == ST_DONE or rem <= 0:
            continue
        if io[o] > 0:
            buy_exp += rem
            buy_px = max(buy_px, io[o + 1])
        else:
            sell_exp += rem
            sell_px = max(sell_px, io[o + 1])
    out = 0
    for k in range(n):
        o = src + 3 * k
        side = io[o]
        px = io[o + 1]
        want = io[o + 2]
        if px <= 0 or want <= 0:
            ist[I_DROPPED] += 1
            continue
        size = min(want, int(max_order / (px * unit) + 1e-9))
        if side > 0:
            val_px = max(buy_px, px)
            room = int(limit / (val_px * unit) + 1e-9) - buy_exp
        else:
            val_px = max(sell_px, px)
            room = int(limit / (val_px * unit) + 1e-9) - sell_exp
        size = min(size, room)
        if size <= 0:
            ist[I_DROPPED] += 1
            continue
        if size < want:
            ist[I_CUT] += 1
        if side > 0:
            buy_exp += size
            buy_px = val_px
        else:
            sell_exp += size
            sell_px = val_px
        d = IO_PLACES + 3 * out
        io[d] = side
        io[d + 1] = px
        io[d + 2] = size
        out += 1
    io[IO_NPLACE] = out
    return out


@_jit
def sync_orders(ist: np.ndarray, fst: np.ndarray, io: np.ndarray, mid: float) -> None:
    """The engine's order diff: desired quotes against live orders (state
    ``ST_LIVE``) with the refresh tolerances; unmatched live orders become
    cancels (marked pending cancel), unmatched quotes are risk-checked places.
    Quotes of side ``io[IO_NO_SIDE]`` (reduce only) are left out first."""
    tol = int(fst[F_REFRESH_BPS] * mid / 1e4)
    size_tol = fst[F_REFRESH_SIZE]
    io[IO_CUT] = 0
    io[IO_DROPPED] = 0
    nlive = io[IO_NLIVE]
    kept = np.zeros(nlive, dtype=np.bool_)
    nq = io[IO_NQUOTES]
    no_side = io[IO_NO_SIDE]
    # unmatched quotes are moved down over the quote rows (in place, order kept)
    nplace = 0
    for k in range(nq):
        qo = IO_QUOTES + 3 * k
        side, px, lots = io[qo], io[qo + 1], io[qo + 2]
        if no_side != 0 and side == no_side:
            continue
        match = -1
        for j in range(nlive):
            o = IO_LIVE + LIVE_W * j
            if (
                io[o + 4] == ST_LIVE
                and not kept[j]
                and io[o] == side
                and abs(io[o + 1] - px) <= tol
                and abs(io[o + 2] - lots) <= size_tol * lots
            ):
                match = j
                break
        if match >= 0:
            kept[match] = True
            continue
        d = IO_QUOTES + 3 * nplace
        io[d], io[d + 1], io[d + 2] = side, px, lots
        nplace += 1
    nc = 0
    for j in range(nlive):
        o = IO_LIVE + LIVE_W * j
        if io[o + 4] == ST_LIVE and not kept[j]:
            io[o + 4] = ST_PENDING_CANCEL
            io[IO_CANCELS + nc] = io[o + 3]
            nc += 1
    io[IO_NCANCEL] = nc
    io[IO_NQUOTES] = nplace
    if nc == 0 and nplace == 0:
        io[IO_NPLACE] = 0
        return
    cut, dropped = ist[I_CUT], ist[I_DROPPED]
    check_orders(ist, fst, io, IO_QUOTES, nplace)
    io[IO_CUT] = ist[I_CUT] - cut
    io[IO_DROPPED] = ist[I_DROPPED] - dropped
    if io[IO_KEEP]:
        live_keep_places(io)


@_jit
def live_keep_places(io: np.ndarray) -> None:
    """The last decision's places join the live rows (state ``ST_LIVE``) with client
    ids ``IO_NEXT_CID``, ``IO_NEXT_CID + 1``, ...; returns nothing, ``IO_NEXT_CID``
    moves past them. The caller checks room first (``MAX_LIVE``)."""
    n = io[IO_NLIVE]
    cid = io[IO_NEXT_CID]
    for k in range(io[IO_NPLACE]):
        s = IO_PLACES + 3 * k
        o = IO_LIVE + LIVE_W * n
        io[o] = io[s]
        io[o + 1] = io[s + 1]
        io[o + 2] = io[s + 2]
        io[o + 3] = cid
        io[o + 4] = ST_LIVE
        cid += 1
        n += 1
    io[IO_NLIVE] = n
    io[IO_NEXT_CID] = cid


@_jit
def live_find(io: np.ndarray, cid: int) -> int:
    """The row of live order ``cid`` (-1: none)."""
    for j in range(io[IO_NLIVE]):
        if io[IO_LIVE + LIVE_W * j + 3] == cid:
            return j
    return -1


@_jit
def live_remove(io: np.ndarray, cid: int) -> int:
    """Drop live order ``cid`` (done: filled, cancelled, rejected), keeping the others'
    order. Returns 1 when it was there."""
    j = live_find(io, cid)
    if j < 0:
        return 0
    n = io[IO_NLIVE]
    for i in range(IO_LIVE + LIVE_W * j, IO_LIVE + LIVE_W * (n - 1)):
        io[i] = io[i + LIVE_W]
    io[IO_NLIVE] = n - 1
    return 1


@_jit
def live_remaining(io: np.ndarray, cid: int, lots: int) -> int:
    """Set the remaining lots of live order ``cid`` (a partial fill). Returns 1 when
    it was there."""
    j = live_find(io, cid)
    if j < 0:
        return 0
    io[IO_LIVE + LIVE_W * j + 2] = lots
    return 1


@_jit
def live_cancel_all(io: np.ndarray) -> int:
    """Mark every live order pending cancel; returns how many were live."""
    c = 0
    for j in range(io[IO_NLIVE]):
        o = IO_LIVE + LIVE_W * j + 4
        if io[o] == ST_LIVE:
            io[o] = ST_PENDING_CANCEL
            c += 1
    return c


@_jit
def quote_and_sync(
    ist: np.ndarray,
    fst: np.ndarray,
    io: np.ndarray,
    best_bid: int,
    best_ask: int,
    mid: float,
    pos: int,
    max_pos: int,
    sigma: float,
) -> int:
    """The strategy's quotes for a signal already turned into ``F_SKEW``/``F_WIDEN``,
    the diff against the live orders and the risk check: what :func:`decide` does
    after the signal, for a caller that computes the signal itself (the engine, whose
    model runs behind the ML breaker). Returns the number of places."""
    io[IO_POS] = pos
    io[IO_MAXPOS] = max_pos
    fst[F_MID] = mid
    fst[F_SIGMA] = sigma
    strategy_quote(ist, fst, io, best_bid, best_ask, mid, pos, max_pos, sigma)
    sync_orders(ist, fst, io, mid)
    ist[I_DECISIONS] += 1
    placed: int = io[IO_NPLACE]
    return placed


@_jit
def decide(
    ist: np.ndarray,
    fst: np.ndarray,
    prog: np.ndarray,
    params: np.ndarray,
    work: np.ndarray,
    x: np.ndarray,
    io: np.ndarray,
) -> int:
    """One quote decision: features at ``io[IO_TS]``, the model (``io[IO_USE_MODEL]``)
    or the rules, skew and widen, the strategy's quotes, the diff against the live
    orders and the risk check. Returns the number of places (cancels in
    ``io[IO_NCANCEL]``); -1 when the book is not valid."""
    ts = io[IO_TS]
    bb = best(ist, 0)
    ba = best(ist, 1)
    if not (0 < bb < ba):
        io[IO_NQUOTES] = 0
        io[IO_NCANCEL] = 0
        io[IO_NPLACE] = 0
        return -1
    mid = (bb + ba) / 2.0
    fst[F_MID] = mid
    if io[IO_USE_MODEL]:
        features_vector(ist, fst, ts, x)
        model_signal(ist, fst, prog, params, work, x)
    else:
        x[IMB_L1] = fst[F_BK + IMB_L1]
        x[MICRO_BPS] = fst[F_BK + MICRO_BPS]
        rules_signal(fst, x)
    skew_from_signal(fst, io[IO_BREAKER_OPEN] != 0)
    sig = sigma_bps(fst)
    fst[F_SIGMA] = sig
    maxpos = max_position_lots(fst, mid)
    io[IO_MAXPOS] = maxpos
    strategy_quote(ist, fst, io, bb, ba, mid, io[IO_POS], maxpos, sig)
    sync_orders(ist, fst, io, mid)
    ist[I_DECISIONS] += 1
    placed: int = io[IO_NPLACE]
    return placed
