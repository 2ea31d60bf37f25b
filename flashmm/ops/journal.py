"""Crash-safe journal of everything the bot did: orders, fills, positions, breakers, commands.

One SQLite file in WAL mode per bot. The engine's hot path only appends a
tuple to a queue (``journal.fill(fill)``, ``journal.order_event(order, ts)``
...) and returns; a writer thread drains the queue and commits in batches.

Fill durability: :meth:`Journal.fill` returns a sequence number. Once the
batch holding it is committed (``synchronous=FULL``: fsynced), the fill is
reported by :meth:`Journal.poll_durable`, ``journal.durable_seq`` moves past
its number, and it is handed to the ``on_durable`` callback (run in the
writer thread: use ``loop.call_soon_threadsafe``) if one was given. Show a
fill as done only then.

On start, :meth:`Journal.load_state` (or :func:`read_state` on a file)
returns what is needed to recover after a crash or ``kill -9``: all fills,
the position per market derived from them, orders not yet done, the last
state of every breaker and the last mode command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.errors import RuntimeFailure
from flashmm.types import Fill, Liquidity, MarketSpec, Order, OrderState, Position, Side

__all__ = [
    "MODE_COMMANDS",
    "BreakerRecord",
    "ControlRecord",
    "Journal",
    "PositionSnapshot",
    "RecoveredState",
    "apply_fill",
    "read_state",
]

SCHEMA_VERSION = 1

#: Control commands that change the bot's mode; the last one is recovered on start.
MODE_COMMANDS = frozenset({"pause", "resume", "emergency_stop", "reset"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    market TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    side INTEGER NOT NULL,
    price_ticks INTEGER NOT NULL,
    size_lots INTEGER NOT NULL,
    remaining INTEGER NOT NULL,
    state INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (market, client_id)
);
CREATE INDEX IF NOT EXISTS orders_live ON orders (state) WHERE state != 3;
CREATE TABLE IF NOT EXISTS order_events (
    id INTEGER PRIMARY KEY,
    market TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    state INTEGER NOT NULL,
    remaining INTEGER NOT NULL,
    note TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY,
    fill_id TEXT NOT NULL UNIQUE,
    market TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    side INTEGER NOT NULL,
    price_ticks INTEGER NOT NULL,
    size_lots INTEGER NOT NULL,
    fee_usdc REAL NOT NULL,
    liquidity INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    id INTEGER PRIMARY KEY,
    market TEXT NOT NULL,
    lots INTEGER NOT NULL,
    avg_price_ticks REAL NOT NULL,
    realized_usdc REAL NOT NULL,
    fees_usdc REAL NOT NULL,
    volume_usdc REAL NOT NULL,
    fills INTEGER NOT NULL,
    unrealized_usdc REAL,
    mid_ticks REAL,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS positions_market ON positions (market, id);
CREATE TABLE IF NOT EXISTS breaker_events (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    latched INTEGER NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS breaker_events_name ON breaker_events (name, id);
CREATE TABLE IF NOT EXISTS control_commands (
    id INTEGER PRIMARY KEY,
    cmd TEXT NOT NULL,
    args TEXT NOT NULL,
    ok INTEGER NOT NULL,
    result TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    market TEXT,
    data TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
"""

