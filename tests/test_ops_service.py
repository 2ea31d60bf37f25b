"""OpsServices in-process against a venue that is not the simulator: reconciliation on start.

Real SQLite journal and a real control socket; the venue is the simulator
with its name and the state it reports replaced, as a live venue would
report orders and positions left from before a restart.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from kit.ops import start_ops, stop_ops

from flashmm.config import Config, load_config
from flashmm.engine import Engine
from flashmm.events import FillEvent
from flashmm.ops.control import send_command
from flashmm.ops.journal import Journal, read_state
from flashmm.ops.recovery import CLIENT_ID_GAP, RECONCILE_BREAKER
from flashmm.ops.service import OpsServices
from flashmm.runner import engine_from
from flashmm.types import Fill, Liquidity, Order, OrderState, Side
from flashmm.venues.sim import SimVenue

SYM = "SEI/USDC"


class LiveLikeVenue(SimVenue):
    name = "fake-live"

    def __init__(self, *a: Any, orders: list[Order], positions: dict[str, int]) -> None:
        super().__init__(*a)
        self._orders = orders
        self._positions = positions
        self.cancelled: list[tuple[str, list[int]]] = []

    async def open_orders(self) -> list[Order]:
        return list(self._orders)

    async def positions(self) -> dict[str, int]:
        return dict(self._positions)

    def requote(self, market: str, cancels: Any, places: Any, now_ns: int) -> None:
        if cancels and not places:
            self.cancelled.append((market, list(cancels)))
        super().requote(market, cancels, places, now_ns)


def config(data: Path, sock: Path, orphans: str = "cancel", metrics: bool = False) -> Config:
    sets = [
        f"control.data_dir={data}",
        f"control.socket_path={sock / 'svc.sock'}",
        f"control.orphan_orders={orphans}",
        "name=svc",
        "ui.panel=false",
    ]
    if metrics:
        with socket.socket() as s:  # a free loopback port
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sets.append(f"control.metrics_port={port}")
    return load_config("configs/paper.yaml", sets)


def seed_journal(data: Path, cfg: Config) -> None:
    """A previous run: 500 lots bought, orders 5 and 6 live when it died."""
    specs = {s.symbol: s for s in cfg.specs()}
    with Journal(data, name="svc", specs=specs) as j:
        j.fill(Fill(SYM, 3, Side.BUY, 1200, 500, 0.0, Liquidity.MAKER, 1, "chain-1"))
        for cid in (5, 6):
            j.order_event(Order(SYM, cid, Side.SELL, 1210, 100, 100, OrderState.OPEN, 2))
        j.flush()


def engine_with(cfg: Config, orders: list[Order], positions: dict[str, int]) -> Engine:
    venue = LiveLikeVenue({s.symbol: s for s in cfg.specs()}, orders=orders, positions=positions)
    return engine_from(cfg, venue)


async def command(path: str, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return await asyncio.to_thread(send_command, path, cmd, args)


async def test_orphans_cancelled_known_orders_kept_missing_ones_done(
    dirs: tuple[Path, Path],
) -> None:
    data, sock = dirs
    cfg = config(data, sock)
    seed_journal(data, cfg)
    venue_orders = [
        Order(SYM, 5, Side.SELL, 1210, 100, 60, OrderState.OPEN, 2),  # known, part filled
        Order(SYM, 42, Side.BUY, 1190, 100, 100, OrderState.OPEN, 3),  # orphan
    ]
    engine = engine_with(cfg, venue_orders, {SYM: 500})
    ops, task = await start_ops(cfg, engine)
    try:
        ms = engine.markets[SYM]
        assert engine.acct.positions[SYM].lots == 500
        assert "chain-1" in engine.acct.fill_ids  # a replayed fill is not booked twice
        # past the journal's 6, with a gap: a crash may have kept ids of a transaction
        # still pending out of the journal
        assert ms.next_client_id == 7 + CLIENT_ID_GAP
        assert engine.state == "running"  # positions agree: quoting allowed
        assert list(ms.orders) == [5] and ms.orders[5].remaining_lots == 60
        assert engine.venue.cancelled == [(SYM, [42])]  # type: ignore[attr-defined]
        rec = ops.recovery["reconcile"]
        assert rec["journal_orders_done"] == [f"{SYM}#6"]
        assert rec["orphans"] == [f"{SYM}#42"]
    finally:
        await stop_ops(ops, task)
    st = read_state(data / "svc.sqlite")
    assert [o.client_id for o in st.open_orders] == [5]


async def test_a_cancelled_orphan_client_id_is_not_reused(dirs: tuple[Path, Path]) -> None:
    """An orphan landed from a transaction whose orders the journal never recorded (a
    crash right after the send): its cancel names its client id, so this run's orders
    start past it (an order of this run with that id would be the one forgotten)."""
    data, sock = dirs
    cfg = config(data, sock)
    cid = CLIENT_ID_GAP + 500
    orphan = Order(SYM, cid, Side.BUY, 1190, 100, 100, OrderState.OPEN, 3)
    engine = engine_with(cfg, [orphan], {SYM: 0})
    ops, task = await start_ops(cfg, engine)
    try:
        assert engine.venue.cancelled == [(SYM, [cid])]  # type: ignore[attr-defined]
        assert engine.markets[SYM].next_client_id == cid + 1
    finally:
        await stop_ops(ops, task)


async def test_the_paper_venue_continues_the_journal_client_ids(
    dirs: tuple[Path, Path],
) -> None:
    """The simulator starts empty: no order of the last run can land later, no gap."""
    data, sock = dirs
    cfg = config(data, sock)
    seed_journal(data, cfg)
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops, task = await start_ops(cfg, engine)
    try:
        assert engine.markets[SYM].next_client_id == 7
    finally:
        await stop_ops(ops, task)


async def test_orphans_adopted_when_configured(dirs: tuple[Path, Path]) -> None:
    data, sock = dirs
    cfg = config(data, sock, orphans="adopt")
    orphan = Order(SYM, 42, Side.BUY, 1190, 100, 100, OrderState.OPEN, 3)
    engine = engine_with(cfg, [orphan], {SYM: 0})
    ops, task = await start_ops(cfg, engine)
    try:
        ms = engine.markets[SYM]
        assert 42 in ms.orders and ms.next_client_id > 42
        assert engine.venue.cancelled == []  # type: ignore[attr-defined]
    finally:
        await stop_ops(ops, task)
    assert [o.client_id for o in read_state(data / "svc.sqlite").open_orders] == [42]


async def test_position_mismatch_holds_quoting_until_resume_accepts_the_venue(
    dirs: tuple[Path, Path],
) -> None:
    data, sock = dirs
    cfg = config(data, sock, metrics=True)
    seed_journal(data, cfg)
    engine = engine_with(cfg, [], {SYM: 300})
    ops, task = await start_ops(cfg, engine)
    path = ops.socket_path
    try:
        assert engine.state == "paused"
        b = engine.risk.breakers[RECONCILE_BREAKER]
        assert b.tripped and b.latched and "journal 500 vs venue 300" in b.reason
        st = (await command(path, "status"))["result"]
        assert st["breakers"][RECONCILE_BREAKER]["state"] == "tripped"
        # a reset does not accept the mismatch
        r = await command(path, "reset", {"confirm": True})
        assert r["ok"] and engine.risk.breakers[RECONCILE_BREAKER].tripped
        r = await command(path, "resume")
        assert r["ok"], r
        assert "accepted" in r["result"]["message"] and engine.state == "running"
        assert engine.acct.positions[SYM].lots == 300
        # metrics are served from the same status
        import urllib.request

        url = f"http://127.0.0.1:{ops.metrics.port}/metrics"
        for _ in range(100):
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
            if 'flashmm_position_lots{market="SEI/USDC"} 300.0' in text:
                break
            await asyncio.sleep(0.05)
        assert 'flashmm_position_lots{market="SEI/USDC"} 300.0' in text
    finally:
        await stop_ops(ops, task)
    st = read_state(data / "svc.sqlite")
    assert st.positions[SYM].lots == 300  # the adjustment is journaled as a fill
    assert not st.latched_breakers
    # next start: journal and venue agree, quoting is allowed
    engine = engine_with(cfg, [], {SYM: 300})
    ops, task = await start_ops(cfg, engine)
    try:
        assert engine.state == "running"
        assert ops.recovery["reconcile"]["position_mismatches"] == {}
    finally:
        await stop_ops(ops, task)


async def test_emergency_stop_is_latched_across_restarts_until_reset(
    dirs: tuple[Path, Path],
) -> None:
    data, sock = dirs
    cfg = config(data, sock)
    engine = engine_with(cfg, [], {SYM: 0})
    ops, task = await start_ops(cfg, engine)
    try:
        r = await command(ops.socket_path, "emergency_stop")
        assert r["ok"] and engine.state == "halted"
        r = await command(ops.socket_path, "resume")
        assert not r["ok"] and "reset" in r["error"]
    finally:
        await stop_ops(ops, task)
    engine = engine_with(cfg, [], {SYM: 0})
    ops, task = await start_ops(cfg, engine)
    try:
        assert engine.state == "halted"
        r = await command(ops.socket_path, "reset", {"confirm": True})
        assert r["ok"] and engine.state == "paused"
    finally:
        await stop_ops(ops, task)
    engine = engine_with(cfg, [], {SYM: 0})
    ops, task = await start_ops(cfg, engine)
    try:
        assert engine.state == "paused"  # the last mode command was a reset
        assert (await command(ops.socket_path, "resume"))["ok"]
        assert engine.state == "running"
    finally:
        await stop_ops(ops, task)


# --- simulated runs: a world per run; run summary; a journal that fails loudly -------------


async def sim_start(cfg: Config, **kw: Any) -> tuple[Engine, OpsServices, asyncio.Task[None]]:
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops, task = await start_ops(cfg, engine, sim_clock=True, **kw)
    return engine, ops, task


def book_fill(engine: Engine, fill: Fill) -> None:
    """A fill as the engine reports it (accounted, then in the outbox)."""
    engine.acct.on_fill(fill)
    engine.outbox.append(FillEvent(fill))


async def test_simulated_run_starts_flat_and_unhalted_unless_resumed(
    dirs: tuple[Path, Path],
) -> None:
    data, sock = dirs
    cfg = config(data, sock)
    engine, ops, task = await sim_start(cfg)
    try:
        book_fill(engine, Fill(SYM, 3, Side.BUY, 1200, 500, 0.01, Liquidity.MAKER, 1, "sim-1"))
        engine.emergency_stop("test jump", engine.now_ns or 1, breaker="kill_switch")
        assert engine.state == "halted"
    finally:
        await stop_ops(ops, task)
    first = ops.journal.path if ops.journal else None
    assert first is not None and first.parent == data / "runs" / "svc"
    for folder in (data / "runs", data / "runs" / "svc"):
        assert folder.stat().st_mode & 0o077 == 0, folder

    engine, ops, task = await sim_start(cfg)  # a new run in the same folder
    try:
        assert ops.journal is not None and ops.journal.path != first
        assert engine.state == "running"
        assert engine.acct.positions[SYM].lots == 0 and engine.acct.fills == 0
        assert ops.recovery["latched_breakers"] == [] and ops.recovery["fills"] == 0
    finally:
        await stop_ops(ops, task)

    # sorted by run id: make the first run the latest, then continue it
    later = first.with_name("99999999T999999-1.sqlite")
    first.rename(later)
    engine, ops, task = await sim_start(cfg, resume=True)
    try:
        assert ops.journal is not None and ops.journal.path == later
        assert engine.state == "halted" and engine.acct.positions[SYM].lots == 500
        book_fill(engine, Fill(SYM, 4, Side.SELL, 1210, 100, 0.01, Liquidity.MAKER, 2, "sim-1"))
    finally:
        await stop_ops(ops, task)
    summary = ops.run_summary(engine.summary())
    assert summary["fills"] == 1 and summary["markets"][SYM]["fills"] == 1
    assert summary["fees_usdc"] == pytest.approx(0.01)
    assert summary["journal"]["fills"] == 2 and summary["journal"]["resumed"] is True
    assert summary["state"] == "halted"
    assert summary["open_positions"] == {SYM: pytest.approx(400 * 0.01)}
    assert summary["open_orders"] == []
    from rich.console import Console

    from flashmm.ui import summary_table

    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "open positions" in text and "SEI/USDC 4" in text
    assert "journal (all runs)" in text and "fills 2" in text


async def test_summary_state_is_stopped_not_running(dirs: tuple[Path, Path]) -> None:
    data, sock = dirs
    cfg = config(data, sock)
    engine, ops, task = await sim_start(cfg)
    await stop_ops(ops, task)
    assert engine.state == "running"
    summary = ops.run_summary(engine.summary())
    assert summary["state"] == "stopped" and summary["journal"]["failure"] is None


async def test_journal_write_error_pulls_quotes_and_is_reported(dirs: tuple[Path, Path]) -> None:
    from test_ops_journal import corrupt_table

    data, sock = dirs
    cfg = config(data, sock)
    seed_journal(data, cfg)
    corrupt_table(data / "svc.sqlite", "order_events")
    engine = engine_with(cfg, [], {SYM: 500})
    ops, task = await start_ops(cfg, engine)
    try:
        for _ in range(500):  # the reconcile marks orders 5 and 6 done: that write fails
            if engine.risk.breakers.get("journal") is not None:
                break
            await asyncio.sleep(0.01)
        b = engine.risk.breakers["journal"]
        assert b.tripped and b.latched and "malformed" in b.reason
        assert engine.state == "paused" and engine.live_orders() == 0
        r = await command(ops.socket_path, "resume")
        assert not r["ok"] and "journal" in r["error"]
        st = (await command(ops.socket_path, "status"))["result"]
        assert "malformed" in st["journal"]["failure"]
        assert "malformed" in st["breakers"]["journal"]["reason"]
    finally:
        await stop_ops(ops, task)
    assert ops.failure is not None and "svc.sqlite" in ops.failure
    assert "malformed" in (ops.run_summary(engine.summary())["journal"]["failure"] or "")
