"""Writing the journal of everything the bot did: orders, fills, positions, breakers, commands.

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
returns what to recover after a crash or ``kill -9`` (see :mod:`~flashmm.ops.journal.reader`).
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.accounting import apply_fill
from flashmm.errors import RuntimeFailure
from flashmm.ops.journal.reader import (
    CHECKPOINT_KEY,
    FILL_COLUMNS,
    RecoveredState,
    load_positions,
    pnl_at,
    read_state,
    recent_fill_ids,
)
from flashmm.types import Fill, MarketSpec, Order, Position

__all__ = ["SCHEMA_VERSION", "Journal"]

SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS checkpoint (
    market TEXT PRIMARY KEY,
    lots INTEGER NOT NULL,
    avg_price_ticks REAL NOT NULL,
    realized_usdc REAL NOT NULL,
    fees_usdc REAL NOT NULL,
    volume_usdc REAL NOT NULL,
    fills INTEGER NOT NULL,
    max_client_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS order_event_days (
    day TEXT NOT NULL,
    market TEXT NOT NULL,
    state INTEGER NOT NULL,
    events INTEGER NOT NULL,
    orders INTEGER NOT NULL,
    PRIMARY KEY (day, market, state)
);
"""

#: meta keys the journal keeps for itself
_RESERVED_META = frozenset({"schema_version", "journal_id", CHECKPOINT_KEY})
#: rows moved per compaction step (the writer interleaves steps with normal batches)
_COMPACT_CHUNK = 20_000
_COMPACT_EVERY_S = 3600.0
#: how often the writer looks at the queue when nobody wakes it
_POLL_S = 0.005

# Queue item kinds.
_ORDER, _FILL, _POSITION, _BREAKER, _CONTROL, _EVENT, _META = range(7)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA busy_timeout=30000")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise RuntimeFailure(f"journal {path}: cannot switch SQLite to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _journal_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _private(path: Path, mode: int) -> None:
    """Take group and other permissions off a file or folder we own."""
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.getuid() and (st.st_mode & 0o077):
            os.chmod(path, mode)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, separators=(",", ":"), sort_keys=True)


