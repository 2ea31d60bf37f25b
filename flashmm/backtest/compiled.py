"""``flashmm backtest`` through the compiled loop (:mod:`flashmm.native.backtest`).

The loop runs the engine's work over the recording's arrays and hands back,
in the order they happened, what the engine and the recorder would have seen:
fills (booked through :meth:`~flashmm.engine.Engine._on_fill`, the engine's one
fill path, with the reference book's top at that moment), orders sent, the
engine's P&L marks (through ``Engine._mark``), the recorder's samples,
breaker changes and the mid path. The report is then built from the same
engine, recorder and feed as :func:`flashmm.backtest.runner.run_backtest`'s.

:func:`run_compiled` returns None when the run is outside what the loop models
(a plugin strategy, the kill switch, an online model, a window, several
markets, a P&L breaker near its limit, ...): the caller then runs the Python
engine, which gives the same results in every case, more slowly.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from loguru import logger

from flashmm.backtest.recorder import BacktestResult, Recorder
from flashmm.config import Config
from flashmm.engine import Engine, MarketState
from flashmm.events import BreakerChanged
from flashmm.feeds.cache import CachedFeed
from flashmm.types import Fill, Order, OrderState, Side


class _Fallback(Exception):
    """Something the loop does not model happened: run the Python engine."""


class EngineSink:
    """Hands the loop's records to the engine and the recorder (one market).

    Fills and breaker changes reach the engine as they happen (accounting and risk
    act on them); orders sent, samples and the mid path, which only the report
    reads, are kept as the loop's arrays and handed to the recorder by
    :meth:`finish` after the loop, as a compiled backtester's recorder does."""

    def __init__(self, engine: Engine, rec: Recorder, ms: MarketState) -> None:
        self.engine = engine
        self.rec = rec
        self.ms = ms
        self.sym = ms.spec.symbol
        self.track = rec.tracks[self.sym]
        self.acct = engine.acct
        self.fills = rec.fills
        self.confirm_s = ms.band.confirm_ns / 1e9
        self._orders: list[np.ndarray] = []
        self._samples: list[tuple[np.ndarray, np.ndarray]] = []
        self._mids: list[tuple[np.ndarray, np.ndarray]] = []

    def fill(self, fill: Fill, now: int, best_bid: int, best_ask: int) -> None:
        book = self.ms.builder.book
        book.best_bid, book.best_ask = best_bid, best_ask  # the mid _on_fill reads
        self.engine.set_clock(now)
        self.engine._on_fill(fill, now)
        self.rec.drain()

    def orders(self, rows: np.ndarray) -> None:
        self._orders.append(rows)

    def samples(self, rows: np.ndarray, frows: np.ndarray) -> None:
        self._samples.append((rows, frows))

    def finish(self) -> None:
        """The orders sent, samples and mid path into the recorder, in order."""
        sym, sent, tr, rec = self.sym, self.rec.orders, self.track, self.rec
        sides = {1: Side.BUY, -1: Side.SELL}
        new = OrderState.PENDING_NEW
        for rows in self._orders:
            for t, cid, side, price, lots in rows.tolist():
                sent.append(Order(sym, cid, sides[side], price, lots, lots, new, t))
            tr.sent_lots += int(rows[:, 4].sum())
        for rows, frows in self._samples:
            t, bid, ask, qb, qa, pos = rows.T
            valid = (bid > 0) & (bid < ask)
            rec.s_t.extend(t.tolist())
            rec.s_equity.extend(frows[:, 0].tolist())
            rec.s_fees.extend(frows[:, 1].tolist())
            tr.s_bid.extend(np.where(valid, bid, 0).tolist())
            tr.s_ask.extend(np.where(valid, ask, 0).tolist())
            tr.s_qbid.extend(qb.tolist())
            tr.s_qask.extend(qa.tolist())
            tr.s_pos.extend(pos.tolist())
            tr.s_inv.extend(frows[:, 2].tolist())
        for ts, mid2 in self._mids:
            tr.mid_ts.extend(ts.tolist())
            tr.mid2.extend(mid2.tolist())
        self._orders.clear()
        self._samples.clear()
        self._mids.clear()

    def breaker(
        self, now: int, which: int, tripped: bool, bid: int, ask: int, jump: float, band: float
    ) -> None:
        from flashmm.native.backtest import BRK_BAND, BRK_POSITION

        risk = self.engine.risk
        if which == BRK_POSITION:
            # reduce only, logged and reported as the engine's mark does
            if risk.set_position_limit(self.sym, tripped, jump, now):
                self.engine._breaker_changed(risk.breakers[f"position_limit:{self.sym}"], now)
                self.rec.drain()
            return
        if which == BRK_BAND:
            b = risk.breakers[f"price_band:{self.sym}"]
            reason = (
                f"reference mid {jump:.0f} bps from the last good price (band {band:.0f} bps): "
                f"held until it stays there for {self.confirm_s:g} s"
            )
        else:
            b = risk.breakers[f"crossed_book:{self.sym}"]
            reason = f"reference book crossed: bid {bid} >= ask {ask} ticks"
        changed = b.trip(reason, now) if tripped else b.clear(now)
        if changed:
            if tripped:
                logger.warning("breaker {} tripped (quotes pulled): {}", b.name, b.reason)
            self.engine.outbox.append(BreakerChanged(b.name, b.status()))
            self.rec.drain()

    def mid_path(self, ts: np.ndarray, mid2: np.ndarray) -> None:
        self._mids.append((ts, mid2))


