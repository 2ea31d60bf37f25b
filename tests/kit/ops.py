"""The ops services in-process: started on an engine until ready, and stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from flashmm.config import Config
from flashmm.engine import Engine
from flashmm.ops.service import OpsServices


async def start_ops(
    cfg: Config, engine: Engine, *, sim_clock: bool = False, **kw: Any
) -> tuple[OpsServices, asyncio.Task[None]]:
    """OpsServices of ``engine`` started, its task running, ready (asserted within 2 s;
    stopped again if not)."""
    ops = OpsServices(cfg, engine, engine.venue, sim_clock=sim_clock, **kw)
    await ops.start()
    task = asyncio.create_task(ops.task(engine))
    try:
        for _ in range(200):
            if ops.ready:
                break
            await asyncio.sleep(0.01)
        assert ops.ready
    except BaseException:
        await stop_ops(ops, task)
        raise
    return ops, task


async def stop_ops(ops: OpsServices, task: asyncio.Task[None]) -> None:
    """The task of :func:`start_ops` cancelled and the services closed."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ops.aclose()
