"""End to end: the real bot as a subprocess, its control socket, journal and systemd notify.

Each bot runs ``flashmm run --headless --json`` on a tmp copy of
configs/paper.yaml (NEXO market only, fast replay, tmp data dir and a short
socket path). Nothing here asserts speed; waits have generous timeouts.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit.bot import BotProcess as Bot
from kit.bot import bot_env, short_dir, wait_for
from kit.data import NEXO_23 as NEXO

ROOT = Path(__file__).resolve().parents[1]
SECRET = "0x" + "5ec2e7" * 10 + "abcd"


def make_profile(
    tmp: Path,
    sock_dir: Path,
    *,
    name: str = "opsbot",
    speed: float = 20.0,
    loop: bool = True,
    files: list[str] | None = None,
    data_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """configs/paper.yaml with operational paths in tmp dirs and the NEXO market only."""
    cfg = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    cfg["markets"] = [m for m in cfg["markets"] if m["reference"] == "nexousdt"]
    cfg["feed"]["files"] = files or [f for f in cfg["feed"]["files"] if "nexousdt" in f]
    cfg["feed"]["speed"] = speed
    cfg["feed"]["loop"] = loop
    cfg["ui"]["panel"] = False
    cfg["logging"]["file"] = str(tmp / "logs" / f"{name}.log")
    # sparse recording at high speed: do not pull quotes for feed gaps in these tests
    cfg["risk"]["stale_feed_ms"] = 600_000
    cfg["control"] = {
        "data_dir": str(data_dir or tmp / "data"),
        "socket_path": str(sock_dir / f"{name}.sock"),
        "journal": True,
    }
    for key, value in (extra or {}).items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class FakeSystemd:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode(errors="replace"))

    def lines(self) -> list[str]:
        return [ln for m in list(self.messages) for ln in m.splitlines()]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def tmp_socket_dir() -> Iterator[Path]:
    d = short_dir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_jump_tape(
    src: Path, dst: Path, *, minutes: float, jump_after_s: float, factor: float
) -> None:
    """The first ``minutes`` of a NEXO recording; after ``jump_after_s`` every price x ``factor``.

    At the jump a REST snapshot of the rebuilt book (prices scaled, same
    ``lastUpdateId``) is inserted, so the following diffs keep valid sequence
    ids and the book moves by ``factor`` within one event.
    """

    def scale(px: str) -> str:
        return f"{float(px) * factor:.3f}"  # NEXO tick is 0.001

    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    last_id = 0
    synced = False
    jumped = False
    t0: int | None = None
    out: list[str] = []
    with gzip.open(src, "rt") as f:
        for line in f:
            ts_s, _, raw = line.rstrip("\n").partition(" ")
            ts = int(ts_s)
            t0 = ts if t0 is None else t0
            if ts - t0 > minutes * 60e6:  # NEXO timestamps are µs
                break
            msg = json.loads(raw)
            if not jumped and synced and ts - t0 >= jump_after_s * 1e6:
                jumped = True
                snap = {
                    "lastUpdateId": last_id,
                    "bids": [
                        [scale(p), q] for p, q in sorted(bids.items(), key=lambda x: -float(x[0]))
                    ],
                    "asks": [
                        [scale(p), q] for p, q in sorted(asks.items(), key=lambda x: float(x[0]))
                    ],
                }
                out.append(f"{ts} {json.dumps(snap)}")
            if "lastUpdateId" in msg:
                bids = dict(msg["bids"])
                asks = dict(msg["asks"])
                last_id = msg["lastUpdateId"]
                synced = True
                out.append(f"{ts} {raw}")
                continue
            d = msg["data"]
            if d.get("e") == "depthUpdate" and synced and d["u"] > last_id:
                for key, book in (("b", bids), ("a", asks)):
                    for p, q in d[key]:
                        if float(q) == 0:
                            book.pop(p, None)
                        else:
                            book[p] = q
                last_id = d["u"]
            if jumped:
                if d.get("e") == "depthUpdate":
                    d["b"] = [[scale(p), q] for p, q in d["b"]]
                    d["a"] = [[scale(p), q] for p, q in d["a"]]
                elif d.get("e") == "trade":
                    d["p"] = scale(d["p"])
                elif "b" in d and "a" in d:  # bookTicker
                    d["b"], d["a"] = scale(d["b"]), scale(d["a"])
                raw = json.dumps(msg)
            out.append(f"{ts} {raw}")
    assert jumped, "recording shorter than the jump time"
    with gzip.open(dst, "wt") as g:
        g.write("\n".join(out) + "\n")


# --- a running bot shared by the control tests -----------------------------------------


class Running:
    def __init__(self, bot: Bot, systemd: FakeSystemd, tmp: Path) -> None:
        self.bot = bot
        self.systemd = systemd
        self.tmp = tmp


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("opsbot")
    with tmp_socket_dir() as sock_dir:
        systemd = FakeSystemd(sock_dir)
        profile = make_profile(tmp, sock_dir, speed=20)
        env = bot_env(
            NOTIFY_SOCKET=systemd.path,
            WATCHDOG_USEC="1000000",  # ping every 0.5 s
            FLASHMM_PRIVATE_KEY=SECRET,
        )
        bot = Bot(profile, tmp, env)
        try:
            bot.wait_ready()
            yield Running(bot, systemd, tmp)
        finally:
            bot.close()
            systemd.close()


def quotes(st: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for m in st["markets"].values() for q in m["quotes"]]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from flashmm.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=bot_env(),
    )


def test_status_json_socket_mode_and_ready(running: Running) -> None:
    bot = running.bot
    assert stat.S_IMODE(os.stat(bot.socket).st_mode) == 0o600
    r = cli("status", "--socket", bot.socket, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["mode"] == "paper" and st["profile"] == "opsbot"
    assert st["state"] in ("running", "paused")
    assert st["pid"] == bot.proc.pid and st["socket"] == bot.socket
    assert "/runs/opsbot/" in st["journal"]["path"]  # a run on recorded data: its own journal
    assert st["fills_durable"] <= st["fills_seen"]
    assert "SEI/USDC" in st["markets"] and "kill_switch" in st["breakers"]
    # the human rendering works on the same data (via --config this time)
    r = cli("status", "--config", str(bot.profile))
    assert r.returncode == 0 and "SEI/USDC" in r.stdout, r.stderr
    assert "READY=1" in running.systemd.lines()


def test_pause_pulls_all_quotes_and_resume_brings_them_back(running: Running) -> None:
    bot = running.bot
    wait_for(lambda: quotes(bot.status()), 60, "quotes on the book")
    r = cli("pause", "--socket", bot.socket)
    assert r.returncode == 0 and "paused" in r.stdout, r.stderr
    st = bot.status()
    assert st["state"] == "paused"
    # pulled at once: every order still listed is a cancel in flight, none is new
    assert all(q["state"] == "pending_cancel" for q in quotes(st)), quotes(st)
    wait_for(lambda: not quotes(bot.status()), 30, "cancels confirmed")
    r = cli("resume", "--socket", bot.socket)
    assert r.returncode == 0 and "running" in r.stdout, r.stderr

    def quoting() -> dict[str, Any] | None:
        s = bot.status()
        return s if quotes(s) else None

    st = wait_for(quoting, 60, "quotes back")
    assert st["state"] == "running"
    from flashmm.ops.journal import read_state

    last = read_state(Path(st["journal"]["path"])).last_mode_command
    assert last is not None and last.cmd == "resume"


def test_reset_needs_confirm_and_unknown_args_are_harmless(running: Running) -> None:
    bot = running.bot
    r = bot.command("reset")
    assert not r["ok"] and "confirm" in r["error"]
    r = cli("reset", "--socket", bot.socket)
    assert r.returncode == 2 and "--confirm" in r.stderr
    assert bot.status()["state"] == "running"


def test_watchdog_and_status_lines_reach_systemd(running: Running) -> None:
    wait_for(lambda: "WATCHDOG=1" in running.systemd.lines(), 30, "WATCHDOG=1")
    # READY's status is the state after the start (a stale snapshot said "paused
    # (starting: reconciling with the venue)" in `systemctl status` until the next line)
    ready = next(m for m in running.systemd.messages if "READY=1" in m.splitlines())
    assert ready.splitlines()[1].startswith("STATUS=running |"), ready
    wait_for(
        lambda: any(ln.startswith("STATUS=running") for ln in running.systemd.lines()),
        30,
        "STATUS line",
    )


def test_secret_from_env_never_in_logs_status_or_journal(running: Running) -> None:
    bot = running.bot
    # an operator pasting the key into a command must not leak it either
    assert bot.command("pause", {"reason": f"oops {SECRET}"})["ok"]
    assert bot.command("resume")["ok"]
    text = json.dumps(bot.status())
    assert SECRET not in text
    db = bot.status()["journal"]["path"]

    def journaled_args() -> list[str]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT args FROM control_commands WHERE cmd = 'pause'")
            return [r[0] for r in rows]
        finally:
            conn.close()

    args = wait_for(lambda: [a for a in journaled_args() if "oops" in a], 10, "audit row")
    assert args == ['{"reason":"oops ***","source":"socket"}']
    assert not any(SECRET in a for a in args)
    assert SECRET not in bot.stderr()
    assert "oops ***" in bot.stderr()
    # the key without 0x, in the events table (pause reason) too; status is not journaled
    assert bot.command("pause", {"reason": f"bare {SECRET[2:]}"})["ok"]
    assert bot.command("resume")["ok"]
    wait_for(lambda: [a for a in journaled_args() if "bare" in a], 10, "audit row")

    def dump() -> str:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()

    text = wait_for(lambda: (t := dump()) and "operator: bare ***" in t and t, 10, "event")
    assert SECRET[2:] not in text and SECRET[2:] not in bot.stderr()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cmds = {c for (c,) in conn.execute("SELECT cmd FROM control_commands")}
    finally:
        conn.close()
    assert "pause" in cmds and "status" not in cmds
    # private files in a private folder
    folder = Path(db).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_sigterm_cancels_every_quote_and_exits_0(running: Running) -> None:
    """Last test of the module: it stops the shared bot."""
    bot = running.bot
    wait_for(lambda: quotes(bot.status()), 60, "quotes on the book")
    path = Path(bot.status()["journal"]["path"])
    assert bot.terminate() == 0, bot.stderr()
    summary = bot.summary()
    assert summary["orders_left_open"] == 0
    from flashmm.ops.journal import read_state

    st = read_state(path)
    assert st.open_orders == []  # every order journaled as done
    assert len(st.fills) == summary["fills"]
    assert "STOPPING=1" in running.systemd.lines()
    assert not os.path.exists(bot.socket)
    log = Path(bot.cfg["logging"]["file"])
    for text in (bot.stderr(), log.read_text() if log.exists() else ""):
        assert SECRET not in text


def test_stop_signals_echo_is_ignored_a_later_repeat_exits() -> None:
    from flashmm.stopsignals import StopSignals

    s = StopSignals(echo_s=0.5)
    assert s.on_signal(100.0) == "stop"
    assert s.on_signal(100.009) == "ignore"  # GNU timeout: the child and its group, 9 ms apart
    assert s.on_signal(100.49) == "ignore"
    assert s.on_signal(100.5) == "exit"  # a person pressing Ctrl-C again


@pytest.mark.slow
def test_two_sigints_at_once_still_stop_cleanly(tmp_path: Path) -> None:
    """A signal echoed within milliseconds (``timeout -s INT``) is one stop, not two."""
    import signal
    import time

    with tmp_socket_dir() as sock_dir:
        profile = make_profile(tmp_path, sock_dir, name="echo", speed=20)
        bot = Bot(profile, tmp_path, bot_env())
        try:
            bot.wait_ready()
            wait_for(lambda: quotes(bot.status()), 60, "quotes on the book")
            bot.proc.send_signal(signal.SIGINT)
            # apart enough to be two deliveries (the kernel merges a pending repeat)
            time.sleep(0.02)
            bot.proc.send_signal(signal.SIGINT)
            assert bot.proc.wait(60) == 0, bot.stderr()
        finally:
            bot.close()
        summary = bot.summary()
        assert summary["orders_left_open"] == 0
        assert "already stopping" in bot.stderr()


@pytest.mark.slow
def test_sigint_while_starting_stops_cleanly(tmp_path: Path) -> None:
    """Ctrl-C while the engine's kernels load and the journal opens is a clean stop
    (exit 0, a summary), not asyncio's cancel of the start (exit 130, no word)."""
    import signal

    with tmp_socket_dir() as sock_dir:
        profile = make_profile(tmp_path, sock_dir, name="early", speed=20)
        bot = Bot(profile, tmp_path, bot_env())
        try:
            # the first log line comes from inside the event loop, before the bot is ready
            wait_for(lambda: "prediction model" in bot.stderr(), 60, "the start under way")
            bot.proc.send_signal(signal.SIGINT)
            assert bot.proc.wait(60) == 0, bot.stderr()
        finally:
            bot.close()
        assert bot.summary()["orders_left_open"] == 0