def eligible(cfg: Config, engine: Engine, feed: CachedFeed) -> str | None:
    """Why this run cannot go through the compiled loop (None: it can)."""
    from flashmm.native.backtest import unsupported

    why = unsupported(cfg)
    if why is not None:
        return why
    if type(feed) is not CachedFeed:
        return "a feed of its own (the loop reads the cached recordings as they are)"
    if feed.start_ns is not None or feed.end_ns is not None:
        return "a time window (--from/--to)"
    active = [ms for ms in engine.markets.values() if ms.spec.reference in feed.symbols]
    if len(active) != 1 or len(feed.symbols) != 1:
        return "more than one market or stream"
    return None


def run_compiled(
    cfg: Config,
    engine: Engine,
    feed: CachedFeed,
    sample_s: float = 1.0,
) -> tuple[BacktestResult, dict[str, Any]] | None:
    """The backtest through the compiled loop; None when it must run in the engine.

    Returns the result (report not built yet) and the timing parts."""
    from flashmm.native import backtest as nb
    from flashmm.native.backtest import (
        B_BOTH,
        B_CHECKS,
        B_EVENTS,
        B_GAPS,
        B_MISMATCHES,
        B_NEXT_SAMPLE,
        B_NOW,
        B_REC_LAST,
        B_T_BOTH,
        B_T_TOTAL,
        B_T_VALID,
        BF_BAND_GOOD,
        BF_BAND_PENDING,
        BF_DD,
        BF_M_INT,
        BF_M_SPREAD,
        BF_MARK_DD,
        BF_MAX_INV,
        BF_PEAK_EQ,
        BF_PNL,
        BF_Q_INT,
        BF_Q_SPREAD,
        CompiledBacktest,
    )

    why = eligible(cfg, engine, feed)
    if why is not None:
        logger.info("backtest in the Python engine: the compiled loop does not model {}", why)
        return None
    if not nb.cached():
        # never compile while a user waits: build it for the next run, run the engine now
        nb.warm_in_background()
        logger.info(
            "backtest in the Python engine: the compiled loop is being built in the "
            "background ('python -m flashmm.native' builds it at install)"
        )
        return None
    sym = feed.symbols[0]
    ms = engine.by_ref[sym]
    rec = Recorder(engine, [ms.spec.symbol], sample_s)
    sink = EngineSink(engine, rec, ms)
    t0 = time.perf_counter()
    try:
        bt = CompiledBacktest(
            cfg, feed.recordings[sym], sink=sink, sample_s=sample_s, offset=feed.offsets[sym]
        )
        t1, c1 = time.perf_counter(), time.process_time()
        bt.run()
        t2, c2 = time.perf_counter(), time.process_time()
        margin = bt.breaker_margin()
        if margin is not None:
            raise _Fallback(margin)
        left = bt.shutdown()
        sink.finish()
    except _Fallback as exc:
        logger.info("backtest in the Python engine: {}", exc)
        return None
    b, f = bt.bst, bt.bsf
    # the engine's state at the end, as the Python loop leaves it
    k = bt.core.k
    ist = bt.core.ist
    bids = [k.level(ist, 0, i) for i in range(int(ist[k.I_NB]))]
    asks = [k.level(ist, 1, i) for i in range(int(ist[k.I_NA]))]
    ms.builder.book.load(bids, asks)
    ms.builder.checks = int(b[B_CHECKS])
    ms.builder.mismatches = int(b[B_MISMATCHES])
    ms.band.good = float(f[BF_BAND_GOOD])
    ms.band.pending = float(f[BF_BAND_PENDING])
    s = bt.summary()
    acct = engine.acct  # the marks' figures (the fills booked them in the engine)
    acct.peak_equity = float(f[BF_PEAK_EQ])
    acct.max_drawdown = float(f[BF_MARK_DD])
    acct.max_abs_inventory_usdc = max(acct.max_abs_inventory_usdc, float(f[BF_MAX_INV]))
    ms.orders_sent = s["orders_sent"]
    ms.cancels_sent = s["cancels_sent"]
    engine.load_run_totals(
        pnl=float(f[BF_PNL]),
        drawdown=float(f[BF_DD]),
        quotes_sent=s["orders_sent"],
        events=int(b[B_EVENTS]),
        feed_gaps=int(b[B_GAPS]),
        start_ns=int(bt.ev[0, 0]) if bt.ev.shape[1] else 0,
        now_ns=int(b[B_NOW]),
    )
    # the recorder's running sums, then its last step after the shutdown
    tr = rec.tracks[ms.spec.symbol]
    tr.version = ms.builder.book.version
    tr.t_total_ns = int(b[B_T_TOTAL])
    tr.t_valid_ns = int(b[B_T_VALID])
    tr.t_both_ns = int(b[B_T_BOTH])
    tr.q_spread_int = float(f[BF_Q_INT])
    tr.m_spread_int = float(f[BF_M_INT])
    tr.both = bool(b[B_BOTH])
    tr.q_spread_bps = float(f[BF_Q_SPREAD])
    tr.m_spread_bps = float(f[BF_M_SPREAD])
    rec.last_ns = int(b[B_REC_LAST])
    rec.next_sample = int(b[B_NEXT_SAMPLE])
    rec.step(engine.now_ns)
    timing = {
        "setup_s": t1 - t0,
        "loop_s": t2 - t1,
        "loop_cpu_s": c2 - c1,
        "orders_left_open": left,
    }
    return BacktestResult({}, rec, engine, feed), timing
