"""Journal: non-blocking writes, durability reporting, recovery and crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from flashmm.errors import RuntimeFailure
from flashmm.ops.journal import Journal, apply_fill, read_state
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
        t0 = time.perf_counter()
        for i in range(20_000):
            j.fill(make_fill(i))
        elapsed = time.perf_counter() - t0
        assert elapsed < 1.0  # ~µs per call; the disk work happens in the writer
        assert j.flush(20.0)
        assert j.commits < 20_000  # batched
        assert len(j.load_state().fills) == 20_000


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
