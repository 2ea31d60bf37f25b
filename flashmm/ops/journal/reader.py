"""Reading a journal: what a bot recovers on start, read-only and safe beside a writer.

:func:`read_state` (and :meth:`Journal.load_state`, which flushes first)
returns a :class:`RecoveredState`: the position per market from the
checkpoint the writer keeps with every fill, the newest fills and fill ids,
orders not yet done, the last state of every breaker and the last mode
command.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashmm.accounting import apply_fill, unrealized_usdc
from flashmm.errors import RuntimeFailure
from flashmm.types import Fill, Liquidity, MarketSpec, Order, OrderState, Position, Side

__all__ = [
    "MODE_COMMANDS",
    "RECENT_FILLS",
    "RECENT_FILL_IDS",
    "BreakerRecord",
    "ControlRecord",
    "PositionSnapshot",
    "RecoveredState",
    "pnl_at",
    "read_state",
]

#: Control commands that change the bot's mode; the last one is recovered on start.
MODE_COMMANDS = frozenset({"pause", "resume", "emergency_stop", "reset"})

#: meta key: the ``fills.id`` up to which ``checkpoint`` includes every fill
CHECKPOINT_KEY = "checkpoint_fill_row"
#: how many of the newest fill ids are read on start (they de-duplicate replays)
RECENT_FILL_IDS = 100_000
#: how many of the newest fills :func:`read_state` returns as :class:`Fill` objects
RECENT_FILLS = 10_000
FILL_COLUMNS = (
    "fill_id, market, client_id, side, price_ticks, size_lots, fee_usdc, liquidity, ts_ns"
)


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The last journaled state of one circuit breaker."""

    name: str
    state: str
    reason: str
    latched: bool
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """One control command received on the socket and what came of it."""

    cmd: str
    args: dict[str, Any]
    ok: bool
    result: dict[str, Any]
    ts_ns: int


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """A position / P&L snapshot as the engine journaled it."""

    market: str
    lots: int
    avg_price_ticks: float
    realized_usdc: float
    fees_usdc: float
    volume_usdc: float
    fills: int
    unrealized_usdc: float | None
    mid_ticks: float | None
    ts_ns: int


@dataclass(slots=True)
class RecoveredState:
    """Everything :func:`read_state` found in a journal.

    ``positions`` come from the journal's checkpoint, which the writer keeps
    in the same transaction as every fill it commits (so it always equals
    applying every journaled fill), not from snapshots; ``snapshots`` are
    the last ones journaled, for comparison. ``fills`` holds the newest
    :data:`RECENT_FILLS` fills only and ``fill_ids`` the ids of the newest
    :data:`RECENT_FILL_IDS`; ``fill_count`` counts them all.
    ``realized_usdc`` excludes fees; net P&L is ``realized_usdc - fees_usdc``.
    """

    fills: list[Fill] = field(default_factory=list)
    fill_count: int = 0
    recent_fill_ids: set[str] = field(default_factory=set)
    positions: dict[str, Position] = field(default_factory=dict)
    open_orders: list[Order] = field(default_factory=list)
    breakers: dict[str, BreakerRecord] = field(default_factory=dict)
    snapshots: dict[str, PositionSnapshot] = field(default_factory=dict)
    last_mode_command: ControlRecord | None = None
    #: from the newest ``reset`` that re-armed each loss limit: its result's
    #: ``day_start_pnl_usdc`` / ``peak_equity_usdc`` and its time, ns
    rearmed: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: the highest client id journaled per market (orders and fills, done or not)
    max_client_ids: dict[str, int] = field(default_factory=dict)

    @property
    def latched_breakers(self) -> dict[str, BreakerRecord]:
        """Breakers whose last state is latched (they stay tripped until a reset)."""
        return {name: rec for name, rec in self.breakers.items() if rec.latched}

    @property
    def fill_ids(self) -> set[str]:
        return self.recent_fill_ids | {f.fill_id for f in self.fills}


def row_to_fill(row: tuple[Any, ...]) -> Fill:
    fill_id, market, client_id, side, price, size, fee, liq, ts_ns = row
    return Fill(market, client_id, Side(side), price, size, fee, Liquidity(liq), ts_ns, fill_id)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(q, (name,)).fetchone() is not None


def recent_fill_ids(conn: sqlite3.Connection) -> set[str]:
    """The ids of the newest :data:`RECENT_FILL_IDS` fills."""
    q = "SELECT fill_id FROM fills ORDER BY id DESC LIMIT ?"
    return {r[0] for r in conn.execute(q, (RECENT_FILL_IDS,))}


