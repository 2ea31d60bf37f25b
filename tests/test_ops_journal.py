"""Journal: non-blocking writes, durability reporting, recovery and crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from flashmm.accounting import apply_fill
from flashmm.errors import RuntimeFailure
from flashmm.ops.journal import Journal, read_state
from flashmm.types import Fill, Liquidity, MarketSpec, Order, OrderState, Position, Side

ROOT = Path(__file__).resolve().parents[1]
SPEC = MarketSpec("SEI/USDC", Decimal("0.0001"), Decimal("1"), "seiusdt")
SPECS = {SPEC.symbol: SPEC}


def make_fill(i: int, side: Side = Side.BUY, price: int = 5000, size: int = 10, **kw) -> Fill:
    return Fill(
        kw.get("market", SPEC.symbol),
        kw.get("client_id", i),
        side,
        price,
        size,
        kw.get("fee", 0.001),
        Liquidity.MAKER,
        1_000 + i,
        kw.get("fill_id", f"f{i}"),
    )


def test_open_creates_wal_database(tmp_path: Path) -> None:
    with Journal(tmp_path / "data") as j:
        assert j.path.exists()
    conn = sqlite3.connect(j.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {
        "orders",
        "order_events",
        "fills",
        "positions",
        "breaker_events",
        "control_commands",
        "events",
    } <= tables


def test_fill_returns_seq_and_poll_durable_reports_it(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        seqs = [j.fill(make_fill(i)) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert j.flush(5.0)
        assert j.durable_seq == 5
        assert j.pending == 0
        durable = j.poll_durable()
        assert [f.fill_id for f in durable] == ["f0", "f1", "f2", "f3", "f4"]
        assert j.poll_durable() == []


def test_on_durable_callback_runs_after_commit(tmp_path: Path) -> None:
    got: list[str] = []
    seen = threading.Event()

    def cb(fills: list[Fill]) -> None:
        # The fill must already be readable from another connection.
        state = read_state(tmp_path / "journal.sqlite")
        assert {f.fill_id for f in fills} <= state.fill_ids
        got.extend(f.fill_id for f in fills)
        seen.set()

    with Journal(tmp_path, on_durable=cb) as j:
        j.fill(make_fill(1))
        assert seen.wait(5.0)
    assert got == ["f1"]


def test_duplicate_fill_id_is_ignored_across_restarts(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        assert j.fill(make_fill(1)) is not None
        assert j.fill(make_fill(1)) is None
    with Journal(tmp_path) as j:
        assert j.has_fill("f1")
        assert j.fill(make_fill(1)) is None
        assert j.fill(make_fill(2)) is not None
        state = j.load_state(SPECS)
    assert [f.fill_id for f in state.fills] == ["f1", "f2"]


def test_fill_without_id_gets_unique_auto_id(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.fill(make_fill(1, fill_id=""))
        j.fill(make_fill(1, fill_id=""))
        j.flush()
        ids = [f.fill_id for f in j.poll_durable()]
    assert len(set(ids)) == 2
    assert all(i.startswith("auto-") for i in ids)


def test_writes_do_not_block_the_caller(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        # every call returns its sequence number at once; the disk work happens in the
        # writer thread (the per-call cost is a benchmark figure, not asserted here)
        seqs = [j.fill(make_fill(i)) for i in range(20_000)]
        assert seqs == sorted(seqs) and None not in seqs
        assert j.flush(20.0)
        assert j.commits < 20_000  # batched
        assert j.load_state().fill_count == 20_000


def test_load_state_recovers_everything(tmp_path: Path) -> None:
    with Journal(tmp_path, specs=SPECS) as j:
        live = Order(SPEC.symbol, 7, Side.BUY, 4990, 10, 10, OrderState.PENDING_NEW, 5)
        j.order_event(live, 10)
        live.state = OrderState.OPEN
        j.order_event(live, 11, note="accepted")
        done = Order(SPEC.symbol, 8, Side.SELL, 5010, 10, 0, OrderState.DONE, 6)
        j.order_event(done, 12)
        j.fill(make_fill(1, Side.BUY, price=5000, size=10, fee=0.01))
        j.fill(make_fill(2, Side.BUY, price=5100, size=10, fee=0.01))
        j.fill(make_fill(3, Side.SELL, price=5200, size=5, fee=-0.005))
        j.breaker("drawdown", "tripped", "pnl < -50", 20, latched=True)
        j.breaker("stale_feed", "tripped", "no data 5s", 21)
        j.breaker("stale_feed", "ok", "", 22)
        j.control("pause", {}, True, {"state": "paused"}, 30)
        j.control("status", {}, True, {}, 31)
        j.control("resume", {}, False, {"error": "latched"}, 32)
        pos = Position(SPEC.symbol, lots=15)
        j.position_snapshot(pos, 40, mid_ticks=5150.0, unrealized_usdc=0.1)
        j.event("reconcile_diff", {"venue_lots": 15, "ours": 14}, 50, market=SPEC.symbol)

    state = read_state(tmp_path / "journal.sqlite", SPECS)
    assert [o.client_id for o in state.open_orders] == [7]
    assert state.open_orders[0].state is OrderState.OPEN
    assert len(state.fills) == 3
    p = state.positions[SPEC.symbol]
    assert p.lots == 15
    assert p.avg_price_ticks == pytest.approx(5050.0)
    # sold 5 lots at 5200 vs avg 5050: 150 ticks * 5 lots * 0.0001 USDC
    assert p.realized_usdc == pytest.approx(150 * 5 * 0.0001)
    assert p.fees_usdc == pytest.approx(0.015)
    assert p.fills == 3
    assert set(state.breakers) == {"drawdown", "stale_feed"}
    assert state.breakers["stale_feed"].state == "ok"
    assert set(state.latched_breakers) == {"drawdown"}
    assert state.latched_breakers["drawdown"].reason == "pnl < -50"
    assert state.last_mode_command is not None
    assert state.last_mode_command.cmd == "pause"
    assert state.snapshots[SPEC.symbol].lots == 15
    with Journal(tmp_path) as j:
        ev = j.events("reconcile_diff")
    assert ev == [
        {
            "kind": "reconcile_diff",
            "market": SPEC.symbol,
            "data": {"ours": 14, "venue_lots": 15},
            "ts_ns": 50,
        }
    ]


@pytest.mark.parametrize(
    ("fills", "lots", "avg", "realized_ticks"),
    [
        ([(Side.BUY, 100, 2), (Side.SELL, 110, 2)], 0, 0.0, 20),
        ([(Side.SELL, 100, 2), (Side.BUY, 90, 1)], -1, 100.0, 10),
        ([(Side.BUY, 100, 2), (Side.SELL, 90, 5)], -3, 90.0, -20),
        ([(Side.BUY, 100, 1), (Side.BUY, 200, 1)], 2, 150.0, 0),
    ],
)
def test_apply_fill_average_cost(
    fills: list[tuple[Side, int, int]], lots: int, avg: float, realized_ticks: float
) -> None:
    pos = Position("X")
    for i, (side, price, size) in enumerate(fills):
        apply_fill(pos, Fill("X", i, side, price, size, 0.0, Liquidity.TAKER, i, str(i)))
    assert pos.lots == lots
    assert pos.avg_price_ticks == pytest.approx(avg)
    assert pos.realized_usdc == pytest.approx(realized_ticks)


def test_second_journal_on_same_dir_is_refused(tmp_path: Path) -> None:
    with (
        Journal(tmp_path),
        pytest.raises(RuntimeFailure, match="in use by another running bot"),
    ):
        Journal(tmp_path)
    Journal(tmp_path).close()  # lock released on close


def test_write_after_close_raises(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    assert j.close()
    assert j.close()  # idempotent
    with pytest.raises(RuntimeFailure, match="closed"):
        j.fill(make_fill(1))


def test_read_state_of_missing_file_is_empty(tmp_path: Path) -> None:
    state = read_state(tmp_path / "nope.sqlite")
    assert state.fills == [] and state.positions == {} and state.open_orders == []


_WRITER = """
import sys, time
from flashmm.ops.journal import Journal
from flashmm.types import Fill, Liquidity, Side

