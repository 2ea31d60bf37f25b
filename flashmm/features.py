"""Order-book and trade features for short-horizon mid-price prediction.

One :class:`OnlineFeatures` per market is updated incrementally by the
engine: :meth:`OnlineFeatures.on_book` after every book change,
:meth:`OnlineFeatures.on_trade` for every public trade, and
:meth:`OnlineFeatures.vector` whenever a prediction is wanted. The vector
is a float32 array of ``len(FEATURE_NAMES) == 64`` values, in the order of
:data:`FEATURE_NAMES` (the one place names and order are defined; models
store the list and are rejected when it differs).

Design:

- Tick- and price-level-free: every price is in basis points of the mid
  or in multiples of the (current or 60 s average) spread, sizes are ratios
  to the market's own slowly averaged depth, counts are rates per second,
  imbalances are shares. Nothing reads the tick size: scaling a recording's
  prices (or its tick) by 10x or 0.1x gives the same vectors (a test checks
  it), so one model can be trained on and used for markets of different
  ticks and price levels.
- Windows over time are exponentially decayed sums with time constant
  ``tau`` (``ofi_l1_5s`` is the order-flow imbalance decayed with
  tau = 5 s); returns use exact look-backs on the mid history. Everything
  is keyed on event timestamps (``ts_ns``), never the wall clock, so a
  backtest and the batch builder give the same numbers as live.
- A book change below the best 10 levels changes no book-shape value, no
  order-flow term and not the mid: :meth:`on_book` then only advances the
  time averages and the book time (``skip_unchanged``; results are
  bit-identical to recomputing, a test checks it on recorded data).
- :meth:`vector` does not change any state except dropping history that no
  later call can need (time only moves forward), so calling it more or less
  often does not change the result.

:func:`flashmm.predict.batch.batch_features` drives the same online code over a
recording and samples it on a regular time grid; it is what training and
evaluation use.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from flashmm.book import OrderBook
from flashmm.marketdata import Trade

# (name, description). The order is the model's input order.
FEATURES: tuple[tuple[str, str], ...] = (
    # --- book shape -------------------------------------------------------
    ("imb_l1_ema_1s", "imb_l1 averaged over time, tau 1 s"),
    ("spread_bps", "spread in basis points of the mid"),
    ("micro_offset_spread_ema_30s", "micro_offset_spread averaged over time, tau 30 s"),
    ("micro_offset_bps", "L1 microprice minus mid, bps"),
    ("micro_offset_spread", "L1 microprice minus mid, as a fraction of the spread (-0.5..0.5)"),
    ("micro3_offset_spread", "3-level size-weighted microprice minus mid, in spreads"),
    ("micro5_offset_spread", "5-level size-weighted microprice minus mid, in spreads"),
    ("imb_l1", "(bid - ask) / (bid + ask) size at the best level"),
    ("imb_l3", "size imbalance over the best 3 levels per side"),
    ("imb_l5", "size imbalance over the best 5 levels per side"),
    ("imb_l10", "size imbalance over the best 10 levels per side"),
    ("imb_w5", "size imbalance over 5 levels, level i weighted 1/i"),
    ("imb_l1_ema_5s", "imb_l1 averaged over time, tau 5 s"),
    ("imb_l5_ema_30s", "imb_l5 averaged over time, tau 30 s"),
    ("micro_offset_spread_ema_5s", "micro_offset_spread averaged over time, tau 5 s"),
    ("log_ratio_l1", "log(best bid size / best ask size)"),
    ("bid_gap_spread", "distance from bid level 1 to level 2, in spreads"),
    ("ask_gap_spread", "distance from ask level 1 to level 2, in spreads"),
    ("bid_span_spread", "distance from the mid to the 10th bid level, in spreads"),
    ("ask_span_spread", "distance from the mid to the 10th ask level, in spreads"),
    ("bid_slope", "log of bid depth density (lots per spread over 10 levels) / average L1 size"),
    ("ask_slope", "log of ask depth density (lots per spread over 10 levels) / average L1 size"),
    ("slope_ratio", "bid_slope - ask_slope (log ratio of the two densities)"),
    ("bid_l1_rel", "log(best bid size / mean bid size of the best 5 levels)"),
    ("ask_l1_rel", "log(best ask size / mean ask size of the best 5 levels)"),
    ("l1_depth_rel", "log(mean best-level size / its 300 s average)"),
    ("depth10_rel", "log(mean 10-level depth / its 300 s average)"),
    ("spread_rel", "spread / its 60 s average"),
    # --- order flow and trades -------------------------------------------
    ("ofi_l1_1s", "best-level order-flow imbalance (Cont et al.), tau 1 s, / average L1 size"),
    ("ofi_l1_5s", "best-level order-flow imbalance, tau 5 s, / average L1 size"),
    ("ofi_l1_30s", "best-level order-flow imbalance, tau 30 s, / average L1 size"),
    ("ofi_l1_120s", "best-level order-flow imbalance, tau 120 s, / average L1 size"),
    ("ofi_l5_5s", "order-flow imbalance summed over 5 levels, tau 5 s, / average 5-level depth"),
    ("ofi_l5_30s", "order-flow imbalance summed over 5 levels, tau 30 s, / average 5-level depth"),
    ("trade_imb_1s", "(buy - sell) / total aggressor volume, tau 1 s"),
    ("trade_imb_5s", "(buy - sell) / total aggressor volume, tau 5 s"),
    ("trade_imb_30s", "(buy - sell) / total aggressor volume, tau 30 s"),
    ("trade_imb_120s", "(buy - sell) / total aggressor volume, tau 120 s"),
    ("trade_count_imb_30s", "(buy - sell) / total number of trades, tau 30 s"),
    ("trade_rate_5s", "log(1 + trades per second), tau 5 s"),
    ("trade_rate_30s", "log(1 + trades per second), tau 30 s"),
    ("trade_rate_120s", "log(1 + trades per second), tau 120 s"),
    ("trade_vol_5s", "log(1 + traded volume / average L1 size), tau 5 s"),
    ("trade_vol_30s", "log(1 + traded volume / average L1 size), tau 30 s"),
    ("trade_vol_120s", "log(1 + traded volume / average L1 size), tau 120 s"),
    ("vwap_30s_offset_spread", "trade VWAP (tau 30 s) minus mid, in average spreads"),
    ("last_trade_sign", "+1 buyer-initiated, -1 seller-initiated, 0 before any trade"),
    ("last_trade_offset_spread", "last trade price minus mid, in average spreads"),
    ("time_since_trade", "log(1 + seconds since the last trade)"),
    # --- returns and volatility ------------------------------------------
    ("ret_1s", "mid change over the last 1 s, in average spreads"),
    ("ret_5s", "mid change over the last 5 s, in average spreads"),
    ("ret_30s", "mid change over the last 30 s, in average spreads"),
    ("ret_120s", "mid change over the last 120 s, in average spreads"),
    ("ret_600s", "mid change over the last 600 s, in average spreads"),
    (
        "rv_5s",
        "realized volatility of mid changes (sqrt of decayed sum of squares), tau 5 s, "
        "in average spreads",
    ),
    ("rv_30s", "realized volatility of mid changes, tau 30 s, in average spreads"),
    ("rv_120s", "realized volatility of mid changes, tau 120 s, in average spreads"),
    ("rv_600s", "realized volatility of mid changes, tau 600 s, in average spreads"),
    ("mid_dev_ema_60s", "mid minus its 60 s time average, in average spreads"),
    ("mid_dev_ema_600s", "mid minus its 600 s time average, in average spreads"),
    ("mid_change_rate_120s", "log(1 + mid changes per minute), tau 120 s"),
    ("last_mid_change_sign", "+1/-1 sign of the last mid change, 0 before any"),
    ("time_since_mid_change", "log(1 + seconds since the mid last changed)"),
    ("time_since_book", "log(1 + seconds since the last book update)"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(n for n, _ in FEATURES)
FEATURE_DOCS: dict[str, str] = dict(FEATURES)
N_FEATURES = len(FEATURE_NAMES)
IDX: dict[str, int] = {n: i for i, n in enumerate(FEATURE_NAMES)}

_NS = 1e-9
# decayed-sum time constants (s) and channels
_TAUS = np.array([1.0, 5.0, 30.0, 120.0, 600.0])
_C_OFI1, _C_OFI5, _C_BUYV, _C_SELLV, _C_BUYN, _C_SELLN, _C_PQ, _C_R2, _C_MIDN = range(9)
_N_CH = 9
# time averages of piecewise-constant values, tau (s) per slot: imb_l1, imb_l5, micro
# offset, spread, mid (twice), L1 size, 5- and 10-level depth, imb_l1, micro offset
_EMA_TAUS = np.array([5.0, 30.0, 5.0, 60.0, 60.0, 600.0, 300.0, 300.0, 300.0, 1.0, 30.0])
_TAUS_L = _TAUS.tolist()
_EMA_TAUS_L = _EMA_TAUS.tolist()
_RET_WINDOWS_S = (1.0, 5.0, 30.0, 120.0, 600.0)
_LEVELS = 10


def _cumulative(levels: list[tuple[int, int]]) -> tuple[float, float, float, float, float, float]:
    """One side's cumulative sizes and size-weighted prices at 3, 5 and 10 levels (fewer
    levels: all of them), then the size over the best 5 with level i weighted 1/i:
    ``(size3, pq3, size5, pq5, size10, w5)``."""
    s = sp = w5 = 0.0
    c3 = pq3 = c5 = pq5 = 0.0
    for i, (p, q) in enumerate(levels):
        s += q
        sp += p * q
        if i < 5:
            w5 += q / (i + 1)
        if i == 2:
            c3, pq3 = s, sp
        if i == 4:
            c5, pq5 = s, sp
    if len(levels) < 3:
        c3, pq3 = s, sp
    if len(levels) < 5:
        c5, pq5 = s, sp
    return c3, pq3, c5, pq5, s, w5


class OnlineFeatures:
    """Incremental features of one market. Not thread-safe; one per market."""

    #: skip the book-shape work when the best 10 levels are those of the last update
    skip_unchanged = True

    def __init__(self, tick_size: float) -> None:
        if tick_size <= 0:
            raise ValueError(f"tick_size must be > 0, was {tick_size}")
        self.tick_size = float(tick_size)
        self._buf = np.zeros(N_FEATURES, dtype=np.float32)
        self._bk: list[float] = []  # book-shape values, recomputed per update
        self._inc = np.zeros(_N_CH, dtype=np.float64)
        self._tinc_buy = np.zeros(_N_CH, dtype=np.float64)
        self._tinc_buy[_C_BUYN] = 1.0
        self._tinc_sell = np.zeros(_N_CH, dtype=np.float64)
        self._tinc_sell[_C_SELLN] = 1.0
        self._S = np.zeros((len(_TAUS), _N_CH), dtype=np.float64)
        self._S_ts = 0
        self._E = np.zeros(len(_EMA_TAUS), dtype=np.float64)
        self._V = np.zeros(len(_EMA_TAUS), dtype=np.float64)
        self._E_ts = 0
        self.ready = False
        self.t0 = 0
        self.book_ts = 0
        self.mid2 = 0
        self._prev_bids: list[tuple[int, int]] = []
        self._prev_asks: list[tuple[int, int]] = []
        self.last_trade_ts = 0
        self.last_trade_px = 0
        self.last_trade_sign = 0
        self.last_mid_change_ts = 0
        self.last_mid_change_sign = 0
        self._mid_hist = [deque[tuple[int, int]]() for _ in _RET_WINDOWS_S]
        self._ret_win_ns = [int(w * 1e9) for w in _RET_WINDOWS_S]
        self.updates = 0
        self.skipped = 0  # book updates with the best 10 levels unchanged

    # --- state helpers --------------------------------------------------
    def _decay_to(self, ts_ns: int) -> None:
        dt = ts_ns - self._S_ts
        if dt > 0:
            # math.exp, element by element, as the compiled core does: numpy's
            # vectorised exp (AVX-512 builds) can differ from libm's in the last bit
            x = -dt * _NS
            self._S *= np.array([math.exp(x / t) for t in _TAUS_L])[:, None]
            self._S_ts = ts_ns

    def _ema_to(self, ts_ns: int) -> None:
        dt = ts_ns - self._E_ts
        if dt > 0:
            x = -dt * _NS
            a = np.array([math.exp(x / t) for t in _EMA_TAUS_L])
            V = self._V
            self._E[:] = V + (self._E - V) * a
            self._E_ts = ts_ns

    # --- events ---------------------------------------------------------
    def on_book(self, book: OrderBook, ts_ns: int) -> None:
        """Update after a book change. An empty or crossed book is ignored."""
        bd, ad = book.bids, book.asks
        if not bd or not ad:
            return
        bids = [(p, bd[p]) for p in reversed(bd.keys()[-_LEVELS:])]
        asks = [(p, ad[p]) for p in ad.keys()[:_LEVELS]]
        if (
            self.skip_unchanged
            and self.ready
            and bids == self._prev_bids
            and asks == self._prev_asks
        ):
            # same 10 levels: book shape, OFI (0) and mid as before; only time moves
            self.skipped += 1
            self._ema_to(ts_ns)
            self.book_ts = ts_ns
            self.updates += 1
            return
        pb, qb = bids[0]
        pa, qa = asks[0]
        if pb >= pa:
            return
        mid2 = pb + pa
        mid = mid2 * 0.5
        bps = 1e4 / mid
        spread = pa - pb
        nb, na = len(bids), len(asks)

        cb3, pqb3, cb5, pqb5, cb10, w5b = _cumulative(bids)
        ca3, pqa3, ca5, pqa5, ca10, w5a = _cumulative(asks)

        micro1 = (pb * qa + pa * qb) / (qb + qa)
        micro3 = (pqb3 / cb3 * ca3 + pqa3 / ca3 * cb3) / (cb3 + ca3)
        micro5 = (pqb5 / cb5 * ca5 + pqa5 / ca5 * cb5) / (cb5 + ca5)
        bid_far = bids[-1][0]
        ask_far = asks[-1][0]
        # lots per spread of price over the 10 levels (one spread added: never 0)
        bid_dens = cb10 * spread / (pb - bid_far + spread)
        ask_dens = ca10 * spread / (ask_far - pa + spread)
        l1 = (qb + qa) * 0.5
        d5 = (cb5 + ca5) * 0.5
        d10 = (cb10 + ca10) * 0.5

        first = not self.ready
        if first:
            self.ready = True
            self.t0 = ts_ns
            self._S_ts = self._E_ts = ts_ns
            self.last_trade_ts = self.last_mid_change_ts = ts_ns
            self._V[:] = (0.0, 0.0, 0.0, spread, mid, mid, l1, d5, d10, 0.0, 0.0)
            self._E[:] = self._V

        # order-flow imbalance against the previous book (up to 5 levels)
        ofi1 = ofi5 = 0.0
        pbs, pas = self._prev_bids, self._prev_asks
        if not first and pbs and pas:
            for i in range(min(5, nb, na, len(pbs), len(pas))):
                bp, bq = bids[i]
                ap, aq = asks[i]
                obp, obq = pbs[i]
                oap, oaq = pas[i]
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
        self._prev_bids = bids
        self._prev_asks = asks

        r2 = 0.0
        moved = not first and mid2 != self.mid2
        if moved:
            r = (mid2 - self.mid2) * 0.5  # ticks; divided by the average spread when read
            r2 = r * r
            self.last_mid_change_ts = ts_ns
            self.last_mid_change_sign = 1 if mid2 > self.mid2 else -1
        if ofi1 or ofi5 or moved:
            self._decay_to(ts_ns)
            inc = self._inc
            inc[_C_OFI1] = ofi1
            inc[_C_OFI5] = ofi5
            inc[_C_R2] = r2
            inc[_C_MIDN] = 1.0 if moved else 0.0
            self._S += inc
            inc[_C_OFI1] = inc[_C_OFI5] = inc[_C_R2] = inc[_C_MIDN] = 0.0
        if first or moved:
            for dq in self._mid_hist:
                dq.append((ts_ns, mid2))
        self.mid2 = mid2
        self.book_ts = ts_ns

        imb1 = (qb - qa) / (qb + qa)
        imb5 = (cb5 - ca5) / (cb5 + ca5)
        mic_s = (micro1 - mid) / spread
        self._ema_to(ts_ns)
        self._V[:] = (imb1, imb5, mic_s, spread, mid, mid, l1, d5, d10, imb1, mic_s)

        k5b = min(5, nb)
        k5a = min(5, na)
        inv_sp = 1.0 / spread
        self._bk = [
            0.0,  # imb_l1_ema_1s: filled in by vector()
            spread * bps,
            0.0,  # micro_offset_spread_ema_30s: filled in by vector()
            (micro1 - mid) * bps,
            mic_s,
            (micro3 - mid) * inv_sp,
            (micro5 - mid) * inv_sp,
            imb1,
            (cb3 - ca3) / (cb3 + ca3),
            imb5,
            (cb10 - ca10) / (cb10 + ca10),
            (w5b - w5a) / (w5b + w5a),
            math.log(qb / qa),
            (pb - bids[1][0]) * inv_sp if nb > 1 else 0.0,
            (asks[1][0] - pa) * inv_sp if na > 1 else 0.0,
            (mid - bid_far) * inv_sp,
            (ask_far - mid) * inv_sp,
            bid_dens,
            ask_dens,
            math.log(bid_dens / ask_dens),
            math.log(qb * k5b / (cb5 if nb >= 5 else cb10)),
            math.log(qa * k5a / (ca5 if na >= 5 else ca10)),
            l1,
            d10,
            spread,
        ]
        self.updates += 1

    def on_trade(self, trade: Trade) -> None:
        """Account a public trade (aggressor side, size, price)."""
        ts = trade.ts_ns
        if not self.ready:
            return
        self._decay_to(ts)
        q = float(trade.size_lots)
        inc = self._tinc_sell if trade.buyer_is_maker else self._tinc_buy
        inc[_C_SELLV if trade.buyer_is_maker else _C_BUYV] = q
        inc[_C_PQ] = trade.price_ticks * q
        self._S += inc
        self.last_trade_ts = ts
        self.last_trade_px = trade.price_ticks
        self.last_trade_sign = trade.aggressor_sign

    # --- output ---------------------------------------------------------
    def mid_ticks(self) -> float:
        return self.mid2 * 0.5

    def vector(self, ts_ns: int) -> np.ndarray:
        """The 64 features as of ``ts_ns`` (float32, a reused buffer: copy to keep it)."""
        out = self._buf
        if not self.ready:
            out[:] = 0.0
            return out
        ts = max(ts_ns, self.book_ts, self._S_ts)
        # decayed sums and averages seen at ts, without changing the state
        exp = math.exp
        dts = (ts - self._S_ts) * _NS
        d1, d5, d30, d120, d600 = (exp(-dts / t) for t in _TAUS_L)
        S = self._S.tolist()
        dte = (ts - self._E_ts) * _NS
        a = [exp(-dte / t) for t in _EMA_TAUS_L]
        E = self._E.tolist()
        V = self._V.tolist()
        (
            e_imb1,
            e_imb5,
            e_mics,
            e_spread,
            e_mid60,
            e_mid600,
            e_l1,
            e_d5,
            e_d10,
            e_imb1f,
            e_mics30,
        ) = (v + (e - v) * k for e, v, k in zip(E, V, a, strict=True))
        s1, s5, s30, s120, s600 = S

        mid2 = self.mid2
        mid = mid2 * 0.5
        inv_sp = 1.0 / max(e_spread, 1e-12)  # prices in average spreads: tick- and level-free
        l1n = max(e_l1, 1e-12)
        d5n = max(e_d5, 1e-12)
        d10n = max(e_d10, 1e-12)
        bk = self._bk
        log, log1p = math.log, math.log1p

        # trade windows
        bv1, sv1 = s1[_C_BUYV] * d1, s1[_C_SELLV] * d1
        bv5, sv5 = s5[_C_BUYV] * d5, s5[_C_SELLV] * d5
        bv30, sv30 = s30[_C_BUYV] * d30, s30[_C_SELLV] * d30
        bv120, sv120 = s120[_C_BUYV] * d120, s120[_C_SELLV] * d120
        v1, v5, v30, v120 = bv1 + sv1, bv5 + sv5, bv30 + sv30, bv120 + sv120
        bn30, sn30 = s30[_C_BUYN] * d30, s30[_C_SELLN] * d30
        n5 = (s5[_C_BUYN] + s5[_C_SELLN]) * d5
        n120 = (s120[_C_BUYN] + s120[_C_SELLN]) * d120
        eps = 1e-9

        rets = []
        for j, dq in enumerate(self._mid_hist):
            cut = ts - self._ret_win_ns[j]
            while len(dq) > 1 and dq[1][0] <= cut:
                dq.popleft()
            rets.append((mid2 - dq[0][1]) * 0.5 * inv_sp)

        f = bk[0:12]
        f[0] = e_imb1f
        f[2] = e_mics30
        f += (e_imb1, e_imb5, e_mics)
        f += bk[12:17]
        f += (log(bk[17] / l1n), log(bk[18] / l1n))
        f += bk[19:22]
        f += (log(bk[22] / l1n), log(bk[23] / d10n), bk[24] * inv_sp)
        f += (
            s1[_C_OFI1] * d1 / l1n,
            s5[_C_OFI1] * d5 / l1n,
            s30[_C_OFI1] * d30 / l1n,
            s120[_C_OFI1] * d120 / l1n,
            s5[_C_OFI5] * d5 / d5n,
            s30[_C_OFI5] * d30 / d5n,
            (bv1 - sv1) / v1 if v1 > eps else 0.0,
            (bv5 - sv5) / v5 if v5 > eps else 0.0,
            (bv30 - sv30) / v30 if v30 > eps else 0.0,
            (bv120 - sv120) / v120 if v120 > eps else 0.0,
            (bn30 - sn30) / (bn30 + sn30) if bn30 + sn30 > eps else 0.0,
            log1p(n5 / 5.0),
            log1p((bn30 + sn30) / 30.0),
            log1p(n120 / 120.0),
            log1p(v5 / l1n),
            log1p(v30 / l1n),
            log1p(v120 / l1n),
            (s30[_C_PQ] * d30 / v30 - mid) * inv_sp if v30 > eps else 0.0,
            self.last_trade_sign,
            (self.last_trade_px - mid) * inv_sp if self.last_trade_sign else 0.0,
            log1p((ts - self.last_trade_ts) * _NS),
        )
        f += rets
        f += (
            math.sqrt(s5[_C_R2] * d5) * inv_sp,
            math.sqrt(s30[_C_R2] * d30) * inv_sp,
            math.sqrt(s120[_C_R2] * d120) * inv_sp,
            math.sqrt(s600[_C_R2] * d600) * inv_sp,
            (mid - e_mid60) * inv_sp,
            (mid - e_mid600) * inv_sp,
            log1p(s120[_C_MIDN] * d120 / 120.0 * 60.0),
            self.last_mid_change_sign,
            log1p((ts - self.last_mid_change_ts) * _NS),
            log1p((ts - self.book_ts) * _NS),
        )
        out[:] = f
        return out
