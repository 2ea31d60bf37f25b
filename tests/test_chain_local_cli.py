"""``flashmm chain local`` refuses a port where something already listens."""

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
