"""Logging setup: human console logs, a file while the panel is up, JSON lines on request.

Secrets from the environment are redacted from every record.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.config import secret_values

_HUMAN = "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"


def _redactor(secrets: list[str]) -> Any:
    def patch(record: Any) -> None:
        msg = record["message"]
        for s in secrets:
            if s in msg:
                msg = msg.replace(s, "***")
        record["message"] = msg

    return patch


def setup_logging(
    level: str = "INFO", *, json_logs: bool = False, file: str | None = None, console: bool = True
) -> None:
    """Configure loguru. With the panel up, pass ``console=False`` and a ``file``."""
    logger.remove()
    secrets = secret_values()
    logger.configure(patcher=_redactor(secrets))
    if console:
        if json_logs:
            logger.add(sys.stderr, level=level, serialize=True)
        else:
            logger.add(sys.stderr, level=level, format=_HUMAN, colorize=None)
    if file:
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            str(path), level=level, serialize=json_logs, rotation="50 MB", retention=5, enqueue=True
        )
