"""Operator CLI commands against a real control socket served from a thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from flashmm.cli import ops
from flashmm.ops.control import ControlRefused, ControlServer, socket_path_from_config

ROOT = Path(__file__).resolve().parents[1]

BREAKER = {"state": "ok", "action": "pause", "reason": "", "since_ns": 0, "latched": False}
STATUS = {
    "schema": 1,
    "mode": "paper",
    "profile": "paper",
    "state": "running",
    "reason": "",
    "uptime_s": 3725,
    "pnl_usdc": 1.25,
    "fills": 4,
    "venue": {"name": "sim"},
    "markets": {
        "SEI/USDC": {
            "mid": 0.5012,
            "bid": 0.5011,
            "ask": 0.5013,
            "position_lots": -30,
            "position_usdc": -15.03,
            "pnl_usdc": 1.25,
            "quotes": [
                {"side": "buy", "price": 0.5005, "size": 100},
                {"side": "sell", "price": 0.5019, "size": 100},
            ],
        },
        "ETH/USDC": {
            "mid": None,
            "bid": None,
            "ask": None,
            "position_lots": 0,
            "position_usdc": 0.0,
            "pnl_usdc": 0.0,
            "quotes": [],
        },
    },
    "breakers": {
        "drawdown": {**BREAKER, "clears": ""},
        "stale_feed": {
            **BREAKER,
            "state": "tripped",
            "action": "pull",
            "reason": "no book for 5s",
            "since_ns": 1_700_000_000_000_000_000,
            "clears": "",
        },
        "kill_switch": {
            "state": "tripped",
            "action": "halt",
            "reason": "manual",
            "since_ns": 1_700_000_000_000_000_000,
            "latched": True,
            "clears": "",
        },
    },
    "model": {"state": None, "source": "lgbm-v3", "sources": {}},
    "latency": {"p50_us": 41.0, "p99_us": 212.0, "samples": 100},
}


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(ops.pause)
    app.command()(ops.resume)
    app.command()(ops.status)
    app.command()(ops.stop)
    app.command("emergency-stop")(ops.emergency_stop)
    app.command()(ops.reset)
    return app


class FakeBot:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.status: dict[str, Any] = STATUS

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((cmd, args))
        if cmd == "status":
            return self.status
        if cmd == "resume":
            raise ControlRefused("kill switch is latched; run reset --confirm first")
        return {"state": {"pause": "paused", "stop": "stopping"}.get(cmd, "halted")}


@pytest.fixture
def bot() -> Iterator[tuple[FakeBot, str]]:
    fake = FakeBot()
    with tempfile.TemporaryDirectory(prefix="fmm") as d:
        path = str(Path(d) / "paper.sock")
        loop = asyncio.new_event_loop()
        server = ControlServer(path, fake.handle)
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
        try:
            yield fake, path
        finally:
            asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


runner = CliRunner()


def test_status_json(bot: tuple[FakeBot, str]) -> None:
    _, path = bot
    res = runner.invoke(make_app(), ["status", "--socket", path, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(json.dumps(STATUS))


def test_status_table(bot: tuple[FakeBot, str]) -> None:
    _, path = bot
    res = runner.invoke(make_app(), ["status", "--socket", path], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    out = res.stdout
    for text in ("running", "1h02m05s", "SEI/USDC", "0.5012", "-30", "+1.25", "B 0.5005x100"):
        assert text in out
    assert "stale_feed" in out and "no book for 5s" in out and "tripped" in out
    assert "halt (latched)" in out and "2023-11-1" in out
    assert "lgbm-v3" in out and "p99 212" in out


def test_status_table_piped_is_not_cut_to_80_columns(bot: tuple[FakeBot, str]) -> None:
    """`flashmm status | cat`: Rich would fall back to 80 columns and cut the quotes."""
    _, path = bot
    res = runner.invoke(make_app(), ["status", "--socket", path], env={"COLUMNS": None})
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout and "B 0.5005x100" in res.stdout


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"markets": {"X": "weird"}, "breakers": {"b": "tripped"}, "model": "m", "latency": {}},
        {"markets": {"X": {"quotes": "n/a", "pnl_usdc": "abc"}}, "uptime_s": "soon"},
    ],
)
def test_status_table_tolerates_missing_keys(
    bot: tuple[FakeBot, str], status: dict[str, Any]
) -> None:
    fake, path = bot
    fake.status = status
    res = runner.invoke(make_app(), ["status", "--socket", path])
    assert res.exit_code == 0, res.output


def test_pause_and_stop(bot: tuple[FakeBot, str]) -> None:
    fake, path = bot
    res = runner.invoke(make_app(), ["pause", "--socket", path])
    assert res.exit_code == 0
    assert res.stdout.strip() == "pause: ok - state: paused"
    res = runner.invoke(make_app(), ["stop", "--socket", path])
    assert res.exit_code == 0
    assert [c for c, _ in fake.calls] == ["pause", "stop"]


def test_refused_command_exits_1_with_reason(bot: tuple[FakeBot, str]) -> None:
    _, path = bot
    res = runner.invoke(make_app(), ["resume", "--socket", path])
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        "flashmm: error: resume refused: kill switch is latched; run reset --confirm first"
    )


def test_reset_needs_confirm(bot: tuple[FakeBot, str]) -> None:
    fake, path = bot
    res = runner.invoke(make_app(), ["reset", "--socket", path])
    assert res.exit_code == 2
    assert "--confirm" in res.stderr
    assert fake.calls == []
    res = runner.invoke(make_app(), ["reset", "--socket", path, "--confirm"])
    assert res.exit_code == 0
    assert fake.calls == [("reset", {"confirm": True})]


def test_emergency_stop(bot: tuple[FakeBot, str]) -> None:
    fake, path = bot
    res = runner.invoke(make_app(), ["emergency-stop", "--socket", path])
    assert res.exit_code == 0
    assert res.stdout.strip() == "emergency-stop: ok - state: halted"
    assert fake.calls == [("emergency_stop", {})]


def test_a_relative_socket_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """control.data_dir is relative to the bot's folder: from another folder, say so."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(make_app(), ["status", "--socket", "var/paper/paper.sock"])
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert f"var/paper/paper.sock under {tmp_path}; run this from the bot's folder or give" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["pause"],
        ["resume"],
        ["status"],
        ["status", "--json"],
        ["stop"],
        ["emergency-stop"],
        ["reset", "--confirm"],
    ],
)
def test_no_bot_running_one_line_exit_1(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="fmm") as d:
        res = runner.invoke(make_app(), [*argv, "--socket", str(Path(d) / "x.sock")])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("flashmm: error: no FlashMM bot is running")
    assert res.stdout == ""


