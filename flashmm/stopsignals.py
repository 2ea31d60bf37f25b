"""Stop signals: SIGINT and SIGTERM stop a running process cleanly, a repeat exits at once.

Shared by the bot (:mod:`flashmm.runner`) and ``flashmm feed serve``; light (no engine,
no config) so a small command can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from loguru import logger


class StopSignals:
    """What a SIGINT or SIGTERM means, given the ones before it.

    The first stops cleanly (cancel all, summary). A repeat within ``echo_s`` is the
    same request arriving twice (GNU ``timeout`` signals the child and its process
    group; a supervisor may send SIGTERM right after a SIGINT) and is ignored. A
    repeat after that is a person pressing Ctrl-C again: exit at once.
    """

    def __init__(self, echo_s: float = 0.5) -> None:
        self.echo_s = echo_s
        self.first_s: float | None = None

    def on_signal(self, now_s: float) -> str:
        """``"stop"``, ``"ignore"`` or ``"exit"`` for a signal at monotonic ``now_s``."""
        if self.first_s is None:
            self.first_s = now_s
            return "stop"
        return "ignore" if now_s - self.first_s < self.echo_s else "exit"

    def echo_left(self, now_s: float) -> float:
        """Seconds until a repeat would mean "exit at once" (0 when none came or it passed)."""
        return 0.0 if self.first_s is None else max(0.0, self.first_s + self.echo_s - now_s)


def install_signal_handlers(
    stop: asyncio.Event, doing: str = "cancelling all orders and stopping"
) -> StopSignals:
    """SIGINT and SIGTERM set ``stop`` while the running loop runs (also when the
    process started with SIGINT ignored, as a script's background job does);
    see :class:`StopSignals`. ``doing``: what the first one starts, for the log."""
    loop = asyncio.get_running_loop()
    seen = StopSignals()

    def handler(signame: str) -> None:
        verdict = seen.on_signal(time.monotonic())
        if verdict == "exit":
            logger.error("second {}: exiting at once", signame)
            os._exit(130)
        if verdict == "ignore":
            logger.info("{} again within {} s: already stopping", signame, seen.echo_s)
            return
        logger.warning("{} received: {} (again to exit at once)", signame, doing)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler, sig.name)
    return seen


__all__ = ["StopSignals", "install_signal_handlers"]