def load_positions(
    conn: sqlite3.Connection, specs: Mapping[str, MarketSpec]
) -> tuple[dict[str, Position], dict[str, int], int, int]:
    """Positions, max client ids, fills counted and the last fill row, from the checkpoint.

    Fills journaled after the checkpoint (a journal from before checkpoints
    existed) are applied on top; nothing else reads the whole fills table.
    """
    positions: dict[str, Position] = {}
    max_ids: dict[str, int] = {}
    got = None
    if has_table(conn, "checkpoint"):
        got = conn.execute("SELECT value FROM meta WHERE key = ?", (CHECKPOINT_KEY,)).fetchone()
    row_after = int(got[0]) if got is not None else 0
    if got is not None:
        for m, lots, avg, real, fees, vol, n, cid in conn.execute(
            "SELECT market, lots, avg_price_ticks, realized_usdc, fees_usdc, volume_usdc,"
            " fills, max_client_id FROM checkpoint"
        ):
            positions[m] = Position(m, lots, avg, real, fees, vol, n)
            max_ids[m] = int(cid)
    else:
        for m, cid in conn.execute("SELECT market, MAX(client_id) FROM orders GROUP BY market"):
            max_ids[m] = int(cid)
    last = row_after
    for row in conn.execute(
        f"SELECT id, {FILL_COLUMNS} FROM fills WHERE id > ? ORDER BY id", (row_after,)
    ):
        fill = row_to_fill(row[1:])
        last = int(row[0])
        pos = positions.get(fill.market)
        if pos is None:  # not setdefault: that would build a Position for every fill
            pos = positions[fill.market] = Position(fill.market)
        apply_fill(pos, fill, specs.get(fill.market))
        max_ids[fill.market] = max(max_ids.get(fill.market, 0), fill.client_id)
    count = sum(p.fills for p in positions.values())
    return positions, max_ids, count, last