def _position_row(p: Position) -> tuple[Any, ...]:
    """What ``positions`` and ``checkpoint`` store of a position, in their column order."""
    return p.market, p.lots, p.avg_price_ticks, p.realized_usdc, p.fees_usdc, p.volume_usdc, p.fills


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back when the body raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class Journal:
    """The bot's journal: non-blocking writes, batched commits, recovery on start.

    ``Journal(data_dir)`` creates ``<data_dir>/<name>.sqlite`` (the dir 0700,
    the files 0600), takes an exclusive lock on ``<name>.lock`` so two bots
    never share a journal, and starts the writer thread. Call :meth:`close`
    on shutdown.

    A marker file ``<name>.marker`` is kept beside the journal. If the
    marker exists but the journal is missing or empty (0 bytes), or the
    marker says the last run could not write to it, opening refuses with a
    :class:`RuntimeFailure` unless ``new_journal`` is set (a non-empty old
    file is then moved aside to ``<name>.sqlite.old-<time>``).

    Every write method is safe to call from any thread, never blocks on disk,
    and returns the sequence number of the write (``durable_seq`` reaches it
    once it is committed). ``ts_ns`` defaults to the wall clock. Every stored
    text passes through ``redact`` (default: the environment's secrets).

    A write that fails is retried; the first failure is latched in
    :attr:`failure` (and the marker) for the rest of the run, so the caller
    can stop trading and exit non-zero. Order events older than
    ``keep_order_events_s`` (and done orders) are folded into per-day counts
    (``order_event_days``) by the writer, once at start and then hourly.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        name: str = "journal",
        specs: Mapping[str, MarketSpec] | None = None,
        on_durable: Callable[[list[Fill]], None] | None = None,
        batch_max: int = 1000,
        new_journal: bool = False,
        redact: Callable[[str], str] | None = None,
        keep_order_events_s: float | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / f"{name}.sqlite"
        self.marker_path = self.data_dir / f"{name}.marker"
        self.specs: dict[str, MarketSpec] = dict(specs or {})
        self._on_durable = on_durable
        self._batch_max = max(1, batch_max)
        if redact is None:
            from flashmm.logs import make_redactor

            redact = make_redactor()
        self._redact = redact
        self._keep_ns = (
            int(keep_order_events_s * 1e9)
            if keep_order_events_s is not None and keep_order_events_s > 0
            else None
        )
        try:
            missing = [d for d in (self.data_dir, *self.data_dir.parents) if not d.exists()]
            for d in reversed(missing):  # every folder created here is private
                d.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(f"journal: cannot create data dir {self.data_dir}: {exc}") from exc
        _private(self.data_dir, 0o700)
        self._lock_fd = self._take_lock(self.data_dir / f"{name}.lock")
        try:
            self._check_marker(new_journal)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            for f in _journal_files(self.path):
                _private(f, 0o600)
            conn = _connect(self.path)
            try:
                self._open_db(conn)
            finally:
                conn.close()
            self._write_marker(None)
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
        # writer polls every ``_POLL_S`` or when woken by flush/close.
        self._items: deque[tuple[int, int, tuple[Any, ...]]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._durable_seq = 0
        self._durable_cond = threading.Condition()
        self._durable_fills: deque[Fill] = deque()
        self._closed = False
        self.error: BaseException | None = None
        """The last write error, or None once writes succeed again."""
        self.failure: str | None = None
        """The first write error of this run (latched: stays set once writes recover)."""
        self.lost = 0
        """Writes dropped because the journal still failed when it was closed."""
        self.commits = 0
        self.compacted = 0
        """Order events folded into daily counts by this run."""
        self._next_compact = 0.0 if self._keep_ns is not None else float("inf")
        self._compacting = False
        self._bad_table = False
        self._thread = threading.Thread(target=self._run, name="flashmm-journal", daemon=True)
        self._thread.start()

    def _check_marker(self, new_journal: bool) -> None:
        marker = self._read_marker()
        size = self.path.stat().st_size if self.path.exists() else -1
        if marker is not None and size <= 0 and not new_journal:
            what = "missing" if size < 0 else "empty (0 bytes)"
            raise RuntimeFailure(
                f"journal {self.path} is {what} but {self.marker_path.name} says one was kept"
                " there: restore it from a backup, or start with --new-journal to begin an"
                " empty one (positions and history start from zero)"
            )
        failed = marker.get("failed") if marker else None
        if failed and not new_journal:
            raise RuntimeFailure(
                f"journal {self.path}: the last run could not write to it ({failed}); check it"
                f" with sqlite3 {self.path} 'PRAGMA integrity_check', restore a backup, or"
                " start with --new-journal (the old file is moved aside)"
            )
        if new_journal and size > 0:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for f in _journal_files(self.path):
                if f.exists():
                    f.rename(f.with_name(f"{f.name}.old-{stamp}"))
            logger.warning("journal {}: old file moved aside (.old-{})", self.path, stamp)

    def _read_marker(self) -> dict[str, Any] | None:
        try:
            text = self.marker_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuntimeFailure(f"journal marker {self.marker_path}: cannot read: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _write_marker(self, failed: str | None) -> None:
        data = {"journal": self.path.name, "journal_id": self._meta.get("journal_id")}
        if failed:
            data["failed"] = failed
        tmp = self.marker_path.with_name(self.marker_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (json.dumps(data) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.marker_path)

    def _open_db(self, conn: sqlite3.Connection) -> None:
        conn.executescript(_SCHEMA)
        with _transaction(conn):
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("journal_id", f"{time.time_ns():x}-{os.getpid()}"),
                ],
            )
            self._meta: dict[str, str] = {
                str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")
            }
            positions, max_ids, _, last = load_positions(conn, self.specs)
            self._positions = positions
            self._max_ids = max_ids
            if self._meta.get(CHECKPOINT_KEY) != str(last):
                # first open of a journal without a checkpoint (or fills after it)
                self._write_checkpoint(conn, set(positions) | set(max_ids), last)
                self._meta[CHECKPOINT_KEY] = str(last)
        self._fill_ids = recent_fill_ids(conn)

    def _write_checkpoint(self, conn: sqlite3.Connection, markets: Iterable[str], row: int) -> None:
        rows = [
            (*_position_row(self._positions.get(m) or Position(m)), self._max_ids.get(m, 0))
            for m in markets
        ]
        conn.executemany(
            "INSERT OR REPLACE INTO checkpoint (market, lots, avg_price_ticks, realized_usdc,"
            " fees_usdc, volume_usdc, fills, max_client_id) VALUES (?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CHECKPOINT_KEY, str(row))
        )

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
        dq = self._durable_fills
        return [dq.popleft() for _ in range(len(dq))]

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
        return self._put(_POSITION, (*_position_row(pos), unrealized_usdc, mid_ticks, ts))

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
        returns it at once; it is on disk once :meth:`flush` returns. The
        last value set before a crash may be lost with the batch it was in,
        like any other row. Keys are free-form except ``schema_version``,
        ``journal_id`` and ``checkpoint_fill_row`` (kept by the journal).
        """
        if key in _RESERVED_META:
            raise ValueError(f"journal meta key {key!r} is reserved")
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

    def pnl_at(self, at_ns: int, positions: Mapping[str, Position] | None = None) -> float:
        """The P&L the journal had at ``at_ns`` (:func:`~flashmm.ops.journal.reader.pnl_at`;
        ``positions`` as :meth:`load_state` recovered them, by default the positions of
        every fill committed). Flushes first."""
        if not self._closed and self.pending:
            self.flush()
        if positions is None:
            positions = dict(self._positions)
        return pnl_at(self.path, self.specs, at_ns, positions)

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
                if self.error is None and (
                    self._compacting or time.monotonic() >= self._next_compact
                ):
                    conn = self._compact_step(conn)
                    continue
                self._wake.wait(_POLL_S)
                self._wake.clear()
                continue
            n = min(len(items), self._batch_max)
            batch = [items.popleft() for _ in range(n)]
            delay = 0.05
            while True:
                try:
                    if conn is None:
                        conn = _connect(self.path)
                    self._commit(conn, batch)
                    break
                except (sqlite3.Error, OSError) as exc:
                    self._failed(conn, exc)
                    conn = None
                    if self._stop:
                        # closing while the journal still fails: give up, say how much
                        self.lost = len(batch) + len(items)
                        items.clear()
                        logger.error("journal {}: {} write(s) lost: {}", self.path, self.lost, exc)
                        batch = []
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
            if not batch:
                break
            if self.error is not None:
                logger.warning("journal {}: writes succeed again", self.path)
                self.error = None
                if not self._bad_table:
                    with contextlib.suppress(OSError):
                        self._write_marker(None)  # nothing lost: every failed batch was retried
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
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        with self._durable_cond:
            self._durable_cond.notify_all()

    def _failed(self, conn: sqlite3.Connection | None, exc: BaseException) -> None:
        """Latch a write error (log, marker) and drop the connection."""
        what = f"{type(exc).__name__}: {exc}"
        if self.failure is None:
            self.failure = what
        if self.error is None:  # a new episode: the marker says so until writes succeed
            logger.error("journal {}: write failed, retrying: {}", self.path, exc)
            try:
                self._write_marker(what)
            except OSError as mexc:
                logger.error("journal marker {}: cannot write: {}", self.marker_path, mexc)
        self.error = exc
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _compact_step(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """Fold one chunk of old order events (and done orders) into daily counts."""
        keep = self._keep_ns
        if keep is None:
            self._next_compact = float("inf")
            return conn
        cutoff = time.time_ns() - keep
        try:
            if conn is None:
                conn = _connect(self.path)
            with _transaction(conn):
                row = conn.execute(
                    "SELECT MAX(id), COUNT(*) FROM (SELECT id FROM order_events WHERE ts < ?"
                    " ORDER BY id LIMIT ?)",
                    (cutoff, _COMPACT_CHUNK),
                ).fetchone()
                hi, n = (int(row[0]), int(row[1])) if row[0] is not None else (0, 0)
                if n:
                    conn.execute(
                        "INSERT INTO order_event_days (day, market, state, events, orders)"
                        " SELECT date(ts / 1000000000, 'unixepoch'), market, state, COUNT(*),"
                        " COUNT(DISTINCT client_id) FROM order_events WHERE id <= ? AND ts < ?"
                        " GROUP BY 1, 2, 3 ON CONFLICT (day, market, state) DO UPDATE SET"
                        " events = events + excluded.events, orders = orders + excluded.orders",
                        (hi, cutoff),
                    )
                    conn.execute("DELETE FROM order_events WHERE id <= ? AND ts < ?", (hi, cutoff))
                    conn.execute(
                        "DELETE FROM orders WHERE rowid IN (SELECT rowid FROM orders"
                        " WHERE state = 3 AND ts < ? LIMIT ?)",
                        (cutoff, _COMPACT_CHUNK),
                    )
        except (sqlite3.Error, OSError) as exc:
            self._compacting = False
            self._next_compact = time.monotonic() + _COMPACT_EVERY_S
            # not retried: other tables may still work, but this file needs a look
            self._bad_table = True
            self._failed(conn, exc)
            return None
        self.compacted += n
        self._compacting = n >= _COMPACT_CHUNK
        if not self._compacting:
            self._next_compact = time.monotonic() + _COMPACT_EVERY_S
            if self.compacted:
                logger.info(
                    "journal: {} order event(s) older than {:g} days folded into daily counts",
                    self.compacted,
                    keep / 86400e9,
                )
        return conn

    def _commit(
        self, conn: sqlite3.Connection, batch: list[tuple[int, int, tuple[Any, ...]]]
    ) -> None:
        # Tables are independent, so rows are grouped per table (executemany
        # keeps their order); this keeps the writer's GIL time short.
        rows: dict[int, list[tuple[Any, ...]]] = {}
        for _seq, kind, p in batch:
            rows.setdefault(kind, []).append(p)
        red = self._redact
        # positions and client ids after this batch; taken over only once committed
        positions: dict[str, Position] = {}
        max_ids: dict[str, int] = {}
        last_row: int | None = None
        with _transaction(conn):
            for kind, items in rows.items():
                if kind == _FILL:
                    for (f,) in items:
                        cur = conn.execute(
                            f"INSERT OR IGNORE INTO fills ({FILL_COLUMNS})"
                            " VALUES (?,?,?,?,?,?,?,?,?)",
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
                            ),
                        )
                        if cur.rowcount != 1:
                            continue  # a repeat of a fill journaled long ago
                        last_row = cur.lastrowid
                        pos = positions.get(f.market)
                        if pos is None:
                            old = self._positions.get(f.market) or Position(f.market)
                            pos = positions[f.market] = dataclasses.replace(old, extra={})
                        apply_fill(pos, f, self.specs.get(f.market))
                        m = f.market
                        max_ids[m] = max(max_ids.get(m, self._max_ids.get(m, 0)), f.client_id)
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
                        [(p[0], p[1], p[6], p[5], red(p[9]), p[8]) for p in items],
                    )
                    for p in items:
                        m, cid = p[0], p[1]
                        if cid > max_ids.get(m, self._max_ids.get(m, 0)):
                            max_ids[m] = cid
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
                        [(n, st, red(r), la, ts) for n, st, r, la, ts in items],
                    )
                elif kind == _CONTROL:
                    conn.executemany(
                        "INSERT INTO control_commands (cmd, args, ok, result, ts)"
                        " VALUES (?,?,?,?,?)",
                        [(c, red(a), ok, red(r), ts) for c, a, ok, r, ts in items],
                    )
                elif kind == _EVENT:
                    conn.executemany(
                        "INSERT INTO events (kind, market, data, ts) VALUES (?,?,?,?)",
                        [(k, m, red(d), ts) for k, m, d, ts in items],
                    )
                elif kind == _META:
                    conn.executemany(
                        "INSERT INTO meta (key, value) VALUES (?,?)"
                        " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        items,
                    )
            if max_ids:
                saved_pos, saved_ids = self._positions, self._max_ids
                self._positions = {**saved_pos, **positions}
                self._max_ids = {**saved_ids, **max_ids}
                try:
                    row = last_row if last_row is not None else int(self._meta[CHECKPOINT_KEY])
                    self._write_checkpoint(conn, max_ids, row)
                finally:
                    self._positions, self._max_ids = saved_pos, saved_ids
        if max_ids:
            self._positions.update(positions)
            self._max_ids.update(max_ids)
            if last_row is not None:
                self._meta[CHECKPOINT_KEY] = str(last_row)
