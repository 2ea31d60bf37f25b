"""The bot as a subprocess: ``flashmm run --config PROFILE --headless --json [ARGS]``.

stdout and stderr go to files beside the profile (or in ``workdir``); the control
socket and journal paths come from the profile. Blocking helpers for plain tests and
``a``-prefixed awaitable ones for asyncio tests. Waits have generous timeouts and no
test asserts speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

_DROPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "FLASHMM_PRIVATE_KEY")


def bot_env(**extra: str) -> dict[str, str]:
    """This process's environment without systemd's or a key's variables, unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def short_dir(prefix: str = "fmm") -> Path:
    """A short tmp dir for AF_UNIX paths (107-byte limit)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_for(fn: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Call ``fn`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class BotProcess:
    """``flashmm run --config PROFILE --headless --json [ARGS]`` as a subprocess."""

    def __init__(
        self,
        profile: Path,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        duration: float | None = None,
    ) -> None:
        self.profile = profile
        self.cfg: dict[str, Any] = yaml.safe_load(profile.read_text())
        control = self.cfg.get("control") or {}
        self.socket: str = control["socket_path"]
        self.journal = Path(control.get("data_dir", "var")) / f"{profile.stem}.sqlite"
        workdir = workdir or profile.parent
        self.out_path = workdir / f"{profile.stem}.{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        cmd = [
            sys.executable,
            "-c",
            "from flashmm.cli import main; main()",
            "run",
            "--config",
            str(profile),
            "--headless",
            "--json",
            *(("--duration", str(duration)) if duration is not None else ()),
            *args,
        ]
        full_env = bot_env() if env is None else env
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=out, stderr=err)

    # --- blocking -----------------------------------------------------------------------

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def command(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        from flashmm.ops.control import send_command

        return send_command(self.socket, cmd, args, timeout=10.0)

    def status(self) -> dict[str, Any]:
        r = self.command("status")
        assert r["ok"], r
        return r["result"]  # type: ignore[no-any-return]

    def _ready(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"bot exited early ({self.proc.returncode}):\n{self.stderr()}")
        if not os.path.exists(self.socket):
            return None
        try:
            st = self.status()
        except Exception:
            return None
        return st if st.get("ready") else None

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(self._ready, timeout, "bot ready")  # type: ignore[no-any-return]

    def summary(self) -> dict[str, Any]:
        lines = [ln for ln in self.out_path.read_text().splitlines() if ln.startswith("{")]
        assert lines, f"no summary on stdout; stderr:\n{self.stderr()}"
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # --- awaitable ----------------------------------------------------------------------

    async def acommand(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.command, cmd, args)

    async def await_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await asyncio.to_thread(self._ready)
            if st is not None:
                return st
            await asyncio.sleep(0.1)
        raise AssertionError(f"bot not ready after {timeout}s:\n{self.stderr()}")

    async def await_exit(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait for the bot to exit 0 and return its JSON summary."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(15)
                self.close()
                raise AssertionError(f"bot did not stop in time:\n{self.stderr()[-4000:]}")
            await asyncio.sleep(0.1)
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{self.stderr()}"
        return self.summary()
