"""The simulated exchange's matching as compiled kernels over plain arrays.

The same model as :class:`flashmm.venues.sim.SimVenue` (``docs/simulation.md``),
operation for operation, for one market over the core's reference book (the
``ist`` array of :mod:`flashmm.native.kernels`): entry and cancel latency,
post-only checks, the power-prob queue ahead of each order, trades at and
through our prices (``whole_order`` or ``printed_size``), the book moving
through our prices, fees, and the response latency of every venue event.
Parity with ``SimVenue`` on recorded data is tested (``tests/test_native_sim.py``).

State is two arrays: ``sst`` (int64: counters, settings, the order, level and
action tables, the outbox) and ``ssf`` (float64: each order's queue ahead,
each outbox fill's fee, the queue power and fee rates). Latencies are drawn in
Python by the very samplers ``SimVenue`` uses (one seeded RNG each) into a
``lat`` buffer (3 rows: entry, cancel, feed) that the kernels read in order,
so a lognormal latency gives the same draws as the Python venue; a constant
latency needs no buffer. :class:`NativeSim` is the Python face of one market.

Outbox rows (``OUT_W`` int64 each): deliver time, kind (``EV_*``), client id,
venue time, side, price, lots, liquidity, reject reason (``REJ_*``), fill
sequence number; the fee is ``ssf[SF_OUT_FEE + row]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from flashmm.native import kernels as K
from flashmm.native.cachedir import usable
from flashmm.types import (
    Fill,
    Liquidity,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Side,
    VenueEvent,
)

_jit = njit(cache=usable(), nogil=True)
_jit_inline = njit(cache=usable(), nogil=True, inline="always")

# --- sst header ------------------------------------------------------------------
S_ACT_SEQ, S_FILL_SEQ, S_LAST_DELIVER, S_LAST_DIFF_MS, S_POSITION, S_SYNCED = range(6)
S_ORDERS_SENT, S_CANCELS_SENT, S_TAKES, S_REJECTS, S_FILLS, S_FILL_LOTS = range(6, 12)
S_CANCEL_MISSES, S_PRINTED, S_NACT, S_OUT_HEAD, S_OUT_TAIL, S_ARR_SEQ = range(12, 18)
S_OVERFLOW = 18  # a table was full (a bug or an absurd ladder): the run is not valid
S_LAT_CONST = 20  # 3: constant latency in ns, or -1 (read the ``lat`` buffer)
S_LAT_POS = 23  # 3: next row of each ``lat`` buffer
S_LAT_LEN = 26  # 3: rows filled in each buffer
# high-water marks: the order and level slots ever used (the scans stop there; slots
# are reused lowest first, so these stay at the most ever live at once), and the
# active levels per side (0 bids, 1 asks)
S_ORD_HW, S_LVL_HW, S_NLVL = 29, 30, 31  # S_NLVL: 2

# order table: MAX_ORD slots of ORD_W
MAX_ORD = 256
ORD_W = 12
O_CID, O_SIDE, O_PRICE, O_SIZE, O_REM, O_STATE, O_CXL, O_REJ = range(8)
O_CREATED, O_LVL, O_INFLIGHT, O_POST = range(8, 12)
OS_FREE, OS_NEW, OS_OPEN, OS_DONE = 0, 1, 2, 3
I_ORD = 64

# our price levels: MAX_LVL slots of LVL_W (the orders at the level in arrival order)
MAX_LVL = 64
LVL_CAP = 64
LVL_W = 5 + LVL_CAP
L_ACTIVE, L_SIDE, L_PRICE, L_QTY, L_TRADED, L_N = 0, 1, 2, 3, 4, 5  # L_N: orders; then slots
I_LVL = I_ORD + MAX_ORD * ORD_W

# actions in flight: MAX_ACT of ACT_W (due, seq, kind, first item, items, take side/size/limit)
MAX_ACT = 256
ACT_W = 8
A_DUE, A_SEQ, A_KIND, A_FIRST, A_N, A_SIDE, A_SIZE, A_LIMIT = range(8)
ACT_PLACE, ACT_CANCEL, ACT_TAKE = 0, 1, 2
I_ACT = I_LVL + MAX_LVL * LVL_W
ITEMS = 4096  # a ring of the actions' items (order slots or client ids)
I_ITEMS = I_ACT + MAX_ACT * ACT_W
S_ITEM_HEAD = 19

# outbox ring
OUT_CAP = 8192
OUT_W = 10
X_DELIVER, X_KIND, X_CID, X_TS, X_SIDE, X_PRICE, X_LOTS, X_LIQ, X_REASON, X_SEQ = range(10)
EV_ACCEPTED, EV_REJECTED, EV_CANCELLED, EV_FILL = 1, 2, 3, 4
REJ_NONE, REJ_INVALID, REJ_DUPLICATE, REJ_NO_BOOK, REJ_POST_ONLY = 0, 1, 2, 3, 4
LIQ_MAKER, LIQ_TAKER = 0, 1
I_OUT = I_ITEMS + ITEMS
SST_SIZE = I_OUT + OUT_CAP * OUT_W

# ssf
SF_POWER, SF_MAKER, SF_TAKER, SF_UNIT = range(4)
SF_AHEAD = 8
SF_OUT_FEE = SF_AHEAD + MAX_ORD
SSF_SIZE = SF_OUT_FEE + OUT_CAP

LAT_ENTRY, LAT_CANCEL, LAT_FEED = 0, 1, 2
EPS = 1e-9


# --- helpers ------------------------------------------------------------------------


@_jit
def _lat(sst: np.ndarray, lat: np.ndarray, k: int) -> int:
    c: int = sst[S_LAT_CONST + k]
    if c >= 0:
        return c
    p = sst[S_LAT_POS + k]
    if p >= sst[S_LAT_LEN + k]:
        sst[S_OVERFLOW] = 1
        return 0
    sst[S_LAT_POS + k] = p + 1
    v: int = lat[k, p]
    return v


@_jit
def size_at(ist: np.ndarray, side: int, price: int) -> int:
    """Displayed lots at ``price`` on side 0 (bids) or 1 (asks) of the core's book."""
    key = -price if side == 0 else price
    base = K.I_BOOK + side * 2 * K.BOOK_CAP
    lo, hi = 0, ist[side]
    while lo < hi:
        m = (lo + hi) >> 1
        if ist[base + 2 * m] < key:
            lo = m + 1
        else:
            hi = m
    if lo < ist[side] and ist[base + 2 * lo] == key:
        q: int = ist[base + 2 * lo + 1]
        return q
    return 0