def test_no_bot_in_subprocess_has_no_traceback() -> None:
    code = "import typer\nfrom flashmm.cli.ops import status\ntyper.run(status)\n"
    with tempfile.TemporaryDirectory(prefix="fmm") as d:
        proc = subprocess.run(
            [sys.executable, "-c", code, "--socket", str(Path(d) / "x.sock")],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=30,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "no FlashMM bot is running" in proc.stderr


def test_resolve_socket_prefers_explicit_socket() -> None:
    assert ops.resolve_socket("configs/whatever.yaml", "/tmp/x.sock") == "/tmp/x.sock"


def test_resolve_socket_missing_config_uses_stem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert ops.resolve_socket("nowhere/testnet.yaml", None) == "var/testnet.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert ops.resolve_socket("nowhere/testnet.yaml", None) == "/run/user/7/flashmm/testnet.sock"


def test_resolve_socket_reads_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg_file = tmp_path / "mine.yaml"
    cfg_file.write_text("name: prod\ncontrol:\n  data_dir: /srv/fmm\n")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert ops.resolve_socket(str(cfg_file), None) == "/srv/fmm/prod.sock"
    cfg_file.write_text("name: prod\ncontrol:\n  socket_path: /run/flashmm/prod.sock\n")
    assert ops.resolve_socket(str(cfg_file), None) == "/run/flashmm/prod.sock"
    # no name: the file's stem; a shipped profile by name
    cfg_file.write_text("control:\n  data_dir: d\n")
    assert ops.resolve_socket(str(cfg_file), None) == "d/mine.sock"
    assert ops.resolve_socket("paper", None) == "var/paper/paper.sock"


def test_socket_path_from_config_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert socket_path_from_config(SimpleNamespace(), "paper") == "var/paper.sock"
    cfg = SimpleNamespace(profile_name="a", control=SimpleNamespace(data_dir="d"))
    assert socket_path_from_config(cfg) == "d/a.sock"