# Queue item kinds.
_ORDER, _FILL, _POSITION, _BREAKER, _CONTROL, _EVENT, _META = range(7)


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

    ``positions`` are rebuilt from ``fills`` (the source of truth), not from
    snapshots; ``snapshots`` are the last ones journaled, for comparison.
    ``realized_usdc`` excludes fees; net P&L is ``realized_usdc - fees_usdc``.
    """

    fills: list[Fill] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    open_orders: list[Order] = field(default_factory=list)
    breakers: dict[str, BreakerRecord] = field(default_factory=dict)
    snapshots: dict[str, PositionSnapshot] = field(default_factory=dict)
    last_mode_command: ControlRecord | None = None
    #: the highest client id journaled per market (orders and fills, done or not)
    max_client_ids: dict[str, int] = field(default_factory=dict)

    @property
    def latched_breakers(self) -> dict[str, BreakerRecord]:
        """Breakers whose last state is latched (they stay tripped until a reset)."""
        return {name: rec for name, rec in self.breakers.items() if rec.latched}

    @property
    def fill_ids(self) -> set[str]:
        return {f.fill_id for f in self.fills}


def apply_fill(pos: Position, fill: Fill, spec: MarketSpec | None = None) -> None:
    """Update ``pos`` with ``fill`` (average-cost accounting).

    Realized P&L (excluding fees) is booked when a fill reduces the position;
    fees go to ``fees_usdc``. Without ``spec`` one tick times one lot counts
    as 1 USDC.
    """
    unit = float(spec.tick_size * spec.lot_size) if spec is not None else 1.0
    size = fill.size_lots
    price = float(fill.price_ticks)
    signed = int(fill.side) * size
    lots = pos.lots
    if lots == 0 or (lots > 0) == (signed > 0):
        total = abs(lots) + size
        pos.avg_price_ticks = (pos.avg_price_ticks * abs(lots) + price * size) / total
        pos.lots = lots + signed
    else:
        closing = min(size, abs(lots))
        direction = 1 if lots > 0 else -1
        pos.realized_usdc += closing * (price - pos.avg_price_ticks) * direction * unit
        pos.lots = lots + signed
        if pos.lots == 0:
            pos.avg_price_ticks = 0.0
        elif (pos.lots > 0) != (lots > 0):
            pos.avg_price_ticks = price  # flipped: the rest opens at this price
    pos.fees_usdc += fill.fee_usdc
    pos.volume_usdc += price * size * unit
    pos.fills += 1


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA busy_timeout=30000")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise RuntimeFailure(f"journal {path}: cannot switch SQLite to WAL mode (got {mode})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _row_to_fill(row: tuple[Any, ...]) -> Fill:
    fill_id, market, client_id, side, price, size, fee, liq, ts_ns = row
    return Fill(market, client_id, Side(side), price, size, fee, Liquidity(liq), ts_ns, fill_id)


def read_state(
    db_path: str | os.PathLike[str], specs: Mapping[str, MarketSpec] | None = None
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
        rows = conn.execute(
            "SELECT fill_id, market, client_id, side, price_ticks, size_lots, fee_usdc,"
            " liquidity, ts_ns FROM fills ORDER BY id"
        ).fetchall()
        for row in rows:
            fill = _row_to_fill(row)
            state.fills.append(fill)
            pos = state.positions.get(fill.market)
            if pos is None:
                pos = state.positions[fill.market] = Position(fill.market)
                if fill.market not in specs:
                    pos.extra["no_spec"] = 1.0
            apply_fill(pos, fill, specs.get(fill.market))
        for m, cid, side, price, size, rem, st, created in conn.execute(
            "SELECT market, client_id, side, price_ticks, size_lots, remaining, state,"
            " created_ns FROM orders WHERE state != 3 ORDER BY created_ns, client_id"
        ):
            state.open_orders.append(
                Order(m, cid, Side(side), price, size, rem, OrderState(st), created)
            )
        for m, cid in conn.execute(
            "SELECT market, MAX(client_id) FROM (SELECT market, client_id FROM orders"
            " UNION ALL SELECT market, client_id FROM fills) GROUP BY market"
        ):
            state.max_client_ids[m] = int(cid)
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
    except sqlite3.Error as exc:
        raise RuntimeFailure(f"journal {path}: cannot read: {exc}") from exc
    finally:
        conn.close()
    return state


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, separators=(",", ":"), sort_keys=True)


class Journal:
    """The bot's journal: non-blocking writes, batched commits, recovery on start.

    ``Journal(data_dir)`` creates ``<data_dir>/<name>.sqlite`` (and the dir),
    takes an exclusive lock on ``<name>.lock`` so two bots never share a
    journal, and starts the writer thread. Call :meth:`close` on shutdown.

    Every write method is safe to call from any thread, never blocks on disk,
    and returns the sequence number of the write (``durable_seq`` reaches it
    once it is committed). ``ts_ns`` defaults to the wall clock.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        name: str = "journal",
        specs: Mapping[str, MarketSpec] | None = None,
        on_durable: Callable[[list[Fill]], None] | None = None,
        batch_max: int = 1000,
        interval_s: float = 0.005,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF/NORMAL/FULL/EXTRA, was {synchronous!r}")
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / f"{name}.sqlite"
        self.specs: dict[str, MarketSpec] = dict(specs or {})
        self._on_durable = on_durable
        self._batch_max = max(1, batch_max)
        self._interval = max(0.0005, interval_s)
        self._synchronous = synchronous.upper()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(f"journal: cannot create data dir {self.data_dir}: {exc}") from exc
        self._lock_fd = self._take_lock(self.data_dir / f"{name}.lock")
        try:
            conn = _connect(self.path, self._synchronous)
            try:
                conn.executescript(_SCHEMA)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._fill_ids: set[str] = {r[0] for r in conn.execute("SELECT fill_id FROM fills")}
                self._meta: dict[str, str] = {
                    str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")
                }
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            self._release_lock()
            raise RuntimeFailure(f"journal {self.path}: cannot open: {exc}") from exc
        except BaseException:
            self._release_lock()
            raise

        self._session = time.time_ns()
        self._seq = itertools.count(1)
        self._auto_ids = itertools.count(1)
        self._last_seq = 0
        self._put_lock = threading.Lock()
        # The hot path only appends here (no syscall, no thread wake-up); the
        # writer polls every ``interval_s`` or when woken by flush/close.
        self._items: deque[tuple[int, int, tuple[Any, ...]]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._durable_seq = 0
        self._durable_cond = threading.Condition()
        self._durable_fills: deque[Fill] = deque()
        self._closed = False
        self.error: BaseException | None = None
        """The last write error, or None once writes succeed again."""
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="flashmm-journal", daemon=True)
        self._thread.start()

    # -- lifecycle ----------------------------------------------------------

    def _take_lock(self, lock_path: Path) -> int:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise RuntimeFailure(f"journal: cannot create lock file {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise RuntimeFailure(
                f"journal {self.path} is in use by another running bot (pid {holder});"
                " stop it or give this bot another data dir / profile"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until everything written so far is committed. False on timeout."""
        return self.wait_durable(self._last_seq, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Drain the queue, commit, stop the writer and release the lock.

        Returns False if the writer did not finish in ``timeout`` (data still
        queued is then lost). Idempotent.
        """
        if self._closed:
            return True
        with self._put_lock:
            self._closed = True
            self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if done:
            self._release_lock()
        else:
            logger.error("journal writer did not stop within {}s; data may be lost", timeout)
        return done

    @property
    def closed(self) -> bool:
        return self._closed

    # -- durability -----------------------------------------------------------

    @property
    def durable_seq(self) -> int:
        """Every write with a sequence number <= this is committed to disk."""
        return self._durable_seq

    @property
    def last_seq(self) -> int:
        """Sequence number of the last write accepted."""
        return self._last_seq

    @property
    def pending(self) -> int:
        """Writes accepted but not yet committed."""
        return self._last_seq - self._durable_seq

    def wait_durable(self, seq: int, timeout: float | None = 5.0) -> bool:
        """Block until ``durable_seq >= seq``. Not for the hot path."""
        self._wake.set()
        with self._durable_cond:
            return self._durable_cond.wait_for(
                lambda: self._durable_seq >= seq or not self._thread.is_alive(), timeout
            ) and (self._durable_seq >= seq)

    def poll_durable(self) -> list[Fill]:
        """Fills committed since the last call, oldest first (cheap; call every loop).

        Only when no ``on_durable`` callback was given (then the callback gets them).
        """
        out: list[Fill] = []
        dq = self._durable_fills
        while dq:
            out.append(dq.popleft())
        return out

    def has_fill(self, fill_id: str) -> bool:
        """True if a fill with this id was journaled (now or in an earlier run)."""
        return fill_id in self._fill_ids

    # -- writes (hot path) ----------------------------------------------------

    def _put(self, kind: int, payload: tuple[Any, ...]) -> int:
        with self._put_lock:
            if self._closed:
                raise RuntimeFailure("journal is closed")
            seq = next(self._seq)
            self._last_seq = seq
            self._items.append((seq, kind, payload))
        return seq

    def fill(self, fill: Fill) -> int | None:
        """Journal a fill. Returns its sequence number, or None for a duplicate.

        A fill whose ``fill_id`` was already journaled (a venue replaying
        after a restart) is ignored and must not be applied again. A fill
        without an id gets a unique ``auto-...`` id; :meth:`poll_durable`
        returns it with that id.
        """
        if not fill.fill_id:
            fill = dataclasses.replace(fill, fill_id=f"auto-{self._session}-{next(self._auto_ids)}")
        elif fill.fill_id in self._fill_ids:
            return None
        self._fill_ids.add(fill.fill_id)
        return self._put(_FILL, (fill,))

    def order_event(self, order: Order, ts_ns: int | None = None, note: str = "") -> int:
        """Journal an order's current state (new, accepted, partly filled, cancelled...)."""
        ts = time.time_ns() if ts_ns is None else ts_ns
        return self._put(
            _ORDER,
            (
                order.market,
                order.client_id,
                int(order.side),
                order.price_ticks,
                order.size_lots,
                order.remaining_lots,
                int(order.state),
                order.created_ns,
                ts,
                note,
            ),
        )

    def orders(self, orders: Iterable[Order], ts_ns: int | None = None, note: str = "") -> int:
        """Journal several orders; returns the last sequence number (0 if none)."""
        seq = 0
        for order in orders:
            seq = self.order_event(order, ts_ns, note)
        return seq

    def position_snapshot(
        self,
        pos: Position,
        ts_ns: int | None = None,
        *,
        mid_ticks: float | None = None,
        unrealized_usdc: float | None = None,
    ) -> int:
        """Journal a position / P&L snapshot (for reports; recovery uses fills)."""
        ts = time.time_ns() if ts_ns is None else ts_ns
        return self._put(
            _POSITION,
            (
                pos.market,
                pos.lots,
                pos.avg_price_ticks,
                pos.realized_usdc,
                pos.fees_usdc,
                pos.volume_usdc,
                pos.fills,
                unrealized_usdc,
                mid_ticks,
                ts,
            ),
        )

    def breaker(
        self,
        name: str,
        state: str,
        reason: str = "",
        ts_ns: int | None = None,
        *,
        latched: bool = False,
    ) -> int:
        """Journal a breaker state change. ``latched`` ones survive restarts until a reset."""
        ts = time.time_ns() if ts_ns is None else ts_ns
        return self._put(_BREAKER, (name, state, reason, int(latched), ts))

    def control(
        self,
        cmd: str,
        args: Mapping[str, Any] | None,
        ok: bool,
        result: Mapping[str, Any] | None = None,
        ts_ns: int | None = None,
    ) -> int:
        """Journal a control command and its outcome (``result`` or ``{"error": ...}``)."""
        ts = time.time_ns() if ts_ns is None else ts_ns
        return self._put(
            _CONTROL, (cmd, _dumps(dict(args or {})), int(ok), _dumps(result or {}), ts)
        )

    def event(
        self,
        kind: str,
        data: Mapping[str, Any] | None = None,
        ts_ns: int | None = None,
        *,
        market: str | None = None,
    ) -> int:
        """Journal a generic event (reconciliation difference, restart, ...)."""
        ts = time.time_ns() if ts_ns is None else ts_ns
        return self._put(_EVENT, (kind, market, _dumps(dict(data or {})), ts))

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing any earlier one), durably.

        Written through the writer like every other row: :meth:`get_meta`
        returns it at once; it is on disk once :meth:`flush` returns (or
        ``durable_seq`` reaches ``last_seq`` as it was after this call). The
        last value set before a crash may be lost with the batch it was in,
        like any other row. Keys are free-form; ``schema_version`` is reserved.
        """
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("journal meta keys and values are str")
        if key == "schema_version":
            raise ValueError("journal meta key 'schema_version' is reserved")
        self._put(_META, (key, value))
        self._meta[key] = value

    def get_meta(self, key: str) -> str | None:
        """The last value stored under ``key`` (this run or an earlier one), or None."""
        return self._meta.get(key)

    # -- reads ------------------------------------------------------------------

    def load_state(
        self, specs: Mapping[str, MarketSpec] | None = None, timeout: float = 10.0
    ) -> RecoveredState:
        """What to recover on start (see :class:`RecoveredState`). Flushes first."""
        if not self._closed and self.pending:
            self.flush(timeout)
        return read_state(self.path, specs if specs is not None else self.specs)

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` generic events (newest last), optionally of one kind."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
        try:
            sql = "SELECT kind, market, data, ts FROM events"
            params: tuple[Any, ...] = ()
            if kind is not None:
                sql += " WHERE kind = ?"
                params = (kind,)
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        finally:
            conn.close()
        return [
            {"kind": k, "market": m, "data": json.loads(d), "ts_ns": ts}
            for k, m, d, ts in reversed(rows)
        ]

    # -- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        items = self._items
        while True:
            if not items:
                if self._stop:
                    break
                self._wake.wait(self._interval)
                self._wake.clear()
                continue
            n = min(len(items), self._batch_max)
            batch = [items.popleft() for _ in range(n)]
            delay = 0.05
            while True:
                try:
                    if conn is None:
                        conn = _connect(self.path, self._synchronous)
                    self._commit(conn, batch)
                    break
                except (sqlite3.Error, OSError) as exc:
                    if self.error is None:
                        logger.error("journal {}: write failed, retrying: {}", self.path, exc)
                    self.error = exc
                    with contextlib.suppress(sqlite3.Error):
                        if conn is not None:
                            conn.close()
                    conn = None
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
            if self.error is not None:
                logger.info("journal {}: writes succeed again", self.path)
                self.error = None
            self.commits += 1
            fills = [p[0] for _, kind, p in batch if kind == _FILL]
            if self._on_durable is None:
                self._durable_fills.extend(fills)
            with self._durable_cond:
                self._durable_seq = batch[-1][0]
                self._durable_cond.notify_all()
            if fills and self._on_durable is not None:
                try:
                    self._on_durable(fills)
                except Exception:
                    logger.exception("journal on_durable callback failed")
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.close()
        with self._durable_cond:
            self._durable_cond.notify_all()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[tuple[int, int, tuple[Any, ...]]]) -> None:
        # Tables are independent, so rows are grouped per table (executemany
        # keeps their order); this keeps the writer's GIL time short.
        rows: dict[int, list[tuple[Any, ...]]] = {}
        for _seq, kind, p in batch:
            rows.setdefault(kind, []).append(p)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, items in rows.items():
                if kind == _FILL:
                    conn.executemany(
                        "INSERT OR IGNORE INTO fills (fill_id, market, client_id, side,"
                        " price_ticks, size_lots, fee_usdc, liquidity, ts_ns)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        [
                            (
                                f.fill_id,
                                f.market,
                                f.client_id,
                                int(f.side),
                                f.price_ticks,
                                f.size_lots,
                                f.fee_usdc,
                                int(f.liquidity),
                                f.ts_ns,
                            )
                            for (f,) in items
                        ],
                    )
                elif kind == _ORDER:
                    conn.executemany(
                        "INSERT INTO orders (market, client_id, side, price_ticks, size_lots,"
                        " remaining, state, created_ns, ts) VALUES (?,?,?,?,?,?,?,?,?)"
                        " ON CONFLICT (market, client_id) DO UPDATE SET side=excluded.side,"
                        " price_ticks=excluded.price_ticks, size_lots=excluded.size_lots,"
                        " remaining=excluded.remaining, state=excluded.state,"
                        " created_ns=excluded.created_ns, ts=excluded.ts",
                        [p[:9] for p in items],
                    )
                    conn.executemany(
                        "INSERT INTO order_events (market, client_id, state, remaining, note, ts)"
                        " VALUES (?,?,?,?,?,?)",
                        [(p[0], p[1], p[6], p[5], p[9], p[8]) for p in items],
                    )
                elif kind == _POSITION:
                    conn.executemany(
                        "INSERT INTO positions (market, lots, avg_price_ticks, realized_usdc,"
                        " fees_usdc, volume_usdc, fills, unrealized_usdc, mid_ticks, ts)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?)",
                        items,
                    )
                elif kind == _BREAKER:
                    conn.executemany(
                        "INSERT INTO breaker_events (name, state, reason, latched, ts)"
                        " VALUES (?,?,?,?,?)",
                        items,
                    )
                elif kind == _CONTROL:
                    conn.executemany(
                        "INSERT INTO control_commands (cmd, args, ok, result, ts)"
                        " VALUES (?,?,?,?,?)",
                        items,
                    )
                elif kind == _EVENT:
                    conn.executemany(
                        "INSERT INTO events (kind, market, data, ts) VALUES (?,?,?,?)", items
                    )
                elif kind == _META:
                    conn.executemany(
                        "INSERT INTO meta (key, value) VALUES (?,?)"
                        " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        items,
                    )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