@_jit
def _emit(
    sst: np.ndarray,
    ssf: np.ndarray,
    lat: np.ndarray,
    kind: int,
    cid: int,
    ts: int,
    side: int,
    price: int,
    lots: int,
    liq: int,
    reason: int,
    fee: float,
) -> None:
    deliver = ts + _lat(sst, lat, LAT_FEED)
    if deliver < sst[S_LAST_DELIVER]:
        deliver = sst[S_LAST_DELIVER]
    sst[S_LAST_DELIVER] = deliver
    tail = sst[S_OUT_TAIL]
    if tail - sst[S_OUT_HEAD] >= OUT_CAP:
        sst[S_OVERFLOW] = 1
        return
    r = tail % OUT_CAP
    o = I_OUT + r * OUT_W
    sst[o + X_DELIVER] = deliver
    sst[o + X_KIND] = kind
    sst[o + X_CID] = cid
    sst[o + X_TS] = ts
    sst[o + X_SIDE] = side
    sst[o + X_PRICE] = price
    sst[o + X_LOTS] = lots
    sst[o + X_LIQ] = liq
    sst[o + X_REASON] = reason
    sst[o + X_SEQ] = 0
    if kind == EV_FILL:
        sst[o + X_SEQ] = sst[S_FILL_SEQ]
    ssf[SF_OUT_FEE + r] = fee
    sst[S_OUT_TAIL] = tail + 1


@_jit
def _reject(sst: np.ndarray, ssf: np.ndarray, lat: np.ndarray, cid: int, t: int, why: int) -> None:
    sst[S_REJECTS] += 1
    _emit(sst, ssf, lat, EV_REJECTED, cid, t, 0, 0, 0, 0, why, 0.0)


@_jit
def _record_fill(
    sst: np.ndarray,
    ssf: np.ndarray,
    lat: np.ndarray,
    cid: int,
    side: int,
    price: int,
    lots: int,
    t: int,
    liq: int,
) -> None:
    rate = ssf[SF_TAKER] if liq == LIQ_TAKER else ssf[SF_MAKER]
    fee = price * lots * ssf[SF_UNIT] * rate
    sst[S_POSITION] += side * lots
    sst[S_FILL_SEQ] += 1
    sst[S_FILLS] += 1
    sst[S_FILL_LOTS] += lots
    _emit(sst, ssf, lat, EV_FILL, cid, t, side, price, lots, liq, 0, fee)


@_jit
def find(sst: np.ndarray, cid: int) -> int:
    """The slot of the open or in-flight order ``cid`` (what ``SimVenue`` keeps in
    ``orders``), or -1."""
    for s in range(sst[S_ORD_HW]):
        o = I_ORD + s * ORD_W
        st = sst[o + O_STATE]
        if OS_FREE < st < OS_DONE and sst[o + O_REJ] == 0 and sst[o + O_CID] == cid:
            return s
    return -1


@_jit
def _free_slot(sst: np.ndarray) -> int:
    hw: int = sst[S_ORD_HW]
    for s in range(hw):
        if sst[I_ORD + s * ORD_W + O_STATE] == OS_FREE:
            return s
    if hw < MAX_ORD:
        sst[S_ORD_HW] = hw + 1
        return hw
    sst[S_OVERFLOW] = 1
    return -1


