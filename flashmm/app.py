"""``flashmm run``: logging, panel and operations tasks around the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.config import Config
from flashmm.logs import setup_logging
from flashmm.runner import (
    RunOptions,
    SnapshotHolder,
    build_engine,
    build_venue,
    run_async,
    run_blocking,
    uses_sim_clock,
)
from flashmm.stopsignals import install_signal_handlers


def run_bot(
    cfg: Config,
    *,
    data: Sequence[str] | None = None,
    duration: float | None = None,
    speed: float | None = None,
    headless: bool = False,
    log_json: bool = False,
    resume: bool = False,
    new_journal: bool = False,
) -> dict[str, Any]:
    """Run the bot in the profile's mode until the end; returns the summary of this run.

    A journal failure during the run is in ``summary["journal"]["failure"]``;
    the caller shows the summary, then exits non-zero.
    """
    panel = cfg.ui.panel and not headless
    log_file = cfg.logging.file if panel else None
    setup_logging(
        cfg.logging.level,
        json_logs=log_json or cfg.logging.json_logs,
        file=log_file,
        console=not panel,
    )
    opts = RunOptions(data=data, duration_s=duration, speed=speed, panel=panel)
    holder = SnapshotHolder()

    async def main() -> dict[str, Any]:
        # from here a Ctrl-C stops cleanly, even while the engine's kernels load, the
        # journal opens and recovery runs (before, asyncio's own handler cancelled the
        # start and the bot exited 130 without a word)
        stop = asyncio.Event()
        signals = install_signal_handlers(stop)
        # replays run on the recorded clock; commands then use the engine's time
        sim_clock = uses_sim_clock(cfg, data)
        venue = build_venue(cfg)
        engine = build_engine(cfg, venue, sim_clock=sim_clock)
        from flashmm.ops.service import OpsServices

        ops = OpsServices(
            cfg,
            engine,
            venue,
            sim_clock=sim_clock,
            resume=resume,
            new_journal=new_journal,
            stop_event=stop,
        )
        await ops.start()
        holder.build = ops.publish
        opts.extra_tasks.append(ops.task)
        try:
            summary = await run_async(cfg, opts, holder, stop=stop, engine=engine, signals=signals)
        finally:
            await ops.aclose()
        return ops.run_summary(summary)

    if panel:
        from flashmm.ui import live_panel

        logger.info("panel on; logs go to {}", Path(cfg.logging.file))
        with live_panel(lambda: holder.latest, cfg.ui.refresh_hz):
            return run_blocking(main)
    return run_blocking(main)