j = Journal(sys.argv[1])
i = 0
while True:
    for _ in range(7):
        i += 1
        j.fill(Fill("SEI/USDC", i, Side.BUY, 5000, 1, 0.0, Liquidity.MAKER, i, f"f{i}"))
    for f in j.poll_durable():
        sys.stdout.write(f.fill_id + "\\n")
    sys.stdout.flush()
    time.sleep(0.001)
"""


def test_durable_fills_survive_sigkill(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    durable: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        while len(durable) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            durable.append(line.strip())
        # Kill right after it reported these as durable; the queue is not empty.
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(durable) >= 300, "writer subprocess did not report enough durable fills"
    # The lock died with the process, so a new bot can open the journal.
    with Journal(tmp_path) as j:
        state = j.load_state()
    on_disk = state.fill_ids
    assert set(durable) <= on_disk
    assert state.positions["SEI/USDC"].lots == len(state.fills)


def test_meta_set_get_is_durable_across_reopen(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        assert j.get_meta("sei.last_block") is None
        j.set_meta("sei.last_block", "100")
        j.set_meta("sei.last_block", "123")
        assert j.get_meta("sei.last_block") == "123"
        assert j.flush()
    with Journal(tmp_path) as j:
        assert j.get_meta("sei.last_block") == "123"
        assert j.get_meta("schema_version") is not None
        with pytest.raises(ValueError):
            j.set_meta("schema_version", "9")


# --- fails loudly, refuses a lost journal, private files, redaction ----------------------


def corrupt_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` on disk with garbage (a real corrupted page)."""
    conn = sqlite3.connect(db)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xa5" * page)