@_jit
def _done(sst: np.ndarray, s: int) -> None:
    o = I_ORD + s * ORD_W
    sst[o + O_STATE] = OS_FREE if sst[o + O_INFLIGHT] == 0 else OS_DONE


@_jit
def _unlink(sst: np.ndarray, s: int) -> None:
    li = sst[I_ORD + s * ORD_W + O_LVL]
    b = I_LVL + li * LVL_W
    n = sst[b + L_N]
    j = 0
    while j < n and sst[b + L_N + 1 + j] != s:
        j += 1
    for k in range(j, n - 1):
        sst[b + L_N + 1 + k] = sst[b + L_N + 2 + k]
    sst[b + L_N] = n - 1
    if n - 1 == 0:
        sst[b + L_ACTIVE] = 0
        sst[S_NLVL + sst[b + L_SIDE]] -= 1


@_jit
def _level_of(sst: np.ndarray, side: int, price: int) -> int:
    for li in range(sst[S_LVL_HW]):
        b = I_LVL + li * LVL_W
        if sst[b + L_ACTIVE] and sst[b + L_SIDE] == side and sst[b + L_PRICE] == price:
            return li
    return -1


@_jit
def _fill_order(
    sst: np.ndarray, ssf: np.ndarray, lat: np.ndarray, s: int, lots: int, t: int
) -> None:
    o = I_ORD + s * ORD_W
    if lots > sst[o + O_REM]:
        lots = sst[o + O_REM]
    if lots <= 0:
        return
    sst[o + O_REM] -= lots
    cid, side, price = sst[o + O_CID], sst[o + O_SIDE], sst[o + O_PRICE]
    if sst[o + O_REM] == 0:
        _unlink(sst, s)
        _done(sst, s)
    _record_fill(sst, ssf, lat, cid, side, price, lots, t, LIQ_MAKER)


# --- actions --------------------------------------------------------------------------


@_jit
def _push(
    sst: np.ndarray, due: int, kind: int, first: int, n: int, side: int, size: int, limit: int
) -> None:
    na = sst[S_NACT]
    if na >= MAX_ACT:
        sst[S_OVERFLOW] = 1
        return
    sst[S_ACT_SEQ] += 1
    a = I_ACT + na * ACT_W
    sst[a + A_DUE] = due
    sst[a + A_SEQ] = sst[S_ACT_SEQ]
    sst[a + A_KIND] = kind
    sst[a + A_FIRST] = first
    sst[a + A_N] = n
    sst[a + A_SIDE] = side
    sst[a + A_SIZE] = size
    sst[a + A_LIMIT] = limit
    sst[S_NACT] = na + 1


@_jit
def _item(sst: np.ndarray, v: int) -> None:
    h = sst[S_ITEM_HEAD]
    sst[I_ITEMS + h % ITEMS] = v
    sst[S_ITEM_HEAD] = h + 1


@_jit
def next_action_due(sst: np.ndarray) -> int:
    """Due time of the next action in flight (-1: none)."""
    best = -1
    for j in range(sst[S_NACT]):
        d = sst[I_ACT + j * ACT_W + A_DUE]
        if best < 0 or d < best:
            best = d
    return best


@_jit
def next_due(sst: np.ndarray) -> int:
    """``SimVenue.next_due_ns``: the next action or undelivered event (-1: none)."""
    t = next_action_due(sst)
    if sst[S_OUT_TAIL] > sst[S_OUT_HEAD]:
        d = sst[I_OUT + (sst[S_OUT_HEAD] % OUT_CAP) * OUT_W + X_DELIVER]
        if t < 0 or d < t:
            t = d
    return t


@_jit_inline
def run_due(sst: np.ndarray, ssf: np.ndarray, ist: np.ndarray, lat: np.ndarray, now: int) -> None:
    """Run every action due at or before ``now``, in (due, sequence) order."""
    while sst[S_NACT] > 0:
        bj = -1
        for j in range(sst[S_NACT]):
            a = I_ACT + j * ACT_W
            if sst[a + A_DUE] <= now and (
                bj < 0
                or sst[a + A_DUE] < sst[I_ACT + bj * ACT_W + A_DUE]
                or (
                    sst[a + A_DUE] == sst[I_ACT + bj * ACT_W + A_DUE]
                    and sst[a + A_SEQ] < sst[I_ACT + bj * ACT_W + A_SEQ]
                )
            ):
                bj = j
        if bj < 0:
            return
        a = I_ACT + bj * ACT_W
        due, kind, first, n = sst[a + A_DUE], sst[a + A_KIND], sst[a + A_FIRST], sst[a + A_N]
        side, size, limit = sst[a + A_SIDE], sst[a + A_SIZE], sst[a + A_LIMIT]
        last = I_ACT + (sst[S_NACT] - 1) * ACT_W
        for c in range(ACT_W):
            sst[a + c] = sst[last + c]
        sst[S_NACT] -= 1
        if kind == ACT_PLACE:
            for j in range(n):
                _arrive(sst, ssf, ist, lat, sst[I_ITEMS + (first + j) % ITEMS], due)
        elif kind == ACT_CANCEL:
            for j in range(n):
                _cancel(sst, ssf, lat, sst[I_ITEMS + (first + j) % ITEMS], due)
        else:
            _sweep(sst, ssf, ist, lat, side, size, limit, due, 0)


