"""Operations around a running engine: journal, recovery, control socket, systemd, metrics.

:class:`OpsServices` is started by :func:`flashmm.app.run_bot` before the
engine quotes and closed after the runner has cancelled every order::

    ops = OpsServices(cfg, engine, venue)  # the venue the engine was built with
    await ops.start()                 # journal recovery, control socket, metrics
    opts.extra_tasks.append(ops.task) # venue reconciliation, then the ops loop
    ... run_async(..., stop=ops.stop_event) ...
    await ops.aclose()                # last drain, flush + close the journal

Nothing here runs on the engine's hot path. The engine appends what
happened to ``engine.outbox``; :meth:`OpsServices.task` drains it every
50 ms into the journal (a writer thread commits it), and
sends systemd watchdog pings and status lines from the same loop, so a
stuck event loop stops the pings.

Recovery (:mod:`flashmm.ops.recovery`) and the control commands
(:mod:`flashmm.ops.commands`) are the two jobs :class:`OpsServices` inherits.

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
from flashmm.engine import RUNNING, Engine
from flashmm.events import (
    BreakerChanged,
    FillEvent,
    OrderDone,
    OrderSent,
    OrderUpdated,
    OutboxEvent,
    StateChanged,
)
from flashmm.ops.commands import Commands
from flashmm.ops.control import ControlServer, socket_path_from_config
from flashmm.ops.journal import Journal
from flashmm.ops.notify import Notifier
from flashmm.ops.recovery import GATE_REASON, JOURNAL_BREAKER
from flashmm.predict.online import OnlineStore
from flashmm.snapshot import OpsView, Snapshot
from flashmm.types import Order, Position
from flashmm.venues.base import Venue

__all__ = ["OpsServices"]

_DRAIN_EVERY_S = 0.05
_SNAPSHOT_EVERY_S = 10.0
_STATUS_EVERY_S = 5.0
_METRICS_EVERY_S = 1.0


class OpsServices(Commands):
    """Journal, recovery, control socket, systemd notifications and metrics for one bot."""

    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        venue: Venue,
        *,
        sim_clock: bool | None = None,
        resume: bool = False,
        new_journal: bool = False,
        stop_event: asyncio.Event | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        #: the engine's venue, for recovery: replay, reconciliation, the block checkpoint
        self.venue = venue
        self.sim_clock = cfg.feed.kind == "replay" if sim_clock is None else sim_clock
        #: set to stop the bot (``flashmm stop``, SIGTERM/SIGINT, ``--duration``)
        self.stop_event = stop_event or asyncio.Event()
        self.notifier = Notifier()
        self.socket_path = socket_path_from_config(cfg)
        self.journal: Journal | None = None
        #: per-market online model weights beside the journal (model.online)
        self.online: OnlineStore | None = None
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
        #: the simulator starts empty each run: its fill ids repeat, its state is not the truth
        self.paper_venue = venue.name == "sim"
        self._run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._journal_orders: list[Order] = []
        self._breaker_seen: dict[str, bool] = {}
        self._pending_positions: dict[str, int] = {}
        self._snap_key: dict[str, tuple[int, int]] = {}
        self._stopping_sent = False
        self._closed = False
        self._lat_seen = 0
        self._block_saved: int | None = None
        # loss limits a reset re-armed, from the journal (see Recovery._start_day)
        self._rearmed: dict[str, tuple[float, int]] = {}
        # (UTC day, P&L) of the last day_start event journaled (Recovery._journal_day_start)
        self._day_journaled: tuple[int, float] | None = None
        self.resume = resume
        self.new_journal = new_journal
        #: a simulated run on recorded data: its own journal, unless resumed
        self.simulated = self.paper_venue and self.sim_clock
        self.failure: str | None = None
        """Why the journal failed in this run (the run then exits non-zero)."""
        #: the last snapshot published (:meth:`publish`), shared by its readers
        self.latest: Snapshot | None = None
        self._latest_at = 0.0
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
                self.online = OnlineStore.for_engine(self.engine, folder, name)
                self.online.load()
                self._venue_replay_hook()
            elif not self.paper_venue:
                self._ids_without_journal()
            self._base = self.engine.positions()
            if self.engine.state is RUNNING:
                # no quote goes out before the venue reconciliation in task()
                self.engine.pause(GATE_REASON, self._now(), quiet=True)
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

    def _ids_without_journal(self) -> None:
        """Client ids of a live run without a journal start at the wall clock's second
        times 2^20: past every id of an earlier run (at most a few dozen a second), so a
        requote of the last run that lands late never passes for one of this run's (and
        below 2^53, exact in JSON)."""
        base = (time.time_ns() // 1_000_000_000) << 20
        self.engine.restore([], [], {sym: base for sym in self.engine.markets})
        logger.info("no journal: client ids start at {}", base + 1)

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
        if self.venue.replays_fills:
            self._drain()  # the fills the venue replayed on start, into the journal
            self._day_start_after_replay()
        self._release_gate()
        self._drain()
        self.ready = True
        # a fresh line: the last snapshot (up to 1 s old) still says "paused (starting)"
        line = self.status_line(max_age_s=0.0)
        self.notifier.ready(line)
        logger.info("ready: {}", line)
        wd = self.notifier.watchdog_interval_s()
        t = time.monotonic()
        next_wd = t
        next_status = t + _STATUS_EVERY_S
        next_snap = t + _SNAPSHOT_EVERY_S
        next_metrics = t
        while True:
            try:
                self._drain()
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
                    if self.online is not None:
                        self.online.save()
                    next_snap = t + _SNAPSHOT_EVERY_S
                if self.metrics is not None and t >= next_metrics:
                    self._update_metrics()
                    next_metrics = t + _METRICS_EVERY_S
                if self.stop_event.is_set() and not self._stopping_sent:
                    self._send_stopping()
            except Exception:
                logger.exception("operations loop error (continuing)")
            await asyncio.sleep(_DRAIN_EVERY_S)

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
        if self.online is not None:
            self.online.save()
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

    def _check_journal(self) -> None:
        """Trip the latched ``journal`` breaker once a journal write failed."""
        j = self.journal
        if j is None or j.failure is None:
            return
        reason = f"journal {j.path}: write failed: {j.failure}"
        if self.failure is None:
            self.failure = reason
        if self.engine.trip_breaker(JOURNAL_BREAKER, reason, self._now()):
            logger.error("quotes pulled: {} (the run will exit non-zero)", reason)

    # --- journal drain ------------------------------------------------------------

    def _drain(self) -> None:
        """Hand everything the engine reported to the listeners and the journal (off the
        hot path), with the breaker changes the outbox does not carry (stale feed,
        position limit, a reset, operations' own breakers)."""
        # read before draining: the fills of blocks up to here are in the outbox now
        block = self.venue.processed_block
        self._check_journal()
        batch = self.engine.drain_outbox()
        batch += self._breaker_news(batch)
        if self.listeners and batch:
            for listener in self.listeners:
                listener(batch)
        j = self.journal
        if j is None or j.closed:
            return
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
                latched = state == "tripped" and bool(ev.status.get("latched"))
                j.breaker(ev.name, state, str(ev.status.get("reason", "")), latched=latched)
            elif isinstance(ev, StateChanged):
                j.event(ev.kind, ev.payload)
            else:
                j.event(ev.kind, ev.payload, market=ev.symbol)
        self._checkpoint_block(block)
        self._journal_day_start()
        self.fills_durable += len(j.poll_durable())

    def _breaker_news(self, batch: list[OutboxEvent]) -> list[OutboxEvent]:
        """A ``BreakerChanged`` for each breaker whose state moved without one in ``batch``."""
        for ev in batch:
            if isinstance(ev, BreakerChanged):
                self._breaker_seen[ev.name] = ev.status.get("state") == "tripped"
        news: list[OutboxEvent] = []
        for name, status in self.engine.breaker_status().items():
            tripped = status["state"] == "tripped"
            if self._breaker_seen.get(name, False) != tripped:
                self._breaker_seen[name] = tripped
                news.append(BreakerChanged(name, status))
        return news

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
        snap = self.engine.snapshot()
        out = dict(summary)
        markets = {k: dict(v) for k, v in (summary.get("markets") or {}).items()}
        keys = ("fills", "pnl_usdc", "fees_usdc", "volume_usdc")
        tot = dict.fromkeys(keys, 0.0)
        run = dict(tot)
        for sym, mv in snap.markets.items():
            b = self._base.get(sym) or Position(sym)
            b_pnl = b.realized_usdc - b.fees_usdc + self._base_unreal.get(sym, 0.0)
            before = (b.fills, b_pnl, b.fees_usdc, b.volume_usdc)
            now = (mv.fills, mv.pnl_usdc, mv.fees_usdc, mv.volume_usdc)
            this = {k: n - p for k, n, p in zip(keys, now, before, strict=True)}
            for k, v in zip(keys, now, strict=True):
                run[k] += this[k]
                tot[k] += v
            markets.setdefault(sym, {}).update({k: round(v, 6) for k, v in this.items()})
        out.update({k: round(v, 6) for k, v in run.items()}, markets=markets)
        out["fills"] = int(run["fills"])
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
                **{k: round(v, 6) for k, v in tot.items()},
                "fills": int(tot["fills"]),
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
                api_connections=self._api_connections(),
            )
        )
        self.latest, self._latest_at = snap, time.monotonic()
        return snap

    def _api_connections(self) -> dict[str, int] | None:
        conns = getattr(self.api, "connections", None)
        return None if conns is None else dict(conns.counts())

    def current(self, max_age_s: float) -> Snapshot:
        """:attr:`latest` when it is at most ``max_age_s`` old, else a fresh one."""
        if self.latest is None or time.monotonic() - self._latest_at > max_age_s:
            return self.publish()
        return self.latest

    def status(self) -> dict[str, Any]:
        """A fresh snapshot as plain data (what ``flashmm status --json`` shows)."""
        return self.publish().to_dict()

    def status_line(self, max_age_s: float = 1.0) -> str:
        """One line for ``systemctl status``: state, P&L, fills, positions."""
        snap = self.current(max_age_s)
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
        m.update(self.current(_METRICS_EVERY_S))
        self._lat_seen = m.observe_engine_latency(self.engine, self._lat_seen)
