"""Operations around a running engine: control socket, journal, systemd notify.

Minimal wiring; the operations work extends it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flashmm.config import Config
from flashmm.engine import Engine


class OpsServices:
    def __init__(self, cfg: Config, engine: Engine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.stop_event = asyncio.Event()

    async def start(self) -> None:
        return None

    async def task(self, engine: Engine) -> None:
        while True:
            engine.outbox.clear()
            await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return self.engine.snapshot()