@_jit
def _arrive(
    sst: np.ndarray, ssf: np.ndarray, ist: np.ndarray, lat: np.ndarray, s: int, t: int
) -> None:
    o = I_ORD + s * ORD_W
    sst[o + O_INFLIGHT] = 0
    cid = sst[o + O_CID]
    if sst[o + O_REJ] != 0:
        sst[o + O_STATE] = OS_FREE
        _reject(sst, ssf, lat, cid, t, sst[o + O_REJ])
        return
    if sst[o + O_STATE] != OS_NEW:
        if sst[o + O_STATE] == OS_DONE:
            sst[o + O_STATE] = OS_FREE  # cancelled while in flight
        return
    if sst[S_SYNCED] == 0:
        sst[o + O_STATE] = OS_FREE
        _reject(sst, ssf, lat, cid, t, REJ_NO_BOOK)
        return
    side, price = sst[o + O_SIDE], sst[o + O_PRICE]
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    crosses = (ba > 0 and price >= ba) if side > 0 else (bb > 0 and price <= bb)
    if crosses and sst[o + O_POST] != 0:
        sst[o + O_STATE] = OS_FREE
        _reject(sst, ssf, lat, cid, t, REJ_POST_ONLY)
        return
    _emit(sst, ssf, lat, EV_ACCEPTED, cid, t, 0, 0, 0, 0, 0, 0.0)
    if crosses:
        rem = sst[o + O_REM]
        sst[o + O_STATE] = OS_FREE
        _sweep(sst, ssf, ist, lat, side, rem, price, t, cid)
        return
    sst[o + O_STATE] = OS_OPEN
    bside = 0 if side > 0 else 1
    li = _level_of(sst, bside, price)
    if li < 0:
        hw = sst[S_LVL_HW]
        for j in range(hw):
            if sst[I_LVL + j * LVL_W + L_ACTIVE] == 0:
                li = j
                break
        if li < 0:
            if hw >= MAX_LVL:
                sst[S_OVERFLOW] = 1
                return
            li = hw
            sst[S_LVL_HW] = hw + 1
        b = I_LVL + li * LVL_W
        sst[b + L_ACTIVE] = 1
        sst[S_NLVL + bside] += 1
        sst[b + L_SIDE] = bside
        sst[b + L_PRICE] = price
        sst[b + L_QTY] = size_at(ist, bside, price)
        sst[b + L_TRADED] = 0
        sst[b + L_N] = 0
    b = I_LVL + li * LVL_W
    ssf[SF_AHEAD + s] = float(sst[b + L_QTY])
    n = sst[b + L_N]
    if n >= LVL_CAP:
        sst[S_OVERFLOW] = 1
        return
    sst[b + L_N + 1 + n] = s
    sst[b + L_N] = n + 1
    sst[o + O_LVL] = li


@_jit
def _cancel(sst: np.ndarray, ssf: np.ndarray, lat: np.ndarray, cid: int, t: int) -> None:
    s = find(sst, cid)
    if s < 0:
        sst[S_CANCEL_MISSES] += 1
        return
    o = I_ORD + s * ORD_W
    if sst[o + O_STATE] == OS_OPEN:
        _unlink(sst, s)
    _done(sst, s)
    _emit(sst, ssf, lat, EV_CANCELLED, cid, t, 0, 0, 0, 0, 0, 0.0)


@_jit
def _sweep(
    sst: np.ndarray,
    ssf: np.ndarray,
    ist: np.ndarray,
    lat: np.ndarray,
    side: int,
    size: int,
    limit: int,
    t: int,
    cid: int,
) -> None:
    left = size
    if sst[S_SYNCED]:
        bside = 1 if side > 0 else 0  # a buy takes the asks
        for i in range(ist[bside]):
            p, q0 = K.level(ist, bside, i)
            if (side > 0 and p > limit) or (side < 0 and p < limit):
                break
            q = left if left < q0 else q0
            if q > 0:
                _record_fill(sst, ssf, lat, cid, side, p, q, t, LIQ_TAKER)
                left -= q
            if left <= 0:
                break
    if left > 0:
        _emit(sst, ssf, lat, EV_CANCELLED, cid, t, 0, 0, 0, 0, 0, 0.0)


# --- the Venue's calls ------------------------------------------------------------------