# --- crash and restart -----------------------------------------------------------------


def new_orders(db: Path, max_cid: int) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = "SELECT COUNT(*) FROM order_events WHERE client_id <= ? AND note = 'new'"
        return int(conn.execute(q, (max_cid,)).fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_kill9_then_restart_keeps_fills_positions_and_no_unknown_order(tmp_path: Path) -> None:
    from flashmm.ops.journal import read_state

    with tmp_socket_dir() as sock_dir:
        profile = make_profile(tmp_path, sock_dir, name="crash", speed=20)
        bot = Bot(profile, tmp_path, bot_env())
        try:
            db = Path(bot.wait_ready()["journal"]["path"])

            def traded() -> bool:
                st = read_state(db)
                return len(st.fills) >= 3 and any(p.lots for p in st.positions.values())

            wait_for(traded, 90, "fills and a position in the journal", every=0.2)
            wait_for(lambda: quotes(bot.status()), 30, "quotes on the book")
            bot.kill9()
        finally:
            bot.close()
        before = read_state(db)
        assert before.open_orders, "orders were live at the kill"
        lots_before = {m: p.lots for m, p in before.positions.items()}
        max_cid = max(before.max_client_ids.values())
        new_before = new_orders(db, max_cid)

        bot = Bot(profile, tmp_path, bot_env(), args=("--resume",))
        try:
            st = bot.wait_ready()
            assert st["journal"]["path"] == str(db)
            rec = st["recovery"]
            assert rec["positions"] == lots_before
            assert rec["fills"] == len(before.fills)
            done = rec["reconcile"]["journal_orders_done"]
            assert sorted(done) == sorted(f"{o.market}#{o.client_id}" for o in before.open_orders)
            assert st["fills_durable"] >= len(before.fills)
            wait_for(lambda: quotes(bot.status()), 60, "quoting again")
            # freeze trading to compare the live accounting with the journal
            assert bot.command("pause")["ok"]
            wait_for(lambda: not quotes(bot.status()), 30, "quotes pulled")
            assert bot.terminate() == 0, bot.stderr()
        finally:
            bot.close()
        summary = bot.summary()
        after = read_state(db)
        assert after.open_orders == []  # nothing left unknown or live
        assert before.fill_ids <= after.fill_ids  # every fill journaled before the kill
        assert summary["journal"]["fills"] == len(after.fills)
        assert summary["fills"] == len(after.fills) - len(before.fills)  # this run's
        lots = after.positions["SEI/USDC"].lots
        assert summary["markets"]["SEI/USDC"]["position"] == pytest.approx(lots * 0.01)
        # new orders never reuse a journaled client id
        assert rec["next_client_ids"]["SEI/USDC"] > max_cid
        assert new_orders(db, max_cid) == new_before
        assert after.max_client_ids["SEI/USDC"] > max_cid


@pytest.mark.slow
def test_restart_after_pause_comes_back_paused(tmp_path: Path) -> None:
    with tmp_socket_dir() as sock_dir:
        profile = make_profile(tmp_path, sock_dir, name="paused", speed=20)
        bot = Bot(profile, tmp_path, bot_env())
        try:
            bot.wait_ready()
            assert bot.command("pause")["ok"]
            bot.kill9()
        finally:
            bot.close()
        bot = Bot(profile, tmp_path, bot_env(), args=("--resume",))
        try:
            st = bot.wait_ready()
            assert st["state"] == "paused" and "resume" in st["reason"]
            assert not quotes(st)
            assert bot.command("resume")["ok"]
            wait_for(lambda: quotes(bot.status()), 60, "quotes after resume")
            r = cli("stop", "--config", str(profile))
            assert r.returncode == 0 and "stopping" in r.stdout, r.stderr
            assert bot.proc.wait(60) == 0, bot.stderr()
            assert bot.summary()["orders_left_open"] == 0
        finally:
            bot.close()


# --- kill switch -------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_switch_on_a_10pct_jump_ends_flat_and_halted_and_stays_halted(
    tmp_path: Path,
) -> None:
    from flashmm.ops.journal import read_state

    tape = tmp_path / "nexousdt_jump.dat.gz"
    make_jump_tape(NEXO, tape, minutes=4, jump_after_s=180, factor=1.10)
    with tmp_socket_dir() as sock_dir:
        profile = make_profile(
            tmp_path, sock_dir, name="jump", speed=0, loop=False, files=[str(tape)]
        )
        bot = Bot(profile, tmp_path, bot_env(), args=("--speed", "0"))
        try:
            assert bot.proc.wait(120) == 0, bot.stderr()
        finally:
            bot.close()
        summary = bot.summary()
        assert summary["state"] == "halted"
        assert summary["markets"]["SEI/USDC"]["position"] == 0
        assert summary["orders_left_open"] == 0
        (db,) = (tmp_path / "data" / "runs" / "jump").glob("*.sqlite")
        st = read_state(db)
        ks = st.breakers["kill_switch"]
        assert ks.state == "tripped" and ks.latched and "σ" in ks.reason
        assert "EMERGENCY STOP (kill_switch)" in bot.stderr()
        # a position was built before the jump and closed by taker orders (client id 0)
        quotes_filled = [f for f in st.fills if f.client_id]
        flatten = [f for f in st.fills if f.client_id == 0]
        assert quotes_filled and flatten
        assert all(p.lots == 0 for p in st.positions.values())

        # continue that run: still halted, not one quote sent
        bot = Bot(profile, tmp_path, bot_env(), args=("--speed", "0", "--resume"))
        try:
            assert bot.proc.wait(120) == 0, bot.stderr()
        finally:
            bot.close()
        again = bot.summary()
        assert again["state"] == "halted" and again["quotes_sent"] == 0
        assert again["journal"]["fills"] == len(st.fills) and again["fills"] == 0

        # a new run in the same folder is a new world: flat, unhalted, quoting
        bot = Bot(profile, tmp_path, bot_env(), args=("--speed", "1"))
        try:
            fresh = bot.wait_ready()
            assert fresh["state"] == "running" and fresh["journal"]["path"] != str(db)
            assert fresh["recovery"]["latched_breakers"] == []
            assert fresh["recovery"]["fills"] == 0 and fresh["recovery"]["positions"] == {}
            assert fresh["breakers"]["kill_switch"]["state"] == "ok"
            assert bot.terminate() == 0, bot.stderr()
        finally:
            bot.close()


