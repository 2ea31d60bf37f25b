"""The feed interface: what the runner needs from any source of market events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from flashmm.marketdata import MarketEvent


class Feed(Protocol):
    """Market events for the engine: a recording (replayed) or a live stream."""

    #: True for a recording: the events' own timestamps are the engine's clock
    sim_clock: bool

    @property
    def paced(self) -> bool:
        """Events arrive at their own pace (live, or a replay at speed > 0), so the
        drive loop checks for a stop after every event."""
        ...

    def __aiter__(self) -> AsyncIterator[MarketEvent]: ...

    def request_resync(self, symbol: str) -> object:
        """Fetch a fresh snapshot of ``symbol`` after a sequence gap (a replay cannot)."""
        ...

    def stop(self) -> None:
        """Produce no more events (the iteration ends)."""
        ...

    async def aclose(self) -> None:
        """Release connections and tasks; safe to call twice."""
        ...

    def summary(self) -> dict[str, Any]:
        """What the run summary reports about the feed (e.g. ``bad_lines``)."""
        ...