@_jit
def requote(
    sst: np.ndarray, ssf: np.ndarray, ist: np.ndarray, lat: np.ndarray, now: int, req: np.ndarray
) -> None:
    """One batch: ``req[0]`` cancels (client ids from ``req[1]``), then a count of
    places and rows ``(client id, side, price, lots, post_only)``."""
    run_due(sst, ssf, ist, lat, now)
    nc = req[0]
    if nc > 0:
        sst[S_CANCELS_SENT] += nc
        first = sst[S_ITEM_HEAD]
        for j in range(nc):
            cid = req[1 + j]
            s = find(sst, cid)
            if s >= 0:
                sst[I_ORD + s * ORD_W + O_CXL] = 1
            _item(sst, cid)
        _push(sst, now + _lat(sst, lat, LAT_CANCEL), ACT_CANCEL, first, nc, 0, 0, 0)
    p0 = 1 + nc
    np_ = req[p0]
    if np_ > 0:
        sst[S_ORDERS_SENT] += np_
        first = sst[S_ITEM_HEAD]
        for j in range(np_):
            r = p0 + 1 + 5 * j
            cid, side, price, lots = req[r], req[r + 1], req[r + 2], req[r + 3]
            rej = REJ_NONE
            if price <= 0 or lots <= 0:
                rej = REJ_INVALID
            elif find(sst, cid) >= 0:
                rej = REJ_DUPLICATE
            s = _free_slot(sst)
            if s < 0:
                return
            o = I_ORD + s * ORD_W
            sst[o + O_CID] = cid
            sst[o + O_SIDE] = side
            sst[o + O_PRICE] = price
            sst[o + O_SIZE] = lots
            sst[o + O_REM] = lots
            sst[o + O_STATE] = OS_NEW
            sst[o + O_CXL] = 0
            sst[o + O_REJ] = rej
            sst[o + O_CREATED] = now
            sst[o + O_LVL] = -1
            sst[o + O_INFLIGHT] = 1
            sst[o + O_POST] = req[r + 4]
            ssf[SF_AHEAD + s] = 0.0
            _item(sst, s)
        _push(sst, now + _lat(sst, lat, LAT_ENTRY), ACT_PLACE, first, np_, 0, 0, 0)


@_jit
def take(
    sst: np.ndarray,
    ssf: np.ndarray,
    ist: np.ndarray,
    lat: np.ndarray,
    now: int,
    side: int,
    size: int,
    limit: int,
) -> None:
    """An IOC: after the entry latency it walks the book up to ``limit``."""
    run_due(sst, ssf, ist, lat, now)
    sst[S_TAKES] += 1
    _push(sst, now + _lat(sst, lat, LAT_ENTRY), ACT_TAKE, 0, 0, side, size, limit)


@_jit_inline
def poll(sst: np.ndarray, now: int, out: np.ndarray, fees: np.ndarray, ssf: np.ndarray) -> int:
    """Copy the outbox rows delivered by ``now`` into ``out`` (rows) and ``fees``;
    returns how many (at most ``out.shape[0]``). Run :func:`run_due` first."""
    n = 0
    while sst[S_OUT_TAIL] > sst[S_OUT_HEAD] and n < out.shape[0]:
        r = sst[S_OUT_HEAD] % OUT_CAP
        o = I_OUT + r * OUT_W
        if sst[o + X_DELIVER] > now:
            break
        for c in range(OUT_W):
            out[n, c] = sst[o + c]
        fees[n] = ssf[SF_OUT_FEE + r]
        sst[S_OUT_HEAD] += 1
        n += 1
    return n


# --- the reference market -----------------------------------------------------------


@_jit
def _sorted_levels(sst: np.ndarray, bside: int, lo: int, hi: int, desc: bool) -> np.ndarray:
    """Our level slots of one side priced in ``[lo, hi]``, by price (descending if asked)."""
    idx = np.empty(MAX_LVL, dtype=np.int64)
    n = 0
    for li in range(sst[S_LVL_HW]):
        b = I_LVL + li * LVL_W
        if sst[b + L_ACTIVE] and sst[b + L_SIDE] == bside:
            p = sst[b + L_PRICE]
            if lo <= p <= hi:
                idx[n] = li
                n += 1
    out = idx[:n]
    for i in range(1, n):  # insertion sort: a handful of levels
        v = out[i]
        pv = sst[I_LVL + v * LVL_W + L_PRICE]
        j = i - 1
        while j >= 0:
            pj = sst[I_LVL + out[j] * LVL_W + L_PRICE]
            if (pj < pv) if desc else (pj > pv):
                out[j + 1] = out[j]
                j -= 1
            else:
                break
        out[j + 1] = v
    return out


@_jit
def _has_side(sst: np.ndarray, bside: int) -> bool:
    return bool(sst[S_NLVL + bside] > 0)


