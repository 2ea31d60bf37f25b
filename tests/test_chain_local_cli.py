"""``flashmm chain local``: refuses a busy port, stops on SIGINT however it was started."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from flashmm.cli import main


def test_chain_local_refuses_a_busy_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:  # stands in for another node on that port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "dep.json"
        saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            with pytest.raises(SystemExit) as exc:
                main(["chain", "local", "--port", str(port), "--out", str(out)])
        finally:  # the command installs its own handlers
            for s, h in saved.items():
                signal.signal(s, h)
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use" in err[0] and str(port) in err[0], err
    assert not out.exists()  # nothing deployed anywhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chain_local_stops_on_sigint_started_as_a_background_job(tmp_path: Path) -> None:
    """A script's background job starts with SIGINT ignored (POSIX shells do that);
    ``kill -INT`` must still stop the chain and anvil with it."""
    import os
    import subprocess
    import sys
    import time

    port = _free_port()
    out = tmp_path / "dep.json"

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "flashmm", "chain", "local", "--port", str(port), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop the chain" in line:
                break
        assert out.exists(), "".join(lines)
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGINT)  # an echo (GNU timeout signals the group too)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        with socket.socket() as s:  # anvil went with it: the port is free again
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:  # SIGTERM first: it takes anvil (its own session) along
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