def read_state(
    db_path: str | os.PathLike[str],
    specs: Mapping[str, MarketSpec] | None = None,
    *,
    recent_fills: int = RECENT_FILLS,
) -> RecoveredState:
    """Read a journal file (read-only; safe while a bot is writing it)."""
    path = Path(db_path)
    state = RecoveredState()
    if not path.exists():
        return state
    specs = specs or {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise RuntimeFailure(f"journal {path}: cannot open: {exc}") from exc
    try:
        conn.execute("BEGIN")  # one consistent read of every table
        state.positions, state.max_client_ids, state.fill_count, _ = load_positions(conn, specs)
        for sym, pos in state.positions.items():
            if sym not in specs:
                pos.extra["no_spec"] = 1.0
        rows = conn.execute(
            f"SELECT {FILL_COLUMNS} FROM fills ORDER BY id DESC LIMIT ?", (max(0, recent_fills),)
        ).fetchall()
        state.fills = [row_to_fill(r) for r in reversed(rows)]
        state.recent_fill_ids = recent_fill_ids(conn)
        for m, cid, side, price, size, rem, st, created in conn.execute(
            "SELECT market, client_id, side, price_ticks, size_lots, remaining, state,"
            " created_ns FROM orders WHERE state != 3 ORDER BY created_ns, client_id"
        ):
            state.open_orders.append(
                Order(m, cid, Side(side), price, size, rem, OrderState(st), created)
            )
        for name, st, reason, latched, ts in conn.execute(
            "SELECT name, state, reason, latched, ts FROM breaker_events"
            " WHERE id IN (SELECT MAX(id) FROM breaker_events GROUP BY name) ORDER BY name"
        ):
            state.breakers[name] = BreakerRecord(name, st, reason, bool(latched), ts)
        for row in conn.execute(
            "SELECT market, lots, avg_price_ticks, realized_usdc, fees_usdc, volume_usdc,"
            " fills, unrealized_usdc, mid_ticks, ts FROM positions"
            " WHERE id IN (SELECT MAX(id) FROM positions GROUP BY market)"
        ):
            state.snapshots[row[0]] = PositionSnapshot(*row)
        marks = ",".join("?" * len(MODE_COMMANDS))
        row = conn.execute(
            f"SELECT cmd, args, ok, result, ts FROM control_commands"
            f" WHERE ok = 1 AND cmd IN ({marks}) ORDER BY id DESC LIMIT 1",
            sorted(MODE_COMMANDS),
        ).fetchone()
        if row is not None:
            cmd, args, ok, result, ts = row
            state.last_mode_command = ControlRecord(
                cmd, json.loads(args), bool(ok), json.loads(result), ts
            )
        for key in REARM_KEYS:
            row = conn.execute(
                "SELECT result, ts FROM control_commands WHERE ok = 1 AND cmd = 'reset'"
                " AND instr(result, ?) > 0 ORDER BY id DESC LIMIT 1",
                (f'"{key}"',),
            ).fetchone()
            if row is not None:
                value = json.loads(row[0]).get(key)
                if isinstance(value, int | float):
                    state.rearmed[key] = (float(value), int(row[1]))
    except sqlite3.Error as exc:
        raise RuntimeFailure(f"journal {path}: cannot read: {exc}") from exc
    finally:
        conn.close()
    return state


#: what a ``reset`` that re-armed a tripped loss limit journals in its result (the
#: P&L the limit counts from, see :meth:`flashmm.engine.Engine.reset`)
REARM_KEYS = ("day_start_pnl_usdc", "peak_equity_usdc")


#: :func:`pnl_at` reads a market's fills after its last snapshot before ``at_ns`` in
#: journal order up to the first one this far past ``at_ns`` (a fill journaled late
#: with an earlier time, as a chain venue's start-up replay books, comes before it)
PNL_AT_SCAN_PAST_NS = 3600 * 1_000_000_000
#: :func:`pnl_at`'s statements (``benchmarks/journal_day_start.py`` prints their plans)
PNL_AT_QUERIES = (
    "SELECT lots, avg_price_ticks, realized_usdc, fees_usdc, volume_usdc, fills,"
    " mid_ticks, id FROM positions WHERE market = ? AND ts < ? ORDER BY id DESC LIMIT 1",
    "SELECT mid_ticks FROM positions WHERE market = ? AND ts < ? AND id < ?"
    " AND mid_ticks > 0 ORDER BY id DESC LIMIT 1",
    "SELECT id FROM fills WHERE market = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
    f"SELECT {FILL_COLUMNS} FROM fills WHERE market = ? AND id >= ? ORDER BY id",
    "SELECT mid_ticks FROM positions WHERE market = ? AND id > ? AND ts >= ? ORDER BY id LIMIT 1",
)


def pnl_at(
    db_path: str | os.PathLike[str],
    specs: Mapping[str, MarketSpec],
    at_ns: int,
    positions: Mapping[str, Position],
) -> float:
    """The journal's P&L (realized + unrealized - fees, summed over the markets of
    ``specs``) at ``at_ns``: what a restart's ``daily_loss`` counts today's loss from
    (``at_ns`` = 00:00 UTC today).

    Per market: the last position snapshot before ``at_ns`` plus that market's later
    fills before ``at_ns`` (the fills past the snapshot's ``fills`` count, of the
    ``positions[m].fills`` the journal holds, ``positions`` being what
    :func:`read_state` recovered), booked by :func:`~flashmm.accounting.apply_fill`,
    so realized P&L and fees are exact. Those fills are read in journal order up to
    the first one :data:`PNL_AT_SCAN_PAST_NS` past ``at_ns`` (today's fills are not
    read). The price at ``at_ns`` is not journaled: the position is marked at the
    candidate price that gives the highest P&L (the highest for a long position, the
    lowest for a short one), the estimate that counts the most of today's loss; the
    candidates are the last mid journaled before ``at_ns`` (a snapshot written before
    a run's first book has none: an earlier one's), the price of the last fill applied
    and the mid of the first snapshot at or after ``at_ns``. Read-only; safe beside a
    writer."""
    path = Path(db_path)
    if not path.exists():
        return 0.0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise RuntimeFailure(f"journal {path}: cannot open: {exc}") from exc
    q_snap, q_mid, q_first, q_fills, q_after = PNL_AT_QUERIES
    total = 0.0
    try:
        conn.execute("BEGIN")  # one consistent read of every table
        for m, spec in specs.items():
            rows = positions[m].fills if m in positions else 0
            if not rows:
                continue
            snap = conn.execute(q_snap, (m, at_ns)).fetchone()
            mids: list[float] = []
            snap_id = 0
            if snap is not None:
                pos = Position(m, *snap[:6])
                snap_id = int(snap[7])
                mid = snap[6]
                if not mid:  # written before that run's first book
                    got = conn.execute(q_mid, (m, at_ns, snap_id)).fetchone()
                    mid = got[0] if got is not None else None
                if mid:
                    mids.append(float(mid))
            else:
                pos = Position(m)
            later = rows - pos.fills
            first: tuple[Any, ...] | None = (0,)
            if later > 0 and pos.fills > 0:
                first = conn.execute(q_first, (m, later - 1)).fetchone()
            last_px = 0
            if later > 0 and first is not None:
                for row in conn.execute(q_fills, (m, int(first[0]))):
                    fill = row_to_fill(row)
                    if fill.ts_ns < at_ns:
                        apply_fill(pos, fill, spec)
                        last_px = fill.price_ticks
                    elif fill.ts_ns >= at_ns + PNL_AT_SCAN_PAST_NS:
                        break
            if last_px:
                mids.append(float(last_px))
            after = conn.execute(q_after, (m, snap_id, at_ns)).fetchone()
            if after is not None and after[0]:
                mids.append(float(after[0]))
            unreal = max((unrealized_usdc(pos, mid, spec) for mid in mids), default=0.0)
            total += pos.realized_usdc - pos.fees_usdc + unreal
    except sqlite3.Error as exc:
        raise RuntimeFailure(f"journal {path}: cannot read: {exc}") from exc
    finally:
        conn.close()
    return total