@_jit
def _level_orders(sst: np.ndarray, li: int) -> np.ndarray:
    b = I_LVL + li * LVL_W
    n = sst[b + L_N]
    out = np.empty(n, dtype=np.int64)
    for j in range(n):
        out[j] = sst[b + L_N + 1 + j]
    return out


@_jit
def _fill_level(sst: np.ndarray, ssf: np.ndarray, lat: np.ndarray, li: int, t: int) -> None:
    for s in _level_orders(sst, li):
        _fill_order(sst, ssf, lat, s, sst[I_ORD + s * ORD_W + O_REM], t)


@_jit
def _fill_through(
    sst: np.ndarray, ssf: np.ndarray, lat: np.ndarray, li: int, t: int, budget: int
) -> int:
    if budget < 0:
        _fill_level(sst, ssf, lat, li, t)
        return budget
    for s in _level_orders(sst, li):
        if budget <= 0:
            break
        rem = sst[I_ORD + s * ORD_W + O_REM]
        lots = rem if rem < budget else budget
        budget -= lots
        _fill_order(sst, ssf, lat, s, lots, t)
    return budget


@_jit
def _trade_at_level(
    sst: np.ndarray,
    ssf: np.ndarray,
    lat: np.ndarray,
    li: int,
    v: int,
    t: int,
    late: bool,
    budget: int,
) -> None:
    b = I_LVL + li * LVL_W
    if not late:
        sst[b + L_TRADED] += v
    ours_ahead = 0
    for s in _level_orders(sst, li):
        o = I_ORD + s * ORD_W
        before = sst[o + O_REM]
        ahead = ssf[SF_AHEAD + s]
        excess = v - ahead - ours_ahead
        ssf[SF_AHEAD + s] = ahead - v if ahead > v else 0.0
        if excess >= 1.0 - EPS:
            lots = int(excess + EPS)
            if budget >= 0:
                lots = min(lots, budget, sst[o + O_REM])
                budget -= lots
            _fill_order(sst, ssf, lat, s, lots, t)
        ours_ahead += before


@_jit_inline
def on_trade(
    sst: np.ndarray,
    ssf: np.ndarray,
    lat: np.ndarray,
    t: int,
    p: int,
    v: int,
    buyer_is_maker: bool,
    exch_ms: int,
) -> None:
    """One reference trade against our resting orders (``SimVenue._on_trade``).
    Run :func:`run_due` for ``t`` first."""
    has_b, has_a = _has_side(sst, 0), _has_side(sst, 1)
    if not has_b and not has_a:
        return
    late = exch_ms != 0 and sst[S_LAST_DIFF_MS] != 0 and exch_ms <= sst[S_LAST_DIFF_MS]
    printed = sst[S_PRINTED] != 0
    big = 1 << 62
    budget = v if printed else -1
    if buyer_is_maker:
        if has_b:
            for li in _sorted_levels(sst, 0, p, big, True):
                if sst[I_LVL + li * LVL_W + L_PRICE] > p:
                    budget = _fill_through(sst, ssf, lat, li, t, budget)
                else:
                    _trade_at_level(sst, ssf, lat, li, v, t, late, budget)
        if has_a:
            budget = v if printed else -1
            for li in _sorted_levels(sst, 1, -big, p, False):
                budget = _fill_through(sst, ssf, lat, li, t, budget)
    else:
        if has_a:
            for li in _sorted_levels(sst, 1, -big, p, False):
                if sst[I_LVL + li * LVL_W + L_PRICE] < p:
                    budget = _fill_through(sst, ssf, lat, li, t, budget)
                else:
                    _trade_at_level(sst, ssf, lat, li, v, t, late, budget)
        if has_b:
            budget = v if printed else -1
            for li in _sorted_levels(sst, 0, p, big, True):
                budget = _fill_through(sst, ssf, lat, li, t, budget)


@_jit
def _after_cancel(ahead: float, prev: int, cancelled: int, n: float) -> float:
    if ahead <= 0.0:
        return 0.0
    behind = prev - ahead
    if behind < 0.0:
        behind = 0.0
    share = (ahead / prev) ** n if prev > 0 else 1.0
    est = ahead - share * cancelled
    spill = behind - (1.0 - share) * cancelled
    if spill < 0.0:
        est += spill
    return est if est > 0.0 else 0.0


