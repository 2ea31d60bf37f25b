"""systemd notify protocol against a real Unix datagram socket."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashmm.ops.notify import Notifier, watchdog_interval_s


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="fmm") as d:
        path = str(Path(d) / "notify.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(2.0)
        try:
            yield s, path
        finally:
            s.close()


def recv(s: socket.socket) -> list[str]:
    return s.recv(4096).decode().split("\n")


def test_ready_watchdog_status_stopping(receiver: tuple[socket.socket, str]) -> None:
    s, path = receiver
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
    assert n.enabled
    assert n.watchdog_interval_s() == 10.0
    assert n.ready("quoting 2 markets")
    assert recv(s) == ["READY=1", "STATUS=quoting 2 markets"]
    assert n.watchdog()
    assert recv(s) == ["WATCHDOG=1"]
    assert n.status("paused\nby operator")
    assert recv(s) == ["STATUS=paused by operator"]
    assert n.extend_timeout(30)
    assert recv(s) == ["EXTEND_TIMEOUT_USEC=30000000"]
    assert n.stopping()
    assert recv(s) == ["STOPPING=1"]
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"flashmm-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2.0)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert recv(s) == ["READY=1"]
        assert n.watchdog()
        assert recv(s) == ["WATCHDOG=1"]
        n.close()
    finally:
        s.close()


def test_noop_without_notify_socket() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert n.watchdog_interval_s() is None
    assert n.ready() is False
    assert n.watchdog() is False


def test_send_failure_is_swallowed() -> None:
    n = Notifier(env={"NOTIFY_SOCKET": "/nonexistent/dir/notify.sock"})
    assert n.enabled
    assert n.ready() is False  # logged, not raised
    assert n.watchdog() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env) == expected