# --- a journal that fails loudly ------------------------------------------------------------


@pytest.mark.slow
def test_corrupted_journal_page_stops_quoting_exits_1_and_next_start_names_it(
    tmp_path: Path,
) -> None:
    from test_ops_journal import corrupt_table

    from flashmm.ops.journal import Journal
    from flashmm.types import Order, OrderState, Side

    with tmp_socket_dir() as sock_dir:
        profile = make_profile(tmp_path, sock_dir, name="broken", speed=20)
        runs = tmp_path / "data" / "runs" / "broken"
        with Journal(runs, name="20000101T000000-1") as j:  # an earlier run on this profile
            for cid in (1, 2, 3):
                j.order_event(Order("SEI/USDC", cid, Side.BUY, 100, 1, 0, OrderState.DONE, 1))
        corrupt_table(j.path, "order_events")  # a real bad page on disk

        bot = Bot(profile, tmp_path, bot_env(), args=("--resume",))
        try:
            st = bot.wait_ready()
            assert st["journal"]["path"] == str(j.path)

            def tripped() -> dict[str, Any] | None:
                s = bot.status()
                b = s["breakers"].get("journal") or {}
                return s if b.get("state") == "tripped" else None

            st = wait_for(tripped, 60, "journal breaker")
            assert st["state"] == "paused" and "malformed" in st["breakers"]["journal"]["reason"]
            assert "malformed" in st["journal"]["failure"]
            wait_for(lambda: not quotes(bot.status()), 30, "quotes pulled")
            assert not bot.command("resume")["ok"]
            assert bot.terminate() == 1, bot.stderr()
        finally:
            bot.close()
        summary = bot.summary()
        assert "malformed" in summary["journal"]["failure"]
        assert summary["orders_left_open"] == 0
        last = bot.stderr().strip().splitlines()[-1]
        assert last.startswith("flashmm: error: journal ") and "malformed" in last

        again = Bot(profile, tmp_path, bot_env(), args=("--resume",))
        try:
            assert again.proc.wait(60) == 1
        finally:
            again.close()
        err = again.stderr()
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert str(j.path) in line and "could not write" in line and "--new-journal" in line