@_jit_inline
def on_depth(
    sst: np.ndarray, ssf: np.ndarray, ist: np.ndarray, lat: np.ndarray, t: int, diff_exch_ms: int
) -> None:
    """The reference book (``ist``) changed: requeue and fill our orders
    (``SimVenue._book_moved``); ``diff_exch_ms``: a diff's exchange time (0: none)."""
    if diff_exch_ms:
        sst[S_LAST_DIFF_MS] = diff_exch_ms
    has_b, has_a = _has_side(sst, 0), _has_side(sst, 1)
    if not has_b and not has_a:
        return
    n = ssf[SF_POWER]
    for li in range(sst[S_LVL_HW]):
        b = I_LVL + li * LVL_W
        if not sst[b + L_ACTIVE]:
            continue
        new = size_at(ist, sst[b + L_SIDE], sst[b + L_PRICE])
        prev = sst[b + L_QTY]
        if new != prev:
            if new < prev:
                cancelled = prev - new - sst[b + L_TRADED]
                if cancelled > 0:
                    for j in range(sst[b + L_N]):
                        s = sst[b + L_N + 1 + j]
                        ssf[SF_AHEAD + s] = _after_cancel(ssf[SF_AHEAD + s], prev, cancelled, n)
            for j in range(sst[b + L_N]):
                s = sst[b + L_N + 1 + j]
                if ssf[SF_AHEAD + s] > new:
                    ssf[SF_AHEAD + s] = float(new)
            sst[b + L_QTY] = new
        sst[b + L_TRADED] = 0
    bb, ba = K.best(ist, 0), K.best(ist, 1)
    big = 1 << 62
    if has_b and ba:
        for li in _sorted_levels(sst, 0, ba, big, True):
            _fill_level(sst, ssf, lat, li, t)
    if has_a and bb:
        for li in _sorted_levels(sst, 1, -big, bb, False):
            _fill_level(sst, ssf, lat, li, t)


@_jit
def resync(sst: np.ndarray) -> None:
    """A new replay pass or re-sync: the book waits for a snapshot."""
    sst[S_LAST_DIFF_MS] = 0
    sst[S_SYNCED] = 0


# --- Python face ---------------------------------------------------------------------


