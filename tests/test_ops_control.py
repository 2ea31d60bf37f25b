"""Control socket: JSON-lines protocol over a real Unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flashmm.errors import NotRunningError, RuntimeFailure, UserInputError
from flashmm.ops.control import ControlRefused, ControlServer, default_socket_path, send_command


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # tmp_path can exceed the 107-byte sun_path limit; use a short dir.
    with tempfile.TemporaryDirectory(prefix="fmm") as d:
        yield Path(d)


class Bot:
    def __init__(self) -> None:
        self.state = "running"
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((cmd, args))
        if cmd == "status":
            return {"state": self.state, "mode": "paper"}
        if cmd == "pause":
            self.state = "paused"
            return {"state": self.state}
        if cmd == "resume":
            raise ControlRefused("breaker drawdown is latched; reset first")
        if cmd == "reset":
            raise RuntimeError("boom")
        return {"cmd": cmd}


async def call(path: Path, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return await asyncio.to_thread(send_command, path, cmd, args)


async def test_commands_round_trip(sock_dir: Path) -> None:
    bot = Bot()
    path = sock_dir / "run" / "paper.sock"
    audit: list[tuple[str, bool]] = []
    server = ControlServer(path, bot.handle, audit=lambda c, a, r: audit.append((c, r["ok"])))
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        r = await call(path, "status")
        assert r == {"ok": True, "result": {"state": "running", "mode": "paper"}, "error": None}
        r = await call(path, "pause", {"reason": "test"})
        assert r["ok"] and r["result"] == {"state": "paused"}
        assert bot.calls[-1] == ("pause", {"reason": "test"})
        r = await call(path, "resume")
        assert r == {
            "ok": False,
            "result": {},
            "error": "breaker drawdown is latched; reset first",
        }
        r = await call(path, "reset")
        assert not r["ok"] and r["error"].startswith("internal error: RuntimeError: boom")
        r = await call(path, "launch_rockets")
        assert not r["ok"] and "unknown command" in r["error"]
        assert audit == [
            ("status", True),
            ("pause", True),
            ("resume", False),
            ("reset", False),
        ]
    finally:
        await server.aclose()
    assert not path.exists()


async def test_several_requests_on_one_connection_and_bad_input(sock_dir: Path) -> None:
    path = sock_dir / "a.sock"
    async with ControlServer(path, Bot().handle):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"cmd":"status"}\nnot json\n[1]\n{"cmd":"pause","args":[]}\n')
        writer.write(b'{"cmd":"stop","args":{}}\n')
        await writer.drain()
        answers = [json.loads(await reader.readline()) for _ in range(5)]
        writer.close()
        await writer.wait_closed()
    assert [a["ok"] for a in answers] == [True, False, False, False, True]
    assert "JSON" in answers[1]["error"]
    assert answers[4]["result"] == {"cmd": "stop"}


def test_send_command_without_bot_raises_not_running(sock_dir: Path) -> None:
    with pytest.raises(NotRunningError, match="no FlashMM bot is running"):
        send_command(sock_dir / "none.sock", "status")


def test_send_command_on_stale_socket_raises_not_running(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # file stays, nobody listens
    with pytest.raises(NotRunningError):
        send_command(path, "status")


async def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    async with ControlServer(path, Bot().handle):
        r = await call(path, "status")
        assert r["ok"]


async def test_second_server_on_live_socket_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "live.sock"
    async with ControlServer(path, Bot().handle):
        with pytest.raises(RuntimeFailure, match="another bot is already running"):
            await ControlServer(path, Bot().handle).start()
        # the first one still works
        assert (await call(path, "status"))["ok"]


async def test_non_socket_file_is_not_removed(sock_dir: Path) -> None:
    path = sock_dir / "file.sock"
    path.write_text("precious")
    with pytest.raises(RuntimeFailure, match="not a socket"):
        await ControlServer(path, Bot().handle).start()
    assert path.read_text() == "precious"


async def test_two_bots_side_by_side(sock_dir: Path) -> None:
    a, b = Bot(), Bot()
    async with (
        ControlServer(sock_dir / "a.sock", a.handle),
        ControlServer(sock_dir / "b.sock", b.handle),
    ):
        await call(sock_dir / "a.sock", "pause")
        ra = await call(sock_dir / "a.sock", "status")
        rb = await call(sock_dir / "b.sock", "status")
    assert ra["result"]["state"] == "paused"
    assert rb["result"]["state"] == "running"


async def test_slow_handler_times_out_client(sock_dir: Path) -> None:
    async def slow(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    path = sock_dir / "slow.sock"
    async with ControlServer(path, slow):
        with pytest.raises(RuntimeFailure, match="did not answer"):
            await asyncio.to_thread(send_command, path, "status", None, 0.2)


def test_too_long_path_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="too long"):
        send_command("/tmp/" + "x" * 200 + ".sock", "status")


@pytest.mark.parametrize(
    ("env", "data_dir", "expected"),
    [
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, None, "/run/user/1000/flashmm/paper.sock"),
        ({}, "/var/lib/flashmm", "/var/lib/flashmm/paper.sock"),
        ({"XDG_RUNTIME_DIR": ""}, None, "var/paper.sock"),
    ],
)
def test_default_socket_path(env: dict[str, str], data_dir: str | None, expected: str) -> None:
    assert default_socket_path("paper", data_dir, env) == expected


async def test_audit_into_journal_recovers_last_mode_command(sock_dir: Path) -> None:
    from flashmm.ops.journal import Journal

    journal = Journal(sock_dir / "data")
    path = sock_dir / "j.sock"

    def audit(cmd: str, args: dict[str, Any], response: dict[str, Any]) -> None:
        journal.control(cmd, args, response["ok"], response["result"] or response)

    async with ControlServer(path, Bot().handle, audit=audit):
        assert (await call(path, "pause"))["ok"]
        assert not (await call(path, "resume"))["ok"]  # refused: not a mode change
        assert (await call(path, "status"))["ok"]
    state = journal.load_state()
    journal.close()
    assert state.last_mode_command is not None
    assert state.last_mode_command.cmd == "pause"
    assert state.last_mode_command.result == {"state": "paused"}
