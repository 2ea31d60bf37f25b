"""Recovery on start: from the journal, from a chain venue's history, with the venue.

Before the first quote:

1. From the journal: positions rebuilt from every journaled fill, the fill
   ids (a replayed fill is not booked twice), each market's next client id
   past every journaled one (on a live venue ``CLIENT_ID_GAP`` past it: ids
   a crash kept out of the journal may be in a transaction still pending),
   latched breakers (an emergency stop stays halted) and the last mode
   command (paused stays paused).
2. A chain venue replays our fills from the journal's last processed block
   (meta ``venue.processed_block``, moved after each drain) to the head in
   its ``start()``, so fills mined before a crash or while the bot was down
   are booked once, with their chain price and block time.
3. With the venue (in ``OpsServices.task``, while quoting is held): journaled live
   orders the venue no longer has are marked done; orders on the venue the
   journal does not know (orphans) are cancelled or adopted per
   ``control.orphan_orders`` (the next client id moves past them); an order
   that a transaction of the last run places after this check is cancelled
   by the Sei venue (it knows the client ids this run placed); a position
   that differs at all (the venue's, read at one block plus our later fills
   it already reported) trips the latched ``reconcile`` breaker and the bot
   stays paused until the operator runs ``flashmm resume``, which accepts
   the venue's positions (journaled as an adjustment fill at the position's
   average cost).

The daily loss limit (``risk.daily_loss_limit_usdc``) counts today's loss
(since 00:00 UTC) from the P&L the journal had at 00:00 UTC today
(:meth:`Journal.pnl_at <flashmm.ops.journal.Journal.pnl_at>`): losses of
earlier days do not pause the new run, and the loss before the restart
still counts. Realized P&L and fees at 00:00 are exact; the position is
marked at the candidate price that gives the highest P&L (the last mid
journaled before 00:00, the last fill's price before it, the first mid
after it: the highest for a long position, the lowest for a short one),
the estimate that counts more of today's loss. Fills a chain venue
replays on start are journaled before the first quote and the P&L at
00:00 is read again with them (a fill mined before 00:00 counts there).
A resumed replay of recorded data has no clock yet at this point: its day
counts from its own start (the P&L restored counts).

The paper venue (``sim``) starts empty on every run, so in paper mode the
journal is the truth: its positions are kept and the venue's are ignored.
A simulated run on recorded data (paper venue on a replay) is a world of
its own: it gets a fresh journal ``<data_dir>/runs/<profile>/<run id>.sqlite``
and starts flat and unhalted, unless ``resume`` continues the profile's
latest run journal.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from loguru import logger

from flashmm.config import Config
from flashmm.engine import HALTED, PAUSED, RUNNING, Engine
from flashmm.ops.journal import Journal, RecoveredState
from flashmm.risk import HALT, NS_PER_DAY
from flashmm.types import Fill, Liquidity, Order, OrderState, Side
from flashmm.venues.base import Venue

__all__ = ["JOURNAL_BREAKER", "RECONCILE_BREAKER", "Recovery"]

#: The latched breaker that holds quoting after a position mismatch with the venue.
RECONCILE_BREAKER = "reconcile"
#: journal event: the P&L today's loss counts from ({"day": UTC day, "pnl_usdc": ...})
DAY_START_EVENT = "day_start"
#: The latched breaker that pulls quotes once a journal write failed.
JOURNAL_BREAKER = "journal"
GATE_REASON = "starting: reconciling with the venue"
#: journal meta key: the venue's last block whose events are all journaled
_BLOCK_KEY = "venue.processed_block"
#: blocks replayed again below the checkpoint (fill ids make the overlap harmless)
_REPLAY_MARGIN = 2
#: how far past the journal's highest client id a run on a live venue starts its own: a
#: crash can come after a requote was sent and before the journal recorded its orders, and
#: that transaction may still be pending (or have landed unseen); the new run must not
#: reuse its client ids (an order of the last run would pass for one of this run's)
CLIENT_ID_GAP = 1 << 20


class Recovery:
    """The recovery job of :class:`flashmm.ops.service.OpsServices` (its state lives there)."""

    cfg: Config
    engine: Engine
    venue: Venue
    journal: Journal | None
    sim_clock: bool
    paper_venue: bool
    recovery: dict[str, Any]
    fills_durable: int
    _run_id: str
    _journal_orders: list[Order]
    _pending_positions: dict[str, int]
    _block_saved: int | None
    _rearmed: dict[str, tuple[float, int]]
    _day_journaled: tuple[int, float] | None

    # --- clock ------------------------------------------------------------------

    def _now(self) -> int:
        """The engine's clock: the recorded time on a replay, else the wall clock."""
        if self.sim_clock and self.engine.now_ns:
            return self.engine.now_ns
        return time.time_ns()

    # --- recovery ------------------------------------------------------------------

    def _recover_from_journal(self, st: RecoveredState) -> None:
        e = self.engine
        now = self._now()
        # the paper venue starts empty: no order of the last run can land in this one
        gap = 0 if self.paper_venue else CLIENT_ID_GAP
        max_ids = {sym: st.max_client_ids.get(sym, 0) + gap for sym in e.markets}
        ignored = e.restore(st.positions.values(), st.fill_ids, max_ids)
        for sym in ignored:
            logger.warning("journal has fills for {}, which this profile does not trade", sym)
        restored = {s: p.lots for s, p in st.positions.items() if s not in ignored}
        self.fills_durable = st.fill_count
        self._journal_orders = list(st.open_orders)
        if self.journal is not None and not (self.sim_clock and not e.now_ns):
            # today's loss counts from the P&L the journal had at 00:00 UTC today
            day = now // NS_PER_DAY
            traded = {s: p for s, p in st.positions.items() if s not in ignored}
            base = self.journal.pnl_at(day * NS_PER_DAY, traded) if st.fill_count else 0.0
            self._rearmed = st.rearmed
            self._start_day(day, base)
            if "peak_equity_usdc" in st.rearmed:
                # a reset re-armed max_drawdown: the drawdown counts from that P&L
                e.restore_peak(st.rearmed["peak_equity_usdc"][0])
        # latched breakers: an emergency stop or a loss limit survives the restart
        latched = []
        for name, rec in st.latched_breakers.items():
            if rec.state != "tripped" or name in (RECONCILE_BREAKER, JOURNAL_BREAKER):
                continue
            latched.append(name)
            logger.warning(
                "restoring latched breaker {} (tripped before this start: {}); it stays "
                "until 'flashmm reset --confirm'",
                name,
                rec.reason,
            )
            # a breaker this engine does not know halts (as an emergency stop)
            e.trip_breaker(name, rec.reason, now, action=HALT)
        last = st.last_mode_command
        mode = last.cmd if last is not None else None
        if mode in ("pause", "reset") and e.state is RUNNING:
            e.pause(f"{mode} before the restart: 'flashmm resume' to quote", now)
        elif mode == "emergency_stop" and e.state is not HALTED:
            e.emergency_stop("operator emergency stop before the restart", now)
        self.recovery = {
            **self.recovery,
            "positions": restored,
            "fills": st.fill_count,
            "journal_open_orders": len(st.open_orders),
            "next_client_ids": e.next_client_ids(),
            "latched_breakers": latched,
            "last_mode_command": mode,
            "state": e.state,
        }
        if st.fill_count or st.open_orders or latched or mode:
            logger.info(
                "recovered from journal: {} fill(s), positions {}, {} open order(s), state {}",
                st.fill_count,
                restored,
                len(st.open_orders),
                e.state,
            )
        if self.journal is not None:
            self.journal.event("recovery", self.recovery)

    def _day_start_after_replay(self) -> None:
        """A chain venue's start-up replay books fills the journal did not have at
        recovery, with their block time, some maybe from before 00:00 UTC: today's
        loss counts from the P&L at 00:00 with them (once they are journaled, before
        the first quote)."""
        j = self.journal
        if j is None or j.closed or not self.venue.replays_fills:
            return
        if "day_start_pnl_usdc" not in self.recovery:
            return
        day = self._now() // NS_PER_DAY
        self._start_day(day, j.pnl_at(day * NS_PER_DAY))

    def _start_day(self, day: int, base: float) -> None:
        """Today's loss counts from ``base``, the journal's P&L at 00:00 UTC (an
        estimate: snapshots and fills), unless the journal holds better for today: the
        day's start a run journaled (``day_start`` events: the last mark before 00:00
        of a run that was up then, or a later start of the day) or the P&L a ``reset``
        re-armed a tripped ``daily_loss`` at (else the restart trips it again); the
        later of the two counts."""
        best: tuple[int, float, str] | None = None
        rearmed = self._rearmed.get("day_start_pnl_usdc")
        if rearmed is not None and rearmed[1] // NS_PER_DAY == day:
            best = (rearmed[1], rearmed[0], "reset")
        j = self.journal
        for ev in j.events(DAY_START_EVENT, limit=1) if j is not None else []:
            data = ev["data"]
            if data.get("day") == day and (best is None or ev["ts_ns"] > best[0]):
                best = (int(ev["ts_ns"]), float(data["pnl_usdc"]), "journaled")
        if best is not None:
            base = best[1]
            self.recovery["day_start_from"] = best[2]
        self.engine.risk.start_day(day, base)
        self.recovery["day_start_pnl_usdc"] = round(base, 6)
        self._day_journaled = (day, base)

    def _journal_day_start(self) -> None:
        """Journal the P&L today's loss counts from whenever it changes (00:00 UTC, a
        reset, a start), so a restart later today counts from the same P&L."""
        j, risk = self.journal, self.engine.risk
        if j is None or j.closed or risk.day is None:
            return
        now = (risk.day, risk.day_start_pnl)
        if now != self._day_journaled:
            self._day_journaled = now
            j.event(DAY_START_EVENT, {"day": now[0], "pnl_usdc": now[1]})

    def _venue_replay_hook(self) -> None:
        """Tell a chain venue where the journal's fills end, so it replays the rest."""
        venue = self.venue
        if not venue.replays_fills or self.journal is None:
            return
        raw = self.journal.get_meta(_BLOCK_KEY)
        block = int(raw) + 1 - _REPLAY_MARGIN if raw is not None and raw.isdigit() else None
        self.recovery["replay_from_block"] = block
        venue.recover_from(block)

    def _checkpoint_block(self, block: Any) -> None:
        """After a drain: every event of the venue up to ``block`` is in the journal."""
        j = self.journal
        if j is None or j.closed or not isinstance(block, int) or block == self._block_saved:
            return
        j.set_meta(_BLOCK_KEY, str(block))
        self._block_saved = block

    async def _reconcile_venue(self) -> None:
        """Compare journaled orders and positions with what the venue reports."""
        e, venue = self.engine, self.venue
        now = self._now()
        venue_orders = await venue.open_orders()
        venue_pos = await venue.positions()
        # the venue's positions count every event it has handed out, some maybe not yet
        # polled: book them now (no await in between), so both sides see the same fills
        e.pump_venue(now)
        j = self.journal
        known = {(o.market, o.client_id): o for o in self._journal_orders}
        on_venue = {(o.market, o.client_id): o for o in venue_orders}
        gone: list[str] = []
        kept: list[str] = []
        orphans: list[str] = []
        for key, o in known.items():
            vo = on_venue.get(key)
            if vo is None:
                o.state = OrderState.DONE
                if j is not None:
                    j.order_event(o, note="reconcile: not on the venue")
                gone.append(f"{o.market}#{o.client_id}")
            else:
                self._adopt(vo)
                kept.append(f"{o.market}#{o.client_id}")
        policy = self.cfg.control.orphan_orders
        for key, vo in on_venue.items():
            if key in known:
                continue
            orphans.append(f"{vo.market}#{vo.client_id}")
            if policy == "adopt" and vo.market in e.specs:
                self._adopt(vo)
                if j is not None:
                    j.order_event(vo, note="reconcile: adopted orphan")
            else:
                venue.requote(vo.market, [vo.client_id], [], now)
                ms = e.markets.get(vo.market)
                if ms is not None:  # its cancel must not name an order of this run
                    ms.next_client_id = max(ms.next_client_id, vo.client_id + 1)
                if j is not None:
                    j.event("orphan_cancelled", dataclasses.asdict(vo), market=vo.market)
        if orphans:
            logger.warning(
                "{} order(s) on the venue not in the journal: {} ({})",
                len(orphans),
                ", ".join(orphans),
                "adopted" if policy == "adopt" else "cancelled",
            )
        mismatches: dict[str, dict[str, int]] = {}
        if not self.paper_venue:
            for sym, pos in e.positions().items():
                theirs = int(venue_pos.get(sym, 0))
                if pos.lots != theirs:
                    mismatches[sym] = {"journal_lots": pos.lots, "venue_lots": theirs}
        summary = {
            "replay": venue.replay_summary(),
            "journal_orders_done": gone,
            "orders_kept": kept,
            "orphans": orphans,
            "orphan_policy": policy,
            "position_mismatches": mismatches,
            "venue_positions_ignored": self.paper_venue,
        }
        self.recovery["reconcile"] = summary
        if j is not None:
            j.event("reconcile", summary)
        if mismatches:
            self._pending_positions = {s: d["venue_lots"] for s, d in mismatches.items()}
            what = ", ".join(
                f"{s} journal {d['journal_lots']} vs venue {d['venue_lots']} lots"
                for s, d in mismatches.items()
            )
            if j is not None:
                for sym, d in mismatches.items():
                    j.event("position_mismatch", d, market=sym)
            self._trip_reconcile(
                f"position mismatch ({what}): check, then 'flashmm resume' accepts the venue's"
            )

    def _adopt(self, vo: Order) -> None:
        state = OrderState.OPEN if vo.state is not OrderState.PENDING_CANCEL else vo.state
        self.engine.adopt_order(dataclasses.replace(vo, state=state))

    def _trip_reconcile(self, reason: str) -> None:
        self.engine.trip_breaker(
            RECONCILE_BREAKER,
            reason,
            self._now(),
            clear_hint="check the venue, then 'flashmm resume' accepts its positions",
        )
        logger.error("quoting held: {}", reason)

    def _release_gate(self) -> None:
        e = self.engine
        if e.state is PAUSED and e.pause_reason == GATE_REASON:
            refused = e.resume(self._now())
            if refused is not None:
                logger.warning("not quoting: {}", refused)

    def _accept_venue_positions(self) -> dict[str, int]:
        """Book the difference to the venue's positions as adjustment fills (journaled)."""
        e = self.engine
        now = self._now()
        done: dict[str, int] = {}
        positions, mids = e.positions(), e.mids()
        for sym, lots in self._pending_positions.items():
            pos = positions[sym]
            diff = lots - pos.lots
            if diff == 0:
                continue
            # at the position's own average cost: accepting the venue's number invents no
            # P&L; only a journal that is flat has no cost to use and takes the mid
            px = round(pos.avg_price_ticks) if pos.lots else round(mids.get(sym, 0.0))
            fill = Fill(
                sym,
                0,
                Side.BUY if diff > 0 else Side.SELL,
                int(px),
                abs(diff),
                0.0,
                Liquidity.TAKER,
                now,
                f"reconcile-{self._run_id}-{sym}-{now}",
            )
            e.apply_recovered_fill(fill)
            if self.journal is not None:
                self.journal.fill(fill)
                self.journal.event(
                    "position_accepted", {"venue_lots": lots, "adjust_lots": diff}, market=sym
                )
            done[sym] = diff
            logger.warning("{}: accepted the venue's position {} lots ({:+d})", sym, lots, diff)
        self._pending_positions = {}
        return done