class NativeSim:
    """One market's compiled simulator, configured like ``SimVenue`` (``settings``:
    a :class:`~flashmm.venues.sim.SimSettings`; ``unit_usdc``: the spec's USDC per
    tick·lot). ``ist`` is the reference book it reads (a core's, or its own)."""

    LAT_ROWS = 4096

    def __init__(
        self,
        settings: object,
        unit_usdc: float,
        ist: np.ndarray | None = None,
        market: str = "",
    ) -> None:
        import random

        from flashmm.venues.sim import LatencySampler, SimSettings

        s = settings if isinstance(settings, SimSettings) else SimSettings()
        self.sst = np.zeros(SST_SIZE, dtype=np.int64)
        self.ssf = np.zeros(SSF_SIZE, dtype=np.float64)
        self.ist = ist if ist is not None else np.zeros(K.IST_SIZE, dtype=np.int64)
        self.lat = np.zeros((3, self.LAT_ROWS), dtype=np.int64)
        self.ssf[SF_POWER] = s.queue_power
        self.ssf[SF_MAKER] = s.maker_fee_bps / 1e4
        self.ssf[SF_TAKER] = s.taker_fee_bps / 1e4
        self.ssf[SF_UNIT] = unit_usdc
        self.sst[S_PRINTED] = 1 if s.fill_model == "printed_size" else 0
        specs = (s.entry_latency_ms, s.cancel_latency_ms, s.feed_latency_ms)
        names = ("entry", "cancel", "feed")
        self.samplers = [
            LatencySampler(spec, random.Random(f"{s.seed}:{name}"))
            for spec, name in zip(specs, names, strict=True)
        ]
        for k, smp in enumerate(self.samplers):
            const = getattr(smp, "_const_ns", None)
            self.sst[S_LAT_CONST + k] = const if const is not None else -1
        self.refill()
        self.out = np.zeros((256, OUT_W), dtype=np.int64)
        self.fees = np.zeros(256, dtype=np.float64)
        self.market = market
        self.req = np.zeros(1 + 2 * MAX_ORD * 6, dtype=np.int64)

    def refill(self) -> None:
        """Top up the latency buffers (draws in the samplers' own order)."""
        sst, lat = self.sst, self.lat
        for k, smp in enumerate(self.samplers):
            if sst[S_LAT_CONST + k] >= 0:
                continue
            pos, n = int(sst[S_LAT_POS + k]), int(sst[S_LAT_LEN + k])
            left = n - pos
            lat[k, :left] = lat[k, pos:n]
            for j in range(left, self.LAT_ROWS):
                lat[k, j] = smp.sample_ns()
            sst[S_LAT_POS + k] = 0
            sst[S_LAT_LEN + k] = self.LAT_ROWS

    def needs_refill(self) -> bool:
        sst = self.sst
        return any(
            sst[S_LAT_CONST + k] < 0 and sst[S_LAT_LEN + k] - sst[S_LAT_POS + k] < 512
            for k in range(3)
        )

    # --- the calls of SimVenue, for one market (tests, tools) -------------------------

    def _ready(self) -> None:
        if self.needs_refill():
            self.refill()

    def requote(self, cancels: Sequence[int], places: Sequence[OrderRequest], now: int) -> None:
        self._ready()
        req = self.req
        req[0] = len(cancels)
        for j, cid in enumerate(cancels):
            req[1 + j] = cid
        p0 = 1 + len(cancels)
        req[p0] = len(places)
        for j, r in enumerate(places):
            o = p0 + 1 + 5 * j
            req[o : o + 5] = (r.client_id, int(r.side), r.price_ticks, r.size_lots, r.post_only)
        requote(self.sst, self.ssf, self.ist, self.lat, now, req)

    def take(self, side: int, size: int, limit: int, now: int) -> None:
        self._ready()
        take(self.sst, self.ssf, self.ist, self.lat, now, int(side), size, limit)

    def run_due(self, now: int) -> None:
        self._ready()
        run_due(self.sst, self.ssf, self.ist, self.lat, now)

    def on_trade(self, now: int, price: int, lots: int, buyer_is_maker: bool, exch_ms: int) -> None:
        self._ready()
        on_trade(self.sst, self.ssf, self.lat, now, price, lots, buyer_is_maker, exch_ms)

    def on_depth(self, now: int, diff_exch_ms: int) -> None:
        self._ready()
        on_depth(self.sst, self.ssf, self.ist, self.lat, now, diff_exch_ms)

    def set_synced(self, synced: bool) -> None:
        self.sst[S_SYNCED] = 1 if synced else 0

    def poll(self, now: int) -> list[VenueEvent]:
        """Run what is due, then the venue events delivered by ``now`` (as SimVenue's)."""
        from flashmm.venues.sim import (
            REJECT_DUPLICATE,
            REJECT_INVALID,
            REJECT_NO_BOOK,
            REJECT_POST_ONLY,
        )

        reasons = {
            REJ_INVALID: REJECT_INVALID,
            REJ_DUPLICATE: REJECT_DUPLICATE,
            REJ_NO_BOOK: REJECT_NO_BOOK,
            REJ_POST_ONLY: REJECT_POST_ONLY,
        }
        self.run_due(now)
        evs: list[VenueEvent] = []
        mkt = self.market
        while True:
            n = poll(self.sst, now, self.out, self.fees, self.ssf)
            for j in range(n):
                r = self.out[j].tolist()
                kind, cid, ts = r[X_KIND], r[X_CID], r[X_TS]
                if kind == EV_FILL:
                    evs.append(
                        Fill(mkt, cid, Side(r[X_SIDE]), r[X_PRICE], r[X_LOTS],
                             float(self.fees[j]), Liquidity(r[X_LIQ]), ts, f"sim-{r[X_SEQ]}")
                    )  # fmt: skip
                elif kind == EV_ACCEPTED:
                    evs.append(OrderAccepted(mkt, cid, ts))
                elif kind == EV_CANCELLED:
                    evs.append(OrderCancelled(mkt, cid, ts))
                else:
                    evs.append(OrderRejected(mkt, cid, ts, reasons[r[X_REASON]]))
            if n < self.out.shape[0]:
                return evs

    def queue_ahead(self, cid: int) -> float | None:
        """Displayed size ahead of a live order (None if it is not live)."""
        s = find(self.sst, cid)
        if s < 0 or self.sst[I_ORD + s * ORD_W + O_STATE] != OS_OPEN:
            return None
        return float(self.ssf[SF_AHEAD + s])

    def counters(self) -> dict[str, int]:
        """The venue's counters, named as ``SimCounters``."""
        s = self.sst
        names = ("orders_sent", "cancels_sent", "takes", "rejects", "fills", "fill_lots",
                 "cancel_misses")  # fmt: skip
        idx = (S_ORDERS_SENT, S_CANCELS_SENT, S_TAKES, S_REJECTS, S_FILLS, S_FILL_LOTS,
               S_CANCEL_MISSES)  # fmt: skip
        return {k: int(s[i]) for k, i in zip(names, idx, strict=True)}

    @property
    def position(self) -> int:
        return int(self.sst[S_POSITION])

    @property
    def overflow(self) -> bool:
        return bool(self.sst[S_OVERFLOW])


def warm() -> float:
    """Compile (or load from the on-disk cache) the simulator's kernels; seconds taken."""
    import time

    from flashmm.native import levels_array
    from flashmm.venues.sim import SimSettings

    t0 = time.perf_counter()
    sim = NativeSim(SimSettings(entry_latency_ms=0, cancel_latency_ms=0, feed_latency_ms=0), 1e-5)
    K.apply_levels(sim.ist, levels_array([(100, 5)], [(102, 4)]), True)
    sim.set_synced(True)
    sim.requote(
        [], [OrderRequest("", 1, Side.BUY, 100, 2), OrderRequest("", 2, Side.SELL, 102, 2)], 1
    )
    sim.run_due(1)
    sim.on_trade(2, 100, 9, True, 0)
    sim.on_depth(3, 0)
    sim.take(1, 1, 102, 4)
    sim.requote([2], [], 5)
    sim.poll(6)
    next_due(sim.sst)
    return time.perf_counter() - t0