def test_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Journal(data) as j:
        j.fill(make_fill(1))
        assert j.flush()
        for f in data.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    os.chmod(j.path, 0o644)  # an older journal: tightened on open
    os.chmod(data, 0o755)
    Journal(data).close()
    assert stat.S_IMODE(j.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_lost_journal_refuses_to_start_without_new_journal(tmp_path: Path, how: str) -> None:
    with Journal(tmp_path, name="live", specs=SPECS) as j:
        j.fill(make_fill(1))
    assert (tmp_path / "live.marker").exists()
    if how == "deleted":
        j.path.unlink()
    else:
        j.path.write_bytes(b"")
    word = "missing" if how == "deleted" else r"empty \(0 bytes\)"
    with pytest.raises(RuntimeFailure, match=rf"live\.sqlite is {word} .*--new-journal") as e:
        Journal(tmp_path, name="live")
    assert "\n" not in str(e.value)
    with Journal(tmp_path, name="live", new_journal=True) as j:
        assert j.load_state().fill_count == 0
    Journal(tmp_path, name="live").close()  # the new one is the expected one now


def test_write_error_is_latched_and_the_next_open_names_it(tmp_path: Path) -> None:
    with Journal(tmp_path, name="bad", specs=SPECS) as j:
        for i in range(3):
            j.order_event(Order(SPEC.symbol, i, Side.BUY, 5000, 10, 10, OrderState.OPEN, i))
        j.fill(make_fill(1))
    corrupt_table(j.path, "order_events")
    j = Journal(tmp_path, name="bad", specs=SPECS)  # opens: the page is not read on start
    try:
        assert j.load_state(SPECS).positions[SPEC.symbol].lots == 10
        j.order_event(Order(SPEC.symbol, 9, Side.BUY, 5000, 10, 10, OrderState.OPEN, 9))
        deadline = time.monotonic() + 10
        while j.failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert j.failure is not None and "malformed" in j.failure
    finally:
        j.close(timeout=10)
    assert j.failure is not None and j.lost >= 1  # still failing at close: counted
    with pytest.raises(RuntimeFailure, match=r"bad\.sqlite: the last run could not write") as e:
        Journal(tmp_path, name="bad")
    assert "malformed" in str(e.value) and "--new-journal" in str(e.value)
    with Journal(tmp_path, name="bad", new_journal=True) as fresh:
        assert fresh.load_state().fill_count == 0
    assert list(tmp_path.glob("bad.sqlite.old-*"))  # the broken file is kept aside


def test_every_stored_text_is_redacted_even_without_0x(tmp_path: Path) -> None:
    key = "0x" + "ab12" * 16
    from flashmm.logs import make_redactor

    with Journal(tmp_path, redact=make_redactor([key])) as j:
        j.event("state", {"reason": f"operator: pasted {key[2:].upper()}"})
        j.breaker("manual_halt", "tripped", f"operator: {key}")
        j.control("pause", {"reason": key[2:]}, True, {"message": key})
        o = Order(SPEC.symbol, 1, Side.BUY, 5000, 10, 10, OrderState.OPEN, 1)
        j.order_event(o, note=f"rejected: {key}")
        assert j.flush()
    conn = sqlite3.connect(j.path)
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert key[2:].lower() not in dump.lower()
    assert dump.count("***") >= 5


# --- checkpoint and retention ----------------------------------------------------------------


def test_start_reads_the_checkpoint_not_every_fill(tmp_path: Path) -> None:
    fills = [
        make_fill(i, Side.BUY if i % 3 else Side.SELL, 5000 + i % 7, 1 + i % 4)
        for i in range(1, 60)
    ]
    expected = Position(SPEC.symbol)
    for f in fills:
        apply_fill(expected, f, SPEC)
    with Journal(tmp_path, specs=SPECS) as j:
        for f in fills:
            j.fill(f)
        j.fill(fills[5])  # a replayed fill is not booked twice
        j.order_event(Order(SPEC.symbol, 500, Side.BUY, 5000, 1, 1, OrderState.OPEN, 1))
    st = read_state(j.path, SPECS, recent_fills=5)
    pos = st.positions[SPEC.symbol]
    assert (pos.lots, pos.fills) == (expected.lots, expected.fills) == (pos.lots, 59)
    assert pos.realized_usdc == pytest.approx(expected.realized_usdc)
    assert pos.avg_price_ticks == pytest.approx(expected.avg_price_ticks)
    assert st.fill_count == 59 and [f.fill_id for f in st.fills] == [f"f{i}" for i in range(55, 60)]
    assert st.max_client_ids[SPEC.symbol] == 500
    # a journal from before checkpoints: rebuilt from every fill once, then checkpointed
    conn = sqlite3.connect(j.path)
    conn.execute("DELETE FROM checkpoint")
    conn.execute("DELETE FROM meta WHERE key = 'checkpoint_fill_row'")
    conn.commit()
    conn.close()
    assert read_state(j.path, SPECS).positions[SPEC.symbol].lots == expected.lots
    with Journal(tmp_path, specs=SPECS) as j:
        assert j.load_state(SPECS).positions[SPEC.symbol].fills == 59
    conn = sqlite3.connect(j.path)
    assert conn.execute("SELECT fills FROM checkpoint").fetchone()[0] == 59
    conn.close()


def test_old_order_events_fold_into_daily_counts_fills_kept(tmp_path: Path) -> None:
    day = 86_400 * 10**9
    old = time.time_ns() - 3 * day
    with Journal(tmp_path, specs=SPECS) as j:
        for i in range(1, 41):
            o = Order(SPEC.symbol, i, Side.BUY, 5000, 1, 1, OrderState.OPEN, old)
            j.order_event(o, old + i)
            o.state = OrderState.DONE
            j.order_event(o, old + i + 1)
        j.order_event(Order(SPEC.symbol, 99, Side.BUY, 5000, 1, 1, OrderState.OPEN, 1))
        j.fill(make_fill(1))
    with Journal(tmp_path, specs=SPECS, keep_order_events_s=86_400.0) as j:
        deadline = time.monotonic() + 10
        while j.compacted < 80 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert j.compacted == 80
    conn = sqlite3.connect(j.path)
    assert conn.execute("SELECT COUNT(*) FROM order_events").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1  # the live one
    days = conn.execute("SELECT market, state, events, orders FROM order_event_days").fetchall()
    conn.close()
    assert sorted(days) == [(SPEC.symbol, 1, 40, 40), (SPEC.symbol, 3, 40, 40)]
    st = read_state(j.path, SPECS)
    assert st.fill_count == 1 and [o.client_id for o in st.open_orders] == [99]
    assert st.max_client_ids[SPEC.symbol] == 99
