"""Operations around a running engine: journal, recovery, control socket, systemd, metrics.

:class:`OpsServices` is started by :func:`flashmm.app.run_bot` before the
engine quotes and closed after the runner has cancelled every order::

    ops = OpsServices(cfg, engine)
    await ops.start()                 # journal recovery, control socket, metrics
    opts.extra_tasks.append(ops.task) # venue reconciliation, then the ops loop
    ... run_async(..., stop=ops.stop_event) ...
    await ops.aclose()                # last drain, flush + close the journal

Nothing here runs on the engine's hot path. The engine appends what
happened to ``engine.outbox``; :meth:`OpsServices.task` drains it every
``drain_interval_s`` into the journal (a writer thread commits it), and
sends systemd watchdog pings and status lines from the same loop, so a
stuck event loop stops the pings.

Recovery on start, before the first quote:

1. From the journal: positions rebuilt from every journaled fill, the fill
   ids (a replayed fill is not booked twice), each market's next client id
   past every journaled one, latched breakers (an emergency stop stays
   halted) and the last mode command (paused stays paused).
2. A chain venue replays our fills from the journal's last processed block
   (meta ``venue.processed_block``, moved after each drain) to the head in
   its ``start()``, so fills mined before a crash or while the bot was down
   are booked once, with their chain price and block time.
3. With the venue (in :meth:`task`, while quoting is held): journaled live
   orders the venue no longer has are marked done; orders on the venue the
   journal does not know (orphans) are cancelled or adopted per
   ``control.orphan_orders``; a position that differs at all (the venue's,
   read at one block plus our later fills it already reported) trips the
   latched ``reconcile`` breaker and the bot stays paused until the
   operator runs ``flashmm resume``, which accepts the venue's positions
   (journaled as an adjustment fill at the position's average cost).

The paper venue (``sim``) starts empty on every run, so in paper mode the
journal is the truth: its positions are kept and the venue's are ignored.
A simulated run on recorded data (paper venue on a replay) is a world of
its own: it gets a fresh journal ``<data_dir>/runs/<profile>/<run id>.sqlite``
and starts flat and unhalted, unless ``resume`` continues the profile's
latest run journal.

A journal that cannot be written trips the latched ``journal`` breaker
(quotes pulled); :attr:`OpsServices.failure` then says why and the run ends
with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.accounting import unrealized_usdc
from flashmm.config import Config
from flashmm.engine import HALTED, PAUSED, RUNNING, Engine
from flashmm.events import (
    BreakerChanged,
    FillEvent,
    OrderDone,
    OrderSent,
    OrderUpdated,
    OutboxEvent,
    StateChanged,
)
from flashmm.ops.control import ControlRefused, ControlServer, socket_path_from_config
from flashmm.ops.journal import MODE_COMMANDS, Journal, RecoveredState
from flashmm.ops.notify import Notifier
from flashmm.risk import HALT
from flashmm.snapshot import OpsView, Snapshot
from flashmm.types import Fill, Liquidity, Order, OrderState, Position, Side

__all__ = ["JOURNAL_BREAKER", "RECONCILE_BREAKER", "OpsServices"]

#: The latched breaker that holds quoting after a position mismatch with the venue.
RECONCILE_BREAKER = "reconcile"
#: The latched breaker that pulls quotes once a journal write failed.
JOURNAL_BREAKER = "journal"
_GATE_REASON = "starting: reconciling with the venue"
#: journal meta key: the venue's last block whose events are all journaled
_BLOCK_KEY = "venue.processed_block"
#: blocks replayed again below the checkpoint (fill ids make the overlap harmless)
_REPLAY_MARGIN = 2
_SNAPSHOT_EVERY_S = 10.0
_STATUS_EVERY_S = 5.0
_METRICS_EVERY_S = 1.0


class OpsServices:
    """Journal, recovery, control socket, systemd notifications and metrics for one bot."""

    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        *,
        sim_clock: bool | None = None,
        notifier: Notifier | None = None,
        drain_interval_s: float = 0.05,
        resume: bool = False,
        new_journal: bool = False,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sim_clock = cfg.feed.kind == "replay" if sim_clock is None else sim_clock
        self.stop_event = asyncio.Event()
        self.notifier = notifier if notifier is not None else Notifier()
        self.drain_interval_s = drain_interval_s
        self.socket_path = socket_path_from_config(cfg)
        self.journal: Journal | None = None
        self.control: ControlServer | None = None
        self.metrics: Any = None
        self.api: Any = None  # flashmm.api.server.ApiServer when api.enabled
        self.alerts: Any = None  # flashmm.ops.alerts.Alerts when alerts.enabled
        #: called with each batch drained from engine.outbox (API stream, alerts)
        self.listeners: list[Callable[[list[OutboxEvent]], None]] = []
        self.started_wall = time.time()
        self.fills_durable = 0
        self.recovery: dict[str, Any] = {}
        self.ready = False
        venue_name = engine.venue.name
        #: the simulator starts empty each run: its fill ids repeat, its state is not the truth
        self.paper_venue = venue_name == "sim"
        self._run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._journal_orders: list[Order] = []
        self._breaker_seen: dict[str, bool] = {}
        self._pending_positions: dict[str, int] = {}
        self._snap_key: dict[str, tuple[int, int]] = {}
        self._stopping_sent = False
        self._closed = False
        self._lat_seen = 0
        self._loop_ticks = 0
        self._block_saved: int | None = None
        self.resume = resume
        self.new_journal = new_journal
        #: a simulated run on recorded data: its own journal, unless resumed
        self.simulated = self.paper_venue and self.sim_clock
        self.failure: str | None = None
        #: the last snapshot published (:meth:`publish`), shared by its readers
        self.latest: Snapshot | None = None
        self._latest_at = 0.0
        """Why the journal failed in this run (the run then exits non-zero)."""
        self._base: dict[str, Position] = {}
        self._base_unreal: dict[str, float] = {}

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the journal, hold quoting for the venue check, open the socket."""
        try:
            if self.cfg.control.journal:
                specs = self.engine.specs
                folder, name = self._journal_place()
                self.journal = Journal(
                    folder,
                    name=name,
                    specs=specs,
                    new_journal=self.new_journal,
                    keep_order_events_s=self.cfg.control.order_events_keep_days * 86400.0,
                )
                logger.info("journal {}", self.journal.path)
                self._recover_from_journal(self.journal.load_state(specs))
                self._venue_replay_hook()
            self._base = self.engine.positions()
            if self.engine.state is RUNNING:
                # no quote goes out before the venue reconciliation in task()
                self.engine.pause(_GATE_REASON, self._now(), quiet=True)
            self.control = ControlServer(self.socket_path, self._handle, audit=self._audit)
            await self.control.start()
            if self.cfg.control.metrics_port:
                from flashmm.ops.metrics import Metrics

                self.metrics = Metrics(self.cfg.control.metrics_port)
                self.metrics.start()
            await self._start_remote()
        except BaseException:
            await self.aclose()
            raise

    async def _start_remote(self) -> None:
        """The opt-in alerts and HTTP API (both fed through :attr:`listeners`)."""
        if self.cfg.alerts.enabled:
            from flashmm.ops.alerts import Alerts

            self.alerts = Alerts(self.cfg.alerts, self)
            await self.alerts.start()
        if self.cfg.api.enabled:
            from flashmm.api.server import ApiServer

            self.api = ApiServer(self.cfg.api, self)
            await self.api.start()

    def _journal_place(self) -> tuple[Path, str]:
        """The journal's folder and name: per profile, or per run for a simulated run."""
        data_dir = Path(self.cfg.control.data_dir)
        if not self.simulated:
            return data_dir, self.cfg.profile
        runs = data_dir / "runs" / self.cfg.profile
        if self.resume:
            earlier = sorted(p.stem for p in runs.glob("*.sqlite"))
            if earlier:
                logger.info("resuming the simulated run {}", earlier[-1])
                return runs, earlier[-1]
            logger.warning(
                "--resume: no earlier run of {} in {}; starting fresh", self.cfg.profile, runs
            )
        base, n = self._run_id, 1
        while (runs / f"{self._run_id}.sqlite").exists():
            n += 1
            self._run_id = f"{base}-{n}"
        return runs, self._run_id

    async def task(self, engine: Engine) -> None:
        """Reconcile with the venue, signal READY, then drain the outbox until cancelled."""
        try:
            await self._reconcile_venue()
        except Exception as exc:
            logger.exception("reconciliation with the venue failed")
            self._trip_reconcile(f"cannot check the venue: {type(exc).__name__}: {exc}")
        self._release_gate()
        self._drain()
        self.ready = True
        self.notifier.ready(self.status_line())
        logger.info("ready: {}", self.status_line())
        wd = self.notifier.watchdog_interval_s()
        t = time.monotonic()
        next_wd = t
        next_status = t + _STATUS_EVERY_S
        next_snap = t + _SNAPSHOT_EVERY_S
        next_metrics = t
        while True:
            try:
                self._drain()
                self._loop_ticks += 1
                t = time.monotonic()
                # This task runs on the engine's event loop: if the loop is stuck,
                # no WATCHDOG=1 goes out and systemd restarts the bot.
                if wd is not None and t >= next_wd:
                    self.notifier.watchdog()
                    next_wd = t + wd
                if self.notifier.enabled and t >= next_status:
                    self.notifier.status(self.status_line())
                    next_status = t + _STATUS_EVERY_S
                if t >= next_snap:
                    self._snapshot_positions()
                    next_snap = t + _SNAPSHOT_EVERY_S
                if self.metrics is not None and t >= next_metrics:
                    self._update_metrics()
                    next_metrics = t + _METRICS_EVERY_S
                if self.stop_event.is_set() and not self._stopping_sent:
                    self._send_stopping()
            except Exception:
                logger.exception("operations loop error (continuing)")
            await asyncio.sleep(self.drain_interval_s)

    async def aclose(self) -> None:
        """Last drain, final snapshots, close socket, metrics and journal. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._drain()
        if not self._stopping_sent:
            self._send_stopping()
        for remote in (self.api, self.alerts):
            if remote is not None:
                with contextlib.suppress(Exception):
                    await remote.aclose()
        if self.control is not None:
            await self.control.aclose()
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self._update_metrics()
            self.metrics.close()
        j = self.journal
        if j is not None and not j.closed:
            try:
                self._snapshot_positions(force=True)
                fills = sum(p.fills for p in self.engine.positions().values())
                j.event("stop", {"state": self.engine.state, "fills": fills})
            except Exception:
                logger.exception("journal: final records failed")
            if await asyncio.to_thread(j.close):
                self.fills_durable += len(j.poll_durable())
                logger.info("journal closed ({} fills durable)", self.fills_durable)
            self._check_journal()
            if j.lost:
                self.failure = f"{self.failure}; {j.lost} write(s) lost"
        self.notifier.close()

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
        ignored = e.restore(st.positions.values(), st.fill_ids, st.max_client_ids)
        for sym in ignored:
            logger.warning("journal has fills for {}, which this profile does not trade", sym)
        restored = {s: p.lots for s, p in st.positions.items() if s not in ignored}
        self.fills_durable = st.fill_count
        self._journal_orders = list(st.open_orders)
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
            self._breaker_seen[name] = True
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

    def _venue_replay_hook(self) -> None:
        """Tell a chain venue where the journal's fills end, so it replays the rest."""
        venue = self.engine.venue
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
        e = self.engine
        venue = e.venue
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
                ours = pos.lots
                theirs = int(venue_pos.get(sym, 0))
                if ours != theirs:
                    mismatches[sym] = {"journal_lots": ours, "venue_lots": theirs}
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
        self._breaker_seen[RECONCILE_BREAKER] = True
        if self.journal is not None:
            self.journal.breaker(RECONCILE_BREAKER, "tripped", reason, latched=True)

    def _check_journal(self) -> None:
        """Trip the latched ``journal`` breaker once a journal write failed."""
        j = self.journal
        if j is None or j.failure is None:
            return
        reason = f"journal {j.path}: write failed: {j.failure}"
        if self.failure is None:
            self.failure = reason
        if not self.engine.trip_breaker(JOURNAL_BREAKER, reason, self._now()):
            return
        logger.error("quotes pulled: {} (the run will exit non-zero)", reason)
        self._breaker_seen[JOURNAL_BREAKER] = True
        if not j.closed:
            j.breaker(JOURNAL_BREAKER, "tripped", reason, latched=True)

    def _release_gate(self) -> None:
        e = self.engine
        if e.state is PAUSED and e.pause_reason == _GATE_REASON:
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

    # --- journal drain ------------------------------------------------------------

    def _drain(self) -> None:
        """Move everything the engine reported into the journal (off the hot path)."""
        # read before draining: the fills of blocks up to here are in the outbox now
        block = self.engine.venue.processed_block
        batch = self.engine.drain_outbox()
        if self.listeners and batch:
            for listener in self.listeners:
                listener(batch)
        j = self.journal
        if j is None or j.closed:
            return
        self._check_journal()
        mids: dict[str, float] | None = None
        for sym, base in self._base.items():
            if sym in self._base_unreal:
                continue
            mids = mids if mids is not None else self.engine.mids()
            if mids.get(sym):
                self._base_unreal[sym] = unrealized_usdc(base, mids[sym], self.engine.specs[sym])
        for ev in batch:
            if isinstance(ev, OrderSent):
                j.order_event(ev.order, note="new")
            elif isinstance(ev, OrderUpdated | OrderDone):
                j.order_event(ev.order, note=ev.note)
            elif isinstance(ev, FillEvent):
                fill = ev.fill
                if self.paper_venue and fill.fill_id:
                    # simulator ids restart at sim-1 every run: make them unique
                    fill = dataclasses.replace(fill, fill_id=f"{self._run_id}/{fill.fill_id}")
                j.fill(fill)
            elif isinstance(ev, BreakerChanged):
                state = str(ev.status.get("state", "?"))
                tripped = state == "tripped"
                j.breaker(
                    ev.name,
                    state,
                    str(ev.status.get("reason", "")),
                    latched=tripped and bool(ev.status.get("latched")),
                )
                self._breaker_seen[ev.name] = tripped
            elif isinstance(ev, StateChanged):
                j.event(ev.kind, ev.payload)
            else:
                j.event(ev.kind, ev.payload, market=ev.symbol)
        # breakers that change without an outbox record (stale feed, position limit)
        for name, b in self.engine.breaker_status().items():
            tripped = b["state"] == "tripped"
            if self._breaker_seen.get(name, False) != tripped:
                self._breaker_seen[name] = tripped
                j.breaker(
                    name, str(b["state"]), str(b["reason"]), latched=tripped and bool(b["latched"])
                )
        self._checkpoint_block(block)
        self.fills_durable += len(j.poll_durable())

    def _snapshot_positions(self, force: bool = False) -> None:
        j = self.journal
        if j is None or j.closed:
            return
        e = self.engine
        mids = e.mids()
        for sym, pos in e.positions().items():
            key = (pos.lots, pos.fills)
            if not force and self._snap_key.get(sym) == key:
                continue
            self._snap_key[sym] = key
            mid = mids.get(sym, 0.0)
            j.position_snapshot(
                pos,
                mid_ticks=mid or None,
                unrealized_usdc=unrealized_usdc(pos, mid, e.specs[sym]) if mid else None,
            )

    # --- run summary ------------------------------------------------------------------

    def run_summary(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """``summary`` (the engine's, totals) restated for this run, journal totals apart.

        ``fills``, ``pnl_usdc``, ``fees_usdc`` and ``volume_usdc`` (overall
        and per market) count this run only; what the positions restored from
        the journal were worth is taken off P&L at the first mid seen. ``state``
        is ``stopped`` unless the bot ended paused or halted. ``open_positions``
        and ``open_orders`` are what was left at exit; ``journal`` has the totals
        over every run in the journal (or None without one).
        """
        e = self.engine
        snap = e.snapshot()
        out = dict(summary)
        markets = {k: dict(v) for k, v in (summary.get("markets") or {}).items()}
        tot = {"fills": 0, "pnl_usdc": 0.0, "fees_usdc": 0.0, "volume_usdc": 0.0}
        run = dict(tot)
        for sym, mv in snap.markets.items():
            base = self._base.get(sym) or Position(sym)
            base_pnl = base.realized_usdc - base.fees_usdc + self._base_unreal.get(sym, 0.0)
            now = {
                "fills": mv.fills,
                "pnl_usdc": mv.pnl_usdc,
                "fees_usdc": mv.fees_usdc,
                "volume_usdc": mv.volume_usdc,
            }
            this = {
                "fills": mv.fills - base.fills,
                "pnl_usdc": mv.pnl_usdc - base_pnl,
                "fees_usdc": mv.fees_usdc - base.fees_usdc,
                "volume_usdc": mv.volume_usdc - base.volume_usdc,
            }
            for k in tot:
                run[k] += this[k]
                tot[k] += now[k]
            m = markets.setdefault(sym, {})
            m["fills"] = this["fills"]
            m["pnl_usdc"] = round(this["pnl_usdc"], 6)
            m["fees_usdc"] = round(this["fees_usdc"], 6)
            m["volume_usdc"] = round(this["volume_usdc"], 6)
        for k, v in run.items():
            out[k] = round(v, 6) if isinstance(v, float) else v
        out["markets"] = markets
        out["state"] = "stopped" if snap.state == RUNNING else snap.state
        if snap.state != RUNNING and snap.reason:
            out["reason"] = snap.reason
        out["open_positions"] = {s: m.position for s, m in snap.markets.items() if m.position_lots}
        out["open_orders"] = [
            dataclasses.asdict(q) for m in snap.markets.values() for q in m.quotes
        ]
        j = self.journal
        out["journal"] = (
            {
                "path": str(j.path),
                "resumed": self.simulated and self.resume,
                "fills": tot["fills"],
                "pnl_usdc": round(tot["pnl_usdc"], 6),
                "fees_usdc": round(tot["fees_usdc"], 6),
                "volume_usdc": round(tot["volume_usdc"], 6),
                "failure": self.failure,
            }
            if j is not None
            else None
        )
        return out

    # --- status -----------------------------------------------------------------------

    def publish(self) -> Snapshot:
        """A fresh snapshot of the engine and of operations, kept as :attr:`latest`."""
        e = self.engine
        j = self.journal
        snap = e.snapshot().with_ops(
            OpsView(
                uptime_s=time.time() - self.started_wall,
                pid=os.getpid(),
                socket=self.socket_path,
                ready=self.ready,
                fills_durable=self.fills_durable,
                journal=(
                    {
                        "path": str(j.path),
                        "fills_durable": self.fills_durable,
                        "pending_writes": j.pending,
                        "error": str(j.error) if j.error is not None else None,
                        "failure": j.failure,
                    }
                    if j is not None
                    else None
                ),
                recovery=dict(self.recovery),
                metrics_port=self.metrics.port if self.metrics is not None else None,
            )
        )
        self.latest, self._latest_at = snap, time.monotonic()
        return snap

    def current(self, max_age_s: float) -> Snapshot:
        """:attr:`latest` when it is at most ``max_age_s`` old, else a fresh one."""
        if self.latest is None or time.monotonic() - self._latest_at > max_age_s:
            return self.publish()
        return self.latest

    def status(self) -> dict[str, Any]:
        """A fresh snapshot as plain data (what ``flashmm status --json`` shows)."""
        return self.publish().to_dict()

    def status_line(self) -> str:
        """One line for ``systemctl status``: state, P&L, fills, positions."""
        snap = self.current(1.0)
        pos = " ".join(f"{sym} {m.position:g}" for sym, m in snap.markets.items())
        reason = f" ({snap.reason})" if snap.state != RUNNING and snap.reason else ""
        return (
            f"{snap.state}{reason} | P&L {snap.pnl_usdc:+.2f} USDC | fills {self.fills_durable}"
            f" | orders {snap.live_orders} | pos {pos}"
        )

    def _send_stopping(self) -> None:
        self._stopping_sent = True
        self.notifier.stopping(f"stopping: cancelling orders | {self.status_line()}")

    def _update_metrics(self) -> None:
        m = self.metrics
        if m is None:
            return
        e = self.engine
        m.update(self.current(_METRICS_EVERY_S).to_dict())
        lat_ns, self._lat_seen = e.latencies_since(self._lat_seen)
        if lat_ns:
            m.observe_decision_latency_us(v / 1e3 for v in lat_ns)

    # --- control commands ---------------------------------------------------------------

    async def _handle(self, cmd: str, args: dict[str, Any]) -> Mapping[str, Any]:
        e = self.engine
        now = self._now()
        note = str(args.get("reason") or "").strip()
        who = f"operator: {note}" if note else "operator"
        if cmd == "status":
            return self.status()
        if cmd == "pause":
            if e.state is HALTED:
                return {"state": e.state, "message": "halted: no quotes out ('reset --confirm')"}
            e.pause(who, now)
            return {
                "state": e.state,
                "message": f"quotes pulled ({e.live_orders()} cancel(s) in flight)",
            }
        if cmd == "resume":
            b = e.breaker_status().get(RECONCILE_BREAKER)
            accepted: dict[str, int] = {}
            if b is not None and b["state"] == "tripped" and e.state is not HALTED:
                accepted = self._accept_venue_positions()
                e.clear_breaker(RECONCILE_BREAKER, now)
                self._breaker_seen[RECONCILE_BREAKER] = False
                if self.journal is not None:
                    self.journal.breaker(RECONCILE_BREAKER, "ok", "confirmed by operator")
            refused = e.resume(now)
            if refused is not None:
                raise ControlRefused(refused)
            msg = "quoting"
            if accepted:
                msg += "; accepted the venue's positions " + ", ".join(
                    f"{s} {d:+d} lots" for s, d in accepted.items()
                )
            return {"state": e.state, "message": msg}
        if cmd == "stop":
            asyncio.get_running_loop().call_later(0.1, self.stop_event.set)
            return {"state": "stopping", "message": "cancelling all orders, then exiting"}
        if cmd == "emergency_stop":
            e.emergency_stop(who, now)
            return {
                "state": e.state,
                "message": "orders cancelled, flattening; halted until 'reset --confirm'",
            }
        if cmd == "reset":
            if args.get("confirm") is not True:
                raise ControlRefused(
                    "reset clears the halt and latched breakers: send it with confirm"
                    " (flashmm reset --confirm)"
                )
            cleared = [
                n for n, b in e.breaker_status().items() if b["state"] == "tripped" and b["latched"]
            ]
            e.reset(now)
            j = self.journal
            for name in cleared:
                self._breaker_seen[name] = False
                if j is not None:
                    j.breaker(name, "ok", "reset by operator")
            if self._pending_positions:  # a reset does not accept a position mismatch
                self._trip_reconcile("position mismatch still unconfirmed: 'flashmm resume'")
            return {
                "state": e.state,
                "message": f"cleared {', '.join(cleared) or 'nothing'}; paused: resume to quote",
            }
        raise ControlRefused(f"unknown command {cmd!r}")

    def _audit(self, cmd: str, args: dict[str, Any], response: dict[str, Any]) -> None:
        j = self.journal
        if j is None or j.closed or cmd == "status":
            return  # status changes nothing: not journaled
        result = response.get("result") or {}
        if not response.get("ok"):
            result = {"error": response.get("error")}
        # the journal redacts secrets from every text it stores
        seq = j.control(cmd, args, bool(response.get("ok")), result)
        if response.get("ok") and cmd in MODE_COMMANDS:
            # the answer goes out after this returns: a mode change the operator
            # saw acknowledged must survive a crash (rare; a few ms of fsync)
            j.wait_durable(seq, timeout=2.0)
