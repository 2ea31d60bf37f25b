"""Logging setup: human console logs, a file while the panel is up, JSON lines on request.

Secrets from the environment are redacted from every record.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.config import secret_values

_HUMAN = "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"
_HEX = re.compile(r"(0[xX])?[0-9a-fA-F]+")


def make_redactor(secrets: Iterable[str] | None = None) -> Callable[[str], str]:
    """A function that replaces every secret in a text by ``***``.

    ``secrets`` defaults to the secret values in the environment. A hex
    secret (a private key) is also found without its ``0x`` prefix, with
    one added, and in upper or lower case.
    """
    values = secret_values() if secrets is None else [s for s in secrets if s]
    variants: set[str] = set()
    for value in values:
        m = _HEX.fullmatch(value)
        if m is not None and len(value) >= 16:
            bare = value[2:] if m.group(1) else value
            variants.update({bare, "0x" + bare})
        else:
            variants.add(value)
    if not variants:
        return lambda text: text
    alternatives = sorted(variants, key=len, reverse=True)
    rx = re.compile("|".join(re.escape(v) for v in alternatives), re.IGNORECASE)
    return lambda text: rx.sub("***", text) if text else text


def _redactor(secrets: list[str]) -> Any:
    redact = make_redactor(secrets)

    def patch(record: Any) -> None:
        record["message"] = redact(record["message"])

    return patch


def _check_log_file(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        from flashmm.errors import UserInputError

        why = exc.strerror or str(exc)
        raise UserInputError(f"logging.file: cannot write the log file {path} ({why})") from None


def setup_logging(
    level: str = "INFO", *, json_logs: bool = False, file: str | None = None, console: bool = True
) -> None:
    """Configure loguru. With the panel up, pass ``console=False`` and a ``file``.

    A log file that cannot be created is a :class:`UserInputError` naming it.
    """
    if file:
        _check_log_file(Path(file))
    logger.remove()
    logger.configure(patcher=_redactor(secret_values()))
    if console:
        if json_logs:
            logger.add(sys.stderr, level=level, serialize=True)
        else:
            logger.add(sys.stderr, level=level, format=_HUMAN, colorize=None)
    if file:
        path = Path(file)
        logger.add(
            str(path), level=level, serialize=json_logs, rotation="50 MB", retention=5, enqueue=True
        )
