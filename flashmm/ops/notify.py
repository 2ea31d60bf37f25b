"""systemd service notifications (``sd_notify``), without libsystemd.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a Unix datagram
socket path; ``@`` prefix = abstract namespace) and, with ``WatchdogSec=``,
``WATCHDOG_USEC``. The bot sends ``READY=1`` once it quotes (or is ready to),
``WATCHDOG=1`` from the engine loop itself (so a stuck loop gets restarted),
``STATUS=...`` lines for ``systemctl status`` and ``STOPPING=1`` on shutdown.
Everything is a no-op when ``NOTIFY_SOCKET`` is unset (tests, a terminal).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from loguru import logger

__all__ = ["Notifier", "watchdog_interval_s"]


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, or None if no watchdog.

    Honors ``WATCHDOG_PID``: when set to another process, the watchdog is not ours.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return value / 2 / 1_000_000


class Notifier:
    """Sends state lines to systemd's notify socket.

    ``Notifier()`` reads ``NOTIFY_SOCKET`` from the environment; pass
    ``socket_path`` to override. Send failures are logged once and never
    raised: the bot must not die because systemd went away.
    """

    def __init__(
        self, socket_path: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if env is None else env
        path = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET", "")
        self._env = env
        self._address: str | None = None
        if path:
            if path.startswith("@"):
                self._address = "\0" + path[1:]
            elif path.startswith("/"):
                self._address = path
            else:
                logger.warning("NOTIFY_SOCKET={!r} is neither absolute nor abstract; ignored", path)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """See :func:`watchdog_interval_s` (None when not under systemd)."""
        return watchdog_interval_s(self._env) if self.enabled else None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram. True if sent."""
        if self._address is None or not lines:
            return False
        data = "\n".join(lines).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._warned:
                logger.warning("systemd notify to {!r} failed: {}", self._address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup finished (systemctl start returns)."""
        return self.notify("READY=1", *self._status(status))

    def watchdog(self, status: str | None = None) -> bool:
        """``WATCHDOG=1``: the loop is alive. Send every :meth:`watchdog_interval_s`."""
        return self.notify("WATCHDOG=1", *self._status(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        return self.notify(*self._status(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown started."""
        return self.notify("STOPPING=1", *self._status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more time to start or stop (cancelling orders)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        return ("STATUS=" + " ".join(text.splitlines()),)
